//! Weights streamed from the head, through the real bootstrap (a worker serving jobs on a
//! loopback port, the head started from a mesh file): a worker without the model file gets
//! only its blocks (pipeline) or every tensor (tensor parallel), stores them in its cache,
//! and the mesh's greedy tokens and logits are bit-identical to one node's; the next job
//! loads from the cache without a transfer; a cached shard that rotted on disk is fetched
//! again; a worker that may not fetch says why the file is missing.

mod common;

use common::{greedy_steps, prompt, repo, Run};
use onebit_dist::bootstrap::{serve_one_job, WorkerSetup};
use onebit_dist::launch::{start_pipeline, start_tensor, PipelineLaunch};
use onebit_dist::pipeline::{PipelineHead, PipelineTimeouts};
use onebit_dist::shard_stream::{Progress, TransferProgress};
use onebit_dist::tensor::TensorHead;
use onebit_dist::TcpConfig;
use onebit_model::load::LoadOptions;
use onebit_model::{Engine, Model, Session, SessionOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts transfers and their bytes.
#[derive(Default)]
struct Count {
    transfers: AtomicU64,
    bytes: AtomicU64,
}

/// A [`Count`] the test keeps a handle on.
struct Counter(Arc<Count>);

impl TransferProgress for Counter {
    fn begin(&self, _: &str, _: u64) {
        self.0.transfers.fetch_add(1, Ordering::SeqCst);
    }
    fn advance(&self, done: u64) {
        self.0.bytes.store(done, Ordering::SeqCst);
    }
    fn end(&self) {}
}

/// Greedy tokens and every step's logits.
/// A head's side of one job: its run, or the error it reported.
type HeadJob = Box<dyn FnOnce() -> Result<Run, String>>;

fn opts() -> SessionOptions {
    SessionOptions { max_ctx: 128, max_batch: 16, slots: 1, kv: onebit_model::KvDtype::F32 }
}

fn greedy(e: &mut dyn Engine) -> Run {
    greedy_steps(e, &prompt(), 32)
}

/// A mesh folder: key, mesh file for a head and one worker; the worker's listener.
fn mesh(dir: &Path) -> (String, TcpListener, TcpConfig) {
    let key = [5u8; 32];
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("mesh.key"), hex).unwrap();
    let worker = TcpListener::bind("127.0.0.1:0").unwrap();
    let head = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let toml = format!(
        "key_file = \"mesh.key\"\nhead = \"{head}\"\nworkers = [\"{}\"]\n",
        worker.local_addr().unwrap()
    );
    std::fs::write(dir.join("mesh.toml"), toml).unwrap();
    (dir.join("mesh.toml").display().to_string(), worker, TcpConfig::new(key))
}

fn launch(mesh: &str) -> PipelineLaunch {
    PipelineLaunch {
        mesh: mesh.into(),
        model: repo("models/austen.gguf"),
        load: LoadOptions { threads: 1, ..Default::default() },
        worker_threads: 1,
        session: opts(),
        split: None,
        ready_timeout: Duration::from_secs(60),
        progress: Progress::default(),
        emulate: None,
        skip: Vec::new(),
        tensor_sums: false,
    }
}

/// Runs `jobs` jobs of the worker in a thread while `head` runs each.
fn with_worker(
    listener: TcpListener,
    cfg: TcpConfig,
    setup: WorkerSetup,
    heads: Vec<HeadJob>,
) -> Vec<Result<Run, String>> {
    let jobs = heads.len();
    let w = std::thread::spawn(move || {
        (0..jobs)
            .map(|_| serve_one_job(&listener, &cfg, &setup, Duration::from_secs(60)).is_ok())
            .collect::<Vec<bool>>()
    });
    let out = heads.into_iter().map(|h| h()).collect();
    w.join().unwrap();
    out
}

fn pipeline(mesh: String) -> HeadJob {
    Box::new(move || {
        let s = start_pipeline(&launch(&mesh)).map_err(|e| e.to_string())?;
        assert_eq!(s.split, [1, 5]);
        let session = Session::with_options(&s.model, opts());
        let mut head = PipelineHead::new(session, Box::new(s.comm), PipelineTimeouts::default())
            .map_err(|e| e.to_string())?;
        Ok(greedy(&mut head))
    })
}

fn tensor(mesh: String) -> HeadJob {
    Box::new(move || {
        let s = start_tensor(&launch(&mesh), None).map_err(|e| e.to_string())?;
        let session = Session::with_options(&s.model, opts());
        let mut head = TensorHead::new(session, Box::new(s.comm), PipelineTimeouts::default())
            .map_err(|e| e.to_string())?;
        Ok(greedy(&mut head))
    })
}

fn shards(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_worker_without_the_file_gets_its_shard_and_runs_bit_identically() {
    let tmp = tempfile::Builder::new().prefix("onebit-shard-mesh-").tempdir().unwrap();
    let dir = tmp.path();
    let (empty, cache) = (dir.join("models"), dir.join("cache"));
    std::fs::create_dir_all(&empty).unwrap();
    let model = Model::from_pretrained(
        &repo("models/austen.gguf"),
        &LoadOptions { threads: 1, ..Default::default() },
    )
    .unwrap();
    let single = greedy(&mut Session::with_options(&model, opts()));
    let whole = std::fs::metadata(repo("models/austen.gguf")).unwrap().len();

    let count = Arc::new(Count::default());
    let setup = WorkerSetup {
        models: Some(empty.clone()),
        cache: Some(cache.clone()),
        progress: Progress::new(Counter(count.clone())),
        ..Default::default()
    };
    let (file, listener, cfg) = mesh(dir);
    let out = with_worker(
        listener,
        cfg,
        setup.clone(),
        vec![pipeline(file.clone()), pipeline(file.clone()), tensor(file.clone())],
    );
    for (i, o) in out.into_iter().enumerate() {
        assert_eq!(o.as_ref().map_err(String::clone), Ok(&single), "job {i}");
    }
    // The pipeline's shard was fetched once (blocks 1..6, less than the file), reused by the
    // second job; the tensor-parallel node fetched every tensor.
    assert_eq!(count.transfers.load(Ordering::SeqCst), 2);
    let got = shards(&cache);
    let names: Vec<String> =
        got.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].ends_with("-1-6.gguf") && names[1].ends_with("-all.gguf"), "{names:?}");
    let block_shard = std::fs::metadata(&got[0]).unwrap().len();
    assert!(block_shard < whole / 2, "{block_shard} of {whole}");

    // A shard that rotted on disk is caught by its checksum and fetched again.
    let mut bytes = std::fs::read(&got[0]).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(&got[0], bytes).unwrap();
    let (file, listener, cfg) = mesh(dir);
    let out = with_worker(listener, cfg, setup, vec![pipeline(file)]);
    assert_eq!(out[0].as_ref().map_err(String::clone), Ok(&single));
    assert_eq!(count.transfers.load(Ordering::SeqCst), 3);
    assert_eq!(shards(&cache).len(), 2);

    // A worker that may not fetch names what is missing.
    let no_fetch = WorkerSetup { models: Some(empty), cache: None, ..Default::default() };
    let (file, listener, cfg) = mesh(dir);
    let out = with_worker(listener, cfg, no_fetch, vec![pipeline(file)]);
    let err = out[0].as_ref().unwrap_err();
    assert!(err.contains("cannot run its job") && err.contains("austen.gguf"), "{err}");
}

//! Weights from the head: a worker without its own copy of the model file (or with another
//! version of it) asks the head for its shard on the job connection, keeps it in its cache
//! folder, and loads it from there next time. Only the tensors the node reads travel (a
//! pipeline stage's blocks; a tensor-parallel node needs rows of every tensor, so all of
//! them), copied byte for byte from the head's file ([`onebit_model::shard`]).
//!
//! On the job connection, after the job: the worker answers [`NEED_WEIGHTS`]; the head sends
//! `S` + the shard's length (u64), then `D` + up to 1 MiB of the shard per frame, then `E` +
//! the offset (u64) and bytes of the checksum patch (the checksum of the tensor data is known
//! only at the end; the worker writes it into the header). Every frame is a Noise message, so
//! the bytes are authenticated on the way; the checksum is checked again when the shard loads,
//! which also catches a cached shard that rotted on disk. The worker writes to a temporary
//! file and renames it only once complete: a broken transfer leaves nothing in the cache.

use crate::error::{DistError, Result};
use crate::stage_job::StageJob;
use crate::tcp::Peer;
use onebit_model::load::GgufModelFile;
use onebit_model::shard::{shard_identity, ShardSpan, ShardWriter};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker's answer to a job meaning "send me my shard".
pub const NEED_WEIGHTS: u8 = 2;
/// Shard bytes per frame.
const PIECE: usize = 1 << 20;
/// How long either side waits for the next frame of a transfer before giving up.
const STALL: Duration = Duration::from_secs(60);

/// Where a transfer's progress is shown (the CLI draws a bar).
pub trait TransferProgress: Send + Sync {
    /// A transfer of `total` bytes starts; `what` names it.
    fn begin(&self, what: &str, total: u64);
    /// `done` bytes of it have passed.
    fn advance(&self, done: u64);
    /// It ended (complete or not).
    fn end(&self);
}

/// An optional [`TransferProgress`], cheap to clone into launch and worker settings.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn TransferProgress>>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Progress(shown)" } else { "Progress(none)" })
    }
}

impl Progress {
    /// Shows transfers through `p`.
    pub fn new(p: impl TransferProgress + 'static) -> Self {
        Progress(Some(Arc::new(p)))
    }
    fn begin(&self, what: &str, total: u64) {
        if let Some(p) = &self.0 {
            p.begin(what, total)
        }
    }
    fn advance(&self, done: u64) {
        if let Some(p) = &self.0 {
            p.advance(done)
        }
    }
    fn end(&self) {
        if let Some(p) = &self.0 {
            p.end()
        }
    }
}

/// The tensors a job reads.
pub fn job_span(j: &StageJob) -> ShardSpan {
    match (&j.tensor, &j.stages) {
        (Some(_), None) => ShardSpan::Whole,
        _ => ShardSpan::Blocks(j.layers.clone()),
    }
}

/// A fingerprint as 64 hex digits (shard names, the shard's metadata, messages).
pub(crate) fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The cache file name of a shard: the source's fingerprint and the span.
fn shard_name(j: &StageJob) -> String {
    match job_span(j) {
        ShardSpan::Whole => format!("{}-all.gguf", hex(&j.fingerprint)),
        ShardSpan::Blocks(r) => format!("{}-{}-{}.gguf", hex(&j.fingerprint), r.start, r.end),
    }
}

/// A shard in `cache` that holds what `j` reads, if one is there (by what the file says it
/// is, not only by its name).
pub fn cached_shard(cache: &Path, j: &StageJob) -> Option<PathBuf> {
    let (source, need) = (hex(&j.fingerprint), job_span(j));
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&source) && n.ends_with(".gguf"))
        })
        .collect();
    found.sort();
    found.into_iter().find(|p| {
        let Some(path) = p.to_str() else { return false };
        GgufModelFile::open(path)
            .ok()
            .and_then(|f| shard_identity(&f.header))
            .is_some_and(|(s, span)| s == source && span.covers(&need))
    })
}

/// Sends frames of up to [`PIECE`] shard bytes, each tagged `D`.
struct FrameSink<'p> {
    peer: &'p mut Peer,
    buf: Vec<u8>,
    failed: Option<DistError>,
}

impl FrameSink<'_> {
    fn flush_piece(&mut self) -> std::io::Result<()> {
        if self.buf.len() > 1 {
            if let Err(e) = self.peer.send_frame(&self.buf, Instant::now() + STALL) {
                let msg = e.to_string();
                self.failed = Some(e);
                return Err(std::io::Error::other(msg));
            }
            self.buf.truncate(1);
        }
        Ok(())
    }
}

impl Write for FrameSink<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let take = b.len().min(PIECE + 1 - self.buf.len());
        self.buf.extend_from_slice(&b[..take]);
        if self.buf.len() == PIECE + 1 {
            self.flush_piece()?;
        }
        Ok(take)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_piece()
    }
}

/// The head's side: streams `j`'s shard of the head's model file to the worker behind `peer`.
pub(crate) fn send_shard(peer: &mut Peer, j: &StageJob, progress: &Progress) -> Result<()> {
    let f = GgufModelFile::open(&j.model)?;
    let shard = ShardWriter::new(&f, &job_span(j), &j.fingerprint)?;
    let total = shard.planned_len()?;
    let mut start = vec![b'S'];
    start.extend(total.to_le_bytes());
    peer.send_frame(&start, Instant::now() + STALL)?;
    let what = format!("shard for {}", peer.name());
    tracing::info!("sending {what}: {} tensors, {:.1} MB", shard.tensors(), total as f64 / 1e6);
    progress.begin(&what, total);
    let mut sink = FrameSink { peer, buf: vec![b'D'], failed: None };
    let r = shard.write(&mut sink, &mut |done, _| progress.advance(done));
    progress.end();
    let (at, patch) = match (r, sink.failed.take()) {
        (_, Some(e)) => return Err(e),
        (r, None) => r?,
    };
    sink.flush_piece()
        .map_err(|e| sink.failed.take().unwrap_or(DistError::Usage(e.to_string())))?;
    let mut end = vec![b'E'];
    end.extend(at.to_le_bytes());
    end.extend(patch);
    sink.peer.send_frame(&end, Instant::now() + STALL)
}

/// Removes a partial download unless it was kept.
struct PartFile(Option<PathBuf>);

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The worker's side: asks the head for `j`'s shard and stores it in `cache`; the path.
pub(crate) fn fetch_shard(
    peer: &mut Peer,
    j: &StageJob,
    cache: &Path,
    progress: &Progress,
) -> Result<PathBuf> {
    let name = peer.name().to_string();
    let bad = |why: String| DistError::Frame { peer: name.clone(), why };
    let disk =
        |e: std::io::Error| DistError::Usage(format!("cache folder {}: {e}", cache.display()));
    peer.send_frame(&[NEED_WEIGHTS], Instant::now() + Duration::from_secs(5))?;
    let mut frame = Vec::new();
    peer.recv_frame(&mut frame, 9, Instant::now() + STALL)?;
    let total = match frame.split_first() {
        Some((b'S', n)) if n.len() == 8 => u64::from_le_bytes(n.try_into().expect("8 bytes")),
        _ => return Err(bad("expected the start of a shard".into())),
    };
    std::fs::create_dir_all(cache).map_err(disk)?;
    let file_name = shard_name(j);
    let done_path = cache.join(&file_name);
    let mut part = PartFile(Some(cache.join(format!(".{file_name}.{}.part", std::process::id()))));
    let part_path = part.0.clone().expect("set");
    let mut out = std::fs::File::create(&part_path).map_err(disk)?;
    progress.begin(&format!("shard from {name}"), total);
    let r = (|| {
        let mut got = 0u64;
        loop {
            peer.recv_frame(&mut frame, PIECE + 1, Instant::now() + STALL)?;
            match frame.split_first() {
                Some((b'D', bytes)) => {
                    got += bytes.len() as u64;
                    if got > total {
                        return Err(bad(format!("more than the {total} bytes announced")));
                    }
                    out.write_all(bytes).map_err(disk)?;
                    progress.advance(got);
                }
                Some((b'E', rest)) if rest.len() >= 8 => {
                    let at = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                    let patch = &rest[8..];
                    if got != total || at.checked_add(patch.len() as u64).is_none_or(|e| e > total)
                    {
                        return Err(bad(format!("shard ended at {got} of {total} bytes")));
                    }
                    out.seek(SeekFrom::Start(at)).map_err(disk)?;
                    out.write_all(patch).map_err(disk)?;
                    out.sync_all().map_err(disk)?;
                    return Ok(());
                }
                _ => return Err(bad("expected shard data".into())),
            }
        }
    })();
    progress.end();
    r?;
    drop(out);
    std::fs::rename(&part_path, &done_path).map_err(disk)?;
    part.0 = None;
    tracing::info!("stored {} ({:.1} MB)", done_path.display(), total as f64 / 1e6);
    Ok(done_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::{encode_job, serve_one_job, Job, WorkerSetup};
    use crate::tcp::{connect, TcpConfig};
    use onebit_model::{KvDtype, SessionOptions};
    use std::net::TcpListener;

    /// A head that asks for a stage, gets asked for weights and sends `frames` instead of a
    /// good shard, then hangs up: the worker fails the job and its cache stays empty.
    #[test]
    fn a_broken_transfer_leaves_nothing_in_the_cache() {
        let model = format!("{}/../../models/austen.gguf", env!("CARGO_MANIFEST_DIR"));
        let fp = crate::stage_job::fingerprint(&model).unwrap();
        let job = StageJob {
            model: "/nowhere/austen.gguf".into(),
            layers: 1..6,
            threads: 1,
            session: SessionOptions { max_ctx: 64, max_batch: 8, slots: 1, kv: KvDtype::F32 },
            fingerprint: fp,
            tensor: None,
            stages: None,
        };
        let start = |n: u64| [&[b'S'][..], &n.to_le_bytes()].concat();
        let end = |at: u64| [&[b'E'][..], &at.to_le_bytes(), b"xx"].concat();
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("cut short", vec![start(100), vec![b'D'; 11]]),
            ("more than announced", vec![start(10), vec![b'D'; 12]]),
            ("ended early", vec![start(100), vec![b'D'; 11], end(0)]),
            ("patch outside", vec![start(10), vec![b'D'; 11], end(9)]),
            ("no start", vec![vec![b'D'; 11]]),
            ("unknown frame", vec![start(10), vec![b'Z'; 11]]),
        ];
        for (name, frames) in cases {
            let scratch =
                tempfile::Builder::new().prefix("onebit-broken-shard-").tempdir().unwrap();
            let cache = scratch.path().join("cache");
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let cfg = TcpConfig::new([9; 32]);
            let setup = WorkerSetup {
                models: Some(cache.join("none")),
                cache: Some(cache.clone()),
                ..Default::default()
            };
            let worker = {
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    serve_one_job(&listener, &cfg, &setup, Duration::from_secs(5)).map(|_| ())
                })
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut head = connect(addr, 1, &cfg, deadline).unwrap();
            let addrs = vec!["127.0.0.1:9".parse().unwrap(), addr];
            head.send_frame(&encode_job(1, &addrs, &Job::Stage(job.clone())), deadline).unwrap();
            let mut reply = Vec::new();
            head.recv_frame(&mut reply, 64, deadline).unwrap();
            assert_eq!(reply, [NEED_WEIGHTS], "{name}");
            for f in &frames {
                head.send_frame(f, deadline).unwrap();
            }
            // The worker says why it cannot run the job; cut short, it finds the link gone.
            if name != "cut short" {
                head.recv_frame(&mut reply, 1 << 16, deadline).unwrap();
                assert_eq!(reply.first(), Some(&1), "{name}");
            }
            drop(head);
            assert!(worker.join().unwrap().is_err(), "{name}");
            let left: Vec<_> =
                std::fs::read_dir(&cache).map(|d| d.collect()).unwrap_or_else(|_| Vec::new());
            assert!(left.is_empty(), "{name}: {left:?}");
        }
    }
}

//! A mesh whose ranks already exist (an MPI job's processes; here threads joined in process,
//! the same code path without MPI): every rank runs the same launch, rank 0 leads, and the
//! greedy tokens and logits are bit-identical to one node's for the pipeline, tensor
//! parallelism and hybrids; a rank with another model file or
//! none stops every rank with its reason.

mod common;

use common::{greedy_steps, in_process, prompt, repo, Run};
use onebit_dist::launch::head_engine;
use onebit_dist::launch_ranks::{start_ranks, RankLaunch, RankStart, Strategy};
use onebit_dist::pipeline::PipelineTimeouts;
use onebit_dist::Comm;
use onebit_model::load::LoadOptions;
use onebit_model::{Engine, Model, Session, SessionOptions};
use std::time::Duration;

fn opts() -> SessionOptions {
    SessionOptions { max_ctx: 128, max_batch: 16, slots: 1, kv: onebit_model::KvDtype::F32 }
}

fn greedy(e: &mut dyn Engine) -> Run {
    greedy_steps(e, &prompt(), 64)
}

fn launch(model: &str, strategy: Strategy) -> RankLaunch {
    RankLaunch {
        model: model.into(),
        load: LoadOptions { threads: 1, ..Default::default() },
        worker_threads: 1,
        session: opts(),
        strategy,
        timeouts: PipelineTimeouts::default(),
        ready_timeout: Duration::from_secs(30),
        tensor_sums: false,
    }
}

/// Every rank's launch in its own thread; rank 0's greedy run, or each rank's error.
fn run(comms: Vec<Box<dyn Comm>>, launches: Vec<RankLaunch>) -> Result<Run, Vec<String>> {
    let handles: Vec<_> = comms
        .into_iter()
        .zip(launches)
        .map(|(c, l)| {
            std::thread::spawn(move || match start_ranks(c, &l) {
                Ok(RankStart::Head { model, comm, layout }) => {
                    let s = Session::with_options(&model, opts());
                    let t = PipelineTimeouts::default();
                    let out = greedy(&mut *head_engine(s, comm, &layout, t).unwrap());
                    Ok(Some(out))
                }
                Ok(RankStart::Served(w)) => {
                    assert!(w.steps >= 64, "{w:?}");
                    Ok(None)
                }
                Err(e) => Err(e.to_string()),
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let errors: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(results.into_iter().find_map(|r| r.ok().flatten()).expect("rank 0 ran"))
}

#[test]
fn ranks_match_one_node_bit_for_bit() {
    let path = repo("models/austen.gguf");
    let m =
        Model::from_pretrained(&path, &LoadOptions { threads: 1, ..Default::default() }).unwrap();
    let single = greedy(&mut Session::with_options(&m, opts()));
    for (name, n, strategy) in [
        ("pipeline, 2 ranks", 2, Strategy::Pipeline(None)),
        ("pipeline, 3 ranks, uneven", 3, Strategy::Pipeline(Some(vec![1, 3, 2]))),
        ("tensor parallel, 2 ranks", 2, Strategy::Tensor(None)),
        ("tensor parallel, 2 ranks, 1:2", 2, Strategy::Tensor(Some(vec![1.0, 2.0]))),
        ("tensor parallel, 3 ranks", 3, Strategy::Tensor(None)),
        ("hybrid, 1 + 2 ranks", 3, Strategy::Hybrid { groups: vec![1, 2], blocks: None }),
        (
            "hybrid, 2 + 2 ranks, blocks 2 + 4",
            4,
            Strategy::Hybrid { groups: vec![2, 2], blocks: Some(vec![2, 4]) },
        ),
    ] {
        let launches = (0..n).map(|_| launch(&path, strategy.clone())).collect();
        let got = run(in_process(n), launches).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(got.0, single.0, "{name}: greedy tokens");
        assert_eq!(got.1, single.1, "{name}: logits");
    }
}

#[test]
fn ranks_summing_partial_products_keep_one_nodes_greedy_tokens() {
    let path = repo("models/austen.gguf");
    let m =
        Model::from_pretrained(&path, &LoadOptions { threads: 1, ..Default::default() }).unwrap();
    let single = greedy(&mut Session::with_options(&m, opts()));
    let strategy = Strategy::Tensor(Some(vec![1.0, 2.0]));
    let launches =
        (0..2).map(|_| RankLaunch { tensor_sums: true, ..launch(&path, strategy.clone()) });
    let got = run(in_process(2), launches.collect()).unwrap();
    assert_eq!(got.0, single.0, "greedy tokens");
    // Each rank rounds its own piece of o's and down's inputs: not one node's logits.
    assert_ne!(got.1, single.1, "logits");
}

#[test]
fn a_rank_with_another_file_or_none_stops_every_rank_with_its_reason() {
    let path = repo("models/austen.gguf");
    let tmp = tempfile::Builder::new().prefix("onebit-ranks-").tempdir().unwrap();
    let dir = tmp.path();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let other = dir.join("austen.gguf");
    std::fs::write(&other, bytes).unwrap();
    let other = other.display().to_string();
    let missing = dir.join("missing.gguf").display().to_string();
    for (bad, want) in
        [(&other, "is not rank 0's"), (&missing, "rank 1 cannot open its model file")]
    {
        let launches =
            vec![launch(&path, Strategy::Tensor(None)), launch(bad, Strategy::Tensor(None))];
        let errors = run(in_process(2), launches).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| e.contains(want)), "{errors:?}");
    }
}

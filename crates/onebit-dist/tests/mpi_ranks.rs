//! The MPI backend with 2 ranks on this machine (built with `--features mpi`; `.ci/run`
//! installs OpenMPI): the test starts itself under `mpirun -n 2`; in there, every rank checks
//! the collectives (all-gather, the rank-ordered sum, broadcast) against the values it can
//! compute alone, then the ranks run the shipped model as a pipeline or tensor-parallel mesh
//! and rank 0 checks 64 greedy tokens and every logit bit for bit against one node; then 3
//! ranks as a hybrid (the head alone, then a tensor-parallel pair).

#![cfg(feature = "mpi")]

mod common;

use common::{greedy_steps, prompt, repo, Run};
use onebit_dist::collective::{all_gather, all_reduce_sum, broadcast};
use onebit_dist::launch::head_engine;
use onebit_dist::launch_ranks::{start_ranks, RankLaunch, RankStart, Strategy};
use onebit_dist::mpi::MpiComm;
use onebit_dist::pipeline::PipelineTimeouts;
use onebit_dist::Comm;
use onebit_model::load::LoadOptions;
use onebit_model::{Engine, Model, Session, SessionOptions};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "ONEBIT_MPI_TEST_STRATEGY";

fn opts() -> SessionOptions {
    SessionOptions { max_ctx: 128, max_batch: 16, slots: 1, kv: onebit_model::KvDtype::F32 }
}

fn greedy(e: &mut dyn Engine) -> Run {
    greedy_steps(e, &prompt(), 64)
}

/// Collectives over MPI give what each rank can work out alone.
fn collectives(comm: &mut dyn Comm) {
    let (rank, size) = (comm.rank(), comm.size());
    let deadline = Instant::now() + Duration::from_secs(20);
    // Large enough to need MPI's rendezvous protocol, sent before any receive.
    let mine: Vec<u8> = (0..300_000).map(|i| (i * 7 + rank * 13) as u8).collect();
    let mut out = Vec::new();
    all_gather(comm, &mine, &mut out, deadline).unwrap();
    for (r, got) in out.iter().enumerate() {
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i * 7 + r * 13) as u8), "from {r}");
    }
    let mut v: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37 + rank as f32).sin()).collect();
    let mut scratch = Vec::new();
    all_reduce_sum(comm, &mut v, &mut scratch, deadline).unwrap();
    let want: Vec<f32> = (0..1000)
        .map(|i| (0..size).fold(0f32, |a, r| a + (i as f32 * 0.37 + r as f32).sin()))
        .collect();
    assert_eq!(v, want);
    let mut b = if rank == 0 { b"from the head".to_vec() } else { Vec::new() };
    broadcast(comm, 0, &mut b, deadline).unwrap();
    assert_eq!(b, b"from the head");
}

fn child(strategy: &str) {
    let mut comm = MpiComm::world().unwrap();
    assert_eq!(comm.size(), if strategy == "hybrid" { 3 } else { 2 });
    collectives(&mut comm);
    let path = repo("models/austen.gguf");
    let launch = RankLaunch {
        model: path.clone(),
        load: LoadOptions { threads: 1, ..Default::default() },
        worker_threads: 1,
        session: opts(),
        strategy: match strategy {
            "tp" => Strategy::Tensor(Some(vec![1.0, 2.0])),
            "hybrid" => Strategy::Hybrid { groups: vec![1, 2], blocks: None },
            _ => Strategy::Pipeline(None),
        },
        timeouts: PipelineTimeouts::default(),
        ready_timeout: Duration::from_secs(60),
        tensor_sums: false,
    };
    match start_ranks(Box::new(comm), &launch).unwrap() {
        RankStart::Head { model, comm, layout } => {
            let s = Session::with_options(&model, opts());
            let t = PipelineTimeouts::default();
            let got = greedy(&mut *head_engine(s, comm, &layout, t).unwrap());
            let m =
                Model::from_pretrained(&path, &LoadOptions { threads: 1, ..Default::default() })
                    .unwrap();
            let single = greedy(&mut Session::with_options(&m, opts()));
            assert_eq!(got.0, single.0, "{strategy}: greedy tokens");
            assert_eq!(got.1, single.1, "{strategy}: logits");
            println!("rank 0: {strategy} over MPI matches one node");
        }
        RankStart::Served(w) => assert!(w.steps >= 64, "{w:?}"),
    }
}

#[test]
fn two_mpi_ranks_match_one_node() {
    if let Ok(strategy) = std::env::var(CHILD) {
        return child(&strategy);
    }
    let me = std::env::current_exe().unwrap();
    for (strategy, ranks) in [("pp", "2"), ("tp", "2"), ("hybrid", "3")] {
        let out = Command::new("mpirun")
            .args(["-n", ranks, "--oversubscribe"])
            .arg(&me)
            .args(["--exact", "two_mpi_ranks_match_one_node", "--nocapture", "--test-threads=1"])
            .env(CHILD, strategy)
            // mpirun refuses to start as root unless told this is meant (CI containers).
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .expect("mpirun (Debian: openmpi-bin) is needed for the mpi feature's tests");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{strategy}: {text}");
        assert!(text.contains(&format!("rank 0: {strategy} over MPI matches one node")), "{text}");
    }
}

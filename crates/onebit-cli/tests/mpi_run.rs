//! `mpirun -n 2 onebit run MODEL --mpi` (a onebit built with `--features mpi`): the two
//! ranks print exactly what one process prints, as a pipeline and tensor parallel, and three
//! as a hybrid (the head, then a tensor-parallel pair); a onebit
//! started with --mpi outside an MPI job of at least 2 ranks says so.

#![cfg(feature = "mpi")]

use std::process::Command;

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn mpirun_n(ranks: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("mpirun")
        .args(["-n", ranks, "--oversubscribe", env!("CARGO_BIN_EXE_onebit")])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun (Debian: openmpi-bin)");
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), s(out.stdout), s(out.stderr))
}

#[test]
fn two_ranks_print_what_one_process_prints() {
    let model = repo("models/austen.gguf");
    let run = ["run", &model, "-p", "It is a truth universally acknowledged", "-n", "48"];
    let out = Command::new(env!("CARGO_BIN_EXE_onebit")).args(run).output().unwrap();
    assert!(out.status.success());
    let single = String::from_utf8_lossy(&out.stdout).into_owned();
    for (strategy, layout) in [
        ("pp", "mesh: pipeline, blocks per node"),
        ("tp", "mesh: tensor parallel, query heads"),
        ("hybrid", "mesh: hybrid, nodes per stage [1, 2]"),
    ] {
        let mut args = run.to_vec();
        args.extend(["--mpi", "--strategy", strategy, "--worker-threads", "1"]);
        let ranks = if strategy == "hybrid" {
            args.extend(["--groups", "1,2"]);
            "3"
        } else {
            "2"
        };
        let (ok, out, err) = mpirun_n(ranks, &args);
        assert!(ok, "{strategy}: {err}");
        assert_eq!(out, single, "{strategy}: the ranks' text differs from one process's");
        assert!(err.contains(layout) && err.contains("rank 1 done"), "{err}");
    }
}

#[test]
fn mpi_outside_a_job_of_two_ranks_is_a_clear_error() {
    let model = repo("models/austen.gguf");
    let out = Command::new(env!("CARGO_BIN_EXE_onebit"))
        .args(["run", &model, "-p", "Emma", "-n", "4", "--mpi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 2"), "{err}");
}

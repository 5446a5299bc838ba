//! `--device gpu` from the command line: `onebit run` on the GPU backend prints the text the
//! CPU engine prints for the shipped model (greedy), and reports launches per pass;
//! `onebit kernels` names the adapter. Where wgpu finds no adapter the test says so and
//! passes, unless ONEBIT_GPU_REQUIRED=1 (CI, which installs Mesa's lavapipe).

use std::process::Command;

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn onebit(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_onebit")).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.success(), text(&o.stdout), text(&o.stderr))
}

#[test]
fn run_on_the_gpu_prints_what_the_cpu_prints() {
    let (_, kernels, _) = onebit(&["kernels"]);
    if kernels.contains("gpu: no adapter") {
        assert!(std::env::var("ONEBIT_GPU_REQUIRED").map_or(true, |v| v != "1"), "{kernels}");
        eprintln!("skipped: no GPU adapter");
        return;
    }
    assert!(kernels.contains("--device gpu uses"), "{kernels}");
    let model = repo("models/austen.gguf");
    let args = ["run", &model, "-p", "It is a truth universally", "-n", "24"];
    let (ok_cpu, cpu, err_cpu) = onebit(&args);
    assert!(ok_cpu, "{err_cpu}");
    let (ok, gpu, err) = onebit(&[&args[..], &["--device", "gpu"]].concat());
    assert!(ok, "{err}");
    assert_eq!(gpu, cpu, "the GPU's greedy text differs from the CPU's");
    assert!(err.contains("kernel launches and 1.0 submissions per pass"), "{err}");
    let (ok, _, err) = onebit(&[&args[..], &["--device", "tpu"]].concat());
    assert!(!ok && err.contains("tpu"), "{err}");
}

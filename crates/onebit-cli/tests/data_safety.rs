//! Each row of the data-safety table (a user's file lost, a hang, an abort, a misleading or
//! doubled error) as a test through the built binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_onebit")
}

/// Runs onebit; (exit code, stdout, stderr). Killed after `limit`, which fails the test.
fn onebit_in(
    dir: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    limit: Duration,
) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = s.write_all(&input);
        });
    }
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("onebit {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn onebit(dir: &Path, args: &[&str]) -> (i32, String, String) {
    onebit_in(dir, args, None, Duration::from_secs(120))
}

/// A fresh folder for one test, gone when the `TempDir` drops (a failed test's too).
fn workdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("onebit-safety-{name}-")).tempdir().unwrap()
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/austen.gguf")
}

fn persuasion() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/persuasion.txt").display().to_string()
}

/// One `error:` line, no cause repeated in it.
fn one_clear_error(err: &str) -> String {
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line in {err:?}");
    let parts: Vec<&str> = lines[0].split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p) || p.len() < 4, "repeated '{p}' in {}", lines[0]);
    }
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[test]
fn row1_convert_onto_its_own_input_is_refused_and_the_model_survives() {
    let tmp = workdir("r1");
    let d = tmp.path();
    std::fs::copy(shipped(), d.join("s.gguf")).unwrap();
    let before = std::fs::read(d.join("s.gguf")).unwrap();
    let (code, _, err) = onebit(d, &["convert", "s.gguf", "--to", "i2_s", "-o", "s.gguf"]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("is the input"), "{err}");
    assert_eq!(std::fs::read(d.join("s.gguf")).unwrap(), before);
}

#[test]
fn row2_a_failing_convert_leaves_the_existing_output_untouched() {
    let tmp = workdir("r2");
    let d = tmp.path();
    std::fs::copy(shipped(), d.join("m.gguf")).unwrap();
    std::fs::copy(shipped(), d.join("g.gguf")).unwrap();
    let before = std::fs::read(d.join("g.gguf")).unwrap();
    // 688 columns do not fill TQ2_0's blocks of 256: refused before a byte is written.
    let (code, _, err) = onebit(d, &["convert", "m.gguf", "--to", "tq2_0", "-o", "g.gguf"]);
    assert_eq!(code, 1);
    let e = one_clear_error(&err);
    assert!(e.contains("blk.0.ffn_down.weight") && e.contains("Tq2_0"), "{e}");
    assert_eq!(std::fs::read(d.join("g.gguf")).unwrap(), before);
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 2, "no temporary file left behind");
}

/// A tiny training run (a few seconds) for the checkpoint rows.
fn tiny_run(d: &Path) -> PathBuf {
    let data = persuasion();
    let args = ["train", "--data", &data, "-o", "run", "--vocab", "300", "--steps", "3"];
    let mut args = common::with_tiny(&args, 7);
    args.extend(["--save-every", "3", "--eval-every", "0"]);
    let (code, _, err) = onebit(d, &args);
    assert_eq!(code, 0, "{err}");
    d.join("run")
}

#[test]
fn rows3_4_8_checkpoints_are_never_replaced_by_exports_and_corruption_is_caught() {
    let tmp = workdir("r3");
    let d = tmp.path();
    let run = tiny_run(d);
    let ckpt = run.join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    // Row 3: exporting a checkpoint onto itself.
    let c = ckpt.display().to_string();
    let (code, _, err) = onebit(d, &["export", &c, "-o", &c]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("is the input"), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), good);
    // ... or onto another file that is not a GGUF.
    std::fs::write(d.join("notes.txt"), "my notes").unwrap();
    let (code, _, err) = onebit(d, &["export", &c, "-o", "notes.txt"]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("not a GGUF file"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("notes.txt")).unwrap(), "my notes");
    // Row 4: the run's final model is complete and carries a checksum that verifies.
    let (code, out, err) = onebit(d, &["info", "run/model.gguf"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bitnet-b1.58"), "{out}");
    // Row 8: a flipped byte in the checkpoint's data is caught on export and on resume.
    let mut bad = good.clone();
    let at = bad.len() - 100;
    bad[at] ^= 0x40;
    std::fs::write(&ckpt, &bad).unwrap();
    let (code, _, err) = onebit(d, &["export", &c, "-o", "x.gguf"]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("checksum"), "{err}");
    assert!(!d.join("x.gguf").exists());
    let (code, _, err) =
        onebit(d, &["train", "--data", &persuasion(), "-o", "run", "--resume", &c, "--steps", "4"]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("checksum"), "{err}");
    // Row 13: with the good checkpoint back, --resume needs no shape flags.
    std::fs::write(&ckpt, &good).unwrap();
    let (code, _, err) = onebit(
        d,
        &[
            "train",
            "--data",
            &persuasion(),
            "-o",
            "run",
            "--resume",
            &c,
            "--steps",
            "4",
            "--eval-every",
            "0",
        ],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn row4_a_killed_model_write_leaves_the_old_file_or_the_new_one_never_a_torn_one() {
    let tmp = workdir("r4");
    let d = tmp.path();
    let out = d.join("m.gguf");
    std::fs::copy(shipped(), &out).unwrap();
    let old = std::fs::read(&out).unwrap();
    // A 350m-shaped model takes long enough to write that kills land during the write.
    let mut killed_during = 0;
    for i in 0..6 {
        let mut child = Command::new(bin())
            .args(["init", "--shape", "350m", "--seed", &format!("{i}"), "-o"])
            .arg(&out)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 150 * i));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        killed_during += usize::from(!finished);
        let now = std::fs::read(&out).unwrap();
        if now != old {
            // The new file is complete: it verifies against its checksum.
            let (code, _, err) = onebit(d, &["info", &out.display().to_string()]);
            assert_eq!(code, 0, "a torn file after a kill: {err}");
            let g = onebit_model::gguf::GgufFile::parse(&now).unwrap();
            g.verify_checksum(&now).unwrap();
        }
    }
    assert!(killed_during >= 2, "the kills should land while writing ({killed_during} did)");
}

#[test]
fn row5_thread_counts_beyond_the_cpus_are_capped_with_a_warning() {
    let tmp = workdir("r5");
    let d = tmp.path();
    let (code, _, err) = onebit(d, &["run", "-p", "It is", "-n", "4", "-t", "1000"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1000 threads requested") && err.contains("CPUs available"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a non-terminal stderr: {err:?}");
}

#[test]
fn row6_impossible_sizes_are_refused_before_anything_is_allocated_or_created() {
    let tmp = workdir("r6");
    let d = tmp.path();
    for flags in [["--hidden", "1000000"], ["--seq", "100000"]] {
        let (code, _, err) = onebit(
            d,
            &["train", "--data", &persuasion(), "-o", "tr", flags[0], flags[1], "--steps", "3"],
        );
        assert_eq!(code, 1, "{err}");
        let e = one_clear_error(&err);
        assert!(e.contains("needs") && e.contains("GB available"), "{e}");
        assert!(!d.join("tr").exists(), "a run folder was left behind");
    }
}

#[test]
fn row8_non_finite_weights_and_hyper_parameters_are_refused_at_load() {
    let tmp = workdir("r8");
    let d = tmp.path();
    let bytes = std::fs::read(shipped()).unwrap();
    let mut g = onebit_model::gguf::GgufFile::parse(&bytes).unwrap();
    // rope.freq_base = inf.
    for (k, v) in g.metadata.iter_mut() {
        if k.ends_with("rope.freq_base") {
            *v = onebit_model::gguf::Value::F32(f32::INFINITY);
        }
    }
    let rewrite = |g: &onebit_model::gguf::GgufFile, patch: &dyn Fn(&str, &mut Vec<u8>)| {
        let plan: Vec<_> = g
            .tensors
            .iter()
            .map(|t| onebit_model::gguf::TensorPlan {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        let meta: Vec<_> =
            g.metadata.iter().filter(|(k, _)| k != "onebit.checksum").cloned().collect();
        let mut w = onebit_model::gguf::GgufWriter::new(Vec::new(), &meta, &plan).unwrap();
        for t in &g.tensors {
            let mut data = g.data(&bytes, t).to_vec();
            patch(&t.name, &mut data);
            w.write_tensor(&t.name, &data).unwrap();
        }
        w.finish().unwrap()
    };
    std::fs::write(d.join("inf.gguf"), rewrite(&g, &|_, _| {})).unwrap();
    let (code, _, err) = onebit(d, &["run", "inf.gguf", "-p", "It is", "-n", "4"]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("rope.freq_base"), "{err}");
    // A NaN in a norm weight.
    let g = onebit_model::gguf::GgufFile::parse(&bytes).unwrap();
    let nan = rewrite(&g, &|name, data| {
        if name == "blk.2.ffn_norm.weight" {
            data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    });
    std::fs::write(d.join("nan.gguf"), nan).unwrap();
    let (code, _, err) = onebit(d, &["run", "nan.gguf", "-p", "It is", "-n", "4"]);
    assert_eq!(code, 1);
    let e = one_clear_error(&err);
    assert!(e.contains("blk.2.ffn_norm.weight") && e.contains("NaN"), "{e}");
    // A flipped byte in a file onebit wrote: its checksum catches it.
    let mut flipped = bytes.clone();
    let at = flipped.len() - 1000;
    flipped[at] ^= 1;
    std::fs::write(d.join("flip.gguf"), flipped).unwrap();
    let (code, _, err) = onebit(d, &["run", "flip.gguf", "-p", "It is", "-n", "4"]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("checksum"), "{err}");
}

#[test]
fn rows9_10_11_non_files_and_missing_files_are_one_clear_error() {
    let tmp = workdir("r9");
    let d = tmp.path();
    let fifo = d.join("f");
    let ok = Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
    if ok {
        let (code, _, err) = onebit_in(d, &["info", "f"], None, Duration::from_secs(10));
        assert_eq!(code, 1);
        assert!(one_clear_error(&err).contains("not a regular file"), "{err}");
    }
    for (args, want) in [
        (vec!["info", "/dev/zero"], "not a regular file"),
        (vec!["info", "/dev/null"], "not a regular file"),
        (vec!["run", "missing.gguf", "-p", "hi"], "missing.gguf: No such file"),
        (vec!["info", "."], "a folder"),
        (vec!["train", "--data", "missing.txt", "-o", "t"], "training data missing.txt"),
    ] {
        let (code, _, err) = onebit(d, &args);
        assert_eq!(code, 1, "{args:?}");
        let e = one_clear_error(&err);
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(!e.contains("tokenizer"), "{args:?} blames the tokenizer: {e}");
    }
}

#[test]
fn row12_sampling_settings_and_foreign_tokenizers_are_checked() {
    let tmp = workdir("r12");
    let d = tmp.path();
    for (flag, value) in [
        ("--temp", "nan"),
        ("--temp", "inf"),
        ("--temp=-1", ""),
        ("--top-p", "2"),
        ("--min-p", "2"),
        ("--repeat-penalty", "0"),
        ("--repeat-penalty=-1", ""),
        ("--repeat-penalty", "nan"),
    ] {
        let mut args = vec!["run", "-p", "hi", "-n", "2", flag];
        if !value.is_empty() {
            args.push(value);
        }
        let (code, _, err) = onebit(d, &args);
        assert_eq!(code, 1, "{flag} {value}");
        assert!(one_clear_error(&err).contains("out of range"), "{err}");
    }
    // A 512-entry tokenizer on the 4096-vocabulary shipped model.
    let (code, _, err) = onebit(
        d,
        &["tokenizer", "train", "--data", &persuasion(), "--vocab", "512", "-o", "small.json"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = onebit(d, &["run", "-p", "hi", "-n", "2", "--tokenizer", "small.json"]);
    assert_eq!(code, 1);
    assert!(one_clear_error(&err).contains("not this model's tokenizer"), "{err}");
}

#[test]
fn row13_chat_survives_a_long_conversation_and_bad_lines() {
    let tmp = workdir("r13");
    let d = tmp.path();
    let mut input = Vec::new();
    for i in 0..40 {
        input.extend_from_slice(format!("Tell me about Anne, part {i}.\n").as_bytes());
        if i == 3 {
            input.extend_from_slice(b"bad \xff\xfe bytes\n");
        }
    }
    let (code, out, err) =
        onebit_in(d, &["chat", "-n", "30"], Some(&input), Duration::from_secs(300));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("oldest") && err.contains("dropped"), "no context-shift notice: {err}");
    assert!(err.contains("not valid UTF-8"), "{err}");
    assert!(out.lines().count() >= 40, "a reply per line: {out}");
}

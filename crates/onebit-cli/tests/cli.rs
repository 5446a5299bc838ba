//! End to end through the built binary: init → info → convert → bench → run, on a tiny
//! synthetic model with a hand-written word-level tokenizer; and bad input gives a clear
//! error and a non-zero exit, never a panic.

mod common;

use std::process::Command;

fn onebit(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_onebit")).args(args).output().expect("running onebit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn tokenizer_json(vocab: usize) -> String {
    let entries: Vec<String> = (0..vocab).map(|i| format!("\"w{i}\": {i}")).collect();
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{{"type":"Whitespace"}},"post_processor":null,"decoder":null,
"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"w0"}}}}"#,
        entries.join(",")
    )
}

#[test]
fn init_info_convert_bench_run() {
    let tmp = tempfile::Builder::new().prefix("onebit-cli-").tempdir().unwrap();
    let dir = tmp.path();
    let p = |n: &str| dir.join(n).display().to_string();
    let (ok, _, err) = onebit(&["init", "--shape", "tiny", "--format", "i2_s", "-o", &p("m.gguf")]);
    assert!(ok, "{err}");
    let (ok, out, err) = onebit(&["info", &p("m.gguf")]);
    assert!(ok, "{err}");
    assert!(out.contains("bitnet-b1.58") && out.contains("I2S"), "{out}");
    assert!(out.contains("KV cache per context token") && out.contains("KB q8"), "{out}");
    let (ok, _, err) = onebit(&["convert", &p("m.gguf"), "--to", "b3", "-o", &p("b3.gguf")]);
    assert!(ok, "{err}");
    let (ok, out, err) =
        onebit(&["bench", &p("b3.gguf"), "-p", "8", "-n", "4", "-r", "1", "-o", "json"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (l, test) in lines.iter().zip(["pp8", "tg4"]) {
        assert_eq!(l["test"], test);
        for k in [
            "threads",
            "tok_s_mean",
            "tok_s_sd",
            "model_bytes",
            "bpw",
            "kernel",
            "peak_rss_bytes",
            "bound_tok_s",
        ] {
            assert!(!l[k].is_null(), "{k} missing in {l}");
        }
        assert!(l["tok_s_mean"].as_f64().unwrap() > 0.0);
    }
    std::fs::write(p("tokenizer.json"), tokenizer_json(256)).unwrap();
    let (ok, out, err) = onebit(&["run", &p("b3.gguf"), "-p", "w5 w17 w200", "-n", "6"]);
    assert!(ok, "{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(!words.is_empty() && words.iter().all(|w| w.starts_with('w')), "{out}");
    assert!(err.contains("generated:"), "{err}");
    // Greedy output is deterministic; sampling with a seed is repeatable.
    let (_, again, _) = onebit(&["run", &p("b3.gguf"), "-p", "w5 w17 w200", "-n", "6"]);
    assert_eq!(out, again);
    let s1 =
        onebit(&["run", &p("b3.gguf"), "-p", "w5", "-n", "6", "--temp", "1.0", "--seed", "3"]).1;
    let s2 =
        onebit(&["run", &p("b3.gguf"), "-p", "w5", "-n", "6", "--temp", "1.0", "--seed", "3"]).1;
    assert_eq!(s1, s2);
    // Chat over standard input, with the model's template beside it.
    std::fs::write(
        p("tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}{{ m.content }} {% endfor %}w1", "bos_token": "w1"}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onebit"))
        .args(["chat", &p("b3.gguf"), "-n", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"w5 w6\nw7\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().count(), 2, "two replies expected: {text:?}");
    assert!(text.split_whitespace().all(|w| w.starts_with('w')), "{text}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::Builder::new().prefix("onebit-cli-bad-").tempdir().unwrap();
    let dir = tmp.path();
    let bad = dir.join("bad.gguf").display().to_string();
    std::fs::write(&bad, b"GGUF\x03\0\0\0\xff\xff").unwrap();
    // Each a single "error: ..." line that names what is wrong (main always prints "error:",
    // so the message itself is what is checked).
    for (args, want) in [
        (vec!["info", bad.as_str()], "truncated"),
        (vec!["bench", bad.as_str(), "-r", "1"], "truncated"),
        (vec!["info", "/nonexistent.gguf"], "/nonexistent.gguf: No such file"),
        (vec!["init", "--shape", "9000b", "-o", "/tmp/x.gguf"], "unknown shape '9000b'"),
        (vec!["bench-kernels", "--shape", "12"], "12"),
        (vec!["convert", bad.as_str(), "--to", "q4", "-o", "/tmp/y.gguf"], "unknown layout 'q4'"),
    ] {
        let (ok, _, err) = onebit(&args);
        assert!(!ok, "{args:?} succeeded");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn tokenizer_train_export_run_plot() {
    let tmp = tempfile::Builder::new().prefix("onebit-cli-train-").tempdir().unwrap();
    let dir = tmp.path();
    let p = |n: &str| dir.join(n).display().to_string();
    let corpus = format!("{}/../../data/persuasion.txt", env!("CARGO_MANIFEST_DIR"));
    let (ok, _, err) =
        onebit(&["tokenizer", "train", "--data", &corpus, "--vocab", "320", "-o", &p("tok.json")]);
    assert!(ok, "{err}");
    let run = p("run");
    let tok = p("tok.json");
    let (ok, _, err) = onebit(&common::with_tiny(
        &[
            "train",
            "--data",
            &corpus,
            "--tokenizer",
            &tok,
            "-o",
            &run,
            "--steps",
            "6",
            "--warmup",
            "2",
            "--eval-every",
            "3",
            "--monitor-every",
            "3",
            "--save-every",
            "3",
        ],
        7,
    ));
    assert!(ok, "{err}");
    assert!(err.contains("unigram baseline"), "{err}");
    let metrics = std::fs::read_to_string(format!("{run}/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    assert_eq!(metrics.matches("val_loss").count(), 2);
    assert_eq!(std::fs::read_to_string(format!("{run}/monitor.jsonl")).unwrap().lines().count(), 2);
    // Resume to more steps from the checkpoint (its shape comes from the checkpoint).
    let (ok, _, err) = onebit(&[
        "train",
        "--data",
        &corpus,
        "-o",
        &run,
        "--resume",
        &format!("{run}/checkpoint.safetensors"),
        "--steps",
        "8",
        "--warmup",
        "2",
    ]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(format!("{run}/metrics.jsonl")).unwrap().lines().count(), 8);
    let ck = format!("{run}/checkpoint.safetensors");
    let (ok, _, err) = onebit(&["export", &ck, "-o", &p("b3.gguf"), "--format", "b3"]);
    assert!(ok && err.contains("tokenizer embedded"), "{err}");
    let (ok, out, err) = onebit(&["run", &p("b3.gguf"), "-p", "Anne", "-n", "4", "--temp", "0"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("Anne"), "{out}");
    let (ok, _, err) = onebit(&["plot", &run]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(format!("{run}/curves.svg")).unwrap().contains("<svg"));
    // Hostile inputs.
    let (ok, _, err) = onebit(&["export", &corpus, "-o", &p("x.gguf")]);
    assert!(!ok && err.contains("not a safetensors file"), "{err}");
    let (ok, _, err) =
        onebit(&["train", "--data", &p("missing.txt"), "--tokenizer", &p("tok.json"), "-o", &run]);
    assert!(!ok && err.contains("missing.txt"), "{err}");
    std::fs::write(p("bad.toml"), "seq = \"long\"").unwrap();
    let (ok, _, err) = onebit(&[
        "train",
        "--data",
        &corpus,
        "--tokenizer",
        &p("tok.json"),
        "-o",
        &run,
        "--config",
        &p("bad.toml"),
    ]);
    assert!(!ok && err.contains("not a valid run config"), "{err}");
}

#[test]
fn a_transformers_directory_converts_back_to_gguf() {
    let tmp = tempfile::Builder::new().prefix("onebit-cli-hfdir-").tempdir().unwrap();
    let dir = tmp.path();
    let (hf, gguf) = (dir.join("hf"), dir.join("back.gguf"));
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/austen.gguf");
    let (hf, gguf) = (hf.to_str().unwrap(), gguf.to_str().unwrap());
    let (ok, _, err) = onebit(&["convert", model, "--for", "transformers", "-o", hf]);
    assert!(ok, "{err}");
    let (ok, _, err) = onebit(&["convert", hf, "-o", gguf]);
    assert!(ok, "{err}");
    let greedy = |m: &str| {
        let (ok, out, err) = onebit(&["run", m, "-p", "Emma was", "-n", "8", "--temp", "0"]);
        assert!(ok, "{err}");
        out
    };
    assert_eq!(greedy(gguf), greedy(model));
    let (ok, _, err) = onebit(&["convert", hf, "-o", gguf, "--tokenizer", "x.json"]);
    assert!(!ok && err.contains("directory's own tokenizer"), "{err}");
}

#[test]
fn run_uses_the_shipped_model_by_default() {
    let (ok, out, err) =
        onebit(&["run", "-p", "It is a truth universally acknowledged", "-n", "12", "--temp", "0"]);
    assert!(ok, "{err}");
    assert!(out.split_whitespace().count() >= 3, "{out}");
    assert!(err.contains("generated: 12 tokens"), "{err}");
}

#[test]
fn run_cache_and_head_options_and_stop_strings() {
    let prompt = "It is a truth universally acknowledged";
    let greedy = |extra: &[&str]| {
        let mut args = vec!["run", "-p", prompt, "-n", "24", "--temp", "0"];
        args.extend_from_slice(extra);
        onebit(&args)
    };
    let (ok, full, err) = greedy(&[]);
    assert!(ok, "{err}");
    // The int8 KV cache and 4-bit head run end to end (their accuracy is tested in onebit-model).
    let (ok, out, err) = greedy(&["--kv-cache", "q8", "--head", "q4"]);
    assert!(ok && out.starts_with(prompt), "{err}");
    let (ok, _, err) = greedy(&["--kv-cache", "q3"]);
    assert!(!ok && err.contains("unknown --kv-cache 'q3'"), "{err}");
    // A stop string taken from the greedy reply cuts the reply just before it.
    let reply = &full[prompt.len()..];
    let word = reply.split_whitespace().nth(3).expect("a few words of reply").to_string();
    let (ok, cut, err) = greedy(&["--stop", &word]);
    assert!(ok, "{err}");
    let at = reply.find(&word).unwrap();
    assert_eq!(cut.trim_end(), full[..prompt.len() + at].trim_end(), "stop at {word:?}");
}

#[test]
fn onebit_kernel_reaches_the_head_and_dense_ops() {
    let out = Command::new(env!("CARGO_BIN_EXE_onebit"))
        .arg("kernels")
        .env("ONEBIT_KERNEL", "scalar")
        .output()
        .expect("running onebit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in ["t2: default mad/t2/scalar", "head: q8/q4 scalar", "dense: f32/f16 scalar"] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_onebit"))
        .arg("kernels")
        .env("ONEBIT_KERNEL", "sse9")
        .output()
        .expect("running onebit");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"ONEBIT_KERNEL="sse9" names no kernel (one of: scalar"#), "{err}");
    // Set but empty (`ONEBIT_KERNEL= onebit ...`) is unset: the default kernels.
    let out = Command::new(env!("CARGO_BIN_EXE_onebit"))
        .arg("kernels")
        .env("ONEBIT_KERNEL", "")
        .output()
        .expect("running onebit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

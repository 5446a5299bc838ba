//! The other engines are the oracle: files that llama.cpp, ik_llama.cpp and bitnet.cpp made
//! with their own quantizers from onebit's trained models, and onebit's exports for each of
//! them, with what each engine itself computed (recorded by bench/fidelity/record.sh). onebit
//! must produce the same 32 greedy tokens and first logits within a stated tolerance.
//!
//! The spread comes from activation rounding: onebit quantizes each token to int8 with one
//! scale, llama.cpp's TQ types use Q8_K blocks of 256, ik_llama.cpp's IQ*_BN use four scales
//! per row; the engines also keep K/V in f16 and multiply the head in their own types. The
//! worst spread measured over every fixture is printed and bounded by [`LOGIT_TOL`].
//! Measured when the fixtures were recorded (AMD EPYC Zen2, AVX2): bitnet.cpp I2_S 0.07 %,
//! llama.cpp TQ1_0/TQ2_0 0.09-0.16 %, ik_llama.cpp IQ1_BN/IQ2_BN 0.20-0.31 % of the peak
//! logit; all 32 greedy tokens identical in every fixture.

use onebit_model::convert::{convert_gguf, linear_type_from_name};
use onebit_model::engine::KvDtype;
use onebit_model::load::{load_gguf, LoadOptions};
use onebit_model::target::Target;
use onebit_model::{HeadKind, Session, SessionOptions};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Largest |onebit − peer| of the first logits, relative to the peer's largest |logit|
/// (about 3x the worst spread measured).
const LOGIT_TOL: f32 = 0.01;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peers")
}

struct Fixture {
    name: String,
    engine: String,
    made_by: String,
    model: String,
    sha256: String,
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    top2: Vec<(u32, f32, u32, f32)>,
    logits: Vec<f32>,
}

fn fixtures() -> Vec<Fixture> {
    let mut names: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let ids = |k: &str| -> Vec<u32> {
                v[k].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
            };
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let raw = std::fs::read(dir().join(s("logits"))).unwrap();
            Fixture {
                name: p.file_stem().unwrap().to_string_lossy().into(),
                engine: s("engine"),
                made_by: s("made_by"),
                model: s("model"),
                sha256: s("sha256"),
                prompt: ids("prompt"),
                tokens: ids("tokens"),
                top2: v["top2"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let f = |i: usize| r[i].as_f64().unwrap();
                        (f(0) as u32, f(1) as f32, f(2) as u32, f(3) as f32)
                    })
                    .collect(),
                logits: raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            }
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    let d = Sha256::digest(std::fs::read(path).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file the engine ran: committed (a peer's own), or rebuilt by onebit's converter from
/// the command the fixture records (then byte-identical to what the engine ran).
fn model_file(f: &Fixture, tmp: &Path) -> PathBuf {
    let committed = dir().join(&f.model);
    if committed.exists() {
        assert_eq!(sha256(&committed), f.sha256, "{}: committed file changed", f.name);
        return committed;
    }
    let args: Vec<&str> = f.made_by.split_whitespace().collect();
    assert_eq!(args[..2], ["onebit", "convert"], "{}: {}", f.name, f.made_by);
    let (src, target, to) = (args[2], args[4], args[6]);
    let out = tmp.join(&f.model);
    convert_gguf(
        &dir().join(src).display().to_string(),
        &out.display().to_string(),
        Target::from_name(target).unwrap(),
        linear_type_from_name(to).unwrap(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        sha256(&out),
        f.sha256,
        "{}: `{}` no longer writes the file {} ran; re-record with bench/fidelity/record.sh",
        f.name,
        f.made_by,
        f.engine
    );
    out
}

fn argmax(l: &[f32]) -> usize {
    let mut a = 0;
    for (i, &v) in l.iter().enumerate() {
        if v > l[a] {
            a = i;
        }
    }
    a
}

fn top2_margin(l: &[f32]) -> f32 {
    let a = argmax(l);
    let b = l.iter().enumerate().filter(|&(i, _)| i != a).map(|(_, &v)| v).fold(f32::MIN, f32::max);
    l[a] - b
}

#[test]
fn onebit_matches_every_engine_on_its_own_files_and_on_ours() {
    let scratch = tempfile::Builder::new().prefix("onebit-peers-").tempdir().unwrap();
    let tmp = scratch.path();
    let all = fixtures();
    assert!(all.len() >= 10, "expected the recorded fixtures, found {}", all.len());
    let mut worst = 0f32;
    for f in &all {
        let path = model_file(f, tmp);
        let opts = LoadOptions { threads: 2, head: HeadKind::F32, ..Default::default() };
        let m = load_gguf(&path.display().to_string(), &opts).unwrap();
        let mut s = Session::with_options(
            &m,
            SessionOptions { max_ctx: 64, max_batch: 16, slots: 1, kv: KvDtype::F16 },
        );
        let first = s.forward(&f.prompt).unwrap().to_vec();
        let peak = f.logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = first.iter().zip(&f.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let rel = err / peak;
        worst = worst.max(rel);
        println!(
            "{:28} {:22} first logits: max |diff| {err:.4} ({:.2}% of {peak:.2})",
            f.name,
            f.engine,
            rel * 100.0
        );
        assert!(rel <= LOGIT_TOL, "{}: logits differ by {rel} of the peak", f.name);
        let mut logits = first;
        for (step, &want) in f.tokens.iter().enumerate() {
            let got = argmax(&logits) as u32;
            let (pa, pla, pb, plb) = f.top2[step];
            assert_eq!(
                got,
                want,
                "{}: step {step}: onebit {got} (top-2 margin {:.4}), {} {want} (its top-2 {pa} {pla:.4} / {pb} {plb:.4}, margin {:.4})",
                f.name,
                top2_margin(&logits),
                f.engine,
                pla - plb
            );
            logits = s.forward(&[got]).unwrap().to_vec();
        }
    }
    println!(
        "worst first-logit spread over {} fixtures: {:.2}% of the peak logit",
        all.len(),
        worst * 100.0
    );
}

#[test]
fn perplexity_agrees_with_llama_perplexity_within_one_percent() {
    use onebit_model::perplexity::{perplexity, PerplexityOptions};
    let recorded = std::fs::read_to_string(dir().join("llamacpp-tq2_0.perplexity.txt")).unwrap();
    // "Final estimate: PPL = 137.6042 +/- 7.75114"
    let want: f64 = recorded
        .split("PPL = ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let path = dir().join("llamacpp-tq2_0.gguf").display().to_string();
    let tok = onebit_model::Tokenizer::for_model(&path).unwrap();
    let m = load_gguf(&path, &LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/persuasion.txt"),
    )
    .unwrap();
    let tokens = tok.encode(&text, true).unwrap();
    let o = PerplexityOptions {
        n_ctx: 256,
        batch: 256,
        max_chunks: Some(16),
        bos: tok.added_bos(),
        kv: KvDtype::F16,
    };
    let got = perplexity(&m, &tokens, &o, &mut |_| {}).unwrap();
    println!("onebit PPL {:.4} +/- {:.5}; llama-perplexity {recorded}", got.ppl, got.error);
    assert_eq!(got.chunks, 16);
    assert!((got.ppl / want - 1.0).abs() < 0.01, "onebit {} vs llama-perplexity {want}", got.ppl);
}

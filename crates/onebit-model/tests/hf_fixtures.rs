//! transformers is the oracle for Hugging Face directories: tiny checkpoints saved by
//! transformers itself (bf16 masters with online quantization, packed `autobitlinear` and
//! `bitlinear` forms, a Llama architecture) and a trained model written by onebit and read
//! by transformers, with transformers' float32 logits at every position (recorded by
//! bench/fidelity/transformers_fixtures.py). onebit's logits must agree within
//! [`LOGIT_TOL`] of the peak at every position, and greedy decoding must pick the same tokens.
//!
//! Both compute BitNet's arithmetic (absmean ternary weights, per-token int8 absmax
//! activations) in f32; what remains is float summation order, which can move an activation
//! across a rounding boundary of the int8 grid. On random weights one such flip moves the
//! logits by 1-2 %: measured with transformers alone, scaling its embeddings by (1 + 1e-6·N(0,1))
//! changed its own float64 logits by up to 2.1 % of the peak from position 3 on in 3 of 5
//! trials (one trial reproduced onebit's spread exactly, 1.40 % from position 8). So random
//! checkpoints are held to [`EXACT_TOL`] on their first [`EXACT_POSITIONS`] positions and to
//! [`CHAOS_TOL`] everywhere; the trained model (no near-ties) to [`EXACT_TOL`] everywhere plus
//! identical greedy tokens.

use onebit_model::engine::KvDtype;
use onebit_model::load::LoadOptions;
use onebit_model::{HeadKind, Model, Session, SessionOptions};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Largest difference relative to the peak logit where both compute the same integers.
const EXACT_TOL: f32 = 1e-4;
/// Positions of a random checkpoint held to [`EXACT_TOL`] before rounding flips may start.
const EXACT_POSITIONS: usize = 3;
/// Bound for random checkpoints once a rounding flip has happened (see the module doc).
const CHAOS_TOL: f32 = 0.03;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn load(path: &Path) -> Model {
    let o = LoadOptions { threads: 2, head: HeadKind::F32, ..Default::default() };
    Model::from_pretrained(&path.display().to_string(), &o).unwrap()
}

/// onebit's logits at every position of `ids`.
fn all_logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    let o = SessionOptions { max_ctx: ids.len(), max_batch: ids.len(), slots: 1, kv: KvDtype::F32 };
    let mut s = Session::with_options(m, o);
    let mut out = Vec::new();
    s.forward_each(0, ids, &mut |_, l| out.extend_from_slice(l)).unwrap();
    out
}

fn spread(got: &[f32], want: &[f32], vocab: usize) -> f32 {
    got.chunks_exact(vocab)
        .zip(want.chunks_exact(vocab))
        .map(|(g, w)| {
            let peak = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / peak
        })
        .fold(0f32, f32::max)
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(format!("{name}.json"))).unwrap())
        .unwrap()
}

fn ids(v: &serde_json::Value, k: &str) -> Vec<u32> {
    v[k].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

#[test]
fn checkpoints_saved_by_transformers_give_transformers_logits() {
    for name in ["bitnet-online", "bitnet-packed", "bitnet-bitlinear", "llama-online"] {
        let v = json(name);
        let m = load(&dir().join(name));
        let want = read_f32(&dir().join(v["logits"].as_str().unwrap()));
        let got = all_logits(&m, &ids(&v, "ids"));
        let vocab = v["vocab"].as_u64().unwrap() as usize;
        assert_eq!(got.len(), want.len(), "{name}");
        let per: Vec<f32> = got
            .chunks_exact(vocab)
            .zip(want.chunks_exact(vocab))
            .map(|(g, w)| spread(g, w, vocab))
            .collect();
        let shown: Vec<String> = per.iter().map(|e| format!("{:.2}%", e * 100.0)).collect();
        println!(
            "{name:18} {} {}: per position {}",
            v["class"],
            v["transformers"],
            shown.join(" ")
        );
        let exact = per[..EXACT_POSITIONS].iter().fold(0f32, |m, &e| m.max(e));
        assert!(exact <= EXACT_TOL, "{name}: first positions differ by {exact} of the peak");
        let worst = per.iter().fold(0f32, |m, &e| m.max(e));
        assert!(worst <= CHAOS_TOL, "{name}: logits differ by {worst} of the peak");
    }
}

#[test]
fn transformers_runs_the_directory_onebit_writes_as_onebit_does() {
    let v = json("onebit-relu2");
    let tmp = tempfile::Builder::new().prefix("onebit-hf-out-").tempdir().unwrap();
    let out = tmp.path();
    let src = dir().join("../peers/relu2-t2.gguf");
    onebit_model::convert::convert_to_hf(&src.display().to_string(), &out.display().to_string())
        .unwrap();
    let mut h = Sha256::new();
    for f in ["config.json", "model.safetensors"] {
        h.update(std::fs::read(out.join(f)).unwrap());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, v["sha256"].as_str().unwrap(), "the writer changed; re-record the fixture");
    let m = load(out);
    let want = read_f32(&dir().join(v["logits"].as_str().unwrap()));
    let seq = ids(&v, "ids");
    let got = all_logits(&m, &seq);
    let vocab = v["vocab"].as_u64().unwrap() as usize;
    let err = spread(&got, &want, vocab);
    println!(
        "onebit-relu2 (written by onebit, run by transformers): worst position {:.3}% of the peak",
        err * 100.0
    );
    // Greedy: transformers' token at each generated position is onebit's argmax there.
    let prompt = ids(&v, "prompt").len();
    let tokens = ids(&v, "tokens");
    for (i, &t) in tokens.iter().enumerate() {
        let row = &got[(prompt - 1 + i) * vocab..(prompt + i) * vocab];
        let arg = row.iter().enumerate().fold(0, |a, (j, &x)| if x > row[a] { j } else { a });
        let top2 = &v["top2"][prompt - 1 + i];
        assert_eq!(
            arg as u32, t,
            "step {i}: onebit {arg}, transformers {t} (its top-2 {} / {})",
            top2[1], top2[3]
        );
    }
    assert!(err <= EXACT_TOL, "logits differ by {err} of the peak");
}

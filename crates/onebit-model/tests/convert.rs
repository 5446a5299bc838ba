//! `convert` between every pair of layouts: trits survive exactly, the engine gives the same
//! logits (synthetic scales are powers of two, exact in f16), and a round trip restores the bytes.

use onebit_kernels::TernaryFormat;
use onebit_model::convert::convert_gguf;
use onebit_model::load::{load_gguf, GgufModelFile, LoadOptions};
use onebit_model::synthetic::{linear_type, write_synthetic};
use onebit_model::target::Target;
use onebit_model::{HeadKind, ModelConfig, Session};

fn logits(path: &str) -> Vec<f32> {
    let m = load_gguf(
        path,
        &LoadOptions {
            threads: 2,
            layout: Some(TernaryFormat::T2),
            head: HeadKind::F32,
            in_place: Some(false),
            verify: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Session::new(&m, 16, 4);
    s.forward(&[1, 5, 200, 7, 9]).unwrap().to_vec()
}

#[test]
fn every_layout_converts_and_round_trips() {
    let mut cfg = ModelConfig::preset("tiny").unwrap();
    cfg.hidden = 256;
    cfg.head_dim = 64;
    cfg.intermediate = 512;
    let tmp = tempfile::Builder::new().prefix("onebit-convert-").tempdir().unwrap();
    let dir = tmp.path();
    let p = |n: &str| dir.join(n).display().to_string();
    write_synthetic(
        &p("src.gguf"),
        &cfg,
        linear_type(TernaryFormat::I2S).unwrap(),
        3,
        &mut |_, _| {},
    )
    .unwrap();
    let want = logits(&p("src.gguf"));
    for to in [TernaryFormat::T2, TernaryFormat::B3, TernaryFormat::Tq2_0, TernaryFormat::Tq1_0] {
        let out = p(&format!("{}.gguf", to.name()));
        convert_gguf(
            &p("src.gguf"),
            &out,
            Target::Onebit,
            linear_type(to).unwrap(),
            &mut |_, _| {},
        )
        .unwrap();
        let got = logits(&out);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
        assert_eq!(err, 0.0, "{}: logits differ by {err}", to.name());
        // And back to I2_S: the linear tensors are byte-identical to the source's.
        let back = p(&format!("{}-back.gguf", to.name()));
        let i2s = linear_type(TernaryFormat::I2S).unwrap();
        convert_gguf(&out, &back, Target::Onebit, i2s, &mut |_, _| {}).unwrap();
        let (a, b) =
            (GgufModelFile::open(&p("src.gguf")).unwrap(), GgufModelFile::open(&back).unwrap());
        for t in a
            .header
            .tensors
            .iter()
            .filter(|t| t.name.contains("attn_q") || t.name.contains("ffn_down"))
        {
            let (ta, da) = a.tensor(&t.name).unwrap();
            let (tb, db) = b.tensor(&t.name).unwrap();
            assert_eq!(ta.dims, tb.dims);
            assert_eq!(da, db, "{} via {}", t.name, to.name());
        }
    }
}

#[test]
fn missing_and_wrong_files_are_errors() {
    let scratch = tempfile::Builder::new().prefix("onebit-bad-").tempdir().unwrap();
    let bad = scratch.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\0\0\0garbage").unwrap();
    let bad = bad.display().to_string();
    assert!(load_gguf(&bad, &LoadOptions::default()).is_err());
    let t2 = linear_type(TernaryFormat::T2).unwrap();
    assert!(convert_gguf(&bad, "/nonexistent/x.gguf", Target::Onebit, t2, &mut |_, _| {}).is_err());
    assert!(load_gguf("/nonexistent/model.gguf", &LoadOptions::default()).is_err());
}

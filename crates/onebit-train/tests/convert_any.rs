//! `convert_any` from the shipped trained model: to an onebit GGUF, to a transformers
//! directory and from that directory back to an onebit GGUF; every file loads and gives the
//! original model's logits, and a target that cannot run the model is a clear error.

use onebit_model::load::{load_any, LoadOptions};
use onebit_model::target::Target;
use onebit_model::Session;
use onebit_train::convert_any::{convert_any, ConvertTo};

fn logits(path: &str) -> Vec<f32> {
    let model = load_any(path, &LoadOptions { threads: 1, ..Default::default() }).unwrap();
    let mut s = Session::new(&model, 16, 8);
    s.forward(&[1, 200, 31, 7, 1000, 64]).unwrap().to_vec()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn conversions_load_and_keep_the_logits() {
    let src = format!("{}/../../models/austen.gguf", env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::Builder::new().prefix("onebit-convert-any-").tempdir().unwrap();
    let dir = tmp.path();
    let want = logits(&src);

    let copy = dir.join("copy.gguf").display().to_string();
    convert_any(&src, &copy, ConvertTo::Engine(Target::Onebit)).unwrap();
    assert_eq!(logits(&copy), want);
    // bitnet.cpp runs only the SiLU-gated architecture: a clear error, no file.
    let i2s = dir.join("m-i2s.gguf").display().to_string();
    let err = convert_any(&src, &i2s, ConvertTo::Engine(Target::BitnetCpp)).unwrap_err();
    assert!(err.to_string().contains("relu"), "{err}");
    assert!(!std::path::Path::new(&i2s).exists());

    let hf = dir.join("hf").display().to_string();
    convert_any(&src, &hf, ConvertTo::Transformers).unwrap();
    assert!(dir.join("hf/config.json").exists() && dir.join("hf/model.safetensors").exists());
    let e = max_rel(&logits(&hf), &want);
    assert!(e < 1e-2, "transformers dir: rel err {e}");

    let back = dir.join("back.gguf").display().to_string();
    convert_any(&hf, &back, ConvertTo::Engine(Target::Onebit)).unwrap();
    let e = max_rel(&logits(&back), &want);
    assert!(e < 1e-2, "transformers dir back to onebit: rel err {e}");

    assert!(ConvertTo::from_name("gguf-ish").is_err());
    assert_eq!(ConvertTo::from_name("transformers").unwrap(), ConvertTo::Transformers);
}

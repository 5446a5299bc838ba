//! Hugging Face directories: a model written as packed safetensors + config.json loads to
//! the same logits as the GGUF it came from; `bitlinear` vs `autobitlinear` weight_scale
//! semantics; malformed directories give errors.

use onebit_kernels::TernaryFormat;
use onebit_model::hf::{load_hf, write_hf};
use onebit_model::load::{load_gguf, GgufModelFile, LoadOptions};
use onebit_model::synthetic::{linear_type, write_synthetic};
use onebit_model::{HeadKind, ModelConfig, Session};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

fn logits(m: &onebit_model::Model) -> Vec<f32> {
    let mut s = Session::new(m, 16, 4);
    s.forward(&[1, 9, 100, 3, 4, 5]).unwrap().to_vec()
}

fn opts() -> LoadOptions {
    LoadOptions {
        threads: 2,
        layout: Some(TernaryFormat::T2),
        head: HeadKind::F32,
        in_place: None,
        verify: true,
        ..Default::default()
    }
}

#[test]
fn hf_directory_matches_gguf_and_scale_semantics() {
    let tmp = tempfile::Builder::new().prefix("onebit-hf-").tempdir().unwrap();
    let dir = tmp.path();
    let gguf = dir.join("m.gguf").display().to_string();
    let hf = dir.join("hf").display().to_string();
    let mut cfg = ModelConfig::preset("tiny").unwrap();
    cfg.tied_embeddings = true;
    write_synthetic(&gguf, &cfg, linear_type(TernaryFormat::I2S).unwrap(), 5, &mut |_, _| {})
        .unwrap();
    let src = GgufModelFile::open(&gguf).unwrap();
    write_hf(&src, &cfg, &hf, None).unwrap();
    let want = logits(&load_gguf(&gguf, &opts()).unwrap());
    let got = logits(&load_hf(&hf, &opts()).unwrap());
    assert_eq!(got, want);

    // The same weights as a `bitlinear` checkpoint: weight_scale holds 1/s and divides.
    let st_path = format!("{hf}/model.safetensors");
    let bytes = std::fs::read(&st_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in st.tensors() {
        let mut data = t.data().to_vec();
        if name.ends_with("weight_scale") {
            let s = f32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            data = (1.0 / s).to_le_bytes().to_vec();
        }
        owned.push((name, t.dtype(), t.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(&st_path)).unwrap();
    let cfg_path = format!("{hf}/config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap().replace("autobitlinear", "bitlinear");
    std::fs::write(&cfg_path, text).unwrap();
    let got = logits(&load_hf(&hf, &opts()).unwrap());
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert_eq!(err, 0.0, "bitlinear semantics: 1/(1/s) = s for powers of two");

    // Mutated and truncated safetensors files: loading may fail, but never panics.
    let good = std::fs::read(&st_path).unwrap();
    let mut seed = 0x9E37_79B9u64;
    for i in 0..60 {
        let mut b = good.clone();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if i % 3 == 0 {
            b.truncate((seed as usize) % b.len());
        } else {
            for j in 0..4 {
                let at = (seed as usize).wrapping_mul(j + 1) % b.len();
                b[at] ^= (seed >> (8 * j)) as u8 | 1;
            }
        }
        std::fs::write(&st_path, &b).unwrap();
        let r = std::panic::catch_unwind(|| load_hf(&hf, &opts()).map(|_| ()));
        assert!(r.is_ok(), "load_hf panicked on mutation {i}");
    }
    std::fs::write(&st_path, &good).unwrap();

    // Hostile directories.
    std::fs::write(&cfg_path, "{\"hidden_size\": 64}").unwrap();
    assert!(load_hf(&hf, &opts()).is_err());
    std::fs::write(&st_path, b"\x08\0\0\0\0\0\0\0{\"a\":1}").unwrap();
    assert!(load_hf(&hf, &opts()).is_err());
    assert!(load_hf("/nonexistent-dir", &opts()).is_err());
}

//! The GGUF container: hand-computed header bytes, write/read round trips, and hostile
//! files (truncated, corrupted, out-of-range offsets) that must give errors, never panics.

use onebit_model::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, TensorPlan, Value};
use proptest::prelude::*;

fn write(meta: &[(String, Value)], tensors: &[(TensorPlan, Vec<u8>)]) -> Vec<u8> {
    let plan: Vec<TensorPlan> = tensors.iter().map(|t| t.0.clone()).collect();
    let mut w = GgufWriter::new(Vec::new(), meta, &plan).unwrap();
    for (p, d) in tensors {
        w.write_tensor(&p.name, d).unwrap();
    }
    w.finish().unwrap()
}

fn sample() -> Vec<u8> {
    let meta = vec![
        ("general.architecture".to_string(), Value::String("bitnet-b1.58".into())),
        ("x.count".into(), Value::U32(7)),
        (
            "x.list".into(),
            Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
        ),
        ("x.f".into(), Value::F32(0.5)),
    ];
    let t = |name: &str, dims: Vec<u64>, ty, n| {
        (TensorPlan { name: name.into(), dims, ty }, (0..n).map(|i| i as u8).collect())
    };
    write(
        &meta,
        &[
            t("a.weight", vec![4], GgmlType::F32, 16),
            t("b.weight", vec![128, 1], GgmlType::I2S, 64),
        ],
    )
}

#[test]
fn header_bytes_by_hand() {
    let b = write(
        &[("k".into(), Value::U8(9))],
        &[(TensorPlan { name: "t".into(), dims: vec![2], ty: GgmlType::F16 }, vec![1, 2, 3, 4])],
    );
    let mut want = b"GGUF".to_vec();
    want.extend(3u32.to_le_bytes()); // version
    want.extend(1u64.to_le_bytes()); // tensors
    want.extend(1u64.to_le_bytes()); // kv pairs
    want.extend(1u64.to_le_bytes());
    want.push(b'k');
    want.extend(0u32.to_le_bytes()); // type u8
    want.push(9);
    want.extend(1u64.to_le_bytes());
    want.push(b't');
    want.extend(1u32.to_le_bytes()); // n_dims
    want.extend(2u64.to_le_bytes());
    want.extend(1u32.to_le_bytes()); // F16
    want.extend(0u64.to_le_bytes()); // offset
    while !want.len().is_multiple_of(32) {
        want.push(0);
    }
    want.extend([1, 2, 3, 4]);
    want.resize(want.len() + 28, 0);
    assert_eq!(b, want);
}

#[test]
fn round_trip() {
    let b = sample();
    let g = GgufFile::parse(&b).unwrap();
    assert_eq!(g.get("x.count"), Some(&Value::U32(7)));
    assert_eq!(g.get("x.f"), Some(&Value::F32(0.5)));
    assert_eq!(
        g.get("x.list"),
        Some(&Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]))
    );
    let t = g.tensor("b.weight").unwrap();
    assert_eq!((t.ty, t.size, t.offset), (GgmlType::I2S, 64, 32));
    assert_eq!(g.data(&b, t), &(0..64).map(|i| i as u8).collect::<Vec<_>>()[..]);
    // Written again from what was read, the bytes are identical.
    let tensors: Vec<(TensorPlan, Vec<u8>)> = g
        .tensors
        .iter()
        .map(|t| {
            (
                TensorPlan { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty },
                g.data(&b, t).to_vec(),
            )
        })
        .collect();
    assert_eq!(write(&g.metadata, &tensors), b);
}

#[test]
fn hostile_files_are_errors() {
    let b = sample();
    for cut in [0, 3, 4, 8, 20, 40, 100, b.len() - 1] {
        assert!(GgufFile::parse(&b[..cut]).is_err(), "truncated at {cut} parsed");
    }
    let mut bad = b.clone();
    bad[0] = b'X';
    assert!(matches!(GgufFile::parse(&bad), Err(GgufError::BadMagic(_))));
    let mut bad = b.clone();
    bad[4] = 9;
    assert!(matches!(GgufFile::parse(&bad), Err(GgufError::Version(9))));
    // Absurd tensor count.
    let mut bad = b.clone();
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(GgufFile::parse(&bad), Err(GgufError::TooLarge { .. })));
    // A tensor offset past the end of the file.
    let g = GgufFile::parse(&b).unwrap();
    let pos = b.windows(8).rposition(|w| w == 32u64.to_le_bytes()).unwrap();
    let mut bad = b.clone();
    bad[pos..pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(GgufFile::parse(&bad), Err(GgufError::TensorRange { .. })), "{:?}", g.tensors);
    // I2_S (type 36) outside a BitNet architecture is an unknown type.
    let meta = vec![("general.architecture".to_string(), Value::String("llama".into()))];
    let b2 = write(
        &meta,
        &[(TensorPlan { name: "w".into(), dims: vec![128, 1], ty: GgmlType::I2S }, vec![0; 64])],
    );
    assert!(matches!(GgufFile::parse(&b2), Err(GgufError::TensorType { ty: 36, .. })));
}

#[test]
fn writer_rejects_misuse() {
    let plan = vec![TensorPlan { name: "t".into(), dims: vec![4], ty: GgmlType::F32 }];
    let mut w = GgufWriter::new(Vec::new(), &[], &plan).unwrap();
    assert!(w.write_tensor("t", &[0; 15]).is_err());
    assert!(w.write_tensor("u", &[0; 16]).is_err());
    let w = GgufWriter::new(Vec::new(), &[], &plan).unwrap();
    assert!(w.finish().is_err());
    let bad = vec![TensorPlan { name: "t".into(), dims: vec![100, 1], ty: GgmlType::Tq2_0 }];
    assert!(GgufWriter::new(Vec::new(), &[], &bad).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn random_mutations_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut b = sample();
        for (at, v) in flips {
            let n = b.len();
            b[at % n] = v;
        }
        let cut = cut % (b.len() + 1);
        if let Ok(g) = GgufFile::parse(&b[..cut]) {
            for t in &g.tensors {
                let _ = g.data(&b[..cut], t);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut with_magic = b"GGUF\x03\0\0\0".to_vec();
        with_magic.extend(&b);
        let _ = GgufFile::parse(&b);
        let _ = GgufFile::parse(&with_magic);
    }
}

/// The architecture name alone decides FFN, sub-norms and RoPE pairing when a file carries
/// no `onebit.*` keys, as llama.cpp, ik_llama.cpp and bitnet.cpp read it.
#[test]
fn architecture_names_mean_what_the_peers_run() {
    use onebit_model::{Activation, ModelConfig};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/austen.gguf");
    let bytes = std::fs::read(path).unwrap();
    let mut g = GgufFile::parse(&bytes).unwrap();
    let ours = ModelConfig::from_gguf(&g).unwrap();
    assert!(!ours.rope_interleaved && ours.sub_norms && ours.act == Activation::Relu2);
    // Without onebit's keys, bitnet-b1.58 is still relu², sub-norms and NEOX (rotate half).
    g.metadata.retain(|(k, _)| !k.starts_with("onebit."));
    assert_eq!(ModelConfig::from_gguf(&g).unwrap(), ours);
    let rename = |g: &mut GgufFile, arch: &str| {
        let old = g.get("general.architecture").unwrap().as_str().unwrap().to_string();
        for (k, v) in g.metadata.iter_mut() {
            if k == "general.architecture" {
                *v = Value::String(arch.into());
            } else if let Some(rest) = k.strip_prefix(&format!("{old}.")) {
                *k = format!("{arch}.{rest}");
            }
        }
    };
    rename(&mut g, "bitnet-25");
    assert_eq!(ModelConfig::from_gguf(&g).unwrap(), ours);
    // `bitnet` is the 1bitLLM family: SiLU-gated, sub-norms, NEOX.
    rename(&mut g, "bitnet");
    let c = ModelConfig::from_gguf(&g).unwrap();
    assert_eq!((c.act, c.sub_norms, c.rope_interleaved), (Activation::Silu, true, false));
    // `llama` pairs adjacent dimensions (its converter permutes q/k) and has no sub-norms.
    rename(&mut g, "llama");
    let c = ModelConfig::from_gguf(&g).unwrap();
    assert_eq!((c.act, c.sub_norms, c.rope_interleaved), (Activation::Silu, false, true));
    rename(&mut g, "qwen2");
    assert!(ModelConfig::from_gguf(&g)
        .unwrap_err()
        .to_string()
        .contains("'qwen2' is not supported"));
}

/// Found by onebit-fuzz: a header claiming 2^24 blocks made listing its tensors take a minute.
#[test]
fn a_block_count_beyond_the_tensors_is_refused_at_once() {
    use onebit_model::ModelConfig;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/austen.gguf");
    let bytes = std::fs::read(path).unwrap();
    let mut g = GgufFile::parse(&bytes).unwrap();
    for (k, v) in g.metadata.iter_mut() {
        if k.ends_with(".block_count") {
            *v = Value::U32(1 << 24);
        }
    }
    let e = ModelConfig::from_gguf(&g).unwrap_err().to_string();
    assert!(e.contains("block_count 16777216"), "{e}");
}

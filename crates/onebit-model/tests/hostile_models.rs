//! Hostile model files of every type onebit reads: truncated or mutated GGUF files with
//! k-quant embeddings and ik_llama.cpp / llama.cpp / bitnet.cpp ternary linears are loaded
//! and run; each attempt ends in a clear error or in logits, never a panic.

use onebit_kernels::{TernaryFormat, TernaryMatrix};
use onebit_model::gguf::{GgmlType, GgufWriter, TensorPlan, Value};
use onebit_model::load::{load_gguf, LoadOptions};
use onebit_model::tensors::Role;
use onebit_model::{HeadKind, ModelConfig, Session};
use proptest::prelude::*;

fn config() -> ModelConfig {
    ModelConfig {
        vocab: 32,
        max_positions: 16,
        tied_embeddings: true,
        ..ModelConfig::preset("micro").unwrap()
    }
}

/// A model file: `embed` embeddings (random block bytes with sane f16 scales), `linear`
/// linears from random trits, unit norms, architecture `bitnet-b1.58`.
fn model(embed: GgmlType, linear: TernaryFormat, seed: u64) -> Vec<u8> {
    let c = config();
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let ty = onebit_model::synthetic::linear_type(linear).unwrap();
    let mut meta = c.to_gguf();
    meta.retain(|(k, _)| !k.starts_with("onebit."));
    meta.push(("general.name".into(), Value::String("hostile".into())));
    let mut plan = Vec::new();
    let mut data = Vec::new();
    for t in c.tensors() {
        let (pty, bytes) = match t.role {
            Role::Norm => (GgmlType::F32, (0..t.len()).flat_map(|_| 1f32.to_le_bytes()).collect()),
            Role::Embedding | Role::Output => {
                let n = embed.tensor_bytes(t.cols as u64, t.rows as u64).unwrap() as usize;
                // Random bytes with every 16-bit word a small f16 where a scale may sit.
                let b: Vec<u8> = (0..n / 2)
                    .flat_map(|_| half::f16::from_f32((next() % 1000) as f32 / 1e5).to_le_bytes())
                    .collect();
                (embed, b)
            }
            Role::Linear => {
                let trits: Vec<i8> = (0..t.len()).map(|_| (next() % 3) as i8 - 1).collect();
                let m = TernaryMatrix::from_trits(linear, t.rows, t.cols, &trits, 0.02).unwrap();
                (ty, m.bytes().to_vec())
            }
        };
        plan.push(TensorPlan { name: t.name.clone(), dims: t.dims(), ty: pty });
        data.push(bytes);
    }
    let mut w = GgufWriter::new(Vec::new(), &meta, &plan).unwrap();
    for (p, d) in plan.iter().zip(&data) {
        w.write_tensor(&p.name, d).unwrap();
    }
    w.finish().unwrap()
}

const EMBEDS: [GgmlType; 8] = [
    GgmlType::Q6K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q3K,
    GgmlType::Q2K,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Bf16,
];
const LINEARS: [TernaryFormat; 5] = [
    TernaryFormat::Iq2Bn,
    TernaryFormat::Iq1Bn,
    TernaryFormat::Tq2_0,
    TernaryFormat::Tq1_0,
    TernaryFormat::I2S,
];

fn run(bytes: &[u8], path: &std::path::Path) -> Result<(), String> {
    std::fs::write(path, bytes).unwrap();
    let o =
        LoadOptions { threads: 1, head: HeadKind::Q8, in_place: Some(false), ..Default::default() };
    let m = load_gguf(&path.display().to_string(), &o).map_err(|e| e.to_string())?;
    let mut s = Session::new(&m, 8, 4);
    s.forward(&[1, 2, 3]).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn intact_files_of_every_type_run() {
    let scratch = tempfile::Builder::new().prefix("onebit-hostile-ok-").tempdir().unwrap();
    let path = scratch.path().join("ok.gguf");
    for (i, &e) in EMBEDS.iter().enumerate() {
        for &l in &LINEARS {
            run(&model(e, l, i as u64 + 1), &path)
                .unwrap_or_else(|err| panic!("{e:?}/{l:?}: {err}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn mutated_and_truncated_files_never_panic(
        e in 0..EMBEDS.len(), l in 0..LINEARS.len(), seed: u64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
        cut in any::<usize>(), truncate: bool,
    ) {
        let mut b = model(EMBEDS[e], LINEARS[l], seed);
        // Most flips land in tensor data (scales, codes), some in the header.
        for (at, v) in flips {
            let n = b.len();
            b[at % n] = v;
        }
        if truncate {
            b.truncate(cut % (b.len() + 1));
        }
        let scratch = tempfile::Builder::new().prefix("onebit-hostile-").tempdir().unwrap();
        let path = scratch.path().join("hostile.gguf");
        let r = std::panic::catch_unwind(|| run(&b, &path));
        prop_assert!(r.is_ok(), "{:?}/{:?} panicked", EMBEDS[e], LINEARS[l]);
    }
}

//! Synthetic models for benchmarks and tests (`onebit init --shape`): random ternary
//! weights, small random embeddings, unit norms, written tensor by tensor so a 100B model
//! never has to fit in memory; and [`timing_blocks`], a model's blocks held in memory for
//! the mesh planner to time the engine on a node that has no copy of the file.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter, TensorPlan, Value};
use half::f16;
use onebit_kernels::{TernaryFormat, TernaryMatrix};

/// The ternary layouts `init` can write.
pub fn linear_type(format: TernaryFormat) -> Result<GgmlType> {
    Ok(match format {
        TernaryFormat::I2S => GgmlType::I2S,
        TernaryFormat::Tq1_0 => GgmlType::Tq1_0,
        TernaryFormat::Tq2_0 => GgmlType::Tq2_0,
        TernaryFormat::Iq2Bn => GgmlType::Iq2Bn,
        TernaryFormat::Iq1Bn => GgmlType::Iq1Bn,
        TernaryFormat::T2 => GgmlType::OnebitT2,
        TernaryFormat::B3 => GgmlType::OnebitB3,
        other => {
            return Err(Error::Config(format!("{} cannot be stored in a model file", other.name())))
        }
    })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Every tensor of a model, in file order, with ternary linears of type `linear` (plus
/// their `.scale` tensors for onebit's own layouts), f16 embeddings and f32 norms.
pub fn tensor_plan(c: &ModelConfig, linear: GgmlType) -> Vec<TensorPlan> {
    use crate::tensors::Role;
    let separate_scale = matches!(linear, GgmlType::OnebitT2 | GgmlType::OnebitB3);
    let mut v = Vec::new();
    for t in c.tensors() {
        let ty = match t.role {
            Role::Embedding | Role::Output => GgmlType::F16,
            Role::Norm => GgmlType::F32,
            Role::Linear => linear,
        };
        v.push(TensorPlan { name: t.name.clone(), dims: t.dims(), ty });
        if separate_scale && t.role == Role::Linear {
            let name = t.name.replace(".weight", ".scale");
            v.push(TensorPlan { name, dims: vec![1], ty: GgmlType::F32 });
        }
    }
    v
}

/// Writes a random model with `config` to `path`; `progress(done, total)` counts tensors.
pub fn write_synthetic(
    path: &str,
    config: &ModelConfig,
    linear: GgmlType,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    config.validate()?;
    crate::output::check_replaces(std::path::Path::new(path), b"GGUF", "GGUF")?;
    let file = crate::output::AtomicFile::create(path)?;
    let plan = tensor_plan(config, linear);
    let mut meta = config.to_gguf();
    meta.push(("general.name".into(), Value::String("onebit synthetic".into())));
    meta.push((crate::gguf::CHECKSUM_KEY.into(), Value::String(String::new())));
    let gg = |source| Error::Gguf { path: path.into(), source };
    let mut w = GgufWriter::new(file, &meta, &plan).map_err(gg)?;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // A power of two, so the f16 block scales of TQ1_0/TQ2_0 hold it exactly.
    let scale = 1.0f32 / 64.0;
    for (i, t) in plan.iter().enumerate() {
        let n: u64 = t.dims.iter().product();
        let bytes: Vec<u8> = match t.ty {
            GgmlType::F32 if t.name.ends_with(".scale") => scale.to_le_bytes().to_vec(),
            GgmlType::F32 => (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect(),
            GgmlType::F16 => (0..n)
                .flat_map(|_| {
                    f16::from_f32(((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2)
                        .to_le_bytes()
                })
                .collect(),
            ty => {
                let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
                let trits: Vec<i8> = (0..rows * cols).map(|_| (rng.next() % 3) as i8 - 1).collect();
                let m = TernaryMatrix::from_trits(
                    crate::load::ternary_format(ty).unwrap_or(TernaryFormat::T2),
                    rows,
                    cols,
                    &trits,
                    scale,
                )
                .map_err(|source| Error::Kernel { name: t.name.clone(), source })?;
                m.bytes().to_vec()
            }
        };
        w.write_tensor(&t.name, &bytes).map_err(gg)?;
        progress(i + 1, plan.len());
    }
    let patch = w.checksum_patch();
    let mut file = w.finish().map_err(gg)?;
    if let Some((at, bytes)) = patch {
        file.patch(at, &bytes)?;
    }
    file.commit()
}

/// A model of `config`'s shape held in memory, for timing its blocks (the planner's node
/// measurement): random trits in `format`, unit norms, no embeddings and no head, so it runs
/// hidden states as a middle pipeline stage does ([`crate::Session::stage`]). Only as many
/// distinct blocks as take `budget` bytes are built (at least one); the later blocks share
/// their weights in turn, so a 100-layer shape costs `budget`, and a `budget` beyond the
/// last-level cache still has weights stream from memory as in a real decode.
pub fn timing_blocks(
    config: &ModelConfig,
    format: TernaryFormat,
    budget: usize,
    threads: usize,
) -> Result<crate::Model> {
    use crate::engine::{Embedding, Head, Layer, TernaryLinear};
    config.validate()?;
    let c = config;
    let (h, qd, kvd, f) = (c.hidden, c.q_dim(), c.kv_dim(), c.intermediate);
    let shapes = [(qd, h), (kvd, h), (kvd, h), (h, qd), (f, h), (f, h), (h, f)];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let kerr = |source| Error::Kernel { name: "timing block".into(), source };
    let scale = 1.0f32 / 64.0;
    let mut distinct: Vec<Vec<onebit_kernels::SharedBytes>> = Vec::new();
    let mut bytes = 0usize;
    // One block of random trits; the other distinct blocks are copies of its bytes (what
    // matters for timing is that they sit at other addresses, not other values).
    let mut first = Vec::with_capacity(7);
    for &(rows, cols) in &shapes {
        let trits: Vec<i8> = (0..rows * cols).map(|_| (rng.next() % 3) as i8 - 1).collect();
        let m = TernaryMatrix::from_trits(format, rows, cols, &trits, scale).map_err(kerr)?;
        first.push(m.bytes().to_vec());
    }
    let block_bytes: usize = first.iter().map(Vec::len).sum();
    while distinct.is_empty() || (bytes < budget && distinct.len() < c.layers) {
        let block = first
            .iter()
            .map(|b| std::sync::Arc::new(b.clone()) as onebit_kernels::SharedBytes)
            .collect();
        distinct.push(block);
        bytes += block_bytes;
    }
    let linear = |b: &onebit_kernels::SharedBytes, (rows, cols): (usize, usize)| {
        let len = (**b).as_ref().len();
        TernaryMatrix::from_shared(format, rows, cols, b.clone(), 0..len, Some(scale))
            .and_then(TernaryLinear::new)
            .map_err(kerr)
    };
    let sub = |n: usize| c.sub_norms.then(|| vec![1.0f32; n]);
    let layers = (0..c.layers)
        .map(|l| {
            let b = &distinct[l % distinct.len()];
            Ok(Layer {
                attn_norm: vec![1.0; h],
                q: linear(&b[0], shapes[0])?,
                k: linear(&b[1], shapes[1])?,
                v: linear(&b[2], shapes[2])?,
                o: linear(&b[3], shapes[3])?,
                attn_sub_norm: sub(qd),
                ffn_norm: vec![1.0; h],
                gate: linear(&b[4], shapes[4])?,
                up: linear(&b[5], shapes[5])?,
                down: linear(&b[6], shapes[6])?,
                ffn_sub_norm: sub(f),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::Model {
        config: c.clone(),
        embed: Embedding::Absent,
        layers,
        first_layer: 0,
        norm: vec![1.0; h],
        head: Head::Absent,
        pool: onebit_kernels::ThreadPool::new(threads.max(1)),
        tensor: None,
        tensor_head: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KvDtype, Session, SessionOptions, StageInput};

    #[test]
    fn timing_blocks_share_weights_beyond_the_budget_and_run_as_a_stage() {
        let c = ModelConfig { layers: 5, ..ModelConfig::preset("tiny").unwrap() };
        let ptr = |m: &crate::Model, l: usize| m.layers[l].down.w.bytes().as_ptr();
        // A one-byte budget: one distinct block, every layer reads its weights.
        let one = timing_blocks(&c, TernaryFormat::T2, 1, 1).unwrap();
        assert_eq!(one.layers.len(), 5);
        assert!((1..5).all(|l| ptr(&one, l) == ptr(&one, 0)));
        // Room for all: five distinct blocks.
        let all = timing_blocks(&c, TernaryFormat::T2, usize::MAX, 1).unwrap();
        assert!((1..5).all(|l| ptr(&all, l) != ptr(&all, l - 1)));
        assert!(one.layers[0].attn_sub_norm.is_some() == c.sub_norms);
        let o = SessionOptions { max_ctx: 8, max_batch: 3, slots: 3, kv: KvDtype::F16 };
        let mut s = Session::try_with_options(&one, o).unwrap();
        let x: Vec<f32> = (0..3 * c.hidden).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let out = s.stage(StageInput::Hidden(&x), &[0, 1, 2]).unwrap().to_vec();
        assert_eq!(out.len(), x.len());
        assert!(out.iter().all(|v| v.is_finite()) && out != x, "the blocks changed nothing");
        // Tokens need embeddings this model does not have.
        assert!(s.stage(StageInput::Tokens(&[1]), &[0]).is_err());
        let bad = ModelConfig { heads: 0, ..c };
        assert!(timing_blocks(&bad, TernaryFormat::T2, 1, 1).is_err());
    }
}

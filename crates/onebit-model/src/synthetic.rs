//! Synthetic models for benchmarks and tests (`onebit init --shape`): random ternary
//! weights, small random embeddings, unit norms, written tensor by tensor so a 100B model
//! never has to fit in memory.

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

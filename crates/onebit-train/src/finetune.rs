//! Fine-tuning a full-precision model into 1.58 bits: load a Llama-family (or BitNet) model
//! from GGUF (F32/F16/BF16 or a ggml block type dequantized, or ternary layouts) or a Hugging Face
//! directory as f32 masters; every linear inside the blocks becomes a BitLinear, embeddings,
//! norms and head stay full precision; the trainer's λ phase-in blends quantization in.

use crate::error::{Error, Result};
use crate::model::TrainModel;
use crate::params::ParamKind;
use crate::ParamId;
use onebit_model::hf::HfDir;
use onebit_model::load::{GgufModelFile, TensorSource};
use onebit_model::ModelConfig;

/// Loads `path` (GGUF file or HF directory) as a trainable model with the weights as latent
/// f32 masters.
pub fn load_pretrained(path: &str) -> Result<TrainModel> {
    let (src, config): (Box<dyn TensorSource>, ModelConfig) = if std::path::Path::new(path).is_dir()
    {
        let d = HfDir::open(path)?;
        let c = d.config.clone();
        (Box::new(d), c)
    } else {
        let f = GgufModelFile::open(path)?;
        let c = ModelConfig::from_gguf(&f.header)?;
        (Box::new(f), c)
    };
    let mut m = TrainModel::zeroed(config)?;
    let infos = m.params.infos().to_vec();
    for (i, info) in infos.iter().enumerate() {
        let values = match src.floats(&info.name, info.len()) {
            Ok(v) => v,
            // A ternary file: its trits times the scale are the masters.
            Err(_) if info.kind == ParamKind::Ternary => {
                let t = src.ternary(&info.name, info.rows, info.cols)?;
                let s = t.scale();
                t.to_trits().into_iter().map(|x| x as f32 * s).collect()
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Config(format!("{path}: tensor {} holds {bad}", info.name)));
        }
        m.params.value_mut(ParamId(i)).copy_from_slice(&values);
    }
    src.release();
    Ok(m)
}

//! Export to the engine or another engine: a GGUF file (ternary linears in a chosen packed
//! layout with their γ, f16 or f32 embeddings, f32 norms) carrying the model config and, when
//! given, the tokenizer as a GGUF `gpt2` vocabulary, so one file runs anywhere. The writing is
//! onebit-model's [`save_gguf`]: the trained model is one more [`TensorSource`].

use crate::error::Result;
use crate::model::TrainModel;
use onebit_kernels::{TernaryFormat, TernaryMatrix};
use onebit_model::gguf::{GgmlType, Value};
use onebit_model::load::TensorSource;
use onebit_model::save::{save_gguf, SaveOptions, SaveReport};
use onebit_model::target::Target;
use std::path::Path;

/// Export settings.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The engine the file is for.
    pub target: Target,
    /// Linear type (a ternary layout such as T2, B3, I2_S, TQ1_0, TQ2_0, IQ2_BN, IQ1_BN, or
    /// F32/F16 values).
    pub linear: GgmlType,
    /// Keep embeddings (and an untied head) in f32 instead of f16.
    pub f32_embeddings: bool,
    /// `general.name`.
    pub name: String,
    /// Further metadata (a source GGUF's `tokenizer.*` keys when fine-tuning).
    pub extra: Vec<(String, Value)>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            target: Target::Onebit,
            linear: GgmlType::OnebitT2,
            f32_embeddings: false,
            name: "onebit".into(),
            extra: Vec::new(),
        }
    }
}

/// Writes `m` (its current ternary caches, i.e. after the last update) to `path`; `inputs`
/// are files the caller read (the checkpoint), which the output may not replace.
pub fn export_gguf(
    m: &TrainModel,
    tokenizer_json: Option<&str>,
    path: &str,
    inputs: &[&Path],
    opts: &ExportOptions,
) -> Result<SaveReport> {
    let mut metadata = vec![("general.name".to_string(), Value::String(opts.name.clone()))];
    if let Some(tj) = tokenizer_json {
        metadata.extend(onebit_model::tokenizer::gguf_metadata(tj)?);
    }
    metadata.extend(
        opts.extra
            .iter()
            .filter(|(k, _)| !metadata.iter().any(|(m, _)| m == k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let embeddings = Some(if opts.f32_embeddings { GgmlType::F32 } else { GgmlType::F16 });
    let o = SaveOptions { target: opts.target, linear: opts.linear, embeddings, metadata };
    Ok(save_gguf(m, &m.config, Path::new(path), inputs, &o, &mut |_, _| {})?)
}

impl TensorSource for TrainModel {
    fn floats(&self, name: &str, len: usize) -> onebit_model::Result<Vec<f32>> {
        let id = self
            .params
            .find(name)
            .ok_or_else(|| onebit_model::Error::MissingTensor(name.into()))?;
        let v = self.params.value(id);
        if v.len() != len {
            return Err(onebit_model::Error::BadTensor {
                name: name.into(),
                why: format!("{} values, expected {len}", v.len()),
            });
        }
        Ok(v.to_vec())
    }

    fn ternary(&self, name: &str, rows: usize, cols: usize) -> onebit_model::Result<TernaryMatrix> {
        let missing = || onebit_model::Error::MissingTensor(name.into());
        let id = self.params.find(name).ok_or_else(missing)?;
        let cache = self.params.ternary(id).ok_or_else(|| onebit_model::Error::BadTensor {
            name: name.into(),
            why: "not a ternary parameter".into(),
        })?;
        TernaryMatrix::from_trits(TernaryFormat::T2, rows, cols, &cache.trits, cache.gamma)
            .map_err(|source| onebit_model::Error::Kernel { name: name.into(), source })
    }

    fn has(&self, name: &str) -> bool {
        self.params.find(name).is_some()
    }
}

//! `onebit convert`: rewrite a GGUF model for a target engine, its ternary linears in another
//! layout ([`crate::save`] does the writing). Metadata is rewritten from the parsed config,
//! plus the source's `general.*` and `tokenizer.*` keys; embeddings keep their type where the
//! target reads it.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::gguf::GgmlType;
use crate::load::GgufModelFile;
use crate::save::{save_gguf, SaveOptions, SaveReport};
use crate::target::Target;
use std::path::Path;

/// Converts `src` to `dst` for `target` with linears of type `linear` (a ternary layout, or
/// F32/F16/Q8_0 values); `progress(done, total)` counts tensors.
pub fn convert_gguf(
    src: &str,
    dst: &str,
    target: Target,
    linear: GgmlType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SaveReport> {
    convert_gguf_with(src, dst, target, linear, None, progress)
}

/// [`convert_gguf`] with the vocabulary of a `tokenizer.json` (its GGUF keys replace the
/// source's), for a model file that carries none.
pub fn convert_gguf_with(
    src: &str,
    dst: &str,
    target: Target,
    linear: GgmlType,
    tokenizer_json: Option<&str>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SaveReport> {
    let f = GgufModelFile::open(src)?;
    let config = ModelConfig::from_gguf(&f.header)?;
    let mut metadata = f.header.metadata.clone();
    if let Some(tj) = tokenizer_json {
        metadata.retain(|(k, _)| !k.starts_with("tokenizer."));
        metadata.extend(crate::tokenizer::gguf_metadata(tj)?);
    }
    let o = SaveOptions { target, linear, embeddings: None, metadata };
    save_gguf(&f, &config, Path::new(dst), &[Path::new(src)], &o, progress)
}

/// Writes the Hugging Face directory `dir` (packed BitNet, latent or float weights, read as
/// the loader reads them: values exactly `{-a, 0, +a}` keep `a` as their scale, others are
/// ternarized with absmean) as a GGUF for `target`, with the vocabulary of its
/// `tokenizer.json` when it has one.
pub fn convert_hf_dir(
    dir: &str,
    dst: &str,
    target: Target,
    linear: GgmlType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SaveReport> {
    let d = crate::hf::HfDir::open(dir)?;
    let tokenizer = Path::new(dir).join("tokenizer.json");
    let metadata = match std::fs::read_to_string(&tokenizer) {
        Ok(tj) => crate::tokenizer::gguf_metadata(&tj)?,
        Err(_) => Vec::new(),
    };
    let o = SaveOptions { target, linear, embeddings: None, metadata };
    let weights = Path::new(dir).join("model.safetensors");
    save_gguf(&d, &d.config, Path::new(dst), &[&weights, &tokenizer], &o, progress)
}

/// Writes the GGUF model `src` as a Hugging Face directory `dir` that transformers loads
/// ([`crate::hf::write_hf`]), with the file's vocabulary as tokenizer.json when it has one.
pub fn convert_to_hf(src: &str, dir: &str) -> Result<()> {
    let f = GgufModelFile::open(src)?;
    let config = ModelConfig::from_gguf(&f.header)?;
    let tok = crate::Tokenizer::for_model(src).ok();
    std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io { path: dir.into(), source })?;
    crate::output::check_output(&Path::new(dir).join("model.safetensors"), &[Path::new(src)])?;
    crate::hf::write_hf(&f, &config, dir, tok.as_ref())
}

/// The linear type a name on the command line means: a ternary layout (`t2`, `b3`, `i2_s`,
/// `tq1_0`, `tq2_0`, `iq2_bn`, `iq1_bn`) or values (`f32`, `f16`, `q8_0`).
pub fn linear_type_from_name(name: &str) -> Option<GgmlType> {
    Some(match name {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        other => {
            crate::synthetic::linear_type(onebit_kernels::TernaryFormat::from_name(other)?).ok()?
        }
    })
}

impl Target {
    /// The linear layout a file for this engine gets by default (its fastest ternary type).
    pub fn default_linear(self) -> GgmlType {
        match self {
            Target::Onebit => GgmlType::OnebitT2,
            Target::LlamaCpp => GgmlType::Tq2_0,
            Target::IkLlamaCpp => GgmlType::Iq2Bn,
            Target::BitnetCpp => GgmlType::I2S,
        }
    }
}

//! [`convert_any`]: one entry point from any model onebit reads — a GGUF file, a Hugging Face
//! directory (ternarized from its weights) or a training checkpoint — to a GGUF file for an
//! engine or a transformers directory, for callers (the Python package) that do not want to
//! tell the three apart. The CLI keeps `convert` and `export` as separate commands.

use crate::error::{Error, Result};
use crate::export::{export_gguf, ExportOptions};
use onebit_model::target::Target;
use std::path::Path;

/// What [`convert_any`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvertTo {
    /// A GGUF file for this engine, in its default ternary layout.
    Engine(Target),
    /// A transformers directory (config, safetensors, tokenizer).
    Transformers,
}

impl ConvertTo {
    /// Parses an engine name (onebit, llama.cpp, ik_llama.cpp, bitnet.cpp) or `transformers`.
    pub fn from_name(name: &str) -> Result<Self> {
        if name == "transformers" {
            return Ok(ConvertTo::Transformers);
        }
        Target::from_name(name).map(ConvertTo::Engine).ok_or_else(|| {
            Error::Config(format!(
                "unknown target '{name}' (onebit, llama.cpp, ik_llama.cpp, bitnet.cpp, transformers)"
            ))
        })
    }
}

/// Converts `src` (a `.gguf` file, an HF directory or a checkpoint `.safetensors`) into `dst`.
/// A transformers directory from a non-GGUF source goes through an onebit GGUF beside `dst`,
/// removed afterwards.
pub fn convert_any(src: &str, dst: &str, to: ConvertTo) -> Result<()> {
    if to == ConvertTo::Transformers && src.ends_with(".gguf") {
        return Ok(onebit_model::convert::convert_to_hf(src, dst)?);
    }
    let target = match to {
        ConvertTo::Engine(t) => t,
        ConvertTo::Transformers => Target::Onebit,
    };
    let gguf_dst = match to {
        ConvertTo::Transformers => {
            Path::new(dst).with_extension("onebit-tmp.gguf").display().to_string()
        }
        ConvertTo::Engine(_) => dst.to_string(),
    };
    let linear = target.default_linear();
    if src.ends_with(".gguf") {
        onebit_model::convert::convert_gguf(src, &gguf_dst, target, linear, &mut |_, _| {})?;
    } else {
        write_trained(src, &gguf_dst, target)?;
    }
    if to == ConvertTo::Transformers {
        let r = onebit_model::convert::convert_to_hf(&gguf_dst, dst);
        let _ = std::fs::remove_file(&gguf_dst);
        r?;
    }
    Ok(())
}

/// An HF directory (read as the inference loader reads it) or a training checkpoint (its
/// ternary weights as the last step used them), as a GGUF for `target`.
fn write_trained(src: &str, dst: &str, target: Target) -> Result<()> {
    let linear = target.default_linear();
    let p = Path::new(src);
    if p.is_dir() {
        onebit_model::convert::convert_hf_dir(src, dst, target, linear, &mut |_, _| {})?;
        return Ok(());
    }
    let model = crate::checkpoint::load(src, None)?.model;
    let tokenizer = p.with_file_name("tokenizer.json");
    let tj = std::fs::read_to_string(&tokenizer).ok();
    let opts = ExportOptions { target, linear, name: "onebit".into(), ..Default::default() };
    export_gguf(&model, tj.as_deref(), dst, &[p], &opts)?;
    Ok(())
}

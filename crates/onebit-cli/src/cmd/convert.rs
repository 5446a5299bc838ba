//! `onebit convert`: rewrite a model for another engine or in another layout.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use onebit_model::convert::{convert_gguf_with, convert_hf_dir, linear_type_from_name};
use onebit_model::target::Target;

/// Flags of `onebit convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model: a GGUF file (bitnet.cpp I2_S, llama.cpp TQ1_0/TQ2_0, ik_llama.cpp
    /// IQ1_BN/IQ2_BN, onebit T2/B3, or float masters) or a Hugging Face directory (packed
    /// BitNet, latent or float weights).
    input: String,
    /// Output file.
    #[arg(short, long)]
    output: String,
    /// Layout of the linears: t2, b3, i2_s, tq1_0, tq2_0, iq2_bn, iq1_bn, or f32, f16, q8_0
    /// values (default: the target's fastest ternary layout).
    #[arg(long)]
    to: Option<String>,
    /// Engine the file is for: onebit, llama.cpp, ik_llama.cpp, bitnet.cpp (architecture
    /// name, keys, tokenizer keys, RoPE pairing and tensor types that engine reads), or
    /// transformers (a Hugging Face directory at the output path).
    #[arg(long = "for", default_value = "onebit")]
    target: String,
    /// A tokenizer.json whose vocabulary the output carries (instead of the source's; a
    /// directory's own tokenizer.json is used as it is).
    #[arg(long)]
    tokenizer: Option<String>,
}

/// Runs `onebit convert`.
pub fn run(a: Args) -> Result<()> {
    if a.target == "transformers" {
        onebit_model::convert::convert_to_hf(&a.input, &a.output)?;
        eprintln!(
            "wrote {}/ (config.json, model.safetensors, tokenizer.json) for transformers",
            a.output
        );
        return Ok(());
    }
    let target = Target::from_name(&a.target).with_context(|| {
        format!(
            "unknown engine '{}' (onebit, llama.cpp, ik_llama.cpp, bitnet.cpp, transformers)",
            a.target
        )
    })?;
    let linear = match &a.to {
        Some(name) => {
            linear_type_from_name(name).with_context(|| format!("unknown layout '{name}'"))?
        }
        None => target.default_linear(),
    };
    let from_dir = std::path::Path::new(&a.input).is_dir();
    if from_dir && a.tokenizer.is_some() {
        bail!("--tokenizer: a directory's model uses the directory's own tokenizer.json");
    }
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tensors {elapsed} (eta {eta})",
    )?);
    let tj = a
        .tokenizer
        .as_deref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading tokenizer {p}")))
        .transpose()?;
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let report = if from_dir {
        convert_hf_dir(&a.input, &a.output, target, linear, &mut progress)?
    } else {
        convert_gguf_with(&a.input, &a.output, target, linear, tj.as_deref(), &mut progress)?
    };
    bar.finish_and_clear();
    crate::cmd::export::print_report(&a.output, target, &report);
    Ok(())
}

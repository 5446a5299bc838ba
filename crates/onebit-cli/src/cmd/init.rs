//! `onebit init`: write a synthetic model (random ternary weights) of a named shape.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use onebit_kernels::TernaryFormat;
use onebit_model::synthetic::{linear_type, write_synthetic};
use onebit_model::ModelConfig;

/// Flags of `onebit init`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model shape: micro, tiny, 125m, 350m, 1b, 2b4t, 3b, 7b, 13b, 30b, 70b, 100b.
    #[arg(long)]
    shape: String,
    /// Layout of the ternary linears: t2, b3 (1.6 bpw), i2_s, tq1_0, tq2_0.
    #[arg(long, default_value = "t2")]
    format: String,
    /// Output file (GGUF).
    #[arg(short, long)]
    output: String,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Vocabulary size instead of the shape's (a large one tests memory at load).
    #[arg(long)]
    vocab: Option<usize>,
    /// FFN activation: relu2 (BitNet b1.58 2B4T, the presets' default) or silu (the 1bitLLM
    /// `bitnet` family that llama.cpp and bitnet.cpp run).
    #[arg(long)]
    act: Option<String>,
}

/// Runs `onebit init`.
pub fn run(a: Args) -> Result<()> {
    let mut config = ModelConfig::preset(&a.shape)?;
    if let Some(v) = a.vocab {
        config.vocab = v;
    }
    match a.act.as_deref() {
        None => {}
        Some("relu2") => config.act = onebit_model::Activation::Relu2,
        Some("silu") => config.act = onebit_model::Activation::Silu,
        Some(other) => anyhow::bail!("unknown --act '{other}' (relu2, silu)"),
    }
    let format = TernaryFormat::from_name(&a.format)
        .with_context(|| format!("unknown format '{}'", a.format))?;
    let ty = linear_type(format)?;
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tensors {elapsed} (eta {eta})",
    )?);
    write_synthetic(&a.output, &config, ty, a.seed, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish();
    let bytes = std::fs::metadata(&a.output)?.len();
    eprintln!(
        "wrote {} ({} ternary params, {} layout, {:.2} GB)",
        a.output,
        config.ternary_params(),
        format.name(),
        bytes as f64 / 1e9
    );
    Ok(())
}

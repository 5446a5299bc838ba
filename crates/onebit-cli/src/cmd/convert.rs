//! `onebit convert`: rewrite a model's ternary linears in another layout.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use onebit_kernels::TernaryFormat;
use onebit_model::convert::convert_gguf;

/// Flags of `onebit convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model (GGUF: bitnet.cpp I2_S, llama.cpp TQ1_0/TQ2_0, onebit T2/B3, or f16/f32).
    input: String,
    /// Output file.
    #[arg(short, long)]
    output: String,
    /// Layout of the linears in the output: i2_s, tq1_0, tq2_0, t2, b3.
    #[arg(long)]
    to: String,
}

/// Runs `onebit convert`.
pub fn run(a: Args) -> Result<()> {
    let to =
        TernaryFormat::from_name(&a.to).with_context(|| format!("unknown layout '{}'", a.to))?;
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tensors {elapsed} (eta {eta})",
    )?);
    convert_gguf(&a.input, &a.output, to, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish();
    eprintln!("wrote {} ({:.2} GB)", a.output, std::fs::metadata(&a.output)?.len() as f64 / 1e9);
    Ok(())
}

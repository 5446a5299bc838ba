//! `onebit export`: a training checkpoint → a GGUF model for onebit or another engine.

use anyhow::{Context, Result};
use onebit_model::convert::linear_type_from_name;
use onebit_model::save::SaveReport;
use onebit_model::target::Target;
use onebit_train::checkpoint;
use onebit_train::export::{export_gguf, ExportOptions};
use std::path::Path;

/// Flags of `onebit export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint (checkpoint.safetensors of a run).
    pub checkpoint: String,
    /// Output GGUF file.
    #[arg(short, long)]
    pub output: String,
    /// tokenizer.json to embed (default: the one beside the checkpoint, if any).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Linear layout: t2, b3, i2_s, tq1_0, tq2_0, iq2_bn, iq1_bn, or f32, f16, q8_0 values
    /// (default: the target's fastest ternary layout).
    #[arg(long)]
    pub format: Option<String>,
    /// Engine the file is for: onebit, llama.cpp, ik_llama.cpp, bitnet.cpp.
    #[arg(long = "for", default_value = "onebit")]
    pub target: String,
    /// Store embeddings in f32 instead of f16.
    #[arg(long)]
    pub f32_embeddings: bool,
}

/// Runs `onebit export`.
pub fn run(a: Args) -> Result<()> {
    let target = Target::from_name(&a.target).with_context(|| {
        format!("unknown engine '{}' (onebit, llama.cpp, ik_llama.cpp, bitnet.cpp)", a.target)
    })?;
    let linear = match &a.format {
        Some(f) => linear_type_from_name(f).with_context(|| format!("unknown format '{f}'"))?,
        None => target.default_linear(),
    };
    let t = checkpoint::load(&a.checkpoint, None)?;
    let tok = a.tokenizer.clone().or_else(|| {
        let p = Path::new(&a.checkpoint).with_file_name("tokenizer.json");
        p.exists().then(|| p.display().to_string())
    });
    let tj = tok
        .as_deref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading tokenizer {p}")))
        .transpose()?;
    let opts = ExportOptions {
        target,
        linear,
        f32_embeddings: a.f32_embeddings,
        name: "onebit trained".into(),
        ..Default::default()
    };
    let inputs: Vec<&Path> = [Some(a.checkpoint.as_str()), tok.as_deref()]
        .into_iter()
        .flatten()
        .map(Path::new)
        .collect();
    let report = export_gguf(&t.model, tj.as_deref(), &a.output, &inputs, &opts)?;
    eprintln!(
        "step {}{}",
        t.step,
        if tj.is_some() { ", tokenizer embedded" } else { ", no tokenizer" }
    );
    print_report(&a.output, target, &report);
    Ok(())
}

/// Prints what a model write produced: path, size, architecture and any fallbacks.
pub fn print_report(path: &str, target: Target, r: &SaveReport) {
    eprintln!(
        "wrote {path} for {} ({:.2} MB, architecture {}{})",
        target.name(),
        r.bytes as f64 / 1e6,
        r.arch,
        if r.permuted_qk { ", q/k rows permuted for its RoPE pairing" } else { "" }
    );
    for (name, ty) in &r.fallbacks {
        eprintln!(
            "note: {name} written as {ty:?} (its shape does not fill the asked layout's blocks)"
        );
    }
}

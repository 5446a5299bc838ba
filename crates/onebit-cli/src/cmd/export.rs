//! `onebit export`: a training checkpoint → a GGUF model the engine runs.

use anyhow::{Context, Result};
use onebit_kernels::TernaryFormat;
use onebit_train::checkpoint;
use onebit_train::export::{export_gguf, ExportOptions};

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
    /// Ternary layout: t2, b3, i2_s, tq1_0, tq2_0.
    #[arg(long, default_value = "t2")]
    pub format: String,
    /// Store embeddings in f32 instead of f16.
    #[arg(long)]
    pub f32_embeddings: bool,
}

/// Runs `onebit export`.
pub fn run(a: Args) -> Result<()> {
    let format = TernaryFormat::from_name(&a.format)
        .with_context(|| format!("unknown format '{}'", a.format))?;
    let t = checkpoint::load(&a.checkpoint, None)?;
    let tok = a.tokenizer.clone().or_else(|| {
        let p = std::path::Path::new(&a.checkpoint).with_file_name("tokenizer.json");
        p.exists().then(|| p.display().to_string())
    });
    let tj = tok.as_deref().map(std::fs::read_to_string).transpose()?;
    let opts = ExportOptions {
        format,
        f32_embeddings: a.f32_embeddings,
        name: "onebit trained".into(),
        ..Default::default()
    };
    export_gguf(&t.model, tj.as_deref(), &a.output, &opts)?;
    eprintln!(
        "wrote {} (step {}, {} layout, {} bytes{})",
        a.output,
        t.step,
        format.name(),
        std::fs::metadata(&a.output)?.len(),
        if tj.is_some() { ", tokenizer embedded" } else { ", no tokenizer" }
    );
    Ok(())
}

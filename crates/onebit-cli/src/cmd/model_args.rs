//! Flags shared by every subcommand that loads a model, turned into `LoadOptions` once.

use anyhow::{bail, Context, Result};
use onebit_kernels::TernaryFormat;
use onebit_model::load::{load_any, LoadOptions};
use onebit_model::{HeadKind, Model};

/// The model `onebit run` uses when none is named: models/austen.gguf in this repository.
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/austen.gguf");

/// Model path and load flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a GGUF file or a Hugging Face directory (default: the small model the
    /// repository ships, trained on Jane Austen's novels).
    #[arg(default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Threads.
    #[arg(short, long, default_value_t = 2)]
    pub threads: usize,
    /// Head storage: q8, q4 (half the bytes, slightly less exact) or f32.
    #[arg(long, default_value = "q8")]
    pub head: String,
    /// Kernel layout for the linears (t2, b3); default keeps the file's bit width.
    #[arg(long)]
    pub layout: Option<String>,
    /// Use T2/B3 weights in place from the mapped file (default: only when the file is larger
    /// than half the available memory).
    #[arg(long, conflicts_with = "no_mmap")]
    pub mmap: bool,
    /// Copy weights into process memory (a few % faster decode; needs RAM for the whole model).
    #[arg(long)]
    pub no_mmap: bool,
    /// Skip checking the tensor data against the checksum onebit writes into its files.
    #[arg(long)]
    pub no_verify: bool,
    /// Hold this process to this many GB of memory in all: a model part or session that
    /// would exceed it is refused up front (a mesh node also reports it as its memory).
    #[arg(long, value_name = "GB")]
    pub mem_limit: Option<f64>,
}

impl ModelArgs {
    /// Checks the flags and loads the model.
    pub fn load(&self) -> Result<Model> {
        Ok(load_any(&self.model, &self.options()?)?)
    }

    /// Checks the flags and turns them into load options (and sets the process's memory
    /// budget when --mem-limit asks for one).
    pub fn options(&self) -> Result<LoadOptions> {
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if let Some(gb) = self.mem_limit {
            onebit_kernels::machine::set_memory_limit(mem_limit_bytes(gb)?);
        }
        let head = match self.head.as_str() {
            "q8" => HeadKind::Q8,
            "f32" => HeadKind::F32,
            "q4" => HeadKind::Q4,
            h => bail!("unknown --head '{h}' (q8, q4, f32)"),
        };
        let layout = self
            .layout
            .as_deref()
            .map(|l| TernaryFormat::from_name(l).with_context(|| format!("unknown layout '{l}'")))
            .transpose()?;
        let in_place = self.mmap.then_some(true).or(self.no_mmap.then_some(false));
        let verify = !self.no_verify;
        Ok(LoadOptions {
            threads: self.threads,
            layout,
            head,
            in_place,
            verify,
            ..Default::default()
        })
    }
}

/// `--mem-limit GB` in bytes.
pub fn mem_limit_bytes(gb: f64) -> Result<u64> {
    if !(gb > 0.0 && gb < 1e6) {
        bail!("--mem-limit must be a positive number of GB");
    }
    Ok((gb * 1e9) as u64)
}

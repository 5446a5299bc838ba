//! `onebit train`: train a BitNet b1.58 model from scratch on text files (QAT with STE),
//! writing metrics, monitors, checkpoints and the exported GGUF into a run directory
//! (`onebit_train::run` does the work; this file holds the flags and the progress bar).

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use onebit_train::run::{RunEvent, TrainOverrides, TrainRun};
use std::time::Instant;

/// Flags of `onebit train` (flags override the `--config` file).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Text or JSONL files to train on.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<String>,
    /// Run directory (metrics.jsonl, monitor.jsonl, checkpoint.safetensors, model.gguf).
    #[arg(short, long)]
    pub out: String,
    /// A TOML run config (the fields of `TrainConfig`; see `run.toml` in a run directory).
    #[arg(long)]
    pub config: Option<String>,
    /// A tokenizer.json; without it a byte-level BPE of `--vocab` entries is trained.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Vocabulary size of the trained tokenizer.
    #[arg(long, default_value_t = 4096)]
    pub vocab: usize,
    /// Resume from a checkpoint.
    #[arg(long)]
    pub resume: Option<String>,
    /// Residual width.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Query heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// FFN width.
    #[arg(long)]
    pub ffn: Option<usize>,
    /// Tokens per sequence.
    #[arg(long)]
    pub seq: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Micro-batches per step.
    #[arg(long)]
    pub accum: Option<usize>,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Warm-up steps.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Threads.
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Recompute each block in the backward pass (less memory, ~1/3 more compute).
    #[arg(long)]
    pub checkpointing: bool,
    /// Zero the STE gradient of saturated latent weights (|W/γ| > 1.5).
    #[arg(long)]
    pub clipped_ste: bool,
    /// BitLinear input gradients on the int8 kernels (dY quantized per token; faster, not exact).
    #[arg(long)]
    pub int8_backward: bool,
    /// Validate every N steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// STE monitor report every N steps.
    #[arg(long)]
    pub monitor_every: Option<u64>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Args {
    /// The run these flags describe.
    pub fn run_spec(&self) -> TrainRun {
        TrainRun {
            data: self.data.clone(),
            out: self.out.clone(),
            config_file: self.config.clone(),
            tokenizer: self.tokenizer.clone(),
            vocab: self.vocab,
            resume: self.resume.clone(),
            overrides: TrainOverrides {
                hidden: self.hidden,
                layers: self.layers,
                heads: self.heads,
                kv_heads: self.kv_heads,
                ffn: self.ffn,
                seq: self.seq,
                batch: self.batch,
                accum: self.accum,
                steps: self.steps,
                lr: self.lr,
                warmup: self.warmup,
                threads: self.threads,
                eval_every: self.eval_every,
                monitor_every: self.monitor_every,
                save_every: self.save_every,
                seed: self.seed,
                checkpointing: self.checkpointing,
                clipped_ste: self.clipped_ste,
                int8_backward: self.int8_backward,
            },
        }
    }
}

/// Runs `onebit train`.
pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let spec = a.run_spec();
    let steps = spec.config()?.schedule.steps;
    let out = spec.run(&mut progress(steps))?;
    eprintln!(
        "done in {:.1} min: checkpoint {}, model {} ({} bytes)",
        started.elapsed().as_secs_f64() / 60.0,
        out.checkpoint,
        out.model,
        std::fs::metadata(&out.model)?.len()
    );
    Ok(())
}

/// An observer that draws a progress bar (loss, LR, tokens/s) and prints messages above it.
pub fn progress(steps: u64) -> impl FnMut(RunEvent<'_>) -> bool {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}")
            .expect("a valid template"),
    );
    move |ev| {
        match ev {
            RunEvent::Message(m) => say(&bar, m),
            RunEvent::Warning(w) => bar.suspend(|| tracing::warn!("{w}")),
            RunEvent::Step { report, tok_s, .. } => {
                bar.set_message(format!(
                    "loss {:.3} lr {:.2e} {:.0} tok/s",
                    report.loss, report.lr, tok_s
                ));
                bar.set_position(report.step);
                if report.step >= steps {
                    bar.finish();
                }
            }
        }
        true
    }
}

/// Prints a line above the bar, or to stderr when the bar is hidden (not a terminal), so
/// logs redirected to a file keep the validation and monitor lines.
fn say(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

//! `onebit finetune`: turn a full-precision Llama-family model into 1.58 bits by QAT with a
//! λ phase-in, reporting full-precision, naive-ternary and fine-tuned validation perplexity.

use anyhow::{bail, Result};
use onebit_train::finetune::FinetuneRun;

/// Flags of `onebit finetune`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model to convert: GGUF (F16/BF16/F32/Q8_0/Q4_0/Q4_1) or a Hugging Face directory.
    pub model: String,
    /// Text or JSONL files to fine-tune on (the tail is held out for validation).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<String>,
    /// Run directory.
    #[arg(short, long)]
    pub out: String,
    /// Quantization: 1bit-native (BitNet b1.58 ternary linears, int8 activations).
    #[arg(long, default_value = "1bit-native")]
    pub quant: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    /// Steps over which quantization is blended in (λ 0 → 1).
    #[arg(long, default_value_t = 50)]
    pub lambda_warmup: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f32,
    /// LR warm-up steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    /// Validate every N steps.
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// Share of the data held out.
    #[arg(long, default_value_t = 0.05)]
    pub val_share: f32,
    /// tokenizer.json (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Threads.
    #[arg(short, long, default_value_t = 2)]
    pub threads: usize,
    /// Gradient checkpointing per block.
    #[arg(long)]
    pub checkpointing: bool,
    /// Seed (data order).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs `onebit finetune`.
pub fn run(a: Args) -> Result<()> {
    if a.quant != "1bit-native" {
        bail!("unknown --quant '{}' (1bit-native)", a.quant);
    }
    let spec = FinetuneRun {
        model: a.model,
        data: a.data,
        out: a.out,
        tokenizer: a.tokenizer,
        steps: a.steps,
        lambda_warmup: a.lambda_warmup,
        lr: a.lr,
        warmup: a.warmup,
        seq: a.seq,
        batch: a.batch,
        accum: a.accum,
        eval_batches: a.eval_batches,
        eval_every: a.eval_every,
        val_share: a.val_share,
        threads: a.threads,
        checkpointing: a.checkpointing,
        seed: a.seed,
    };
    let out = spec.run(&mut super::train::progress(spec.steps))?;
    eprintln!("wrote {} ({} bytes)", out.run.model, std::fs::metadata(&out.run.model)?.len());
    Ok(())
}

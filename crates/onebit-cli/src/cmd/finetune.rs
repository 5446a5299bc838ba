//! `onebit finetune`: turn a full-precision Llama-family model into 1.58 bits by QAT with a
//! λ phase-in, reporting full-precision, naive-ternary and fine-tuned validation perplexity.

use anyhow::{bail, Result};
use onebit_model::gguf::Value;
use onebit_model::load::GgufModelFile;
use onebit_model::Tokenizer;
use onebit_train::data::{read_documents, tokenize, TokenData};
use onebit_train::export::{export_gguf, ExportOptions};
use onebit_train::finetune::load_pretrained;
use onebit_train::schedule::Schedule;
use onebit_train::trainer::{TrainConfig, Trainer};
use std::time::Instant;

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
    std::fs::create_dir_all(&a.out)?;
    let started = Instant::now();
    let model = load_pretrained(&a.model)?;
    let tok = match &a.tokenizer {
        Some(p) => Tokenizer::from_file(p)?,
        None => Tokenizer::for_model(&a.model)?,
    };
    eprintln!(
        "loaded {} ({} params, {} in BitLinears) in {:.1}s",
        a.model,
        model.params.count(),
        model.ternary_params(),
        started.elapsed().as_secs_f64()
    );
    let docs = read_documents(&a.data)?;
    let ids = tokenize(&tok, &docs, model.config.eos)?;
    let data = TokenData::split(ids, a.val_share);
    let cfg = TrainConfig {
        model: model.config.clone(),
        seq: a.seq,
        batch: a.batch,
        accum: a.accum,
        schedule: Schedule { lr: a.lr, warmup: a.warmup, steps: a.steps, ..Default::default() },
        adamw: Default::default(),
        seed: a.seed,
        threads: a.threads,
        checkpointing: a.checkpointing,
        clipped_ste: false,
        lambda_warmup: a.lambda_warmup,
        int8_backward: false,
        eval_every: a.eval_every,
        eval_batches: a.eval_batches,
        monitor_every: 10,
        save_every: 0,
        val_share: a.val_share,
    };
    let mut t = Trainer::with_model(cfg, model)?;
    std::fs::write(format!("{}/run.toml", a.out), toml::to_string(&t.cfg)?)?;
    let vb = a.eval_batches;
    let tokens = vb * a.batch * a.seq;
    eprintln!(
        "{} train / {} validation tokens; evaluating on {tokens} held-out tokens",
        data.train.len(),
        data.val.len()
    );
    let fp = t.evaluate_at(&data.val, vb, 0.0)?;
    eprintln!("full precision:      val loss {fp:.4}  ppl {:.2}", fp.exp());
    let naive = t.evaluate_at(&data.val, vb, 1.0)?;
    eprintln!("naive ternarization: val loss {naive:.4}  ppl {:.2}", naive.exp());
    super::train::train_loop(&mut t, &data, &a.out)?;
    let tuned = t.evaluate_at(&data.val, vb, 1.0)?;
    eprintln!(
        "after {} steps of 1.58-bit QAT: val loss {tuned:.4}  ppl {:.2}  ({:.1} min in all)",
        t.step,
        tuned.exp(),
        started.elapsed().as_secs_f64() / 60.0
    );
    let summary = serde_json::json!({
        "model": a.model, "steps": t.step, "tokens_per_step": a.batch * a.seq * a.accum,
        "val_tokens": tokens, "fp_loss": fp, "fp_ppl": fp.exp(), "naive_ternary_loss": naive,
        "naive_ternary_ppl": naive.exp(), "finetuned_loss": tuned, "finetuned_ppl": tuned.exp(),
    });
    std::fs::write(format!("{}/summary.json", a.out), format!("{summary}\n"))?;
    let mut extra: Vec<(String, Value)> = Vec::new();
    if a.model.ends_with(".gguf") {
        let f = GgufModelFile::open(&a.model)?;
        extra
            .extend(f.header.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned());
    }
    let gguf = format!("{}/model.gguf", a.out);
    export_gguf(
        &t.model,
        None,
        &gguf,
        &[],
        &ExportOptions { name: "onebit finetuned".into(), extra, ..Default::default() },
    )?;
    eprintln!("wrote {gguf} ({} bytes)", std::fs::metadata(&gguf)?.len());
    Ok(())
}

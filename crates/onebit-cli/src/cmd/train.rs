//! `onebit train`: train a BitNet b1.58 model from scratch on text files (QAT with STE),
//! writing metrics, monitors, checkpoints and the exported GGUF into a run directory.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use onebit_model::Tokenizer;
use onebit_train::data::{read_documents, tokenize, train_tokenizer, TokenData};
use onebit_train::export::{export_gguf, ExportOptions};
use onebit_train::schedule::Schedule;
use onebit_train::trainer::{StepReport, TrainConfig, Trainer};
use onebit_train::{checkpoint, Error as TrainError};
use std::io::Write;
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

fn default_config(vocab: usize) -> TrainConfig {
    TrainConfig {
        schedule: Schedule { lr: 3e-3, warmup: 100, steps: 1000, ..Default::default() },
        eval_every: 200,
        monitor_every: 100,
        save_every: 500,
        ..TrainConfig::reference(vocab)
    }
}

impl Args {
    fn apply(&self, c: &mut TrainConfig) {
        let m = &mut c.model;
        if let Some(v) = self.hidden {
            m.hidden = v;
        }
        if let Some(v) = self.layers {
            m.layers = v;
        }
        if let Some(v) = self.heads {
            m.heads = v;
            m.kv_heads = v;
        }
        if let Some(v) = self.kv_heads {
            m.kv_heads = v;
        }
        if self.hidden.is_some() || self.heads.is_some() {
            m.head_dim = m.hidden / m.heads.max(1);
        }
        if let Some(v) = self.ffn {
            m.intermediate = v;
        }
        if let Some(v) = self.seq {
            c.seq = v;
        }
        m.max_positions = m.max_positions.max(c.seq);
        macro_rules! set {
            ($($f:ident => $dst:expr),*) => {$(if let Some(v) = self.$f { $dst = v; })*};
        }
        set!(batch => c.batch, accum => c.accum, steps => c.schedule.steps, lr => c.schedule.lr,
             warmup => c.schedule.warmup, threads => c.threads, eval_every => c.eval_every,
             monitor_every => c.monitor_every, save_every => c.save_every, seed => c.seed);
        c.checkpointing |= self.checkpointing;
        c.clipped_ste |= self.clipped_ste;
        c.int8_backward |= self.int8_backward;
    }
}

/// Runs `onebit train`.
pub fn run(a: Args) -> Result<()> {
    for d in &a.data {
        let meta = std::fs::metadata(d).with_context(|| format!("training data {d}"))?;
        if !meta.is_file() {
            bail!("training data {d}: not a regular file");
        }
    }
    // Every setting is checked before the run folder is made or a tokenizer trained, so a run
    // that cannot work leaves nothing behind.
    let vocab = match &a.tokenizer {
        Some(t) => Tokenizer::from_file(t)?.vocab_size(),
        None => a.vocab,
    };
    let mut cfg = match (&a.config, &a.resume) {
        (Some(p), _) => toml::from_str::<TrainConfig>(
            &std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?,
        )
        .with_context(|| format!("{p} is not a valid run config"))?,
        // A resumed run takes its shape and settings from the checkpoint; flags override.
        (None, Some(ck)) => checkpoint::read_config(ck)?,
        (None, None) => default_config(vocab),
    };
    a.apply(&mut cfg);
    cfg.validate()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out))?;
    let tok_path = format!("{}/tokenizer.json", a.out);
    match &a.tokenizer {
        Some(t) if t != &tok_path => {
            std::fs::copy(t, &tok_path).with_context(|| format!("copying {t}"))?;
        }
        Some(_) => {}
        None if a.resume.is_some() && std::path::Path::new(&tok_path).exists() => {}
        None => {
            eprintln!("training a {}-entry BPE tokenizer on {} file(s)…", a.vocab, a.data.len());
            train_tokenizer(&a.data, a.vocab, &tok_path)?;
        }
    }
    let tok = Tokenizer::from_file(&tok_path)?;
    if cfg.model.vocab < tok.vocab_size() {
        bail!(
            "model vocabulary {} is smaller than the tokenizer's {}",
            cfg.model.vocab,
            tok.vocab_size()
        );
    }
    let eos = tok.token_id("<|endoftext|>");
    cfg.model.eos = eos;
    let started = Instant::now();
    let docs = read_documents(&a.data)?;
    let ids = tokenize(&tok, &docs, eos)?;
    let data = TokenData::split(ids, cfg.val_share);
    let unigram = data.unigram_baseline(cfg.model.vocab);
    eprintln!(
        "{} train / {} validation tokens (tokenized in {:.1}s); unigram baseline {:.3} nats (ppl {:.1})",
        data.train.len(),
        data.val.len(),
        started.elapsed().as_secs_f64(),
        unigram,
        unigram.exp()
    );
    let mut t = match &a.resume {
        Some(ck) => checkpoint::load(ck, Some(cfg.clone()))?,
        None => Trainer::new(cfg.clone())?,
    };
    std::fs::write(format!("{}/run.toml", a.out), toml::to_string(&t.cfg)?)?;
    eprintln!(
        "model: {} params ({} ternary), {} layers x {} wide, seq {} x batch {} x accum {}, {} steps",
        t.model.params.count(),
        t.model.ternary_params(),
        cfg.model.layers,
        cfg.model.hidden,
        cfg.seq,
        cfg.batch,
        cfg.accum,
        cfg.schedule.steps
    );
    train_loop(&mut t, &data, &a.out)?;
    let ckpt = format!("{}/checkpoint.safetensors", a.out);
    let gguf = format!("{}/model.gguf", a.out);
    let tj = std::fs::read_to_string(&tok_path)?;
    export_gguf(
        &t.model,
        Some(&tj),
        &gguf,
        &[],
        &ExportOptions { name: "onebit trained".into(), ..Default::default() },
    )?;
    eprintln!(
        "done in {:.1} min: checkpoint {ckpt}, model {gguf} ({} bytes)",
        started.elapsed().as_secs_f64() / 60.0,
        std::fs::metadata(&gguf)?.len()
    );
    Ok(())
}

/// Steps `t` to the end of its schedule: metrics.jsonl, monitor.jsonl, validation, periodic
/// checkpoints (checkpoint.safetensors) in `out`, a progress bar with loss, LR and tokens/s.
pub fn train_loop(t: &mut Trainer, data: &TokenData, out: &str) -> Result<()> {
    let open = |name: &str| {
        std::fs::OpenOptions::new().create(true).append(true).open(format!("{}/{name}", out))
    };
    let (mut metrics, mut monitor) = (open("metrics.jsonl")?, open("monitor.jsonl")?);
    let bar = ProgressBar::new(t.cfg.schedule.steps);
    bar.set_position(t.step);
    bar.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}",
    )?);
    let ckpt = format!("{}/checkpoint.safetensors", out);
    let mut window = Instant::now();
    let mut window_tokens = 0usize;
    let (seq, batch) = (t.cfg.seq, t.cfg.batch);
    let can_eval = data.val.len() > seq && (data.val.len() - 1) / seq >= batch;
    if !can_eval {
        tracing::warn!(
            "{} validation tokens cannot fill one batch of {batch} x {seq}: validation is skipped \
             (use more data or a larger val_share)",
            data.val.len()
        );
    }
    while t.step < t.cfg.schedule.steps {
        let r: StepReport = match t.train_step(data) {
            Ok(r) => r,
            Err(e @ TrainError::Diverged { .. }) => {
                bar.abandon();
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        window_tokens += r.tokens;
        let tok_s = window_tokens as f64 / window.elapsed().as_secs_f64();
        if r.step.is_multiple_of(10) {
            window = Instant::now();
            window_tokens = 0;
        }
        let mut line = serde_json::to_value(&r)?;
        line["tok_s"] = serde_json::json!(tok_s);
        let last = r.step == t.cfg.schedule.steps;
        if can_eval && ((t.cfg.eval_every > 0 && r.step.is_multiple_of(t.cfg.eval_every)) || last) {
            let val = t.evaluate(&data.val, t.cfg.eval_batches)?;
            line["val_loss"] = serde_json::json!(val);
            line["val_ppl"] = serde_json::json!(val.exp());
            say(
                &bar,
                format!(
                    "step {}: train {:.3} val {:.3} (ppl {:.1})",
                    r.step,
                    r.loss,
                    val,
                    val.exp()
                ),
            );
        }
        writeln!(metrics, "{line}")?;
        if let Some(m) = &r.monitor {
            writeln!(monitor, "{}", serde_json::to_string(m)?)?;
            say(&bar, format!("step {}: {}", r.step, m.summary()));
            for w in &m.warnings {
                bar.suspend(|| tracing::warn!("{w}"));
            }
        }
        bar.set_message(format!("loss {:.3} lr {:.2e} {:.0} tok/s", r.loss, r.lr, tok_s));
        bar.set_position(r.step);
        if (t.cfg.save_every > 0 && r.step.is_multiple_of(t.cfg.save_every)) || last {
            checkpoint::save(t, &ckpt)?;
        }
    }
    bar.finish();
    Ok(())
}

/// Prints a line above the bar, or to stderr when the bar is hidden (not a terminal), so
/// logs redirected to a file keep the validation and monitor lines.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

//! Training runs into a folder, one implementation for `onebit train`, `onebit finetune` and
//! Python's `onebit.train` / `onebit.finetune`: settings resolved and checked before anything
//! is written, a tokenizer trained or copied, the step loop with metrics.jsonl,
//! monitor.jsonl, validation and checkpoints, and the exported model.gguf.
//!
//! The caller watches through [`RunEvent`]s (the CLI draws a progress bar, Python calls the
//! user's callback); returning `false` from the observer stops the run after the current
//! step with a checkpoint written, as Ctrl-C should.

use crate::data::{read_documents, tokenize, train_tokenizer, TokenData};
use crate::export::{export_gguf, ExportOptions};
use crate::schedule::Schedule;
use crate::trainer::{StepReport, TrainConfig, Trainer};
use crate::{checkpoint, Error, Result};
use onebit_model::Tokenizer;
use std::io::Write;
use std::time::Instant;

/// What a run tells its observer.
pub enum RunEvent<'a> {
    /// A line for the user (data sizes, validation, monitor summaries).
    Message(&'a str),
    /// A warning (STE monitor, skipped validation).
    Warning(&'a str),
    /// A step finished; `line` is what metrics.jsonl got (with `tok_s`, `val_loss`).
    Step {
        /// The trainer's report.
        report: &'a StepReport,
        /// Tokens per second over the last window of steps.
        tok_s: f64,
        /// The metrics line.
        line: &'a serde_json::Value,
    },
}

/// Sees every event; a false return from any of a step's events stops the run after that step.
pub type Observer<'a> = dyn FnMut(RunEvent<'_>) -> bool + 'a;

/// Settings that override a run config (the `onebit train` flags).
#[derive(Clone, Debug, Default)]
pub struct TrainOverrides {
    /// Residual width.
    pub hidden: Option<usize>,
    /// Blocks.
    pub layers: Option<usize>,
    /// Query heads (and key/value heads unless `kv_heads`).
    pub heads: Option<usize>,
    /// Key/value heads.
    pub kv_heads: Option<usize>,
    /// FFN width.
    pub ffn: Option<usize>,
    /// Tokens per sequence.
    pub seq: Option<usize>,
    /// Sequences per micro-batch.
    pub batch: Option<usize>,
    /// Micro-batches per step.
    pub accum: Option<usize>,
    /// Optimizer steps.
    pub steps: Option<u64>,
    /// Peak learning rate.
    pub lr: Option<f32>,
    /// Warm-up steps.
    pub warmup: Option<u64>,
    /// Threads.
    pub threads: Option<usize>,
    /// Validate every N steps.
    pub eval_every: Option<u64>,
    /// STE monitor report every N steps.
    pub monitor_every: Option<u64>,
    /// Checkpoint every N steps.
    pub save_every: Option<u64>,
    /// Seed.
    pub seed: Option<u64>,
    /// Gradient checkpointing.
    pub checkpointing: bool,
    /// Clipped STE.
    pub clipped_ste: bool,
    /// int8 BitLinear input gradients.
    pub int8_backward: bool,
}

impl TrainOverrides {
    /// Applies the settings that are set.
    pub fn apply(&self, c: &mut TrainConfig) {
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

/// The config of a fresh run without a config file: the reference shape, 1000 steps.
pub fn default_config(vocab: usize) -> TrainConfig {
    TrainConfig {
        schedule: Schedule { lr: 3e-3, warmup: 100, steps: 1000, ..Default::default() },
        eval_every: 200,
        monitor_every: 100,
        save_every: 500,
        ..TrainConfig::reference(vocab)
    }
}

/// A training run from scratch (or resumed).
#[derive(Clone, Debug)]
pub struct TrainRun {
    /// Text or JSONL files.
    pub data: Vec<String>,
    /// Run folder.
    pub out: String,
    /// A TOML run config file (else the checkpoint's config when resuming, else defaults).
    pub config_file: Option<String>,
    /// A tokenizer.json; without it a byte-level BPE of `vocab` entries is trained.
    pub tokenizer: Option<String>,
    /// Vocabulary of the trained tokenizer.
    pub vocab: usize,
    /// Checkpoint to resume from.
    pub resume: Option<String>,
    /// Settings over the config.
    pub overrides: TrainOverrides,
}

/// What a finished run wrote.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// Optimizer steps done.
    pub steps: u64,
    /// The last checkpoint.
    pub checkpoint: String,
    /// The exported model.
    pub model: String,
    /// Whether the observer stopped the run early.
    pub stopped: bool,
}

/// Every data file exists and is a regular file (named as training data in the error).
pub(crate) fn check_data(files: &[String]) -> Result<()> {
    for d in files {
        let what = format!("training data {d}");
        let meta = std::fs::metadata(d).map_err(io(&what))?;
        if !meta.is_file() {
            return Err(Error::Data(format!("{what}: not a regular file")));
        }
    }
    Ok(())
}

pub(crate) fn io(path: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.into(), source }
}

impl TrainRun {
    /// The run's config: file, checkpoint or defaults, with the overrides, checked.
    pub fn config(&self) -> Result<TrainConfig> {
        check_data(&self.data)?;
        let vocab = match &self.tokenizer {
            Some(t) => Tokenizer::from_file(t)?.vocab_size(),
            None => self.vocab,
        };
        let mut cfg = match (&self.config_file, &self.resume) {
            (Some(p), _) => {
                let text = std::fs::read_to_string(p).map_err(io(p))?;
                toml::from_str::<TrainConfig>(&text)
                    .map_err(|e| Error::Config(format!("{p} is not a valid run config: {e}")))?
            }
            // A resumed run takes its shape and settings from the checkpoint.
            (None, Some(ck)) => checkpoint::read_config(ck)?,
            (None, None) => default_config(vocab),
        };
        self.overrides.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Runs to the end of the schedule (or until `on` returns false) and exports model.gguf.
    pub fn run(&self, on: &mut Observer<'_>) -> Result<RunOutput> {
        // Every setting is checked before the run folder is made or a tokenizer trained, so a
        // run that cannot work leaves nothing behind.
        let mut cfg = self.config()?;
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        let tok_path = format!("{}/tokenizer.json", self.out);
        match &self.tokenizer {
            Some(t) if t != &tok_path => {
                std::fs::copy(t, &tok_path).map_err(io(t))?;
            }
            Some(_) => {}
            None if self.resume.is_some() && std::path::Path::new(&tok_path).exists() => {}
            None => {
                on(RunEvent::Message(&format!(
                    "training a {}-entry BPE tokenizer on {} file(s)…",
                    self.vocab,
                    self.data.len()
                )));
                train_tokenizer(&self.data, self.vocab, &tok_path)?;
            }
        }
        let tok = Tokenizer::from_file(&tok_path)?;
        if cfg.model.vocab < tok.vocab_size() {
            return Err(Error::Config(format!(
                "model vocabulary {} is smaller than the tokenizer's {}",
                cfg.model.vocab,
                tok.vocab_size()
            )));
        }
        let eos = tok.token_id("<|endoftext|>");
        cfg.model.eos = eos;
        let started = Instant::now();
        let docs = read_documents(&self.data)?;
        let data = TokenData::split(tokenize(&tok, &docs, eos)?, cfg.val_share);
        let unigram = data.unigram_baseline(cfg.model.vocab);
        on(RunEvent::Message(&format!(
            "{} train / {} validation tokens (tokenized in {:.1}s); unigram baseline {:.3} nats (ppl {:.1})",
            data.train.len(),
            data.val.len(),
            started.elapsed().as_secs_f64(),
            unigram,
            unigram.exp()
        )));
        let mut t = match &self.resume {
            Some(ck) => checkpoint::load(ck, Some(cfg.clone()))?,
            None => Trainer::new(cfg.clone())?,
        };
        write_run_toml(&t, &self.out)?;
        on(RunEvent::Message(&format!(
            "model: {} params ({} ternary), {} layers x {} wide, seq {} x batch {} x accum {}, {} steps",
            t.model.params.count(),
            t.model.ternary_params(),
            cfg.model.layers,
            cfg.model.hidden,
            cfg.seq,
            cfg.batch,
            cfg.accum,
            cfg.schedule.steps
        )));
        let stopped = !train_loop(&mut t, &data, &self.out, on)?;
        let gguf = format!("{}/model.gguf", self.out);
        let tj = std::fs::read_to_string(&tok_path).map_err(io(&tok_path))?;
        let opts = ExportOptions { name: "onebit trained".into(), ..Default::default() };
        export_gguf(&t.model, Some(&tj), &gguf, &[], &opts)?;
        Ok(RunOutput {
            steps: t.step,
            checkpoint: format!("{}/checkpoint.safetensors", self.out),
            model: gguf,
            stopped,
        })
    }
}

pub(crate) fn write_run_toml(t: &Trainer, out: &str) -> Result<()> {
    let path = format!("{out}/run.toml");
    let text = toml::to_string(&t.cfg).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(&path, text).map_err(io(&path))
}

/// Steps `t` to the end of its schedule: metrics.jsonl, monitor.jsonl, validation and
/// periodic checkpoints (checkpoint.safetensors) in `out`. Returns false when the observer
/// stopped it (a checkpoint of the last step is written first).
pub fn train_loop(
    t: &mut Trainer,
    data: &TokenData,
    out: &str,
    on: &mut Observer<'_>,
) -> Result<bool> {
    let open = |name: &str| {
        let path = format!("{out}/{name}");
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))
    };
    let (mut metrics, mut monitor) = (open("metrics.jsonl")?, open("monitor.jsonl")?);
    let ckpt = format!("{out}/checkpoint.safetensors");
    let mut window = Instant::now();
    let mut window_tokens = 0usize;
    let (seq, batch) = (t.cfg.seq, t.cfg.batch);
    let can_eval = data.val.len() > seq && (data.val.len() - 1) / seq >= batch;
    if !can_eval {
        on(RunEvent::Warning(&format!(
            "{} validation tokens cannot fill one batch of {batch} x {seq}: validation is skipped \
             (use more data or a larger val_share)",
            data.val.len()
        )));
    }
    let w = |e: std::io::Error| Error::Io { path: out.into(), source: e };
    while t.step < t.cfg.schedule.steps {
        let r: StepReport = t.train_step(data)?;
        // A false return from any event of the step stops the run after it: an observer
        // that turns Ctrl-C into a stop may see it during a message, not only at the step.
        let mut go_on = true;
        window_tokens += r.tokens;
        let tok_s = window_tokens as f64 / window.elapsed().as_secs_f64();
        if r.step.is_multiple_of(10) {
            window = Instant::now();
            window_tokens = 0;
        }
        let mut line = serde_json::to_value(&r).map_err(|e| Error::Config(e.to_string()))?;
        line["tok_s"] = serde_json::json!(tok_s);
        let last = r.step == t.cfg.schedule.steps;
        if can_eval && ((t.cfg.eval_every > 0 && r.step.is_multiple_of(t.cfg.eval_every)) || last) {
            let val = t.evaluate(&data.val, t.cfg.eval_batches)?;
            line["val_loss"] = serde_json::json!(val);
            line["val_ppl"] = serde_json::json!(val.exp());
            go_on &= on(RunEvent::Message(&format!(
                "step {}: train {:.3} val {:.3} (ppl {:.1})",
                r.step,
                r.loss,
                val,
                val.exp()
            )));
        }
        writeln!(metrics, "{line}").map_err(w)?;
        if let Some(m) = &r.monitor {
            let json = serde_json::to_string(m).map_err(|e| Error::Config(e.to_string()))?;
            writeln!(monitor, "{json}").map_err(w)?;
            go_on &= on(RunEvent::Message(&format!("step {}: {}", r.step, m.summary())));
            for warning in &m.warnings {
                go_on &= on(RunEvent::Warning(warning));
            }
        }
        go_on &= on(RunEvent::Step { report: &r, tok_s, line: &line });
        if (t.cfg.save_every > 0 && r.step.is_multiple_of(t.cfg.save_every)) || last || !go_on {
            checkpoint::save(t, &ckpt)?;
        }
        if !go_on {
            return Ok(false);
        }
    }
    Ok(true)
}

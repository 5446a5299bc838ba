//! [`Trainer`]: the training loop. One step = refresh nothing (caches are current), then
//! `accum` micro-batches of forward + backward, optional clipped STE, AdamW with the
//! schedule's LR and weight decay, re-ternarization, and monitors every N steps.

use crate::data::{Batcher, TokenData};
use crate::error::{Error, Result};
use crate::model::TrainModel;
use crate::monitor::{Monitor, MonitorReport};
use crate::optim::{AdamW, AdamWConfig};
use crate::params::ParamKind;
use crate::schedule::Schedule;
use crate::tape::Tape;
use onebit_model::ModelConfig;
use serde::{Deserialize, Serialize};

/// Everything that defines a training run (saved in every checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The architecture.
    pub model: ModelConfig,
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[serde(default = "one")]
    pub accum: usize,
    /// LR / weight-decay schedule (its `steps` is the run length).
    pub schedule: Schedule,
    /// Optimizer.
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Initialisation and data-order seed.
    #[serde(default)]
    pub seed: u64,
    /// Threads.
    #[serde(default = "two")]
    pub threads: usize,
    /// Recompute each block in the backward instead of keeping its activations.
    #[serde(default)]
    pub checkpointing: bool,
    /// Zero the STE gradient where |W/γ| > 1.5 (default off, as BitNet).
    #[serde(default)]
    pub clipped_ste: bool,
    /// BitLinear input gradients on the int8 kernels (dY quantized per token; faster, not exact).
    #[serde(default)]
    pub int8_backward: bool,
    /// Steps over which quantization is phased in (λ 0 → 1); 0 = ternary from the start.
    #[serde(default)]
    pub lambda_warmup: u64,
    /// Validate every this many steps (0 = only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// Validation batches per evaluation.
    #[serde(default = "eval_batches")]
    pub eval_batches: usize,
    /// STE monitor report every this many steps (0 = off).
    #[serde(default)]
    pub monitor_every: u64,
    /// Save a checkpoint every this many steps (0 = only at the end).
    #[serde(default)]
    pub save_every: u64,
    /// Share of the corpus held out for validation.
    #[serde(default = "val_share")]
    pub val_share: f32,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn eval_batches() -> usize {
    8
}
fn val_share() -> f32 {
    0.05
}

impl TrainConfig {
    /// The reference run: a BitNet b1.58 of 4 blocks × 256 (4 heads, relu² FFN 688,
    /// sub-norms, tied head) over `vocab` tokens, seq 256 × batch 8, the default schedule.
    /// `onebit train` starts from it and `onebit bench-train` times it.
    pub fn reference(vocab: usize) -> Self {
        TrainConfig {
            model: ModelConfig {
                hidden: 256,
                layers: 4,
                heads: 4,
                kv_heads: 4,
                head_dim: 64,
                intermediate: 688,
                vocab,
                max_positions: 256,
                rope_theta: 10_000.0,
                rope_interleaved: false,
                rms_eps: 1e-5,
                act: onebit_model::Activation::Relu2,
                sub_norms: true,
                tied_embeddings: true,
                bos: None,
                eos: None,
            },
            seq: 256,
            batch: 8,
            accum: 1,
            schedule: Schedule::default(),
            adamw: AdamWConfig::default(),
            seed: 1,
            threads: 2,
            checkpointing: false,
            clipped_ste: false,
            int8_backward: false,
            lambda_warmup: 0,
            eval_every: 0,
            eval_batches: eval_batches(),
            monitor_every: 0,
            save_every: 0,
            val_share: val_share(),
        }
    }

    /// Checks settings that would fail later.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let bad = |m: String| Err(Error::Config(m));
        if self.seq == 0 || self.batch == 0 || self.accum == 0 {
            return bad(format!(
                "seq {}, batch {}, accum {} must all be ≥ 1",
                self.seq, self.batch, self.accum
            ));
        }
        if self.seq > self.model.max_positions {
            return bad(format!(
                "seq {} exceeds the model's max_positions {}",
                self.seq, self.model.max_positions
            ));
        }
        if self.schedule.steps == 0 || !(self.schedule.lr > 0.0 && self.schedule.lr.is_finite()) {
            return bad(format!(
                "steps {} and lr {} must be positive",
                self.schedule.steps, self.schedule.lr
            ));
        }
        if self.threads == 0 {
            return bad("threads must be ≥ 1".into());
        }
        onebit_kernels::machine::check_memory("this training run", self.memory_bytes())
            .map_err(Error::Config)
    }

    /// An upper estimate of the bytes a run needs: per parameter its value, gradient, two
    /// AdamW moments and (ternary ones) the quantized caches; per token and layer the
    /// activations the backward pass keeps, attention scores included; the logits.
    /// Saturating, so absurd sizes give a huge number rather than an overflow.
    pub fn memory_bytes(&self) -> u64 {
        let c = &self.model;
        let m = |a: u64, b: u64| a.saturating_mul(b);
        let (h, qd, kvd, f) =
            (c.hidden as u64, c.q_dim() as u64, c.kv_dim() as u64, c.intermediate as u64);
        let embed = m(c.vocab as u64, h) * if c.tied_embeddings { 1 } else { 2 };
        let ternary = c.ternary_params();
        let params = embed.saturating_add(ternary);
        let per_param = m(params, 16).saturating_add(m(ternary, 6));
        let tokens = m(self.seq as u64, self.batch as u64);
        let per_token_layer = (6 * h + 3 * qd + 2 * kvd + 4 * f)
            .saturating_add(m(2 * c.heads as u64, self.seq as u64));
        let kept_layers = if self.checkpointing { 1 } else { c.layers as u64 };
        let acts = m(m(m(tokens, per_token_layer), kept_layers), 8)
            .saturating_add(m(m(tokens, c.vocab as u64), 8));
        per_param.saturating_add(acts)
    }
}

/// What one optimizer step did.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// Steps completed (1 after the first).
    pub step: u64,
    /// Mean training loss over the micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Weight decay used.
    pub wd: f32,
    /// Quantization blend used.
    pub lambda: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens processed.
    pub tokens: usize,
    /// Monitors, on report steps.
    #[serde(skip)]
    pub monitor: Option<MonitorReport>,
}

/// A training run in memory.
pub struct Trainer {
    /// Settings.
    pub cfg: TrainConfig,
    /// The model.
    pub model: TrainModel,
    /// Optimizer state.
    pub opt: AdamW,
    /// Data order.
    pub batcher: Batcher,
    /// Steps completed.
    pub step: u64,
    tape: Tape,
    monitor: Monitor,
    tokens: Vec<u32>,
    targets: Vec<u32>,
}

impl Trainer {
    /// A run from scratch (random initialisation from the seed).
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let model = TrainModel::new(cfg.model.clone(), cfg.seed)?;
        Self::with_model(cfg, model)
    }

    /// A run starting from given weights (fine-tuning).
    pub fn with_model(cfg: TrainConfig, model: TrainModel) -> Result<Self> {
        cfg.validate()?;
        if model.config != cfg.model {
            return Err(Error::Config("the model's config differs from the run's".into()));
        }
        let mut model = model;
        model.params.set_int8_backward(cfg.int8_backward);
        let opt = AdamW::new(&model.params, cfg.adamw.clone());
        let (threads, capped) = onebit_kernels::machine::cap_threads(cfg.threads);
        if capped {
            tracing::warn!(
                "{} threads requested, {threads} CPUs available: using {threads}",
                cfg.threads
            );
        }
        let mut tape = Tape::new(threads);
        tape.set_checkpointing(cfg.checkpointing);
        let batcher = Batcher::new(cfg.seq, cfg.batch, cfg.seed);
        let mut t = Trainer {
            cfg,
            model,
            opt,
            batcher,
            step: 0,
            tape,
            monitor: Monitor::default(),
            tokens: Vec::new(),
            targets: Vec::new(),
        };
        t.refresh()?;
        Ok(t)
    }

    /// The quantization blend at `step`.
    pub fn lambda_at(&self, step: u64) -> f32 {
        if self.cfg.lambda_warmup == 0 {
            1.0
        } else {
            ((step as f32 + 1.0) / self.cfg.lambda_warmup as f32).min(1.0)
        }
    }

    /// Rebuilds the ternary caches for the next step's λ.
    pub fn refresh(&mut self) -> Result<()> {
        let lambda = self.lambda_at(self.step);
        self.model.params.refresh_ternary(lambda, self.tape.pool())
    }

    /// One optimizer step on the next training batches.
    pub fn train_step(&mut self, data: &TokenData) -> Result<StepReport> {
        let c = self.cfg.clone();
        let (lambda, vocab) = (self.lambda_at(self.step), c.model.vocab);
        self.model.params.zero_grads();
        let mut loss = 0.0;
        for _ in 0..c.accum {
            self.batcher.next(&data.train, &mut self.tokens, &mut self.targets)?;
            self.tape.reset(c.batch, c.seq, &self.tokens, &self.targets, vocab)?;
            let (_, l) = self.model.forward(&mut self.tape)?;
            loss += self.tape.value(l)[0];
            self.tape.backward(&mut self.model.params)?;
        }
        loss /= c.accum as f32;
        if !loss.is_finite() {
            return Err(Error::Diverged { step: self.step, loss });
        }
        if c.clipped_ste {
            self.clip_ste();
        }
        let report_now = c.monitor_every > 0 && (self.step + 1).is_multiple_of(c.monitor_every);
        let grad_norms: Vec<f32> = if report_now {
            let inv = 1.0 / c.accum as f32;
            self.model
                .params
                .infos()
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let g = self.model.params.grad(crate::ParamId(i));
                    (g.iter().map(|&v| (v * inv) as f64 * (v * inv) as f64).sum::<f64>().sqrt())
                        as f32
                })
                .collect()
        } else {
            Vec::new()
        };
        let (lr, wd) = c.schedule.at(self.step);
        let stats = self.opt.step(
            &mut self.model.params,
            lr,
            wd,
            c.accum as f32,
            report_now,
            self.tape.pool(),
        );
        self.step += 1;
        self.refresh()?;
        let monitor = if report_now {
            let clip = self.tape.take_clip_stats();
            Some(self.monitor.report(
                self.step,
                &self.model.params,
                &grad_norms,
                &stats.update_sq,
                &clip,
            ))
        } else {
            None
        };
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            wd,
            lambda,
            grad_norm: stats.grad_norm,
            tokens: c.accum * c.batch * c.seq,
            monitor,
        })
    }

    fn clip_ste(&mut self) {
        let p = &mut self.model.params;
        for i in 0..p.infos().len() {
            if p.infos()[i].kind != ParamKind::Ternary {
                continue;
            }
            let id = crate::ParamId(i);
            let gamma = p.ternary(id).map(|c| c.gamma).unwrap_or(1.0);
            let (w, grad) = p.value_and_grad(id);
            for (g, &v) in grad.iter_mut().zip(w) {
                if (v / gamma).abs() > 1.5 {
                    *g = 0.0;
                }
            }
        }
    }

    /// Mean loss over up to `max_batches` consecutive validation batches (no update).
    pub fn evaluate(&mut self, val: &[u32], max_batches: usize) -> Result<f32> {
        let (b, s, vocab) = (self.cfg.batch, self.cfg.seq, self.cfg.model.vocab);
        let windows = if val.len() > s { (val.len() - 1) / s } else { 0 };
        let batches = (windows / b).min(max_batches);
        if batches == 0 {
            return Err(Error::Data(format!(
                "{} validation tokens cannot fill one batch of {b} x {s} (+1): use more data or a larger --val-share",
                val.len()
            )));
        }
        let mut total = 0.0f64;
        for i in 0..batches {
            self.tokens.clear();
            self.targets.clear();
            for j in 0..b {
                let st = (i * b + j) * s;
                self.tokens.extend_from_slice(&val[st..st + s]);
                self.targets.extend_from_slice(&val[st + 1..st + s + 1]);
            }
            self.tape.reset(b, s, &self.tokens, &self.targets, vocab)?;
            let (_, l) = self.model.forward(&mut self.tape)?;
            total += self.tape.value(l)[0] as f64;
        }
        self.tape.take_clip_stats();
        Ok((total / batches as f64) as f32)
    }

    /// [`Trainer::evaluate`] with the weights quantized at blend `lambda` (0 = full
    /// precision, 1 = ternary); the caches return to the current step's λ afterwards.
    pub fn evaluate_at(&mut self, val: &[u32], max_batches: usize, lambda: f32) -> Result<f32> {
        self.model.params.refresh_ternary(lambda, self.tape.pool())?;
        let r = self.evaluate(val, max_batches);
        self.refresh()?;
        r
    }

    /// Logits of the model at λ as for the current step, for `tokens` as one sequence
    /// (`tokens.len() × vocab`): what the engine must reproduce after export.
    pub fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let targets = vec![crate::ops::cross_entropy::IGNORE; tokens.len()];
        self.tape.reset(1, tokens.len(), tokens, &targets, self.cfg.model.vocab)?;
        let (logits, _) = self.model.forward(&mut self.tape)?;
        Ok(self.tape.value(logits).to_vec())
    }

    /// The tape (its pool is shared with the caches).
    pub fn tape(&self) -> &Tape {
        &self.tape
    }
}

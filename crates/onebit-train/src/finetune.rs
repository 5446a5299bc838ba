//! Fine-tuning a full-precision model into 1.58 bits: load a Llama-family (or BitNet) model
//! from GGUF (F32/F16/BF16 or a ggml block type dequantized, or ternary layouts) or a Hugging Face
//! directory as f32 masters; every linear inside the blocks becomes a BitLinear, embeddings,
//! norms and head stay full precision; the trainer's λ phase-in blends quantization in.
//! [`FinetuneRun`] is the whole run (`onebit finetune`, Python's `onebit.finetune`).

use crate::data::{read_documents, tokenize, TokenData};
use crate::error::{Error, Result};
use crate::export::{export_gguf, ExportOptions};
use crate::model::TrainModel;
use crate::params::ParamKind;
use crate::run::{check_data, io, train_loop, write_run_toml, Observer, RunEvent, RunOutput};
use crate::schedule::Schedule;
use crate::trainer::{TrainConfig, Trainer};
use crate::ParamId;
use onebit_model::gguf::Value;
use onebit_model::hf::HfDir;
use onebit_model::load::{GgufModelFile, TensorSource};
use onebit_model::ModelConfig;
use onebit_model::Tokenizer;
use std::time::Instant;

/// Loads `path` (GGUF file or HF directory) as a trainable model with the weights as latent
/// f32 masters.
pub fn load_pretrained(path: &str) -> Result<TrainModel> {
    let (src, config): (Box<dyn TensorSource>, ModelConfig) = if std::path::Path::new(path).is_dir()
    {
        let d = HfDir::open(path)?;
        let c = d.config.clone();
        (Box::new(d), c)
    } else {
        let f = GgufModelFile::open(path)?;
        let c = ModelConfig::from_gguf(&f.header)?;
        (Box::new(f), c)
    };
    let mut m = TrainModel::zeroed(config)?;
    let infos = m.params.infos().to_vec();
    for (i, info) in infos.iter().enumerate() {
        let values = match src.floats(&info.name, info.len()) {
            Ok(v) => v,
            // A ternary file: its trits times the scale are the masters.
            Err(_) if info.kind == ParamKind::Ternary => {
                let t = src.ternary(&info.name, info.rows, info.cols)?;
                let s = t.scale();
                t.to_trits().into_iter().map(|x| x as f32 * s).collect()
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Config(format!("{path}: tensor {} holds {bad}", info.name)));
        }
        m.params.value_mut(ParamId(i)).copy_from_slice(&values);
    }
    src.release();
    Ok(m)
}

/// Fine-tuning a full-precision model into 1.58 bits with a λ phase-in (`onebit finetune`).
#[derive(Clone, Debug)]
pub struct FinetuneRun {
    /// GGUF (F16/BF16/F32/Q8_0/Q4_0/Q4_1 or ternary) or a Hugging Face directory.
    pub model: String,
    /// Text or JSONL files (the tail is held out for validation).
    pub data: Vec<String>,
    /// Run folder.
    pub out: String,
    /// tokenizer.json (default: the model's).
    pub tokenizer: Option<String>,
    /// Optimizer steps.
    pub steps: u64,
    /// Steps over which quantization is blended in (λ 0 → 1).
    pub lambda_warmup: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// LR warm-up steps.
    pub warmup: u64,
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per step.
    pub accum: usize,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// Validate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Share of the data held out.
    pub val_share: f32,
    /// Threads.
    pub threads: usize,
    /// Gradient checkpointing per block.
    pub checkpointing: bool,
    /// Seed (data order).
    pub seed: u64,
}

impl Default for FinetuneRun {
    fn default() -> Self {
        FinetuneRun {
            model: String::new(),
            data: Vec::new(),
            out: String::new(),
            tokenizer: None,
            steps: 100,
            lambda_warmup: 50,
            lr: 1e-4,
            warmup: 10,
            seq: 256,
            batch: 4,
            accum: 1,
            eval_batches: 8,
            eval_every: 0,
            val_share: 0.05,
            threads: 2,
            checkpointing: false,
            seed: 1,
        }
    }
}

/// Validation losses of a fine-tuning run (also written to summary.json).
#[derive(Clone, Debug)]
pub struct FinetuneOutput {
    /// Full precision, before training.
    pub fp_loss: f32,
    /// Ternarized without training.
    pub naive_loss: f32,
    /// After training.
    pub finetuned_loss: f32,
    /// The run's files.
    pub run: RunOutput,
}

impl FinetuneRun {
    /// Loads, fine-tunes and exports (model.gguf, summary.json in `out`).
    pub fn run(&self, on: &mut Observer<'_>) -> Result<FinetuneOutput> {
        check_data(&self.data)?;
        let started = Instant::now();
        let model = load_pretrained(&self.model)?;
        let tok = match &self.tokenizer {
            Some(p) => Tokenizer::from_file(p)?,
            None => Tokenizer::for_model(&self.model)?,
        };
        let cfg = TrainConfig {
            model: model.config.clone(),
            seq: self.seq,
            batch: self.batch,
            accum: self.accum,
            schedule: Schedule {
                lr: self.lr,
                warmup: self.warmup,
                steps: self.steps,
                ..Default::default()
            },
            adamw: Default::default(),
            seed: self.seed,
            threads: self.threads,
            checkpointing: self.checkpointing,
            clipped_ste: false,
            lambda_warmup: self.lambda_warmup,
            int8_backward: false,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            monitor_every: 10,
            save_every: 0,
            val_share: self.val_share,
        };
        cfg.validate()?;
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))?;
        on(RunEvent::Message(&format!(
            "loaded {} ({} params, {} in BitLinears) in {:.1}s",
            self.model,
            model.params.count(),
            model.ternary_params(),
            started.elapsed().as_secs_f64()
        )));
        let docs = read_documents(&self.data)?;
        let data = TokenData::split(tokenize(&tok, &docs, model.config.eos)?, self.val_share);
        let mut t = Trainer::with_model(cfg, model)?;
        write_run_toml(&t, &self.out)?;
        let vb = self.eval_batches;
        let tokens = vb * self.batch * self.seq;
        on(RunEvent::Message(&format!(
            "{} train / {} validation tokens; evaluating on {tokens} held-out tokens",
            data.train.len(),
            data.val.len()
        )));
        let fp = t.evaluate_at(&data.val, vb, 0.0)?;
        on(RunEvent::Message(&format!(
            "full precision:      val loss {fp:.4}  ppl {:.2}",
            fp.exp()
        )));
        let naive = t.evaluate_at(&data.val, vb, 1.0)?;
        on(RunEvent::Message(&format!(
            "naive ternarization: val loss {naive:.4}  ppl {:.2}",
            naive.exp()
        )));
        let stopped = !train_loop(&mut t, &data, &self.out, on)?;
        let tuned = t.evaluate_at(&data.val, vb, 1.0)?;
        on(RunEvent::Message(&format!(
            "after {} steps of 1.58-bit QAT: val loss {tuned:.4}  ppl {:.2}  ({:.1} min in all)",
            t.step,
            tuned.exp(),
            started.elapsed().as_secs_f64() / 60.0
        )));
        let summary = serde_json::json!({
            "model": self.model, "steps": t.step, "tokens_per_step": self.batch * self.seq * self.accum,
            "val_tokens": tokens, "fp_loss": fp, "fp_ppl": fp.exp(), "naive_ternary_loss": naive,
            "naive_ternary_ppl": naive.exp(), "finetuned_loss": tuned, "finetuned_ppl": tuned.exp(),
        });
        let sp = format!("{}/summary.json", self.out);
        std::fs::write(&sp, format!("{summary}\n")).map_err(io(&sp))?;
        let mut extra: Vec<(String, Value)> = Vec::new();
        if self.model.ends_with(".gguf") {
            let f = GgufModelFile::open(&self.model)?;
            extra.extend(
                f.header.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned(),
            );
        }
        let gguf = format!("{}/model.gguf", self.out);
        let opts = ExportOptions { name: "onebit finetuned".into(), extra, ..Default::default() };
        export_gguf(&t.model, None, &gguf, &[], &opts)?;
        Ok(FinetuneOutput {
            fp_loss: fp,
            naive_loss: naive,
            finetuned_loss: tuned,
            run: RunOutput {
                steps: t.step,
                checkpoint: format!("{}/checkpoint.safetensors", self.out),
                model: gguf,
                stopped,
            },
        })
    }
}

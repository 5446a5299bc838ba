//! `onebit.train`, `onebit.finetune`, `onebit.export`: the CLI's training runs
//! (`onebit_train::run`) with a Python callback per event.

use crate::errors::train_err;
use onebit_train::finetune::FinetuneRun;
use onebit_train::run::{RunEvent, TrainOverrides, TrainRun};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Calls `callback(kind, payload)` with the GIL for each event ("message", "warning", or
/// "step" with the metrics line as JSON); a false return, an exception or Ctrl-C stops the
/// run after the current step (checkpoint written). The first error is kept to re-raise.
fn observer<'a>(
    callback: &'a Option<Py<PyAny>>,
    failure: &'a mut Option<PyErr>,
) -> impl FnMut(RunEvent<'_>) -> bool + 'a {
    move |ev| {
        Python::attach(|py| {
            let (kind, payload) = match &ev {
                RunEvent::Message(m) => ("message", m.to_string()),
                RunEvent::Warning(w) => ("warning", w.to_string()),
                RunEvent::Step { line, report, .. } => {
                    // metrics.jsonl leaves the monitor to monitor.jsonl; the callback gets both.
                    let mut v = (*line).clone();
                    if let Some(m) = &report.monitor {
                        v["monitor"] = serde_json::to_value(m).unwrap_or_default();
                    }
                    ("step", v.to_string())
                }
            };
            let go_on = match callback {
                Some(cb) => match cb.call1(py, (kind, payload)) {
                    Ok(r) => !r.bind(py).is(pyo3::types::PyBool::new(py, false)),
                    Err(e) => {
                        failure.get_or_insert(e);
                        false
                    }
                },
                None => true,
            };
            if let Err(e) = py.check_signals() {
                failure.get_or_insert(e);
            }
            // Once anything failed (Ctrl-C included), every later event says stop too.
            go_on && failure.is_none()
        })
    }
}

/// `d[k]` extracted, or None when absent or None.
macro_rules! get {
    ($d:expr, $k:expr) => {
        match $d.get_item($k)? {
            Some(v) if !v.is_none() => Some(v.extract()?),
            _ => None,
        }
    };
}

const OVERRIDES: [&str; 19] = [
    "hidden",
    "layers",
    "heads",
    "kv_heads",
    "ffn",
    "seq",
    "batch",
    "accum",
    "steps",
    "lr",
    "warmup",
    "threads",
    "eval_every",
    "monitor_every",
    "save_every",
    "seed",
    "checkpointing",
    "clipped_ste",
    "int8_backward",
];

fn overrides(d: &Bound<'_, PyDict>) -> PyResult<TrainOverrides> {
    for k in d.keys() {
        let k: String = k.extract()?;
        if !OVERRIDES.contains(&k.as_str()) {
            return Err(PyValueError::new_err(format!(
                "unknown training setting '{k}' (one of: {})",
                OVERRIDES.join(", ")
            )));
        }
    }
    Ok(TrainOverrides {
        hidden: get!(d, "hidden"),
        layers: get!(d, "layers"),
        heads: get!(d, "heads"),
        kv_heads: get!(d, "kv_heads"),
        ffn: get!(d, "ffn"),
        seq: get!(d, "seq"),
        batch: get!(d, "batch"),
        accum: get!(d, "accum"),
        steps: get!(d, "steps"),
        lr: get!(d, "lr"),
        warmup: get!(d, "warmup"),
        threads: get!(d, "threads"),
        eval_every: get!(d, "eval_every"),
        monitor_every: get!(d, "monitor_every"),
        save_every: get!(d, "save_every"),
        seed: get!(d, "seed"),
        checkpointing: get!(d, "checkpointing").unwrap_or(false),
        clipped_ste: get!(d, "clipped_ste").unwrap_or(false),
        int8_backward: get!(d, "int8_backward").unwrap_or(false),
    })
}

/// Trains a model from scratch into `out` (what `onebit train` does); returns
/// (steps, checkpoint path, model path, stopped early).
#[pyfunction]
#[pyo3(signature = (data, out, settings, tokenizer = None, vocab = 4096, config = None, resume = None, callback = None))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    data: Vec<String>,
    out: String,
    settings: &Bound<'_, PyDict>,
    tokenizer: Option<String>,
    vocab: usize,
    config: Option<String>,
    resume: Option<String>,
    callback: Option<Py<PyAny>>,
) -> PyResult<(u64, String, String, bool)> {
    let spec = TrainRun {
        data,
        out,
        config_file: config,
        tokenizer,
        vocab,
        resume,
        overrides: overrides(settings)?,
    };
    let mut failure = None;
    let r = py.detach(|| spec.run(&mut observer(&callback, &mut failure)));
    if let Some(e) = failure {
        return Err(e);
    }
    let o = r.map_err(train_err)?;
    Ok((o.steps, o.checkpoint, o.model, o.stopped))
}

/// Fine-tunes a full-precision model into 1.58 bits (what `onebit finetune` does); returns
/// (fp loss, naive ternary loss, fine-tuned loss, model path, stopped early).
#[pyfunction]
#[pyo3(signature = (model, data, out, settings, callback = None))]
pub fn finetune(
    py: Python<'_>,
    model: String,
    data: Vec<String>,
    out: String,
    settings: &Bound<'_, PyDict>,
    callback: Option<Py<PyAny>>,
) -> PyResult<(f32, f32, f32, String, bool)> {
    let mut spec = FinetuneRun { model, data, out, ..FinetuneRun::default() };
    for k in settings.keys() {
        let k: String = k.extract()?;
        let v = settings.get_item(&k)?.expect("a listed key");
        match k.as_str() {
            "tokenizer" => spec.tokenizer = v.extract()?,
            "steps" => spec.steps = v.extract()?,
            "lambda_warmup" => spec.lambda_warmup = v.extract()?,
            "lr" => spec.lr = v.extract()?,
            "warmup" => spec.warmup = v.extract()?,
            "seq" => spec.seq = v.extract()?,
            "batch" => spec.batch = v.extract()?,
            "accum" => spec.accum = v.extract()?,
            "eval_batches" => spec.eval_batches = v.extract()?,
            "eval_every" => spec.eval_every = v.extract()?,
            "val_share" => spec.val_share = v.extract()?,
            "threads" => spec.threads = v.extract()?,
            "checkpointing" => spec.checkpointing = v.extract()?,
            "seed" => spec.seed = v.extract()?,
            _ => return Err(PyValueError::new_err(format!("unknown fine-tuning setting '{k}'"))),
        }
    }
    let mut failure = None;
    let r = py.detach(|| spec.run(&mut observer(&callback, &mut failure)));
    if let Some(e) = failure {
        return Err(e);
    }
    let o = r.map_err(train_err)?;
    Ok((o.fp_loss, o.naive_loss, o.finetuned_loss, o.run.model, o.run.stopped))
}

/// Writes `src` (a training checkpoint, a Hugging Face directory of latent or float weights,
/// or a GGUF file) as a model for `target`: a GGUF file for onebit, llama.cpp, ik_llama.cpp or
/// bitnet.cpp, or a directory for transformers (its BitNet integration).
#[pyfunction]
#[pyo3(signature = (src, dst, target = "onebit"))]
pub fn convert(py: Python<'_>, src: String, dst: String, target: &str) -> PyResult<()> {
    use onebit_train::convert_any::{convert_any, ConvertTo};
    let to = ConvertTo::from_name(target).map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.detach(move || convert_any(&src, &dst, to).map_err(train_err))
}

//! `onebit.Model` (a loaded model with its tokenizer) and `onebit.GenerationStream`.

use crate::errors::model_err;
use crate::tokenizer::Tokenizer;
use crate::wait::{interruptible, SLICE};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use onebit_model::chat_template::ChatTemplate;
use onebit_model::load::{load_any, LoadOptions};
use onebit_model::{
    FinishReason, Generated, GenerationParams, HeadKind, KvDtype, SamplerConfig, Sequence, Session,
    SessionOptions,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// A model loaded for inference: weights in this CPU's fastest kernel layout, its
/// tokenizer and chat template. Calls on one model run one at a time.
#[pyclass(module = "onebit._onebit", frozen)]
pub struct Model {
    inner: Arc<Inner>,
}

struct Inner {
    model: onebit_model::Model,
    tok: Arc<onebit_model::Tokenizer>,
    template: Arc<ChatTemplate>,
    kv: KvDtype,
    ctx: usize,
    path: String,
    /// Held by whichever call runs the engine (the model's thread pool serves one at a time).
    busy: Mutex<()>,
}

/// Sampling and stopping settings as the Python layer passes them (a dict with every key).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct GenOptions {
    max_new_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repetition_penalty: f32,
    seed: u64,
    stop: Vec<String>,
    json_object: bool,
    /// A JSON schema as JSON text (structured output), or None.
    json_schema: Option<String>,
    /// A GBNF grammar (llama.cpp's syntax), or None.
    grammar: Option<String>,
}

impl GenOptions {
    /// The library's generation settings, range-checked once.
    fn params(self) -> PyResult<GenerationParams> {
        let sampling = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repetition_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        };
        sampling.validate().map_err(model_err)?;
        let json_schema = match &self.json_schema {
            Some(t) => Some(std::sync::Arc::new(
                onebit_model::json_schema::JsonSchema::from_json(t)
                    .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?,
            )),
            None => None,
        };
        let grammar = match &self.grammar {
            Some(t) => Some(std::sync::Arc::new(
                onebit_model::gbnf::Grammar::parse(t)
                    .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?,
            )),
            None => None,
        };
        Ok(GenerationParams {
            max_tokens: self.max_new_tokens,
            sampling,
            stop: self.stop,
            logprobs: None,
            adjust: Default::default(),
            json_object: self.json_object,
            json_schema,
            schema_optional: false,
            schema_more: 0,
            grammar,
        })
    }
}

impl Inner {
    fn session(&self, slots: usize) -> onebit_model::Result<Session<'_>> {
        let opts = SessionOptions { max_ctx: self.ctx, max_batch: 128, slots, kv: self.kv };
        Session::try_with_options(&self.model, opts)
    }

    fn check_prompt(&self, ids: &[u32]) -> PyResult<()> {
        if ids.is_empty() {
            return Err(PyValueError::new_err("the prompt has no tokens"));
        }
        if ids.len() >= self.ctx {
            return Err(PyValueError::new_err(format!(
                "prompt of {} tokens does not fit the context of {}",
                ids.len(),
                self.ctx
            )));
        }
        let vocab = self.model.config.vocab;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(PyValueError::new_err(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        Ok(())
    }
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Eos => "eos",
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContextFull => "context_full",
        FinishReason::Cancelled => "cancelled",
        FinishReason::Complete => "complete",
    }
}

#[pymethods]
impl Model {
    /// Loads a GGUF file (onebit, llama.cpp, ik_llama.cpp, bitnet.cpp) or a Hugging Face
    /// directory.
    #[staticmethod]
    #[pyo3(signature = (path, threads = None, kv_cache = "f16", head = "q8", ctx = 2048, layout = None, mmap = None, verify = true, embeddings = "f16"))]
    #[allow(clippy::too_many_arguments)]
    fn load(
        py: Python<'_>,
        path: String,
        threads: Option<usize>,
        kv_cache: &str,
        head: &str,
        ctx: usize,
        layout: Option<String>,
        mmap: Option<bool>,
        verify: bool,
        embeddings: &str,
    ) -> PyResult<Model> {
        let f32_embeddings = match embeddings {
            "f16" => false,
            "f32" => true,
            e => return Err(PyValueError::new_err(format!("unknown embeddings '{e}' (f16, f32)"))),
        };
        let kv = KvDtype::from_name(kv_cache).ok_or_else(|| {
            PyValueError::new_err(format!("unknown kv_cache '{kv_cache}' (f16, f32, q8)"))
        })?;
        let head = match head {
            "q8" => HeadKind::Q8,
            "q4" => HeadKind::Q4,
            "f32" => HeadKind::F32,
            h => return Err(PyValueError::new_err(format!("unknown head '{h}' (q8, q4, f32)"))),
        };
        let layout = layout
            .map(|l| {
                onebit_kernels::TernaryFormat::from_name(&l)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown layout '{l}'")))
            })
            .transpose()?;
        if ctx < 2 {
            return Err(PyValueError::new_err(format!("ctx {ctx} is too small (at least 2)")));
        }
        let threads = match threads {
            Some(0) => return Err(PyValueError::new_err("threads must be at least 1")),
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let opts = LoadOptions {
            threads,
            layout,
            head,
            in_place: mmap,
            verify,
            f32_embeddings,
            part: None,
            tensor: None,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let inner = interruptible(py, cancel, move || -> onebit_model::Result<Inner> {
            let tok = onebit_model::Tokenizer::for_model(&path)?;
            let template = ChatTemplate::for_model(&path)?;
            let model = load_any(&path, &opts)?;
            tok.check_model_vocab(model.config.vocab)?;
            let ctx = ctx.min(model.config.max_positions);
            Ok(Inner {
                model,
                tok: Arc::new(tok),
                template: Arc::new(template),
                kv,
                ctx,
                path,
                busy: Mutex::new(()),
            })
        })?
        .map_err(model_err)?;
        Ok(Model { inner: Arc::new(inner) })
    }

    /// The model's tokenizer and chat template.
    #[getter]
    fn tokenizer(&self) -> Tokenizer {
        Tokenizer { tok: self.inner.tok.clone(), template: self.inner.template.clone() }
    }

    /// The model's shape as a dict (hidden, layers, heads, kv_heads, ...).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.inner.model.config;
        let d = PyDict::new(py);
        let sizes = [
            ("hidden_size", c.hidden),
            ("num_hidden_layers", c.layers),
            ("num_attention_heads", c.heads),
            ("num_key_value_heads", c.kv_heads),
            ("head_dim", c.head_dim),
            ("intermediate_size", c.intermediate),
            ("vocab_size", c.vocab),
            ("max_position_embeddings", c.max_positions),
            ("context", self.inner.ctx),
        ];
        for (key, value) in sizes {
            d.set_item(key, value)?;
        }
        d.set_item("rope_theta", c.rope_theta)?;
        d.set_item("rms_norm_eps", c.rms_eps)?;
        d.set_item("bos_token_id", c.bos)?;
        d.set_item("eos_token_id", c.eos)?;
        d.set_item("kernel", self.inner.model.kernel_name())?;
        d.set_item("path", &self.inner.path)?;
        Ok(d)
    }

    /// Logits after every token of `ids` (`last_only`: after the last), as a float32
    /// array of shape (tokens, vocab) that owns the engine's buffer (no copy).
    #[pyo3(signature = (ids, last_only = false))]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        last_only: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        self.inner.check_prompt(&ids)?;
        let inner = self.inner.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let (rows, vocab, data) = interruptible(py, cancel, move || {
            let _busy = inner.busy.lock().unwrap_or_else(|p| p.into_inner());
            let vocab = inner.model.config.vocab;
            let mut s = inner.session(1)?;
            let data = if last_only {
                s.forward(&ids)?.to_vec()
            } else {
                let mut out = vec![0f32; ids.len() * vocab];
                s.forward_each(0, &ids, &mut |i, row| {
                    out[i * vocab..(i + 1) * vocab].copy_from_slice(row)
                })?;
                out
            };
            Ok::<_, onebit_model::Error>((data.len() / vocab, vocab, data))
        })?
        .map_err(model_err)?;
        let arr = Array2::from_shape_vec((rows, vocab), data)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(arr.into_pyarray(py))
    }

    /// Starts generating a reply to `ids` with `options` (max_new_tokens, temperature,
    /// top_k, top_p, min_p, repetition_penalty, seed, stop); returns an iterator of pieces.
    fn stream(&self, ids: Vec<u32>, options: GenOptions) -> PyResult<GenerationStream> {
        self.inner.check_prompt(&ids)?;
        let p = options.params()?;
        GenerationStream::start(self.inner.clone(), ids, p)
    }

    /// One reply per prompt, decoded together (one pass over the weights per token for all
    /// of them), with `options` as for `stream`; returns (text, generated tokens, finish
    /// reason) per prompt.
    fn generate_batch(
        &self,
        py: Python<'_>,
        prompts: Vec<Vec<u32>>,
        options: GenOptions,
    ) -> PyResult<Vec<(String, usize, &'static str)>> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        for p in &prompts {
            self.inner.check_prompt(p)?;
        }
        let p = options.params()?;
        let inner = self.inner.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop_flag = cancel.clone();
        let out = interruptible(py, cancel, move || {
            let _busy = inner.busy.lock().unwrap_or_else(|p| p.into_inner());
            let (vocab, eos) = (inner.model.config.vocab, inner.model.config.eos);
            let mut seqs = Vec::with_capacity(prompts.len());
            for _ in &prompts {
                seqs.push(Sequence::new(p.clone(), vocab, eos)?);
            }
            let mut s = inner.session(prompts.len())?;
            onebit_model::generate_batch(&mut s, &prompts, &mut seqs, &inner.tok, &mut |_, _| {
                !stop_flag.load(Ordering::Relaxed)
            })
        })?
        .map_err(model_err)?;
        Ok(out.into_iter().map(|g| (g.text, g.tokens, finish_name(g.finish))).collect())
    }
}

enum Event {
    Piece(String),
    Done(onebit_model::Result<Generated>),
}

/// A reply being generated on its own thread; iterating yields text pieces as they become
/// printable. Dropping or closing it cancels the reply.
#[pyclass(module = "onebit._onebit")]
pub struct GenerationStream {
    rx: Option<Mutex<mpsc::Receiver<Event>>>,
    cancel: Arc<AtomicBool>,
    text: String,
    tokens: usize,
    finish: Option<&'static str>,
}

impl GenerationStream {
    fn start(inner: Arc<Inner>, ids: Vec<u32>, p: GenerationParams) -> PyResult<Self> {
        let (tx, rx) = mpsc::sync_channel(256);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        std::thread::Builder::new()
            .name("onebit-generate".into())
            .spawn(move || {
                let r = (|| {
                    let _busy = inner.busy.lock().unwrap_or_else(|p| p.into_inner());
                    let c = &inner.model.config;
                    let mut seq = Sequence::new(p, c.vocab, c.eos)?;
                    let mut s = inner.session(1)?;
                    let mut consumed = Vec::with_capacity(inner.ctx);
                    onebit_model::generate(
                        &mut s,
                        &mut consumed,
                        &ids,
                        &mut seq,
                        &inner.tok,
                        &mut |piece| {
                            !flag.load(Ordering::Relaxed)
                                && tx.send(Event::Piece(piece.to_string())).is_ok()
                        },
                    )
                })();
                let _ = tx.send(Event::Done(r));
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the engine thread: {e}")))?;
        Ok(GenerationStream {
            rx: Some(Mutex::new(rx)),
            cancel,
            text: String::new(),
            tokens: 0,
            finish: None,
        })
    }
}

#[pymethods]
impl GenerationStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let Some(rx) = &self.rx else { return Ok(None) };
            match py.detach(|| rx.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(SLICE)) {
                Ok(Event::Piece(p)) => {
                    self.text.push_str(&p);
                    return Ok(Some(p));
                }
                Ok(Event::Done(r)) => {
                    self.rx = None;
                    let g = r.map_err(model_err)?;
                    self.tokens = g.tokens;
                    self.finish = Some(finish_name(g.finish));
                    return Ok(None);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        self.close();
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.rx = None;
                    return Err(PyRuntimeError::new_err("the generation thread stopped"));
                }
            }
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Leaving a `with` block cancels a reply that is still running.
    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    /// Cancels the reply (the engine stops at its next token).
    fn close(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if self.rx.take().is_some() && self.finish.is_none() {
            self.finish = Some("cancelled");
        }
    }

    /// The text generated so far.
    #[getter]
    fn text(&self) -> &str {
        &self.text
    }

    /// Tokens generated (known once the reply has ended).
    #[getter]
    fn tokens(&self) -> usize {
        self.tokens
    }

    /// Why the reply ended: eos, stop, length, context_full, cancelled (None while running).
    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        self.finish
    }
}

impl Drop for GenerationStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Whether loading `path` ternarizes full-precision linears that were never trained for it
/// (`onebit_model::load::needs_finetuning`).
#[pyfunction]
pub fn needs_finetuning(py: Python<'_>, path: String) -> PyResult<bool> {
    py.detach(|| onebit_model::load::needs_finetuning(&path)).map_err(model_err)
}

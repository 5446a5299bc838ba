//! The engine thread: one [`Session`] with N slots, a bounded queue, continuous batching.
//!
//! This file holds the handle the routes call ([`Engine`]: submit, shut down), the engine
//! each backend runs on, and what happens when a mesh breaks (formed again, or served from
//! this node alone). The loop itself, one turn at a time (admitting requests into slots with
//! prefix reuse, chunked prefill between decode steps, one pass over every busy slot, two
//! passes in flight on a pipeline), is in `scheduler/runner.rs`.

use crate::metrics::Metrics;
use onebit_dist::pipeline::{PipelineHead, PipelineTimeouts};
use onebit_dist::stage_wires::StageWires;
use onebit_dist::wire::WireDtype;
use onebit_dist::Comm;
use onebit_model::Engine as ModelEngine;
use onebit_model::{
    FinishReason, GenerationParams, KvDtype, Model, Session, SessionOptions, TokenLogprob,
    Tokenizer,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// One request for the engine.
pub struct Job {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// What the reply may do.
    pub params: GenerationParams,
    /// Where its events go; a closed channel cancels the job.
    pub events: UnboundedSender<Event>,
    /// Set to cancel the job.
    pub cancel: Arc<AtomicBool>,
    /// Report the prompt's tokens' log-probabilities with this many alternatives each
    /// ([`Event::PromptLogprobs`]); the whole prompt is then computed, none of it reused.
    pub prompt_logprobs: Option<usize>,
}

/// What the engine tells a request.
#[derive(Debug)]
pub enum Event {
    /// Text that became printable.
    Piece(String),
    /// A reply token's log-probability (sent before the text it made printable).
    Logprob(TokenLogprob),
    /// The log-probabilities of the prompt's tokens after the first, once it is read.
    PromptLogprobs(Vec<TokenLogprob>),
    /// The reply ended.
    Done(Usage),
    /// The engine failed on this request.
    Failed(String),
}

/// Counts and timings of one finished request.
#[derive(Clone, Debug)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, how many came from the slot's cache.
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Why it ended.
    pub finish: FinishReason,
    /// The stop string that ended it, if one did.
    pub stop_word: Option<String>,
    /// Milliseconds reading the prompt.
    pub prompt_ms: f64,
    /// Milliseconds generating.
    pub decode_ms: f64,
}

/// Where the engine computes.
pub enum Backend {
    /// This process.
    Local,
    /// A pipeline over a device mesh: this process is its head (rank 0 of the comm; the
    /// model passed in holds the head's part) and the workers run the rest.
    /// The element types link by link: `None` f32 everywhere.
    Mesh(Box<dyn Comm>, PipelineTimeouts, Option<StageWires>),
    /// A hybrid mesh laid out as the ring ([`onebit_dist::hybrid`]): this process is its
    /// head (the model passed in holds the first stage's part).
    /// The element types link by link: `None` f32 everywhere.
    Hybrid(Box<dyn Comm>, onebit_dist::hybrid::Ring, PipelineTimeouts, Option<StageWires>),
    /// A tensor-parallel mesh: this process is its head (rank 0; the model passed in holds
    /// rank 0's piece of every block and the output head).
    Tensor(Box<dyn Comm>, PipelineTimeouts, WireDtype),
    /// The GPU backend on this device.
    Gpu(std::sync::Arc<onebit_gpu::GpuContext>),
}

/// How the engine is sized.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Sequences decoded together.
    pub slots: usize,
    /// Context positions per slot.
    pub ctx: usize,
    /// Prompt tokens read per slot per turn (running streams wait at most one chunk).
    pub prefill_chunk: usize,
    /// Requests that may wait for a slot; beyond it the server answers 503.
    pub queue: usize,
    /// KV cache element type.
    pub kv: KvDtype,
}

struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
}

/// The handle the HTTP side holds.
pub struct Engine {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    capacity: usize,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Starts the engine thread over `model` (the whole model, or with a mesh the head's part
    /// of a pipeline); fails if the session does not fit in memory.
    pub fn start(
        model: Model,
        tok: Arc<Tokenizer>,
        cfg: EngineConfig,
        metrics: Arc<Metrics>,
        backend: Backend,
        fallback: Option<crate::Fallback>,
    ) -> Result<Engine, String> {
        let queue = Arc::new((
            Mutex::new(Queue { jobs: VecDeque::new(), shutdown: false }),
            Condvar::new(),
        ));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (q, m) = (queue.clone(), metrics.clone());
        let thread = std::thread::Builder::new()
            .name("onebit-engine".into())
            .spawn(move || {
                let opts = SessionOptions {
                    max_ctx: cfg.ctx,
                    max_batch: cfg.prefill_chunk.max(cfg.slots),
                    slots: cfg.slots,
                    kv: cfg.kv,
                };
                let broken = {
                    let engine = match engine_on(backend, &model, opts) {
                        Ok(engine) => engine,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(engine.capacity()));
                    match Runner::new(engine, model.config.eos, &tok, cfg, &m).run(&q) {
                        RunEnd::Broken(why) => why,
                        RunEnd::Shutdown => return,
                    }
                };
                // The head's part goes before the whole model loads.
                drop(model);
                replan(broken, fallback, opts, &tok, cfg, &m, &q);
            })
            .map_err(|e| e.to_string())?;
        let ctx = ready_rx.recv().map_err(|_| "the engine thread stopped".to_string())??;
        metrics.slots.store(cfg.slots as u64, Relaxed);
        metrics.kv_total.store((cfg.slots * ctx) as u64, Relaxed);
        Ok(Engine { queue, capacity: cfg.queue, metrics, thread: Mutex::new(Some(thread)) })
    }

    /// Jobs the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a job, or gives it back when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let (lock, cv) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        if q.shutdown || q.jobs.len() >= self.capacity {
            self.metrics.rejected.fetch_add(1, Relaxed);
            return Err(Box::new(job));
        }
        q.jobs.push_back(job);
        self.metrics.requests.fetch_add(1, Relaxed);
        self.metrics.queue_depth.store(q.jobs.len() as u64, Relaxed);
        cv.notify_one();
        Ok(())
    }

    /// Cancels queued and running jobs and waits for the engine thread to stop.
    pub fn shutdown(&self) {
        let (lock, cv) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).shutdown = true;
        cv.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// `head` sending in `wires` (as it is where `None`).
fn with_wires(
    head: PipelineHead<'_>,
    wires: Option<StageWires>,
) -> Result<PipelineHead<'_>, String> {
    match wires {
        Some(w) => head.with_wires(w).map_err(|e| e.to_string()),
        None => Ok(head),
    }
}

/// The engine `backend` runs `model` on, sized by `opts`.
fn engine_on(
    backend: Backend,
    model: &Model,
    opts: SessionOptions,
) -> Result<Box<dyn ModelEngine + '_>, String> {
    let cpu = || Session::try_with_options(model, opts).map_err(|e| e.to_string());
    Ok(match backend {
        Backend::Local => Box::new(cpu()?),
        Backend::Mesh(comm, t, wires) => {
            let head = PipelineHead::new(cpu()?, comm, t).map_err(|e| e.to_string())?;
            Box::new(with_wires(head, wires)?)
        }
        Backend::Hybrid(comm, ring, t, wires) => {
            let head = PipelineHead::hybrid(cpu()?, comm, &ring, t).map_err(|e| e.to_string())?;
            Box::new(with_wires(head, wires)?)
        }
        Backend::Tensor(comm, t, wire) => Box::new(
            onebit_dist::tensor::TensorHead::new(cpu()?, comm, t)
                .map_err(|e| e.to_string())?
                .with_wire(wire)
                .map_err(|e| e.to_string())?,
        ),
        Backend::Gpu(ctx) => Box::new(
            // The device keeps its KV cache in f32 whatever --kv says.
            onebit_gpu::GpuSession::new(
                ctx,
                model,
                SessionOptions { kv: onebit_model::KvDtype::F32, ..opts },
            )
            .map_err(|e| e.to_string())?,
        ),
    })
}

/// Why a runner stopped.
enum RunEnd {
    /// The server is shutting down.
    Shutdown,
    /// The engine broke (a mesh lost a node): why.
    Broken(String),
}

/// After the mesh broke: forms it again without the failed node where `fallback` can
/// (again each time it breaks), else serves on from this node alone when the whole model
/// fits here, else answers every request with why it cannot run.
fn replan(
    mut why: String,
    fallback: Option<crate::Fallback>,
    opts: SessionOptions,
    tok: &Tokenizer,
    cfg: EngineConfig,
    metrics: &Metrics,
    queue: &(Mutex<Queue>, Condvar),
) {
    tracing::error!("the mesh failed: {why}");
    let Some(f) = fallback else {
        return refuse_all(queue, format!("the mesh failed: {why}"));
    };
    while let Some(reform) = &f.reform {
        let formed = reform(&why).and_then(|(model, backend)| {
            let engine = engine_on(backend, &model, opts)?;
            tracing::warn!("re-planned: serving on the mesh formed again");
            metrics.replans.fetch_add(1, Relaxed);
            Ok(Runner::new(engine, model.config.eos, tok, cfg, metrics).run(queue))
        });
        match formed {
            Ok(RunEnd::Shutdown) => return,
            Ok(RunEnd::Broken(w)) => {
                tracing::error!("the mesh failed again: {w}");
                why = w;
            }
            Err(e) => {
                tracing::warn!("cannot form the mesh again ({e})");
                break;
            }
        }
    }
    tracing::warn!("re-planning: loading all of {} on this node", f.model);
    let local = match Model::from_pretrained(&f.model, &f.load) {
        Ok(m) => m,
        Err(e) => {
            let msg = format!("the mesh failed ({why}) and the model does not load here: {e}");
            return refuse_all(queue, msg);
        }
    };
    let session = Session::try_with_options(&local, opts);
    match session {
        Ok(s) => {
            tracing::warn!("serving {} from this node alone", f.model);
            metrics.replans.fetch_add(1, Relaxed);
            let end = Runner::new(Box::new(s), local.config.eos, tok, cfg, metrics).run(queue);
            if let RunEnd::Broken(w) = end {
                refuse_all(queue, w);
            }
        }
        Err(e) => {
            refuse_all(queue, format!("the mesh failed ({why}) and this node alone cannot: {e}"))
        }
    };
}

/// Answers every request with `msg` until the server shuts down.
fn refuse_all(queue: &(Mutex<Queue>, Condvar), msg: String) {
    let (lock, cv) = queue;
    let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !q.shutdown {
        for job in q.jobs.drain(..) {
            let _ = job.events.send(Event::Failed(msg.clone()));
        }
        q = cv.wait_timeout(q, Duration::from_millis(200)).unwrap_or_else(|e| e.into_inner()).0;
    }
    for job in q.jobs.drain(..) {
        let _ = job.events.send(Event::Failed("the server is shutting down".into()));
    }
}

mod runner;
use runner::Runner;

#[cfg(test)]
mod tests;

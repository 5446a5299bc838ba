//! [`GpuSession`]: a model's weights, KV caches and activations on the device, and the
//! passes that run rows through it. A pass is one command buffer: the embeddings, every
//! block (ten launches: norm+quantize, fused q/k/v, RoPE+cache write, attention,
//! [sub-norm+]quantize, o with the residual add, norm+quantize, fused gate/up, gated
//! activation+[sub-norm+]quantize, down with the residual add), then for the rows whose
//! logits are wanted the final norm+quantize, the head and, when only tokens are wanted,
//! argmax. One submission per pass; what comes back is the wanted logits or token ids.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::ops::{uniform, Op, Quad};
use crate::weights::check_size;
use onebit_model::{Model, ModelConfig, SessionOptions};
use std::sync::{Arc, Mutex};

/// Scratch and state buffers of a session.
pub(crate) struct Bufs {
    pub(crate) step: wgpu::Buffer,
    pub(crate) head_step: wgpu::Buffer,
    pub(crate) tokens: wgpu::Buffer,
    pub(crate) rows: wgpu::Buffer,
    pub(crate) gather: wgpu::Buffer,
    pub(crate) logits: wgpu::Buffer,
    pub(crate) ids: wgpu::Buffer,
    /// One [`onebit_model::Draw`] per wanted row.
    pub(crate) draws: wgpu::Buffer,
    /// The draws' penalized tokens.
    pub(crate) penalized: wgpu::Buffer,
    pub(crate) read_logits: wgpu::Buffer,
    pub(crate) read_ids: wgpu::Buffer,
}

/// Sequences in slots, run on a GPU.
pub struct GpuSession {
    pub(crate) ctx: Arc<GpuContext>,
    pub(crate) cfg: ModelConfig,
    pub(crate) pos: Vec<usize>,
    pub(crate) max_ctx: usize,
    pub(crate) max_batch: usize,
    pub(crate) bufs: Bufs,
    pub(crate) main_ops: Vec<Op>,
    pub(crate) head_ops: Vec<Op>,
    pub(crate) argmax: Op,
    pub(crate) sample: Op,
    pub(crate) logits: Vec<f32>,
    pub(crate) ids: Vec<u32>,
    pub(crate) row_info: Vec<u32>,
    /// The draws of a sampled step as the device's records (reused).
    pub(crate) draw_words: Vec<[u32; 12]>,
    pub(crate) wanted: Vec<u32>,
    pub(crate) failed: Arc<Mutex<Option<String>>>,
    /// Kernel launches and submissions so far (reported by `bench --device gpu`).
    pub counters: Counters,
}

/// Launch and submission counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Passes run.
    pub passes: u64,
    /// Kernel launches recorded.
    pub dispatches: u64,
    /// Command buffers submitted.
    pub submissions: u64,
    /// Tokens sampled on the device by a draw (not greedy).
    pub sampled: u64,
}

fn empty(ctx: &GpuContext, label: &str, bytes: usize, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4).next_multiple_of(4) as u64,
        usage,
        mapped_at_creation: false,
    })
}

pub(crate) fn scratch(ctx: &GpuContext, label: &str, bytes: usize) -> Result<wgpu::Buffer> {
    check_size(ctx, label, bytes as u64)?;
    use wgpu::BufferUsages as U;
    Ok(empty(ctx, label, bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST))
}

impl GpuSession {
    /// Uploads `model` and sizes KV caches and buffers as `o` says.
    pub fn new(ctx: Arc<GpuContext>, model: &Model, o: SessionOptions) -> Result<Self> {
        if !model.is_whole() {
            return Err(Error::Unsupported("a pipeline stage (the GPU runs whole models)".into()));
        }
        if o.kv != onebit_model::KvDtype::F32 {
            return Err(Error::Unsupported("a quantized KV cache (the GPU keeps f32)".into()));
        }
        let c = model.config.clone();
        let max_ctx = o.max_ctx.min(c.max_positions).max(1);
        let slots = o.slots.max(1);
        let b = o.max_batch.max(slots);
        let g = &*ctx;
        let vocab = c.vocab;
        use wgpu::BufferUsages as U;
        let bufs = Bufs {
            step: uniform(g, &Quad([0; 4])),
            head_step: uniform(g, &Quad([0; 4])),
            tokens: scratch(g, "tokens", b * 4)?,
            rows: scratch(g, "rows", b * 8)?,
            gather: scratch(g, "gather", b * 4)?,
            logits: scratch(g, "logits", b * vocab * 4)?,
            ids: scratch(g, "ids", b * 4)?,
            draws: scratch(g, "draws", b * 48)?,
            penalized: scratch(g, "penalized tokens", b * max_ctx * 4)?,
            read_logits: empty(g, "read logits", b * vocab * 4, U::MAP_READ | U::COPY_DST),
            read_ids: empty(g, "read ids", b * 4, U::MAP_READ | U::COPY_DST),
        };
        let built = crate::build::Launches::build(g, model, &bufs, max_ctx, slots, b)?;
        let failed = Arc::new(Mutex::new(None::<String>));
        let f = failed.clone();
        ctx.device.on_uncaptured_error(Arc::new(move |e| {
            tracing::error!("GPU: {e}");
            *f.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }));
        Ok(GpuSession {
            ctx,
            cfg: c,
            pos: vec![0; slots],
            max_ctx,
            max_batch: b,
            bufs,
            main_ops: built.main,
            head_ops: built.head,
            argmax: built.argmax,
            sample: built.sample,
            logits: vec![0.0; b * vocab],
            ids: vec![0; b],
            row_info: vec![0; 2 * b],
            draw_words: Vec::with_capacity(b),
            wanted: Vec::with_capacity(b),
            failed,
            counters: Counters::default(),
        })
    }
}

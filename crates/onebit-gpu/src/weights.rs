//! Model weights on the device: fused ternary linears (q/k/v in one matrix, gate/up in
//! another, a scale per row so each part keeps its own), the int8 head and the embedding
//! table, the latter two split into chunks of rows where they exceed one storage binding.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::pack;
use onebit_kernels::{TernaryFormat, TernaryMatrix};
use onebit_model::engine::{Embedding, Head};
use onebit_model::Model;
use wgpu::util::DeviceExt;

/// A storage buffer holding `data`.
pub(crate) fn storage<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> wgpu::Buffer {
    // A zero-length binding is invalid; an empty table gets one word.
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let pad = [0u8; 4];
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: if bytes.is_empty() { &pad } else { bytes },
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
    })
}

/// Fails where `bytes` exceed one storage binding.
pub(crate) fn check_size(ctx: &GpuContext, what: &str, bytes: u64) -> Result<()> {
    if bytes > ctx.max_binding() {
        return Err(Error::TooLarge { what: what.into(), bytes, limit: ctx.max_binding() });
    }
    Ok(())
}

/// Ternary matrices stacked by rows: one dispatch computes all of them.
pub(crate) struct GpuTernary {
    pub w: wgpu::Buffer,
    pub scale: wgpu::Buffer,
    pub rows: usize,
    pub cols: usize,
}

/// Trits and the one multiplier of `m` (layouts whose blocks or rows carry different scales
/// are refused: the device kernel applies one scale per row).
fn trits_of(m: &TernaryMatrix) -> Result<(Vec<i8>, f32)> {
    if m.format() != TernaryFormat::T2 {
        // repack refuses exactly the matrices with mixed block or row scales.
        m.repack(TernaryFormat::T2).map_err(|e| Error::Unsupported(e.to_string()))?;
    }
    Ok((m.to_trits(), m.scale()))
}

impl GpuTernary {
    /// Uploads `parts` (same column count) as one matrix.
    pub fn upload(ctx: &GpuContext, label: &str, parts: &[&TernaryMatrix]) -> Result<Self> {
        let cols = parts[0].cols();
        let rows: usize = parts.iter().map(|m| m.rows()).sum();
        let mut words = Vec::with_capacity(rows * pack::ternary_words(cols));
        let mut scale = Vec::with_capacity(rows);
        for m in parts {
            let (t, s) = trits_of(m)?;
            words.extend(pack::pack_ternary(&t, m.rows(), cols));
            scale.extend(std::iter::repeat_n(s, m.rows()));
        }
        check_size(ctx, label, words.len() as u64 * 4)?;
        Ok(GpuTernary {
            w: storage(ctx, label, &words),
            scale: storage(ctx, label, &scale),
            rows,
            cols,
        })
    }
}

/// One chunk of int8 head rows.
pub(crate) struct HeadChunk {
    pub w: wgpu::Buffer,
    pub scale: wgpu::Buffer,
    pub first: usize,
    pub rows: usize,
}

/// The int8 output head: rows padded to 64 columns, in chunks of at most one binding.
pub(crate) struct GpuHead {
    pub chunks: Vec<HeadChunk>,
    pub kw: usize,
}

impl GpuHead {
    /// Uploads an int8 or 4-bit head (4-bit rows are widened to int8 on the device).
    pub fn upload(ctx: &GpuContext, model: &Model) -> Result<Self> {
        let Head::Q8(m) = &model.head else {
            return Err(Error::Unsupported(
                "an f32 output head (load with the default int8 head, --head q8 or q4)".into(),
            ));
        };
        let kw = pack::head_row_words(m.cols());
        let per_chunk = (ctx.max_binding() as usize / (kw * 4)).max(1);
        let mut chunks = Vec::new();
        for first in (0..m.rows()).step_by(per_chunk) {
            let rows = per_chunk.min(m.rows() - first);
            let (words, scale) = pack::head_rows(m, first..first + rows);
            chunks.push(HeadChunk {
                w: storage(ctx, "head", &words),
                scale: storage(ctx, "head scales", &scale),
                first,
                rows,
            });
        }
        Ok(GpuHead { chunks, kw })
    }
}

/// One chunk of embedding rows.
pub(crate) struct EmbedChunk {
    pub table: wgpu::Buffer,
    pub first: usize,
    pub rows: usize,
}

/// Token embeddings: f16 where the CPU holds f16 (the same values), else f32.
pub(crate) struct GpuEmbed {
    pub chunks: Vec<EmbedChunk>,
    pub f16: bool,
}

impl GpuEmbed {
    /// Uploads `model`'s embedding table.
    pub fn upload(ctx: &GpuContext, model: &Model) -> Result<Self> {
        let (vocab, h) = (model.config.vocab, model.config.hidden);
        let f16 = matches!(model.embed, Embedding::Owned(_));
        if matches!(model.embed, Embedding::Absent) {
            return Err(Error::Unsupported("a model part without embeddings".into()));
        }
        let row_bytes = if f16 { h * 2 } else { h * 4 };
        // Chunks start on an even element so f16 pairs never straddle two chunks.
        let per_chunk = ((ctx.max_binding() as usize / row_bytes).max(2)) & !1;
        let mut chunks = Vec::new();
        let mut buf = vec![0f32; h];
        for first in (0..vocab).step_by(per_chunk) {
            let rows = per_chunk.min(vocab - first);
            let words: Vec<u32> = if f16 {
                let Embedding::Owned(v) = &model.embed else { unreachable!() };
                let halves = &v[first * h..(first + rows) * h];
                halves
                    .chunks(2)
                    .map(|p| {
                        p[0].to_bits() as u32 | (p.get(1).map_or(0, |x| x.to_bits()) as u32) << 16
                    })
                    .collect()
            } else {
                let mut w = Vec::with_capacity(rows * h);
                for id in first..first + rows {
                    model.embed.row(id, h, &mut buf);
                    w.extend(buf.iter().map(|v| v.to_bits()));
                }
                w
            };
            chunks.push(EmbedChunk { table: storage(ctx, "embeddings", &words), first, rows });
        }
        Ok(GpuEmbed { chunks, f16 })
    }
}

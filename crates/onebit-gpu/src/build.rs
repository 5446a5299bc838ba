//! [`Launches`]: the launch list of a session's passes, built once with every bind group:
//! the embedding lookups, ten launches per block, and the head's (final norm, int8 head in
//! chunks, argmax). Uploading each block's weights happens here too, block by block.

use crate::context::GpuContext;
use crate::error::Result;
use crate::ops::{uniform, AqP, AttP, Grid, Kernel, MatP, Op, Quad};
use crate::pack::{act_stride, ternary_words};
use crate::session::{scratch, Bufs};
use crate::weights::{storage, GpuEmbed, GpuHead, GpuTernary};
use onebit_model::engine::Layer;
use onebit_model::{config::Activation, Model, ModelConfig};

/// The launches of a pass.
pub(crate) struct Launches {
    /// Embeddings and blocks, over all rows of a pass.
    pub main: Vec<Op>,
    /// Final norm and head, over the wanted rows.
    pub head: Vec<Op>,
    /// Greedy sampling of the wanted rows.
    pub argmax: Op,
    /// Sampling of the wanted rows by their draws.
    pub sample: Op,
}

/// The activation buffers every block shares.
struct Acts {
    x: wgpu::Buffer,
    tmp: wgpu::Buffer,
    act: wgpu::Buffer,
    act_scale: wgpu::Buffer,
    act_sum: wgpu::Buffer,
    qkv: wgpu::Buffer,
    att: wgpu::Buffer,
    gu: wgpu::Buffer,
    scores: wgpu::Buffer,
    rope: wgpu::Buffer,
    norm: wgpu::Buffer,
}

struct Builder<'a> {
    g: &'a GpuContext,
    c: &'a ModelConfig,
    bufs: &'a Bufs,
    a: Acts,
    max_ctx: usize,
    slots: usize,
}

impl Launches {
    /// Uploads `model` and records its launches over `bufs`, for `slots` sequences of
    /// `max_ctx` positions and passes of up to `b` rows.
    pub fn build(
        g: &GpuContext,
        model: &Model,
        bufs: &Bufs,
        max_ctx: usize,
        slots: usize,
        b: usize,
    ) -> Result<Launches> {
        let c = &model.config;
        let (h, qd, kvd, ffn) = (c.hidden, c.q_dim(), c.kv_dim(), c.intermediate);
        let widest = h.max(qd).max(ffn);
        let a = Acts {
            x: scratch(g, "x", b * h * 4)?,
            tmp: scratch(g, "tmp", b * widest * 4)?,
            act: scratch(g, "act", b * act_stride(widest) * 4)?,
            act_scale: scratch(g, "act scales", b * 4)?,
            act_sum: scratch(g, "act sums", b * 4)?,
            qkv: scratch(g, "qkv", b * (qd + 2 * kvd) * 4)?,
            att: scratch(g, "att", b * qd * 4)?,
            gu: scratch(g, "gate/up", b * 2 * ffn * 4)?,
            scores: scratch(g, "attention scores", b * c.heads * max_ctx * 4)?,
            rope: storage(g, "rope", &rope_table(c, max_ctx)),
            norm: storage(g, "final norm", &model.norm),
        };
        let bl = Builder { g, c, bufs, a, max_ctx, slots };
        let mut main = Vec::new();
        let embed = GpuEmbed::upload(g, model)?;
        for ch in &embed.chunks {
            let p = Quad([h as u32, ch.first as u32, ch.rows as u32, embed.f16 as u32]);
            let bind = [&bufs.step, &uniform(g, &p), &bufs.tokens, &ch.table, &bl.a.x];
            let grid = Grid::Threads { per_row: h as u32, wg: 256 };
            main.push(Op::new(g, Kernel::Embed, grid, &bind));
        }
        for (li, l) in model.layers.iter().enumerate() {
            bl.block(li, l, &mut main)?;
        }
        let head = bl.head(model)?;
        let ap = uniform(g, &Quad([c.vocab as u32, 0, 0, 0]));
        let bind = [&bufs.head_step, &ap, &bufs.logits, &bufs.ids];
        let argmax = Op::new(g, Kernel::Argmax, Grid::Rows, &bind);
        let bind = [&bufs.head_step, &ap, &bufs.logits, &bufs.draws, &bufs.penalized, &bufs.ids];
        let sample = Op::new(g, Kernel::Sample, Grid::Rows, &bind);
        Ok(Launches { main, head, argmax, sample })
    }
}

impl Builder<'_> {
    /// Norm/activation + quantization of `cols` columns of `x` into the shared int8 rows.
    fn aq(
        &self,
        x: &wgpu::Buffer,
        w: Option<&wgpu::Buffer>,
        cols: usize,
        in_stride: usize,
        mode: u32,
        gather: u32,
    ) -> Op {
        let p = AqP {
            cols: cols as u32,
            in_stride: in_stride as u32,
            in_off: 0,
            mode,
            norm: w.is_some() as u32,
            act_stride: act_stride(cols) as u32,
            eps: self.c.rms_eps,
            gather,
            up_off: if mode == 0 { 0 } else { cols as u32 },
            pad: [0; 3],
        };
        let (a, b) = (&self.a, self.bufs);
        let step = if gather == 1 { &b.head_step } else { &b.step };
        let w = w.unwrap_or(&a.norm);
        let pb = uniform(self.g, &p);
        let bind = [step, &pb, x, w, &b.gather, &a.tmp, &a.act, &a.act_scale, &a.act_sum];
        Op::new(self.g, Kernel::ActQuant, Grid::Rows, &bind)
    }

    /// A ternary product of the shared int8 rows into `out` (`accumulate`: out += result).
    fn mm(&self, m: &GpuTernary, out: &wgpu::Buffer, accumulate: u32) -> Op {
        let p = MatP {
            rows: m.rows as u32,
            kw: ternary_words(m.cols) as u32,
            out_stride: m.rows as u32,
            accumulate,
            act_stride: act_stride(m.cols) as u32,
            row_base: 0,
            pad: [0; 2],
        };
        let (a, pb) = (&self.a, uniform(self.g, &p));
        let bind = [&self.bufs.step, &pb, &m.w, &m.scale, &a.act, &a.act_scale, &a.act_sum, out];
        Op::new(self.g, Kernel::Ternary, Grid::Matmul { rows: m.rows as u32 }, &bind)
    }

    fn att_p(&self, extra: usize) -> AttP {
        let c = self.c;
        AttP {
            heads: c.heads as u32,
            kv_heads: c.kv_heads as u32,
            hd: c.head_dim as u32,
            qkv_stride: (c.q_dim() + 2 * c.kv_dim()) as u32,
            qd: c.q_dim() as u32,
            kvd: c.kv_dim() as u32,
            slot_stride: (self.max_ctx * c.kv_dim()) as u32,
            extra: extra as u32,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            pad: [0; 3],
        }
    }

    /// Uploads block `li` and appends its ten launches.
    fn block(&self, li: usize, l: &Layer, ops: &mut Vec<Op>) -> Result<()> {
        let (g, c, a, bufs) = (self.g, self.c, &self.a, self.bufs);
        let (h, qd, kvd, ffn) = (c.hidden, c.q_dim(), c.kv_dim(), c.intermediate);
        let tag = |s: &str| format!("block {li} {s}");
        let fused_qkv = GpuTernary::upload(g, &tag("q/k/v"), &[&l.q.w, &l.k.w, &l.v.w])?;
        let o = GpuTernary::upload(g, &tag("o"), &[&l.o.w])?;
        let fused_gu = GpuTernary::upload(g, &tag("gate/up"), &[&l.gate.w, &l.up.w])?;
        let down = GpuTernary::upload(g, &tag("down"), &[&l.down.w])?;
        let kc = scratch(g, &tag("K cache"), self.slots * self.max_ctx * kvd * 4)?;
        let vc = scratch(g, &tag("V cache"), self.slots * self.max_ctx * kvd * 4)?;
        let attn_norm = storage(g, "norm", &l.attn_norm);
        let ffn_norm = storage(g, "norm", &l.ffn_norm);
        let sub = |w: &Option<Vec<f32>>| w.as_ref().map(|w| storage(g, "sub-norm", w));
        let (attn_sub, ffn_sub) = (sub(&l.attn_sub_norm), sub(&l.ffn_sub_norm));
        let mode = match c.act {
            Activation::Relu2 => 1,
            Activation::Silu => 2,
        };
        ops.push(self.aq(&a.x, Some(&attn_norm), h, h, 0, 0));
        ops.push(self.mm(&fused_qkv, &a.qkv, 0));
        let rp = uniform(g, &self.att_p(c.rope_interleaved as usize));
        let pairs = ((c.heads + c.kv_heads) * c.head_dim / 2) as u32;
        let bind = [&bufs.step, &rp, &a.qkv, &bufs.rows, &a.rope, &kc, &vc];
        ops.push(Op::new(g, Kernel::RopeKv, Grid::Threads { per_row: pairs, wg: 64 }, &bind));
        let ap = uniform(g, &self.att_p(self.max_ctx));
        let bind = [&bufs.step, &ap, &a.qkv, &bufs.rows, &kc, &vc, &a.scores, &a.att];
        ops.push(Op::new(g, Kernel::Attention, Grid::Heads { heads: c.heads as u32 }, &bind));
        ops.push(self.aq(&a.att, attn_sub.as_ref(), qd, qd, 0, 0));
        ops.push(self.mm(&o, &a.x, 1));
        ops.push(self.aq(&a.x, Some(&ffn_norm), h, h, 0, 0));
        ops.push(self.mm(&fused_gu, &a.gu, 0));
        ops.push(self.aq(&a.gu, ffn_sub.as_ref(), ffn, 2 * ffn, mode, 0));
        ops.push(self.mm(&down, &a.x, 1));
        Ok(())
    }

    /// The final norm over the gathered wanted rows, then the head chunk by chunk.
    fn head(&self, model: &Model) -> Result<Vec<Op>> {
        let (g, a, h) = (self.g, &self.a, self.c.hidden);
        let head = GpuHead::upload(g, model)?;
        let mut ops = vec![self.aq(&a.x, Some(&a.norm), h, h, 0, 1)];
        for ch in &head.chunks {
            let p = MatP {
                rows: ch.rows as u32,
                kw: head.kw as u32,
                out_stride: self.c.vocab as u32,
                accumulate: 0,
                act_stride: act_stride(h) as u32,
                row_base: ch.first as u32,
                pad: [0; 2],
            };
            let (pb, b) = (uniform(g, &p), self.bufs);
            let bind =
                [&b.head_step, &pb, &ch.w, &ch.scale, &a.act, &a.act_scale, &a.act_sum, &b.logits];
            ops.push(Op::new(g, Kernel::Int8, Grid::Matmul { rows: ch.rows as u32 }, &bind));
        }
        Ok(ops)
    }
}

fn rope_table(c: &ModelConfig, max_ctx: usize) -> Vec<f32> {
    // The same values as the CPU session's per-row table.
    let half = c.head_dim / 2;
    let inv: Vec<f32> =
        (0..half).map(|i| c.rope_theta.powf(-(2.0 * i as f32) / c.head_dim as f32)).collect();
    let mut t = Vec::with_capacity(max_ctx * half * 2);
    for p in 0..max_ctx {
        for &f in &inv {
            let (s, co) = (p as f32 * f).sin_cos();
            t.extend([co, s]);
        }
    }
    t
}

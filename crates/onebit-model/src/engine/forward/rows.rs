//! The row computations of a pass: embeddings in, this model's blocks (RoPE, attention,
//! the FFN) and the final norm and head for the rows whose logits are wanted. Every pass of a
//! [`Session`] (prompt chunks, decode, mixed steps, pipeline stages) runs through these.

use super::rowops::{add_into, gated_par, rmsnorm, rmsnorm_par, sub_norm_quantize};
use super::{LogitRows, Session};
use crate::engine::Layer;
use crate::error::Result;
use onebit_kernels::ActQuant;

impl Session<'_> {
    pub(super) fn kv_base(&self, slot: usize, layer: usize) -> usize {
        (slot * self.model.layers.len() + layer) * self.max_ctx * self.held.kv_dim()
    }

    /// Runs rows described by `row_slot`/`row_pos` through the whole model; logits for the
    /// rows `logits` selects.
    pub(super) fn forward_rows(&mut self, tokens: &[u32], logits: LogitRows<'_>) -> Result<()> {
        self.embed_rows(tokens);
        self.run_layers(tokens.len())?;
        self.head_rows(tokens.len(), logits)
    }

    /// Token embeddings into the rows of `x`.
    pub(super) fn embed_rows(&mut self, tokens: &[u32]) {
        let m = self.model;
        let h = m.config.hidden;
        for (t, &id) in tokens.iter().enumerate() {
            m.embed.row(id as usize, h, &mut self.x[t * h..(t + 1) * h]);
        }
    }

    /// This model's blocks over the first `t_n` rows of `x`, in place.
    pub(super) fn run_layers(&mut self, t_n: usize) -> Result<()> {
        let m = self.model;
        let c = &m.config;
        let half = c.head_dim / 2;
        for t in 0..t_n {
            let p = self.row_pos[t] as f32;
            for i in 0..half {
                let (s, co) = (p * self.inv_freq[i]).sin_cos();
                self.rope[(t * half + i) * 2] = co;
                self.rope[(t * half + i) * 2 + 1] = s;
            }
        }
        for (li, layer) in m.layers.iter().enumerate() {
            if m.tensor.is_some() {
                self.layer_forward_piece(li, layer, t_n)?;
            } else {
                self.layer_forward(li, layer, t_n);
            }
        }
        Ok(())
    }

    /// The final norm and the head, only for the rows whose logits are wanted.
    pub(super) fn head_rows(&mut self, t_n: usize, logits: LogitRows<'_>) -> Result<()> {
        let m = self.model;
        let c = &m.config;
        let h = c.hidden;
        let mut n = 0;
        for t in 0..t_n {
            let wanted = match logits {
                LogitRows::Last => t + 1 == t_n,
                LogitRows::All => true,
                LogitRows::Some(w) => w[t],
            };
            if wanted {
                let (out, x) = (&mut self.xn[n * h..(n + 1) * h], &self.x[t * h..(t + 1) * h]);
                rmsnorm(out, x, &m.norm, c.rms_eps);
                n += 1;
            }
        }
        if n == 0 {
            return Ok(());
        }
        self.aq_hidden.quantize(&self.xn[..n * h]);
        if m.tensor_head {
            return self.head_piece(n);
        }
        m.head_forward(&self.aq_hidden, &self.xn[..n * h], &mut self.logits[..n * c.vocab]);
        Ok(())
    }

    pub(super) fn quantize(aq: &mut ActQuant, x: &[f32], pool: &onebit_kernels::ThreadPool) {
        aq.quantize_par(x, pool);
    }

    /// The attention half of a block up to the attention output in `att` (`t_n` rows of the
    /// query heads held here): norm, int8 quantization, q/k/v, RoPE, KV cache, attention.
    pub(super) fn attend(&mut self, li: usize, l: &Layer, t_n: usize) {
        let m = self.model;
        let c = &m.config;
        let pool = &m.pool;
        let (h, qd, kvd) = (c.hidden, self.held.q_dim(), self.held.kv_dim());
        rmsnorm_par(pool, &mut self.xn[..t_n * h], &self.x[..t_n * h], &l.attn_norm, c.rms_eps);
        Self::quantize(&mut self.aq_hidden, &self.xn[..t_n * h], pool);
        crate::engine::forward_many(
            pool,
            &self.aq_hidden,
            &mut [
                (&l.q, &mut self.q[..t_n * qd]),
                (&l.k, &mut self.k[..t_n * kvd]),
                (&l.v, &mut self.v[..t_n * kvd]),
            ],
        );
        self.apply_rope(t_n);
        for t in 0..t_n {
            let at = self.kv_base(self.row_slot[t], li) + self.row_pos[t] * kvd;
            self.k_cache.write(at, &self.k[t * kvd..(t + 1) * kvd]);
            self.v_cache.write(at, &self.v[t * kvd..(t + 1) * kvd]);
        }
        self.attention(li, t_n);
    }

    pub(super) fn layer_forward(&mut self, li: usize, l: &Layer, t_n: usize) {
        let m = self.model;
        let c = &m.config;
        let pool = &m.pool;
        let (h, qd, ffn) = (c.hidden, c.q_dim(), c.intermediate);
        self.attend(li, l, t_n);
        let (scratch, att) = (&mut self.tmp[..t_n * qd], &self.att[..t_n * qd]);
        let sub = l.attn_sub_norm.as_ref();
        sub_norm_quantize(pool, &mut self.aq_att, scratch, att, sub, c.rms_eps);
        l.o.forward(pool, &self.aq_att, &mut self.tmp[..t_n * h]);
        add_into(&mut self.x[..t_n * h], &self.tmp[..t_n * h]);
        rmsnorm_par(pool, &mut self.xn[..t_n * h], &self.x[..t_n * h], &l.ffn_norm, c.rms_eps);
        Self::quantize(&mut self.aq_hidden, &self.xn[..t_n * h], pool);
        crate::engine::forward_many(
            pool,
            &self.aq_hidden,
            &mut [(&l.gate, &mut self.gate[..t_n * ffn]), (&l.up, &mut self.up[..t_n * ffn])],
        );
        gated_par(pool, &mut self.gate[..t_n * ffn], &self.up[..t_n * ffn], ffn, c.act);
        let (scratch, gated) = (&mut self.up[..t_n * ffn], &self.gate[..t_n * ffn]);
        let sub = l.ffn_sub_norm.as_ref();
        sub_norm_quantize(pool, &mut self.aq_ffn, scratch, gated, sub, c.rms_eps);
        l.down.forward(pool, &self.aq_ffn, &mut self.tmp[..t_n * h]);
        add_into(&mut self.x[..t_n * h], &self.tmp[..t_n * h]);
    }

    pub(super) fn apply_rope(&mut self, t_n: usize) {
        let c = &self.model.config;
        let (hd, half) = (c.head_dim, c.head_dim / 2);
        let interleaved = c.rope_interleaved;
        let rope = &self.rope;
        let rot = |buf: &mut [f32], width: usize| {
            for t in 0..t_n {
                let cs = &rope[t * half * 2..(t + 1) * half * 2];
                for head in buf[t * width..(t + 1) * width].chunks_exact_mut(hd) {
                    for i in 0..half {
                        let (co, s) = (cs[2 * i], cs[2 * i + 1]);
                        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                        let (x0, x1) = (head[a], head[b]);
                        head[a] = x0 * co - x1 * s;
                        head[b] = x0 * s + x1 * co;
                    }
                }
            }
        };
        rot(&mut self.q, self.held.q_dim());
        rot(&mut self.k, self.held.kv_dim());
    }
}

//! Running one recorded node forward: at record time, and again when the backward pass
//! replays a checkpointed block.

use super::{Node, Op, Slot, Tape, Var};
use crate::error::{Error, Result};
use crate::ops::{self, attention::AttnDims};
use crate::params::{ParamId, Params};

impl Tape {
    /// Runs node `i` into its slot; the clip statistics count only first runs, not replays.
    pub(super) fn forward_node(&mut self, i: usize, p: &Params) -> Result<()> {
        let Node { op, rows, cols, .. } = self.nodes[i];
        let me = Var(i);
        let mut s = self.take(me);
        s.out.resize(rows * cols, 0.0);
        s.grad.clear();
        s.grad.resize(rows * cols, 0.0);
        let pool = &self.pool;
        let r = match op {
            Op::Embedding { table } => {
                ops::embedding::embedding_forward(&mut s.out, &self.tokens, p.value(table), cols);
                Ok(())
            }
            Op::RmsNorm { x, w } => {
                s.aux.resize(rows, 0.0);
                ops::rmsnorm::rmsnorm_forward(
                    pool,
                    &mut s.out,
                    &mut s.aux,
                    self.val(x),
                    p.value(w),
                    rows,
                    cols,
                    self.eps,
                );
                Ok(())
            }
            Op::BitLinear { x, w } => self.bitlinear_forward(&mut s, x, w, (rows, cols), p),
            Op::Linear { x, w } => {
                let in_cols = p.info(w).cols;
                ops::linear::linear_forward(
                    pool,
                    &mut s.out,
                    self.val(x),
                    p.value(w),
                    (rows, cols, in_cols),
                );
                Ok(())
            }
            Op::Rope { x, head_dim } => {
                ops::rope::rope_forward(
                    pool,
                    &mut s.out,
                    self.val(x),
                    (cols, head_dim, self.seq),
                    &self.rope,
                    self.rope_interleaved,
                );
                Ok(())
            }
            Op::Attention { q, k, v, heads, kv_heads, head_dim } => {
                let d = AttnDims { batch: self.batch, seq: self.seq, heads, kv_heads, head_dim };
                s.aux.resize(d.probs_len(), 0.0);
                ops::attention::attention_forward(
                    pool,
                    &mut s.out,
                    &mut s.aux,
                    self.val(q),
                    self.val(k),
                    self.val(v),
                    d,
                );
                Ok(())
            }
            Op::Gated { gate, up, act } => {
                ops::act::gated_forward(pool, &mut s.out, self.val(gate), self.val(up), act);
                Ok(())
            }
            Op::Add { a, b } => {
                ops::residual::residual_forward(&mut s.out, self.val(a), self.val(b));
                Ok(())
            }
            Op::CrossEntropy { logits } => {
                let vocab = self.nodes[logits.0].cols;
                s.aux.resize(2 * self.targets.len(), 0.0);
                let mut ls = self.take(logits);
                let (loss, _) = ops::cross_entropy::cross_entropy_forward(
                    &self.pool,
                    &mut s.aux,
                    &mut ls.grad,
                    &ls.out,
                    &self.targets,
                    vocab,
                );
                self.put(logits, ls);
                s.out[0] = loss;
                Ok(())
            }
            Op::BlockOut { x, .. } => {
                s.out.copy_from_slice(self.val(x));
                Ok(())
            }
        };
        self.put(me, s);
        r
    }

    /// Runs a BitLinear node and, on its first run, counts the activations int8 clipped.
    fn bitlinear_forward(
        &mut self,
        s: &mut Slot,
        x: Var,
        w: ParamId,
        (rows, cols): (usize, usize),
        p: &Params,
    ) -> Result<()> {
        let cache = p.ternary(w).expect("checked at push");
        let in_cols = p.info(w).cols;
        let clipped = ops::bitlinear::bitlinear_forward(
            &self.pool,
            &mut s.out,
            &mut s.bl,
            self.val(x),
            cache,
            p.kernel(),
            (rows, cols, in_cols),
        )
        .map_err(Error::Kernel)?;
        if !self.replaying {
            if self.clip.len() < p.infos().len() {
                self.clip.resize(p.infos().len(), (0, 0));
            }
            self.clip[w.0].0 += clipped;
            self.clip[w.0].1 += (rows * in_cols) as u64;
        }
        Ok(())
    }
}

//! The backward pass: nodes in reverse, each op's hand-written backward, checkpointed blocks
//! replayed forward first.

use super::{Node, Op, Slot, Tape, Var};
use crate::error::{Error, Result};
use crate::ops::{self, attention::AttnDims};
use crate::params::Params;

impl Tape {
    /// Accumulates the gradient of the loss (the last [`Tape::cross_entropy`]) into the
    /// parameters' gradients. Call [`Params::zero_grads`] before the first micro-batch.
    pub fn backward(&mut self, p: &mut Params) -> Result<()> {
        let Some(l) = self.loss_node else {
            return Err(Error::Config("backward without a cross_entropy loss on the tape".into()));
        };
        self.slot_mut(self.nodes[l].slot).grad[0] = 1.0;
        for i in (0..=l).rev() {
            self.backward_node(i, p)?;
        }
        Ok(())
    }

    fn backward_node(&mut self, i: usize, p: &mut Params) -> Result<()> {
        let Node { op, rows, cols, .. } = self.nodes[i];
        let me = Var(i);
        if let Op::BlockOut { start, .. } = op {
            self.replaying = true;
            for j in start..i {
                if let Err(e) = self.forward_node(j, p) {
                    self.replaying = false;
                    return Err(e);
                }
            }
            self.replaying = false;
        }
        // Checked before any slot is taken, so that an error leaves the tape whole.
        match op {
            Op::Attention { q, k, v, .. } if q == k || k == v || q == v => {
                return Err(Error::Config("attention needs distinct q, k and v tensors".into()));
            }
            Op::Gated { gate, up, .. } if gate == up => {
                return Err(Error::Config("gated needs distinct gate and up tensors".into()));
            }
            _ => {}
        }
        let mut s = self.take(me);
        match op {
            Op::Embedding { table } => {
                ops::embedding::embedding_backward(p.grad_mut(table), &s.grad, &self.tokens, cols);
            }
            Op::RmsNorm { x, .. }
            | Op::BitLinear { x, .. }
            | Op::Linear { x, .. }
            | Op::Rope { x, .. }
            | Op::BlockOut { x, .. } => {
                if let Err(e) = self.unary_backward(&mut s, op, x, (rows, cols), p) {
                    self.put(me, s);
                    return Err(e);
                }
            }
            Op::Attention { q, k, v, heads, kv_heads, head_dim } => {
                let d = AttnDims { batch: self.batch, seq: self.seq, heads, kv_heads, head_dim };
                self.attention_backward(&mut s, (q, k, v), d);
            }
            Op::Gated { gate, up, act } => {
                let (mut gs, mut us) = (self.take(gate), self.take(up));
                ops::act::gated_backward(
                    &self.pool,
                    &mut gs.grad,
                    &mut us.grad,
                    &s.grad,
                    &gs.out,
                    &us.out,
                    act,
                );
                self.put(gate, gs);
                self.put(up, us);
            }
            Op::Add { a, b } => {
                if a == b {
                    let mut a_s = self.take(a);
                    ops::residual::accumulate(&mut a_s.grad, &s.grad);
                    ops::residual::accumulate(&mut a_s.grad, &s.grad);
                    self.put(a, a_s);
                } else {
                    let (mut a_s, mut b_s) = (self.take(a), self.take(b));
                    ops::residual::residual_backward(&mut a_s.grad, &mut b_s.grad, &s.grad);
                    self.put(a, a_s);
                    self.put(b, b_s);
                }
            }
            Op::CrossEntropy { logits } => {
                let mut ls = self.take(logits);
                let vocab = self.nodes[logits.0].cols;
                let n = self.targets.iter().filter(|&&t| t != ops::cross_entropy::IGNORE).count();
                let scale = s.grad[0] / n.max(1) as f32;
                ops::cross_entropy::cross_entropy_backward(
                    &self.pool,
                    &mut ls.grad,
                    &s.aux,
                    &self.targets,
                    vocab,
                    scale,
                );
                self.put(logits, ls);
            }
        }
        self.put(me, s);
        Ok(())
    }

    /// The ops with one input: its slot is taken once and gets the op's input gradient.
    fn unary_backward(
        &mut self,
        s: &mut Slot,
        op: Op,
        x: Var,
        (rows, cols): (usize, usize),
        p: &mut Params,
    ) -> Result<()> {
        let mut xs = self.take(x);
        let pool = &self.pool;
        let r = match op {
            Op::RmsNorm { w, .. } => {
                let (wv, dw) = p.value_and_grad(w);
                ops::rmsnorm::rmsnorm_backward(
                    pool,
                    &mut xs.grad,
                    dw,
                    &s.grad,
                    &xs.out,
                    wv,
                    &s.aux,
                    rows,
                    cols,
                );
                Ok(())
            }
            Op::BitLinear { w, .. } => {
                let in_cols = p.info(w).cols;
                let kernel = *p.kernel();
                let (cache, dw) = p.ternary_and_grad(w);
                let cache = cache.expect("checked at push");
                ops::bitlinear::bitlinear_backward(
                    pool,
                    Some(&mut xs.grad),
                    dw,
                    &s.grad,
                    &mut s.bl,
                    cache,
                    &kernel,
                    (rows, cols, in_cols),
                )
                .map_err(Error::Kernel)
            }
            Op::Linear { w, .. } => {
                // The weight may be the embedding table (tied head): value and gradient are
                // still disjoint buffers.
                let in_cols = p.info(w).cols;
                let (wv, dw) = p.value_and_grad(w);
                let dims = (rows, cols, in_cols);
                ops::linear::linear_backward(
                    pool,
                    Some(&mut xs.grad),
                    dw,
                    &s.grad,
                    &xs.out,
                    wv,
                    dims,
                );
                Ok(())
            }
            Op::Rope { head_dim, .. } => {
                let dims = (cols, head_dim, self.seq);
                let interleaved = self.rope_interleaved;
                ops::rope::rope_backward(
                    pool,
                    &mut xs.grad,
                    &s.grad,
                    dims,
                    &self.rope,
                    interleaved,
                );
                Ok(())
            }
            _ => {
                ops::residual::accumulate(&mut xs.grad, &s.grad);
                Ok(())
            }
        };
        self.put(x, xs);
        r
    }

    fn attention_backward(&mut self, s: &mut Slot, (q, k, v): (Var, Var, Var), d: AttnDims) {
        let (mut qs, mut ks, mut vs) = (self.take(q), self.take(k), self.take(v));
        let mut scratch = std::mem::take(&mut self.attn_scratch);
        ops::attention::attention_backward(
            &self.pool,
            &mut qs.grad,
            &mut ks.grad,
            &mut vs.grad,
            &mut s.aux,
            &mut scratch[..d.batch * d.seq * d.seq],
            &s.grad,
            &qs.out,
            &ks.out,
            &vs.out,
            d,
        );
        self.attn_scratch = scratch;
        self.put(q, qs);
        self.put(k, ks);
        self.put(v, vs);
    }
}

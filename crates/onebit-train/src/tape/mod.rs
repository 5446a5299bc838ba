//! [`Tape`]: a reverse-mode tape over the coarse fused ops of [`crate::ops`]. A model's
//! forward pass calls the tape's op methods, which run the op at once and record it; then
//! [`Tape::backward`] walks the records in reverse and calls each op's hand-written backward.
//! New architectures are compositions of these calls and need no backward of their own.
//!
//! The tape is rebuilt every step but keeps its buffers: node `i` of a step writes into the
//! same slot as node `i` of the previous step, so after the first step nothing is allocated.
//!
//! Gradient checkpointing: between [`Tape::begin_block`] and [`Tape::end_block`] nodes write
//! into scratch slots shared by every block, so only block outputs stay alive. The backward
//! pass replays a block's recorded ops forward (the records are the recompute program) just
//! before running the block's backward.

use crate::error::{Error, Result};
use crate::ops::{self, bitlinear::BitLinearSaved};
use crate::params::{ParamId, ParamKind, Params};
use onebit_kernels::ThreadPool;
use onebit_model::config::Activation;

mod backward;
mod forward;

/// A tensor on the tape (the output of one recorded op).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

#[derive(Clone, Copy, Debug)]
enum Op {
    Embedding { table: ParamId },
    RmsNorm { x: Var, w: ParamId },
    BitLinear { x: Var, w: ParamId },
    Linear { x: Var, w: ParamId },
    Rope { x: Var, head_dim: usize },
    Attention { q: Var, k: Var, v: Var, heads: usize, kv_heads: usize, head_dim: usize },
    Gated { gate: Var, up: Var, act: Activation },
    Add { a: Var, b: Var },
    CrossEntropy { logits: Var },
    BlockOut { x: Var, start: usize },
}

#[derive(Clone, Copy, Debug)]
enum SlotRef {
    Own(usize),
    Scratch(usize),
}

#[derive(Clone, Copy, Debug)]
struct Node {
    op: Op,
    rows: usize,
    cols: usize,
    slot: SlotRef,
}

/// Storage of one node: output, gradient and what its backward needs.
#[derive(Debug, Default)]
struct Slot {
    out: Vec<f32>,
    grad: Vec<f32>,
    aux: Vec<f32>,
    bl: BitLinearSaved,
}

/// Per-BitLinear activation clipping counts since the last [`Tape::take_clip_stats`].
pub type ClipStats = Vec<(u64, u64)>;

/// The recorded ops of one step and the buffers they reuse.
pub struct Tape {
    pool: ThreadPool,
    nodes: Vec<Node>,
    own: Vec<Slot>,
    scratch: Vec<Slot>,
    n_own: usize,
    block_start: Option<usize>,
    checkpointing: bool,
    replaying: bool,
    batch: usize,
    seq: usize,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    rope: Vec<f32>,
    rope_key: (usize, usize, u32),
    rope_interleaved: bool,
    rope_theta: f32,
    eps: f32,
    attn_scratch: Vec<f32>,
    clip: ClipStats,
    loss_node: Option<usize>,
}

impl Tape {
    /// A tape whose ops run on `threads` threads.
    pub fn new(threads: usize) -> Self {
        Tape {
            pool: ThreadPool::new(threads),
            nodes: Vec::new(),
            own: Vec::new(),
            scratch: Vec::new(),
            n_own: 0,
            block_start: None,
            checkpointing: false,
            replaying: false,
            batch: 0,
            seq: 0,
            tokens: Vec::new(),
            targets: Vec::new(),
            rope: Vec::new(),
            rope_key: (0, 0, 0),
            rope_interleaved: false,
            rope_theta: 10_000.0,
            eps: 1e-5,
            attn_scratch: Vec::new(),
            clip: Vec::new(),
            loss_node: None,
        }
    }

    /// The thread pool the ops run on.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Recompute blocks in the backward pass instead of keeping their activations.
    pub fn set_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// RMSNorm epsilon and RoPE settings for the ops that follow.
    pub fn set_model_constants(&mut self, eps: f32, rope_theta: f32, rope_interleaved: bool) {
        self.eps = eps;
        self.rope_theta = rope_theta;
        self.rope_interleaved = rope_interleaved;
    }

    /// Starts a step on `batch` sequences of `seq` tokens (`tokens` and `targets` are
    /// `batch · seq` long, targets may be [`ops::cross_entropy::IGNORE`]); `vocab` bounds the ids.
    pub fn reset(
        &mut self,
        batch: usize,
        seq: usize,
        tokens: &[u32],
        targets: &[u32],
        vocab: usize,
    ) -> Result<()> {
        let n = batch * seq;
        if batch == 0 || seq == 0 || tokens.len() != n || targets.len() != n {
            return Err(Error::Config(format!(
                "a step needs batch·seq = {n} tokens and targets, got {} and {}",
                tokens.len(),
                targets.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Data(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        if let Some(&bad) =
            targets.iter().find(|&&t| t != ops::cross_entropy::IGNORE && t as usize >= vocab)
        {
            return Err(Error::Data(format!(
                "target id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        self.nodes.clear();
        self.n_own = 0;
        self.block_start = None;
        self.loss_node = None;
        self.batch = batch;
        self.seq = seq;
        self.tokens.clear();
        self.tokens.extend_from_slice(tokens);
        self.targets.clear();
        self.targets.extend_from_slice(targets);
        Ok(())
    }

    /// Rows (tokens) of this step.
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// The values of `v` (`rows × cols`, row-major).
    pub fn value(&self, v: Var) -> &[f32] {
        &self.slot(self.nodes[v.0].slot).out
    }

    /// The gradient of `v` after [`Tape::backward`] (for tests; zero-filled for nodes whose
    /// block was recomputed under checkpointing).
    pub fn grad(&self, v: Var) -> &[f32] {
        &self.slot(self.nodes[v.0].slot).grad
    }

    /// (rows, cols) of `v`.
    pub fn shape(&self, v: Var) -> (usize, usize) {
        let n = &self.nodes[v.0];
        (n.rows, n.cols)
    }

    /// Activation clipping counts per parameter (clipped, total) since the last call.
    pub fn take_clip_stats(&mut self) -> ClipStats {
        let out = self.clip.clone();
        self.clip.iter_mut().for_each(|c| *c = (0, 0));
        out
    }

    // ---- ops -------------------------------------------------------------------------------

    /// Token embeddings of this step's tokens (`rows × hidden`).
    pub fn embedding(&mut self, p: &Params, table: ParamId) -> Result<Var> {
        let cols = p.info(table).cols;
        self.push(p, Op::Embedding { table }, self.rows(), cols)
    }

    /// RMSNorm of `x` with gain `w`.
    pub fn rmsnorm(&mut self, p: &Params, x: Var, w: ParamId) -> Result<Var> {
        let (rows, cols) = self.shape(x);
        self.expect(p.info(w).len() == cols, "rmsnorm gain length", cols, p.info(w).len())?;
        self.push(p, Op::RmsNorm { x, w }, rows, cols)
    }

    /// BitLinear `x · ternary(W)ᵀ` with int8 activations.
    pub fn bitlinear(&mut self, p: &Params, x: Var, w: ParamId) -> Result<Var> {
        let (rows, cols) = self.shape(x);
        let info = p.info(w);
        if info.kind != ParamKind::Ternary {
            return Err(Error::Config(format!(
                "bitlinear on '{}', which is not a ternary parameter",
                info.name
            )));
        }
        self.expect(info.cols == cols, "bitlinear input width", info.cols, cols)?;
        self.push(p, Op::BitLinear { x, w }, rows, info.rows)
    }

    /// Dense `x · Wᵀ`.
    pub fn linear(&mut self, p: &Params, x: Var, w: ParamId) -> Result<Var> {
        let (rows, cols) = self.shape(x);
        let info = p.info(w);
        self.expect(info.cols == cols, "linear input width", info.cols, cols)?;
        self.push(p, Op::Linear { x, w }, rows, info.rows)
    }

    /// Rotary embedding of `x` split in heads of `head_dim`.
    pub fn rope(&mut self, p: &Params, x: Var, head_dim: usize) -> Result<Var> {
        let (rows, cols) = self.shape(x);
        if head_dim == 0 || !head_dim.is_multiple_of(2) || !cols.is_multiple_of(head_dim) {
            return Err(Error::Config(format!(
                "rope: head_dim {head_dim} does not split width {cols} in even heads"
            )));
        }
        let key = (self.seq, head_dim, self.rope_theta.to_bits());
        if self.rope_key != key {
            self.rope = ops::rope::rope_table(self.seq, head_dim, self.rope_theta);
            self.rope_key = key;
        }
        self.push(p, Op::Rope { x, head_dim }, rows, cols)
    }

    /// Causal attention with `heads` query heads over `kv_heads` key/value heads.
    pub fn attention(
        &mut self,
        p: &Params,
        q: Var,
        k: Var,
        v: Var,
        heads: usize,
        kv_heads: usize,
    ) -> Result<Var> {
        let ((rows, qd), (_, kvd)) = (self.shape(q), self.shape(k));
        if heads == 0
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || !qd.is_multiple_of(heads)
        {
            return Err(Error::Config(format!(
                "attention: {heads} heads over {kv_heads} kv heads, width {qd}"
            )));
        }
        let head_dim = qd / heads;
        self.expect(kvd == kv_heads * head_dim, "attention k width", kv_heads * head_dim, kvd)?;
        self.expect(self.shape(v) == (rows, kvd), "attention v width", kvd, self.shape(v).1)?;
        let need = self.batch * self.seq * self.seq;
        if self.attn_scratch.len() < need {
            self.attn_scratch.resize(need, 0.0);
        }
        self.push(p, Op::Attention { q, k, v, heads, kv_heads, head_dim }, rows, qd)
    }

    /// `act(gate) · up`.
    pub fn gated(&mut self, p: &Params, gate: Var, up: Var, act: Activation) -> Result<Var> {
        let s = self.shape(gate);
        self.expect(self.shape(up) == s, "gated up width", s.1, self.shape(up).1)?;
        self.push(p, Op::Gated { gate, up, act }, s.0, s.1)
    }

    /// `a + b`.
    pub fn add(&mut self, p: &Params, a: Var, b: Var) -> Result<Var> {
        let s = self.shape(a);
        self.expect(self.shape(b) == s, "add width", s.1, self.shape(b).1)?;
        self.push(p, Op::Add { a, b }, s.0, s.1)
    }

    /// Mean cross-entropy of `logits` against this step's targets (a 1 × 1 value).
    pub fn cross_entropy(&mut self, p: &Params, logits: Var) -> Result<Var> {
        let v = self.push(p, Op::CrossEntropy { logits }, 1, 1)?;
        self.loss_node = Some(v.0);
        Ok(v)
    }

    /// Starts a block whose activations are recomputed in the backward when checkpointing.
    pub fn begin_block(&mut self) {
        if self.checkpointing {
            self.block_start = Some(self.nodes.len());
        }
    }

    /// Ends the block started by [`Tape::begin_block`]; `x` is its output.
    pub fn end_block(&mut self, p: &Params, x: Var) -> Result<Var> {
        let Some(start) = self.block_start.take() else { return Ok(x) };
        let (rows, cols) = self.shape(x);
        self.push(p, Op::BlockOut { x, start }, rows, cols)
    }

    fn expect(&self, ok: bool, what: &str, expected: usize, found: usize) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!("{what}: expected {expected}, found {found}")))
        }
    }

    fn push(&mut self, p: &Params, op: Op, rows: usize, cols: usize) -> Result<Var> {
        let i = self.nodes.len();
        let slot = match (self.block_start, op) {
            (Some(start), _) => SlotRef::Scratch(i - start),
            _ => {
                self.n_own += 1;
                SlotRef::Own(self.n_own - 1)
            }
        };
        let grow = |v: &mut Vec<Slot>, j: usize| {
            if v.len() <= j {
                v.resize_with(j + 1, Slot::default);
            }
        };
        match slot {
            SlotRef::Own(j) => grow(&mut self.own, j),
            SlotRef::Scratch(j) => grow(&mut self.scratch, j),
        }
        self.nodes.push(Node { op, rows, cols, slot });
        self.forward_node(i, p)?;
        Ok(Var(i))
    }

    fn slot(&self, s: SlotRef) -> &Slot {
        match s {
            SlotRef::Own(j) => &self.own[j],
            SlotRef::Scratch(j) => &self.scratch[j],
        }
    }

    fn slot_mut(&mut self, s: SlotRef) -> &mut Slot {
        match s {
            SlotRef::Own(j) => &mut self.own[j],
            SlotRef::Scratch(j) => &mut self.scratch[j],
        }
    }

    fn take(&mut self, v: Var) -> Slot {
        std::mem::take(self.slot_mut(self.nodes[v.0].slot))
    }

    fn put(&mut self, v: Var, s: Slot) {
        *self.slot_mut(self.nodes[v.0].slot) = s;
    }

    fn val(&self, v: Var) -> &[f32] {
        &self.slot(self.nodes[v.0].slot).out
    }
}

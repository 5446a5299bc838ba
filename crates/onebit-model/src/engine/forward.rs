//! [`Session`]: the KV caches and activation buffers of one or several sequences (slots), and
//! the forward pass. Prompts go through in chunks of up to `max_batch` tokens of one slot
//! (GEMM kernels); decode is the same code with one token (GEMV kernels), and
//! [`Session::decode`] advances several slots by one token each in a single pass, so the
//! weights are read once for the whole batch (what continuous batching builds on). Every row
//! carries its own (slot, position). Everything is sized in [`Session::with_slots`].

mod attention;
mod rowops;
mod rows;
mod stage;
mod tensor_rows;

pub use stage::StageInput;

use super::kv_cache::{KvDtype, KvStore};
use super::{Draw, Model, ShardExchange, DEVICE_TOP_K};
use crate::error::{Error, Result};
use onebit_kernels::ActQuant;
use tensor_rows::Held;

/// Prompt chunks of at least this many tokens take the blocked (GEMM) attention path.
pub const BLOCKED_ATTENTION_MIN: usize = 16;
use std::sync::Mutex;

/// Sequences' state: positions, KV caches (f32), and scratch for up to `max_batch` rows.
pub struct Session<'m> {
    model: &'m Model,
    pos: Vec<usize>,
    row_slot: Vec<usize>,
    row_pos: Vec<usize>,
    max_ctx: usize,
    max_batch: usize,
    k_cache: KvStore,
    v_cache: KvStore,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    att_by_head: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    rope: Vec<f32>,
    inv_freq: Vec<f32>,
    aq_hidden: ActQuant,
    aq_att: ActQuant,
    aq_ffn: ActQuant,
    scores: Vec<Mutex<Scratch>>,
    logits: Vec<f32>,
    held: Held,
    exchange: Option<Box<dyn ShardExchange + 'm>>,
    wide: Vec<f32>,
    piece: Vec<f32>,
    /// A summed block's per-row sums of squares: this node's, then every node's.
    sums: Vec<f32>,
    /// A pass of [`Session::decode_top`]: while it runs, a tensor-parallel piece sends its
    /// candidates, not its rows of logits.
    pick: Picks,
}

/// Refuses draws [`Session::decode_top`] cannot follow, before any row runs (so every node
/// of a mesh refuses alike): one per row or none, each keeping 1 to [`DEVICE_TOP_K`]
/// candidates and penalizing tokens within `penalized`.
fn check_draws(rows: usize, draws: &[Draw], penalized: &[u32]) -> Result<()> {
    let bad = |why: String| Err(Error::Batch { op: "decode_top", why });
    if !draws.is_empty() && draws.len() != rows {
        return bad(format!("{} draws for {rows} rows", draws.len()));
    }
    for d in draws {
        if !(1..=DEVICE_TOP_K as u32).contains(&d.top_k) {
            return bad(format!("top-k {} (1 to {DEVICE_TOP_K})", d.top_k));
        }
        if d.hist_start as u64 + d.hist_len as u64 > penalized.len() as u64 {
            return bad(format!(
                "penalized tokens {}..+{} of {}",
                d.hist_start,
                d.hist_len,
                penalized.len()
            ));
        }
    }
    Ok(())
}

/// The state of a [`Session::decode_top`] pass, its buffers kept between passes.
#[derive(Default)]
struct Picks {
    /// Set while the pass runs.
    on: bool,
    /// The pass's draws (none: greedy) and penalized tokens.
    draws: Vec<Draw>,
    penalized: Vec<u32>,
    /// Candidates per row.
    ks: Vec<usize>,
    /// This node's candidates; on rank 0, every node's.
    mine: Vec<(f32, u32)>,
    all: Vec<(f32, u32)>,
    /// Top-k scratch.
    idx: Vec<u32>,
}

/// Which rows of a pass get logits (the head costs as much as a large linear per row).
#[derive(Clone, Copy)]
enum LogitRows<'a> {
    /// The last row.
    Last,
    /// Every row.
    All,
    /// The rows marked true.
    Some(&'a [bool]),
}

/// A consumer of the logits after each prompt row: (row index, logits).
type RowLogits<'a> = &'a mut dyn FnMut(usize, &[f32]);

/// Per-thread attention scratch: scores, and K/V rows widened from an f16 cache.
struct Scratch {
    s: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// How a [`Session`] is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Positions per sequence.
    pub max_ctx: usize,
    /// Rows per forward pass (prompt chunk or decode batch).
    pub max_batch: usize,
    /// Independent sequences.
    pub slots: usize,
    /// KV cache element type.
    pub kv: KvDtype,
}

impl SessionOptions {
    /// Bytes a session sized by these options allocates for `c` (KV caches, activation and
    /// attention buffers, logits), saturating rather than overflowing for absurd sizes.
    pub fn memory_bytes(&self, c: &crate::config::ModelConfig) -> u64 {
        let m = |a: u64, b: u64| a.saturating_mul(b);
        let ctx = self.max_ctx.min(c.max_positions).max(1) as u64;
        let slots = self.slots.max(1) as u64;
        let b = self.max_batch.max(self.slots) as u64;
        let kv_values = m(m(m(slots, c.layers as u64), ctx), c.kv_dim() as u64);
        let kv_bytes = match self.kv {
            KvDtype::F32 => m(kv_values, 8),
            KvDtype::F16 => m(kv_values, 4),
            KvDtype::Q8 => m(kv_values, 9) / 4,
        };
        let (h, qd, kvd, f) =
            (c.hidden as u64, c.q_dim() as u64, c.kv_dim() as u64, c.intermediate as u64);
        let rows = m(b, 4 * h + 3 * qd + 2 * kvd + 2 * f) * 4;
        let scores = m(m(ctx, b.max((c.heads / c.kv_heads.max(1)) as u64)), 4 * 4);
        kv_bytes
            .saturating_add(rows)
            .saturating_add(scores)
            .saturating_add(m(slots, c.vocab as u64) * 4)
    }
}

impl<'m> Session<'m> {
    /// A session with room for `max_ctx` positions and prompt chunks of `max_batch` tokens.
    pub fn new(model: &'m Model, max_ctx: usize, max_batch: usize) -> Self {
        Self::with_slots(model, max_ctx, max_batch, 1)
    }

    /// A session of `slots` independent sequences of up to `max_ctx` positions each; chunks
    /// and decode batches hold up to `max_batch` rows (at least `slots`).
    pub fn with_slots(model: &'m Model, max_ctx: usize, max_batch: usize, slots: usize) -> Self {
        Self::with_options(model, SessionOptions { max_ctx, max_batch, slots, kv: KvDtype::F32 })
    }

    /// A session sized by `o`, after checking its buffers fit in available memory (a clear
    /// "needs N GB" error instead of an allocation failure that aborts the process).
    pub fn try_with_options(model: &'m Model, o: SessionOptions) -> Result<Self> {
        // A pipeline stage caches only its own blocks.
        let c = crate::config::ModelConfig { layers: model.layers.len(), ..model.config.clone() };
        onebit_kernels::machine::check_memory(
            "this session's KV cache and buffers",
            o.memory_bytes(&c),
        )
        .map_err(Error::Config)?;
        Ok(Self::with_options(model, o))
    }

    /// A session sized by `o`.
    pub fn with_options(model: &'m Model, o: SessionOptions) -> Self {
        let (max_ctx, max_batch, slots) = (o.max_ctx, o.max_batch, o.slots);
        let c = &model.config;
        let layers = model.layers.len();
        let max_ctx = max_ctx.min(c.max_positions).max(1);
        let slots = slots.max(1);
        let b = max_batch.max(slots);
        let half = c.head_dim / 2;
        let inv_freq =
            (0..half).map(|i| c.rope_theta.powf(-(2.0 * i as f32) / c.head_dim as f32)).collect();
        let held = Held::new(model);
        let kvd = held.kv_heads * c.head_dim;
        let (wide, piece) = match &model.tensor {
            Some(t) => (
                vec![0.0; b * c.q_dim().max(c.intermediate).max(c.hidden)],
                vec![
                    0.0;
                    if model.tensor_head { slots * t.split.vocab_range(t.rank).len() } else { 0 }
                ],
            ),
            None => (Vec::new(), Vec::new()),
        };
        Session {
            model,
            pos: vec![0; slots],
            row_slot: vec![0; b],
            row_pos: vec![0; b],
            max_ctx,
            max_batch: b,
            k_cache: KvStore::new(o.kv, slots * layers * max_ctx * kvd, c.head_dim),
            v_cache: KvStore::new(o.kv, slots * layers * max_ctx * kvd, c.head_dim),
            x: vec![0.0; b * c.hidden],
            xn: vec![0.0; b * c.hidden],
            q: vec![0.0; b * c.q_dim()],
            k: vec![0.0; b * c.kv_dim()],
            v: vec![0.0; b * c.kv_dim()],
            att: vec![0.0; b * c.q_dim()],
            att_by_head: vec![0.0; b * c.q_dim()],
            tmp: vec![0.0; b * c.hidden],
            gate: vec![0.0; b * c.intermediate],
            up: vec![0.0; b * c.intermediate],
            rope: vec![0.0; b * half * 2],
            inv_freq,
            aq_hidden: ActQuant::new(b, c.hidden),
            // A node summing `o` and `down` quantizes only its own columns of their input.
            aq_att: ActQuant::new(b, if held.sums { held.q_dim() } else { c.q_dim() }),
            aq_ffn: ActQuant::new(b, if held.sums { held.ffn } else { c.intermediate }),
            scores: (0..model.pool.threads())
                .map(|_| {
                    let kv = if o.kv == KvDtype::F32 { 0 } else { max_ctx * c.head_dim };
                    Mutex::new(Scratch {
                        s: vec![0.0; max_ctx * b.max(c.heads / c.kv_heads)],
                        k: vec![0.0; kv],
                        v: vec![0.0; kv],
                    })
                })
                .collect(),
            logits: vec![0.0; slots * c.vocab],
            held,
            exchange: None,
            wide,
            piece,
            sums: vec![0.0; 2 * b],
            pick: Picks::default(),
        }
    }

    /// Joins this session to the other nodes of a tensor-parallel mesh: every block's pieces
    /// meet through `exchange` (the model must be a [`crate::engine::TensorPart`] piece).
    pub fn set_exchange(&mut self, exchange: Box<dyn ShardExchange + 'm>) {
        self.exchange = Some(exchange);
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens processed so far (slot 0).
    pub fn position(&self) -> usize {
        self.pos[0]
    }

    /// Tokens processed so far in `slot`.
    pub fn position_of(&self, slot: usize) -> Result<usize> {
        self.check_slot(slot)?;
        Ok(self.pos[slot])
    }

    /// Number of sequence slots.
    pub fn slots(&self) -> usize {
        self.pos.len()
    }

    /// Rows per forward pass (prompt chunk or decode batch).
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Context capacity.
    pub fn capacity(&self) -> usize {
        self.max_ctx
    }

    /// Forgets every sequence (keeps the buffers).
    pub fn reset(&mut self) {
        self.pos.fill(0);
    }

    /// Forgets the sequence in `slot`.
    pub fn reset_slot(&mut self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        self.pos[slot] = 0;
        Ok(())
    }

    /// Keeps only the first `len` positions of `slot` (the rest of its cache is overwritten by
    /// what comes next): a new request that shares a prefix with what the slot holds reuses
    /// that much of the cache.
    pub fn truncate_slot(&mut self, slot: usize, len: usize) -> Result<()> {
        self.check_slot(slot)?;
        self.pos[slot] = self.pos[slot].min(len);
        Ok(())
    }

    /// Runs `tokens` at the next positions of slot 0 and returns the logits after the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<&mut [f32]> {
        self.forward_slot(0, tokens)
    }

    /// Runs `tokens` at the next positions of `slot`; returns the logits after the last one.
    pub fn forward_slot(&mut self, slot: usize, tokens: &[u32]) -> Result<&mut [f32]> {
        self.prefill(slot, tokens, None)?;
        Ok(&mut self.logits[..self.model.config.vocab])
    }

    /// Runs `tokens` at the next positions of `slot` and hands the logits after every token to
    /// `each(index, logits)` (perplexity scores every position). The first call grows the
    /// logits buffer to a whole chunk; decode never needs that.
    pub fn forward_each(
        &mut self,
        slot: usize,
        tokens: &[u32],
        each: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let rows = self.max_batch * self.model.config.vocab;
        if self.logits.len() < rows {
            self.logits.resize(rows, 0.0);
        }
        self.prefill(slot, tokens, Some(each))
    }

    /// Prompt tokens of one slot in chunks of `max_batch` rows; logits for every row when
    /// `each` wants them, else after the last.
    fn prefill(
        &mut self,
        slot: usize,
        tokens: &[u32],
        mut each: Option<RowLogits<'_>>,
    ) -> Result<()> {
        let vocab = self.model.config.vocab;
        self.check_whole("forward")?;
        self.check_tokens(tokens)?;
        self.check_slot(slot)?;
        if self.pos[slot] + tokens.len() > self.max_ctx {
            return Err(Error::ContextFull {
                needed: self.pos[slot] + tokens.len(),
                max: self.max_ctx,
            });
        }
        let mut done = 0;
        for chunk in tokens.chunks(self.max_batch) {
            for t in 0..chunk.len() {
                self.row_slot[t] = slot;
                self.row_pos[t] = self.pos[slot] + t;
            }
            self.forward_rows(
                chunk,
                if each.is_some() { LogitRows::All } else { LogitRows::Last },
            )?;
            self.pos[slot] += chunk.len();
            if let Some(f) = each.as_mut() {
                for (t, row) in self.logits[..chunk.len() * vocab].chunks_exact(vocab).enumerate() {
                    f(done + t, row);
                }
            }
            done += chunk.len();
        }
        Ok(())
    }

    /// Gives row `i` slot `slots[i]` at that slot's next free position (a slot may take several
    /// rows, in order), or fails if a slot is unknown or would overflow its context.
    fn place_rows(&mut self, slots: &[usize]) -> Result<()> {
        for (i, &s) in slots.iter().enumerate() {
            self.check_slot(s)?;
            let p = self.pos[s] + slots[..i].iter().filter(|&&o| o == s).count();
            if p >= self.max_ctx {
                return Err(Error::ContextFull { needed: p + 1, max: self.max_ctx });
            }
            self.row_slot[i] = s;
            self.row_pos[i] = p;
        }
        Ok(())
    }

    /// Refuses whole-model calls on a pipeline stage (which has no embeddings, head or all
    /// its blocks: it runs through [`Session::stage`]).
    fn check_whole(&self, op: &'static str) -> Result<()> {
        let m = self.model;
        if m.is_whole() {
            return Ok(());
        }
        Err(Error::Batch {
            op,
            why: format!(
                "this model holds blocks {}..{} of {}{} (a pipeline stage): use Session::stage",
                m.first_layer,
                m.first_layer + m.layers.len(),
                m.config.layers,
                if m.has_ends() { "" } else { " and no head" }
            ),
        })
    }

    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.pos.len() {
            return Err(Error::Slot { slot, slots: self.pos.len() });
        }
        Ok(())
    }

    /// One decode step for several sequences at once: `tokens[i]` goes to slot `slots[i]`
    /// (distinct slots). Returns the logits, one row of `vocab` per token, in order.
    pub fn decode(&mut self, tokens: &[u32], slots: &[usize]) -> Result<&mut [f32]> {
        let vocab = self.model.config.vocab;
        self.check_whole("decode")?;
        self.check_tokens(tokens)?;
        let n = tokens.len();
        if slots.len() != n || n > self.pos.len() {
            return Err(Error::Batch {
                op: "decode",
                why: format!(
                    "{n} tokens for {} slots (session has {})",
                    slots.len(),
                    self.pos.len()
                ),
            });
        }
        for (i, &s) in slots.iter().enumerate() {
            self.check_slot(s)?;
            if slots[..i].contains(&s) {
                return Err(Error::Batch { op: "decode", why: format!("slot {s} is repeated") });
            }
            if self.pos[s] + 1 > self.max_ctx {
                return Err(Error::ContextFull { needed: self.pos[s] + 1, max: self.max_ctx });
            }
            self.row_slot[i] = s;
            self.row_pos[i] = self.pos[s];
        }
        if n > 0 {
            self.forward_rows(tokens, LogitRows::All)?;
        }
        for &s in slots {
            self.pos[s] += 1;
        }
        Ok(&mut self.logits[..n * vocab])
    }

    /// [`Session::decode`] keeping only each row's greedy token ([`crate::argmax`]) in `ids`.
    /// On a tensor-parallel mesh each node picks over its own rows of the output head and
    /// only the picks travel to rank 0 (8 bytes a row instead of the row's logits).
    pub fn decode_argmax(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        ids: &mut Vec<u32>,
    ) -> Result<()> {
        let mut cands = std::mem::take(&mut self.pick.all);
        let r = self.decode_top(tokens, slots, &[], &[], &mut cands);
        ids.clear();
        ids.extend(cands.iter().map(|c| c.1));
        self.pick.all = cands;
        r
    }

    /// [`Session::decode`] keeping only each row's candidates, for a pick on the host
    /// ([`crate::Sampler::pick_among`]): with `draws` (one per row, drawn into `penalized`),
    /// row `i`'s first `draws[i].top_k` tokens in the candidates' order after its repetition
    /// penalty, as [`crate::Sampler::pick`] finds them; with no draws, each row's greedy
    /// token alone ([`crate::argmax`]). Written into `out` as (logit, token), row after row,
    /// on rank 0 of a tensor-parallel mesh (whose nodes each send only their candidates, not
    /// their rows of logits) or a whole model.
    pub fn decode_top(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        draws: &[Draw],
        penalized: &[u32],
        out: &mut Vec<(f32, u32)>,
    ) -> Result<()> {
        let vocab = self.model.config.vocab;
        check_draws(tokens.len(), draws, penalized)?;
        out.clear();
        if self.model.tensor_head {
            let p = &mut self.pick;
            p.draws.clear();
            p.draws.extend_from_slice(draws);
            p.penalized.clear();
            p.penalized.extend_from_slice(penalized);
            p.on = true;
            let r = self.decode(tokens, slots).map(|_| ());
            self.pick.on = false;
            r?;
            if self.model.tensor.as_ref().is_some_and(|t| t.rank == 0) {
                self.merge_candidates(out);
            }
            return Ok(());
        }
        let mut idx = std::mem::take(&mut self.pick.idx);
        let logits = self.decode(tokens, slots)?;
        for (t, row) in logits.chunks_exact_mut(vocab).enumerate() {
            match draws.get(t) {
                None => {
                    let a = crate::argmax(row);
                    out.push((row[a as usize], a));
                }
                Some(d) => {
                    crate::penalize(row, 0, d, penalized);
                    crate::top_k(row, d.top_k as usize, &mut idx);
                    out.extend(idx.iter().map(|&i| (row[i as usize], i)));
                }
            }
        }
        self.pick.idx = idx;
        Ok(())
    }

    /// One pass over rows from any slots — what continuous batching runs each turn:
    /// `tokens[i]` goes to slot `slots[i]` at that slot's next position (a slot may take
    /// several rows, in order: a prompt chunk beside other slots' decode rows). Logits are
    /// computed only for the rows where `want[i]`, one row of `vocab` each, in row order.
    /// The first call that wants more rows than there are slots grows the logits buffer.
    pub fn step(&mut self, tokens: &[u32], slots: &[usize], want: &[bool]) -> Result<&mut [f32]> {
        let (n, vocab) = (tokens.len(), self.model.config.vocab);
        if slots.len() != n || want.len() != n || n > self.max_batch {
            return Err(Error::Batch {
                op: "step",
                why: format!(
                    "{n} tokens, {} slots, {} flags for a batch of at most {}",
                    slots.len(),
                    want.len(),
                    self.max_batch
                ),
            });
        }
        self.check_whole("step")?;
        self.check_tokens(tokens)?;
        self.place_rows(slots)?;
        let wanted = want.iter().filter(|&&w| w).count();
        if self.logits.len() < wanted * vocab {
            self.logits.resize(wanted * vocab, 0.0);
        }
        if n > 0 {
            self.forward_rows(tokens, LogitRows::Some(want))?;
        }
        for &s in slots {
            self.pos[s] += 1;
        }
        Ok(&mut self.logits[..wanted * vocab])
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.model.config.vocab;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&id) => Err(Error::Token { id, vocab }),
            None => Ok(()),
        }
    }
}

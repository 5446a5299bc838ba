//! A block's forward on one node of a tensor-parallel mesh ([`crate::engine::TensorSplit`]):
//! the same operations as [`Session::layer_forward`] in the same order, with the four
//! all-gathers of `engine/tensor.rs` where the pieces meet. Every node ends the block with
//! the same residual rows, bit for bit, as one node running the whole block. Where the split
//! sums the products of `o` and `down` instead, two exchanges of partial updates replace the
//! four gathers (`layer_forward_sums`; every node still ends with the same rows as the others,
//! no longer bit for bit one node's).

use super::rowops::{add_into, gated_par, rmsnorm_par, sub_norm_quantize};
use super::Session;
use crate::engine::{Layer, Model};
use crate::error::{Error, Result};

/// What this node computes of each block: all of it, or its piece of a tensor split.
pub(super) struct Held {
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Query heads of the first KV head's group held by lower ranks (a group cut by the
    /// split): local query head `j` is the group member `j + q_skip` counted from the first
    /// KV head held.
    pub q_skip: usize,
    head_dim: usize,
    /// Every node's width of the attention output, FFN columns and hidden rows (empty for a
    /// whole model).
    att_w: Vec<usize>,
    ffn_w: Vec<usize>,
    hidden_w: Vec<usize>,
    vocab_w: Vec<usize>,
    /// This node's FFN columns and hidden rows.
    pub ffn: usize,
    hidden: usize,
    /// Whether `o` and `down` are cut by columns and their products summed
    /// ([`crate::engine::TensorSplit::sums`]), and where this node's attention output and FFN
    /// columns start in the whole (its slice of the sub-norm weights).
    pub sums: bool,
    att_off: usize,
    ffn_off: usize,
}

impl Held {
    pub(super) fn new(m: &Model) -> Held {
        let c = &m.config;
        let whole = Held {
            heads: c.heads,
            kv_heads: c.kv_heads,
            q_skip: 0,
            head_dim: c.head_dim,
            att_w: Vec::new(),
            ffn_w: Vec::new(),
            hidden_w: Vec::new(),
            vocab_w: Vec::new(),
            ffn: c.intermediate,
            hidden: c.hidden,
            sums: false,
            att_off: 0,
            ffn_off: 0,
        };
        let Some(t) = &m.tensor else { return whole };
        let (s, r) = (&t.split, t.rank);
        let (q, kv) = (s.q_range(r), s.kv_range(c, r));
        Held {
            heads: q.len(),
            kv_heads: kv.len(),
            q_skip: q.start - kv.start * (c.heads / c.kv_heads),
            att_w: s.att_widths(c),
            ffn_w: s.ffn_widths(),
            hidden_w: s.hidden_widths(),
            vocab_w: s.vocab_widths(),
            ffn: s.ffn_range(r).len(),
            hidden: s.hidden_range(r).len(),
            sums: s.sums,
            att_off: q.start * c.head_dim,
            ffn_off: s.ffn_range(r).start,
            ..whole
        }
    }

    /// Width of the query heads held.
    pub(super) fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of the KV heads held.
    pub(super) fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// What a block's exchange gathers, and the buffer holding this node's piece of it.
#[derive(Clone, Copy)]
enum Piece {
    /// Attention outputs of the heads held (in `att`).
    Attention,
    /// Rows of `o` or `down` (in `xn`).
    Hidden,
    /// Gated FFN columns (in `gate`).
    Ffn,
}

impl Session<'_> {
    /// `t_n` rows of this node's piece gathered from every node into `wide` (full rows).
    fn gather(&mut self, piece: Piece, t_n: usize) -> Result<()> {
        let widths = match piece {
            Piece::Attention => &self.held.att_w,
            Piece::Hidden => &self.held.hidden_w,
            Piece::Ffn => &self.held.ffn_w,
        };
        let r = self.model.tensor.as_ref().map_or(0, |t| t.rank);
        let (mine, total) = (widths[r] * t_n, widths.iter().sum::<usize>() * t_n);
        let mine = match piece {
            Piece::Attention => &self.att[..mine],
            Piece::Ffn => &self.gate[..mine],
            Piece::Hidden => &self.xn[..mine],
        };
        let ex = self.exchange.as_deref_mut().ok_or_else(not_joined)?;
        ex.gather(mine, t_n, widths, &mut self.wide[..total]).map_err(Error::Mesh)
    }

    /// The logits of the `n` rows normalized and quantized in `aq_hidden`: this node's rows
    /// of the head, gathered on rank 0 into `logits`.
    pub(super) fn head_piece(&mut self, n: usize) -> Result<()> {
        let m = self.model;
        let (h, r) = (m.config.hidden, m.tensor.as_ref().map_or(0, |t| t.rank));
        let mine = self.held.vocab_w[r] * n;
        let total = self.held.vocab_w.iter().sum::<usize>() * n;
        if self.piece.len() < mine {
            self.piece.resize(mine, 0.0);
        }
        m.head_forward(&self.aq_hidden, &self.xn[..n * h], &mut self.piece[..mine]);
        let ex = self.exchange.as_deref_mut().ok_or_else(not_joined)?;
        if self.pick.on {
            let (widths, p) = (&self.held.vocab_w, &mut self.pick);
            let (w, base) = (widths[r], widths[..r].iter().sum::<usize>() as u32);
            p.ks.clear();
            p.ks.extend((0..n).map(|t| p.draws.get(t).map_or(1, |d| d.top_k as usize)));
            p.mine.clear();
            // A node holding no rows of the head has no rows here (`mine` is 0).
            for (t, row) in self.piece[..mine].chunks_exact_mut(w.max(1)).enumerate() {
                let d = p.draws.get(t);
                let count = p.ks[t].min(w);
                if !all_finite(row) {
                    p.mine.extend((0..count).map(|_| (f32::NAN, 0)));
                    continue;
                }
                match d {
                    _ if count == 0 => {}
                    None => {
                        let a = crate::argmax(row);
                        p.mine.push((row[a as usize], a));
                    }
                    Some(d) => {
                        crate::penalize(row, base, d, &p.penalized);
                        crate::top_k(row, count, &mut p.idx);
                        p.mine.extend(p.idx.iter().map(|&i| (row[i as usize], i)));
                    }
                }
            }
            let (mine, all) = (&p.mine[..], &mut p.all);
            return ex.candidates_to_first(mine, &p.ks, widths, all).map_err(Error::Mesh);
        }
        let full = &mut self.logits[..if r == 0 { total } else { 0 }];
        ex.gather_to_first(&self.piece[..mine], n, &self.held.vocab_w, full).map_err(Error::Mesh)
    }

    /// One block on this node's piece; see the module doc.
    pub(super) fn layer_forward_piece(&mut self, li: usize, l: &Layer, t_n: usize) -> Result<()> {
        if self.held.sums {
            return self.layer_forward_sums(li, l, t_n);
        }
        let m = self.model;
        let c = &m.config;
        let pool = &m.pool;
        let (h, qd, ffn) = (c.hidden, c.q_dim(), c.intermediate);
        let h_mine = self.held.hidden;
        self.attend(li, l, t_n);
        self.gather(Piece::Attention, t_n)?;
        let (scratch, att) = (&mut self.tmp[..t_n * qd], &self.wide[..t_n * qd]);
        let sub = l.attn_sub_norm.as_ref();
        sub_norm_quantize(pool, &mut self.aq_att, scratch, att, sub, c.rms_eps);
        l.o.forward(pool, &self.aq_att, &mut self.xn[..t_n * h_mine]);
        self.gather(Piece::Hidden, t_n)?;
        add_into(&mut self.x[..t_n * h], &self.wide[..t_n * h]);
        self.gated_piece(l, t_n);
        self.gather(Piece::Ffn, t_n)?;
        let (scratch, gated) = (&mut self.up[..t_n * ffn], &self.wide[..t_n * ffn]);
        let sub = l.ffn_sub_norm.as_ref();
        sub_norm_quantize(pool, &mut self.aq_ffn, scratch, gated, sub, c.rms_eps);
        l.down.forward(pool, &self.aq_ffn, &mut self.xn[..t_n * h_mine]);
        self.gather(Piece::Hidden, t_n)?;
        add_into(&mut self.x[..t_n * h], &self.wide[..t_n * h]);
        Ok(())
    }
}

/// The input of a summed `o` or `down` ([`Session::summed_update`]).
#[derive(Clone, Copy)]
enum Summed {
    /// The attention output of the heads held (in `att`), into `o`.
    Attention,
    /// The gated FFN columns held (in `gate`), into `down`.
    Ffn,
}

impl Session<'_> {
    /// One block where `o` and `down` are cut by columns
    /// ([`crate::engine::TensorSplit::sums`]): two exchanges of partial updates.
    fn layer_forward_sums(&mut self, li: usize, l: &Layer, t_n: usize) -> Result<()> {
        self.attend(li, l, t_n);
        self.summed_update(Summed::Attention, l, t_n)?;
        self.gated_piece(l, t_n);
        self.summed_update(Summed::Ffn, l, t_n)
    }

    /// The FFN norm of the residual rows, and this node's gated FFN columns (in `gate`).
    fn gated_piece(&mut self, l: &Layer, t_n: usize) {
        let m = self.model;
        let (c, pool) = (&m.config, &m.pool);
        let (h, ffn_mine) = (c.hidden, self.held.ffn);
        rmsnorm_par(pool, &mut self.xn[..t_n * h], &self.x[..t_n * h], &l.ffn_norm, c.rms_eps);
        Self::quantize(&mut self.aq_hidden, &self.xn[..t_n * h], pool);
        let f = t_n * ffn_mine;
        crate::engine::forward_many(
            pool,
            &self.aq_hidden,
            &mut [(&l.gate, &mut self.gate[..f]), (&l.up, &mut self.up[..f])],
        );
        gated_par(pool, &mut self.gate[..f], &self.up[..f], ffn_mine, c.act);
    }

    /// This node's columns of `o` (or `down`) times its piece of the sub-norm's input
    /// (weighted by its slice of the sub-norm, quantized on the piece's own absmax), summed
    /// with every node's and scaled by the whole row's `1/rms`, added to the residual.
    fn summed_update(&mut self, which: Summed, l: &Layer, t_n: usize) -> Result<()> {
        let m = self.model;
        let c = &m.config;
        let pool = &m.pool;
        let h = c.hidden;
        // After attention the query rows are free, and after the gate so are `up`'s.
        let (input, scratch, width, off, total, sub, aq, lin) = match which {
            Summed::Attention => (
                &self.att,
                &mut self.q,
                self.held.q_dim(),
                self.held.att_off,
                c.q_dim(),
                l.attn_sub_norm.as_ref(),
                &mut self.aq_att,
                &l.o,
            ),
            Summed::Ffn => (
                &self.gate,
                &mut self.up,
                self.held.ffn,
                self.held.ffn_off,
                c.intermediate,
                l.ffn_sub_norm.as_ref(),
                &mut self.aq_ffn,
                &l.down,
            ),
        };
        let (input, scratch) = (&input[..t_n * width], &mut scratch[..t_n * width]);
        if self.sums.len() < 2 * t_n {
            self.sums.resize(2 * t_n, 0.0);
        }
        let (squares, squares_all) = self.sums.split_at_mut(t_n);
        for ((row, out), sq) in
            input.chunks_exact(width).zip(scratch.chunks_exact_mut(width)).zip(squares.iter_mut())
        {
            *sq = row.iter().map(|v| v * v).sum::<f32>();
            match sub {
                Some(w) => {
                    for ((o, &v), &g) in out.iter_mut().zip(row).zip(&w[off..off + width]) {
                        *o = v * g;
                    }
                }
                None => out.copy_from_slice(row),
            }
        }
        aq.quantize_par(scratch, pool);
        lin.forward(pool, aq, &mut self.xn[..t_n * h]);
        let ex = self.exchange.as_deref_mut().ok_or_else(not_joined)?;
        let (mine, all) = (&self.xn[..t_n * h], &mut self.wide[..t_n * h]);
        ex.sum(mine, squares, t_n, h, all, &mut squares_all[..t_n]).map_err(Error::Mesh)?;
        for ((x, u), &sq) in self.x[..t_n * h]
            .chunks_exact_mut(h)
            .zip(self.wide[..t_n * h].chunks_exact(h))
            .zip(&squares_all[..t_n])
        {
            let r = match sub {
                Some(_) => 1.0 / (sq / total as f32 + c.rms_eps).sqrt(),
                None => 1.0,
            };
            for (x, &u) in x.iter_mut().zip(u) {
                *x += r * u;
            }
        }
        Ok(())
    }
}

/// Whether every value of a row is finite (a rank 0 told otherwise names this node).
fn all_finite(row: &[f32]) -> bool {
    // v·0 is 0 for every finite v and NaN otherwise; sixteen sums so the loop vectorizes.
    let mut bad = [0.0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (b, &v) in bad.iter_mut().zip(c) {
            *b += v * 0.0;
        }
    }
    let tail = chunks.remainder().iter().fold(0.0, |a, &v| a + v * 0.0);
    !(bad.iter().sum::<f32>() + tail).is_nan()
}

impl Session<'_> {
    /// Rank 0's candidates of a [`Session::decode_top`] pass from every node's (in
    /// `pick.all`, row after row, node after node) into `out`: per row the greedy token
    /// (a later node's only where strictly larger, so a tie keeps the lowest index, as
    /// [`crate::argmax`] of the whole row), or the first `top_k` in the candidates' order.
    pub(super) fn merge_candidates(&mut self, out: &mut Vec<(f32, u32)>) {
        let (widths, p) = (&self.held.vocab_w, &mut self.pick);
        let mut at = 0;
        for (t, &k) in p.ks.iter().enumerate() {
            let len: usize = widths.iter().map(|&w| k.min(w)).sum();
            let row = &p.all[at..at + len];
            at += len;
            if p.draws.get(t).is_none() {
                let best = row.iter().fold(None, |b: Option<(f32, u32)>, &c| match b {
                    Some(b) if c.0 > b.0 => Some(c),
                    Some(b) => Some(b),
                    None => Some(c),
                });
                out.extend(best);
            } else {
                p.mine.clear();
                p.mine.extend_from_slice(row);
                p.mine.sort_unstable_by(crate::candidate_order);
                out.extend_from_slice(&p.mine[..k.min(len)]);
            }
        }
    }
}

fn not_joined() -> Error {
    Error::Mesh("a tensor-parallel piece runs only joined to its mesh (set_exchange)".into())
}

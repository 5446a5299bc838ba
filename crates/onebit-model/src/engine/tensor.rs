//! Tensor parallelism inside every block: each node of a mesh holds a piece of every layer,
//! and the pieces meet through a [`ShardExchange`] (the network lives in onebit-dist; the
//! engine only knows "every node's piece, in rank order").
//!
//! What a node holds ([`TensorSplit`], one range per node of each kind):
//! - **query heads**: their q rows, and the k/v rows of the KV heads they read; it computes
//!   RoPE, its KV cache and attention for those heads only. The cut falls between query
//!   heads, not between GQA groups: a KV head whose group straddles the cut is computed and
//!   cached on both sides (the 2B4T's 20 query heads over two equal nodes are 10:10, each
//!   node with 3 of the 5 KV heads, where whole groups would be 3:2: 2304 rows of q/k/v
//!   on one node and 1536 on the other, and every node waits for the slower at the gather
//!   that follows; measured on loopback, the node with 2 groups waited ~50 µs a block there);
//! - **hidden rows**: its rows of `o` and `down` (output features of the residual update);
//! - **FFN columns**: its rows of `gate` and `up`;
//! - **vocabulary rows** of the output head: it computes those logits (or, for a greedy
//!   decode step, only its candidates: [`ShardExchange::candidates_to_first`]), and rank 0
//!   gathers every node's rows (the head reads as many bytes per token as a third of the 2B4T's
//!   blocks: on one node alone it would leave the others idle for that long).
//!
//! A block then needs four all-gathers, each of f32 values, so the arithmetic is the
//! single-node forward's exactly (every node quantizes the same full vectors; no partial sums
//! are added in another order): attention outputs (→ full sub-norm and int8 quantization, as
//! one node does), `o`'s rows (→ the residual), the gated FFN values (→ full sub-norm and
//! quantization), `down`'s rows (→ the residual).
//!
//! **Partial sums** ([`TensorSplit::sums`]) halve the exchanges for slow links: `o` and `down`
//! are cut by input columns, so each node multiplies its own attention heads (FFN columns)
//! by its columns and the nodes sum the partial updates, one exchange after `o` and one after
//! `down`. Exactness is what it costs: BitNet's sub-norm and the per-token int8 absmax need
//! the whole vector, which one node would get only through two more round trips of
//! statistics. Instead each node quantizes its piece of `x ⊙ w_sub` on the piece's own
//! absmax, and sends its sum of squares with its partial update; the sub-norm's `1/rms` is a
//! common factor of the whole update (an absmax quantizer is scale-invariant), applied once
//! the pieces are summed. The update is then the same linear map of finer-grained int8
//! activations: not bit-identical to one node (the rounding of each piece differs), so it is
//! chosen where the wire already rounds (f16, int8) and the extra rounding is measured
//! beside the wire's own.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::ops::Range;

/// How a model's blocks are cut across the nodes of a tensor-parallel mesh: for each kind of
/// piece, the boundaries `0 = b[0] <= b[1] <= … <= b[n] = total` (node r holds `b[r]..b[r+1]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSplit {
    /// Query heads (each node also holds the KV heads they read).
    pub q_heads: Vec<usize>,
    /// FFN columns (rows of `gate` and `up`).
    pub ffn: Vec<usize>,
    /// Hidden features (rows of `o` and `down`).
    pub hidden: Vec<usize>,
    /// Rows of the output head (logits).
    pub vocab: Vec<usize>,
    /// How `o` and `down` are cut: `false`, by rows (`hidden`; four all-gathers a block, the
    /// logits bit-identical to one node's); `true`, by input columns (each node's query heads
    /// and FFN columns), every node sending its partial residual update to be summed: two
    /// exchanges a block instead of four, at the price of quantizing each node's piece of the
    /// sub-normed activations to int8 on its own absmax (see the module doc).
    pub sums: bool,
}

/// One node's piece: the split and this node's rank in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPart {
    /// How every node's piece is cut.
    pub split: TensorSplit,
    /// This node.
    pub rank: usize,
}

/// Moves the pieces of a tensor-parallel pass between the nodes.
pub trait ShardExchange: Send {
    /// Every node's `mine` (`rows` rows of its own width) into `full` (`rows` rows of
    /// `widths.iter().sum()`), each row made of the nodes' pieces in rank order; `widths[r]` is
    /// node r's width. Every node calls it with the same `rows` and `widths`.
    fn gather(
        &mut self,
        mine: &[f32],
        rows: usize,
        widths: &[usize],
        full: &mut [f32],
    ) -> std::result::Result<(), String>;

    /// As [`ShardExchange::gather`], but only rank 0 receives (into `full`); the others
    /// only send theirs (`full` is left alone there).
    fn gather_to_first(
        &mut self,
        mine: &[f32],
        rows: usize,
        widths: &[usize],
        full: &mut [f32],
    ) -> std::result::Result<(), String>;

    /// Every node's `mine` (`rows` rows of `width`) summed into `sum` and every node's
    /// `stats` (one value a row) summed into `stats_sum`, on every node, adding the nodes'
    /// pieces in rank order so every node holds the same sums bit for bit.
    fn sum(
        &mut self,
        mine: &[f32],
        stats: &[f32],
        rows: usize,
        width: usize,
        sum: &mut [f32],
        stats_sum: &mut [f32],
    ) -> std::result::Result<(), String>;

    /// Each row's candidate tokens from every node's rows of the output head, to rank 0.
    /// `mine` holds, row after row, this node's `min(ks[i], widths[rank])` candidates of row
    /// `i` (logit, index within its rows; a NaN logit where its rows hold a value that is not
    /// finite); rank 0 fills `all` with, row after row, every node's candidates in rank
    /// order, indexed over the whole vocabulary (`widths[r]`: node r's rows of the head).
    /// The others only send theirs (`all` is left alone there).
    fn candidates_to_first(
        &mut self,
        mine: &[(f32, u32)],
        ks: &[usize],
        widths: &[usize],
        all: &mut Vec<(f32, u32)>,
    ) -> std::result::Result<(), String>;
}

/// Splits `total` units into parts in proportion to `shares`, each at least `min` (largest
/// remainders take the units left over; ties go to the higher rank, as rank 0 also samples
/// and gathers the logits).
fn apportion(total: usize, shares: &[f64], min: usize) -> Vec<usize> {
    let n = shares.len();
    let sum: f64 = shares.iter().sum();
    let free = total - min * n;
    let exact: Vec<f64> = shares.iter().map(|s| s / sum * free as f64).collect();
    let mut parts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = free - parts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let frac = |i: usize| exact[i] - exact[i].floor();
        frac(b).total_cmp(&frac(a)).then(b.cmp(&a))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts.iter().map(|p| p + min).collect()
}

fn boundaries(parts: &[usize], unit: usize, total: usize) -> Vec<usize> {
    let mut b = vec![0];
    for p in parts {
        b.push((b.last().unwrap() + p * unit).min(total));
    }
    *b.last_mut().unwrap() = total;
    b
}

impl TensorSplit {
    /// Pieces in proportion to `shares` (one positive weight per node: its speed, or less for
    /// a node that also runs the output head). Every node gets at least one query head, and
    /// FFN columns and hidden rows in multiples of 16 where the sizes allow.
    pub fn proportional(c: &ModelConfig, shares: &[f64]) -> Result<Self> {
        let n = shares.len();
        if n == 0 || shares.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::Config(format!("tensor split shares {shares:?}: need positive")));
        }
        if c.heads < n {
            return Err(Error::Config(format!(
                "{} query heads cannot be split over {n} nodes (each needs at least one)",
                c.heads
            )));
        }
        let q = apportion(c.heads, shares, 1);
        let cut = |total: usize| {
            let unit = if total.is_multiple_of(16) && total / 16 >= n { 16 } else { 1 };
            boundaries(&apportion(total / unit, shares, 1), unit, total)
        };
        let s = TensorSplit {
            q_heads: boundaries(&q, 1, c.heads),
            ffn: cut(c.intermediate),
            hidden: cut(c.hidden),
            vocab: cut(c.vocab),
            sums: false,
        };
        s.check(c)?;
        Ok(s)
    }

    /// The same pieces, with `o` and `down` cut by columns and their products summed
    /// (`true`) or cut by rows and gathered (`false`); see [`TensorSplit::sums`].
    pub fn with_sums(self, sums: bool) -> Self {
        TensorSplit { sums, ..self }
    }

    /// Columns of `o` node `r` holds where [`TensorSplit::sums`] is set: its query heads'.
    pub fn att_range(&self, c: &ModelConfig, r: usize) -> Range<usize> {
        let q = self.q_range(r);
        q.start * c.head_dim..q.end * c.head_dim
    }

    /// Nodes in the split.
    pub fn nodes(&self) -> usize {
        self.q_heads.len() - 1
    }

    /// Checks the boundaries against `c`: the same node count for every kind, increasing,
    /// each node holding at least one of each.
    pub fn check(&self, c: &ModelConfig) -> Result<()> {
        let n = self.nodes();
        for (what, b, total) in [
            ("query heads", &self.q_heads, c.heads),
            ("FFN columns", &self.ffn, c.intermediate),
            ("hidden rows", &self.hidden, c.hidden),
            ("vocabulary rows", &self.vocab, c.vocab),
        ] {
            let ok =
                b.len() == n + 1 && b[0] == 0 && b[n] == total && b.windows(2).all(|w| w[0] < w[1]);
            if n == 0 || !ok {
                return Err(Error::Config(format!(
                    "tensor split of {what} {b:?}: need {} increasing boundaries from 0 to {total}",
                    n + 1
                )));
            }
        }
        Ok(())
    }

    /// Node `r`'s range of query heads.
    pub fn q_range(&self, r: usize) -> Range<usize> {
        self.q_heads[r]..self.q_heads[r + 1]
    }

    /// Node `r`'s range of KV heads: those its query heads read (a group cut by the split
    /// is held by the nodes on both sides).
    pub fn kv_range(&self, c: &ModelConfig, r: usize) -> Range<usize> {
        let (q, group) = (self.q_range(r), c.heads / c.kv_heads);
        q.start / group..q.end.div_ceil(group)
    }

    /// Node `r`'s range of FFN columns.
    pub fn ffn_range(&self, r: usize) -> Range<usize> {
        self.ffn[r]..self.ffn[r + 1]
    }

    /// Node `r`'s range of hidden rows.
    pub fn hidden_range(&self, r: usize) -> Range<usize> {
        self.hidden[r]..self.hidden[r + 1]
    }

    /// Node `r`'s rows of the output head.
    pub fn vocab_range(&self, r: usize) -> Range<usize> {
        self.vocab[r]..self.vocab[r + 1]
    }

    /// Widths of every node's rows of logits.
    pub fn vocab_widths(&self) -> Vec<usize> {
        (0..self.nodes()).map(|r| self.vocab_range(r).len()).collect()
    }

    /// Widths of every node's piece of the attention output (query heads × head size).
    pub fn att_widths(&self, c: &ModelConfig) -> Vec<usize> {
        (0..self.nodes()).map(|r| self.q_range(r).len() * c.head_dim).collect()
    }

    /// Widths of every node's FFN columns.
    pub fn ffn_widths(&self) -> Vec<usize> {
        (0..self.nodes()).map(|r| self.ffn_range(r).len()).collect()
    }

    /// Widths of every node's hidden rows.
    pub fn hidden_widths(&self) -> Vec<usize> {
        (0..self.nodes()).map(|r| self.hidden_range(r).len()).collect()
    }

    /// Appends the split's bytes (u32 node count, the four boundary lists, then a u32: 1
    /// where the products of `o` and `down` are summed, else 0).
    pub fn encode(&self, v: &mut Vec<u8>) {
        v.extend((self.nodes() as u32).to_le_bytes());
        for b in [&self.q_heads, &self.ffn, &self.hidden, &self.vocab] {
            for x in b {
                v.extend((*x as u32).to_le_bytes());
            }
        }
        v.extend(u32::from(self.sums).to_le_bytes());
    }

    /// Parses [`TensorSplit::encode`]'s bytes; the rest of `b` after them.
    pub fn decode(b: &[u8]) -> std::result::Result<(Self, &[u8]), String> {
        let word = |i: usize| -> std::result::Result<usize, String> {
            let s = b.get(4 * i..4 * i + 4).ok_or("truncated tensor split")?;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        };
        let n = word(0)?;
        if n == 0 || n > 64 {
            return Err(format!("tensor split over {n} nodes"));
        }
        let list = |k: usize| -> std::result::Result<Vec<usize>, String> {
            (0..=n).map(|i| word(1 + k * (n + 1) + i)).collect()
        };
        let sums = match word(1 + 4 * (n + 1))? {
            0 => false,
            1 => true,
            w => return Err(format!("tensor split with merge word {w} (0 or 1)")),
        };
        let s = TensorSplit {
            q_heads: list(0)?,
            ffn: list(1)?,
            hidden: list(2)?,
            vocab: list(3)?,
            sums,
        };
        Ok((s, &b[4 * (2 + 4 * (n + 1))..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_query_heads_over_two_equal_nodes_share_the_middle_kv_head() {
        let c = ModelConfig::preset("2b4t").unwrap();
        let s = TensorSplit::proportional(&c, &[1.0, 1.0]).unwrap();
        assert_eq!(s.q_heads, vec![0, 10, 20]);
        assert_eq!((s.kv_range(&c, 0), s.kv_range(&c, 1)), (0..3, 2..5));
        assert_eq!(s.ffn, vec![0, 3456, 6912]);
        assert_eq!(s.hidden, vec![0, 1280, 2560]);
        assert_eq!(s.att_widths(&c), vec![1280, 1280]);
        let s = TensorSplit::proportional(&c, &[1.0, 9.0]).unwrap();
        assert_eq!(s.q_heads, vec![0, 3, 20]);
        assert_eq!((s.kv_range(&c, 0), s.kv_range(&c, 1)), (0..1, 0..5));
        assert_eq!(s.ffn[1] % 16, 0);
        // A cut on a group boundary shares nothing.
        let s = TensorSplit::proportional(&c, &[1.0, 5.0]).unwrap();
        assert_eq!(s.q_heads, vec![0, 4, 20]);
        assert_eq!((s.kv_range(&c, 0), s.kv_range(&c, 1)), (0..1, 1..5));
        let mut v = Vec::new();
        s.encode(&mut v);
        v.push(7);
        assert_eq!(TensorSplit::decode(&v), Ok((s.clone(), &[7u8][..])));
        assert!(TensorSplit::decode(&v[..v.len() - 2]).is_err());
        let summed = s.clone().with_sums(true);
        v.clear();
        summed.encode(&mut v);
        assert_eq!(TensorSplit::decode(&v), Ok((summed.clone(), &[][..])));
        assert_eq!(summed.att_range(&c, 1), 4 * 128..20 * 128);
        let at = v.len() - 4;
        v[at..].copy_from_slice(&2u32.to_le_bytes());
        assert!(TensorSplit::decode(&v).unwrap_err().contains("merge word 2"));
        assert!(TensorSplit::proportional(&c, &[1.0; 20]).is_ok());
        assert!(TensorSplit::proportional(&c, &[1.0; 21]).is_err());
        let bad = TensorSplit { hidden: vec![0, 2560, 2560], ..s };
        assert!(bad.check(&c).is_err());
    }
}

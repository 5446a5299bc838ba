//! Attention over the KV cache, two algorithms behind [`Session::attention`]:
//! - [`Session::prefill_attention`]: a chunk of one slot's prompt, per query head two strided
//!   GEMMs read straight from the cache (S = Q·Kᵀ, O = softmax(S)·V);
//! - [`Session::decode_attention`]: one or a few rows per slot (decode, mixed batches), per KV
//!   head so the query heads of a GQA group share one read of K and V (f16 and q8 caches
//!   read by fused kernels, f32 in place: [`super::super::kv_cache`]).
//!
//! Both write per-head rows into `att_by_head` and re-lay them out token-major into `att`.
//! The decode path's order (`dot_f32`, sequential softmax sum, `axpy_f32` over positions,
//! `exp_f32`) is what the GPU backend repeats bit for bit; the prompt path's GEMMs round
//! in their own order (a prompt row's output agrees with a decode row's to rounding), which
//! is kept because an exact-order blocked version measured 27–40 % slower on pp512.

use super::{Scratch, Session, BLOCKED_ATTENTION_MIN};
use onebit_kernels::dense;

/// `row = softmax(row)` in place, with [`dense::exp_f32`]'s steps (vectorized by
/// [`dense::exp_sub_f32`]) so a GPU backend computes the same bits.
fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    dense::exp_sub_f32(row, max);
    let mut total = 0.0;
    for v in row.iter() {
        total += *v;
    }
    for v in row.iter_mut() {
        *v /= total;
    }
}

/// Of the `per_row` query heads counted from `first` (from the first KV head held), those
/// this node holds: the heads `q_skip..q_skip + heads`.
fn held_of_group(
    first: usize,
    per_row: usize,
    q_skip: usize,
    heads: usize,
) -> std::ops::Range<usize> {
    let lo = q_skip.saturating_sub(first).min(per_row);
    lo..(q_skip + heads).saturating_sub(first).min(per_row).max(lo)
}

impl Session<'_> {
    /// Attention of layer `li` for the `t_n` rows whose q/k/v were just computed.
    pub(super) fn attention(&mut self, li: usize, t_n: usize) {
        let one_slot = self.row_slot[..t_n].iter().all(|&s| s == self.row_slot[0]);
        if t_n >= BLOCKED_ATTENTION_MIN && one_slot {
            self.prefill_attention(li, t_n);
        } else {
            self.decode_attention(li, t_n);
        }
    }

    /// Prompt chunks of one slot: per head, S = Q·Kᵀ and O = softmax(S)·V as two strided
    /// GEMMs read straight from the cache (the masked upper triangle is computed and dropped).
    fn prefill_attention(&mut self, li: usize, t_n: usize) {
        let c = &self.model.config;
        let (hd, heads, kvd) = (c.head_dim, self.held.heads, self.held.kv_dim());
        let (group, q_skip) = (c.heads / c.kv_heads, self.held.q_skip);
        let scale = 1.0 / (hd as f32).sqrt();
        let base = self.kv_base(self.row_slot[0], li);
        let (kc, vc, q, pos) = (&self.k_cache, &self.v_cache, &self.q, self.row_pos[0]);
        let scores = &self.scores;
        let qd = heads * hd;
        let n_all = pos + t_n;
        self.model.pool.run_chunks(
            &mut self.att_by_head[..t_n * qd],
            t_n * hd,
            &|thread, hs, out| {
                let mut guard = scores[thread].lock().unwrap_or_else(|e| e.into_inner());
                let Scratch { s, k: kbuf, v: vbuf } = &mut *guard;
                let s = &mut s[..t_n * n_all];
                for (j, head) in hs.enumerate() {
                    let kvh = (head + q_skip) / group;
                    let (k0, ks) = kc.view(base + kvh * hd, n_all, kvd, hd, kbuf);
                    let (v0, vs) = vc.view(base + kvh * hd, n_all, kvd, hd, vbuf);
                    dense::gemm_strided(
                        (t_n, n_all, hd),
                        s,
                        n_all,
                        (&q[head * hd..], qd, 1),
                        (k0, 1, ks),
                        scale,
                    );
                    for (t, row) in s.chunks_exact_mut(n_all).enumerate() {
                        let valid = pos + t + 1;
                        softmax(&mut row[..valid]);
                        row[valid..].fill(0.0);
                    }
                    let o = &mut out[j * t_n * hd..(j + 1) * t_n * hd];
                    dense::gemm_strided((t_n, hd, n_all), o, hd, (s, n_all, 1), (v0, vs, 1), 1.0);
                }
            },
        );
        for head in 0..heads {
            for t in 0..t_n {
                let src = &self.att_by_head[(head * t_n + t) * hd..][..hd];
                self.att[(t * heads + head) * hd..][..hd].copy_from_slice(src);
            }
        }
    }

    /// Rows from any slots. Work items are (kv head, token, part): each serves `per_row` query
    /// heads that share the kv head, so K and V rows are read and widened once for all of them
    /// (GQA) rather than once per query head. A group is cut into `parts` only when that is
    /// needed to give every thread the same number of items (5 kv heads over 2 threads: 3 to 2).
    /// On a tensor-parallel node whose first or last group is cut by the split, the items
    /// cover whole groups and skip the query heads held elsewhere ([`held_of_group`]).
    fn decode_attention(&mut self, li: usize, t_n: usize) {
        let c = &self.model.config;
        let (hd, heads, kvd) = (c.head_dim, self.held.heads, self.held.kv_dim());
        let (group, q_skip) = (c.heads / c.kv_heads, self.held.q_skip);
        let scale = 1.0 / (hd as f32).sqrt();
        let (kc, vc, q) = (&self.k_cache, &self.v_cache, &self.q);
        let (row_slot, row_pos) = (&self.row_slot, &self.row_pos);
        let layer_stride = self.max_ctx * kvd;
        let layers = self.model.layers.len();
        let scores = &self.scores;
        let threads = self.model.pool.threads();
        let parts = (1..=group)
            .filter(|d| group.is_multiple_of(*d))
            .find(|d| (self.held.kv_heads * t_n * d).is_multiple_of(threads))
            .unwrap_or(group);
        let per_row = group / parts;
        let live = |kvh: usize, part: usize| {
            held_of_group(kvh * group + part * per_row, per_row, q_skip, heads)
        };
        let items = self.held.kv_heads * t_n * parts;
        self.model.pool.run_chunks(
            &mut self.att_by_head[..items * per_row * hd],
            per_row * hd,
            &|thread, rows, out| {
                let mut guard = scores[thread].lock().unwrap_or_else(|e| e.into_inner());
                let Scratch { s, k: kbuf, v: vbuf } = &mut *guard;
                for (j, row) in rows.enumerate() {
                    let (kvh, t, part) = (row / (t_n * parts), row / parts % t_n, row % parts);
                    let gs = live(kvh, part);
                    if gs.is_empty() {
                        continue;
                    }
                    let n = row_pos[t] + 1;
                    let base = (row_slot[t] * layers + li) * layer_stride + kvh * hd;
                    // The held heads of the group are consecutive query heads.
                    let head = kvh * group + part * per_row + gs.start - q_skip;
                    let qv = &q[(t * heads + head) * hd..][..gs.len() * hd];
                    let sg = &mut s[gs.start * n..gs.end * n];
                    kc.scores((base, n, kvd), qv, hd, scale, sg, kbuf);
                    sg.chunks_exact_mut(n).for_each(softmax);
                    let o = &mut out[j * per_row * hd..(j + 1) * per_row * hd];
                    o.fill(0.0);
                    vc.weigh((base, n, kvd), sg, hd, &mut o[gs.start * hd..gs.end * hd], vbuf);
                }
            },
        );
        for row in 0..items {
            let (kvh, t, part) = (row / (t_n * parts), row / parts % t_n, row % parts);
            for g in live(kvh, part) {
                let head = kvh * group + part * per_row + g - q_skip;
                let src = &self.att_by_head[(row * per_row + g) * hd..][..hd];
                self.att[(t * heads + head) * hd..][..hd].copy_from_slice(src);
            }
        }
    }
}

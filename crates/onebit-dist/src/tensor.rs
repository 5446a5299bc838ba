//! Tensor parallelism: every node holds a piece of every block
//! ([`onebit_model::TensorSplit`]: KV-head groups, FFN columns and hidden rows, uneven where
//! the nodes are), all nodes run every row, and the pieces meet in four all-gathers per block
//! ([`MeshExchange`], f32 on the wire, so the logits are bit-identical to one node's), or,
//! where the split sums the products of `o` and `down` ([`onebit_model::TensorSplit::sums`],
//! for slow links), in two exchanges of partial updates per block
//! ([`ShardExchange::sum`]: each node sends its whole update to every other); each
//! node also computes its rows of the output head's logits, which rank 0 gathers (a greedy or
//! sampled decode step, [`Engine::decode_argmax`] / [`Engine::decode_sampled`], gathers only
//! each node's pick or top-k candidates, 8 bytes each, instead of its rows of logits: 256 kB a
//! token for the 2B4T's vocabulary). Rank 0 (the
//! head) is the [`Engine`] the generation loop drives; the others run [`serve_tensor`] (in
//! `worker_tensor.rs`).
//!
//! The head tells the workers what to run before it runs it (one frame to each, see
//! `tensor_msg.rs`). Every node's session is sized alike, so a prompt goes through
//! in the same chunks everywhere and the gathers pair up. A call that a session refuses
//! before computing (a full context, an unknown slot) is refused identically on every node
//! and leaves the mesh usable; a failed exchange marks the mesh failed.

use crate::collective::exchange_pieces;
use crate::comm::{Comm, GroupComm};
use crate::error::{DistError, Result};
use crate::pipeline::{PipelineTimeouts, WireStats, RESET, STOP, TRUNCATE};
use crate::tensor_msg::{put_argmax, put_control, put_prefill, put_rows, put_sample, WIRE};
use crate::wire::{first_non_finite, get_values, non_finite, put_values, WireDtype};
use onebit_model::{Draw, Engine, Sampler, SamplerConfig, Session, ShardExchange};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::worker_tensor::serve_tensor;

/// A node's connection to the mesh, shared by its [`MeshExchange`] (inside the session) and
/// the loop that sends or receives the head's commands.
pub struct Link<'m> {
    pub(crate) comm: Box<dyn Comm + 'm>,
    pub(crate) timeouts: PipelineTimeouts,
    pub(crate) stats: WireStats,
    /// How the pieces travel (f32: exact; f16 and int8 change the logits slightly).
    pub(crate) wire: WireDtype,
    /// For a hybrid stage run by several nodes: their mesh ranks, this node's among them
    /// (the session's gathers run among them); empty: every node of the mesh.
    pub(crate) group: Vec<usize>,
    out: Vec<u8>,
    parts: Vec<Vec<u8>>,
    /// A summed exchange's decoded piece of one node.
    piece: Vec<f32>,
}

/// A link's fields one gather uses, the mesh seen as the gather's group.
struct Parts<'a, 'c> {
    comm: &'a mut (dyn Comm + 'c),
    out: &'a mut Vec<u8>,
    parts: &'a mut Vec<Vec<u8>>,
    stats: &'a mut WireStats,
}

/// [`Link`] shared between the session's exchange and its owner.
pub type SharedLink<'m> = Arc<Mutex<Link<'m>>>;

impl<'m> Link<'m> {
    /// A link over `comm`.
    pub fn shared(comm: Box<dyn Comm + 'm>, timeouts: PipelineTimeouts) -> SharedLink<'m> {
        Arc::new(Mutex::new(Link {
            comm,
            timeouts,
            stats: WireStats::default(),
            wire: WireDtype::F32,
            group: Vec::new(),
            out: Vec::new(),
            parts: Vec::new(),
            piece: Vec::new(),
        }))
    }
}

pub(crate) fn lock<'a, 'm>(l: &'a SharedLink<'m>) -> std::sync::MutexGuard<'a, Link<'m>> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// The session's side of a link: [`ShardExchange::gather`] as an all-gather over the mesh.
pub struct MeshExchange<'m>(pub SharedLink<'m>);

impl MeshExchange<'_> {
    /// Every node's piece to every node (`to_first`: to rank 0 only), checked, into `full`.
    fn exchange(
        &mut self,
        mine: &[f32],
        rows: usize,
        widths: &[usize],
        full: &mut [f32],
        to_first: bool,
    ) -> std::result::Result<(), String> {
        let mut guard = lock(&self.0);
        let t0 = Instant::now();
        let deadline = t0 + guard.timeouts.step + guard.timeouts.per_row * rows as u32;
        // The logits go to rank 0 alone and only pick the next token: f16 unless exact.
        let dtype = match guard.wire {
            WireDtype::Q8 if to_first => WireDtype::F16,
            d => d,
        };
        let Link { comm, group, out, parts, stats, .. } = &mut *guard;
        let mut view = None;
        let comm = group_view(comm, group, &mut view)?;
        let mut l = Parts { comm, out, parts, stats };
        let l = &mut l;
        let (size, rank) = (l.comm.size(), l.comm.rank());
        // f32 travels exactly, so a node's own piece goes straight into `full`, rank 0 of a
        // gather to it (the logits: 2 MB a step at 8 rows) never writes its own bytes, and
        // where the machine is little-endian the piece is sent as it lies in memory.
        let own_direct = dtype == WireDtype::F32;
        l.out.clear();
        let as_is = own_direct && cfg!(target_endian = "little");
        if !(as_is || to_first && rank == 0 && own_direct) {
            put_values(l.out, rows, mine, dtype);
        }
        let bytes: &[u8] = if as_is { bytemuck::cast_slice(mine) } else { &l.out[..] };
        let total: usize = widths.iter().sum();
        if widths.len() != size || (!(to_first && rank > 0) && full.len() != rows * total) {
            return Err(format!("gather of {} widths on a mesh of {size}", widths.len()));
        }
        if mine.len() != rows * widths[rank] {
            return Err(format!(
                "a piece of {} values for {rows} rows of {}",
                mine.len(),
                widths[rank]
            ));
        }
        l.stats.steps += 1;
        if to_first && rank > 0 {
            l.comm.send(0, bytes, deadline).map_err(|e| e.to_string())?;
            l.stats.sent += bytes.len() as u64;
            l.stats.wait += t0.elapsed();
            return Ok(());
        }
        if to_first {
            l.parts.resize_with(size, Vec::new);
            for r in 1..size {
                l.comm.recv(r, &mut l.parts[r], deadline).map_err(|e| e.to_string())?;
            }
        } else {
            exchange_pieces(&mut *l.comm, bytes, l.parts, deadline).map_err(|e| e.to_string())?;
            l.stats.sent += (bytes.len() * (size - 1)) as u64;
        }
        l.stats.wait += t0.elapsed();
        // With f16 or int8 this node's own piece is read back from the bytes it sent, so
        // every node holds the same rounded values.
        let mut off = 0;
        for (r, &w) in widths.iter().enumerate() {
            if r == rank && own_direct {
                if w > 0 {
                    for (t, row) in mine.chunks_exact(w).take(rows).enumerate() {
                        full[t * total + off..t * total + off + w].copy_from_slice(row);
                    }
                }
            } else {
                let part = if r == rank { &l.out[..] } else { &l.parts[r][..] };
                if r != rank {
                    l.stats.received += part.len() as u64;
                }
                get_values(part, (rows, w), dtype, full, (total, off))
                    .map_err(|why| format!("node {r}: bad frame: {why}"))?;
            }
            off += w;
        }
        // Where a value is bad, find which node sent it.
        if let Some(at) = first_non_finite(full) {
            let (col, mut end) = (at % total, 0);
            let r = widths.iter().position(|&w| {
                end += w;
                col < end
            });
            return Err(format!("node {}: bad frame: {}", r.unwrap_or(0), non_finite(dtype)));
        }
        Ok(())
    }
}

/// The mesh as a gather sees it: a hybrid stage's group gathers among its members only.
fn group_view<'a, 'c>(
    comm: &'a mut Box<dyn Comm + 'c>,
    group: &'a [usize],
    view: &'a mut Option<GroupComm<'a>>,
) -> std::result::Result<&'a mut dyn Comm, String> {
    if group.is_empty() {
        return Ok(&mut **comm);
    }
    Ok(view.insert(GroupComm::new(&mut **comm, group).map_err(|e| e.to_string())?))
}

impl ShardExchange for MeshExchange<'_> {
    fn gather(
        &mut self,
        mine: &[f32],
        rows: usize,
        widths: &[usize],
        full: &mut [f32],
    ) -> std::result::Result<(), String> {
        self.exchange(mine, rows, widths, full, false)
    }

    fn gather_to_first(
        &mut self,
        mine: &[f32],
        rows: usize,
        widths: &[usize],
        full: &mut [f32],
    ) -> std::result::Result<(), String> {
        self.exchange(mine, rows, widths, full, true)
    }

    /// Each node sends its whole piece (as the wire's element type, then its `stats` as f32)
    /// to every other; every node decodes every piece, its own included (so with f16 or int8
    /// all hold the same rounded values), and adds them in rank order.
    fn sum(
        &mut self,
        mine: &[f32],
        stats: &[f32],
        rows: usize,
        width: usize,
        sum: &mut [f32],
        stats_sum: &mut [f32],
    ) -> std::result::Result<(), String> {
        let mut guard = lock(&self.0);
        let t0 = Instant::now();
        let deadline = t0 + guard.timeouts.step + guard.timeouts.per_row * rows as u32;
        let dtype = guard.wire;
        let Link { comm, group, out, parts, stats: wire_stats, piece, .. } = &mut *guard;
        let mut view = None;
        let comm = group_view(comm, group, &mut view)?;
        let (size, rank) = (comm.size(), comm.rank());
        let n = rows * width;
        if mine.len() != n || sum.len() != n || stats.len() != rows || stats_sum.len() != rows {
            return Err(format!(
                "a sum of {} values and {} statistics for {rows} rows of {width}",
                mine.len(),
                stats.len()
            ));
        }
        out.clear();
        put_values(out, rows, mine, dtype);
        out.extend(stats.iter().flat_map(|v| v.to_le_bytes()));
        wire_stats.steps += 1;
        exchange_pieces(comm, out, parts, deadline).map_err(|e| e.to_string())?;
        wire_stats.sent += (out.len() * (size - 1)) as u64;
        wire_stats.wait += t0.elapsed();
        piece.resize(n, 0.0);
        sum.fill(0.0);
        stats_sum.fill(0.0);
        for (r, theirs) in parts.iter().enumerate().take(size) {
            let part = if r == rank { &out[..] } else { &theirs[..] };
            if r != rank {
                wire_stats.received += part.len() as u64;
            }
            let bad = |why: &str| format!("node {r}: bad frame: {why}");
            let at = part.len().checked_sub(4 * rows).ok_or_else(|| {
                bad(&format!("{} bytes for {rows} rows of partial sums", part.len()))
            })?;
            get_values(&part[..at], (rows, width), dtype, piece, (width, 0))
                .map_err(|w| bad(&w))?;
            let theirs =
                part[at..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            for (s, v) in stats_sum.iter_mut().zip(theirs) {
                *s += v;
            }
            if first_non_finite(piece).is_some() || first_non_finite(stats_sum).is_some() {
                return Err(bad(non_finite(dtype)));
            }
            for (s, &v) in sum.iter_mut().zip(piece.iter()) {
                *s += v;
            }
        }
        Ok(())
    }

    /// 8 bytes a candidate (logit, index; f32 and u32 little-endian) from each node to rank
    /// 0, whatever the wire's element type (a pick among rounded logits could differ from
    /// the exact one).
    fn candidates_to_first(
        &mut self,
        mine: &[(f32, u32)],
        ks: &[usize],
        widths: &[usize],
        all: &mut Vec<(f32, u32)>,
    ) -> std::result::Result<(), String> {
        let mut guard = lock(&self.0);
        let t0 = Instant::now();
        let deadline = t0 + guard.timeouts.step + guard.timeouts.per_row * ks.len() as u32;
        let Link { comm, group, out, parts, stats, .. } = &mut *guard;
        let mut view = None;
        let comm = group_view(comm, group, &mut view)?;
        let (size, rank) = (comm.size(), comm.rank());
        let row_len = |k: usize, nodes: &[usize]| nodes.iter().map(|&w| k.min(w)).sum::<usize>();
        let count = |r: usize| ks.iter().map(|&k| k.min(widths[r])).sum::<usize>();
        if widths.len() != size || mine.len() != count(rank) {
            return Err(format!(
                "{} candidates for {} rows of {} widths on a mesh of {size}",
                mine.len(),
                ks.len(),
                widths.len()
            ));
        }
        stats.steps += 1;
        if rank > 0 {
            out.clear();
            out.extend(
                mine.iter().flat_map(|&(v, i)| [v.to_le_bytes(), i.to_le_bytes()]).flatten(),
            );
            comm.send(0, out, deadline).map_err(|e| e.to_string())?;
            stats.sent += out.len() as u64;
            stats.wait += t0.elapsed();
            return Ok(());
        }
        parts.resize_with(size, Vec::new);
        for (r, part) in parts.iter_mut().enumerate().skip(1) {
            comm.recv(r, part, deadline).map_err(|e| e.to_string())?;
            stats.received += part.len() as u64;
        }
        stats.wait += t0.elapsed();
        let bad = |r: usize, why: &str| Err(format!("node {r}: bad frame: {why}"));
        if let Some(r) = (1..size).find(|&r| parts[r].len() != 8 * count(r)) {
            let rows = ks.len();
            return bad(r, &format!("{} bytes of candidates for {rows} rows", parts[r].len()));
        }
        // Row by row, every node's candidates in rank order, indexed over the vocabulary:
        // node after node into their places.
        all.clear();
        all.resize(ks.iter().map(|&k| row_len(k, widths)).sum(), (0.0, 0));
        let mut off = 0;
        for (r, &w) in widths.iter().enumerate() {
            let (mut row_at, mut from) = (0, 0);
            for &k in ks {
                let at = row_at + row_len(k, &widths[..r]);
                for slot in &mut all[at..at + k.min(w)] {
                    let (v, i) = if r == 0 {
                        mine[from]
                    } else {
                        let b = &parts[r][8 * from..8 * from + 8];
                        let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        (v, u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
                    };
                    from += 1;
                    if v.is_nan() {
                        return bad(r, non_finite(WireDtype::F32));
                    }
                    if i as usize >= w {
                        return bad(r, &format!("candidate {i} beyond its {w} rows of the head"));
                    }
                    *slot = (v, (off + i as usize) as u32);
                }
                row_at += row_len(k, widths);
            }
            off += w;
        }
        Ok(())
    }
}

/// The head of a tensor-parallel mesh: its session (its piece of every block, the
/// embeddings and the output head) joined to the workers.
pub struct TensorHead<'m> {
    session: Session<'m>,
    link: SharedLink<'m>,
    msg: Vec<u8>,
    failed: Option<String>,
    /// The candidates of a sampled decode step, and the scratch of the pick among them.
    cands: Vec<(f32, u32)>,
    sampler: Sampler,
}

impl<'m> TensorHead<'m> {
    /// The head over `session` (a model loaded with rank 0's `TensorPart`) and `comm` (rank 0
    /// of a mesh whose other ranks run [`serve_tensor`]).
    pub fn new(
        mut session: Session<'m>,
        comm: Box<dyn Comm + 'm>,
        timeouts: PipelineTimeouts,
    ) -> Result<Self> {
        let nodes = session.model().tensor.as_ref().map(|t| (t.rank, t.split.nodes()));
        if comm.rank() != 0 || nodes != Some((0, comm.size())) {
            return Err(DistError::Usage(format!(
                "a tensor-parallel head is rank 0 of its split over all {} nodes (model piece: {nodes:?})",
                comm.size()
            )));
        }
        let link = Link::shared(comm, timeouts);
        session.set_exchange(Box::new(MeshExchange(link.clone())));
        let sampler = Sampler::new(SamplerConfig::default(), session.model().config.vocab);
        Ok(TensorHead { session, link, msg: Vec::new(), failed: None, cands: Vec::new(), sampler })
    }

    /// Sends every gather's pieces as `dtype` from now on, on every node (f32 by default:
    /// exact; f16 halves the bytes and int8 with a scale per row quarters them, for slow
    /// links, and change the logits slightly; logits then travel as f16).
    pub fn with_wire(mut self, dtype: WireDtype) -> onebit_model::Result<Self> {
        self.control(WIRE, &[dtype.code() as usize])?;
        lock(&self.link).wire = dtype;
        Ok(self)
    }

    /// Bytes, gathers (`steps`) and time spent in them so far, on this node.
    pub fn wire(&self) -> WireStats {
        lock(&self.link).stats
    }

    /// The head's own session.
    pub fn session(&self) -> &Session<'m> {
        &self.session
    }

    fn check_ok(&self) -> onebit_model::Result<()> {
        match &self.failed {
            Some(why) => Err(onebit_model::Error::Mesh(format!("the mesh failed earlier: {why}"))),
            None => Ok(()),
        }
    }

    /// Sends `self.msg` to every worker.
    fn command(&mut self) -> onebit_model::Result<()> {
        self.check_ok()?;
        let r = {
            let mut l = lock(&self.link);
            let deadline = Instant::now() + l.timeouts.step;
            let workers = l.comm.size() - 1;
            l.stats.sent += (self.msg.len() * workers) as u64;
            (1..l.comm.size()).try_for_each(|w| l.comm.send(w, &self.msg, deadline))
        };
        r.map_err(|e| {
            let why = e.to_string();
            self.failed.get_or_insert_with(|| why.clone());
            onebit_model::Error::Mesh(why)
        })
    }

    /// Refuses rows the workers' sessions would take but the head's would not, before any
    /// worker hears of them (so every node accepts or refuses a call alike).
    fn check_rows(tokens: &[u32], slots: &[usize], distinct: bool) -> onebit_model::Result<()> {
        let bad = |why: String| Err(onebit_model::Error::Batch { op: "tensor step", why });
        if tokens.len() != slots.len() {
            return bad(format!("{} tokens for {} slots", tokens.len(), slots.len()));
        }
        if distinct {
            if let Some(i) = (0..slots.len()).find(|&i| slots[..i].contains(&slots[i])) {
                return bad(format!("slot {} is repeated", slots[i]));
            }
        }
        Ok(())
    }

    /// [`TensorHead::check_rows`] for a decode step: distinct slots, at most one row each.
    fn check_decode(&self, tokens: &[u32], slots: &[usize]) -> onebit_model::Result<()> {
        Self::check_rows(tokens, slots, true)?;
        if tokens.len() > self.session.slots() {
            return Err(onebit_model::Error::Batch {
                op: "decode",
                why: format!("{} rows for {} slots", tokens.len(), self.session.slots()),
            });
        }
        Ok(())
    }

    fn control(&mut self, kind: u8, words: &[usize]) -> onebit_model::Result<()> {
        put_control(&mut self.msg, kind, words);
        self.command()
    }
}

/// Runs a call on the head's session; a failed exchange marks the mesh failed.
macro_rules! on_session {
    ($self:ident, $call:expr) => {{
        let r = $call;
        if let Err(onebit_model::Error::Mesh(why)) = &r {
            $self.failed.get_or_insert_with(|| why.clone());
        }
        r
    }};
}

impl Engine for TensorHead<'_> {
    fn broken(&self) -> Option<&str> {
        self.failed.as_deref()
    }
    fn wire_stats(&self) -> Option<WireStats> {
        Some(self.wire())
    }
    fn vocab(&self) -> usize {
        self.session.model().config.vocab
    }
    fn slots(&self) -> usize {
        self.session.slots()
    }
    fn capacity(&self) -> usize {
        self.session.capacity()
    }
    fn position_of(&self, slot: usize) -> onebit_model::Result<usize> {
        self.session.position_of(slot)
    }
    fn reset_slot(&mut self, slot: usize) -> onebit_model::Result<()> {
        self.check_ok()?;
        self.session.reset_slot(slot)?;
        self.control(RESET, &[slot])
    }
    fn truncate_slot(&mut self, slot: usize, len: usize) -> onebit_model::Result<()> {
        self.check_ok()?;
        self.session.truncate_slot(slot, len)?;
        self.control(TRUNCATE, &[slot, len])
    }
    fn forward_slot(&mut self, slot: usize, tokens: &[u32]) -> onebit_model::Result<&mut [f32]> {
        put_prefill(&mut self.msg, slot, tokens);
        self.command()?;
        on_session!(self, self.session.forward_slot(slot, tokens))
    }
    fn decode(&mut self, tokens: &[u32], slots: &[usize]) -> onebit_model::Result<&mut [f32]> {
        self.check_decode(tokens, slots)?;
        put_rows(&mut self.msg, tokens, slots, None);
        self.command()?;
        on_session!(self, self.session.decode(tokens, slots))
    }
    fn decode_argmax(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        ids: &mut Vec<u32>,
    ) -> onebit_model::Result<()> {
        self.check_decode(tokens, slots)?;
        put_argmax(&mut self.msg, tokens, slots);
        self.command()?;
        on_session!(self, self.session.decode_argmax(tokens, slots, ids))
    }
    /// A sampled reply a device can pick ([`SamplerConfig::fits_device`]): each node sends
    /// its top-k candidates (8 bytes each) instead of its rows of logits.
    fn samples(&self, cfg: &SamplerConfig) -> bool {
        cfg.fits_device(self.vocab())
    }
    fn decode_sampled(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        draws: &[Draw],
        penalized: &[u32],
        ids: &mut Vec<u32>,
    ) -> onebit_model::Result<()> {
        self.check_decode(tokens, slots)?;
        if draws.len() != tokens.len() {
            let why = format!("{} draws for {} rows", draws.len(), tokens.len());
            return Err(onebit_model::Error::Batch { op: "decode_sampled", why });
        }
        put_sample(&mut self.msg, tokens, slots, draws, penalized);
        self.command()?;
        let mut cands = std::mem::take(&mut self.cands);
        let r =
            on_session!(self, self.session.decode_top(tokens, slots, draws, penalized, &mut cands));
        if r.is_ok() {
            ids.clear();
            let mut at = 0;
            for d in draws {
                // Each row holds its top-k, or the whole vocabulary where that is smaller.
                let k = (d.top_k as usize).min(self.vocab());
                ids.push(self.sampler.pick_among(&cands[at..at + k], d));
                at += k;
            }
        }
        self.cands = cands;
        r
    }
    fn step(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        want: &[bool],
    ) -> onebit_model::Result<&mut [f32]> {
        Self::check_rows(tokens, slots, false)?;
        if want.len() != tokens.len() {
            return Err(onebit_model::Error::Batch {
                op: "step",
                why: format!("{} flags for {} rows", want.len(), tokens.len()),
            });
        }
        put_rows(&mut self.msg, tokens, slots, Some(want));
        self.command()?;
        on_session!(self, self.session.step(tokens, slots, want))
    }
}

impl Drop for TensorHead<'_> {
    /// Tells the workers to finish (best effort: they also stop when the connection closes).
    fn drop(&mut self) {
        if self.failed.is_none() {
            let mut l = lock(&self.link);
            let deadline = Instant::now() + Duration::from_secs(1);
            for w in 1..l.comm.size() {
                let _ = l.comm.send(w, &[STOP], deadline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inproc::InProcComm;

    /// Two ranks gather pieces of widths 3 and 2 over two rows in `dtype`; rank 1 puts `bad`
    /// at its second row's first value. Returns both ranks' results.
    fn gather_with(dtype: WireDtype, bad: f32) -> [std::result::Result<Vec<f32>, String>; 2] {
        let mut comms = InProcComm::mesh(2).into_iter();
        let (c0, c1) = (comms.next().unwrap(), comms.next().unwrap());
        let widths = [3, 2];
        let run = move |c: InProcComm, mine: Vec<f32>| {
            let link = Link::shared(Box::new(c), PipelineTimeouts::default());
            lock(&link).wire = dtype;
            let mut full = vec![0.0; 10];
            MeshExchange(link).gather(&mine, 2, &widths, &mut full).map(|()| full)
        };
        let worker = std::thread::spawn(move || run(c1, vec![10.0, 11.0, bad, 13.0]));
        let head = run(c0, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        [head, worker.join().unwrap()]
    }

    #[test]
    fn pieces_meet_in_rank_order_and_a_non_finite_value_names_its_node() {
        let want = [0.0, 1.0, 2.0, 10.0, 11.0, 3.0, 4.0, 5.0, 12.0, 13.0];
        for r in gather_with(WireDtype::F32, 12.0) {
            assert_eq!(r.unwrap(), want);
        }
        for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY] {
            for r in gather_with(WireDtype::F32, bad) {
                let e = r.unwrap_err();
                assert!(e.contains("node 1: bad frame: a NaN or infinite value"), "{e}");
            }
        }
        // The largest finite values and subnormals pass.
        assert_eq!(gather_with(WireDtype::F32, f32::MAX)[0].as_ref().unwrap()[8], f32::MAX);
        assert_eq!(gather_with(WireDtype::F32, -1e-45)[1].as_ref().unwrap()[8], -1e-45);
    }

    #[test]
    fn with_a_lossy_wire_every_node_holds_the_same_rounded_values() {
        for dtype in [WireDtype::F16, WireDtype::Q8] {
            let [a, b] = gather_with(dtype, 12.3);
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            // Rank 0's own 1.0 comes back rounded with its row (q8: absmax 2 → 1.0 · 127/2 → 64).
            if dtype == WireDtype::Q8 {
                assert_eq!(a[1], 64.0 * (2.0 / 127.0));
            }
        }
    }

    /// Two ranks sum two rows of width 3 (and a statistic a row) in `dtype`; rank 1 sends
    /// `bad` at its second row's first value, or raw bytes `raw` instead of its piece.
    fn sum_with(
        dtype: WireDtype,
        bad: f32,
        raw: Option<Vec<u8>>,
    ) -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
        let mut comms = InProcComm::mesh(2).into_iter();
        let (c0, mut c1) = (comms.next().unwrap(), comms.next().unwrap());
        let run = move |c: InProcComm, mine: Vec<f32>, stats: Vec<f32>| {
            let link = Link::shared(Box::new(c), PipelineTimeouts::default());
            lock(&link).wire = dtype;
            let (mut sum, mut all) = (vec![9.0; 6], vec![9.0; 2]);
            MeshExchange(link).sum(&mine, &stats, 2, 3, &mut sum, &mut all).map(|()| (sum, all))
        };
        let worker = std::thread::spawn(move || match raw {
            Some(b) => {
                c1.send(0, &b, Instant::now() + Duration::from_secs(5)).unwrap();
                let mut ignored = Vec::new();
                let _ = c1.recv(0, &mut ignored, Instant::now() + Duration::from_secs(5));
                Ok((Vec::new(), Vec::new()))
            }
            None => run(c1, vec![10.0, 20.0, 30.0, bad, 0.5, -0.5], vec![3.0, 4.0]),
        });
        let head = run(c0, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0.5, 0.25]);
        let theirs = worker.join().unwrap();
        if let (Ok(a), Ok(b)) = (&head, &theirs) {
            if !b.0.is_empty() {
                assert_eq!(a, b, "every node holds the same sums");
            }
        }
        head
    }

    #[test]
    fn partial_updates_sum_in_rank_order_and_a_bad_piece_names_its_node() {
        let (sum, stats) = sum_with(WireDtype::F32, 40.0, None).unwrap();
        assert_eq!(sum, [11.0, 22.0, 33.0, 44.0, 5.5, 5.5]);
        assert_eq!(stats, [3.5, 4.25]);
        // int8: every piece (rank 0's own too) comes back rounded with its row's scale.
        let (sum, _) = sum_with(WireDtype::Q8, 40.0, None).unwrap();
        let q = |v: f32, absmax: f32| (v * 127.0 / absmax).round() * (absmax / 127.0);
        assert_eq!(sum[4], q(5.0, 6.0) + q(0.5, 40.0));
        for bad in [f32::NAN, f32::INFINITY] {
            let e = sum_with(WireDtype::F32, bad, None).unwrap_err();
            assert!(e.contains("node 1: bad frame: a NaN or infinite value"), "{e}");
        }
        let e = sum_with(WireDtype::F32, 0.0, Some(vec![0; 10])).unwrap_err();
        assert!(e.contains("node 1: bad frame: 2 bytes for 2 rows of 3"), "{e}");
        let e = sum_with(WireDtype::F32, 0.0, Some(vec![0; 3])).unwrap_err();
        assert!(e.contains("node 1: bad frame: 3 bytes for 2 rows of partial sums"), "{e}");
    }

    /// Rank 0's candidates for two rows, [(1.0 at 2), (0.25 at 1)] and [(0.5 at 0), (0.0 at
    /// 2)] of its 3 rows of the head (two candidates a row), against `theirs` from rank 1 (2
    /// rows of the head), sent through rank 1's exchange when `Ok` or as raw bytes when `Err`.
    fn candidates_with(
        theirs: std::result::Result<Vec<(f32, u32)>, Vec<u8>>,
    ) -> std::result::Result<Vec<(f32, u32)>, String> {
        let mut comms = InProcComm::mesh(2).into_iter();
        let (c0, mut c1) = (comms.next().unwrap(), comms.next().unwrap());
        let (ks, widths) = ([2, 2], [3, 2]);
        let worker = std::thread::spawn(move || match theirs {
            Ok(mine) => {
                let link = Link::shared(Box::new(c1), PipelineTimeouts::default());
                let mut ignored = Vec::new();
                MeshExchange(link).candidates_to_first(&mine, &ks, &widths, &mut ignored).unwrap();
            }
            Err(raw) => c1.send(0, &raw, Instant::now() + Duration::from_secs(5)).unwrap(),
        });
        let link = Link::shared(Box::new(c0), PipelineTimeouts::default());
        let mut all = Vec::new();
        let mine = [(1.0, 2), (0.25, 1), (0.5, 0), (0.0, 2)];
        let r = MeshExchange(link).candidates_to_first(&mine, &ks, &widths, &mut all);
        worker.join().unwrap();
        r.map(|()| all)
    }

    #[test]
    fn candidates_meet_row_by_row_in_rank_order_indexed_over_the_vocabulary() {
        let theirs = vec![(1.5, 1), (-3.0, 0), (0.75, 0), (0.5, 1)];
        let want =
            [(1.0, 2), (0.25, 1), (1.5, 4), (-3.0, 3), (0.5, 0), (0.0, 2), (0.75, 3), (0.5, 4)];
        assert_eq!(candidates_with(Ok(theirs)).unwrap(), want);
        let e = candidates_with(Ok(vec![(f32::NAN, 0), (0.0, 0), (0.0, 0), (0.0, 1)])).unwrap_err();
        assert!(e.contains("node 1: bad frame: a NaN or infinite value"), "{e}");
        let e = candidates_with(Ok(vec![(0.0, 0), (0.0, 2), (0.0, 0), (0.0, 1)])).unwrap_err();
        assert!(e.contains("node 1: bad frame: candidate 2 beyond its 2 rows of the head"), "{e}");
        let e = candidates_with(Err(vec![0; 12])).unwrap_err();
        assert!(e.contains("node 1: bad frame: 12 bytes of candidates for 2 rows"), "{e}");
    }
}

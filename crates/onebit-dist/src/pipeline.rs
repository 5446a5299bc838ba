//! Pipeline parallelism: the blocks split into contiguous ranges, one per node in rank order.
//! Rank 0 (the head) holds the embeddings, its blocks and the final norm and head; the hidden
//! states of a step travel 0 → 1 → … → n−1 and back to 0, which turns them into logits and
//! samples. Only hidden states cross the wire (`hidden` f32 per row, exact: a pipeline's
//! logits are bit-identical to one node's), and the sampler, tokenizer and KV bookkeeping stay
//! on the head, where the user is.
//!
//! [`PipelineHead`] is the head's [`Engine`], so the generation loop drives a mesh as it
//! drives a local session; [`serve_stage`] (in `worker_stage.rs`) is a worker's loop. Each stage keeps its own KV
//! cache for its blocks and its own positions; the head forwards slot resets so they agree.
//! The same head leads a hybrid mesh ([`crate::hybrid`]), whose stages are groups of nodes:
//! then it talks to its stage's leaders, and hands its rows' embeddings to its own group.
//!
//! Message (one frame each): kind (1 byte) then for `ROWS` the element type, the row count n
//! (u32), n slots (u32) and n hidden states (`crate::wire`), little-endian; for `RESET` one
//! slot (u32); for `TRUNCATE` a slot and a length (u32 each); `STOP` nothing; the element
//! types link by link in `crate::stage_wires`.
//! Every message is checked against the session before it is used.

use crate::comm::Comm;
use crate::error::{DistError, Result};
use crate::hybrid::{Ring, Role};
use crate::stage_wires::StageWires;
use crate::tensor::{lock, SharedLink};
use crate::wire::{get_rows, put_rows, WireDtype, ROWS};
use onebit_model::{Engine, Session, StageInput};
use std::time::{Duration, Instant};

pub use crate::worker_stage::serve_stage;

pub(crate) const RESET: u8 = 2;
pub(crate) const STOP: u8 = 3;
pub(crate) const TRUNCATE: u8 = 4;

/// How long a step may wait on the other stages.
#[derive(Clone, Copy, Debug)]
pub struct PipelineTimeouts {
    /// Base wait for a step's answer from the last stage.
    pub step: Duration,
    /// Extra wait per row in the step (long prompt chunks take longer).
    pub per_row: Duration,
    /// How long a worker waits for the next message before giving up on the head.
    pub idle: Duration,
}

impl Default for PipelineTimeouts {
    fn default() -> Self {
        PipelineTimeouts {
            step: Duration::from_secs(5),
            per_row: Duration::from_millis(50),
            idle: Duration::from_secs(3600),
        }
    }
}

/// Bytes and waits on the wire (defined at the engine seam, which reports them).
pub use onebit_model::WireStats;

/// A pass sent round the ring whose answer has not come back yet.
struct InFlight {
    slots: Vec<usize>,
    want: Vec<bool>,
    deadline: Instant,
}

/// The head of a pipeline: its own stage (embeddings, its blocks, the head) and the mesh.
///
/// Passes can overlap: [`PipelineHead::submit`] runs the head's blocks for one group of rows
/// and sends them on; [`PipelineHead::collect`] takes the oldest group's answer and runs the
/// head. With two groups in flight, the head computes one while the workers compute the
/// other, which is where a pipeline's throughput comes from (a single group at a time leaves
/// every node idle while the others work). Prompts go through in chunks two at a time.
pub struct PipelineHead<'m> {
    session: Session<'m>,
    link: SharedLink<'m>,
    /// The head's place in the ring: the first stage's leader, the last's, its group.
    role: Role,
    /// The head's group's next message, and its rows' embeddings.
    cmd: Vec<u8>,
    embedded: Vec<f32>,
    timeouts: PipelineTimeouts,
    out: Vec<u8>,
    inb: Vec<u8>,
    hidden: Vec<f32>,
    slots: Vec<usize>,
    in_flight: std::collections::VecDeque<InFlight>,
    spare: Vec<(Vec<usize>, Vec<bool>)>,
    wanted: Vec<f32>,
    failed: Option<String>,
    /// The type the head sends its rows on in (the hop out of stage 0).
    wire: WireDtype,
    /// Stages in the ring.
    stages: usize,
}

impl<'m> PipelineHead<'m> {
    /// The head over `session` (a model holding blocks `0..k`, the embeddings and the head)
    /// and `comm` (rank 0 of a mesh of at least 2 whose other ranks run [`serve_stage`]).
    pub fn new(
        session: Session<'m>,
        comm: Box<dyn Comm + 'm>,
        timeouts: PipelineTimeouts,
    ) -> Result<Self> {
        let ring = Ring::plain(comm.size())?;
        Self::hybrid(session, comm, &ring, timeouts)
    }

    /// The head of a hybrid mesh laid out as `ring` ([`crate::hybrid`]): `session` holds the
    /// first stage's blocks (this node's piece of them where the stage has several nodes),
    /// the embeddings and the whole output head; the other ranks run
    /// [`crate::worker_stage::serve_hybrid`].
    pub fn hybrid(
        mut session: Session<'m>,
        comm: Box<dyn Comm + 'm>,
        ring: &Ring,
        timeouts: PipelineTimeouts,
    ) -> Result<Self> {
        if comm.rank() != 0 || comm.size() < 2 || ring.nodes() != comm.size() {
            return Err(DistError::Usage(format!(
                "a pipeline head is rank 0 of at least 2 nodes in its ring of {}, not rank {} of {}",
                ring.nodes(),
                comm.rank(),
                comm.size()
            )));
        }
        let role = ring.role(0)?;
        let link = crate::worker_stage::join_stage(&mut session, comm, &role, timeouts)?;
        Ok(PipelineHead {
            session,
            link,
            role,
            cmd: Vec::new(),
            embedded: Vec::new(),
            timeouts,
            out: Vec::new(),
            inb: Vec::new(),
            hidden: Vec::new(),
            slots: Vec::new(),
            in_flight: std::collections::VecDeque::with_capacity(4),
            spare: Vec::new(),
            wanted: Vec::new(),
            failed: None,
            wire: WireDtype::F32,
            stages: ring.len(),
        })
    }

    /// Sends hidden states and the groups' pieces as `dtype` on every link (f32 by default:
    /// exact; f16 and int8 for slow links, which change the logits slightly).
    pub fn with_wire(self, dtype: WireDtype) -> onebit_model::Result<Self> {
        let stages = self.stages;
        self.with_wires(StageWires::uniform(stages, dtype))
    }

    /// Sends on each link in its own type from now on: every node hears `wires` (one per
    /// stage) before any later rows.
    pub fn with_wires(mut self, wires: StageWires) -> onebit_model::Result<Self> {
        if wires.stages() != self.stages || wires.gathers.len() != self.stages {
            return Err(onebit_model::Error::Mesh(format!(
                "element types for {} stages on a ring of {}",
                wires.stages(),
                self.stages
            )));
        }
        let mut msg = Vec::new();
        wires.encode(&mut msg);
        self.send_control(&msg)?;
        self.wire = wires.hops[0];
        lock(&self.link).wire = wires.gathers[0];
        Ok(self)
    }

    /// Bytes and waits so far (round the ring, and in the head's group's gathers).
    pub fn wire(&self) -> WireStats {
        lock(&self.link).stats
    }

    /// The head's own session.
    pub fn session(&self) -> &Session<'m> {
        &self.session
    }

    /// Passes sent whose logits have not been collected.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// After a failed exchange the stages may disagree on positions: every later call fails
    /// with the first error rather than compute on a broken mesh.
    fn check_ok(&self) -> onebit_model::Result<()> {
        match &self.failed {
            Some(why) => Err(onebit_model::Error::Mesh(format!("the mesh failed earlier: {why}"))),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: DistError) -> onebit_model::Error {
        let why = e.to_string();
        self.failed = Some(why.clone());
        onebit_model::Error::Mesh(why)
    }

    /// Runs the head's blocks over `tokens` in `slots` (row i in slot `slots[i]`, as
    /// [`Session::stage`]) and sends the rows on; [`PipelineHead::collect`] returns their
    /// logits (of every row, or of the last only when `last_only`), oldest pass first.
    pub fn submit(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        last_only: bool,
    ) -> onebit_model::Result<()> {
        self.submit_rows(tokens, slots, &mut |i, n| !last_only || i + 1 == n)
    }

    /// [`PipelineHead::submit`] with the rows whose logits are wanted chosen by
    /// `want(row, rows)`.
    fn submit_rows(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        want: &mut dyn FnMut(usize, usize) -> bool,
    ) -> onebit_model::Result<()> {
        self.check_ok()?;
        if tokens.is_empty() {
            return Err(onebit_model::Error::Batch { op: "submit", why: "no rows".into() });
        }
        let t = self.timeouts;
        let deadline = Instant::now() + t.step + t.per_row * slots.len() as u32;
        // The head's group runs the same rows from their embeddings, exact in f32 (ids the
        // session refuses are not sent: the head refuses them before any gather).
        let m = self.session.model();
        let (h, vocab) = (m.config.hidden, m.config.vocab);
        if !self.role.members.is_empty() && tokens.iter().all(|&t| (t as usize) < vocab) {
            self.embedded.resize(tokens.len() * h, 0.0);
            for (row, &t) in self.embedded.chunks_exact_mut(h).zip(tokens) {
                m.embed.row(t as usize, h, row);
            }
            put_rows(&mut self.cmd, slots, &self.embedded, WireDtype::F32);
            if let Err(e) = self.send_to_group(deadline) {
                return Err(self.fail(e));
            }
        }
        let x = match self.session.stage(StageInput::Tokens(tokens), slots) {
            Err(onebit_model::Error::Mesh(why)) => {
                self.failed.get_or_insert_with(|| why.clone());
                return Err(onebit_model::Error::Mesh(why));
            }
            r => r?,
        };
        put_rows(&mut self.out, slots, x, self.wire);
        let next = self.role.next.unwrap_or(1);
        let sent = {
            let mut l = lock(&self.link);
            l.stats.sent += self.out.len() as u64;
            l.stats.steps += 1;
            l.comm.send(next, &self.out, deadline)
        };
        if let Err(e) = sent {
            return Err(self.fail(e));
        }
        let (mut v, mut w) = self.spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(slots);
        w.clear();
        w.extend((0..slots.len()).map(|i| want(i, slots.len())));
        // The answer is due a step's time after the passes ahead of it.
        let after =
            self.in_flight.back().map_or(Instant::now(), |p| p.deadline.max(Instant::now()));
        let deadline = after + t.step + t.per_row * slots.len() as u32;
        self.in_flight.push_back(InFlight { slots: v, want: w, deadline });
        Ok(())
    }

    /// The logits of the oldest pass in flight, one row per wanted row (every row, or the last).
    pub fn collect(&mut self) -> onebit_model::Result<&mut [f32]> {
        self.check_ok()?;
        let Some(p) = self.in_flight.pop_front() else {
            return Err(onebit_model::Error::Batch {
                op: "collect",
                why: "nothing in flight".into(),
            });
        };
        let r = self.receive(&p);
        let h = self.session.model().config.hidden;
        self.wanted.clear();
        for (row, _) in self.hidden.chunks_exact(h).zip(&p.want).filter(|(_, &w)| w) {
            self.wanted.extend_from_slice(row);
        }
        self.spare.push((p.slots, p.want));
        if let Err(e) = r {
            return Err(self.fail(e));
        }
        self.session.stage_head(&self.wanted)
    }

    /// Sends `self.cmd` to the other nodes of the head's stage.
    fn send_to_group(&mut self, deadline: Instant) -> Result<()> {
        let mut l = lock(&self.link);
        for &m in &self.role.members {
            l.comm.send(m, &self.cmd, deadline)?;
            l.stats.sent += self.cmd.len() as u64;
        }
        Ok(())
    }

    /// Receives the last stage's rows for pass `p` into `self.hidden`.
    fn receive(&mut self, p: &InFlight) -> Result<()> {
        let (last, h) = (self.role.source, self.session.model().config.hidden);
        let t0 = Instant::now();
        let mut l = lock(&self.link);
        l.comm.recv(last, &mut self.inb, p.deadline)?;
        l.stats.wait += t0.elapsed();
        l.stats.received += self.inb.len() as u64;
        drop(l);
        let peer = last.to_string();
        if self.inb.first() != Some(&ROWS) {
            return Err(DistError::Frame { peer, why: "expected rows".into() });
        }
        get_rows(&self.inb, h, &mut self.slots, &mut self.hidden)
            .map_err(|why| DistError::Frame { peer: peer.clone(), why })?;
        if self.slots != p.slots {
            return Err(DistError::Frame { peer, why: "rows came back for other slots".into() });
        }
        Ok(())
    }

    /// Sends a control message (reset, truncate) down the ring, in order with the rows.
    fn send_control(&mut self, msg: &[u8]) -> onebit_model::Result<()> {
        let deadline = Instant::now() + self.timeouts.step;
        self.cmd.clear();
        self.cmd.extend_from_slice(msg);
        let next = self.role.next.unwrap_or(1);
        let r = self
            .send_to_group(deadline)
            .and_then(|()| lock(&self.link).comm.send(next, msg, deadline));
        if let Err(e) = r {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Collects every pass in flight (their logits are dropped).
    fn drain(&mut self) -> onebit_model::Result<()> {
        while !self.in_flight.is_empty() {
            self.collect()?;
        }
        Ok(())
    }

    /// [`Self::drain`] where a pass in flight holds `slot`. A reset or truncation of another
    /// slot need not wait: the head's stage of those passes is done (the rest of its work,
    /// the output head, reads no cache), and the stages down the ring get the control message
    /// behind their rows. A server placing a request keeps its other group in flight so.
    fn drain_holding(&mut self, slot: usize) -> onebit_model::Result<()> {
        if self.in_flight.iter().any(|p| p.slots.contains(&slot)) {
            self.drain()?;
        }
        Ok(())
    }
}

impl Engine for PipelineHead<'_> {
    fn wire_stats(&self) -> Option<WireStats> {
        Some(self.wire())
    }
    fn broken(&self) -> Option<&str> {
        self.failed.as_deref()
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
        self.drain_holding(slot)?;
        self.session.reset_slot(slot)?;
        let mut msg = [RESET, 0, 0, 0, 0];
        msg[1..].copy_from_slice(&(slot as u32).to_le_bytes());
        self.send_control(&msg)
    }
    fn forward_slot(&mut self, slot: usize, tokens: &[u32]) -> onebit_model::Result<&mut [f32]> {
        self.drain()?;
        if tokens.is_empty() {
            return Err(onebit_model::Error::Batch { op: "forward", why: "no tokens".into() });
        }
        // Prompt chunks two at a time: the head runs chunk k+1 while the workers run chunk k.
        // Only the prompt's last row needs logits: earlier chunks skip the output head.
        let chunk = self.session.max_batch();
        let slots = vec![slot; chunk.min(tokens.len())];
        let last = (tokens.len() - 1) / chunk;
        for (k, part) in tokens.chunks(chunk).enumerate() {
            if self.in_flight.len() == 2 {
                self.collect()?;
            }
            let n = part.len();
            self.submit_rows(part, &slots[..n], &mut |i, _| k == last && i + 1 == n)?;
        }
        while self.in_flight.len() > 1 {
            self.collect()?;
        }
        self.collect()
    }
    fn decode(&mut self, tokens: &[u32], slots: &[usize]) -> onebit_model::Result<&mut [f32]> {
        self.drain()?;
        for (i, s) in slots.iter().enumerate() {
            if slots[..i].contains(s) {
                return Err(onebit_model::Error::Batch {
                    op: "decode",
                    why: format!("slot {s} is repeated"),
                });
            }
        }
        self.submit(tokens, slots, false)?;
        self.collect()
    }
    fn truncate_slot(&mut self, slot: usize, len: usize) -> onebit_model::Result<()> {
        self.drain_holding(slot)?;
        self.session.truncate_slot(slot, len)?;
        let mut msg = vec![TRUNCATE];
        msg.extend((slot as u32).to_le_bytes());
        msg.extend((len.min(u32::MAX as usize) as u32).to_le_bytes());
        self.send_control(&msg)
    }
    fn step(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        want: &[bool],
    ) -> onebit_model::Result<&mut [f32]> {
        self.drain()?;
        self.submit_step(tokens, slots, want)?;
        self.collect()
    }
    fn overlaps(&self) -> bool {
        true
    }
    fn submit_step(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        want: &[bool],
    ) -> onebit_model::Result<()> {
        if want.len() != tokens.len() {
            return Err(onebit_model::Error::Batch {
                op: "step",
                why: format!("{} flags for {} rows", want.len(), tokens.len()),
            });
        }
        if self.in_flight.len() >= 2 {
            return Err(onebit_model::Error::Batch {
                op: "submit_step",
                why: "two passes in flight already: collect one first".into(),
            });
        }
        // With no row wanted the rows still go round (their KV is needed) and no head runs.
        self.submit_rows(tokens, slots, &mut |i, _| want[i])
    }
    fn collect_step(&mut self) -> onebit_model::Result<&mut [f32]> {
        self.collect()
    }
}

impl Drop for PipelineHead<'_> {
    /// Tells the stages to finish (best effort: they also stop when the connection closes).
    fn drop(&mut self) {
        if self.failed.is_none() {
            self.timeouts.step = Duration::from_secs(1);
            let _ = self.send_control(&[STOP]);
        }
    }
}

/// Blocks per node so that each node reads about the same bytes per token: the head (rank
/// 0) also reads the output head, so it takes fewer blocks. `block_bytes` and `head_bytes`
/// are per-token reads; every node gets at least one block where there are enough.
pub fn balanced_split(
    layers: usize,
    nodes: usize,
    block_bytes: f64,
    head_bytes: f64,
) -> Vec<usize> {
    balanced_stages(layers, &vec![1; nodes], block_bytes, head_bytes)
}

/// [`balanced_split`] for stages of `groups[i]` nodes each (a hybrid mesh): each stage's
/// blocks in proportion to its nodes, the head's stage less the output head's bytes.
pub fn balanced_stages(
    layers: usize,
    groups: &[usize],
    block_bytes: f64,
    head_bytes: f64,
) -> Vec<usize> {
    let (stages, nodes) = (groups.len(), groups.iter().sum::<usize>());
    if stages == 0 || nodes == 0 {
        return Vec::new();
    }
    let share = (layers as f64 * block_bytes + head_bytes) / nodes as f64;
    let head_blocks = ((share * groups[0] as f64 - head_bytes) / block_bytes).round().max(1.0);
    let head_blocks =
        (head_blocks as usize).min(layers.saturating_sub(stages - 1)).max(1.min(layers));
    let weights: Vec<f64> = groups[1..].iter().map(|&n| n as f64).collect();
    let mut rest = crate::plan::apportion(layers - head_blocks, &weights);
    // Every stage holds a block where there are enough: one from the largest to any with none.
    while let Some(i) = rest.iter().position(|&b| b == 0) {
        let big = (0..rest.len()).max_by_key(|&j| rest[j]).unwrap_or(i);
        if rest[big] < 2 {
            break;
        }
        rest[big] -= 1;
        rest[i] += 1;
    }
    std::iter::once(head_blocks).chain(rest).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_head_takes_fewer_blocks() {
        // 2B4T-like: blocks of 17.4 MB, a head of 328 MB, 30 blocks over 2 nodes.
        assert_eq!(balanced_split(30, 2, 17.4, 328.0), vec![6, 24]);
        assert_eq!(balanced_split(30, 2, 17.4, 0.0), vec![15, 15]);
        assert_eq!(balanced_split(2, 2, 1.0, 100.0), vec![1, 1]);
        assert_eq!(balanced_split(4, 3, 1.0, 0.0).iter().sum::<usize>(), 4);
        // Stages of 1 and 2 nodes: the pair takes twice a node's bytes.
        assert_eq!(balanced_stages(30, &[1, 2], 17.4, 0.0), vec![10, 20]);
        // Two pairs, the 2B4T head: (850 / 4 · 2 − 328) / 17.4 ≈ 6 blocks for the head's pair.
        assert_eq!(balanced_stages(30, &[2, 2], 17.4, 328.0), vec![6, 24]);
    }

    proptest! {
        #[test]
        fn splits_cover_every_block(layers in 1usize..100, nodes in 1usize..6, head in 0.0f64..50.0) {
            let s = balanced_split(layers, nodes, 1.0, head);
            prop_assert_eq!(s.len(), nodes);
            prop_assert_eq!(s.iter().sum::<usize>(), layers);
        }
    }
}

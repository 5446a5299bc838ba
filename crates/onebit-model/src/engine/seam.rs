//! [`Engine`]: the seam between generation and whatever computes logits, so one generation
//! loop ([`crate::generate`], [`crate::generate_batch`]) drives a local [`Session`] and the
//! device mesh's distributed executors (onebit-dist) alike.

use super::{argmax, Draw, Sampler, SamplerConfig, Session};
use crate::error::Result;
use std::time::Duration;

/// What a mesh engine's node has sent, received and waited for so far, as `onebit bench
/// --mesh` and the server's `/metrics` report it.
#[derive(Clone, Copy, Debug, Default)]
pub struct WireStats {
    /// Bytes this node sent (payload).
    pub sent: u64,
    /// Bytes this node received (payload).
    pub received: u64,
    /// Steps (messages with rows) this node sent: a pipeline's passes, tensor parallelism's
    /// exchanges.
    pub steps: u64,
    /// Time spent waiting on the other nodes.
    pub wait: Duration,
}

/// Sequences in slots, advanced by prompt chunks and multi-sequence decode steps.
pub trait Engine {
    /// Logits per row.
    fn vocab(&self) -> usize;
    /// Independent sequences.
    fn slots(&self) -> usize;
    /// Positions per sequence.
    fn capacity(&self) -> usize;
    /// Tokens `slot` has seen.
    fn position_of(&self, slot: usize) -> Result<usize>;
    /// Forgets the sequence in `slot`.
    fn reset_slot(&mut self, slot: usize) -> Result<()>;
    /// Runs `tokens` at the next positions of `slot`; the logits after the last one.
    fn forward_slot(&mut self, slot: usize, tokens: &[u32]) -> Result<&mut [f32]>;
    /// One token for each of several distinct slots; one row of logits per token, in order.
    fn decode(&mut self, tokens: &[u32], slots: &[usize]) -> Result<&mut [f32]>;
    /// Keeps only the first `len` positions of `slot` (a new request sharing a prefix).
    fn truncate_slot(&mut self, slot: usize, len: usize) -> Result<()>;
    /// One pass over rows from any slots, as [`Session::step`]: logits of the rows where
    /// `want[i]`, one row of `vocab` each, in row order.
    fn step(&mut self, tokens: &[u32], slots: &[usize], want: &[bool]) -> Result<&mut [f32]>;
    /// A decode step like [`Engine::decode`] that keeps only each row's greedy token
    /// ([`argmax`]) in `ids`: an engine on a device picks it there and sends back one id per
    /// row instead of a row of logits.
    fn decode_argmax(&mut self, tokens: &[u32], slots: &[usize], ids: &mut Vec<u32>) -> Result<()> {
        let vocab = self.vocab();
        let logits = self.decode(tokens, slots)?;
        ids.clear();
        ids.extend(logits.chunks_exact(vocab).map(argmax));
        Ok(())
    }
    /// Whether this engine picks sampled tokens itself ([`Engine::decode_sampled`]) for
    /// replies sampled with `cfg` (a device engine, for the settings its sampler covers).
    fn samples(&self, cfg: &SamplerConfig) -> bool {
        let _ = cfg;
        false
    }
    /// A decode step like [`Engine::decode`] that keeps only each row's token as
    /// [`Sampler::pick`] picks it by `draws[i]` (penalized tokens from `penalized`) in `ids`.
    /// Engines for which [`Engine::samples`] holds pick on their device; this default picks
    /// on the host (and allocates its sampler scratch, so the generation loop calls it only
    /// where `samples` holds).
    fn decode_sampled(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        draws: &[Draw],
        penalized: &[u32],
        ids: &mut Vec<u32>,
    ) -> Result<()> {
        let vocab = self.vocab();
        let mut sampler = Sampler::new(SamplerConfig::default(), vocab);
        let logits = self.decode(tokens, slots)?;
        ids.clear();
        for (row, d) in logits.chunks_exact_mut(vocab).zip(draws) {
            ids.push(sampler.pick(row, d, penalized));
        }
        Ok(())
    }
    /// The head's traffic on its mesh so far (None for an engine that is not a mesh's head).
    fn wire_stats(&self) -> Option<WireStats> {
        None
    }
    /// Why this engine can run nothing more (a mesh that lost a node), if it cannot; a
    /// local session never breaks.
    fn broken(&self) -> Option<&str> {
        None
    }
    /// Whether a pass started with [`Engine::submit_step`] runs while the caller starts
    /// another (a pipeline mesh's head: its stages work on two groups of rows at once), so a
    /// caller with many sequences gains by keeping two passes in flight. Others run one pass
    /// at a time and have neither `submit_step` nor `collect_step`.
    fn overlaps(&self) -> bool {
        false
    }
    /// Starts a pass like [`Engine::step`] without waiting for it; [`Engine::collect_step`]
    /// returns its logits, oldest pass first. At most two passes are in flight, and any other
    /// call first finishes them (dropping their logits) — but [`Engine::reset_slot`] and
    /// [`Engine::truncate_slot`] of a slot no pass in flight holds, which take effect at once
    /// and leave the passes running.
    fn submit_step(&mut self, _tokens: &[u32], _slots: &[usize], _want: &[bool]) -> Result<()> {
        Err(crate::Error::Batch {
            op: "submit_step",
            why: "this engine runs one pass at a time".into(),
        })
    }
    /// The logits of the oldest pass [`Engine::submit_step`] started, as [`Engine::step`]'s.
    fn collect_step(&mut self) -> Result<&mut [f32]> {
        Err(crate::Error::Batch { op: "collect_step", why: "no pass in flight".into() })
    }
}

impl Engine for Session<'_> {
    fn vocab(&self) -> usize {
        self.model().config.vocab
    }
    fn slots(&self) -> usize {
        Session::slots(self)
    }
    fn capacity(&self) -> usize {
        Session::capacity(self)
    }
    fn position_of(&self, slot: usize) -> Result<usize> {
        Session::position_of(self, slot)
    }
    fn reset_slot(&mut self, slot: usize) -> Result<()> {
        Session::reset_slot(self, slot)
    }
    fn forward_slot(&mut self, slot: usize, tokens: &[u32]) -> Result<&mut [f32]> {
        Session::forward_slot(self, slot, tokens)
    }
    fn decode(&mut self, tokens: &[u32], slots: &[usize]) -> Result<&mut [f32]> {
        Session::decode(self, tokens, slots)
    }
    fn truncate_slot(&mut self, slot: usize, len: usize) -> Result<()> {
        Session::truncate_slot(self, slot, len)
    }
    fn step(&mut self, tokens: &[u32], slots: &[usize], want: &[bool]) -> Result<&mut [f32]> {
        Session::step(self, tokens, slots, want)
    }
    fn decode_argmax(&mut self, tokens: &[u32], slots: &[usize], ids: &mut Vec<u32>) -> Result<()> {
        Session::decode_argmax(self, tokens, slots, ids)
    }
}

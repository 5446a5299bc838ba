//! The loop of the engine thread, one turn at a time.
//!
//! Each turn of the loop admits queued requests into free slots (the slot whose cached
//! tokens share the longest prefix with the new prompt is chosen, and that prefix is not
//! computed again), prefills one chunk of every prompt still being read, samples one token
//! for every slot whose logits are ready, and decodes all of those tokens in one pass — so
//! running streams keep flowing while new prompts are read, and the weights are read once per
//! step for every sequence. A request whose client went away is cancelled at the next turn.
//! Inference runs on this thread and the model's pool; the async runtime never waits on it.
//!
//! A turn of decode rows only, whose replies are all greedy (or all sampled in a way the
//! engine samples itself, [`ModelEngine::samples`]), has the engine pick the tokens
//! ([`ModelEngine::decode_argmax`], [`ModelEngine::decode_sampled`]): a tensor-parallel mesh
//! then sends each node's candidates instead of its rows of logits (256 kB a row for a
//! 128k-word vocabulary), and a GPU one id a row. A turn that also reads a prompt gathers
//! logits as before: splitting it in two passes would read the weights twice.
//!
//! An engine that overlaps passes ([`ModelEngine::overlaps`]: a pipeline mesh's head) gets two
//! groups of slots in turns: a pass takes at most half of the busy slots
//! ([`ModelEngine::submit_step`]) and the turn then takes the pass started before it
//! ([`ModelEngine::collect_step`]), which the later stages computed meanwhile. A slot whose
//! decode row is in flight sits a turn out (its next token needs those logits); a prompt's
//! next chunk follows the one in flight, so one long prompt keeps both machines busy. A
//! request is placed beside the pass in flight. Tokens are picked on the host.

use super::{EngineConfig, Event, Job, Queue, RunEnd, Usage};
use crate::metrics::Metrics;
use onebit_model::logprobs::token_logprob;
use onebit_model::Engine as ModelEngine;
use onebit_model::{Draw, FinishReason, Sequence, TokenLogprob, Tokenizer};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A request in a slot.
struct Active {
    job: Job,
    seq: Sequence,
    /// Prompt tokens in the slot's cache so far, and handed to the engine so far (more while
    /// a chunk is in flight).
    read: usize,
    sent: usize,
    cached: usize,
    /// Logits after the slot's last token (or the engine's pick, `chosen`), when they have
    /// not been sampled from yet.
    ready: bool,
    logits: Vec<f32>,
    /// The next token as the engine picked it in a turn of picks ([`Pick`]).
    chosen: Option<u32>,
    started: Instant,
    prompt_ms: f64,
    /// The prompt's log-probabilities so far, when the job wants them.
    prompt_lps: Vec<TokenLogprob>,
}

struct Slot {
    /// The tokens the slot's cache holds (kept after a request ends, for prefix reuse).
    tokens: Vec<u32>,
    active: Option<Active>,
}

/// One row of a pass.
struct Row {
    token: u32,
    slot: usize,
    /// Logits wanted after this row (a decode row, or a prompt's last row).
    want: bool,
    /// A prompt row (else a decode row).
    prompt: bool,
}

/// Who picks a turn's tokens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pick {
    /// The host, from each wanted row's logits.
    Host,
    /// The engine, every row's argmax.
    Greedy,
    /// The engine, every row by its reply's draw.
    Sampled,
}

pub(super) struct Runner<'a, 'm> {
    session: Box<dyn ModelEngine + 'm>,
    eos: Option<u32>,
    tok: &'a Tokenizer,
    cfg: EngineConfig,
    metrics: &'a Metrics,
    slots: Vec<Slot>,
    max_batch: usize,
    rows: Vec<Row>,
    tokens: Vec<u32>,
    row_slots: Vec<usize>,
    want: Vec<bool>,
    draws: Vec<Draw>,
    penalized: Vec<u32>,
    ids: Vec<u32>,
    /// With an engine that overlaps passes: the rows of the pass in flight, when it was
    /// started and how many of its rows decode; which slots it holds; when the last pass came
    /// back (a pass is timed from then, as passes in flight overlap).
    pending_rows: Vec<Row>,
    pending: Option<(usize, Instant)>,
    in_pass: Vec<bool>,
    last_collect: Instant,
    /// Whether the last turn's pass read a scored prompt alone, and the slot to look at
    /// first for the next ([`Runner::scoring_turn`]).
    scored_last: bool,
    next_scored: usize,
    /// The mesh counters when this engine started (a mesh formed again starts its own from
    /// zero; the exported counters go on from these).
    wire_base: [u64; 4],
}

impl<'a, 'm> Runner<'a, 'm> {
    pub(super) fn new(
        session: Box<dyn ModelEngine + 'm>,
        eos: Option<u32>,
        tok: &'a Tokenizer,
        cfg: EngineConfig,
        metrics: &'a Metrics,
    ) -> Self {
        let slots = (0..cfg.slots).map(|_| Slot { tokens: Vec::new(), active: None }).collect();
        let m = metrics;
        let wire_base = [&m.mesh_sent, &m.mesh_received, &m.mesh_steps, &m.mesh_wait_us]
            .map(|c| c.load(Relaxed));
        let max_batch = cfg.prefill_chunk.max(cfg.slots);
        Runner {
            session,
            eos,
            tok,
            cfg,
            metrics,
            slots,
            max_batch,
            rows: Vec::with_capacity(max_batch),
            tokens: Vec::with_capacity(max_batch),
            row_slots: Vec::with_capacity(max_batch),
            want: Vec::with_capacity(max_batch),
            draws: Vec::with_capacity(max_batch),
            penalized: Vec::new(),
            ids: Vec::with_capacity(max_batch),
            pending_rows: Vec::with_capacity(max_batch),
            pending: None,
            in_pass: vec![false; cfg.slots],
            last_collect: Instant::now(),
            scored_last: false,
            next_scored: 0,
            wire_base,
        }
    }

    pub(super) fn run(mut self, queue: &(Mutex<Queue>, Condvar)) -> RunEnd {
        loop {
            if !self.admit(queue) {
                return RunEnd::Shutdown;
            }
            if let Some(end) = self.check_broken() {
                return end;
            }
            self.drop_cancelled();
            self.turn();
            self.publish();
            if let Some(end) = self.check_broken() {
                return end;
            }
        }
    }

    /// When the engine broke: fails the requests in slots and says why.
    fn check_broken(&mut self) -> Option<RunEnd> {
        let why = self.session.broken()?.to_string();
        for s in 0..self.slots.len() {
            if let Some(a) = self.slots[s].active.take() {
                let _ = a.job.events.send(Event::Failed(format!("the mesh failed: {why}")));
            }
        }
        self.publish();
        Some(RunEnd::Broken(why))
    }

    /// Moves queued jobs into free slots; waits when there is nothing to do. False on shutdown.
    fn admit(&mut self, queue: &(Mutex<Queue>, Condvar)) -> bool {
        let (lock, cv) = queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if q.shutdown {
                drop(q);
                self.settle();
                for s in 0..self.slots.len() {
                    self.finish(s, FinishReason::Cancelled);
                }
                let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
                for job in q.jobs.drain(..) {
                    let _ = job.events.send(Event::Failed("the server is shutting down".into()));
                }
                return false;
            }
            let busy = self.slots.iter().any(|s| s.active.is_some());
            let free = self.slots.iter().position(|s| s.active.is_none());
            match (free, q.jobs.is_empty()) {
                (Some(_), false) => {
                    let job = q.jobs.pop_front().expect("not empty");
                    self.metrics.queue_depth.store(q.jobs.len() as u64, Relaxed);
                    self.place(job);
                    if self.session.broken().is_some() {
                        return true;
                    }
                }
                _ if busy => return true,
                _ => {
                    q = cv
                        .wait_timeout(q, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Puts `job` in the free slot whose cached tokens share the longest prefix with it.
    fn place(&mut self, job: Job) {
        let shared =
            |s: &Slot| s.tokens.iter().zip(&job.prompt).take_while(|(a, b)| a == b).count();
        let (slot, common) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| (i, shared(s)))
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))
            .expect("a free slot");
        // A free slot's rows are never in flight here (the turn after a cancellation takes its
        // pass back before the next placement); were they, the engine would finish that pass
        // before truncating and drop its logits, so they would be taken first. Other slots
        // are truncated with the pass left running.
        if self.in_pass[slot] {
            self.settle();
        }
        // At least the last prompt token is computed again: its logits start the reply. A
        // job reporting the prompt's log-probabilities needs the logits after every token.
        let reuse = match job.prompt_logprobs {
            Some(_) => 0,
            None => common.min(job.prompt.len().saturating_sub(1)),
        };
        let vocab = self.session.vocab();
        let seq = match Sequence::new(job.params.clone(), vocab, self.eos) {
            Ok(s) => s,
            Err(e) => {
                let _ = job.events.send(Event::Failed(e.to_string()));
                return;
            }
        };
        if let Err(e) = self.session.truncate_slot(slot, reuse) {
            let _ = job.events.send(Event::Failed(e.to_string()));
            return;
        }
        self.slots[slot].tokens.truncate(reuse);
        self.metrics.cached_tokens.fetch_add(reuse as u64, Relaxed);
        self.slots[slot].active = Some(Active {
            job,
            seq,
            read: reuse,
            sent: reuse,
            cached: reuse,
            ready: false,
            logits: vec![0.0; vocab],
            chosen: None,
            started: Instant::now(),
            prompt_ms: 0.0,
            prompt_lps: Vec::new(),
        });
    }

    fn drop_cancelled(&mut self) {
        for s in 0..self.slots.len() {
            let gone = self.slots[s]
                .active
                .as_ref()
                .is_some_and(|a| a.job.cancel.load(Relaxed) || a.job.events.is_closed());
            if gone {
                self.finish(s, FinishReason::Cancelled);
            }
        }
    }

    /// One turn: a token sampled for every slot with fresh logits, then one pass over those
    /// decode rows and as many prompt rows of slots still reading as the batch has room for
    /// (at most `prefill_chunk` per slot), logits only for rows that end a prompt or decode.
    /// A prompt whose log-probabilities are reported is read in passes of its own instead
    /// ([`Runner::scoring_turn`]).
    fn turn(&mut self) {
        // An engine that overlaps passes (a pipeline) gets two groups of slots in turns: a
        // pass takes at most half of the busy slots, and the slots of the pass in flight sit
        // this one out, so one group's pass runs on the later stages while the next starts.
        let overlap = self.session.overlaps();
        let cap = match overlap {
            true => self.slots.iter().filter(|s| s.active.is_some()).count().div_ceil(2),
            false => usize::MAX,
        };
        self.rows.clear();
        let scoring = self.scoring_turn();
        self.scored_last = scoring.is_some();
        let decode_rows = match scoring {
            Some(s) => {
                self.push_chunk(s, self.cfg.prefill_chunk);
                0
            }
            None => {
                let mut taken = 0;
                self.step_replies(cap, &mut taken);
                let decode_rows = self.rows.len();
                self.read_prompts(decode_rows, cap, overlap, taken);
                decode_rows
            }
        };
        if overlap {
            return self.turn_overlapped(decode_rows);
        }
        if self.rows.is_empty() {
            return;
        }
        self.fill_rows();
        let pick = self.pick(decode_rows);
        let t0 = Instant::now();
        let vocab = self.session.vocab();
        let result = match pick {
            Pick::Host => self.session.step(&self.tokens, &self.row_slots, &self.want).map(Some),
            Pick::Greedy => self
                .session
                .decode_argmax(&self.tokens, &self.row_slots, &mut self.ids)
                .map(|()| None),
            Pick::Sampled => {
                self.draw_rows();
                let (draws, penalized) = (&self.draws, &self.penalized);
                self.session
                    .decode_sampled(&self.tokens, &self.row_slots, draws, penalized, &mut self.ids)
                    .map(|()| None)
            }
        };
        let us = t0.elapsed().as_micros() as u64;
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                fail_rows(&mut self.slots, &self.rows, &e.to_string());
                return;
            }
        };
        let logits = logits.as_deref();
        absorb(
            &mut self.slots,
            &self.rows,
            (logits, &self.ids),
            vocab,
            self.metrics,
            us,
            decode_rows,
        );
    }

    /// Samples a token for every slot with fresh logits (at most `cap` slots, counted in
    /// `taken`) and puts each in a decode row; finishes the replies that ended.
    fn step_replies(&mut self, cap: usize, taken: &mut usize) {
        for s in 0..self.slots.len() {
            let slot = &mut self.slots[s];
            let Some(a) = &mut slot.active else { continue };
            if !a.ready || self.in_pass[s] || *taken >= cap {
                continue;
            }
            *taken += 1;
            a.ready = false;
            let room = self.cfg.ctx.saturating_sub(slot.tokens.len());
            let step = match a.chosen.take() {
                Some(t) => a.seq.step_chosen(self.tok, t, room),
                None => a.seq.step(self.tok, &mut a.logits, &slot.tokens, room),
            };
            let step = match step {
                Ok(step) => step,
                Err(e) => {
                    let _ = a.job.events.send(Event::Failed(e.to_string()));
                    slot.active = None;
                    continue;
                }
            };
            if let Some(lp) = step.logprob {
                let _ = a.job.events.send(Event::Logprob(lp));
            }
            if !step.piece.is_empty() && a.job.events.send(Event::Piece(step.piece)).is_err() {
                self.finish(s, FinishReason::Cancelled);
                continue;
            }
            match (step.feed, step.finish) {
                (Some(t), _) => {
                    self.rows.push(Row { token: t, slot: s, want: true, prompt: false })
                }
                (None, why) => self.finish(s, why.unwrap_or(FinishReason::Cancelled)),
            }
        }
    }

    /// Adds prompt chunks of the slots still reading (not those read in passes of their own)
    /// while the batch has room beside its `decode_rows`.
    fn read_prompts(&mut self, decode_rows: usize, cap: usize, overlap: bool, mut taken: usize) {
        let mut budget = self.max_batch - decode_rows;
        for s in 0..self.slots.len() {
            let Some(a) = &self.slots[s].active else { continue };
            // A slot still reading may have its last chunk in flight: those rows want no
            // logits, so the next chunk can follow them (the stages keep the order), as the
            // head's own prefill does.
            if a.sent >= a.job.prompt.len() || Self::scores(a) || budget == 0 || taken >= cap {
                continue;
            }
            if overlap {
                taken += 1;
            }
            budget -= self.push_chunk(s, self.cfg.prefill_chunk.min(budget));
        }
    }

    /// Rows for the next (at most `n`) prompt tokens of slot `s`; how many.
    fn push_chunk(&mut self, s: usize, n: usize) -> usize {
        let Some(a) = &mut self.slots[s].active else { return 0 };
        let len = a.job.prompt.len();
        let end = (a.sent + n).min(len);
        let every = a.job.prompt_logprobs.is_some();
        for (i, &t) in a.job.prompt[a.sent..end].iter().enumerate() {
            let last = a.sent + i + 1 == len;
            self.rows.push(Row { token: t, slot: s, want: last || every, prompt: true });
        }
        let n = end - a.sent;
        a.sent = end;
        n
    }

    /// Whether `a` reports its prompt's log-probabilities and has prompt rows left to send.
    fn scores(a: &Active) -> bool {
        a.job.prompt_logprobs.is_some() && a.sent < a.job.prompt.len()
    }

    /// The slot whose prompt chunk has this turn's pass to itself, if any: one reporting its
    /// prompt's log-probabilities, in turn with the others (every other turn while the
    /// other slots have work). Its chunks are then cut and computed as a lone request's,
    /// whatever else the server runs: batching changes the attention's rounding (the prompt
    /// path's GEMMs or the decode path's sums), which can move an int8 code and a score by
    /// ~0.1 nats, and scores must not depend on the traffic.
    fn scoring_turn(&mut self) -> Option<usize> {
        let n = self.slots.len();
        let pick = (0..n)
            .map(|k| (self.next_scored + k) % n)
            .find(|&s| self.slots[s].active.as_ref().is_some_and(Self::scores))?;
        let others = self.slots.iter().any(|slot| {
            slot.active
                .as_ref()
                .is_some_and(|a| !Self::scores(a) && (a.ready || a.sent < a.job.prompt.len()))
        });
        if self.scored_last && others {
            return None;
        }
        self.next_scored = (pick + 1) % n;
        Some(pick)
    }

    /// The pass's token, slot and want columns from `self.rows`.
    fn fill_rows(&mut self) {
        self.tokens.clear();
        self.row_slots.clear();
        self.want.clear();
        for r in &self.rows {
            self.tokens.push(r.token);
            self.row_slots.push(r.slot);
            self.want.push(r.want);
        }
    }

    /// A turn on an engine that overlaps passes: starts this turn's pass (logits on the
    /// host), then takes the one in flight, which ran meanwhile.
    fn turn_overlapped(&mut self, decode_rows: usize) {
        let mut started = false;
        if !self.rows.is_empty() {
            self.fill_rows();
            match self.session.submit_step(&self.tokens, &self.row_slots, &self.want) {
                Ok(()) => started = true,
                Err(e) => fail_rows(&mut self.slots, &self.rows, &e.to_string()),
            }
        }
        self.settle();
        if started {
            for r in &self.rows {
                self.in_pass[r.slot] = true;
            }
            std::mem::swap(&mut self.rows, &mut self.pending_rows);
            self.pending = Some((decode_rows, Instant::now()));
        }
    }

    /// Takes the logits of the pass in flight, if any, into its slots.
    fn settle(&mut self) {
        let Some((decode_rows, started)) = self.pending.take() else { return };
        let vocab = self.session.vocab();
        let result = self.session.collect_step();
        // Passes overlap: each is timed from the later of its start and the last one's end.
        let now = Instant::now();
        let us = now.duration_since(started.max(self.last_collect)).as_micros() as u64;
        self.last_collect = now;
        for r in &self.pending_rows {
            self.in_pass[r.slot] = false;
        }
        match result {
            Ok(l) => {
                let rows = &self.pending_rows;
                absorb(&mut self.slots, rows, (Some(l), &[]), vocab, self.metrics, us, decode_rows)
            }
            Err(e) => fail_rows(&mut self.slots, &self.pending_rows, &e.to_string()),
        }
        self.pending_rows.clear();
    }

    /// Who picks this turn's tokens: the engine when every row decodes (none reads a prompt)
    /// and every reply is greedy, or every one is sampled as the engine samples.
    fn pick(&self, decode_rows: usize) -> Pick {
        if decode_rows == 0 || decode_rows < self.rows.len() {
            return Pick::Host;
        }
        let seq = |r: &Row| self.slots[r.slot].active.as_ref().map(|a| &a.seq);
        let seqs = || self.rows.iter().filter_map(seq);
        if seqs().any(Sequence::needs_host) {
            Pick::Host
        } else if seqs().all(Sequence::is_greedy) {
            Pick::Greedy
        } else if seqs().all(|s| !s.is_greedy() && self.session.samples(s.sampling())) {
            Pick::Sampled
        } else {
            Pick::Host
        }
    }

    /// Each decode row's draw, given its reply's history with the row's token (as the host
    /// would draw after the pass, from the same sampler state).
    fn draw_rows(&mut self) {
        self.draws.clear();
        self.penalized.clear();
        for r in &self.rows {
            let slot = &mut self.slots[r.slot];
            let Some(a) = &mut slot.active else { continue };
            slot.tokens.push(r.token);
            self.draws.push(a.seq.draw(&slot.tokens, &mut self.penalized));
            slot.tokens.pop();
        }
    }

    /// Ends the request in slot `s` (if any) and tells its client.
    fn finish(&mut self, s: usize, why: FinishReason) {
        let Some(mut a) = self.slots[s].active.take() else { return };
        if why == FinishReason::Cancelled {
            let rest = a.seq.cancel(self.tok);
            if !rest.is_empty() {
                let _ = a.job.events.send(Event::Piece(rest));
            }
            self.metrics.cancelled.fetch_add(1, Relaxed);
        }
        let usage = Usage {
            prompt_tokens: a.job.prompt.len(),
            cached_tokens: a.cached,
            completion_tokens: a.seq.tokens().len(),
            finish: a.seq.finish_reason().unwrap_or(why),
            stop_word: a.seq.stop_word().map(String::from),
            prompt_ms: a.prompt_ms,
            decode_ms: (a.started.elapsed().as_secs_f64() * 1e3 - a.prompt_ms).max(0.0),
        };
        let _ = a.job.events.send(Event::Done(usage));
    }

    fn publish(&self) {
        let busy = self.slots.iter().filter(|s| s.active.is_some()).count();
        self.metrics.slots_busy.store(busy as u64, Relaxed);
        let used: usize = self.slots.iter().map(|s| s.tokens.len()).sum();
        self.metrics.kv_used.store(used as u64, Relaxed);
        if let Some(w) = self.session.wire_stats() {
            let m = self.metrics;
            let now = [w.sent, w.received, w.steps, w.wait.as_micros() as u64];
            for ((c, base), v) in [&m.mesh_sent, &m.mesh_received, &m.mesh_steps, &m.mesh_wait_us]
                .into_iter()
                .zip(self.wire_base)
                .zip(now)
            {
                c.store(base + v, Relaxed);
            }
        }
    }
}

/// Fails the request of every slot with a row in `rows`.
fn fail_rows(slots: &mut [Slot], rows: &[Row], why: &str) {
    for r in rows {
        if let Some(a) = slots[r.slot].active.take() {
            let _ = a.job.events.send(Event::Failed(why.to_string()));
        }
    }
}

/// A pass's results into its slots: every row's token into its slot's cache, and the wanted
/// rows' logits (`picked.0`, one row of `vocab` each) or the engine's picks (`picked.1`)
/// into their replies, which are then ready (a wanted row inside a prompt gives the next
/// prompt token's log-probability instead); the pass's `us` into the metrics, split between
/// reading prompts and decoding by rows (a request whose prompt was in the pass waited for
/// all of it).
fn absorb(
    slots: &mut [Slot],
    rows: &[Row],
    picked: (Option<&[f32]>, &[u32]),
    vocab: usize,
    metrics: &Metrics,
    us: u64,
    decode_rows: usize,
) {
    let mut j = 0;
    let mut idx = Vec::new();
    for r in rows {
        let slot = &mut slots[r.slot];
        slot.tokens.push(r.token);
        // A cancelled request's rows still hold their place among the logits.
        let Some(a) = &mut slot.active else {
            j += usize::from(r.want);
            continue;
        };
        if r.prompt {
            a.read += 1;
        }
        if !r.want {
            continue;
        }
        let len = a.job.prompt.len();
        match (picked.0, a.job.prompt_logprobs) {
            (Some(l), Some(n)) if r.prompt && a.read < len => {
                let row = &l[j * vocab..(j + 1) * vocab];
                a.prompt_lps.push(token_logprob(row, a.job.prompt[a.read], n, &mut idx));
            }
            (Some(l), _) => {
                a.logits.copy_from_slice(&l[j * vocab..(j + 1) * vocab]);
                a.ready = true;
            }
            (None, _) => {
                a.chosen = Some(picked.1[j]);
                a.ready = true;
            }
        }
        if r.prompt && a.read == len && a.job.prompt_logprobs.is_some() {
            let lps = std::mem::take(&mut a.prompt_lps);
            let _ = a.job.events.send(Event::PromptLogprobs(lps));
        }
        j += 1;
    }
    let prompt_rows = rows.len() - decode_rows;
    let prefill_us = us * prompt_rows as u64 / rows.len().max(1) as u64;
    metrics.prefill_us.fetch_add(prefill_us, Relaxed);
    metrics.decode_us.fetch_add(us - prefill_us, Relaxed);
    metrics.prompt_tokens.fetch_add(prompt_rows as u64, Relaxed);
    metrics.generated_tokens.fetch_add(decode_rows as u64, Relaxed);
    let mut last = usize::MAX;
    for r in rows.iter().filter(|r| r.prompt) {
        if r.slot != last {
            if let Some(a) = &mut slots[r.slot].active {
                a.prompt_ms += us as f64 / 1e3;
            }
            last = r.slot;
        }
    }
}

//! The scheduler over a real CPU session that records the calls it gets.

use super::*;
use onebit_model::load::LoadOptions;
use onebit_model::{Draw, SamplerConfig};
use std::sync::mpsc;

/// A CPU session that records which of its calls the scheduler makes, and samples "on
/// the device" (through the trait's host pick) as a mesh or GPU engine would; it keeps
/// what every slot's cache holds, to check each draw's penalized tokens against it.
struct Recording<'m> {
    inner: Session<'m>,
    calls: mpsc::Sender<&'static str>,
    device_samples: bool,
    cached: Vec<Vec<u32>>,
    /// Overlapping passes as a pipeline's head does (computed at submit, handed back at
    /// collect), oldest first: their logits, the slots whose logits they hold (a row
    /// wanted), and the slots of their other rows (prompt chunks).
    overlapping: bool,
    in_flight: VecDeque<(Vec<f32>, Vec<usize>, Vec<usize>)>,
    out: Vec<f32>,
    /// Cancels a request (sets its flag) at the submit that is the n-th to hold slot 0: the
    /// client goes away while its rows are in flight.
    cancel_slot0_at: Option<(usize, Arc<AtomicBool>)>,
}

impl Recording<'_> {
    fn feed(&mut self, tokens: &[u32], slots: &[usize]) {
        // A pipeline's head finishes its passes in flight before anything else, dropping
        // their logits: a scheduler must have taken them.
        if !self.in_flight.is_empty() {
            let _ = self.calls.send("a call with a pass in flight");
        }
        for (&t, &s) in tokens.iter().zip(slots) {
            self.cached[s].push(t);
        }
    }

    /// A reset or truncation of `slot`: a pipeline's head finishes the passes in flight first
    /// where one holds the slot (dropping their logits), else leaves them running.
    fn release(&mut self, slot: usize) {
        if self.in_flight.iter().any(|(_, held, read)| held.contains(&slot) || read.contains(&slot))
        {
            let _ = self.calls.send("a slot of a pass in flight truncated");
        } else if !self.in_flight.is_empty() {
            let _ = self.calls.send("truncated beside a pass in flight");
        }
    }
}

impl onebit_model::Engine for Recording<'_> {
    fn vocab(&self) -> usize {
        self.inner.vocab()
    }
    fn slots(&self) -> usize {
        onebit_model::Engine::slots(&self.inner)
    }
    fn capacity(&self) -> usize {
        onebit_model::Engine::capacity(&self.inner)
    }
    fn position_of(&self, slot: usize) -> onebit_model::Result<usize> {
        onebit_model::Engine::position_of(&self.inner, slot)
    }
    fn reset_slot(&mut self, slot: usize) -> onebit_model::Result<()> {
        self.release(slot);
        self.cached[slot].clear();
        onebit_model::Engine::reset_slot(&mut self.inner, slot)
    }
    fn forward_slot(&mut self, slot: usize, t: &[u32]) -> onebit_model::Result<&mut [f32]> {
        self.cached[slot].extend_from_slice(t);
        onebit_model::Engine::forward_slot(&mut self.inner, slot, t)
    }
    fn decode(&mut self, t: &[u32], slots: &[usize]) -> onebit_model::Result<&mut [f32]> {
        self.feed(t, slots);
        onebit_model::Engine::decode(&mut self.inner, t, slots)
    }
    fn truncate_slot(&mut self, slot: usize, len: usize) -> onebit_model::Result<()> {
        self.release(slot);
        self.cached[slot].truncate(len);
        onebit_model::Engine::truncate_slot(&mut self.inner, slot, len)
    }
    fn step(
        &mut self,
        t: &[u32],
        slots: &[usize],
        want: &[bool],
    ) -> onebit_model::Result<&mut [f32]> {
        let _ = self.calls.send("step");
        self.feed(t, slots);
        onebit_model::Engine::step(&mut self.inner, t, slots, want)
    }
    fn decode_argmax(
        &mut self,
        t: &[u32],
        slots: &[usize],
        ids: &mut Vec<u32>,
    ) -> onebit_model::Result<()> {
        let _ = self.calls.send("argmax");
        self.feed(t, slots);
        onebit_model::Engine::decode_argmax(&mut self.inner, t, slots, ids)
    }
    fn overlaps(&self) -> bool {
        self.overlapping
    }
    fn submit_step(
        &mut self,
        t: &[u32],
        slots: &[usize],
        want: &[bool],
    ) -> onebit_model::Result<()> {
        let _ = self.calls.send("submit");
        if self.in_flight.len() >= 2 {
            let _ = self.calls.send("three passes in flight");
        }
        // A slot may follow its own prompt chunk (no logits wanted there), never a pass that
        // holds its next logits.
        if self.in_flight.iter().any(|(_, held, _)| slots.iter().any(|s| held.contains(s))) {
            let _ = self.calls.send("a slot in two passes");
        } else if self.in_flight.iter().any(|(_, _, read)| slots.iter().any(|s| read.contains(s))) {
            let _ = self.calls.send("a prompt chunk behind its last");
        }
        for (&t, &s) in t.iter().zip(slots) {
            self.cached[s].push(t);
        }
        if let Some((n, flag)) = &mut self.cancel_slot0_at {
            if slots.contains(&0) {
                *n -= 1;
                if *n == 0 {
                    flag.store(true, Relaxed);
                }
            }
        }
        let logits = onebit_model::Engine::step(&mut self.inner, t, slots, want)?.to_vec();
        let of = |wanted: bool| -> Vec<usize> {
            slots.iter().zip(want).filter(|(_, &w)| w == wanted).map(|(&s, _)| s).collect()
        };
        self.in_flight.push_back((logits, of(true), of(false)));
        Ok(())
    }
    fn collect_step(&mut self) -> onebit_model::Result<&mut [f32]> {
        let _ = self.calls.send("collect");
        let (logits, ..) = self.in_flight.pop_front().expect("a pass in flight");
        self.out = logits;
        Ok(&mut self.out)
    }
    fn samples(&self, cfg: &SamplerConfig) -> bool {
        self.device_samples && cfg.fits_device(self.vocab())
    }
    fn decode_sampled(
        &mut self,
        t: &[u32],
        slots: &[usize],
        draws: &[Draw],
        penalized: &[u32],
        ids: &mut Vec<u32>,
    ) -> onebit_model::Result<()> {
        let _ = self.calls.send("sampled");
        self.feed(t, slots);
        // A penalty looks at the last tokens of the slot's cache, this step's included.
        for (d, &s) in draws.iter().zip(slots) {
            let (h, n) = (d.hist_start as usize, d.hist_len as usize);
            let held = &self.cached[s];
            if n > 0 {
                let ok = penalized[h..h + n] == held[held.len().saturating_sub(n)..];
                let _ = self.calls.send(if ok { "penalized" } else { "wrong history" });
            }
        }
        // The trait's own host pick over this session's logits.
        let vocab = self.vocab();
        let mut sampler = onebit_model::Sampler::new(SamplerConfig::default(), vocab);
        let logits = onebit_model::Engine::decode(&mut self.inner, t, slots)?;
        ids.clear();
        for (row, d) in logits.chunks_exact_mut(vocab).zip(draws) {
            ids.push(sampler.pick(row, d, penalized));
        }
        Ok(())
    }
}

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

/// What a reply sent: its text, its token count, and the log-probabilities it reported
/// (the prompt's, then the reply's; each followed by its alternatives').
type Reply = (String, usize, Vec<f32>);

/// Runs `jobs` (prompt, sampling) to the end on 3 slots: their replies, and the engine calls
/// the scheduler made (`device_samples`: whether the engine samples itself).
fn serve(jobs: &[(&str, SamplerConfig)], device_samples: bool) -> (Vec<Reply>, Vec<&'static str>) {
    serve_on(jobs, device_samples, false, 4)
}

/// [`serve`] on an engine that overlaps passes or not, reading prompts `chunk` rows a pass.
fn serve_on(
    jobs: &[(&str, SamplerConfig)],
    device_samples: bool,
    overlapping: bool,
    chunk: usize,
) -> (Vec<Reply>, Vec<&'static str>) {
    serve_cancelling(jobs, device_samples, overlapping, chunk, None, None)
}

/// [`serve_on`], the first request (in slot 0) cancelled at the `cancel_first_at`-th submit
/// that holds its slot; with `logprobs`, every request reports its prompt's and reply's
/// log-probabilities with that many alternatives.
fn serve_cancelling(
    jobs: &[(&str, SamplerConfig)],
    device_samples: bool,
    overlapping: bool,
    chunk: usize,
    cancel_first_at: Option<usize>,
    logprobs: Option<usize>,
) -> (Vec<Reply>, Vec<&'static str>) {
    let opts = LoadOptions { threads: 1, ..Default::default() };
    let model = Model::from_pretrained(&repo("models/austen.gguf"), &opts).unwrap();
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let cfg = EngineConfig { slots: 3, ctx: 128, prefill_chunk: chunk, queue: 8, kv: KvDtype::F32 };
    let sopts =
        SessionOptions { max_ctx: 128, max_batch: chunk.max(3), slots: 3, kv: KvDtype::F32 };
    let (calls_tx, calls) = mpsc::channel();
    let first_cancel = Arc::new(AtomicBool::new(false));
    let engine = Recording {
        inner: Session::with_options(&model, sopts),
        calls: calls_tx,
        device_samples,
        cached: vec![Vec::new(); 3],
        overlapping,
        in_flight: VecDeque::new(),
        out: Vec::new(),
        cancel_slot0_at: cancel_first_at.map(|n| (n, first_cancel.clone())),
    };
    let mut queue = Queue { jobs: VecDeque::new(), shutdown: false };
    let mut replies = Vec::new();
    for (prompt, sampling) in jobs {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let params = GenerationParams {
            max_tokens: 20,
            sampling: sampling.clone(),
            logprobs,
            ..Default::default()
        };
        let prompt = tok.encode(prompt, true).unwrap();
        let cancel = match replies.is_empty() {
            true => first_cancel.clone(),
            false => Default::default(),
        };
        queue.jobs.push_back(Job { prompt, params, events, cancel, prompt_logprobs: logprobs });
        replies.push(rx);
    }
    let queue = (Mutex::new(queue), Condvar::new());
    let metrics = Metrics::default();
    let texts = std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            let texts: Vec<Reply> = replies
                .iter_mut()
                .map(|rx| {
                    let (mut text, mut lps) = (String::new(), Vec::new());
                    let mut add = |lp: &onebit_model::TokenLogprob| {
                        lps.push(lp.logprob);
                        lps.extend(lp.top.iter().map(|t| t.1));
                    };
                    loop {
                        match rx.blocking_recv().expect("a reply ends with Done") {
                            Event::Piece(p) => text.push_str(&p),
                            Event::Logprob(lp) => add(&lp),
                            Event::PromptLogprobs(v) => v.iter().for_each(&mut add),
                            Event::Done(u) => return (text, u.completion_tokens, lps),
                            Event::Failed(e) => panic!("{e}"),
                        }
                    }
                })
                .collect();
            queue.0.lock().unwrap().shutdown = true;
            queue.1.notify_all();
            texts
        });
        let runner = Runner::new(Box::new(engine), model.config.eos, &tok, cfg, &metrics);
        assert!(matches!(runner.run(&queue), RunEnd::Shutdown));
        reader.join().unwrap()
    });
    (texts, calls.try_iter().collect())
}

/// A sampled reply (with its default 64 tokens of history where `repeat_penalty` is on).
fn sampled(seed: u64, repeat_penalty: f32) -> SamplerConfig {
    SamplerConfig { temperature: 0.9, top_k: 30, seed, repeat_penalty, ..Default::default() }
}

#[test]
fn decode_turns_have_the_engine_pick_and_reply_as_the_host_picks() {
    let prompts = ["It is a truth", "Emma Woodhouse, handsome, clever", "Mr. Darcy"];
    let greedy: Vec<_> = prompts.iter().map(|&p| (p, SamplerConfig::default())).collect();
    let (host, calls) = serve(&greedy, false);
    // A session's argmax is the host's; prompt turns still gather logits.
    assert!(calls.contains(&"step") && calls.contains(&"argmax"), "{calls:?}");
    assert!(host.iter().all(|t| t.1 > 1), "{host:?}");

    let draws = [
        (prompts[0], sampled(1, 1.0)),
        (prompts[1], sampled(2, 1.3)),
        (prompts[2], sampled(3, 1.0)),
    ];
    let (host, calls) = serve(&draws, false);
    assert!(!calls.contains(&"sampled") && !calls.contains(&"argmax"), "{calls:?}");
    let (device, calls) = serve(&draws, true);
    assert!(calls.contains(&"sampled") && calls.contains(&"penalized"), "{calls:?}");
    assert!(!calls.contains(&"wrong history"), "{calls:?}");
    assert_eq!(device, host, "the engine's picks by the scheduler's draws differ");

    // Greedy and sampled replies in one turn: the host picks (the engine only in the
    // few turns one of them decodes alone, its prompt read sooner or its reply ended).
    let mixed = [draws[0].clone(), (prompts[1], SamplerConfig::default())];
    let (replies, calls) = serve(&mixed, true);
    assert!(replies.iter().all(|r| r.1 == 20), "{replies:?}");
    let picked = calls.iter().filter(|&&c| c != "step").count();
    assert!(picked <= 4, "{calls:?} for {replies:?}");
}

/// Of the passes an overlapping engine was given (`calls`), how many started while another
/// was in flight, and how many there were.
fn overlapped_passes(calls: &[&str]) -> (usize, usize) {
    let (mut depth, mut two, mut submits) = (0usize, 0, 0);
    for &c in calls {
        match c {
            "submit" => (depth, submits) = (depth + 1, submits + 1),
            "collect" => depth -= 1,
            _ => {}
        }
        two += usize::from(c == "submit" && depth == 2);
    }
    (two, submits)
}

#[test]
fn an_engine_that_overlaps_passes_gets_two_groups_in_turns_and_the_same_replies() {
    // Five requests on three slots (two wait in the queue and are placed while a pass is in
    // flight, which keeps running), prompts read in chunks of four, greedy and sampled replies.
    let prompts = [
        "It is a truth universally acknowledged",
        "Emma Woodhouse, handsome, clever",
        "Mr. Darcy",
        "The family of Dashwood had long been settled in Sussex",
        "Sir Walter Elliot",
    ];
    let jobs: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            (p, if i % 2 == 0 { SamplerConfig::default() } else { sampled(i as u64, 1.1) })
        })
        .collect();
    let (one_at_a_time, _) = serve_on(&jobs, false, false, 4);
    let (overlapped, calls) = serve_on(&jobs, false, true, 4);
    assert_eq!(overlapped, one_at_a_time, "overlapped passes changed a reply");
    assert!(overlapped.iter().all(|r| r.1 == 20), "{overlapped:?}");
    for wrong in [
        "a call with a pass in flight",
        "three passes in flight",
        "a slot in two passes",
        "a slot of a pass in flight truncated",
    ] {
        assert!(!calls.contains(&wrong), "{wrong}: {calls:?}");
    }
    assert!(calls.contains(&"truncated beside a pass in flight"), "{calls:?}");
    assert!(!calls.contains(&"step") && !calls.contains(&"argmax"), "{calls:?}");
    // Two passes in flight at once, most of the time.
    let (two, submits) = overlapped_passes(&calls);
    assert!(two * 2 > submits, "{two} of {submits} passes overlapped: {calls:?}");
}

#[test]
fn an_engine_that_overlaps_passes_gets_at_most_half_the_busy_slots_a_pass() {
    // Three short prompts that one pass could read together (chunks of 32): the first pass
    // still takes two of the three slots, so the third's starts while it is in flight, and
    // the replies' decode passes keep alternating between the two groups.
    let jobs: Vec<_> =
        ["Emma", "Mr. Darcy", "Anne"].iter().map(|&p| (p, SamplerConfig::default())).collect();
    let (one_at_a_time, _) = serve_on(&jobs, false, false, 32);
    let (overlapped, calls) = serve_on(&jobs, false, true, 32);
    assert_eq!(overlapped, one_at_a_time, "overlapped passes changed a reply");
    let (two, submits) = overlapped_passes(&calls);
    assert!(two * 10 > submits * 9, "{two} of {submits} passes overlapped: {calls:?}");
}

#[test]
fn a_request_cancelled_with_its_rows_in_flight_frees_its_slot_after_they_are_back() {
    // Four requests on three slots; the first goes away while a pass holding its slot is in
    // flight, and the queued fourth takes that slot with the other group's pass in flight:
    // no pass holding the slot may still be out when the engine truncates it (a pipeline's
    // head would finish it and drop its logits), and the other replies run to the end.
    let jobs: Vec<_> = ["Emma", "Mr. Darcy", "Anne", "Sir Walter Elliot"]
        .iter()
        .map(|&p| (p, SamplerConfig::default()))
        .collect();
    let (replies, calls) = serve_cancelling(&jobs, false, true, 4, Some(3), None);
    assert!(replies[0].1 < 20, "the first request ran to the end: {replies:?}");
    // The others' rows behind the cancelled one's in a pass get their own logits.
    let (whole, _) = serve_on(&jobs, false, false, 4);
    assert_eq!(replies[1..], whole[1..], "a reply changed beside the cancelled one");
    for wrong in ["a call with a pass in flight", "a slot of a pass in flight truncated"] {
        assert!(!calls.contains(&wrong), "{wrong}: {calls:?}");
    }
}

#[test]
fn a_long_prompt_on_an_engine_that_overlaps_has_two_chunks_in_flight() {
    // One request, its prompt read in chunks of four: each chunk follows the one in flight
    // (those rows want no logits), as a pipeline's head reads a prompt, and the reply is the
    // one-pass-at-a-time reply.
    let jobs = [(
        "The family of Dashwood had long been settled in Sussex. Their estate was large",
        SamplerConfig::default(),
    )];
    let (one_at_a_time, _) = serve_on(&jobs, false, false, 4);
    let (overlapped, calls) = serve_on(&jobs, false, true, 4);
    assert_eq!(overlapped, one_at_a_time, "overlapped chunks changed the reply");
    for wrong in ["a call with a pass in flight", "three passes in flight", "a slot in two passes"]
    {
        assert!(!calls.contains(&wrong), "{wrong}: {calls:?}");
    }
    let behind = calls.iter().filter(|&&c| c == "a prompt chunk behind its last").count();
    assert!(behind >= 2, "{behind} chunks followed one in flight: {calls:?}");
}

#[test]
fn log_probabilities_of_prompts_and_replies_are_the_same_alone_beside_others_or_overlapped() {
    // Prompts whose log-probabilities are reported (logits wanted on every row), read in
    // chunks of 32 beside each other, on an engine that overlaps passes and on one that does
    // not: each the same as the request alone, to the bit (its chunks have passes of their
    // own: alone, a prompt of 16 rows or more takes the prompt path's attention, beside other
    // slots' rows the decode path's, which rounds differently), and the replies the same as
    // without log-probabilities.
    let jobs: Vec<_> = [
        (
            "The family of Dashwood had long been settled in Sussex. Their estate was large, and their residence was at Norland Park",
            SamplerConfig::default(),
        ),
        ("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition", sampled(7, 1.2)),
        ("Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who", SamplerConfig::default()),
    ]
    .to_vec();
    let (plain, _) = serve_on(&jobs, false, false, 32);
    let (together, calls) = serve_cancelling(&jobs, false, false, 32, None, Some(2));
    assert!(calls.iter().all(|&c| c == "step"), "the host picks: {calls:?}");
    for (i, job) in jobs.iter().enumerate() {
        let (alone, _) =
            serve_cancelling(std::slice::from_ref(job), false, false, 32, None, Some(2));
        assert_eq!(alone[0], together[i], "request {i} scored beside others");
    }
    let (overlapped, calls) = serve_cancelling(&jobs, false, true, 32, None, Some(2));
    assert_eq!(overlapped, together);
    for wrong in ["a call with a pass in flight", "three passes in flight", "a slot in two passes"]
    {
        assert!(!calls.contains(&wrong), "{wrong}: {calls:?}");
    }
    for (r, p) in together.iter().zip(&plain) {
        assert_eq!((&r.0, r.1), (&p.0, p.1), "asking for log-probabilities changed a reply");
        // Prompt tokens after the first and reply tokens, each with two alternatives.
        assert!(r.2.len() >= 3 * (r.1 + 2), "{r:?}");
        assert!(r.2.iter().all(|&l| l <= 0.0 && l.is_finite()), "{r:?}");
    }
}

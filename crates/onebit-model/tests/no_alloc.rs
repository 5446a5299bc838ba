//! The decode hot path allocates nothing: after a warm-up (per-thread kernel scratch grows on
//! its first use), a counting global allocator sees zero allocations across many decode
//! steps, batched decode steps and sampling, on every thread of the pool.
//!
//! One test per binary on purpose: the allocator counts every thread of the process, so no
//! other test may run beside it.

use onebit_model::load::{load_gguf, LoadOptions};
use onebit_model::{HeadKind, KvDtype, Sampler, SamplerConfig, Session, SessionOptions};

#[path = "../../onebit-kernels/tests/common/alloc_count.rs"]
mod alloc_count;
use alloc_count::allocations;

#[test]
fn decode_steps_and_sampling_allocate_nothing() {
    alloc_count::assert_counter_works();
    let path = format!("{}/../../models/austen.gguf", env!("CARGO_MANIFEST_DIR"));
    for (head, kv) in
        [(HeadKind::Q8, KvDtype::F16), (HeadKind::Q4, KvDtype::Q8), (HeadKind::F32, KvDtype::F32)]
    {
        let opts =
            LoadOptions { threads: 2, layout: None, head, in_place: None, ..Default::default() };
        let model = load_gguf(&path, &opts).unwrap();
        let vocab = model.config.vocab;
        let so = SessionOptions { max_ctx: 96, max_batch: 4, slots: 3, kv };
        let mut s = Session::with_options(&model, so);
        let cfg = SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(cfg, vocab);
        let mut history: Vec<u32> = Vec::with_capacity(96);
        let mut logits = vec![0f32; vocab];
        let mut step = |s: &mut Session<'_>, history: &mut Vec<u32>, logits: &mut [f32]| {
            let t = *history.last().unwrap();
            logits.copy_from_slice(s.forward(&[t]).unwrap());
            let next = sampler.sample(logits, history);
            history.push(next);
        };
        history.push(1);
        // Warm-up: every thread's scratch reaches its size.
        for _ in 0..4 {
            step(&mut s, &mut history, &mut logits);
        }
        let n = allocations(|| {
            for _ in 0..24 {
                step(&mut s, &mut history, &mut logits);
            }
        });
        assert_eq!(n, 0, "{head:?} head, {kv:?} KV: {n} allocations in 24 decode steps");
        // Batched decode over three slots.
        let (tokens, slots) = ([5u32, 6, 7], [0usize, 1, 2]);
        s.decode(&tokens, &slots).unwrap();
        let n = allocations(|| {
            for _ in 0..8 {
                s.decode(&tokens, &slots).unwrap();
            }
        });
        assert_eq!(n, 0, "{head:?} head, {kv:?} KV: {n} allocations in 8 batched steps");
    }
}

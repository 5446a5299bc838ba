//! The decode hot path allocates nothing: after a warm-up (per-thread kernel scratch grows on
//! its first use), a counting global allocator sees zero allocations across many decode
//! steps, batched decode steps and sampling, on every thread of the pool.
//!
//! One test per binary on purpose: the allocator counts every thread of the process, so no
//! other test may run beside it.

use onebit_model::load::{load_gguf, LoadOptions};
use onebit_model::{HeadKind, KvDtype, Sampler, SamplerConfig, Session, SessionOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Allocations made while `f` runs.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

#[test]
fn decode_steps_and_sampling_allocate_nothing() {
    // The counter sees allocations at all (else this test could not fail).
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![0u8; 16]))), 1);
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

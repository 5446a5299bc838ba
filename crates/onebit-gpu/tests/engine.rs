//! The whole model on the device against the CPU engine (the reference): the shipped
//! (trained) model and synthetic ones (grouped-query heads, SiLU, interleaved RoPE, an
//! ecosystem layout repacked at upload): logits within 1e-3 of the largest logit, the same
//! greedy tokens over 64 steps (through the logits and through on-device argmax), batched
//! decode of several slots, and the engine's refusals. The device repeats the CPU's decode
//! attention step for step (sums in the CPU's order, products rounded apart, the shared
//! `exp_f32`), so on lavapipe these logits come out bit-identical; after a prompt chunk the
//! CPU ran through its blocked GEMM attention they agree to rounding (the long-prompt test).

mod common;

use common::context;
use onebit_gpu::{GpuContext, GpuSession};
use onebit_kernels::TernaryFormat;
use onebit_model::config::Activation;
use onebit_model::load::LoadOptions;
use onebit_model::synthetic::{linear_type, write_synthetic};
use onebit_model::{
    generate, generate_batch, Engine, GenerationParams, KvDtype, Model, ModelConfig, SamplerConfig,
    Sequence, Session, SessionOptions, Tokenizer,
};
use std::sync::Arc;

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn opts(slots: usize) -> SessionOptions {
    SessionOptions { max_ctx: 256, max_batch: 16, slots, kv: KvDtype::F32 }
}

fn shipped() -> (Model, Vec<u32>) {
    let m = Model::from_pretrained(
        &repo("models/austen.gguf"),
        &LoadOptions { threads: 1, ..Default::default() },
    )
    .unwrap();
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let p = tok
        .encode("It is a truth universally acknowledged, that a single man in possession", true)
        .unwrap();
    assert!(p.len() > 16, "the prompt must span several 16-row chunks");
    (m, p)
}

/// Largest |g - c| over the largest |c|.
fn rel(g: &[f32], c: &[f32]) -> f32 {
    let scale = c.iter().fold(0f32, |m, v| m.max(v.abs()));
    g.iter().zip(c).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn argmax(l: &[f32]) -> u32 {
    l.iter().enumerate().fold(0, |b, (i, &v)| if v > l[b] { i } else { b }) as u32
}

/// 64 greedy steps on both engines: tokens must agree, logits stay within `tol`.
fn greedy_agrees(cpu: &mut dyn Engine, gpu: &mut GpuSession, prompt: &[u32], tol: f32) -> f32 {
    let c = cpu.forward_slot(0, prompt).unwrap().to_vec();
    let g = gpu.forward_slot(0, prompt).unwrap().to_vec();
    let mut worst = rel(&g, &c);
    let mut t = argmax(&c);
    assert_eq!(argmax(&g), t, "first token");
    for step in 0..64 {
        let c = cpu.decode(&[t], &[0]).unwrap().to_vec();
        let g = gpu.decode(&[t], &[0]).unwrap().to_vec();
        worst = worst.max(rel(&g, &c));
        assert!(worst <= tol, "step {step}: relative logit difference {worst}");
        t = argmax(&c);
        assert_eq!(argmax(&g), t, "step {step}: greedy tokens differ");
    }
    worst
}

#[test]
fn shipped_model_matches_the_cpu_engine() {
    let Some(ctx) = context() else { return };
    let ctx = Arc::new(ctx);
    let (model, prompt) = shipped();
    let mut cpu = Session::try_with_options(&model, opts(1)).unwrap();
    let mut gpu = GpuSession::new(ctx.clone(), &model, opts(1)).unwrap();
    let worst = greedy_agrees(&mut cpu, &mut gpu, &prompt, 1e-3);
    eprintln!("shipped model: worst relative logit difference over 64 steps {worst:.2e}");

    // The same tokens when the device samples: one token id back per step.
    let mut cpu = Session::try_with_options(&model, opts(1)).unwrap();
    let mut gpu = GpuSession::new(ctx, &model, opts(1)).unwrap();
    let mut t = argmax(cpu.forward_slot(0, &prompt).unwrap());
    gpu.forward_slot(0, &prompt).unwrap();
    let before = gpu.counters;
    for step in 0..64 {
        let g = gpu.decode_greedy(&[t], &[0]).unwrap()[0];
        t = argmax(cpu.decode(&[t], &[0]).unwrap());
        assert_eq!(g, t, "on-device argmax, step {step}");
    }
    let per = |a: u64, b: u64| (a - b) as f64 / 64.0;
    eprintln!(
        "shipped model, greedy decode: {} launches and {} submissions per token",
        per(gpu.counters.dispatches, before.dispatches),
        per(gpu.counters.submissions, before.submissions)
    );
}

#[test]
fn sampled_generation_gives_the_cpu_tokens() {
    // Temperature, top-k, top-p, min-p and the repetition penalty, seeded: the device picks
    // each token (one id back per step) and the text is the CPU engine's, one reply and
    // three replies decoded together.
    let Some(ctx) = context() else { return };
    let ctx = Arc::new(ctx);
    let (model, prompt) = shipped();
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let params = |seed| GenerationParams {
        max_tokens: 64,
        sampling: SamplerConfig {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.15,
            repeat_last_n: 32,
            seed,
        },
        stop: Vec::new(),
        logprobs: None,
        adjust: Default::default(),
        json_object: false,
        json_schema: None,
        schema_optional: false,
        schema_more: 0,
        grammar: None,
    };
    let vocab = model.config.vocab;
    let reply = |e: &mut dyn Engine, seed| {
        let mut seq = Sequence::new(params(seed), vocab, None).unwrap();
        let mut seen = Vec::new();
        generate(e, &mut seen, &prompt, &mut seq, &tok, &mut |_| true).unwrap()
    };
    let mut cpu = Session::try_with_options(&model, opts(3)).unwrap();
    let mut gpu = GpuSession::new(ctx, &model, opts(3)).unwrap();
    for seed in [1, 2] {
        let (c, g) = (reply(&mut cpu, seed), reply(&mut gpu, seed));
        assert_eq!(c.tokens, 64, "seed {seed}: the reply should run to its limit");
        assert_eq!(g.text, c.text, "seed {seed}");
        cpu.reset_slot(0).unwrap();
        gpu.reset_slot(0).unwrap();
    }
    assert_eq!(gpu.counters.sampled, 2 * 63, "every token after the first on the device");
    let prompts: Vec<Vec<u32>> = (0..3).map(|s| prompt[..prompt.len() - 3 * s].to_vec()).collect();
    let batch = |e: &mut dyn Engine| {
        let mut seqs: Vec<Sequence> =
            (0..3).map(|s| Sequence::new(params(10 + s), vocab, None).unwrap()).collect();
        let out = generate_batch(e, &prompts, &mut seqs, &tok, &mut |_, _| true).unwrap();
        out.into_iter().map(|g| g.text).collect::<Vec<_>>()
    };
    let before = gpu.counters.sampled;
    assert_eq!(batch(&mut gpu), batch(&mut cpu), "three replies decoded together");
    assert_eq!(gpu.counters.sampled - before, 3 * 63);
}

#[test]
fn batched_greedy_decode_of_several_slots_matches() {
    // Three slots with prompts of different lengths, each continued by its own greedy token,
    // all three decoded in one pass per step: every row within 1e-3, the same tokens.
    let Some(ctx) = context() else { return };
    let (model, prompt) = shipped();
    let v = model.config.vocab;
    let mut cpu = Session::try_with_options(&model, opts(3)).unwrap();
    let mut gpu = GpuSession::new(Arc::new(ctx), &model, opts(3)).unwrap();
    let mut worst = 0f32;
    let mut next = [0u32; 3];
    for (s, t) in next.iter_mut().enumerate() {
        let p = &prompt[..prompt.len() - 4 * s];
        let c = cpu.forward_slot(s, p).unwrap().to_vec();
        let g = gpu.forward_slot(s, p).unwrap().to_vec();
        worst = worst.max(rel(&g, &c));
        *t = argmax(&c);
        assert_eq!(argmax(&g), *t, "slot {s}: first token");
    }
    let slots = [2, 0, 1];
    for step in 0..64 {
        let tokens = slots.map(|s| next[s]);
        let c = cpu.decode(&tokens, &slots).unwrap().to_vec();
        let g = gpu.decode(&tokens, &slots).unwrap().to_vec();
        for (row, &s) in slots.iter().enumerate() {
            let (c, g) = (&c[row * v..(row + 1) * v], &g[row * v..(row + 1) * v]);
            worst = worst.max(rel(g, c));
            assert!(worst <= 1e-3, "step {step} slot {s}: relative logit difference {worst}");
            next[s] = argmax(c);
            assert_eq!(argmax(g), next[s], "step {step} slot {s}: greedy tokens differ");
        }
    }
    eprintln!(
        "batched greedy decode, 3 slots x 64 steps: worst relative logit difference {worst:.2e}"
    );
}

#[test]
fn batched_decode_of_forced_tokens_and_a_mixed_step_matches() {
    // Rows whose logits are compared: 3 prompts, 16 steps of 3 slots, a mixed step's 3.
    let Some(ctx) = context() else { return };
    let (model, prompt) = shipped();
    let v = model.config.vocab;
    let mut cpu = Session::try_with_options(&model, opts(3)).unwrap();
    let mut gpu = GpuSession::new(Arc::new(ctx), &model, opts(3)).unwrap();
    let mut diffs = vec![];
    let mut compare = |g: &[f32], c: &[f32]| {
        assert_eq!(g.len(), c.len());
        diffs.extend(g.chunks_exact(v).zip(c.chunks_exact(v)).map(|(g, c)| rel(g, c)));
    };
    for s in 0..3 {
        let c = cpu.forward_slot(s, &prompt[..prompt.len() - 3 * s]).unwrap().to_vec();
        compare(gpu.forward_slot(s, &prompt[..prompt.len() - 3 * s]).unwrap(), &c);
    }
    for step in 0..16u32 {
        let (tokens, slots) = ([step + 10, step + 20, step + 30], [2, 0, 1]);
        let c = cpu.decode(&tokens, &slots).unwrap().to_vec();
        compare(gpu.decode(&tokens, &slots).unwrap(), &c);
    }
    // A mixed step: a prompt chunk of slot 0 beside decode rows of slots 1 and 2.
    let (tokens, slots, want) =
        ([5, 6, 7, 8, 9], [0, 0, 0, 1, 2], [false, false, true, true, true]);
    let c = cpu.step(&tokens, &slots, &want).unwrap().to_vec();
    compare(gpu.step(&tokens, &slots, &want).unwrap(), &c);
    let worst = diffs.iter().fold(0f32, |m, &d| m.max(d));
    eprintln!("batched decode, 3 slots: {} rows, worst {worst:.2e}", diffs.len());
    assert_eq!(diffs.len(), 54);
    assert!(worst <= 1e-3, "worst relative logit difference {worst}");
}

fn synthetic(name: &str, cfg: &ModelConfig, format: TernaryFormat) -> Model {
    let tmp = tempfile::Builder::new().prefix("onebit-gpu-test-").tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join(format!("{name}.gguf")).to_string_lossy().into_owned();
    write_synthetic(&path, cfg, linear_type(format).unwrap(), 7, &mut |_, _| {}).unwrap();
    let m =
        Model::from_pretrained(&path, &LoadOptions { threads: 1, ..Default::default() }).unwrap();
    std::fs::remove_file(&path).ok();
    m
}

#[test]
fn synthetic_models_match_the_cpu_engine() {
    let Some(ctx) = context() else { return };
    let ctx = Arc::new(ctx);
    let micro = ModelConfig {
        act: Activation::Silu,
        rope_interleaved: true,
        sub_norms: false,
        ..ModelConfig::preset("micro").unwrap()
    };
    let tiny = ModelConfig::preset("tiny").unwrap();
    for (name, cfg, format) in
        [("micro", micro, TernaryFormat::Tq2_0), ("tiny", tiny, TernaryFormat::I2S)]
    {
        let model = synthetic(name, &cfg, format);
        // Under 16 tokens, so the CPU runs the prompt through its decode-order attention,
        // which the device repeats step for step.
        let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 11) % cfg.vocab as u32).collect();
        let mut cpu = Session::try_with_options(&model, opts(1)).unwrap();
        let mut gpu = GpuSession::new(ctx.clone(), &model, opts(1)).unwrap();
        let worst = greedy_agrees(&mut cpu, &mut gpu, &prompt, 1e-3);
        eprintln!("synthetic {name}: worst relative logit difference over 64 steps {worst:.2e}");
    }
}

#[test]
fn after_a_long_prompt_the_greedy_tokens_still_match() {
    // A 40-token prompt: the CPU takes chunks of 16 or more rows through its blocked GEMM
    // attention, which rounds in another order than the device's, and an int8 activation
    // code on a rounding boundary can flip; with random weights that moves later logits by
    // up to about 1e-2 of the largest (measured), so only the tokens and a loose bound are
    // held here. The decode-order tests above hold 1e-3.
    let Some(ctx) = context() else { return };
    let cfg = ModelConfig::preset("tiny").unwrap();
    let model = synthetic("tiny-long", &cfg, TernaryFormat::I2S);
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % cfg.vocab as u32).collect();
    let mut cpu = Session::try_with_options(&model, opts(1)).unwrap();
    let mut gpu = GpuSession::new(Arc::new(ctx), &model, opts(1)).unwrap();
    let worst = greedy_agrees(&mut cpu, &mut gpu, &prompt, 5e-2);
    eprintln!("synthetic tiny, 40-token prompt: worst relative logit difference {worst:.2e}");
}

#[test]
fn refusals_are_typed_and_leave_the_session_usable() {
    let Some(ctx) = context() else { return };
    let ctx: Arc<GpuContext> = Arc::new(ctx);
    let (model, prompt) = shipped();
    let mut gpu = GpuSession::new(ctx, &model, SessionOptions { max_ctx: 32, ..opts(2) }).unwrap();
    let vocab = model.config.vocab as u32;
    assert!(gpu
        .forward_slot(0, &[vocab])
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
    assert!(gpu.forward_slot(2, &[1]).unwrap_err().to_string().contains("slot 2"));
    assert!(gpu.decode(&[1, 2], &[1, 1]).unwrap_err().to_string().contains("repeated"));
    let long = vec![1u32; 33];
    assert!(gpu.forward_slot(0, &long).unwrap_err().to_string().contains("context full"));
    assert_eq!(gpu.position_of(0).unwrap(), 0);
    gpu.forward_slot(0, &prompt[..10]).unwrap();
    assert_eq!(gpu.position_of(0).unwrap(), 10);
    // Draws the device's sampler does not cover, or that point past their tokens: refused,
    // the slot not advanced.
    let greedy = onebit_model::Draw { top_k: 40, ..Default::default() };
    let wide = onebit_model::Draw { temperature: 1.0, top_k: 257, ..greedy };
    let past = onebit_model::Draw { temperature: 1.0, hist_len: 3, ..greedy };
    for (d, pen) in [(greedy, &[][..]), (wide, &[]), (past, &[5, 6][..])] {
        let e = gpu.decode_by_draws(&[1], &[0], &[d], pen).unwrap_err().to_string();
        assert!(e.contains("cannot take"), "{e}");
    }
    assert_eq!(gpu.position_of(0).unwrap(), 10);
    let ok = onebit_model::Draw { temperature: 1.0, u: 0.5, ..greedy };
    assert!(gpu.decode_by_draws(&[1], &[0], &[ok], &[]).unwrap()[0] < vocab);
    assert_eq!(gpu.position_of(0).unwrap(), 11);
}

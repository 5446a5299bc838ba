//! The library generation API on the shipped model: batched replies equal one-at-a-time ones.

use onebit_model::load::{load_any, LoadOptions};
use onebit_model::{
    generate, generate_batch, GenerationParams, SamplerConfig, Sequence, Session, SessionOptions,
    Tokenizer,
};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/austen.gguf");

/// The same KV type for both runs: f16 and f32 caches round differently.
fn opts(slots: usize) -> SessionOptions {
    SessionOptions { max_ctx: 256, max_batch: 64, slots, kv: onebit_model::KvDtype::F16 }
}

#[test]
fn batched_greedy_replies_equal_single_replies() {
    let model = load_any(MODEL, &LoadOptions::default()).unwrap();
    let tok = Tokenizer::for_model(MODEL).unwrap();
    let (vocab, eos) = (model.config.vocab, model.config.eos);
    let params = GenerationParams {
        max_tokens: 24,
        sampling: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
        stop: vec![],
        logprobs: None,
        adjust: Default::default(),
    };
    let texts = [
        "It is a truth universally acknowledged",
        "Mr. Darcy",
        "She was",
        "Emma Woodhouse, handsome",
    ];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, true).unwrap()).collect();
    let single: Vec<String> = prompts
        .iter()
        .map(|p| {
            let opts = SessionOptions { slots: 1, ..opts(4) };
            let mut s = Session::try_with_options(&model, opts).unwrap();
            let mut seq = Sequence::new(params.clone(), vocab, eos).unwrap();
            generate(&mut s, &mut Vec::new(), p, &mut seq, &tok, &mut |_| true).unwrap().text
        })
        .collect();
    let mut session = Session::try_with_options(&model, opts(4)).unwrap();
    let mut seqs: Vec<Sequence> =
        (0..4).map(|_| Sequence::new(params.clone(), vocab, eos).unwrap()).collect();
    let mut streamed = vec![String::new(); 4];
    let out = generate_batch(&mut session, &prompts, &mut seqs, &tok, &mut |i, p| {
        streamed[i].push_str(p);
        true
    })
    .unwrap();
    for i in 0..4 {
        assert!(!single[i].is_empty());
        assert_eq!(out[i].text, single[i], "prompt {i}");
        assert_eq!(streamed[i], single[i], "streamed pieces of prompt {i}");
    }
    // Cancelling one reply leaves the others untouched.
    let mut seqs: Vec<Sequence> =
        (0..4).map(|_| Sequence::new(params.clone(), vocab, eos).unwrap()).collect();
    let out = generate_batch(&mut session, &prompts, &mut seqs, &tok, &mut |i, _| i != 1).unwrap();
    assert_eq!(out[1].finish, onebit_model::FinishReason::Cancelled);
    assert_eq!(out[2].text, single[2]);
    // More prompts than slots is an error, not a panic.
    let five = vec![prompts[0].clone(); 5];
    let mut seqs: Vec<Sequence> =
        (0..5).map(|_| Sequence::new(params.clone(), vocab, eos).unwrap()).collect();
    assert!(generate_batch(&mut session, &five, &mut seqs, &tok, &mut |_, _| true).is_err());
}

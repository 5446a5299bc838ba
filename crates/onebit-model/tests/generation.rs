//! The library generation API on the shipped model: batched replies equal one-at-a-time ones;
//! JSON mode keeps every reply a valid JSON object's start (serde_json the judge).

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
        json_object: false,
        json_schema: None,
        schema_optional: false,
        schema_more: 0,
        grammar: None,
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

/// Runs one reply of `params` for `prompt`; (text, tokens, finish).
fn reply(params: GenerationParams, prompt: &str) -> (String, usize, onebit_model::FinishReason) {
    let model = load_any(MODEL, &LoadOptions::default()).unwrap();
    let tok = Tokenizer::for_model(MODEL).unwrap();
    let mut s = Session::try_with_options(&model, opts(1)).unwrap();
    let mut seq = Sequence::new(params, model.config.vocab, model.config.eos).unwrap();
    let ids = tok.encode(prompt, true).unwrap();
    let g = generate(&mut s, &mut Vec::new(), &ids, &mut seq, &tok, &mut |_| true).unwrap();
    (g.text, g.tokens, g.finish)
}

#[test]
fn json_mode_replies_are_json_objects() {
    use onebit_model::json_mode::JsonMachine;
    use onebit_model::FinishReason;
    let tok = Tokenizer::for_model(MODEL).unwrap();
    let json = |temperature, seed, max_tokens| GenerationParams {
        max_tokens,
        sampling: SamplerConfig { temperature, seed, ..SamplerConfig::default() },
        json_object: true,
        ..GenerationParams::default()
    };
    // Without JSON mode the model writes prose; with it, every reply (greedy or sampled) is
    // the start of an object, and a finished one is an object serde_json parses.
    let (prose, _, _) =
        reply(GenerationParams { json_object: false, ..json(0.0, 1, 24) }, "Mr. Darcy said");
    assert!(!prose.trim_start().starts_with('{'), "{prose}");
    let mut finished = 0;
    for (temperature, seed) in [(0.0, 1), (0.8, 1), (0.8, 2), (1.5, 3), (1.5, 4)] {
        let (text, tokens, finish) = reply(json(temperature, seed, 96), "Mr. Darcy said");
        let mut m = JsonMachine::new();
        assert!(m.feed_all(text.as_bytes()), "not a JSON object's start: {text:?}");
        assert_eq!(m.is_done(), finish == FinishReason::Complete, "{text:?} {finish:?}");
        match finish {
            FinishReason::Complete => {
                finished += 1;
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                    .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            }
            f => assert_eq!((f, tokens), (FinishReason::Length, 96), "{text:?}"),
        }
    }
    // A bias toward `}` (as a client's logit_bias) closes the object at once: the reply ends
    // with it, not at max_tokens, and the end-of-sequence token never cut it short.
    let close = tok.token_id("}").unwrap();
    let forced = GenerationParams {
        adjust: onebit_model::LogitAdjust { bias: vec![(close, 100.0)], ..Default::default() },
        ..json(0.0, 1, 96)
    };
    let (text, tokens, finish) = reply(forced, "Mr. Darcy said");
    assert_eq!((finish, text.trim()), (FinishReason::Complete, "{}"), "{tokens} tokens");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), serde_json::json!({}));
    eprintln!("JSON mode: {finished} of 5 unforced replies closed their object within 96 tokens");
}

/// The bytes JSON mode masks with are what the tokenizers crate decodes each token to, and
/// the mask (with its shortcut for string content) is a token-by-token feed of them.
#[test]
fn json_mode_token_bytes_and_masks_agree_with_the_tokenizer() {
    use onebit_model::json_mode::JsonMachine;
    let tok = Tokenizer::for_model(MODEL).unwrap();
    let bytes = tok.token_bytes();
    let special = tok.special_ids();
    let mut checked = 0;
    for id in 0..tok.vocab_size() as u32 {
        let b = bytes.get(id);
        if special.contains(&id) {
            assert!(b.is_empty(), "special token {id} has bytes");
            continue;
        }
        if let Ok(text) = std::str::from_utf8(b) {
            assert_eq!(tok.decode(&[id]).unwrap(), text, "token {id}");
            checked += 1;
        }
    }
    assert!(checked > tok.vocab_size() * 9 / 10, "{checked}");
    let eos = Some(0);
    for prefix in
        ["", "{", "{\"ke", "{\"k\":", "{\"k\": [1, \"a\\", "{\"k\":12", "{\"k\":tr", "{\"k\":{}"]
    {
        let mut m = JsonMachine::new();
        assert!(m.feed_all(prefix.as_bytes()), "{prefix}");
        let mut logits = vec![0.0f32; tok.vocab_size()];
        let left = bytes.mask(&m, &mut logits, eos);
        for (id, &l) in logits.iter().enumerate() {
            let b = bytes.get(id as u32);
            let mut copy = m;
            let want = Some(id as u32) != eos && !b.is_empty() && copy.feed_all(b);
            assert_eq!(l == 0.0, want, "{prefix:?} token {id} {:?}", String::from_utf8_lossy(b));
        }
        assert_eq!(left, logits.iter().filter(|&&l| l == 0.0).count());
        assert!(left > 0, "{prefix}");
    }
}

/// The schema mask (its table of states after each first byte, its shortcut for free string
/// content) keeps exactly the tokens whose bytes a copy of the machine takes one by one, and
/// the end-of-sequence token exactly where the document may end.
#[test]
fn json_schema_masks_are_a_token_by_token_feed() {
    use onebit_model::json_schema::JsonSchema;
    use onebit_model::schema_machine::{SchemaMachine, SchemaMask};
    let tok = Tokenizer::for_model(MODEL).unwrap();
    let bytes = tok.token_bytes();
    let eos = Some(0);
    let s = JsonSchema::compile(&serde_json::json!({
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "tag": {"type": "string", "maxLength": 3},
            "n": {"type": "integer", "minimum": -5, "maximum": 250},
            "xs": {"type": "array", "items": {"enum": ["one", "two", 3]}, "maxItems": 2},
            "any": {}
        },
        "required": ["title", "n"]
    }))
    .unwrap();
    let n_schema = JsonSchema::compile(&serde_json::json!({"type": "integer"})).unwrap();
    let mut mask = SchemaMask::default();
    for (schema, prefix) in [
        (&s, ""),
        (&s, "{"),
        (&s, "{\"ti"),
        (&s, "{\"title\": \"Pride and"),
        (&s, "{\"title\":\"a\\"),
        (&s, "{\"title\":\"a\", \"ta"),
        (&s, "{\"title\":\"a\",\"tag\":\"ab"),
        (&s, "{\"title\":\"a\",\"n\":2"),
        (&s, "{\"title\":\"a\",\"n\":-"),
        (&s, "{\"title\":\"a\",\"n\":2,\"xs\":[\"one\","),
        (&s, "{\"title\":\"a\",\"n\":2,\"xs\":[\"one\",\"two\""),
        (&s, "{\"title\":\"a\",\"n\":2,\"any\":{\"k\":[tr"),
        (&s, "{\n  "),
        (&n_schema, "12"),
    ] {
        let mut m = SchemaMachine::new();
        assert!(m.feed_all(schema, prefix.as_bytes()), "{prefix}");
        let mut logits = vec![0.0f32; tok.vocab_size()];
        let left = mask.mask(schema, &m, &bytes, &mut logits, eos);
        for (id, &l) in logits.iter().enumerate() {
            let b = bytes.get(id as u32);
            let mut copy = m;
            let want = if Some(id as u32) == eos {
                m.can_end(schema)
            } else {
                !b.is_empty() && copy.feed_all(schema, b)
            };
            assert_eq!(l == 0.0, want, "{prefix:?} token {id} {:?}", String::from_utf8_lossy(b));
        }
        assert_eq!(left, logits.iter().filter(|&&l| l == 0.0).count());
        assert!(left > 0, "{prefix}");
    }
}

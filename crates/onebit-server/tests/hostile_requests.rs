//! Property test: random request bodies (every field the API reads, with values of every JSON
//! type, in range and out) against a live server on the shipped model. Each answer is a 200
//! (whole, or a stream that ends with `[DONE]`) or a 4xx with an OpenAI error body, never a
//! 500 or a dropped connection: whatever validation accepts, the engine runs; and the server
//! answers `/health` afterwards.

use onebit_model::chat_template::ChatTemplate;
use onebit_model::load::LoadOptions;
use onebit_model::{Model, Tokenizer};
use onebit_server::{Server, ServerConfig};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

/// A JSON value of any type: small and large numbers, negatives, strings, lists, objects.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..40).prop_map(|v| json!(v)),
        any::<i64>().prop_map(|v| json!(v)),
        (-3.0f64..3.0).prop_map(|v| json!(v)),
        Just(json!(1e300)),
        "[a-zA-Z ]{0,12}".prop_map(Value::String),
        prop::collection::vec(0u32..5000, 0..6).prop_map(|v| json!(v)),
        prop::collection::vec("[a-z]{0,5}", 0..6).prop_map(|v| json!(v)),
        prop::collection::vec(prop::collection::vec(0u32..4200, 0..4), 0..3).prop_map(|v| json!(v)),
        Just(json!({"5": 3, "9": -100})),
        Just(json!({"include_usage": true})),
        Just(json!([{"role": "user", "content": "Anne"}])),
        Just(json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])),
    ]
}

const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "echo",
    "content",
    "tokens",
    "add_special",
];

/// A prompt as `/v1/completions` takes it, or nearly: text, token ids (some outside the
/// 4096-token vocabulary), lists of either, or other types.
fn prompt() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z ,.]{0,40}".prop_map(Value::String),
        prop::collection::vec(0u32..4200, 0..12).prop_map(|v| json!(v)),
        prop::collection::vec("[a-z ]{0,9}", 0..4).prop_map(|v| json!(v)),
        prop::collection::vec(prop::collection::vec(0u32..4200, 0..8), 0..4).prop_map(|v| json!(v)),
        any_value(),
    ]
}

/// A body for route 0-4 (completions, chat, tokenize, detokenize, llama-server's completion): the route's core fields
/// (mostly valid) with random fields on top.
fn body() -> impl Strategy<Value = (usize, Value)> {
    let fields = prop::collection::vec((0..FIELDS.len(), any_value()), 0..5);
    (0usize..5, prompt(), fields, 0u64..6).prop_map(|(route, p, fields, max)| {
        let mut m = Map::new();
        match route {
            0 => drop(m.insert("prompt".into(), p)),
            1 => drop(m.insert("messages".into(), json!([{"role": "user", "content": "Anne?"}]))),
            2 => drop(m.insert("content".into(), json!("It is"))),
            3 => drop(m.insert("tokens".into(), p)),
            _ => drop(m.insert("prompt".into(), p)),
        }
        m.insert(if route == 4 { "n_predict" } else { "max_tokens" }.into(), json!(max));
        for (f, v) in fields {
            m.insert(FIELDS[f].into(), v);
        }
        (route, Value::Object(m))
    })
}

#[test]
fn random_requests_get_a_reply_or_a_4xx_and_the_server_stays_up() {
    let m = Model::from_pretrained(&repo("models/austen.gguf"), &LoadOptions::default()).unwrap();
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let template = ChatTemplate::for_model(&repo("models/austen.gguf")).unwrap();
    let cfg = ServerConfig {
        port: 0,
        ctx: 64,
        slots: 4,
        model_id: "austen".into(),
        ..Default::default()
    };
    let s = Server::start(m, tok, template, cfg).unwrap();
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let paths =
        ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize", "/completion"];
    let config = ProptestConfig { cases: 256, failure_persistence: None, ..Default::default() };
    proptest!(config, |((route, b) in body())| {
        let url = format!("http://{}{}", s.addr(), paths[route]);
        let mut resp = agent.post(&url).header("content-type", "application/json").send(b.to_string())
            .map_err(|e| TestCaseError::fail(format!("{b}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| TestCaseError::fail(format!("{b}: {e}")))?;
        prop_assert!(matches!(status, 200 | 400 | 404), "{status} for {b}: {text}");
        if status == 200 {
            if text.starts_with("data:") {
                let end = if route == 4 { "\"stop\":true" } else { "data: [DONE]" };
                prop_assert!(text.contains(end), "{b}: {text}");
                prop_assert!(!text.contains("\"error\""), "{b}: {text}");
            } else {
                prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{b}: {text}");
            }
        } else {
            let v: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{b}: {e}: {text}")))?;
            prop_assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}: {text}");
        }
    });
    let mut health = agent.get(&format!("http://{}/health", s.addr())).call().unwrap();
    assert_eq!(health.body_mut().read_to_string().unwrap(), r#"{"status":"ok"}"#);
    s.stop();
}

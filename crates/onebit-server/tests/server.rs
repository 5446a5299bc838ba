//! The server on a loopback port with the shipped model (and, where a request must stay busy,
//! a slower synthetic one): every route and error case, SSE framing, auth, CORS, body limit,
//! cancellation on disconnect, queue-full 503, prefix reuse and graceful shutdown.

use onebit_model::chat_template::ChatTemplate;
use onebit_model::load::LoadOptions;
use onebit_model::{Model, Tokenizer};
use onebit_server::{Server, ServerConfig};
use serde_json::{json, Value};
use std::io::BufRead;
use std::time::{Duration, Instant};

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn start_with(model: &str, cfg: ServerConfig) -> Server {
    let m =
        Model::from_pretrained(model, &LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let template = ChatTemplate::for_model(model).unwrap();
    Server::start(m, tok, template, ServerConfig { port: 0, model_id: "austen".into(), ..cfg })
        .unwrap()
}

fn start(cfg: ServerConfig) -> Server {
    start_with(&repo("models/austen.gguf"), cfg)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// (status, body as JSON or text, headers we look at).
fn post(s: &Server, path: &str, body: &str, key: Option<&str>) -> (u16, Value, Option<String>) {
    let mut r = agent()
        .post(&format!("http://{}{path}", s.addr()))
        .header("content-type", "application/json");
    if let Some(k) = key {
        r = r.header("authorization", &format!("Bearer {k}"));
    }
    let mut resp = r.send(body).unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), retry)
}

fn get(s: &Server, path: &str) -> (u16, String) {
    let mut resp = agent().get(&format!("http://{}{path}", s.addr())).call().unwrap();
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
}

fn metric(s: &Server, name: &str) -> f64 {
    let (_, text) = get(s, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("{name} missing in {text}"))
}

/// Waits (bounded) for a metric to reach `want`.
fn wait_metric(s: &Server, name: &str, want: f64) {
    let t0 = Instant::now();
    while metric(s, name) != want {
        assert!(t0.elapsed() < Duration::from_secs(20), "{name} never reached {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a streaming request and returns its line reader.
fn open_stream(s: &Server, path: &str, body: &Value) -> impl BufRead {
    let resp = agent()
        .post(&format!("http://{}{path}", s.addr()))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    std::io::BufReader::new(resp.into_body().into_reader())
}

/// Reads a whole SSE stream: the JSON of every data line, and whether it ended with [DONE].
fn read_events(r: impl BufRead) -> (Vec<Value>, bool) {
    let mut events = Vec::new();
    let mut lines = r.lines();
    let mut done = false;
    while let Some(Ok(line)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let data =
            line.strip_prefix("data: ").unwrap_or_else(|| panic!("not an SSE data line: {line:?}"));
        if data == "[DONE]" {
            done = true;
            assert!(lines.next().is_none_or(|l| l.unwrap().is_empty()));
            break;
        }
        events.push(serde_json::from_str(data).unwrap());
    }
    (events, done)
}

#[test]
fn routes_answer_and_streams_are_framed_as_openai_does() {
    let s = start(ServerConfig::default());
    assert_eq!(get(&s, "/health"), (200, r#"{"status":"ok"}"#.into()));
    let (code, page) = get(&s, "/");
    assert!(code == 200 && page.contains("<title>onebit chat</title>"));
    let (_, models) = get(&s, "/v1/models");
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "austen");
    assert_eq!(models["data"][0]["meta"]["n_vocab"], 4096);
    let (_, props) = get(&s, "/props");
    let props: Value = serde_json::from_str(&props).unwrap();
    assert_eq!(props["total_slots"], 4);
    assert_eq!(props["default_generation_settings"]["n_ctx"], 256);
    assert_eq!(props["eos_token"], "<|endoftext|>");
    // A whole completion, greedy.
    let req = json!({"model": "austen", "prompt": "It is a truth universally acknowledged", "max_tokens": 16, "temperature": 0});
    let (code, whole, _) = post(&s, "/v1/completions", &req.to_string(), None);
    assert_eq!(code, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    assert_eq!(whole["usage"]["completion_tokens"], 16);
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    // The same request streamed: pieces concatenate to the same text; a finish chunk, a usage
    // chunk (stream_options.include_usage) and [DONE] end it.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (events, done) = read_events(open_stream(&s, "/v1/completions", &sreq));
    assert!(done);
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, text);
    let usage = events.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 16);
    assert_eq!(events[events.len() - 2]["choices"][0]["finish_reason"], "length");
    // Chat: the first chunk carries the role, then content deltas.
    let chat = json!({"model": "austen", "messages": [{"role": "user", "content": "Tell me about Anne."}], "max_tokens": 8, "stream": true, "temperature": 0});
    let (events, done) = read_events(open_stream(&s, "/v1/chat/completions", &chat));
    assert!(done);
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events.iter().skip(1).all(|e| e["choices"][0]["delta"].get("role").is_none()));
    // A stop string cuts the reply before it.
    let cut = &text[text.len() / 2..];
    let mut stopped = req.clone();
    stopped["stop"] = json!(cut.trim());
    let (_, r, _) = post(&s, "/v1/completions", &stopped.to_string(), None);
    let got = r["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(got) && !got.contains(cut.trim()), "{got:?} vs {text:?}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    // Metrics count what happened.
    assert!(metric(&s, "onebit_requests_total") >= 4.0);
    assert!(metric(&s, "onebit_tokens_generated_total") >= 16.0);
    s.stop();
}

#[test]
fn bad_requests_get_openai_error_bodies_and_the_server_stays_up() {
    let s = start(ServerConfig { ctx: 256, ..ServerConfig::default() });
    let long = "word ".repeat(400);
    for (path, body, status, code) in [
        ("/v1/completions", "{not json", 400, "invalid_json"),
        ("/v1/completions", r#"{"prompt": "hi", "max_tokens": "ten"}"#, 400, "invalid_json"),
        ("/v1/completions", r#"{"model": "gpt-4", "prompt": "hi"}"#, 404, "model_not_found"),
        ("/v1/completions", r#"{"prompt": "hi", "max_tokens": 100000}"#, 400, "invalid_value"),
        ("/v1/completions", &json!({"prompt": long}).to_string(), 400, "context_length_exceeded"),
        ("/v1/completions", r#"{"prompt": "hi", "n": 17}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": "hi", "n": 0}"#, 400, "invalid_value"),
        // Found by the property test: an `n` this large once sized a vector before it was checked.
        ("/v1/completions", r#"{"prompt": "hi", "n": 7734255373842558336}"#, 400, "invalid_value"),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "n": 18446744073709551615}"#,
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            r#"{"prompt": ["a","b","c","d","e","f","f","g","h"], "n": 2}"#,
            400,
            "invalid_value",
        ),
        ("/v1/completions", r#"{"prompt": []}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": "hi", "temperature": -1}"#, 400, "invalid_value"),
        (
            "/v1/completions",
            r#"{"prompt": "hi", "stop": ["a","b","c","d","e"]}"#,
            400,
            "invalid_value",
        ),
        ("/v1/chat/completions", r#"{"messages": []}"#, 400, "invalid_value"),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
            400,
            "invalid_value",
        ),
        ("/v1/chat/completions", r#"{"messages": "hello"}"#, 400, "invalid_json"),
        (
            "/v1/completions",
            r#"{"prompt": "hi", "logit_bias": {"99999": 9}}"#,
            400,
            "invalid_value",
        ),
        ("/v1/completions", r#"{"prompt": "hi", "logit_bias": {"5": 101}}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": "hi", "logit_bias": {"x": 1}}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": "hi", "presence_penalty": 3}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": "hi", "logprobs": 21}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": "hi", "logprobs": true}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": "hi", "max_tokens": 0}"#, 400, "invalid_value"),
        ("/v1/completions", r#"{"prompt": [1, 99999]}"#, 400, "invalid_value"),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}"#,
            400,
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "logprobs": 3}"#,
            400,
            "invalid_value",
        ),
        ("/detokenize", r#"{"tokens": [99999]}"#, 400, "invalid_value"),
        ("/tokenize", r#"{"text": "x"}"#, 400, "invalid_value"),
    ] {
        let (got, v, _) = post(&s, path, body, None);
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert!(metric(&s, "onebit_requests_invalid_total") >= 24.0);
    // Still serving.
    let (got, _, _) = post(&s, "/v1/completions", r#"{"prompt": "It is", "max_tokens": 2}"#, None);
    assert_eq!(got, 200);
    s.stop();
}

/// JSON mode (`response_format` json_object): every reply is a JSON object's start, a closed
/// one parses (serde_json the judge) and ends the reply with "stop"; constraints the server
/// cannot honour are refused by name, never ignored.
#[test]
fn json_mode_replies_are_json_objects_and_unsupported_constraints_are_refused() {
    use onebit_model::json_mode::JsonMachine;
    let s = start(ServerConfig { ctx: 256, ..ServerConfig::default() });
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let close = tok.token_id("}").unwrap();
    let chat = |extra: Value| {
        let mut b = json!({"messages": [{"role": "user", "content": "Describe Mr. Darcy."}],
            "max_tokens": 40, "temperature": 0, "response_format": {"type": "json_object"}});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    // Unforced: the shipped (prose) model's reply is an object's start, cut at max_tokens.
    let (code, v, _) = post(&s, "/v1/chat/completions", &chat(json!({})).to_string(), None);
    assert_eq!(code, 200, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let mut m = JsonMachine::new();
    assert!(text.starts_with('{') && m.feed_all(text.as_bytes()), "{text:?}");
    assert_eq!(v["choices"][0]["finish_reason"], if m.is_done() { "stop" } else { "length" });
    // Streamed: the same text.
    let mut streamed = chat(json!({}));
    streamed["stream"] = json!(true);
    let (events, done) = read_events(open_stream(&s, "/v1/chat/completions", &streamed));
    assert!(done);
    let joined: String =
        events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(joined, text);
    // A bias toward `}` closes the object at once: "stop", and the content parses.
    let forced = chat(json!({"logit_bias": {close.to_string(): 100}}));
    let (_, v, _) = post(&s, "/v1/chat/completions", &forced.to_string(), None);
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), json!({}), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() < 40, "{v}");
    // Text completions and llama-server's /completion take it too.
    let body = json!({"prompt": "It is", "max_tokens": 40, "temperature": 0,
        "response_format": {"type": "json_object"}, "logit_bias": {close.to_string(): 100}});
    let (_, v, _) = post(&s, "/v1/completions", &body.to_string(), None);
    assert_eq!(v["choices"][0]["text"].as_str().map(str::trim), Some("{}"), "{v}");
    let native = json!({"prompt": "It is", "n_predict": 40, "temperature": 0,
        "response_format": {"type": "json_object"}, "logit_bias": [[close, 100]]});
    let (_, n, _) = post(&s, "/completion", &native.to_string(), None);
    assert_eq!(
        (n["content"].as_str().map(str::trim), n["stop_type"].as_str()),
        (Some("{}"), Some("eos")),
        "{n}"
    );
    // What this server cannot honour is a 400 naming it.
    for (path, extra, param) in [
        (
            "/v1/chat/completions",
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}}}}),
            "response_format",
        ),
        ("/v1/chat/completions", json!({"response_format": {"type": "yaml"}}), "response_format"),
        ("/v1/chat/completions", json!({"tools": [{"type": "function"}]}), "tools"),
        (
            "/v1/chat/completions",
            json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "any"}),
            "tool_choice",
        ),
        (
            "/v1/chat/completions",
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}]}),
            "tools",
        ),
        ("/v1/chat/completions", json!({"grammar": "root ::= [a"}), "grammar"),
        ("/completion", json!({"prompt": "x", "grammar": "root ::= x"}), "grammar"),
        ("/v1/chat/completions", json!({"grammar": 7}), "grammar"),
        (
            "/v1/chat/completions",
            json!({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}),
            "grammar",
        ),
        ("/completion", json!({"prompt": "x", "json_schema": {"not": {}}}), "json_schema"),
        ("/v1/chat/completions", json!({"json_schema": {"type": "wrong"}}), "json_schema"),
    ] {
        let body = if path == "/completion" { extra.clone() } else { chat(extra.clone()) };
        let (code, e, _) = post(&s, path, &body.to_string(), None);
        assert_eq!((code, e["error"]["param"].as_str()), (400, Some(param)), "{extra}: {e}");
    }
    // An empty tool list and "text" are the plain behaviour.
    let plain = chat(json!({"tools": [], "response_format": {"type": "text"}, "max_tokens": 4}));
    let (code, v, _) = post(&s, "/v1/chat/completions", &plain.to_string(), None);
    assert_eq!(code, 200, "{v}");
    s.stop();
}

/// A reply's text and finish on the chat, completion and llama-server routes.
fn reply_of<'a>(path: &str, v: &'a Value) -> (&'a Value, &'a Value) {
    match path {
        "/v1/chat/completions" => {
            (&v["choices"][0]["message"]["content"], &v["choices"][0]["finish_reason"])
        }
        "/v1/completions" => (&v["choices"][0]["text"], &v["choices"][0]["finish_reason"]),
        _ => (&v["content"], &v["stop_type"]),
    }
}

/// GBNF grammars (llama-server's `grammar`): on every route the reply is a sentence of the
/// grammar and ends where the grammar does; streamed pieces make the same text.
#[test]
fn grammar_replies_are_sentences_of_the_grammar() {
    let s = start(ServerConfig { ctx: 256, ..ServerConfig::default() });
    // Replies the test can check by hand: a verdict, a list of 1 to 3 lower-case words,
    // and a two-digit number of pounds.
    let grammar = "root ::= (\"Yes\" | \"No\") \", \" words \" for \" [1-9] [0-9] \" pounds.\"\nwords ::= word (\" \" word){0,2}\nword ::= [a-z]{1,12}\n";
    let check = |text: &str| {
        let rest = text
            .strip_prefix("Yes, ")
            .or_else(|| text.strip_prefix("No, "))
            .unwrap_or_else(|| panic!("{text:?}"));
        let (words, tail) = rest.split_once(" for ").unwrap_or_else(|| panic!("{text:?}"));
        let words: Vec<&str> = words.split(' ').collect();
        assert!((1..=3).contains(&words.len()), "{text:?}");
        assert!(
            words
                .iter()
                .all(|w| (1..=12).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())),
            "{text:?}"
        );
        let n = tail.strip_suffix(" pounds.").unwrap_or_else(|| panic!("{text:?}"));
        assert!(
            n.len() == 2 && n.as_bytes()[0] != b'0' && n.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
    };
    let messages = json!([{"role": "user", "content": "Will Mr. Bingley marry?"}]);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": messages, "max_tokens": 80, "temperature": 0, "grammar": grammar}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": messages, "max_tokens": 80, "temperature": 1.0, "seed": 2, "grammar": grammar}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "Mr. Darcy", "max_tokens": 80, "temperature": 0.8, "seed": 4, "grammar": grammar}),
        ),
        (
            "/completion",
            json!({"prompt": "Mr. Darcy", "n_predict": 80, "temperature": 1.1, "seed": 6, "grammar": grammar}),
        ),
    ] {
        let (code, v, _) = post(&s, path, &body.to_string(), None);
        assert_eq!(code, 200, "{v}");
        let (text, finish) = reply_of(path, &v);
        check(text.as_str().unwrap());
        assert!(finish == "stop" || finish == "eos", "{path}: {v}");
    }
    let body = json!({"messages": messages, "max_tokens": 80, "temperature": 0, "stream": true, "grammar": grammar});
    let (events, done) = read_events(open_stream(&s, "/v1/chat/completions", &body));
    assert!(done);
    let joined: String =
        events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    check(&joined);
    s.stop();
}

/// The prose model likes the whitespace a schema allows between tokens (a newline and an
/// indent) and can run out of its 256 positions of context; a client's logit_bias against
/// whitespace tokens keeps the tests' replies to their documents.
fn blank_bias() -> serde_json::Map<String, Value> {
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let blank: serde_json::Map<String, Value> = (0..tok.vocab_size() as u32)
        .filter(|&t| tok.decode(&[t]).is_ok_and(|d| !d.is_empty() && d.trim().is_empty()))
        .map(|t| (t.to_string(), json!(-100)))
        .collect();
    assert!(!blank.is_empty() && blank.len() < 300, "{} whitespace tokens", blank.len());
    blank
}

/// Function calling: with `tool_choice` naming a function or "required" the reply is a
/// call whose arguments the function's schema accepts (jsonschema the judge), reported as
/// `tool_calls` (whole and streamed); with "auto" the model answers in text unless it
/// starts a call; a conversation goes on after a call and its result.
#[test]
fn tool_calls_follow_the_functions_schemas() {
    let s = start(ServerConfig { ctx: 256, ..ServerConfig::default() });
    // Small, to leave the shipped model (a context of 256) room after the tools' account.
    let weather = json!({"type": "object", "required": ["city"], "properties": {"city": {"type": "string", "maxLength": 9}}});
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Rain?", "parameters": weather}},
        {"type": "function", "function": {"name": "get_time"}}
    ]);
    let mut bias = blank_bias();
    let messages = json!([{"role": "user", "content": "Will it rain in Bath?"}]);
    let chat = |choice: Value, bias: &serde_json::Map<String, Value>| {
        json!({"messages": messages, "tools": tools, "tool_choice": choice, "max_tokens": 150,
            "temperature": 0, "logit_bias": bias})
    };
    let check_call = |call: &Value, want: Option<&str>| {
        assert_eq!(call["type"], "function", "{call}");
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
        let name = call["function"]["name"].as_str().unwrap();
        if let Some(w) = want {
            assert_eq!(name, w);
        }
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        let schema = if name == "get_weather" {
            weather.clone()
        } else {
            json!({"type": "object", "maxProperties": 0})
        };
        assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&args), "{call}");
    };
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    for (choice, want) in [(named.clone(), Some("get_weather")), (json!("required"), None)] {
        let (code, v, _) = post(&s, "/v1/chat/completions", &chat(choice, &bias).to_string(), None);
        assert_eq!(code, 200, "{v}");
        let c = &v["choices"][0];
        assert_eq!(
            (&c["finish_reason"], &c["message"]["content"]),
            (&json!("tool_calls"), &Value::Null),
            "{v}"
        );
        check_call(&c["message"]["tool_calls"][0], want);
    }
    // Streamed: one tool_calls delta, then the finish.
    let mut body = chat(named.clone(), &bias);
    body["stream"] = json!(true);
    let (events, done) = read_events(open_stream(&s, "/v1/chat/completions", &body));
    assert!(done);
    let calls: Vec<&Value> =
        events.iter().filter_map(|e| e["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    check_call(&calls[0][0], Some("get_weather"));
    assert!(events.iter().all(|e| e["choices"][0]["delta"].get("content").is_none_or(|c| c == "")));
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
    // "auto": the prose model answers in text; favouring `{` makes it call.
    let (_, v, _) = post(&s, "/v1/chat/completions", &chat(json!("auto"), &bias).to_string(), None);
    let c = &v["choices"][0];
    assert!(c["message"]["content"].as_str().is_some_and(|t| !t.starts_with('{')), "{v}");
    assert!(c["message"].get("tool_calls").is_none() && c["finish_reason"] != "tool_calls", "{v}");
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    bias.insert(tok.token_id("{").unwrap().to_string(), json!(100));
    let (_, v, _) = post(&s, "/v1/chat/completions", &chat(json!("auto"), &bias).to_string(), None);
    check_call(&v["choices"][0]["message"]["tool_calls"][0], None);
    // Parallel calls, one a line: with a newline favoured, a reply goes on from a whole
    // call to the next (here until the context is full: the prose model puts the newline
    // between every two tokens); with `parallel_tool_calls: false` it ends after one.
    let times = json!([{"type": "function", "function": {"name": "get_time"}}]);
    let newline = json!({tok.encode("\n", false).unwrap()[0].to_string(): 100});
    for parallel in [true, false] {
        let body = json!({"messages": messages, "tools": times, "tool_choice": "required", "max_tokens": 200,
            "temperature": 0, "logit_bias": newline, "parallel_tool_calls": parallel});
        let (_, v, _) = post(&s, "/v1/chat/completions", &body.to_string(), None);
        let c = &v["choices"][0];
        if parallel {
            let text = c["message"]["content"].as_str().unwrap_or_else(|| panic!("{v}"));
            let calls: Vec<&str> = text.split("\n{").collect();
            assert!(calls.len() >= 2 && text.matches("\"get_time\"").count() >= 2, "{v}");
            assert_eq!(c["finish_reason"], "length", "{v}");
        } else {
            assert_eq!(c["finish_reason"], "tool_calls", "{v}");
            assert_eq!(c["message"]["tool_calls"].as_array().map(Vec::len), Some(1), "{v}");
        }
    }
    // "none": no call, even when `{` is favoured.
    let (_, v, _) = post(&s, "/v1/chat/completions", &chat(json!("none"), &bias).to_string(), None);
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
    // The conversation goes on with the call and its result.
    let call = json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bath\"}"}});
    let body = json!({"messages": [
        {"role": "user", "content": "Will it rain in Bath?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"}
    ], "tools": tools, "max_tokens": 8});
    let (code, v, _) = post(&s, "/v1/chat/completions", &body.to_string(), None);
    assert_eq!(code, 200, "{v}");
    // A text response format beside tools is the plain behaviour; another is a 400.
    let mut body = chat(named.clone(), &bias);
    body["response_format"] = json!({"type": "text"});
    let (code, v, _) = post(&s, "/v1/chat/completions", &body.to_string(), None);
    assert_eq!((code, &v["choices"][0]["finish_reason"]), (200, &json!("tool_calls")), "{v}");
    body["response_format"] = json!({"type": "json_object"});
    let (code, e, _) = post(&s, "/v1/chat/completions", &body.to_string(), None);
    assert_eq!((code, e["error"]["param"].as_str()), (400, Some("tools")), "{e}");
    // Tools are for chat.
    let body = json!({"prompt": "x", "tools": tools});
    let (code, e, _) = post(&s, "/v1/completions", &body.to_string(), None);
    assert_eq!((code, e["error"]["param"].as_str()), (400, Some("tools")), "{e}");
    s.stop();
}

/// Structured output: with `response_format` json_schema (OpenAI's form), llama-server's
/// `json_schema` field and on /completion, the prose model's reply is a document the schema
/// accepts — jsonschema (the crate) the judge — and the reply ends with it.
#[test]
fn json_schema_replies_are_documents_of_the_schema() {
    let s = start(ServerConfig { ctx: 256, ..ServerConfig::default() });
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "initials": {"type": "string", "pattern": "^[A-Z]\\.[A-Z]\\.$"},
            "born": {"type": "string", "format": "date"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120, "multipleOf": 5},
            "sisters": {"type": "array", "items": {"enum": ["Jane", "Mary", "Kitty", "Lydia"]}, "maxItems": 2, "uniqueItems": true},
            "married": {"type": ["boolean", "null"]},
            "wit": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "multipleOf": 0.05},
            "suitors": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9},
                "propertyNames": {"pattern": "^[A-Z][a-z]+$", "maxLength": 8}, "minProperties": 1, "maxProperties": 2}
        },
        "required": ["name", "initials", "born", "age", "sisters", "married", "wit", "suitors"],
        "additionalProperties": false
    });
    let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
    let blank = blank_bias();
    let messages = json!([{"role": "user", "content": "Describe Elizabeth Bennet."}]);
    let bodies = [
        (
            "/v1/chat/completions",
            json!({"messages": messages, "max_tokens": 220, "logit_bias": blank, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}}}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": messages, "max_tokens": 220, "logit_bias": blank, "temperature": 0.9, "seed": 3,
            "json_schema": schema}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "Elizabeth Bennet", "max_tokens": 220, "logit_bias": blank, "temperature": 1.2, "seed": 5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}}),
        ),
        (
            "/completion",
            json!({"prompt": "Elizabeth Bennet", "n_predict": 220, "logit_bias": blank, "temperature": 0.7, "seed": 7,
            "json_schema": schema}),
        ),
    ];
    for (path, body) in bodies {
        let (code, v, _) = post(&s, path, &body.to_string(), None);
        assert_eq!(code, 200, "{v}");
        let (text, finish) = reply_of(path, &v);
        let text = text.as_str().unwrap();
        let doc: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{path}: {text:?}: {e}"));
        assert!(validator.is_valid(&doc), "{path}: {text}");
        assert!(finish == "stop" || finish == "eos", "{path}: {v}");
        // Keys in the schema's order, as OpenAI writes them.
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["name", "initials", "born", "age", "sisters", "married", "wit", "suitors"],
            "{text}"
        );
    }
    // Streamed: the pieces make the same document as the whole reply.
    let body = json!({"messages": messages, "max_tokens": 220, "logit_bias": blank, "temperature": 0, "stream": true,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}});
    let (events, done) = read_events(open_stream(&s, "/v1/chat/completions", &body));
    assert!(done);
    let joined: String =
        events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let (_, v, _) = post(&s, "/v1/chat/completions", &whole.to_string(), None);
    assert_eq!(joined, v["choices"][0]["message"]["content"].as_str().unwrap());
    // A schema this server cannot enforce is a 400 naming the keyword and where it is.
    let bad = json!({"messages": messages, "response_format": {"type": "json_schema",
        "json_schema": {"name": "x", "schema": {"properties": {"id": {"type": "array", "uniqueItems": true}}}}}});
    let (code, e, _) = post(&s, "/v1/chat/completions", &bad.to_string(), None);
    assert_eq!(code, 400, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("uniqueItems") && msg.contains("/properties/id"), "{msg}");
    s.stop();
}

/// ln softmax(row)[t], in f64.
fn log_softmax_at(row: &[f32], t: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[t as usize] as f64 - max - sum.ln()
}

#[test]
fn logprobs_and_echo_are_the_engines_log_softmax_and_the_tokenizer_routes_round_trip() {
    let s = start(ServerConfig { ctx: 256, ..ServerConfig::default() });
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let text = "It is a truth universally acknowledged, that a single man";
    // The tokenizer routes, in llama-server's and vLLM's shapes.
    let ids = tok.encode(text, false).unwrap();
    let (code, t, _) = post(&s, "/tokenize", &json!({"content": text}).to_string(), None);
    assert_eq!((code, &t["tokens"]), (200, &json!(ids)), "{t}");
    let (_, t, _) = post(&s, "/tokenize", &json!({"prompt": text}).to_string(), None);
    assert_eq!(t["tokens"], json!(tok.encode(text, true).unwrap()));
    let (_, d, _) = post(&s, "/detokenize", &json!({"tokens": ids}).to_string(), None);
    assert_eq!((d["content"].as_str(), d["prompt"].as_str()), (Some(text), Some(text)));
    let (_, info) = get(&s, "/tokenizer_info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["eos_token"], "<|endoftext|>");
    // llama-server's /apply-template: the prompt the chat route gives the model.
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]);
    let (code, p, _) =
        post(&s, "/apply-template", &json!({"messages": messages}).to_string(), None);
    let prompt = p["prompt"].as_str().unwrap_or_else(|| panic!("{code} {p}"));
    assert!(prompt.contains(text) && prompt.contains("Be brief."), "{prompt}");
    let chat = json!({"messages": messages, "max_tokens": 1});
    let (_, r, _) = post(&s, "/v1/chat/completions", &chat.to_string(), None);
    assert_eq!(r["usage"]["prompt_tokens"], json!(tok.encode(prompt, false).unwrap().len()), "{r}");
    let (code, e, _) = post(&s, "/apply-template", r#"{"messages": []}"#, None);
    assert_eq!((code, e["error"]["param"].as_str()), (400, Some("messages")), "{e}");

    // The prompt as token ids, echoed with its log-probabilities and three greedy tokens'.
    let req =
        json!({"prompt": ids, "max_tokens": 3, "temperature": 0, "logprobs": 2, "echo": true});
    let (code, r, _) = post(&s, "/v1/completions", &req.to_string(), None);
    assert_eq!(code, 200, "{r}");
    let c = &r["choices"][0];
    let lp = &c["logprobs"];
    let n = ids.len() + 3;
    assert_eq!(lp["tokens"].as_array().unwrap().len(), n, "{lp}");
    assert_eq!(lp["token_logprobs"][0], Value::Null);
    assert_eq!(lp["top_logprobs"][0], Value::Null);
    let reply = c["text"].as_str().unwrap().strip_prefix(text).expect("the prompt echoed first");
    let joined: String =
        lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, c["text"].as_str().unwrap());
    // The same prompt as text: the same reply.
    let plain = json!({"prompt": text, "max_tokens": 3, "temperature": 0});
    let (_, p, _) = post(&s, "/v1/completions", &plain.to_string(), None);
    assert_eq!(p["choices"][0]["text"].as_str(), Some(reply));

    // The oracle: this model's own session over prompt and reply, every row's logits.
    let model =
        Model::from_pretrained(&repo("models/austen.gguf"), &LoadOptions::default()).unwrap();
    let opts = onebit_model::SessionOptions {
        max_ctx: 256,
        max_batch: 64,
        slots: 1,
        kv: onebit_model::KvDtype::F16,
    };
    let mut session = onebit_model::Session::with_options(&model, opts);
    let vocab = model.config.vocab;
    let mut all = ids.clone();
    let mut rows: Vec<f32> =
        session.step(&ids, &vec![0; ids.len()], &vec![true; ids.len()]).unwrap().to_vec();
    for _ in 0..3 {
        let last = &rows[rows.len() - vocab..];
        let next = onebit_model::argmax(last);
        all.push(next);
        rows.extend_from_slice(session.step(&[next], &[0], &[true]).unwrap());
    }
    for i in 1..n {
        let row = &rows[(i - 1) * vocab..i * vocab];
        let want = log_softmax_at(row, all[i]);
        let got = lp["token_logprobs"][i].as_f64().unwrap();
        assert!((got - want).abs() < 1e-4, "token {i}: {got} vs {want}");
        // The two likeliest there, in the order of the row.
        let mut best: Vec<u32> = (0..vocab as u32).collect();
        best.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
        let top = lp["top_logprobs"][i].as_object().unwrap();
        for &t in &best[..2] {
            let key = tok.decode(&[t]).unwrap();
            let got = top[&key].as_f64().unwrap();
            assert!((got - log_softmax_at(row, t)).abs() < 1e-4, "{key:?} at {i}: {top:?}");
        }
    }
    assert_eq!(tok.decode(&all[ids.len()..]).unwrap(), reply);

    // Chat: each reply token with its alternatives, streamed in the chunks of its text.
    let chat = json!({"messages": [{"role": "user", "content": "Tell me about Anne."}], "max_tokens": 6, "temperature": 0, "logprobs": true, "top_logprobs": 3});
    let (_, whole, _) = post(&s, "/v1/chat/completions", &chat.to_string(), None);
    let content = whole["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    assert_eq!(content.len(), 6);
    for e in &content {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["logprob"], e["logprob"], "greedy: the likeliest token is the one taken");
        assert_eq!(e["bytes"], json!(e["token"].as_str().unwrap().as_bytes()));
    }
    let joined: String = content.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert_eq!(joined, whole["choices"][0]["message"]["content"].as_str().unwrap());
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let (events, done) = read_events(open_stream(&s, "/v1/chat/completions", &stream));
    assert!(done);
    let streamed: Vec<Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .cloned()
        .collect();
    assert_eq!(streamed, content);
    // The echoed, scored completion streamed: its chunks make the same text and tokens.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (events, done) = read_events(open_stream(&s, "/v1/completions", &sreq));
    assert!(done);
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, c["text"].as_str().unwrap());
    let field = |k: &str| -> Vec<Value> {
        events
            .iter()
            .filter_map(|e| e["choices"][0]["logprobs"][k].as_array())
            .flatten()
            .cloned()
            .collect()
    };
    assert_eq!(field("tokens"), *lp["tokens"].as_array().unwrap());
    assert_eq!(field("token_logprobs"), *lp["token_logprobs"].as_array().unwrap());
    assert_eq!(field("text_offset"), *lp["text_offset"].as_array().unwrap());
    // Log-probabilities only: the prompt's, no reply.
    let only = json!({"prompt": text, "max_tokens": 0, "logprobs": 0, "echo": true});
    let (_, o, _) = post(&s, "/v1/completions", &only.to_string(), None);
    assert_eq!(o["usage"]["completion_tokens"], 0);
    assert_eq!(o["choices"][0]["text"].as_str(), Some(text));
    assert_eq!(o["choices"][0]["logprobs"]["token_logprobs"][1], lp["token_logprobs"][1]);
    s.stop();
}

#[test]
fn several_prompts_and_choices_come_back_indexed_each_as_its_own_request() {
    let s = start(ServerConfig { ctx: 256, slots: 4, ..ServerConfig::default() });
    let prompts = ["It is a truth universally acknowledged", "Mr. Darcy"];
    let req = json!({"prompt": prompts, "n": 2, "max_tokens": 8, "temperature": 0.9, "seed": 5});
    let (code, r, _) = post(&s, "/v1/completions", &req.to_string(), None);
    assert_eq!(code, 200, "{r}");
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    // Choice p·n + j is prompt p drawn with seed 5 + j, as a request of its own.
    let mut prompt_tokens = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let alone = json!({"prompt": prompts[i / 2], "max_tokens": 8, "temperature": 0.9, "seed": 5 + i % 2});
        let (_, a, _) = post(&s, "/v1/completions", &alone.to_string(), None);
        assert_eq!(c["text"], a["choices"][0]["text"], "choice {i}");
        if i % 2 == 0 {
            prompt_tokens += a["usage"]["prompt_tokens"].as_u64().unwrap();
        }
    }
    assert_ne!(choices[0]["text"], choices[1]["text"], "two draws of one prompt");
    assert_eq!(r["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(r["usage"]["completion_tokens"], 32);
    // Streamed: each index's chunks concatenate to its choice; one usage chunk at the end.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (events, done) = read_events(open_stream(&s, "/v1/completions", &sreq));
    assert!(done);
    for (i, c) in choices.iter().enumerate() {
        let text: String = events
            .iter()
            .filter(|e| e["choices"][0]["index"] == i)
            .filter_map(|e| e["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, c["text"].as_str().unwrap(), "streamed choice {i}");
    }
    let finished = events.iter().filter(|e| e["choices"][0]["finish_reason"].is_string()).count();
    assert_eq!(finished, 4);
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 32);
    // Chat: n choices of one conversation.
    let chat = json!({"messages": [{"role": "user", "content": "Anne?"}], "n": 3, "max_tokens": 4, "temperature": 0});
    let (_, c, _) = post(&s, "/v1/chat/completions", &chat.to_string(), None);
    let texts: Vec<_> =
        c["choices"].as_array().unwrap().iter().map(|c| &c["message"]["content"]).collect();
    assert_eq!(texts.len(), 3);
    assert!(texts.iter().all(|t| *t == texts[0]), "greedy choices are alike: {texts:?}");
    s.stop();
}

#[test]
fn llama_servers_own_completion_route_generates_as_the_openai_one() {
    let s = start(ServerConfig { ctx: 256, ..ServerConfig::default() });
    let prompt = "It is a truth universally acknowledged";
    let openai = json!({"prompt": prompt, "max_tokens": 8, "temperature": 0});
    let (_, o, _) = post(&s, "/v1/completions", &openai.to_string(), None);
    let native = json!({"prompt": prompt, "n_predict": 8, "temperature": 0, "n_probs": 2});
    let (code, n, _) = post(&s, "/completion", &native.to_string(), None);
    assert_eq!(code, 200, "{n}");
    assert_eq!(n["content"], o["choices"][0]["text"]);
    assert_eq!((n["stop"].as_bool(), n["stop_type"].as_str()), (Some(true), Some("limit")));
    assert_eq!(n["tokens_predicted"], 8);
    let probs = n["completion_probabilities"].as_array().unwrap();
    assert_eq!(probs.len(), 8);
    let joined: String = probs.iter().map(|p| p["token"].as_str().unwrap()).collect();
    assert_eq!(joined, n["content"].as_str().unwrap());
    assert!(probs.iter().all(|p| p["top_logprobs"][0]["id"] == p["id"]), "greedy: {n}");
    // Streamed: pieces, then a last event with stop true and no [DONE].
    let mut stream = native.clone();
    stream["stream"] = json!(true);
    let (events, done) = read_events(open_stream(&s, "/completion", &stream));
    assert!(!done, "llama-server's route ends without [DONE]");
    let text: String = events.iter().filter_map(|e| e["content"].as_str()).collect();
    assert_eq!(text, n["content"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!((last["stop"].as_bool(), last["tokens_predicted"].as_u64()), (Some(true), Some(8)));
    // A stop word ends it and is named; a prompt of text and ids mixed; llama.cpp's errors.
    let word =
        o["choices"][0]["text"].as_str().unwrap().split_whitespace().nth(1).unwrap().to_string();
    let stopped = json!({"prompt": prompt, "n_predict": 8, "temperature": 0, "stop": [word]});
    let (_, w, _) = post(&s, "/completion", &stopped.to_string(), None);
    assert_eq!(
        (w["stop_type"].as_str(), w["stopping_word"].as_str()),
        (Some("word"), Some(&*word))
    );
    let ids = Tokenizer::from_file(&repo("models/austen.tokenizer.json"))
        .unwrap()
        .encode(" universally acknowledged", false)
        .unwrap();
    let mixed = json!({"prompt": ["It is a truth", ids[0], ids[1], " acknowledged"], "n_predict": 8, "temperature": 0});
    let (code, m, _) = post(&s, "/completion", &mixed.to_string(), None);
    assert_eq!(code, 200, "{m}");
    for (bad, param) in [
        (json!({"prompt": {"a": 1}}), "prompt"),
        (json!({"prompt": "a", "n_predict": -2}), "n_predict"),
        (json!({"prompt": [99999]}), "prompt"),
        (json!({"prompt": "a", "n_probs": 21}), "n_probs"),
    ] {
        let (code, e, _) = post(&s, "/completion", &bad.to_string(), None);
        assert_eq!((code, e["error"]["param"].as_str()), (400, Some(param)), "{bad}: {e}");
    }
    s.stop();
}

#[test]
fn api_key_cors_and_body_limit() {
    let s = start(ServerConfig {
        api_key: Some("s3cret".into()),
        cors_origin: Some("http://localhost:3000".into()),
        body_limit: 4096,
        ..ServerConfig::default()
    });
    let body = r#"{"prompt": "It is", "max_tokens": 2}"#;
    assert_eq!(post(&s, "/v1/completions", body, None).0, 401);
    assert_eq!(post(&s, "/v1/completions", body, Some("wrong")).0, 401);
    assert_eq!(post(&s, "/v1/completions", body, Some("s3cret")).0, 200);
    assert_eq!(get(&s, "/health").0, 200, "health needs no key");
    let big = json!({"prompt": "x".repeat(10_000)}).to_string();
    assert_eq!(post(&s, "/v1/completions", &big, Some("s3cret")).0, 413);
    let pre = agent()
        .options(&format!("http://{}/v1/completions", s.addr()))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .call()
        .unwrap();
    assert_eq!(pre.headers().get("access-control-allow-origin").unwrap(), "http://localhost:3000");
    s.stop();
    // CORS is off by default.
    let s = start(ServerConfig::default());
    let pre = agent()
        .options(&format!("http://{}/v1/completions", s.addr()))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .call()
        .unwrap();
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    s.stop();
}

#[test]
fn a_chat_continuing_reuses_its_slot_cache() {
    let s = start(ServerConfig { slots: 1, ..ServerConfig::default() });
    let mut messages =
        vec![json!({"role": "user", "content": "Tell me about Anne Elliot and her father."})];
    let req = |m: &Vec<Value>| {
        json!({"model": "austen", "messages": m, "max_tokens": 12, "temperature": 0}).to_string()
    };
    let (_, first, _) = post(&s, "/v1/chat/completions", &req(&messages), None);
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    messages
        .push(json!({"role": "assistant", "content": first["choices"][0]["message"]["content"]}));
    messages.push(json!({"role": "user", "content": "And Captain Wentworth?"}));
    let (_, second, _) = post(&s, "/v1/chat/completions", &req(&messages), None);
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let evaluated = second["timings"]["prompt_n"].as_u64().unwrap();
    // The first turn's prompt and the reply the slot generated are reused; only the new
    // question is read (the reply's last token was never fed, so it is read again).
    let first_turn = first["usage"]["total_tokens"].as_u64().unwrap();
    assert!(cached >= first_turn - 2, "{first}\n{second}");
    assert_eq!(evaluated, prompt - cached);
    assert_eq!(metric(&s, "onebit_prompt_tokens_cached_total"), cached as f64);
    s.stop();
}

/// A 125m-shaped model: slow enough that a request stays busy while the test looks at it; its
/// folder goes when the `TempDir` drops.
fn slow_model() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new().prefix("onebit-server-slow-").tempdir().unwrap();
    let path = dir.path().join("slow.gguf").display().to_string();
    let mut c = onebit_model::ModelConfig::preset("125m").unwrap();
    c.vocab = 4096;
    let ty = onebit_model::synthetic::linear_type(onebit_kernels::TernaryFormat::T2).unwrap();
    onebit_model::synthetic::write_synthetic(&path, &c, ty, 9, &mut |_, _| {}).unwrap();
    (dir, path)
}

#[test]
fn disconnects_cancel_a_full_queue_says_503_and_shutdown_ends_streams() {
    let (_scratch, model) = slow_model();
    let s = start_with(
        &model,
        ServerConfig { slots: 1, queue: 1, ctx: 2048, ..ServerConfig::default() },
    );
    let long = json!({"model": "austen", "prompt": "It is", "max_tokens": 2000, "stream": true, "temperature": 0});
    // A holds the only slot, B waits in the queue, C is refused.
    let mut a = open_stream(&s, "/v1/completions", &long);
    let mut line = String::new();
    a.read_line(&mut line).unwrap();
    wait_metric(&s, "onebit_slots_busy", 1.0);
    let b = std::thread::scope(|sc| {
        let b = sc.spawn(|| read_events(open_stream(&s, "/v1/completions", &long)));
        wait_metric(&s, "onebit_queue_depth", 1.0);
        let (code, v, retry) = post(&s, "/v1/completions", &long.to_string(), None);
        assert_eq!(code, 503, "{v}");
        assert_eq!(v["error"]["code"], "queue_full");
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(metric(&s, "onebit_requests_rejected_total"), 1.0);
        // A's client goes away: its slot is freed at once and B starts.
        drop(a);
        wait_metric(&s, "onebit_requests_cancelled_total", 1.0);
        wait_metric(&s, "onebit_queue_depth", 0.0);
        wait_metric(&s, "onebit_slots_busy", 1.0);
        // Shutdown ends B's stream cleanly: a finish chunk and [DONE].
        std::thread::sleep(Duration::from_millis(100));
        s.shutdown();
        b.join().unwrap()
    });
    let (events, done) = b;
    assert!(done, "B's stream ended without [DONE]");
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"].is_string()));
}

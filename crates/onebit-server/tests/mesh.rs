//! The server with its engine elsewhere than one CPU session: on a two-node pipeline
//! (in-process mesh, the worker a thread running `serve_stage`), on a two-node
//! tensor-parallel mesh (the worker a thread running `serve_tensor`), and on the GPU backend
//! (lavapipe in CI). Concurrent greedy requests, mixed prompt chunks and decode rows, and a
//! chat continuing in its slot (prefix reuse truncates every stage's cache) give the same
//! replies and usage as the server on one node.

use onebit_dist::pipeline::{serve_stage, PipelineTimeouts};
use onebit_dist::InProcComm;
use onebit_model::chat_template::ChatTemplate;
use onebit_model::load::{LoadOptions, ModelPart};
use onebit_model::{KvDtype, Model, Session, SessionOptions, Tokenizer};
use onebit_server::{Backend, Fallback, Server, ServerConfig};
use serde_json::{json, Value};

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn load(part: Option<ModelPart>) -> Model {
    let opts = LoadOptions { threads: 1, part, ..Default::default() };
    Model::from_pretrained(&repo("models/austen.gguf"), &opts).unwrap()
}

fn cfg() -> ServerConfig {
    ServerConfig {
        port: 0,
        slots: 3,
        ctx: 256,
        prefill_chunk: 8,
        kv: KvDtype::F32,
        model_id: "austen".into(),
        ..ServerConfig::default()
    }
}

/// A worker's session, sized as the server's engine sizes its own.
fn session_opts() -> SessionOptions {
    let c = cfg();
    SessionOptions {
        max_ctx: c.ctx,
        max_batch: c.prefill_chunk.max(c.slots),
        slots: c.slots,
        kv: c.kv,
    }
}

fn start(model: Model, backend: Backend) -> Server {
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let template = ChatTemplate::for_model(&repo("models/austen.gguf")).unwrap();
    Server::start_on(model, tok, template, cfg(), backend).unwrap()
}

fn post(s: &Server, path: &str, body: Value) -> Value {
    let mut resp = ureq::post(&format!("http://{}{path}", s.addr()))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

/// The head's mesh counters in /metrics (bytes sent, bytes received), once the engine has
/// published its last turn (two reads 100 ms apart agree; bounded).
fn mesh_bytes(s: &Server) -> (f64, f64) {
    let read = || {
        let url = format!("http://{}/metrics", s.addr());
        let text = ureq::get(&url).call().unwrap().body_mut().read_to_string().unwrap();
        let get = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
            line[name.len() + 1..].parse().unwrap()
        };
        (get("onebit_mesh_sent_bytes_total"), get("onebit_mesh_received_bytes_total"))
    };
    let mut last = read();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the mesh counters kept moving: {last:?}");
}

/// Three completions at once, then a chat of two turns: (texts, chat replies, cached tokens).
fn exercise(s: &Server) -> (Vec<String>, Vec<String>, u64) {
    let prompts =
        ["It is a truth universally acknowledged", "Emma Woodhouse, handsome", "Mr. Darcy"];
    let texts = std::thread::scope(|sc| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                sc.spawn(move || {
                    let body = json!({"prompt": p, "max_tokens": 24, "temperature": 0});
                    post(s, "/v1/completions", body)["choices"][0]["text"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let mut messages = vec![json!({"role": "user", "content": "Tell me about Anne Elliot."})];
    let req = |m: &Vec<Value>| json!({"messages": m, "max_tokens": 12, "temperature": 0});
    let first = post(s, "/v1/chat/completions", req(&messages));
    let reply = first["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    messages.push(json!({"role": "assistant", "content": reply}));
    messages.push(json!({"role": "user", "content": "And her father?"}));
    let second = post(s, "/v1/chat/completions", req(&messages));
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let again = second["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    (texts, vec![reply, again], cached)
}

/// Three sampled completions at once (seeded; one with a repetition penalty): their texts.
fn sampled(s: &Server) -> Vec<String> {
    let bodies = [
        json!({"prompt": "It is a truth", "max_tokens": 24, "temperature": 0.9, "seed": 1}),
        json!({"prompt": "Emma", "max_tokens": 24, "temperature": 1.1, "top_k": 60, "seed": 2,
               "repeat_penalty": 1.3}),
        json!({"prompt": "Mr. Darcy", "max_tokens": 24, "temperature": 0.7, "top_p": 0.8, "seed": 3}),
    ];
    std::thread::scope(|sc| {
        let hs: Vec<_> = bodies
            .iter()
            .map(|b| {
                sc.spawn(move || {
                    let r = post(s, "/v1/completions", b.clone());
                    r["choices"][0]["text"].as_str().unwrap().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A prompt scored with `echo` and `logprobs` (two alternatives) and two reply tokens,
/// beside a request decoding: every log-probability reported, in order.
fn scored(s: &Server) -> Vec<f64> {
    let text = "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement";
    std::thread::scope(|sc| {
        let busy = sc.spawn(|| {
            post(
                s,
                "/v1/completions",
                json!({"prompt": "Emma", "max_tokens": 16, "temperature": 0}),
            )
        });
        let body =
            json!({"prompt": text, "max_tokens": 2, "temperature": 0, "logprobs": 2, "echo": true});
        let r = post(s, "/v1/completions", body);
        busy.join().unwrap();
        let lp = &r["choices"][0]["logprobs"];
        let mut out: Vec<f64> =
            lp["token_logprobs"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
        for top in lp["top_logprobs"].as_array().unwrap().iter().filter_map(Value::as_object) {
            let mut v: Vec<f64> = top.values().filter_map(Value::as_f64).collect();
            v.sort_by(f64::total_cmp);
            out.extend(v);
        }
        assert!(out.len() > 40, "{r}");
        out
    })
}

#[test]
fn a_server_on_a_pipeline_answers_as_one_node_does() {
    let local = start(load(None), Backend::Local);
    let want = exercise(&local);
    let want_scored = scored(&local);
    local.stop();
    assert!(want.2 > 0, "the second turn reuses the first's cache");
    assert!(want.0.iter().chain(&want.1).all(|t| !t.is_empty()), "{want:?}");

    let mut comms = InProcComm::mesh(2).into_iter();
    let (head, mut tail) = (comms.next().unwrap(), comms.next().unwrap());
    let worker = std::thread::spawn(move || {
        let m = load(Some(ModelPart { layers: 4..6, ends: false }));
        let mut s = Session::with_options(&m, session_opts());
        serve_stage(&mut s, &mut tail, PipelineTimeouts::default()).unwrap()
    });
    let head_model = load(Some(ModelPart { layers: 0..4, ends: true }));
    let piped = start(
        head_model,
        Backend::Mesh(Box::new(head), PipelineTimeouts::default(), Default::default()),
    );
    let got = exercise(&piped);
    let got_scored = scored(&piped);
    piped.stop();
    let stats = worker.join().unwrap();
    assert!(stats.steps > 24, "{stats:?}");
    assert_eq!(got, want, "the pipeline's replies differ from one node's");
    assert_eq!(got_scored, want_scored, "the pipeline's log-probabilities differ from one node's");
}

#[test]
fn a_server_on_a_tensor_parallel_mesh_answers_as_one_node_does() {
    let local = start(load(None), Backend::Local);
    let want = exercise(&local);
    let want_sampled = sampled(&local);
    let want_scored = scored(&local);
    local.stop();
    assert!(want_sampled.iter().all(|t| !t.is_empty()), "{want_sampled:?}");
    let c = load(None).config;
    let split = onebit_model::TensorSplit::proportional(&c, &[1.0, 1.0]).unwrap();
    let piece = |rank| {
        let tensor = Some(onebit_model::TensorPart { split: split.clone(), rank });
        let opts = LoadOptions { threads: 1, tensor, ..Default::default() };
        Model::from_pretrained(&repo("models/austen.gguf"), &opts).unwrap()
    };
    let mut comms = InProcComm::mesh(2).into_iter();
    let (head, tail) = (comms.next().unwrap(), comms.next().unwrap());
    let worker_model = piece(1);
    let worker = std::thread::spawn(move || {
        let s = Session::with_options(&worker_model, session_opts());
        onebit_dist::tensor::serve_tensor(s, Box::new(tail), PipelineTimeouts::default()).unwrap()
    });
    let t = PipelineTimeouts::default();
    let tp = start(piece(0), Backend::Tensor(Box::new(head), t, Default::default()));
    let got = exercise(&tp);
    // Decode turns of sampled replies only: each node sends its candidates, not its logits.
    let got_sampled = sampled(&tp);
    let got_scored = scored(&tp);
    let (sent, received) = mesh_bytes(&tp);
    tp.stop();
    let stats = worker.join().unwrap();
    assert!(stats.steps > 24 * 4 * 6, "{stats:?}");
    // The head's /metrics count what the worker counted at its end (the worker also read the
    // head's 1-byte STOP, sent after the counters were read).
    assert_eq!(received, stats.sent as f64, "{stats:?}");
    assert_eq!(sent + 1.0, stats.received as f64, "{stats:?}");
    assert_eq!(got, want, "the tensor-parallel mesh's replies differ from one node's");
    assert_eq!(got_sampled, want_sampled, "the mesh's sampled replies differ from one node's");
    assert_eq!(got_scored, want_scored, "the mesh's log-probabilities differ from one node's");
}

#[test]
fn a_server_on_the_gpu_answers_as_the_cpu_does() {
    let ctx = match onebit_gpu::GpuContext::new() {
        Ok(c) => std::sync::Arc::new(c),
        Err(e @ onebit_gpu::Error::NoAdapter(_)) => {
            let required = std::env::var("ONEBIT_GPU_REQUIRED").is_ok_and(|v| v == "1");
            assert!(!required, "ONEBIT_GPU_REQUIRED=1 but: {e}");
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let local = start(load(None), Backend::Local);
    let want = exercise(&local);
    let want_scored = scored(&local);
    local.stop();
    let gpu = start(load(None), Backend::Gpu(ctx));
    let got = exercise(&gpu);
    let got_scored = scored(&gpu);
    gpu.stop();
    assert_eq!(got_scored.len(), want_scored.len());
    for (i, (g, w)) in got_scored.iter().zip(&want_scored).enumerate() {
        assert!((g - w).abs() < 1e-3, "log-probability {i}: GPU {g}, CPU {w}");
    }
    assert!(got.2 > 0, "the second turn reuses the first's cache on the device too");
    assert_eq!(got, want, "the GPU server's replies differ from the CPU server's");
}

/// Status and body of a POST, whatever the status.
fn post_any(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let resp = ureq::post(&format!("http://{}{path}", s.addr()))
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// A server on the head of a pipeline whose first `blocks` blocks it holds, over `head`, with
/// the whole model as its fallback and `reform` to form the mesh again.
fn start_with_fallback(
    blocks: usize,
    head: Box<dyn onebit_dist::Comm>,
    reform: Option<onebit_server::Reform>,
) -> Server {
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let template = ChatTemplate::for_model(&repo("models/austen.gguf")).unwrap();
    let fallback = Fallback {
        model: repo("models/austen.gguf"),
        load: LoadOptions { threads: 1, ..Default::default() },
        reform,
    };
    Server::start_on(
        load(Some(ModelPart { layers: 0..blocks, ends: true })),
        tok,
        template,
        ServerConfig { fallback: Some(fallback), ..cfg() },
        Backend::Mesh(head, PipelineTimeouts::default(), Default::default()),
    )
    .unwrap()
}

/// The body of a GET.
fn get_text(s: &Server, path: &str) -> String {
    ureq::get(&format!("http://{}{path}", s.addr()))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap()
}

#[test]
fn a_server_whose_mesh_loses_its_worker_serves_on_from_the_head_alone() {
    let body = json!({"prompt": "It is a truth universally acknowledged", "max_tokens": 16, "temperature": 0});
    let local = start(load(None), Backend::Local);
    let want = post(&local, "/v1/completions", body.clone())["choices"][0]["text"].clone();
    local.stop();

    let mut comms = InProcComm::mesh(2).into_iter();
    let (head, mut tail) = (comms.next().unwrap(), comms.next().unwrap());
    // The worker gives up on the head after 300 ms without a message: a node gone away.
    let worker = std::thread::spawn(move || {
        let m = load(Some(ModelPart { layers: 4..6, ends: false }));
        let mut s = Session::with_options(&m, session_opts());
        let t =
            PipelineTimeouts { idle: std::time::Duration::from_millis(300), ..Default::default() };
        let _ = serve_stage(&mut s, &mut tail, t);
    });
    let s = start_with_fallback(4, Box::new(head), None);
    // On the mesh.
    assert_eq!(post(&s, "/v1/completions", body.clone())["choices"][0]["text"], want);
    worker.join().unwrap();
    // The request that finds the worker gone fails, saying so; the next runs on the head alone.
    let (status, err) = post_any(&s, "/v1/completions", body.clone());
    assert_eq!(status, 500, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("node 1"), "{err}");
    let (status, again) = post_any(&s, "/v1/completions", body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["choices"][0]["text"], want);
    let metrics = get_text(&s, "/metrics");
    assert!(metrics.contains("onebit_mesh_replans_total 1"), "{metrics}");
    s.stop();
}

/// A worker stage of `layers` on `tail` that gives up on the head after `idle` without a
/// message (a node gone away).
fn stage_thread(
    layers: std::ops::Range<usize>,
    mut tail: InProcComm,
    idle: std::time::Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let m = load(Some(ModelPart { layers, ends: false }));
        let mut s = Session::with_options(&m, session_opts());
        let _ = serve_stage(&mut s, &mut tail, PipelineTimeouts { idle, ..Default::default() });
    })
}

#[test]
fn a_server_whose_mesh_loses_a_node_forms_it_again_from_the_others() {
    let body = json!({"prompt": "It is a truth universally acknowledged", "max_tokens": 16, "temperature": 0});
    let local = start(load(None), Backend::Local);
    let want = post(&local, "/v1/completions", body.clone())["choices"][0]["text"].clone();
    local.stop();

    // Three nodes: the last stage goes away after 300 ms without a message.
    let mut comms = InProcComm::mesh(3).into_iter();
    let head = comms.next().unwrap();
    let long = std::time::Duration::from_secs(3600);
    let middle = stage_thread(2..4, comms.next().unwrap(), long);
    let last = stage_thread(4..6, comms.next().unwrap(), std::time::Duration::from_millis(300));
    // Formed again as two nodes (the head and a fresh stage for blocks 3..6), once.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, spawned) = (calls.clone(), std::sync::Arc::new(std::sync::Mutex::new(Vec::new())));
    let sp = spawned.clone();
    let reform: onebit_server::Reform = std::sync::Arc::new(move |why: &str| {
        assert!(why.contains("node"), "{why}");
        if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            return Err("formed once already".into());
        }
        let mut comms = InProcComm::mesh(2).into_iter();
        let head = comms.next().unwrap();
        let long = std::time::Duration::from_secs(3600);
        sp.lock().unwrap().push(stage_thread(3..6, comms.next().unwrap(), long));
        let model = load(Some(ModelPart { layers: 0..3, ends: true }));
        Ok((model, Backend::Mesh(Box::new(head), PipelineTimeouts::default(), Default::default())))
    });
    let s = start_with_fallback(2, Box::new(head), Some(reform));
    assert_eq!(post(&s, "/v1/completions", body.clone())["choices"][0]["text"], want);
    last.join().unwrap();
    // The request that finds the node gone fails; the next runs on the mesh formed again.
    let (status, err) = post_any(&s, "/v1/completions", body.clone());
    assert_eq!(status, 500, "{err}");
    let (status, again) = post_any(&s, "/v1/completions", body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["choices"][0]["text"], want);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let metrics = get_text(&s, "/metrics");
    assert!(metrics.contains("onebit_mesh_replans_total 1"), "{metrics}");
    s.stop();
    // The head's end of each mesh is gone: the stages end.
    middle.join().unwrap();
    for t in spawned.lock().unwrap().drain(..) {
        t.join().unwrap();
    }
}

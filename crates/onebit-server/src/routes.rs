//! The HTTP routes: OpenAI's chat and text completions (streamed as server-sent events or
//! whole), models, health, Prometheus metrics and the chat page.

use crate::logprobs::{self, TextLogprobs};
use crate::metrics::Metrics;
use crate::openai::{
    ApiError, ChatRequest, CompletionRequest, PromptInput, Report, Sampling, UsageBody,
};
use crate::scheduler::{Engine, Event, Job, Usage};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use onebit_model::chat_template::ChatTemplate;
use onebit_model::Tokenizer;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What every handler shares.
pub struct App {
    /// The engine thread.
    pub engine: Arc<Engine>,
    /// The model's tokenizer.
    pub tok: Arc<Tokenizer>,
    /// The model's chat template.
    pub template: ChatTemplate,
    /// The id clients name the model by.
    pub model_id: String,
    /// Context positions per request.
    pub ctx: usize,
    /// Token ids the model knows.
    pub vocab: usize,
    /// The model's end-of-sequence and start tokens.
    pub eos: Option<u32>,
    /// As `eos`.
    pub bos: Option<u32>,
    /// Bearer token required on /v1 routes, if set.
    pub api_key: Option<String>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Seconds since the epoch when the server started.
    pub created: u64,
    /// Request ids.
    pub next_id: AtomicU64,
}

pub(crate) type Shared = State<Arc<App>>;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl App {
    pub(crate) fn check_auth(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else { return Ok(()) };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(key.as_str()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "missing or wrong API key (Authorization: Bearer ...)",
            ))
        }
    }

    fn check_model(&self, model: &Option<String>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != &self.model_id => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("the model '{m}' does not exist (this server runs '{}')", self.model_id),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn invalid(&self, e: ApiError) -> Response {
        if e.status.is_client_error() {
            self.metrics.invalid.fetch_add(1, Relaxed);
        }
        e.into_response()
    }
}

pub(crate) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| {
        let status = e.status();
        ApiError::new(
            if status == StatusCode::PAYLOAD_TOO_LARGE { status } else { StatusCode::BAD_REQUEST },
            "invalid_request_error",
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request_too_large"
            } else {
                "invalid_json"
            },
            e.body_text(),
        )
    })
}

/// Which endpoint a reply is for (their bodies differ).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Text,
}

/// GET /.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// GET /health.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// GET /metrics.
pub async fn metrics(State(app): Shared) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// GET /v1/models.
pub async fn models(State(app): Shared, headers: HeaderMap) -> Response {
    if let Err(e) = app.check_auth(&headers) {
        return app.invalid(e);
    }
    Json(json!({"object": "list", "data": [{"id": app.model_id, "object": "model", "created": app.created, "owned_by": "onebit"}]})).into_response()
}

/// POST /v1/chat/completions.
pub async fn chat(
    State(app): Shared,
    headers: HeaderMap,
    b: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let prepared = (|| {
        app.check_auth(&headers)?;
        let req = body(b)?;
        app.check_model(&req.model)?;
        let report = req.sampling.report(true)?;
        let messages = req.messages()?;
        let text = app
            .template
            .render(&messages)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        let prompt = app
            .tok
            .encode(&text, false)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        Ok::<_, ApiError>((req.sampling, prompt, report))
    })();
    match prepared {
        Ok((sampling, prompt, report)) => {
            run(app, Kind::Chat, sampling, Prompted { ids: prompt, report, echo: None }).await
        }
        Err(e) => app.invalid(e),
    }
}

/// POST /v1/completions.
pub async fn completions(
    State(app): Shared,
    headers: HeaderMap,
    b: Result<Json<CompletionRequest>, JsonRejection>,
) -> Response {
    let prepared = (|| {
        app.check_auth(&headers)?;
        let req = body(b)?;
        app.check_model(&req.model)?;
        let report = req.sampling.report(false)?;
        let (ids, text) = match req.input()? {
            PromptInput::Text(t) => {
                let ids = app
                    .tok
                    .encode(t, true)
                    .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
                (ids, t.to_string())
            }
            PromptInput::Ids(ids) => {
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= app.vocab) {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!("token id {id} is outside the vocabulary of {}", app.vocab),
                    ));
                }
                let text = match report.echo {
                    true => app
                        .tok
                        .decode(ids)
                        .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
                    false => String::new(),
                };
                (ids.to_vec(), text)
            }
        };
        let echo = report.echo.then_some(text);
        Ok::<_, ApiError>((req.sampling, Prompted { ids, report, echo }))
    })();
    match prepared {
        Ok((sampling, prompted)) => run(app, Kind::Text, sampling, prompted).await,
        Err(e) => app.invalid(e),
    }
}

/// A request's prompt and what its reply reports beside the text.
struct Prompted {
    ids: Vec<u32>,
    report: Report,
    /// The prompt's text, which the reply starts with (`echo`).
    echo: Option<String>,
}

/// Queues the request and answers with its stream or its whole reply.
async fn run(app: Arc<App>, kind: Kind, sampling: Sampling, p: Prompted) -> Response {
    let params = match sampling.params(p.ids.len(), app.ctx, app.vocab, p.report) {
        Ok(params) => params,
        Err(e) => return app.invalid(e),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let prompt_logprobs = p.report.prompt_logprobs();
    let first = p.ids.first().copied();
    let job = Job { prompt: p.ids, params, events: tx, cancel, prompt_logprobs };
    if app.engine.submit(job).is_err() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "queue_full",
            "all slots are busy and the queue is full; retry shortly",
        )
        .into_response();
    }
    let id = format!(
        "{}-{}",
        if kind == Kind::Chat { "chatcmpl" } else { "cmpl" },
        app.next_id.fetch_add(1, Relaxed)
    );
    let out = Reply { kind, id, report: p.report, echo: p.echo, first };
    if sampling.stream {
        stream(app, out, rx, sampling.stream_options.include_usage).into_response()
    } else {
        whole(app, out, rx).await
    }
}

/// How a reply is written: its endpoint, id, and what it reports beside the text.
struct Reply {
    kind: Kind,
    id: String,
    report: Report,
    echo: Option<String>,
    /// The prompt's first token (reported with no log-probability under `echo`).
    first: Option<u32>,
}

/// A reply's log-probabilities as they arrive.
enum Logprobs {
    None,
    Chat(Vec<onebit_model::TokenLogprob>),
    Text(TextLogprobs),
}

impl Logprobs {
    fn new(r: &Reply) -> Self {
        match (r.report.logprobs, r.kind) {
            (None, _) => Logprobs::None,
            (Some(_), Kind::Chat) => Logprobs::Chat(Vec::new()),
            (Some(_), Kind::Text) => Logprobs::Text(TextLogprobs::default()),
        }
    }

    /// Takes an event's log-probabilities; false for other events.
    fn take(&mut self, tok: &Tokenizer, first: Option<u32>, ev: &Event) -> bool {
        match (self, ev) {
            (Logprobs::Chat(v), Event::Logprob(lp)) => v.push(lp.clone()),
            (Logprobs::Text(t), Event::Logprob(lp)) => t.push(tok, lp),
            (Logprobs::Text(t), Event::PromptLogprobs(lps)) => {
                if let Some(id) = first {
                    t.first(tok, id);
                }
                lps.iter().for_each(|lp| t.push(tok, lp));
            }
            (_, Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
            _ => return false,
        }
        true
    }

    /// The `logprobs` field for what arrived since the last call.
    fn field(&mut self, tok: &Tokenizer) -> Value {
        match self {
            Logprobs::None => Value::Null,
            Logprobs::Chat(v) => {
                let f = logprobs::chat(tok, v);
                v.clear();
                f
            }
            Logprobs::Text(t) => t.take(),
        }
    }
}

fn usage_body(u: &Usage) -> UsageBody {
    UsageBody {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens + u.completion_tokens,
        prompt_tokens_details: json!({"cached_tokens": u.cached_tokens}),
    }
}

/// llama.cpp's `timings` object: what the prompt and the reply took.
fn timings(u: &Usage) -> Value {
    json!({
        "cache_n": u.cached_tokens, "prompt_n": u.prompt_tokens - u.cached_tokens, "prompt_ms": u.prompt_ms,
        "predicted_n": u.completion_tokens, "predicted_ms": u.decode_ms,
        "predicted_per_second": if u.decode_ms > 0.0 { u.completion_tokens as f64 / (u.decode_ms / 1e3) } else { 0.0 },
    })
}

async fn whole(app: Arc<App>, r: Reply, mut rx: mpsc::UnboundedReceiver<Event>) -> Response {
    let (kind, id) = (r.kind, &r.id);
    let mut text = r.echo.clone().unwrap_or_default();
    let mut lps = Logprobs::new(&r);
    while let Some(ev) = rx.recv().await {
        if lps.take(&app.tok, r.first, &ev) {
            continue;
        }
        match ev {
            Event::Logprob(_) | Event::PromptLogprobs(_) => {}
            Event::Piece(p) => text.push_str(&p),
            Event::Failed(e) => {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "engine_error",
                    e,
                )
                .into_response()
            }
            Event::Done(u) => {
                let logprobs = lps.field(&app.tok);
                let choice = match kind {
                    Kind::Chat => {
                        json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": u.finish.openai(), "logprobs": logprobs})
                    }
                    Kind::Text => {
                        json!({"index": 0, "text": text, "finish_reason": u.finish.openai(), "logprobs": logprobs})
                    }
                };
                return Json(json!({
                    "id": id, "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
                    "created": now(), "model": app.model_id, "choices": [choice],
                    "usage": usage_body(&u), "timings": timings(&u),
                }))
                .into_response();
            }
        }
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "engine_error",
        "the engine stopped",
    )
    .into_response()
}

fn stream(
    app: Arc<App>,
    r: Reply,
    mut rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>> {
    // A task turns engine events into SSE chunks; when the client goes away the response (and
    // `out`'s receiver) is dropped, the task ends, `rx` is dropped, and the engine cancels the
    // request at its next step.
    let (out, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let created = now();
    let kind = r.kind;
    let object = if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
    let (id, model) = (r.id.clone(), app.model_id.clone());
    let chunk = move |choice: Value, usage: Option<Value>| {
        let mut v = json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]});
        if let Some(u) = usage {
            v["choices"] = json!([]);
            v["usage"] = u;
        }
        Ok(SseEvent::default().data(v.to_string()))
    };
    let piece = move |text: &str, finish: Option<&str>, logprobs: Value| match kind {
        Kind::Chat => {
            json!({"index": 0, "delta": if text.is_empty() && finish.is_some() { json!({}) } else { json!({"content": text}) }, "finish_reason": finish, "logprobs": logprobs})
        }
        Kind::Text => {
            json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs})
        }
    };
    tokio::spawn(async move {
        let mut lps = Logprobs::new(&r);
        // The echoed prompt goes first; with its log-probabilities, once the prompt is read.
        let mut echo = r.echo;
        let prompt_lps = r.report.prompt_logprobs().is_some();
        if kind == Kind::Chat {
            let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null, "logprobs": null});
            if out.send(chunk(first, None)).await.is_err() {
                return;
            }
        }
        if !prompt_lps {
            if let Some(text) = echo.take() {
                if out.send(chunk(piece(&text, None, Value::Null), None)).await.is_err() {
                    return;
                }
            }
        }
        while let Some(ev) = rx.recv().await {
            let prompt_read = matches!(ev, Event::PromptLogprobs(_));
            if lps.take(&app.tok, r.first, &ev) {
                if let (true, Some(text)) = (prompt_read, echo.take()) {
                    let msg = chunk(piece(&text, None, lps.field(&app.tok)), None);
                    if out.send(msg).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            let msg = match ev {
                Event::Logprob(_) | Event::PromptLogprobs(_) => continue,
                Event::Piece(p) => chunk(piece(&p, None, lps.field(&app.tok)), None),
                Event::Failed(e) => {
                    let err = json!({"error": {"message": e, "type": "server_error"}});
                    if out.send(Ok(SseEvent::default().data(err.to_string()))).await.is_ok() {
                        let _ = out.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    }
                    return;
                }
                Event::Done(u) => {
                    let last = piece("", Some(u.finish.openai()), lps.field(&app.tok));
                    if out.send(chunk(last, None)).await.is_err() {
                        return;
                    }
                    if include_usage {
                        let mut usage = serde_json::to_value(usage_body(&u)).unwrap_or(Value::Null);
                        usage["timings"] = timings(&u);
                        if out.send(chunk(Value::Null, Some(usage))).await.is_err() {
                            return;
                        }
                    }
                    let _ = out.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    return;
                }
            };
            if out.send(msg).await.is_err() {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out_rx))
}

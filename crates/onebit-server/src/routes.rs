//! The HTTP routes: OpenAI's chat and text completions (streamed as server-sent events or
//! whole), models, health, Prometheus metrics and the chat page.

use crate::metrics::Metrics;
use crate::openai::{ApiError, ChatRequest, CompletionRequest, Sampling, UsageBody};
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
    /// Bearer token required on /v1 routes, if set.
    pub api_key: Option<String>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Seconds since the epoch when the server started.
    pub created: u64,
    /// Request ids.
    pub next_id: AtomicU64,
}

type Shared = State<Arc<App>>;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl App {
    fn check_auth(&self, headers: &HeaderMap) -> Result<(), ApiError> {
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

    fn invalid(&self, e: ApiError) -> Response {
        if e.status.is_client_error() {
            self.metrics.invalid.fetch_add(1, Relaxed);
        }
        e.into_response()
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
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
        let messages = req.messages()?;
        let text = app
            .template
            .render(&messages)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        let prompt = app
            .tok
            .encode(&text, false)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        Ok::<_, ApiError>((req.sampling, prompt))
    })();
    match prepared {
        Ok((sampling, prompt)) => run(app, Kind::Chat, sampling, prompt).await,
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
        let prompt = app
            .tok
            .encode(req.text()?, true)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
        Ok::<_, ApiError>((req.sampling, prompt))
    })();
    match prepared {
        Ok((sampling, prompt)) => run(app, Kind::Text, sampling, prompt).await,
        Err(e) => app.invalid(e),
    }
}

/// Queues the request and answers with its stream or its whole reply.
async fn run(app: Arc<App>, kind: Kind, sampling: Sampling, prompt: Vec<u32>) -> Response {
    let params = match sampling.params(prompt.len(), app.ctx) {
        Ok(p) => p,
        Err(e) => return app.invalid(e),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job { prompt, params, events: tx, cancel };
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
    if sampling.stream {
        stream(app, kind, id, rx, sampling.stream_options.include_usage).into_response()
    } else {
        whole(app, kind, id, rx).await
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

async fn whole(
    app: Arc<App>,
    kind: Kind,
    id: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
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
                let choice = match kind {
                    Kind::Chat => {
                        json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": u.finish.openai(), "logprobs": null})
                    }
                    Kind::Text => {
                        json!({"index": 0, "text": text, "finish_reason": u.finish.openai(), "logprobs": null})
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
    kind: Kind,
    id: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>> {
    // A task turns engine events into SSE chunks; when the client goes away the response (and
    // `out`'s receiver) is dropped, the task ends, `rx` is dropped, and the engine cancels the
    // request at its next step.
    let (out, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let created = now();
    let object = if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
    let chunk = move |choice: Value, usage: Option<Value>| {
        let mut v = json!({"id": id, "object": object, "created": created, "model": app.model_id, "choices": [choice]});
        if let Some(u) = usage {
            v["choices"] = json!([]);
            v["usage"] = u;
        }
        Ok(SseEvent::default().data(v.to_string()))
    };
    let piece = move |text: &str, finish: Option<&str>| match kind {
        Kind::Chat => {
            json!({"index": 0, "delta": if text.is_empty() && finish.is_some() { json!({}) } else { json!({"content": text}) }, "finish_reason": finish, "logprobs": null})
        }
        Kind::Text => json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null}),
    };
    tokio::spawn(async move {
        if kind == Kind::Chat {
            let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null, "logprobs": null});
            if out.send(chunk(first, None)).await.is_err() {
                return;
            }
        }
        while let Some(ev) = rx.recv().await {
            let msg = match ev {
                Event::Piece(p) => chunk(piece(&p, None), None),
                Event::Failed(e) => {
                    let err = json!({"error": {"message": e, "type": "server_error"}});
                    if out.send(Ok(SseEvent::default().data(err.to_string()))).await.is_ok() {
                        let _ = out.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    }
                    return;
                }
                Event::Done(u) => {
                    if out.send(chunk(piece("", Some(u.finish.openai())), None)).await.is_err() {
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

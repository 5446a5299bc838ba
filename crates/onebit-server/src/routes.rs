//! The HTTP routes: OpenAI's chat and text completions (streamed as server-sent events or
//! whole), models, health, Prometheus metrics and the chat page.

use crate::metrics::Metrics;
use crate::openai::{ApiError, ChatRequest, CompletionRequest, PromptInput, Report, Sampling};
use crate::reply::{self, Choice, Kind, Reply};
use crate::scheduler::{Engine, Job};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use onebit_model::chat_template::ChatTemplate;
use onebit_model::Tokenizer;
use serde_json::{json, Value};
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
    // `meta` as llama-server gives it: what a client sizes its prompts by.
    let meta = json!({"n_ctx": app.ctx, "n_vocab": app.vocab});
    Json(json!({"object": "list", "data": [{"id": app.model_id, "object": "model", "created": app.created, "owned_by": "onebit", "meta": meta}]})).into_response()
}

/// GET /props: llama-server's description of itself (context, slots, special tokens, chat
/// template), which llama.cpp's web UI and other clients read.
pub async fn props(State(app): Shared, headers: HeaderMap) -> Response {
    if let Err(e) = app.check_auth(&headers) {
        return app.invalid(e);
    }
    let name = |id: Option<u32>| id.and_then(|id| app.tok.id_to_token(id));
    Json(json!({
        "model_alias": app.model_id,
        "total_slots": app.metrics.slots.load(Relaxed),
        "default_generation_settings": {"n_ctx": app.ctx},
        "bos_token": name(app.bos),
        "eos_token": name(app.eos),
        "chat_template": app.template.source().unwrap_or(""),
        "modalities": {"vision": false, "audio": false},
        "build_info": concat!("onebit ", env!("CARGO_PKG_VERSION")),
    }))
    .into_response()
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
        // The tools are checked (and their call schema compiled) once, in `params`.
        let tools = req.sampling.tools.as_ref().filter(|_| req.sampling.tools_active());
        let text = app
            .template
            .render_with_tools(&messages, tools)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        let prompt = app
            .tok
            .encode(&text, false)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        Ok::<_, ApiError>((req.sampling, vec![Prompted { ids: prompt, echo: None }], report))
    })();
    match prepared {
        Ok((sampling, prompts, report)) => run(app, Kind::Chat, sampling, prompts, report).await,
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
        let prompts = req
            .inputs()?
            .into_iter()
            .map(|input| app.prompted(input, report.echo))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, ApiError>((req.sampling, prompts, report))
    })();
    match prepared {
        Ok((sampling, prompts, report)) => run(app, Kind::Text, sampling, prompts, report).await,
        Err(e) => app.invalid(e),
    }
}

/// A request's prompt as token ids, and its text when the reply starts with it (`echo`).
struct Prompted {
    ids: Vec<u32>,
    echo: Option<String>,
}

impl App {
    /// A completion prompt's token ids (text is tokenized, ids checked against the vocabulary).
    fn prompted(&self, input: PromptInput<'_>, echo: bool) -> Result<Prompted, ApiError> {
        let err = |e: onebit_model::Error| ApiError::invalid("prompt", e.to_string());
        match input {
            PromptInput::Text(t) => Ok(Prompted {
                ids: self.tok.encode(t, true).map_err(err)?,
                echo: echo.then(|| t.to_string()),
            }),
            PromptInput::Ids(ids) => {
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!("token id {id} is outside the vocabulary of {}", self.vocab),
                    ));
                }
                let echo = if echo { Some(self.tok.decode(ids).map_err(err)?) } else { None };
                Ok(Prompted { ids: ids.to_vec(), echo })
            }
        }
    }
}

/// Queues one job for each of the `n` choices of every prompt (all or none) and answers
/// with their stream or their whole reply.
async fn run(
    app: Arc<App>,
    kind: Kind,
    sampling: Sampling,
    prompts: Vec<Prompted>,
    report: Report,
) -> Response {
    let n = sampling.n.unwrap_or(1) as usize;
    // Not sized from `n` before `params` has checked it: `"n": 9e18` must be a 400, not an
    // allocation that aborts the process.
    let mut jobs = Vec::new();
    for p in &prompts {
        let params = match sampling.params(p.ids.len(), app.ctx, app.vocab, report) {
            Ok(params) => params,
            Err(e) => return app.invalid(e),
        };
        for j in 0..n {
            let mut params = params.clone();
            // The choices of one prompt are different draws.
            params.sampling.seed = params.sampling.seed.wrapping_add(j as u64);
            jobs.push((p, j == 0, params));
        }
    }
    if jobs.len() > app.engine.capacity() {
        return app.invalid(ApiError::invalid(
            "n",
            format!(
                "{} choices, more than the server's queue holds ({})",
                jobs.len(),
                app.engine.capacity()
            ),
        ));
    }
    let mut choices = Vec::with_capacity(jobs.len());
    let mut cancels = Vec::with_capacity(jobs.len());
    for (p, counts_prompt, params) in jobs {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let prompt_logprobs = report.prompt_logprobs();
        let job = Job {
            prompt: p.ids.clone(),
            params,
            events: tx,
            cancel: cancel.clone(),
            prompt_logprobs,
        };
        if app.engine.submit(job).is_err() {
            cancels.iter().for_each(|c: &Arc<AtomicBool>| c.store(true, Relaxed));
            return ApiError::queue_full().into_response();
        }
        cancels.push(cancel);
        let (echo, first) = (p.echo.clone(), p.ids.first().copied());
        choices.push(Choice { rx, echo, first, counts_prompt });
    }
    let id = format!(
        "{}-{}",
        if kind == Kind::Chat { "chatcmpl" } else { "cmpl" },
        app.next_id.fetch_add(1, Relaxed)
    );
    let logprobs = report.logprobs;
    let prompt_logprobs = report.prompt_logprobs().is_some();
    let tools = kind == Kind::Chat && sampling.tools_active();
    let r = Reply { kind, id, logprobs, prompt_logprobs, choices, tools };
    if sampling.stream {
        reply::stream(app, r, sampling.stream_options.include_usage).into_response()
    } else {
        reply::whole(app, r).await
    }
}

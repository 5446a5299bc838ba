//! llama-server's own completion route, `POST /completion`, for the front ends and editor
//! plugins written against it: `prompt` (text, token ids, or both mixed), `n_predict`
//! (-1: to the context), llama.cpp's sampling fields with its defaults (temperature 0.8,
//! top-k 40, top-p 0.95, min-p 0.05), `n_probs`, `logit_bias` in its list forms, `stream`.
//! The reply is `{content, stop, stop_type, stopping_word, tokens_predicted,
//! tokens_evaluated, tokens_cached, timings, completion_probabilities}`; streamed, one
//! `data: {...}` event per piece and a last one with `stop: true` (no `[DONE]`, as
//! llama-server). Validation and generation are the OpenAI routes' (the same [`Sampling`]).

use crate::logprobs::entry;
use crate::openai::{ApiError, Sampling, Stop, StreamOptions};
use crate::reply::timings;
use crate::routes::{body, Shared};
use crate::scheduler::{Event, Job, Usage};
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use onebit_model::logprobs::MAX_TOP_LOGPROBS;
use onebit_model::{FinishReason, Tokenizer};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::mpsc;

/// POST /completion, the fields read (others are ignored, as llama-server ignores them).
#[derive(Debug, Deserialize)]
pub struct NativeRequest {
    /// Text, token ids, or a list mixing both.
    pub prompt: Value,
    /// Most tokens to generate; -1 (the default): up to the context.
    pub n_predict: Option<i64>,
    /// Temperature (default 0.8).
    pub temperature: Option<f32>,
    /// Top-k (default 40; 0: all).
    pub top_k: Option<i64>,
    /// Top-p (default 0.95).
    pub top_p: Option<f32>,
    /// Min-p (default 0.05).
    pub min_p: Option<f32>,
    /// Repetition penalty (default 1: off).
    pub repeat_penalty: Option<f32>,
    /// OpenAI's presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Seed; -1 (the default): a fresh one.
    pub seed: Option<i64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Stream as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Alternatives reported beside each token (0: none).
    pub n_probs: Option<u64>,
    /// `[[token, bias], ...]`, `[[token, false], ...]` (banned) or `{"token": bias}`.
    pub logit_bias: Option<Value>,
    /// `{"type": "json_object"}`: JSON mode, as the OpenAI routes.
    pub response_format: Option<Value>,
    /// A GBNF grammar the reply follows.
    pub grammar: Option<Value>,
    /// A JSON schema the reply follows (structured output).
    pub json_schema: Option<Value>,
}

impl NativeRequest {
    /// The prompt's token ids.
    fn ids(&self, tok: &Tokenizer, vocab: usize) -> Result<Vec<u32>, ApiError> {
        let bad = |m: String| ApiError::invalid("prompt", m);
        let text = |t: &str, special| tok.encode(t, special).map_err(|e| bad(e.to_string()));
        let id = |v: &Value| match v.as_u64() {
            Some(i) if (i as usize) < vocab => Ok(i as u32),
            _ => Err(bad(format!("token id {v} is not in the vocabulary of {vocab}"))),
        };
        let ids = match &self.prompt {
            Value::String(s) => text(s, true)?,
            Value::Array(parts) => {
                let mut ids = Vec::new();
                for (i, p) in parts.iter().enumerate() {
                    match p {
                        Value::String(s) => ids.extend(text(s, i == 0)?),
                        n => ids.push(id(n)?),
                    }
                }
                ids
            }
            _ => return Err(bad("prompt is text, token ids, or a list of both".into())),
        };
        Ok(ids)
    }

    /// The OpenAI routes' sampling fields for this request, llama.cpp's defaults filled in.
    fn sampling(&self) -> Result<Sampling, ApiError> {
        let bias = match &self.logit_bias {
            Some(Value::Array(pairs)) => {
                let mut m = Map::new();
                for p in pairs {
                    let (t, b) = match p.as_array().map(Vec::as_slice) {
                        Some([t, b]) if t.is_u64() => (t.to_string(), b),
                        _ => {
                            return Err(ApiError::invalid(
                                "logit_bias",
                                "pairs of [token id, bias]",
                            ))
                        }
                    };
                    let b = if b == &Value::Bool(false) { json!(-100.0) } else { b.clone() };
                    m.insert(t, b);
                }
                Some(Value::Object(m))
            }
            other => other.clone(),
        };
        if self.n_probs.is_some_and(|n| n as usize > MAX_TOP_LOGPROBS) {
            let m = format!("n_probs is at most {MAX_TOP_LOGPROBS}");
            return Err(ApiError::invalid("n_probs", m));
        }
        let n_predict = self.n_predict.unwrap_or(-1);
        if n_predict < -1 {
            return Err(ApiError::invalid("n_predict", "n_predict is -1 (no limit) or a count"));
        }
        Ok(Sampling {
            max_tokens: (n_predict >= 0).then_some(n_predict as u64),
            temperature: Some(self.temperature.unwrap_or(0.8)),
            top_k: Some(self.top_k.map_or(40, |k| k.max(0) as u64)),
            top_p: Some(self.top_p.unwrap_or(0.95)),
            min_p: Some(self.min_p.unwrap_or(0.05)),
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed.filter(|&s| s >= 0),
            stop: Stop::Many(self.stop.clone()),
            stream: self.stream,
            stream_options: StreamOptions::default(),
            logit_bias: bias,
            logprobs: self.n_probs.filter(|&n| n > 0).map(|n| json!(n)),
            response_format: self.response_format.clone(),
            grammar: self.grammar.clone(),
            json_schema: self.json_schema.clone(),
            ..Sampling::default()
        })
    }
}

/// llama-server's `stop_type`.
fn stop_type(f: FinishReason) -> &'static str {
    match f {
        // llama-server ends a grammar-complete reply by sampling its EOS.
        FinishReason::Eos | FinishReason::Complete => "eos",
        FinishReason::Stop => "word",
        FinishReason::Length | FinishReason::ContextFull => "limit",
        FinishReason::Cancelled => "none",
    }
}

/// The last object of a reply: how it ended, counts and timings.
fn ending(app: &crate::routes::App, u: &Usage) -> Value {
    json!({
        "stop": true, "model": app.model_id, "stop_type": stop_type(u.finish),
        "stopping_word": u.stop_word.clone().unwrap_or_default(),
        "tokens_predicted": u.completion_tokens, "tokens_evaluated": u.prompt_tokens,
        "tokens_cached": u.cached_tokens, "truncated": false,
        "timings": timings(u),
    })
}

/// POST /completion.
pub async fn completion(
    axum::extract::State(app): Shared,
    headers: HeaderMap,
    b: Result<Json<NativeRequest>, JsonRejection>,
) -> Response {
    let prepared = (|| {
        app.check_auth(&headers)?;
        let req = body(b)?;
        let ids = req.ids(&app.tok, app.vocab)?;
        let sampling = req.sampling()?;
        let report = sampling.report(false)?;
        let params = sampling.params(ids.len(), app.ctx, app.vocab, report)?;
        Ok::<_, ApiError>((ids, params, req.stream))
    })();
    let (ids, params, stream) = match prepared {
        Ok(p) => p,
        Err(e) => return app.invalid(e),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job { prompt: ids, params, events: tx, cancel, prompt_logprobs: None };
    if app.engine.submit(job).is_err() {
        return ApiError::queue_full().into_response();
    }
    if !stream {
        let (mut content, mut probs) = (String::new(), Vec::new());
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Piece(p) => content.push_str(&p),
                Event::Logprob(lp) => probs.push(entry(&app.tok, &lp, true)),
                Event::PromptLogprobs(_) => {}
                Event::Failed(e) => return ApiError::engine(e).into_response(),
                Event::Done(u) => {
                    let mut v = ending(&app, &u);
                    v["content"] = json!(content);
                    if !probs.is_empty() {
                        v["completion_probabilities"] = json!(probs);
                    }
                    return Json(v).into_response();
                }
            }
        }
        return ApiError::engine("the engine stopped").into_response();
    }
    // As the OpenAI routes stream: the client going away drops `out`'s receiver, the task
    // ends, `rx` closes and the engine cancels the job at its next step.
    let (out, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let mut probs = Vec::new();
        let event = |v: Value| Ok(SseEvent::default().data(v.to_string()));
        while let Some(ev) = rx.recv().await {
            let v = match ev {
                Event::Logprob(lp) => {
                    probs.push(entry(&app.tok, &lp, true));
                    continue;
                }
                Event::PromptLogprobs(_) => continue,
                Event::Piece(p) => {
                    let mut v = json!({"content": p, "stop": false});
                    if !probs.is_empty() {
                        v["completion_probabilities"] = json!(std::mem::take(&mut probs));
                    }
                    v
                }
                Event::Failed(e) => json!({"error": {"message": e, "type": "server_error"}}),
                Event::Done(u) => {
                    let mut v = ending(&app, &u);
                    v["content"] = json!("");
                    if !probs.is_empty() {
                        v["completion_probabilities"] = json!(std::mem::take(&mut probs));
                    }
                    let _ = out.send(event(v)).await;
                    return;
                }
            };
            let failed = v.get("error").is_some();
            if out.send(event(v)).await.is_err() || failed {
                return;
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out_rx)).into_response()
}

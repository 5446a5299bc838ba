//! The tokenizer and chat template over HTTP, in the shapes llama-server and vLLM serve
//! them, so that clients which count or score tokens (lm-evaluation-harness's remote
//! tokenizer, editors) need no copy of either: `POST /tokenize`, `POST /detokenize`,
//! `GET /tokenizer_info`, and llama-server's `POST /apply-template` (a chat request's
//! `messages` and `tools` as the prompt text the model would be given, `{"prompt"}`).
//!
//! `/tokenize` takes llama-server's `{"content", "add_special"}` (special tokens off unless
//! asked) or vLLM's `{"prompt", "add_special_tokens"}` (on unless refused), and answers
//! `{"tokens", "count", "max_model_len"}`; `/detokenize` answers `{"tokens"}` with both
//! servers' fields, `{"content", "prompt"}`.

use crate::openai::ApiError;
use crate::routes::{body, Shared};
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

/// POST /tokenize.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// The text (llama-server's name).
    pub content: Option<String>,
    /// The text (vLLM's name).
    pub prompt: Option<String>,
    /// Add the tokenizer's special tokens, e.g. BOS (llama-server's name).
    pub add_special: Option<bool>,
    /// As `add_special` (vLLM's name).
    pub add_special_tokens: Option<bool>,
}

/// POST /detokenize.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// POST /tokenize.
pub async fn tokenize(
    axum::extract::State(app): Shared,
    headers: HeaderMap,
    b: Result<Json<TokenizeRequest>, JsonRejection>,
) -> Response {
    let r = (|| {
        app.check_auth(&headers)?;
        let req = body(b)?;
        let (text, special) = match (&req.content, &req.prompt) {
            (Some(t), None) => (t, req.add_special.or(req.add_special_tokens).unwrap_or(false)),
            (None, Some(t)) => (t, req.add_special_tokens.or(req.add_special).unwrap_or(true)),
            _ => return Err(ApiError::invalid("content", "give the text as content or prompt")),
        };
        let tokens = app
            .tok
            .encode(text, special)
            .map_err(|e| ApiError::invalid("content", e.to_string()))?;
        Ok(json!({"count": tokens.len(), "max_model_len": app.ctx, "tokens": tokens}))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => app.invalid(e),
    }
}

/// POST /detokenize.
pub async fn detokenize(
    axum::extract::State(app): Shared,
    headers: HeaderMap,
    b: Result<Json<DetokenizeRequest>, JsonRejection>,
) -> Response {
    let r = (|| {
        app.check_auth(&headers)?;
        let req = body(b)?;
        if let Some(&id) = req.tokens.iter().find(|&&id| id as usize >= app.vocab) {
            return Err(ApiError::invalid(
                "tokens",
                format!("token id {id} is outside the vocabulary of {}", app.vocab),
            ));
        }
        let text =
            app.tok.decode(&req.tokens).map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
        Ok(json!({"content": text, "prompt": text}))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => app.invalid(e),
    }
}

/// GET /tokenizer_info: the special tokens' strings, the chat template and the context.
pub async fn info(axum::extract::State(app): Shared, headers: HeaderMap) -> Response {
    if let Err(e) = app.check_auth(&headers) {
        return app.invalid(e);
    }
    let name = |id: Option<u32>| id.and_then(|id| app.tok.id_to_token(id));
    Json(json!({
        "eos_token": name(app.eos),
        "bos_token": name(app.bos),
        "pad_token": null,
        "chat_template": app.template.source(),
        "model_max_length": app.ctx,
        "vocab_size": app.vocab,
    }))
    .into_response()
}

/// POST /apply-template: the prompt text a chat request's messages (and tools) become.
pub async fn apply_template(
    axum::extract::State(app): Shared,
    headers: HeaderMap,
    b: Result<Json<crate::openai::ChatRequest>, JsonRejection>,
) -> Response {
    let r = (|| {
        app.check_auth(&headers)?;
        let req = body(b)?;
        let messages = req.messages()?;
        let tools = req.sampling.tools.as_ref().filter(|_| req.sampling.tools_active());
        let prompt = (app.template.render_with_tools(&messages, tools))
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        Ok(json!({"prompt": prompt}))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => app.invalid(e),
    }
}

//! The OpenAI API's request and response bodies (the subset chat front ends, editors and the
//! official client send), their validation, and its error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use onebit_model::chat_template::Message;
use onebit_model::{GenerationParams, SamplerConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An API error: status and the OpenAI error body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.type`.
    pub kind: &'static str,
    /// `error.code`.
    pub code: &'static str,
    /// `error.message`.
    pub message: String,
    /// `error.param`.
    pub param: Option<&'static str>,
}

impl ApiError {
    /// A 400 for a field with a bad value.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_value",
            message: message.into(),
            param: Some(param),
        }
    }

    /// Any status with a message.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError { status, kind, code, message: message.into(), param: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
pub enum Stop {
    /// No stop strings.
    #[default]
    None,
    /// One.
    One(String),
    /// Several (at most 4 in OpenAI's API).
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by both endpoints.
#[derive(Debug, Deserialize, Default)]
pub struct Sampling {
    /// `max_tokens` (legacy name).
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens` (current name).
    pub max_completion_tokens: Option<u64>,
    /// Temperature (OpenAI default 1).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k (llama.cpp extension).
    pub top_k: Option<u64>,
    /// Min-p (llama.cpp extension).
    pub min_p: Option<f32>,
    /// Repetition penalty (llama.cpp extension; 1 = off).
    pub repeat_penalty: Option<f32>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Stop,
    /// Replies wanted (only 1).
    pub n: Option<u64>,
    /// Stream as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: StreamOptions,
    /// Accepted and ignored at 0, refused otherwise (not implemented).
    pub presence_penalty: Option<f32>,
    /// As `presence_penalty`.
    pub frequency_penalty: Option<f32>,
}

impl Sampling {
    /// The generation settings, checked against the context: `prompt` tokens leave
    /// `ctx - prompt` positions for the reply.
    pub fn params(&self, prompt: usize, ctx: usize) -> Result<GenerationParams, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("n", "only n = 1 is supported"));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(
                    if name == "presence_penalty" {
                        "presence_penalty"
                    } else {
                        "frequency_penalty"
                    },
                    format!("{name} is not supported (use repeat_penalty)"),
                ));
            }
        }
        if prompt == 0 {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        if prompt >= ctx {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
                format!("the prompt is {prompt} tokens; the context holds {ctx}, with room for at least one reply token"),
            ));
        }
        let room = ctx - prompt;
        let max = self.max_completion_tokens.or(self.max_tokens).unwrap_or(room as u64);
        if max == 0 {
            return Err(ApiError::invalid("max_tokens", "max_tokens must be at least 1"));
        }
        if max > ctx as u64 {
            return Err(ApiError::invalid(
                "max_tokens",
                format!("max_tokens {max} exceeds the context of {ctx} tokens"),
            ));
        }
        let stop = match &self.stop {
            Stop::None => Vec::new(),
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        };
        if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
            return Err(ApiError::invalid("stop", "up to 4 non-empty stop strings"));
        }
        let d = SamplerConfig::default();
        let sampling = SamplerConfig {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.map_or(d.top_k, |k| k as usize),
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(1.0),
            seed: self.seed.map_or(d.seed, |s| s as u64),
            ..d
        };
        sampling.validate().map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
        Ok(GenerationParams { max_tokens: (max as usize).min(room), sampling, stop })
    }
}

/// A chat message's content: a string, or text parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": "..."}]`.
    Parts(Vec<Value>),
}

/// One message of a chat request.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// system, user, assistant.
    pub role: String,
    /// The text.
    pub content: Option<Content>,
}

/// POST /v1/chat/completions.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The model id.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl ChatRequest {
    /// The conversation as template messages.
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages is empty"));
        }
        self.messages
            .iter()
            .map(|m| {
                if !matches!(
                    m.role.as_str(),
                    "system" | "user" | "assistant" | "developer" | "tool"
                ) {
                    return Err(ApiError::invalid(
                        "messages",
                        format!("unknown role '{}'", m.role),
                    ));
                }
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut t = String::new();
                        for p in parts {
                            match (
                                p.get("type").and_then(Value::as_str),
                                p.get("text").and_then(Value::as_str),
                            ) {
                                (Some("text"), Some(s)) => t.push_str(s),
                                _ => {
                                    return Err(ApiError::invalid(
                                        "messages",
                                        "only text content parts are supported",
                                    ))
                                }
                            }
                        }
                        t
                    }
                };
                let role = if m.role == "developer" { "system".into() } else { m.role.clone() };
                Ok(Message { role, content })
            })
            .collect()
    }
}

/// `prompt`: a string or a one-element list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A string.
    One(String),
    /// A list (one string supported).
    Many(Vec<String>),
}

/// POST /v1/completions.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The model id.
    pub model: Option<String>,
    /// The text to continue.
    pub prompt: Prompt,
    /// Sampling and streaming fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl CompletionRequest {
    /// The prompt text.
    pub fn text(&self) -> Result<&str, ApiError> {
        match &self.prompt {
            Prompt::One(s) => Ok(s),
            Prompt::Many(v) if v.len() == 1 => Ok(&v[0]),
            Prompt::Many(_) => {
                Err(ApiError::invalid("prompt", "one prompt per request is supported"))
            }
        }
    }
}

/// `usage` with llama.cpp-style timings beside it.
#[derive(Clone, Debug, Serialize)]
pub struct UsageBody {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
    /// `{"cached_tokens": n}`: prompt tokens whose KV was reused.
    pub prompt_tokens_details: Value,
}

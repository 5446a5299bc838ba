//! The OpenAI API's request and response bodies (the subset chat front ends, editors and the
//! official client send), their validation, and its error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use onebit_model::chat_template::Message;
use onebit_model::gbnf::Grammar;
use onebit_model::json_schema::JsonSchema;
use onebit_model::logprobs::MAX_TOP_LOGPROBS;
use onebit_model::{GenerationParams, LogitAdjust, SamplerConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// How a reply is held to a shape (from [`Sampling::constraint`]).
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// JSON mode: one JSON object.
    pub json_object: bool,
    /// A JSON schema (structured output, or the tools' call schema).
    pub schema: Option<Arc<JsonSchema>>,
    /// With `schema`: only a reply starting with `{` is held to it (`tool_choice` "auto").
    pub optional: bool,
    /// With `schema`: how many more documents may follow the first, one a line (parallel
    /// tool calls).
    pub more: usize,
    /// A GBNF grammar.
    pub grammar: Option<Arc<Grammar>>,
}

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

    /// The 503 of a full queue (with `Retry-After`).
    pub fn queue_full() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "queue_full",
            "all slots are busy and the queue is full; retry shortly",
        )
    }

    /// A 500: the engine failed on the request.
    pub fn engine(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "engine_error", message)
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

/// Most choices one request may ask for (`n` times the prompts), each a job in a slot.
pub const MAX_CHOICES: usize = 16;

/// A seed for a request that gave none: OpenAI and llama-server sample afresh each time (a
/// chat front end's "regenerate" must not repeat the reply).
fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one(n)
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
    /// Seed: replies sampled with one repeat; without, each request draws its own.
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
    /// Subtracted from the logit of every token the reply holds (-2 to 2).
    pub presence_penalty: Option<f32>,
    /// Subtracted from a token's logit for each time the reply holds it (-2 to 2).
    pub frequency_penalty: Option<f32>,
    /// `{"token id": bias}`, each bias -100 to 100, added to the logits.
    pub logit_bias: Option<Value>,
    /// Chat: `true` reports each reply token's log-probability; text completions: the
    /// number of alternatives reported beside each token.
    pub logprobs: Option<Value>,
    /// Chat: alternatives reported beside each token (needs `logprobs: true`).
    pub top_logprobs: Option<u64>,
    /// Text completions: the reply starts with the prompt (and with `logprobs`, the
    /// prompt's tokens are reported too).
    #[serde(default)]
    pub echo: bool,
    /// `{"type": "text"}`, `{"type": "json_object"}` (JSON mode) or `{"type": "json_schema",
    /// "json_schema": {"schema": ...}}` (structured output).
    pub response_format: Option<Value>,
    /// Function calling: `[{"type": "function", "function": {name, description,
    /// parameters}}]`; a reply may be (or, by `tool_choice`, must be) a call of one.
    pub tools: Option<Value>,
    /// "auto" (the default with tools), "required", "none", or `{"type": "function",
    /// "function": {"name": ...}}`.
    pub tool_choice: Option<Value>,
    /// Whether a reply may call several tools (one a line; OpenAI's default: true).
    pub parallel_tool_calls: Option<bool>,
    /// llama-server's grammar-constrained sampling: a GBNF grammar the reply follows.
    pub grammar: Option<Value>,
    /// llama-server's schema-constrained sampling: a JSON schema the reply follows.
    pub json_schema: Option<Value>,
}

/// What a reply reports beside its text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Report {
    /// Log-probabilities of the reply's tokens, with this many alternatives each.
    pub logprobs: Option<usize>,
    /// The prompt is echoed first (text completions).
    pub echo: bool,
}

impl Report {
    /// Log-probabilities of the prompt's tokens, with this many alternatives (`echo` with
    /// `logprobs`).
    pub fn prompt_logprobs(&self) -> Option<usize> {
        self.logprobs.filter(|_| self.echo)
    }
}

impl Sampling {
    /// What the reply reports beside its text, for the chat endpoint (`chat`) or the
    /// text completions one.
    pub fn report(&self, chat: bool) -> Result<Report, ApiError> {
        let top = |n: u64, param| {
            if n as usize > MAX_TOP_LOGPROBS {
                Err(ApiError::invalid(param, format!("at most {MAX_TOP_LOGPROBS} alternatives")))
            } else {
                Ok(n as usize)
            }
        };
        if !chat && self.tools_active() {
            return Err(ApiError::invalid("tools", "tools are for /v1/chat/completions"));
        }
        if chat {
            let on = match &self.logprobs {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ApiError::invalid("logprobs", "logprobs is true or false")),
            };
            if self.top_logprobs.is_some() && !on {
                return Err(ApiError::invalid("top_logprobs", "top_logprobs needs logprobs: true"));
            }
            let n = top(self.top_logprobs.unwrap_or(0), "top_logprobs")?;
            return Ok(Report { logprobs: on.then_some(n), echo: false });
        }
        let logprobs = match &self.logprobs {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(top(n, "logprobs")?),
                None => {
                    return Err(ApiError::invalid(
                        "logprobs",
                        "logprobs is the number of alternatives reported (0 to 20)",
                    ))
                }
            },
        };
        Ok(Report { logprobs, echo: self.echo })
    }

    /// `logit_bias` and the presence and frequency penalties, checked against a vocabulary
    /// of `vocab` tokens.
    fn adjust(&self, vocab: usize) -> Result<LogitAdjust, ApiError> {
        let mut bias = Vec::new();
        match &self.logit_bias {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let (Ok(t), Some(b)) = (k.parse::<u32>(), v.as_f64()) else {
                        return Err(ApiError::invalid(
                            "logit_bias",
                            format!("logit_bias maps token ids to numbers; got {k:?}: {v}"),
                        ));
                    };
                    bias.push((t, b as f32));
                }
            }
            Some(_) => {
                return Err(ApiError::invalid("logit_bias", "logit_bias is an object of token ids"))
            }
        }
        let a = LogitAdjust {
            bias,
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
        };
        a.validate(vocab).map_err(|e| {
            let param = match e.to_string() {
                m if m.contains("presence") => "presence_penalty",
                m if m.contains("frequency") => "frequency_penalty",
                _ => "logit_bias",
            };
            ApiError::invalid(param, e.to_string())
        })?;
        Ok(a)
    }

    /// Whether the request offers tools a reply may call (a non-empty list, `tool_choice`
    /// not "none").
    pub fn tools_active(&self) -> bool {
        let listed = matches!(&self.tools, Some(Value::Array(l)) if !l.is_empty());
        listed && self.tool_choice.as_ref().and_then(Value::as_str) != Some("none")
    }

    /// The tools a reply may call, checked: the schema of a call (`{"name", "arguments"}`,
    /// [`JsonSchema::tool_call`]) and whether one is forced; None without tools or with
    /// `tool_choice: "none"`.
    pub fn tools(&self) -> Result<Option<Tools>, ApiError> {
        let list = match &self.tools {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(l)) if l.is_empty() => return Ok(None),
            Some(Value::Array(l)) => l,
            Some(_) => return Err(ApiError::invalid("tools", "tools must be an array")),
        };
        let mut fns = Vec::new();
        for t in list {
            let f = t
                .get("function")
                .filter(|_| t.get("type").and_then(Value::as_str) == Some("function"));
            let name =
                f.and_then(|f| f.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty());
            let (Some(f), Some(name)) = (f, name) else {
                let m = "each tool is {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}}";
                return Err(ApiError::invalid("tools", m));
            };
            fns.push((name.to_string(), f.get("parameters").filter(|p| !p.is_null()).cloned()));
        }
        let mut named_one = false;
        let forced = match &self.tool_choice {
            None | Some(Value::Null) => false,
            Some(Value::String(c)) if c == "auto" => false,
            Some(Value::String(c)) if c == "required" => true,
            Some(Value::String(c)) if c == "none" => return Ok(None),
            Some(c) => {
                let named = c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
                let Some(name) =
                    named.filter(|_| c.get("type").and_then(Value::as_str) == Some("function"))
                else {
                    let m = "tool_choice is auto, required, none or {\"type\": \"function\", \"function\": {\"name\": ...}}";
                    return Err(ApiError::invalid("tool_choice", m));
                };
                if !fns.iter().any(|(n, _)| n == name) {
                    return Err(ApiError::invalid(
                        "tool_choice",
                        format!("no tool is named {name:?}"),
                    ));
                }
                fns.retain(|(n, _)| n == name);
                named_one = true;
                true
            }
        };
        let schema =
            JsonSchema::tool_call(&fns).map_err(|e| ApiError::invalid("tools", e.to_string()))?;
        // Several calls a reply, one a line, unless the request asks for one (a named
        // function is called once, as OpenAI's forced function is).
        let parallel = self.parallel_tool_calls.unwrap_or(true) && !named_one;
        let more = if parallel { MAX_TOOL_CALLS - 1 } else { 0 };
        Ok(Some(Tools { schema: Arc::new(schema), forced, more }))
    }

    /// The reply's constraint: JSON mode (`response_format` json_object) and/or a compiled
    /// JSON schema (`response_format` json_schema, or llama-server's `json_schema` field),
    /// or the call schema of the tools offered (then `optional` says whether a reply may be
    /// text instead, `tool_choice` "auto"), or a GBNF grammar (llama-server's `grammar`);
    /// what this server cannot honour (a schema keyword it cannot enforce, tools beside a
    /// response format, a grammar beside a schema) is a 400 naming it rather than ignored.
    pub fn constraint(&self) -> Result<Shape, ApiError> {
        let given = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
        let text_format =
            self.response_format.as_ref().and_then(|f| f.get("type")) == Some(&json!("text"));
        if given(&self.grammar) {
            if given(&self.json_schema) || given(&self.response_format) && !text_format {
                let m = "either json_schema (response_format) or grammar can be given, not both";
                return Err(ApiError::invalid("grammar", m));
            }
            if self.tools_active() {
                return Err(ApiError::invalid("grammar", "grammar beside tools is not supported"));
            }
            let Some(text) = self.grammar.as_ref().and_then(Value::as_str) else {
                return Err(ApiError::invalid("grammar", "grammar must be a string (GBNF)"));
            };
            let g =
                Grammar::parse(text).map_err(|e| ApiError::invalid("grammar", e.to_string()))?;
            return Ok(Shape { grammar: Some(Arc::new(g)), ..Shape::default() });
        }
        if let Some(t) = self.tools()? {
            if given(&self.json_schema) || given(&self.response_format) && !text_format {
                let m = "tools beside response_format or json_schema are not supported";
                return Err(ApiError::invalid("tools", m));
            }
            return Ok(Shape {
                schema: Some(t.schema),
                optional: !t.forced,
                more: t.more,
                ..Shape::default()
            });
        }
        let compile = |param: &'static str, schema: &Value| {
            JsonSchema::compile(schema)
                .map(Arc::new)
                .map_err(|e| ApiError::invalid(param, e.to_string()))
        };
        if let Some(schema) = self.json_schema.as_ref().filter(|v| !v.is_null()) {
            return Ok(Shape { schema: Some(compile("json_schema", schema)?), ..Shape::default() });
        }
        let Some(f) = self.response_format.as_ref().filter(|v| !v.is_null()) else {
            return Ok(Shape::default());
        };
        // OpenAI's {"type": "json_schema", "json_schema": {"name", "schema", "strict"}};
        // llama-server also reads a `schema` beside the type.
        let schema = f.get("json_schema").and_then(|j| j.get("schema")).or_else(|| f.get("schema"));
        match f.get("type").and_then(Value::as_str) {
            Some("text") => Ok(Shape::default()),
            Some("json_object") => Ok(Shape {
                json_object: true,
                schema: schema.map(|s| compile("response_format", s)).transpose()?,
                ..Shape::default()
            }),
            Some("json_schema") => {
                let any = Value::Bool(true);
                let schema = compile("response_format", schema.unwrap_or(&any))?;
                Ok(Shape { schema: Some(schema), ..Shape::default() })
            }
            _ => Err(ApiError::invalid(
                "response_format",
                "response_format type is text, json_object or json_schema",
            )),
        }
    }

    /// The generation settings, checked against the context and a vocabulary of `vocab`
    /// tokens: `prompt` tokens leave `ctx - prompt` positions for the reply; `report` from
    /// [`Sampling::report`].
    pub fn params(
        &self,
        prompt: usize,
        ctx: usize,
        vocab: usize,
        report: Report,
    ) -> Result<GenerationParams, ApiError> {
        if self.n.is_some_and(|n| !(1..=MAX_CHOICES as u64).contains(&n)) {
            return Err(ApiError::invalid("n", format!("n is 1 to {MAX_CHOICES}")));
        }
        let adjust = self.adjust(vocab)?;
        let shape = self.constraint()?;
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
        // Zero tokens is a request for the prompt's log-probabilities alone.
        if max == 0 && !report.echo {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1 (0 only with echo)",
            ));
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
            seed: self.seed.map_or_else(fresh_seed, |s| s as u64),
            ..d
        };
        sampling.validate().map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
        Ok(GenerationParams {
            max_tokens: (max as usize).min(room),
            sampling,
            stop,
            logprobs: report.logprobs,
            adjust,
            json_object: shape.json_object,
            json_schema: shape.schema,
            schema_optional: shape.optional,
            schema_more: shape.more,
            grammar: shape.grammar,
        })
    }
}

/// The tools a chat request offers ([`Sampling::tools`]).
pub struct Tools {
    /// The schema of a call of one of them.
    pub schema: Arc<JsonSchema>,
    /// Whether the reply must be a call (`tool_choice` "required" or a named function).
    pub forced: bool,
    /// How many more calls may follow the first, one a line.
    pub more: usize,
}

/// Most tool calls in one reply (`parallel_tool_calls`).
pub const MAX_TOOL_CALLS: usize = 8;

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
    /// An assistant's calls of tools (`[{"id", "type": "function", "function": {"name",
    /// "arguments"}}]`), shown to the model as the calls it wrote.
    pub tool_calls: Option<Value>,
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
                let mut content = content;
                for call in m.tool_calls.as_ref().and_then(Value::as_array).into_iter().flatten() {
                    let f = &call["function"];
                    let args = match &f["arguments"] {
                        Value::String(a) => {
                            serde_json::from_str(a).unwrap_or(Value::String(a.clone()))
                        }
                        other => other.clone(),
                    };
                    let text = json!({"name": f["name"], "arguments": args}).to_string();
                    content = if content.is_empty() { text } else { format!("{content}\n{text}") };
                }
                let role = if m.role == "developer" { "system".into() } else { m.role.clone() };
                Ok(Message { role, content })
            })
            .collect()
    }
}

/// `prompt`: a string, token ids, or a list of either (one choice each).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A string.
    One(String),
    /// Several strings.
    Many(Vec<String>),
    /// Token ids.
    Ids(Vec<u32>),
    /// Several lists of token ids.
    IdLists(Vec<Vec<u32>>),
}

/// A completion's prompt as the client gave it.
pub enum PromptInput<'a> {
    /// Text, to be tokenized.
    Text(&'a str),
    /// Token ids, to be run as they are.
    Ids(&'a [u32]),
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
    /// The prompts, text or token ids (their choices come in this order, `n` each).
    pub fn inputs(&self) -> Result<Vec<PromptInput<'_>>, ApiError> {
        let inputs: Vec<_> = match &self.prompt {
            Prompt::One(s) => vec![PromptInput::Text(s)],
            Prompt::Many(v) => v.iter().map(|s| PromptInput::Text(s)).collect(),
            Prompt::Ids(ids) => vec![PromptInput::Ids(ids)],
            Prompt::IdLists(v) => v.iter().map(|ids| PromptInput::Ids(ids)).collect(),
        };
        let n = self.sampling.n.unwrap_or(1).max(1) as usize;
        // (An `n` out of range is named by `Sampling::params`.)
        if inputs.is_empty() || (n <= MAX_CHOICES && inputs.len() * n > MAX_CHOICES) {
            return Err(ApiError::invalid(
                "prompt",
                format!("1 to {MAX_CHOICES} choices a request (prompts times n)"),
            ));
        }
        Ok(inputs)
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

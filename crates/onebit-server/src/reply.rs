//! Writing a request's reply from its jobs' events: whole (one JSON body) or streamed
//! (server-sent events, `data: {...}` chunks then `data: [DONE]`), with one choice per job —
//! several for `n` > 1 or several prompts, each choice's chunks carrying its `index`.

use crate::logprobs::ReplyLogprobs;
use crate::openai::{ApiError, UsageBody};
use crate::routes::App;
use crate::scheduler::{Event, Usage};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Which endpoint a reply is for (their bodies differ).
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// One choice of a reply: its job's events and what its text starts with.
pub struct Choice {
    /// The job's events.
    pub rx: mpsc::UnboundedReceiver<Event>,
    /// The prompt's text, which the choice starts with (`echo`).
    pub echo: Option<String>,
    /// The prompt's first token (reported with no log-probability under `echo`).
    pub first: Option<u32>,
    /// Whether its prompt counts in the usage (the first choice of each prompt).
    pub counts_prompt: bool,
}

/// How a reply is written: its endpoint, id, reported alternatives and choices.
pub struct Reply {
    /// The endpoint.
    pub kind: Kind,
    /// `chatcmpl-N` or `cmpl-N`.
    pub id: String,
    /// Log-probabilities with this many alternatives, if asked for.
    pub logprobs: Option<usize>,
    /// Whether the prompt's log-probabilities come (echo with logprobs).
    pub prompt_logprobs: bool,
    /// One per job, in `index` order.
    pub choices: Vec<Choice>,
    /// Whether a chat reply may be a tool call (a reply starting with `{`, held to the
    /// tools' call schema), reported as `tool_calls`.
    pub tools: bool,
}

/// A tool call reply (`{"name", "arguments"}`, or several, one a line) as OpenAI's
/// `tool_calls` entries, or None if the text is not whole calls. Only a reply that starts
/// with `{` was held to the call schema ("auto" leaves any other free): free text that
/// parses is not a call.
fn tool_calls(text: &str, id: &str, index: usize) -> Option<Vec<Value>> {
    if !text.starts_with('{') {
        return None;
    }
    let mut calls = Vec::new();
    let base = format!("call_{}_{index}", id.rsplit('-').next().unwrap_or(id));
    for (k, v) in serde_json::Deserializer::from_str(text).into_iter::<Value>().enumerate() {
        let v = v.ok()?;
        let name = v.get("name")?.as_str()?;
        let args = v.get("arguments")?;
        let call = if k == 0 { base.clone() } else { format!("{base}_{k}") };
        calls.push(
            json!({"id": call, "type": "function", "function": {"name": name, "arguments": args.to_string()}}),
        );
    }
    Some(calls).filter(|c| !c.is_empty())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The usage of a reply's choices: each prompt once, every choice's tokens.
#[derive(Default)]
struct Totals {
    prompt: usize,
    cached: usize,
    completion: usize,
}

impl Totals {
    fn add(&mut self, u: &Usage, counts_prompt: bool) {
        if counts_prompt {
            self.prompt += u.prompt_tokens;
            self.cached += u.cached_tokens;
        }
        self.completion += u.completion_tokens;
    }

    fn body(&self) -> UsageBody {
        UsageBody {
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            total_tokens: self.prompt + self.completion,
            prompt_tokens_details: json!({"cached_tokens": self.cached}),
        }
    }
}

/// llama.cpp's `timings` object: what the (first choice's) prompt and reply took.
pub fn timings(u: &Usage) -> Value {
    json!({
        "cache_n": u.cached_tokens, "prompt_n": u.prompt_tokens - u.cached_tokens, "prompt_ms": u.prompt_ms,
        "predicted_n": u.completion_tokens, "predicted_ms": u.decode_ms,
        "predicted_per_second": if u.decode_ms > 0.0 { u.completion_tokens as f64 / (u.decode_ms / 1e3) } else { 0.0 },
    })
}

/// The whole reply, once every choice has ended (a failed one fails the request; the
/// others' jobs are then cancelled as their channels close).
pub async fn whole(app: Arc<App>, r: Reply) -> Response {
    let kind = r.kind;
    let (mut choices, mut totals, mut first_usage) = (Vec::new(), Totals::default(), None);
    for (index, mut c) in r.choices.into_iter().enumerate() {
        let mut text = c.echo.take().unwrap_or_default();
        let mut lps = ReplyLogprobs::new(r.logprobs, kind == Kind::Chat);
        let u = loop {
            let Some(ev) = c.rx.recv().await else {
                return ApiError::engine("the engine stopped").into_response();
            };
            if lps.take(&app.tok, c.first, &ev) {
                continue;
            }
            match ev {
                Event::Logprob(_) | Event::PromptLogprobs(_) => {}
                Event::Piece(p) => text.push_str(&p),
                Event::Failed(e) => return ApiError::engine(e).into_response(),
                Event::Done(u) => break u,
            }
        };
        let (finish, logprobs) = (u.finish.openai(), lps.field(&app.tok));
        let calls = r.tools.then(|| tool_calls(&text, &r.id, index)).flatten();
        choices.push(match (kind, calls) {
            (Kind::Chat, Some(calls)) => {
                json!({"index": index, "message": {"role": "assistant", "content": null, "tool_calls": calls}, "finish_reason": "tool_calls", "logprobs": logprobs})
            }
            (Kind::Chat, None) => {
                json!({"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": logprobs})
            }
            (Kind::Text, _) => {
                json!({"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs})
            }
        });
        totals.add(&u, c.counts_prompt);
        first_usage.get_or_insert(u);
    }
    Json(json!({
        "id": r.id, "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": now(), "model": app.model_id, "choices": choices,
        "usage": totals.body(), "timings": first_usage.as_ref().map(timings),
    }))
    .into_response()
}

/// A choice's state while its chunks stream.
struct Streaming {
    lps: ReplyLogprobs,
    /// With tools: whether the reply's first text came, and the text of a tool call
    /// (held back: its `tool_calls` delta goes when it is whole).
    decided: bool,
    call: Option<String>,
    echo: Option<String>,
    first: Option<u32>,
    counts_prompt: bool,
}

/// The reply as server-sent events. A task per choice forwards its job's events into one
/// channel; a task turns them into chunks. When the client goes away the response (and
/// `out`'s receiver) is dropped, the tasks end, the jobs' channels close, and the engine
/// cancels them at its next step.
pub fn stream(
    app: Arc<App>,
    r: Reply,
    include_usage: bool,
) -> Sse<tokio_stream::wrappers::ReceiverStream<Result<SseEvent, Infallible>>> {
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
    let piece = move |index: usize, text: &str, finish: Option<&str>, logprobs: Value| match kind {
        Kind::Chat => {
            json!({"index": index, "delta": if text.is_empty() && finish.is_some() { json!({}) } else { json!({"content": text}) }, "finish_reason": finish, "logprobs": logprobs})
        }
        Kind::Text => {
            json!({"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs})
        }
    };
    let (merged_tx, mut merged) = mpsc::unbounded_channel::<(usize, Event)>();
    let mut states = Vec::with_capacity(r.choices.len());
    for (i, c) in r.choices.into_iter().enumerate() {
        let (mut rx, tx) = (c.rx, merged_tx.clone());
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if tx.send((i, ev)).is_err() {
                    return;
                }
            }
        });
        let lps = ReplyLogprobs::new(r.logprobs, kind == Kind::Chat);
        states.push(Streaming {
            lps,
            decided: !r.tools,
            call: None,
            echo: c.echo,
            first: c.first,
            counts_prompt: c.counts_prompt,
        });
    }
    drop(merged_tx);
    let prompt_lps = r.prompt_logprobs;
    let id = r.id.clone();
    tokio::spawn(async move {
        // Each choice's echoed prompt goes first; with its log-probabilities, once read.
        for (i, s) in states.iter_mut().enumerate() {
            if kind == Kind::Chat {
                let role = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null, "logprobs": null});
                if out.send(chunk(role, None)).await.is_err() {
                    return;
                }
            }
            // (With the prompt's log-probabilities, its text waits for them.)
            if prompt_lps {
                continue;
            }
            if let Some(text) = s.echo.take() {
                if out.send(chunk(piece(i, &text, None, Value::Null), None)).await.is_err() {
                    return;
                }
            }
        }
        let (mut left, mut totals, mut first_usage) = (states.len(), Totals::default(), None);
        while let Some((i, ev)) = merged.recv().await {
            let s = &mut states[i];
            let prompt_read = matches!(ev, Event::PromptLogprobs(_));
            if s.lps.take(&app.tok, s.first, &ev) {
                if let (true, Some(text)) = (prompt_read, s.echo.take()) {
                    let msg = chunk(piece(i, &text, None, s.lps.field(&app.tok)), None);
                    if out.send(msg).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            let msg = match ev {
                Event::Logprob(_) | Event::PromptLogprobs(_) => continue,
                Event::Piece(p) => {
                    if !s.decided && !p.is_empty() {
                        s.decided = true;
                        s.call = p.starts_with('{').then(String::new);
                    }
                    if let Some(call) = &mut s.call {
                        call.push_str(&p);
                        continue;
                    }
                    chunk(piece(i, &p, None, s.lps.field(&app.tok)), None)
                }
                Event::Failed(e) => {
                    let err = json!({"error": {"message": e, "type": "server_error"}});
                    if out.send(Ok(SseEvent::default().data(err.to_string()))).await.is_ok() {
                        let _ = out.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    }
                    return;
                }
                Event::Done(u) => {
                    let mut finish = u.finish.openai();
                    if let Some(text) = s.call.take() {
                        let delta = match tool_calls(&text, &id, i) {
                            Some(mut calls) => {
                                finish = "tool_calls";
                                for (k, call) in calls.iter_mut().enumerate() {
                                    call["index"] = json!(k);
                                }
                                json!({"index": i, "delta": {"tool_calls": calls}, "finish_reason": null, "logprobs": null})
                            }
                            // Cut short (max_tokens): the text as it is.
                            None => piece(i, &text, None, Value::Null),
                        };
                        if out.send(chunk(delta, None)).await.is_err() {
                            return;
                        }
                    }
                    let last = piece(i, "", Some(finish), s.lps.field(&app.tok));
                    if out.send(chunk(last, None)).await.is_err() {
                        return;
                    }
                    totals.add(&u, s.counts_prompt);
                    first_usage.get_or_insert(u);
                    left -= 1;
                    if left > 0 {
                        continue;
                    }
                    if let (true, Some(u)) = (include_usage, &first_usage) {
                        let mut usage = serde_json::to_value(totals.body()).unwrap_or(Value::Null);
                        usage["timings"] = timings(u);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_whole_calls_from_the_first_byte() {
        let calls =
            tool_calls(r#"{"name": "f", "arguments": {"a": [1]}}"#, "chatcmpl-7", 2).unwrap();
        assert_eq!(
            calls,
            [
                json!({"id": "call_7_2", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1]}"}})
            ]
        );
        let calls = tool_calls(
            "{\"name\": \"f\", \"arguments\": {}}\n{\"name\": \"g\", \"arguments\": {\"x\": 1}}",
            "chatcmpl-7",
            0,
        )
        .unwrap();
        let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["call_7_0", "call_7_0_1"]);
        assert_eq!(calls[1]["function"]["name"], "g");
        for text in [
            r#" {"name": "f", "arguments": {}}"#,
            r#"{"name": "f", "arguments": {"#,
            r#"{"name": 1, "arguments": {}}"#,
            "{\"name\": \"f\", \"arguments\": {}}\n{\"name\": \"g\"",
            "{\"name\": \"f\", \"arguments\": {}}\nthen",
        ] {
            assert_eq!(tool_calls(text, "chatcmpl-7", 0), None, "{text}");
        }
    }
}

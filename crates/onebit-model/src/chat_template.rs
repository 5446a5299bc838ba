//! Chat prompts: the model's own Jinja chat template (HF `tokenizer_config.json`
//! `chat_template`, or GGUF `tokenizer.chat_template`) rendered with minijinja, or a plain
//! "role: text" layout when the model has none.

use crate::error::{Error, Result};
use std::path::Path;

/// Instructions a template may run per render: real chat templates use a few thousand per
/// message; this allows conversations of hundreds of turns.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Message {
    /// "system", "user" or "assistant".
    pub role: String,
    /// The text.
    pub content: String,
}

/// A chat template ready to render conversations.
pub struct ChatTemplate {
    source: Option<String>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Finds the template of a model: `tokenizer_config.json` inside an HF directory or beside
    /// a model file, else a GGUF file's `tokenizer.chat_template`; none found means the plain
    /// layout.
    pub fn for_model(model: &str) -> Result<Self> {
        let p = Path::new(model);
        let cfg = if p.is_dir() {
            p.join("tokenizer_config.json")
        } else {
            p.with_file_name("tokenizer_config.json")
        };
        let mut t = ChatTemplate { source: None, bos: String::new(), eos: String::new() };
        if let Ok(text) = std::fs::read_to_string(&cfg) {
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", cfg.display())))?;
            t.source = v.get("chat_template").and_then(|c| c.as_str()).map(String::from);
            let tok = |k: &str| match v.get(k) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(o) => {
                    o.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_string()
                }
                None => String::new(),
            };
            t.bos = tok("bos_token");
            t.eos = tok("eos_token");
        } else if p.is_file() {
            // A GGUF file may carry its template and token strings itself.
            let f = crate::load::GgufModelFile::open(model)?;
            let h = &f.header;
            use crate::gguf::Value;
            t.source = h.get("tokenizer.chat_template").and_then(Value::as_str).map(String::from);
            let name = |key: &str| -> String {
                let id = h.get(key).and_then(Value::as_u64);
                match (id, h.get("tokenizer.ggml.tokens")) {
                    (Some(i), Some(Value::Array(v))) => {
                        v.get(i as usize).and_then(Value::as_str).unwrap_or_default().into()
                    }
                    _ => String::new(),
                }
            };
            t.bos = name("tokenizer.ggml.bos_token_id");
            t.eos = name("tokenizer.ggml.eos_token_id");
        }
        Ok(t)
    }

    /// A template from Jinja source.
    pub fn from_source(source: &str, bos: &str, eos: &str) -> Self {
        ChatTemplate { source: Some(source.into()), bos: bos.into(), eos: eos.into() }
    }

    /// The model's template source (Jinja), if it brought one.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Whether the model brought its own template.
    pub fn is_model_template(&self) -> bool {
        self.source.is_some()
    }

    /// The prompt for `messages`, ending where the assistant's reply starts.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        self.render_with_tools(messages, None)
    }

    /// The prompt for `messages` offering the functions `tools` (OpenAI's list of
    /// `{"type": "function", "function": {name, description, parameters}}`): a template that
    /// reads `tools` gets them; to another (and to the plain layout) they are described in
    /// the system message, with the form a call takes (`{"name", "arguments"}`, the form
    /// [`crate::json_schema::JsonSchema::tool_call`] holds a reply to).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        let native = self.source.as_deref().is_some_and(|s| s.contains("tools"));
        let mut described;
        let messages = match tools {
            Some(t) if !native => {
                described = messages.to_vec();
                let text = describe_tools(t);
                match described.first_mut() {
                    Some(m) if m.role == "system" => m.content = format!("{}\n\n{text}", m.content),
                    _ => described.insert(0, Message { role: "system".into(), content: text }),
                }
                &described[..]
            }
            _ => messages,
        };
        let Some(src) = &self.source else {
            // "role: text", without doubling a space a reply already starts with, so a reply
            // the model wrote after "assistant:" renders back to the same tokens next turn.
            let line = |m: &Message| {
                let sep = if m.content.starts_with(char::is_whitespace) { "" } else { " " };
                format!("{}:{sep}{}\n", m.role, m.content)
            };
            let mut out: String = messages.iter().map(line).collect();
            out.push_str("assistant:");
            return Ok(out);
        };
        let mut env = minijinja::Environment::new();
        // A template comes with the model file: bound its work so a hostile one (nested loops
        // of 2.5·10^7 steps; minijinja caps a single range below 10^4) is an error, not a hang.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
            },
        );
        let terr = |e: minijinja::Error| Error::Config(format!("chat template: {e}"));
        env.add_template("chat", src).map_err(terr)?;
        let ctx = minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => true,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        env.get_template("chat").map_err(terr)?.render(ctx).map_err(terr)
    }
}

/// The system message's account of `tools` for a template that does not read them.
fn describe_tools(tools: &serde_json::Value) -> String {
    let mut out = String::from(
        "To call a function, reply with only {\"name\": <its name>, \"arguments\": <its \
         arguments>}; to call several, one such line each. Functions:",
    );
    for t in tools.as_array().into_iter().flatten() {
        let f = t.get("function").unwrap_or(t);
        let field =
            |k: &str| f.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), String::from));
        out.push_str(&format!("\n- {}", field("name").unwrap_or_default()));
        if let Some(d) = field("description") {
            out.push_str(&format!(": {d}"));
        }
        if let Some(p) = field("parameters") {
            out.push_str(&format!(" Arguments (JSON schema): {p}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    #[test]
    fn tools_go_to_a_template_that_reads_them_and_into_the_system_message_otherwise() {
        let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Weather of a city", "parameters": {"type": "object"}}}]);
        let plain = ChatTemplate { source: None, bos: String::new(), eos: String::new() };
        let out = plain.render_with_tools(&[msg("user", "Rain in Bath?")], Some(&tools)).unwrap();
        assert!(out.starts_with("system: To call a function, reply with only {"), "{out}");
        assert!(
            out.contains(
                "- get_weather: Weather of a city Arguments (JSON schema): {\"type\":\"object\"}"
            ),
            "{out}"
        );
        assert!(out.ends_with("user: Rain in Bath?\nassistant:"), "{out}");
        let reads = ChatTemplate::from_source(
            "{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}",
            "",
            "",
        );
        let out = reads
            .render_with_tools(&[msg("system", "Be brief."), msg("user", "Hi")], Some(&tools))
            .unwrap();
        assert_eq!(out, "[get_weather]Be brief.Hi");
    }

    #[test]
    fn renders_a_llama3_style_template() {
        let src = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
        let t = ChatTemplate::from_source(src, "<|begin_of_text|>", "<|eot_id|>");
        let out = t.render(&[msg("user", "hi")]).unwrap();
        assert_eq!(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    }

    #[test]
    fn plain_layout_without_template_and_errors_surface() {
        let t = ChatTemplate { source: None, bos: String::new(), eos: String::new() };
        assert_eq!(t.render(&[msg("user", "hi")]).unwrap(), "user: hi\nassistant:");
        let bad = ChatTemplate::from_source("{{ raise_exception('no system role') }}", "", "");
        assert!(bad.render(&[msg("system", "x")]).is_err());
        let broken = ChatTemplate::from_source("{% for %}", "", "");
        assert!(broken.render(&[]).is_err());
        let nested =
            "{% for i in range(5000) %}{% for j in range(5000) %}x{% endfor %}{% endfor %}";
        let endless = ChatTemplate::from_source(nested, "", "");
        let e = endless.render(&[]).unwrap_err().to_string();
        assert!(e.contains("fuel"), "{e}");
    }
}

//! What keeps a reply in a shape while it is sampled: JSON mode ([`crate::json_mode`]), a
//! JSON schema ([`crate::json_schema`]) or a GBNF grammar ([`crate::gbnf`]). One seam for
//! [`crate::generation::Sequence`]: mask the logits, take the sampled token's bytes, say
//! when the reply is complete.

use crate::error::{Error, Result};
use crate::gbnf::Grammar;
use crate::gbnf_machine::GrammarMachine;
use crate::json_mode::JsonMachine;
use crate::json_schema::JsonSchema;
use crate::schema_machine::{SchemaMachine, SchemaMask};
use crate::tokenizer::Tokenizer;
use std::sync::Arc;

/// A reply's constraint and where its recognizer stands.
#[derive(Debug)]
pub(crate) enum Constraint {
    /// JSON mode: one JSON object.
    Object(JsonMachine),
    /// Structured output: one document of the schema. `optional`: only a reply starting
    /// with `{` is held to it, another is free text (`free` once its first token said so).
    /// `more`: documents that may still follow the current one, each after a newline (`gap`:
    /// that newline was read, the next document begins).
    Schema {
        schema: Arc<JsonSchema>,
        m: Box<SchemaMachine>,
        mask: SchemaMask,
        optional: bool,
        started: bool,
        free: bool,
        more: usize,
        gap: bool,
    },
    /// A sentence of a GBNF grammar.
    Grammar(Box<GrammarMachine>),
}

impl Constraint {
    /// The constraint a reply asked for (a grammar, else a schema over JSON mode), if any;
    /// `more`: how many further documents of the schema may follow the first, one a line.
    pub fn new(
        json_object: bool,
        schema: Option<&Arc<JsonSchema>>,
        optional: bool,
        more: usize,
        grammar: Option<&Arc<Grammar>>,
    ) -> Option<Self> {
        if let Some(g) = grammar {
            return Some(Constraint::Grammar(Box::new(GrammarMachine::new(g.clone()))));
        }
        match schema {
            Some(s) => Some(Constraint::Schema {
                schema: s.clone(),
                m: Box::new(SchemaMachine::new()),
                mask: SchemaMask::default(),
                optional,
                started: false,
                free: false,
                more,
                gap: false,
            }),
            None => json_object.then(|| Constraint::Object(JsonMachine::new())),
        }
    }

    /// −∞ for every token that cannot continue the document (the end-of-sequence token too,
    /// unless the document may end here).
    pub fn mask(&mut self, tok: &Tokenizer, logits: &mut [f32], eos: Option<u32>) -> Result<()> {
        let bytes = tok.token_bytes();
        let (left, what) = match self {
            Constraint::Object(m) => (bytes.mask(m, logits, eos), "JSON mode"),
            Constraint::Schema { free: true, .. } => return Ok(()),
            Constraint::Schema { schema, m, optional: true, started: false, .. } => {
                // Free text, or the start of a document: a token is refused only if it
                // begins with `{` and cannot begin one.
                for (id, l) in logits.iter_mut().enumerate() {
                    let b = bytes.get(id as u32);
                    if b.first() == Some(&b'{') && !m.clone().feed_all(schema, b) {
                        *l = f32::NEG_INFINITY;
                    }
                }
                return Ok(());
            }
            Constraint::Schema { schema, mask, gap: true, .. } => {
                // After the newline: the next document's first bytes (no end here).
                (mask.mask(schema, &SchemaMachine::new(), &bytes, logits, None), "json_schema")
            }
            Constraint::Schema { schema, m, more: 1.., .. } if m.is_done() => {
                // A whole document: the end, or a newline and the start of another.
                let mut left = 0;
                for (id, l) in logits.iter_mut().enumerate() {
                    let b = bytes.get(id as u32);
                    let ok = Some(id as u32) == eos
                        || b.split_first().is_some_and(|(&first, rest)| {
                            first == b'\n' && SchemaMachine::new().feed_all(schema, rest)
                        });
                    if ok {
                        left += 1;
                    } else {
                        *l = f32::NEG_INFINITY;
                    }
                }
                (left, "json_schema")
            }
            Constraint::Schema { schema, m, mask, .. } => {
                (mask.mask(schema, m, &bytes, logits, eos), "json_schema")
            }
            Constraint::Grammar(m) => (m.mask(&bytes, logits, eos), "grammar"),
        };
        if left == 0 {
            return Err(Error::Sampling(format!(
                "{what}: no token of the vocabulary continues the reply"
            )));
        }
        Ok(())
    }

    /// Takes the sampled token's bytes (the mask let only tokens through that keep the
    /// document valid).
    pub fn feed(&mut self, bytes: &[u8]) {
        match self {
            Constraint::Object(m) => {
                m.feed_all(bytes);
            }
            Constraint::Grammar(m) => {
                m.feed_all(bytes);
            }
            Constraint::Schema { free: true, .. } => {}
            Constraint::Schema { schema, m, optional, started, free, more, gap, .. } => {
                if *optional && !*started && bytes.first() != Some(&b'{') {
                    *free = true;
                }
                *started = true;
                if *free {
                    return;
                }
                for &b in bytes {
                    if !*gap && *more > 0 && b == b'\n' && m.is_done() {
                        *gap = true;
                        continue;
                    }
                    if *gap {
                        **m = SchemaMachine::new();
                        *more -= 1;
                        *gap = false;
                    }
                    m.feed(schema, b);
                }
            }
        }
    }

    /// Whether the document is complete (the reply ends).
    pub fn is_done(&self) -> bool {
        match self {
            Constraint::Object(m) => m.is_done(),
            Constraint::Schema { m, free, more, gap, .. } => {
                !free && !gap && *more == 0 && m.is_done()
            }
            Constraint::Grammar(m) => m.is_done(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several documents, one a line: after a whole one only the end or a newline and the
    /// start of another may follow; the reply is complete after the last one allowed.
    #[test]
    fn documents_follow_one_a_line_up_to_the_limit() {
        let tok = Tokenizer::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/austen.tokenizer.json"
        ))
        .unwrap();
        let schema = Arc::new(
            JsonSchema::compile(&serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}))
                .unwrap(),
        );
        let mut c = Constraint::new(false, Some(&schema), false, 2, None).unwrap();
        let bytes = tok.token_bytes();
        let n = tok.vocab_size();
        let eos = Some(0);
        for (k, doc) in [r#"{"a":1}"#, r#"{"a": 22}"#, r#"{"a":3}"#].iter().enumerate() {
            c.feed(doc.as_bytes());
            let mut logits = vec![0f32; n];
            if k == 2 {
                assert!(c.is_done());
                break;
            }
            assert!(!c.is_done());
            c.mask(&tok, &mut logits, eos).unwrap();
            for id in 1..n as u32 {
                let b = bytes.get(id);
                let ok =
                    b.first() == Some(&b'\n') && SchemaMachine::new().feed_all(&schema, &b[1..]);
                assert_eq!(logits[id as usize] == 0.0, ok, "{:?}", String::from_utf8_lossy(b));
            }
            assert_eq!(logits[0], 0.0, "the end may come after a whole document");
            c.feed(b"\n");
            let mut logits = vec![0f32; n];
            c.mask(&tok, &mut logits, eos).unwrap();
            assert!(logits[0] < 0.0, "no end right after the newline");
            let brace = (1..n as u32).find(|&id| bytes.get(id) == b"{").unwrap();
            assert_eq!(logits[brace as usize], 0.0);
        }
        // One document only: complete at once.
        let mut one = Constraint::new(false, Some(&schema), false, 0, None).unwrap();
        one.feed(br#"{"a":1}"#);
        assert!(one.is_done());
    }
}

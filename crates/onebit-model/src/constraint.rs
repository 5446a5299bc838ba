//! What keeps a reply in a shape while it is sampled: JSON mode ([`crate::json_mode`]), a
//! JSON schema ([`crate::json_schema`]) or a GBNF grammar ([`crate::gbnf`]). One seam for [`crate::generation::Sequence`]: mask
//! the logits, take the sampled token's bytes, say when the document is complete.

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
    Schema {
        schema: Arc<JsonSchema>,
        m: Box<SchemaMachine>,
        mask: SchemaMask,
        optional: bool,
        started: bool,
        free: bool,
    },
    /// A sentence of a GBNF grammar.
    Grammar(Box<GrammarMachine>),
}

impl Constraint {
    /// The constraint a reply asked for (a grammar, else a schema over JSON mode), if any.
    pub fn new(
        json_object: bool,
        schema: Option<&Arc<JsonSchema>>,
        optional: bool,
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
            Constraint::Schema { schema, m, optional, started, free, .. } => {
                if *optional && !*started && bytes.first() != Some(&b'{') {
                    *free = true;
                }
                *started = true;
                if !*free {
                    m.feed_all(schema, bytes);
                }
            }
        }
    }

    /// Whether the document is complete (the reply ends).
    pub fn is_done(&self) -> bool {
        match self {
            Constraint::Object(m) => m.is_done(),
            Constraint::Schema { m, free, .. } => !free && m.is_done(),
            Constraint::Grammar(m) => m.is_done(),
        }
    }
}

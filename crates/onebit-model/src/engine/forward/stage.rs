//! Pipeline stages: a [`Session`] over a model that holds only some blocks
//! ([`crate::load::ModelPart`]) runs rows that arrive as tokens (the first stage) or as hidden
//! states from the stage before ([`Session::stage`]), and the node holding the head turns the
//! last stage's hidden states into logits ([`Session::stage_head`]). Each stage keeps its own
//! positions and KV cache for its blocks; the rows are the same on every stage, so they agree.
//! The arithmetic is the whole-model forward's, split between calls: a pipeline's logits are
//! bit-identical to one node's.

use super::{LogitRows, Session};
use crate::error::{Error, Result};

/// What a stage's rows start from.
#[derive(Clone, Copy, Debug)]
pub enum StageInput<'a> {
    /// Token ids (the stage holding the embeddings).
    Tokens(&'a [u32]),
    /// Hidden states from the previous stage, `rows x hidden`.
    Hidden(&'a [f32]),
}

impl Session<'_> {
    /// Runs this model's blocks over rows: row `i` belongs to slot `slots[i]` at that slot's
    /// next position (a slot may take several rows, in order). Returns the hidden states after
    /// the last block held here, `rows x hidden`.
    pub fn stage(&mut self, input: StageInput<'_>, slots: &[usize]) -> Result<&[f32]> {
        let m = self.model;
        let (n, h) = (slots.len(), m.config.hidden);
        let bad = |why: String| Err(Error::Batch { op: "stage", why });
        if n > self.max_batch {
            return bad(format!("{n} rows for a batch of at most {}", self.max_batch));
        }
        match input {
            StageInput::Tokens(t) => {
                if t.len() != n {
                    return bad(format!("{} tokens for {n} slots", t.len()));
                }
                if !m.has_ends() {
                    return bad("tokens given to a stage without the embeddings".into());
                }
                self.check_tokens(t)?;
            }
            StageInput::Hidden(x) => {
                if x.len() != n * h {
                    return bad(format!("{} values for {n} rows of {h}", x.len()));
                }
                if let Some(at) = x.iter().position(|v| !v.is_finite()) {
                    return bad(format!("hidden value {at} is NaN or infinite"));
                }
            }
        }
        self.place_rows(slots)?;
        match input {
            StageInput::Tokens(t) => self.embed_rows(t),
            StageInput::Hidden(x) => self.x[..n * h].copy_from_slice(x),
        }
        self.run_layers(n)?;
        for &s in slots {
            self.pos[s] += 1;
        }
        Ok(&self.x[..n * h])
    }

    /// The final norm and the head over hidden states from the last stage, `rows x hidden`:
    /// one row of logits per row. The first call with more rows than slots grows the logits.
    pub fn stage_head(&mut self, hidden: &[f32]) -> Result<&mut [f32]> {
        let m = self.model;
        let (h, vocab) = (m.config.hidden, m.config.vocab);
        let n = hidden.len() / h;
        let bad = |why: String| Err(Error::Batch { op: "stage_head", why });
        if !m.has_ends() {
            return bad("this stage holds no head".into());
        }
        if hidden.len() != n * h || n > self.max_batch {
            return bad(format!(
                "{} values: not whole rows of {h}, at most {}",
                hidden.len(),
                self.max_batch
            ));
        }
        if let Some(at) = hidden.iter().position(|v| !v.is_finite()) {
            return bad(format!("hidden value {at} is NaN or infinite"));
        }
        if self.logits.len() < n * vocab {
            self.logits.resize(n * vocab, 0.0);
        }
        self.x[..n * h].copy_from_slice(hidden);
        self.head_rows(n, LogitRows::All)?;
        Ok(&mut self.logits[..n * vocab])
    }
}

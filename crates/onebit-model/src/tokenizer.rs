//! Text ↔ token ids through the `tokenizers` crate (a model's `tokenizer.json`).

use crate::error::{Error, Result};
use std::path::Path;

/// A loaded tokenizer.
pub struct Tokenizer(tokenizers::Tokenizer);

fn terr(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &str) -> Result<Self> {
        tokenizers::Tokenizer::from_file(path)
            .map(Tokenizer)
            .map_err(|e| Error::Tokenizer(format!("{path}: {e}")))
    }

    /// Finds the tokenizer of a model: `tokenizer.json` inside an HF directory or beside a file.
    pub fn for_model(model: &str) -> Result<Self> {
        let p = Path::new(model);
        let candidate =
            if p.is_dir() { p.join("tokenizer.json") } else { p.with_file_name("tokenizer.json") };
        if !candidate.exists() {
            return Err(Error::Tokenizer(format!(
                "no tokenizer for {model}: expected {} (pass --tokenizer PATH)",
                candidate.display()
            )));
        }
        Self::from_file(&candidate.display().to_string())
    }

    /// Token ids of `text` (with the tokenizer's special tokens, e.g. BOS, when `special`).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self.0.encode(text, special).map_err(terr)?.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.0.decode(ids, true).map_err(terr)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.0.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.0.get_vocab_size(true)
    }
}

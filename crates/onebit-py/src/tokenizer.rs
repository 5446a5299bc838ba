//! `onebit.Tokenizer`: the model's tokenizer and chat template.

use crate::errors::model_err;
use onebit_model::chat_template::{ChatTemplate, Message};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Arc;

/// A model's tokenizer (from its GGUF file or `tokenizer.json`) and chat template.
#[pyclass(module = "onebit._onebit", frozen)]
pub struct Tokenizer {
    pub(crate) tok: Arc<onebit_model::Tokenizer>,
    pub(crate) template: Arc<ChatTemplate>,
}

#[pymethods]
impl Tokenizer {
    /// The tokenizer of a model file or directory (or a `tokenizer.json` path).
    #[staticmethod]
    fn from_file(py: Python<'_>, path: String) -> PyResult<Tokenizer> {
        py.detach(|| {
            let tok = if path.ends_with(".json") {
                onebit_model::Tokenizer::from_file(&path)?
            } else {
                onebit_model::Tokenizer::for_model(&path)?
            };
            let template = ChatTemplate::for_model(&path)?;
            Ok(Tokenizer { tok: Arc::new(tok), template: Arc::new(template) })
        })
        .map_err(model_err)
    }

    /// Token ids of `text` (with the model's BOS when `add_special_tokens`).
    #[pyo3(signature = (text, add_special_tokens = true))]
    fn encode(&self, py: Python<'_>, text: &str, add_special_tokens: bool) -> PyResult<Vec<u32>> {
        py.detach(|| self.tok.encode(text, add_special_tokens)).map_err(model_err)
    }

    /// The text of `ids` (special tokens skipped).
    fn decode(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        let vocab = self.tok.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(PyValueError::new_err(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        py.detach(|| self.tok.decode(&ids)).map_err(model_err)
    }

    /// The prompt for a conversation (`[{"role": ..., "content": ...}]`), ending where the
    /// assistant's reply starts; token ids when `tokenize`.
    #[pyo3(signature = (messages, tokenize = false))]
    fn apply_chat_template(
        &self,
        py: Python<'_>,
        messages: Vec<std::collections::HashMap<String, String>>,
        tokenize: bool,
    ) -> PyResult<Py<PyAny>> {
        let mut msgs = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            let get = |k: &str| {
                m.get(k)
                    .cloned()
                    .ok_or_else(|| PyValueError::new_err(format!("message {i} has no '{k}'")))
            };
            msgs.push(Message { role: get("role")?, content: get("content")? });
        }
        let text = self.template.render(&msgs).map_err(model_err)?;
        if tokenize {
            // As the server does: a template writes BOS itself where the model wants one.
            let ids = self.tok.encode(&text, false).map_err(model_err)?;
            Ok(ids.into_pyobject(py)?.into_any().unbind())
        } else {
            Ok(text.into_pyobject(py)?.into_any().unbind())
        }
    }

    /// Entries in the vocabulary.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.tok.vocab_size()
    }

    /// The id of a token's text, if it is one token.
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tok.token_id(token)
    }
}

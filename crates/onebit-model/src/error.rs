//! The model crate's error type.

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong loading, converting or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config that is missing fields or inconsistent.
    #[error("model config: {0}")]
    Config(String),
    /// A malformed GGUF container.
    #[error("{path}: {source}")]
    Gguf {
        /// The file.
        path: String,
        /// The container error.
        source: crate::gguf::GgufError,
    },
    /// A tensor the architecture needs is absent.
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    /// A tensor with the wrong shape or type.
    #[error("tensor '{name}': {why}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A kernel-level error (packed bytes, shapes).
    #[error("tensor '{name}': {source}")]
    Kernel {
        /// Tensor name.
        name: String,
        /// The kernel error.
        source: onebit_kernels::Error,
    },
    /// A token id beyond the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    Token {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The context is full.
    #[error("context full: {needed} positions needed, {max} available")]
    ContextFull {
        /// Positions needed.
        needed: usize,
        /// Capacity.
        max: usize,
    },
    /// Tokenizer loading or encoding.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

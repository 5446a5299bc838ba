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
    /// A sampling setting out of its range.
    #[error("sampling: {0}")]
    Sampling(String),
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
    /// A sequence slot the session does not have.
    #[error("slot {slot} of a session with {slots} slots")]
    Slot {
        /// The slot asked for.
        slot: usize,
        /// Slots in the session.
        slots: usize,
    },
    /// A call whose tokens, slots, flags or prompts do not line up with each other or with
    /// the session (runtime misuse, not a bad config).
    #[error("{op}: {why}")]
    Batch {
        /// The call.
        op: &'static str,
        /// What does not line up.
        why: String,
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
    /// An output path that cannot be written safely.
    #[error("output {path}: {why}")]
    Output {
        /// The path.
        path: String,
        /// Why not.
        why: String,
    },
    /// A model that a target engine cannot run, or a tensor it cannot hold.
    #[error("{target}: {why}")]
    Target {
        /// The engine.
        target: &'static str,
        /// Why not.
        why: String,
    },
    /// A path that is not a readable model or data file.
    #[error("{path}: {what}")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is instead.
        what: &'static str,
    },
    /// A distributed executor's failure (a node that died, stalled or broke the protocol),
    /// passed up through the [`crate::Engine`] seam.
    #[error("mesh: {0}")]
    Mesh(String),
    /// An accelerator backend's failure (device lost, buffer mapping failed), passed up
    /// through the [`crate::Engine`] seam.
    #[error("GPU: {0}")]
    Device(String),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

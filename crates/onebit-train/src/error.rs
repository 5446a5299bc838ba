//! The training crate's error type.

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong building, training, checkpointing or exporting a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A training or model setting that cannot work.
    #[error("config: {0}")]
    Config(String),
    /// A checkpoint that is malformed or does not match the model.
    #[error("checkpoint {path}: {why}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Training data that cannot be used.
    #[error("data: {0}")]
    Data(String),
    /// Tokenizer loading, training or encoding.
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
    /// Loading or writing through the model crate.
    #[error(transparent)]
    Model(#[from] onebit_model::Error),
    /// A kernel error (shapes, packing).
    #[error(transparent)]
    Kernel(#[from] onebit_kernels::Error),
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at step {step}: lower the learning rate or check the data")]
    Diverged {
        /// The step.
        step: u64,
        /// The loss value.
        loss: f32,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

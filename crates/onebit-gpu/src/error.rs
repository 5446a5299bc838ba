//! The GPU backend's errors.

/// What can go wrong finding a device, uploading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// wgpu found no adapter (no Vulkan/Metal/DX12 driver, not even Mesa's lavapipe).
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused the device or a feature the kernels need.
    #[error("GPU device: {0}")]
    Device(String),
    /// The model has something this backend does not run.
    #[error("not supported on the GPU backend: {0}")]
    Unsupported(String),
    /// A buffer the model needs is larger than the device allows.
    #[error("{what} needs {bytes} bytes in one buffer; this device allows {limit}")]
    TooLarge {
        /// Which buffer.
        what: String,
        /// Bytes needed.
        bytes: u64,
        /// The device's limit.
        limit: u64,
    },
    /// A request the engine refuses (bad slot, context full, unknown token).
    #[error(transparent)]
    Model(#[from] onebit_model::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for onebit_model::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Model(m) => m,
            other => onebit_model::Error::Device(other.to_string()),
        }
    }
}

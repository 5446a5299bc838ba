//! The crate's error type: every failure names the peer and what was being done.

use std::time::Duration;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DistError>;

/// What went wrong talking to another node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistError {
    /// A peer did not answer within the call's deadline.
    #[error("node {peer}: no answer to {op} within {after:?}")]
    Timeout {
        /// The peer's rank (or address before it has one).
        peer: String,
        /// The operation that waited.
        op: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The peer closed the connection or its end of the channel.
    #[error("node {peer}: connection closed during {op}")]
    Closed {
        /// The peer.
        peer: String,
        /// The operation.
        op: &'static str,
    },
    /// A frame that breaks the protocol: too large, wrong version, malformed.
    #[error("node {peer}: bad frame: {why}")]
    Frame {
        /// The peer.
        peer: String,
        /// What was wrong.
        why: String,
    },
    /// The Noise handshake failed: a wrong key, an older onebit, or not a onebit node.
    #[error("node {peer}: handshake failed ({why}); are the key file and the onebit version the same on both nodes?")]
    Handshake {
        /// The peer.
        peer: String,
        /// What failed.
        why: String,
    },
    /// A socket error.
    #[error("node {peer}: {op}: {source}")]
    Io {
        /// The peer.
        peer: String,
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A call that cannot be made: a rank outside the mesh, a message to oneself, mismatched
    /// lengths in a collective.
    #[error("mesh: {0}")]
    Usage(String),
    /// A key file that is missing or not 32 bytes of hex.
    #[error("key file {path}: {why}")]
    Key {
        /// The file.
        path: String,
        /// What was wrong.
        why: String,
    },
    /// The model on this node failed (loading its part, or a stage refused the rows).
    #[error(transparent)]
    Model(#[from] onebit_model::Error),
}

//! The crate's error type: every check on caller-supplied shapes and bytes ends here.

use crate::format::TernaryFormat;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong when building a matrix, reading packed bytes or calling a kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A shape the format cannot hold (for example rows not a multiple of 4 for HF packing).
    #[error("{format:?} cannot hold a {rows}x{cols} matrix: {why}")]
    BadShape {
        /// The format asked for.
        format: TernaryFormat,
        /// Rows requested.
        rows: usize,
        /// Columns requested.
        cols: usize,
        /// The rule that was broken.
        why: &'static str,
    },
    /// A packed buffer of the wrong length.
    #[error("{format:?} {rows}x{cols} needs {expected} bytes, got {found}")]
    BadLength {
        /// The format being read.
        format: TernaryFormat,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes the layout needs.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// A packed 2-bit code of 3, which no ternary value maps to.
    #[error("{format:?}: invalid 2-bit code 3 at byte {byte}")]
    BadCode {
        /// The format being read.
        format: TernaryFormat,
        /// Byte offset of the bad code.
        byte: usize,
    },
    /// A base-3 byte outside the 243 values five trits can take.
    #[error("{format:?}: byte {byte} holds {value}, which is no base-3 group")]
    BadTritByte {
        /// The format being read.
        format: TernaryFormat,
        /// Byte offset.
        byte: usize,
        /// The value found.
        value: u8,
    },
    /// A trit outside {-1, 0, +1} handed to a packer.
    #[error("value {value} at index {index} is not ternary (-1, 0 or +1)")]
    NotTernary {
        /// Index in the row-major input.
        index: usize,
        /// The value found.
        value: i8,
    },
    /// A scale that is NaN, infinite or not positive.
    #[error("scale {0} is not a finite positive number")]
    BadScale(f32),
    /// Conversion between layouts that would lose information (per-block scales that differ).
    #[error("cannot convert {from:?} to {to:?}: {why}")]
    Lossy {
        /// Source format.
        from: TernaryFormat,
        /// Target format.
        to: TernaryFormat,
        /// Why it would lose information.
        why: &'static str,
    },
    /// Operands whose sizes do not agree.
    #[error("shape mismatch in {op}: expected {expected}, found {found}")]
    Mismatch {
        /// The operation.
        op: &'static str,
        /// What was expected.
        expected: usize,
        /// What was given.
        found: usize,
    },
    /// A kernel that this CPU or build cannot run.
    #[error("kernel {0} is not available on this CPU")]
    Unavailable(String),
    /// `ONEBIT_KERNEL` holds no kernel's name.
    #[error("ONEBIT_KERNEL={0:?} names no kernel (one of: {1})")]
    UnknownKernel(String, String),
    /// A kernel benchmark asked for something it cannot measure (zero threads, tokens or runs).
    #[error("kernel benchmark: {0}")]
    BenchConfig(&'static str),
}

//! The GGUF container (v2/v3): metadata key-values, tensor directory, aligned data.
//! Only the container lives here; which tensors make a model is `load.rs`'s business.
//! Every length and offset read from a file is checked before use: a truncated or
//! hostile file gives a [`GgufError`] naming the problem, never a panic.

pub mod dequant;
mod read;
mod types;
mod write;

pub use read::GgufFile;

/// Metadata key of the checksum onebit writes into its own files: `xxh3-64:` and 16 hex
/// digits, over every tensor's bytes in file order. Files from other tools carry none.
pub const CHECKSUM_KEY: &str = "onebit.checksum";

/// The checksum value of tensor bytes hashed in file order.
fn checksum_text(hash: u64) -> String {
    format!("xxh3-64:{hash:016x}")
}
pub use types::GgmlType;
pub use write::{GgufWriter, TensorPlan};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Homogeneous array.
    Array(Vec<Value>),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is any integer type ≥ 0.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as f64, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
}

/// One tensor of the directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (`[cols, rows]` for a matrix).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    /// (rows, cols) viewing the tensor as a matrix (a vector is one row).
    pub fn matrix_shape(&self) -> (u64, u64) {
        let cols = self.dims.first().copied().unwrap_or(1);
        (self.dims.iter().skip(1).product(), cols)
    }
}

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Not a GGUF file.
    #[error("not a GGUF file (magic {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    /// A version this reader does not know.
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    Version(u32),
    /// The file ends inside a structure.
    #[error("file truncated at byte {at}: needed {need} more bytes for {what}")]
    Truncated {
        /// Offset where the read started.
        at: u64,
        /// Bytes needed.
        need: u64,
        /// What was being read.
        what: &'static str,
    },
    /// An unknown metadata value type.
    #[error("metadata key '{key}': unknown value type {ty}")]
    ValueType {
        /// The key.
        key: String,
        /// The type id found.
        ty: u32,
    },
    /// A string that is not UTF-8.
    #[error("invalid UTF-8 in a string at byte {0}")]
    Utf8(u64),
    /// A count or size beyond what the file can hold.
    #[error("{what} of {value} at byte {at} is larger than the file allows")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The value read.
        value: u64,
        /// Where.
        at: u64,
    },
    /// A tensor type this reader does not handle.
    #[error("tensor '{name}': unsupported ggml type {ty}")]
    TensorType {
        /// Tensor name.
        name: String,
        /// Type id.
        ty: u32,
    },
    /// Dimensions that do not fit the type or are invalid.
    #[error("tensor '{name}': dimensions {dims:?} do not fit its type or are invalid")]
    Dims {
        /// Tensor name.
        name: String,
        /// Dimensions.
        dims: Vec<u64>,
    },
    /// Tensor data outside the file or misaligned.
    #[error("tensor '{name}': data at offset {offset} (+{size} bytes) is outside the file or misaligned")]
    TensorRange {
        /// Tensor name.
        name: String,
        /// Offset within the data section.
        offset: u64,
        /// Size.
        size: u64,
    },
    /// Two tensors with one name.
    #[error("tensor '{0}' appears twice")]
    Duplicate(String),
    /// The tensor data does not hash to the checksum the file carries.
    #[error("tensor data does not match the file's checksum ({expected} written, {found} read): the file is corrupted, or was rewritten by a tool that kept onebit's checksum key (--no-verify skips the check)")]
    Checksum {
        /// The value in the file.
        expected: String,
        /// What the data hashes to.
        found: String,
    },
    /// I/O while writing.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The writer was used out of order.
    #[error("GGUF writer: {0}")]
    Usage(String),
}

//! Packed ternary weight layouts and the [`TernaryMatrix`] container.
//!
//! Each file holds one layout and only scalar code: `pack_*` turns row-major trits
//! (`i8` in {-1, 0, +1}) into bytes, `unpack_*` turns bytes back, rejecting codes no
//! ternary value maps to. The ecosystem layouts are byte-compatible with their tools
//! (`i2s`: bitnet.cpp, `tq1`/`tq2`: llama.cpp, `hf`: transformers); `t2`, `b3` and
//! `lut` are ours, shaped for the SIMD kernels. Conversions go through trits, so every
//! pair of layouts converts losslessly as long as the scales agree.

pub mod b3;
pub mod hf;
pub mod i2s;
pub mod iq1bn;
pub mod iq2bn;
pub mod lut;
pub mod t2;
pub mod tq1;
pub mod tq2;

use crate::error::{Error, Result};

/// Which packed layout a [`TernaryMatrix`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TernaryFormat {
    /// bitnet.cpp I2_S (x86 build): 2-bit codes in 128-weight blocks, one f32 scale per tensor.
    I2S,
    /// llama.cpp TQ1_0: 256-weight blocks of base-3 bytes plus an f16 scale (1.6875 bpw).
    Tq1_0,
    /// llama.cpp TQ2_0: 256-weight blocks of 2-bit codes plus an f16 scale (2.0625 bpw).
    Tq2_0,
    /// ik_llama.cpp IQ2_BN: an f32 scale per row, then 64-weight blocks of 2-bit codes.
    Iq2Bn,
    /// ik_llama.cpp IQ1_BN: an f16 scale per row, then 64-weight blocks of 13 base-3 bytes.
    Iq1Bn,
    /// transformers packed uint8 `[rows/4, cols]`, four rows per byte.
    HfPacked,
    /// onebit 2-bit rows: 256-weight blocks of 64 bytes, one register of codes per shift.
    T2,
    /// onebit 1.6-bit rows: 320-weight blocks of 64 base-3 bytes (5 trits per byte).
    B3,
    /// onebit lookup-table tiles: 32 rows per tile, one 4-bit index per pair of weights.
    Lut,
}

impl TernaryFormat {
    /// Every format, for tests and listings.
    pub const ALL: [TernaryFormat; 9] = [
        TernaryFormat::I2S,
        TernaryFormat::Tq1_0,
        TernaryFormat::Tq2_0,
        TernaryFormat::Iq2Bn,
        TernaryFormat::Iq1Bn,
        TernaryFormat::HfPacked,
        TernaryFormat::T2,
        TernaryFormat::B3,
        TernaryFormat::Lut,
    ];

    /// Short lower-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TernaryFormat::I2S => "i2_s",
            TernaryFormat::Tq1_0 => "tq1_0",
            TernaryFormat::Tq2_0 => "tq2_0",
            TernaryFormat::Iq2Bn => "iq2_bn",
            TernaryFormat::Iq1Bn => "iq1_bn",
            TernaryFormat::HfPacked => "hf",
            TernaryFormat::T2 => "t2",
            TernaryFormat::B3 => "b3",
            TernaryFormat::Lut => "lut",
        }
    }

    /// Parses [`TernaryFormat::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Bytes a `rows x cols` matrix takes in this layout, or why the shape does not fit.
    pub fn packed_len(self, rows: usize, cols: usize) -> Result<usize> {
        let bad = |why| Err(Error::BadShape { format: self, rows, cols, why });
        if rows == 0 || cols == 0 {
            return bad("empty matrix");
        }
        match self {
            TernaryFormat::I2S => {
                if !(rows * cols).is_multiple_of(i2s::BLOCK) {
                    return bad("rows*cols must be a multiple of 128");
                }
                Ok(i2s::packed_len(rows, cols))
            }
            TernaryFormat::Tq1_0 | TernaryFormat::Tq2_0 => {
                if !cols.is_multiple_of(256) {
                    return bad("cols must be a multiple of 256");
                }
                let per_block =
                    if self == TernaryFormat::Tq1_0 { tq1::BLOCK_BYTES } else { tq2::BLOCK_BYTES };
                Ok(rows * cols / 256 * per_block)
            }
            TernaryFormat::Iq2Bn | TernaryFormat::Iq1Bn => {
                if !cols.is_multiple_of(64) {
                    return bad("cols must be a multiple of 64");
                }
                let row = if self == TernaryFormat::Iq2Bn {
                    iq2bn::row_bytes(cols)
                } else {
                    iq1bn::row_bytes(cols)
                };
                Ok(rows * row)
            }
            TernaryFormat::HfPacked => {
                if !rows.is_multiple_of(4) {
                    return bad("rows must be a multiple of 4");
                }
                Ok(rows / 4 * cols)
            }
            TernaryFormat::T2 => Ok(rows * t2::row_bytes(cols)),
            TernaryFormat::B3 => Ok(rows * b3::row_bytes(cols)),
            TernaryFormat::Lut => Ok(lut::packed_len(rows, cols)),
        }
    }

    /// The smallest shape at least `rows x cols` that this layout can hold (for tests and
    /// synthetic weights: column blocks for TQ/IQ/I2_S types, row groups for HF).
    pub fn fit_shape(self, rows: usize, cols: usize) -> (usize, usize) {
        match self {
            TernaryFormat::Tq1_0 | TernaryFormat::Tq2_0 => (rows, cols.div_ceil(256) * 256),
            TernaryFormat::Iq2Bn | TernaryFormat::Iq1Bn => (rows, cols.div_ceil(64) * 64),
            TernaryFormat::HfPacked => (rows.div_ceil(4) * 4, cols),
            TernaryFormat::I2S => (rows, cols.div_ceil(128) * 128),
            _ => (rows, cols),
        }
    }

    /// The multiplier a layout keeps after storing `scale` (f16 where it stores f16).
    pub fn stored_scale(self, scale: f32) -> f32 {
        match self {
            TernaryFormat::Tq1_0 | TernaryFormat::Tq2_0 | TernaryFormat::Iq1Bn => {
                half::f16::from_f32(scale).to_f32()
            }
            _ => scale,
        }
    }

    /// Columns the activation vector must be zero-padded to for this layout's kernels.
    pub fn padded_cols(self, cols: usize) -> usize {
        match self {
            TernaryFormat::T2 => cols.div_ceil(t2::BLOCK) * t2::BLOCK,
            TernaryFormat::B3 => cols.div_ceil(b3::BLOCK) * b3::BLOCK,
            TernaryFormat::Lut => cols.div_ceil(2) * 2,
            _ => cols,
        }
    }
}

/// Bytes owned elsewhere (a memory-mapped model file), shared by the matrices cut from it.
pub type SharedBytes = std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where a matrix's packed bytes live: its own buffer, or a range of a shared one (a model
/// file mapped in memory, so weights already in the kernel layout are used in place).
#[derive(Clone)]
enum Storage {
    Owned(Vec<u8>),
    Shared(SharedBytes, std::ops::Range<usize>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            Storage::Shared(b, r) => &(**b).as_ref()[r.clone()],
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            Storage::Shared(_, r) => write!(f, "Shared({r:?})"),
        }
    }
}

/// A ternary weight matrix `rows x cols` (row = output feature) in one packed layout,
/// with the per-tensor multiplier `scale` (W ≈ scale · T).
#[derive(Clone, Debug)]
pub struct TernaryMatrix {
    format: TernaryFormat,
    rows: usize,
    cols: usize,
    data: Storage,
    scale: f32,
}

impl PartialEq for TernaryMatrix {
    fn eq(&self, o: &Self) -> bool {
        (self.format, self.rows, self.cols, self.scale) == (o.format, o.rows, o.cols, o.scale)
            && self.bytes() == o.bytes()
    }
}

fn check_scale(scale: f32) -> Result<f32> {
    if scale.is_finite() && scale > 0.0 {
        Ok(scale)
    } else {
        Err(Error::BadScale(scale))
    }
}

impl TernaryMatrix {
    /// Packs row-major trits (`rows * cols` values in {-1, 0, +1}) into `format`.
    pub fn from_trits(
        format: TernaryFormat,
        rows: usize,
        cols: usize,
        trits: &[i8],
        scale: f32,
    ) -> Result<Self> {
        let scale = check_scale(scale)?;
        let len = format.packed_len(rows, cols)?;
        if trits.len() != rows * cols {
            return Err(Error::Mismatch {
                op: "from_trits",
                expected: rows * cols,
                found: trits.len(),
            });
        }
        if let Some((index, &value)) =
            trits.iter().enumerate().find(|(_, t)| !(-1..=1).contains(*t))
        {
            return Err(Error::NotTernary { index, value });
        }
        let data = match format {
            TernaryFormat::I2S => i2s::pack(trits, rows, cols, scale),
            TernaryFormat::Tq1_0 => tq1::pack(trits, rows, cols, scale),
            TernaryFormat::Tq2_0 => tq2::pack(trits, rows, cols, scale),
            TernaryFormat::Iq2Bn => iq2bn::pack(trits, rows, cols, scale),
            TernaryFormat::Iq1Bn => iq1bn::pack(trits, rows, cols, scale),
            TernaryFormat::HfPacked => hf::pack(trits, rows, cols),
            TernaryFormat::T2 => t2::pack(trits, rows, cols),
            TernaryFormat::B3 => b3::pack(trits, rows, cols),
            TernaryFormat::Lut => lut::pack(trits, rows, cols),
        };
        debug_assert_eq!(data.len(), len);
        Ok(TernaryMatrix { format, rows, cols, data: Storage::Owned(data), scale })
    }

    /// The same matrix with its multiplier times `factor` (a separate scale tensor that a
    /// file applies to the layer's output).
    pub fn scaled(mut self, factor: f32) -> Result<Self> {
        self.scale = check_scale(self.scale * factor)?;
        Ok(self)
    }

    /// Repacks an owned T2 matrix in place from new trits of the same shape (training
    /// re-ternarizes its latent weights every step; this keeps that allocation-free).
    pub fn set_t2_trits(&mut self, trits: &[i8], scale: f32) -> Result<()> {
        let scale = check_scale(scale)?;
        if trits.len() != self.rows * self.cols {
            return Err(Error::Mismatch {
                op: "set_t2_trits",
                expected: self.rows * self.cols,
                found: trits.len(),
            });
        }
        if let Some((index, &value)) =
            trits.iter().enumerate().find(|(_, t)| !(-1..=1).contains(*t))
        {
            return Err(Error::NotTernary { index, value });
        }
        match (&mut self.data, self.format) {
            (Storage::Owned(v), TernaryFormat::T2) => t2::pack_into(trits, self.rows, self.cols, v),
            _ => {
                return Err(Error::Unavailable("set_t2_trits needs an owned T2 matrix".into()));
            }
        }
        self.scale = scale;
        Ok(())
    }

    /// Takes packed bytes as another tool wrote them, validating length and codes.
    ///
    /// `scale` is required for layouts that do not store it (HF, T2, B3, Lut) and ignored for
    /// I2_S (read from the tensor tail). For layouts with a scale per block or row (TQ1_0,
    /// TQ2_0, IQ1_BN, IQ2_BN) the first non-zero one is the scale (zero ones belong to
    /// all-zero units), and units whose scale differs are rejected by
    /// [`TernaryMatrix::repack`] (not here).
    pub fn from_bytes(
        format: TernaryFormat,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        scale: Option<f32>,
    ) -> Result<Self> {
        Self::checked(format, rows, cols, Storage::Owned(data), scale)
    }

    /// Like [`TernaryMatrix::from_bytes`], over `range` of shared bytes (no copy): the matrix
    /// keeps `owner` alive. Validation reads every byte once.
    pub fn from_shared(
        format: TernaryFormat,
        rows: usize,
        cols: usize,
        owner: SharedBytes,
        range: std::ops::Range<usize>,
        scale: Option<f32>,
    ) -> Result<Self> {
        let total = (*owner).as_ref().len();
        if range.start > range.end || range.end > total {
            return Err(Error::BadLength { format, rows, cols, expected: range.end, found: total });
        }
        Self::checked(format, rows, cols, Storage::Shared(owner, range), scale)
    }

    fn checked(
        format: TernaryFormat,
        rows: usize,
        cols: usize,
        data: Storage,
        scale: Option<f32>,
    ) -> Result<Self> {
        let bytes = data.bytes();
        let expected = format.packed_len(rows, cols)?;
        if bytes.len() != expected {
            return Err(Error::BadLength { format, rows, cols, expected, found: bytes.len() });
        }
        let scale = match format {
            TernaryFormat::I2S => i2s::read_scale(bytes, rows, cols),
            _ => match unit_scales(format, bytes, rows, cols) {
                Some(units) => units.into_iter().find(|&d| d != 0.0).unwrap_or(1.0),
                None => scale.unwrap_or(f32::NAN),
            },
        };
        let scale = check_scale(scale)?;
        let m = TernaryMatrix { format, rows, cols, data, scale };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        let (r, c, d) = (self.rows, self.cols, self.bytes());
        match self.format {
            TernaryFormat::I2S => i2s::validate(d, r, c),
            TernaryFormat::Tq1_0 => tq1::validate(d, r, c),
            TernaryFormat::Tq2_0 => tq2::validate(d, r, c),
            TernaryFormat::Iq2Bn => iq2bn::validate(d, r, c),
            TernaryFormat::Iq1Bn => iq1bn::validate(d, r, c),
            TernaryFormat::HfPacked => hf::validate(d),
            TernaryFormat::T2 => t2::validate(d, r, c),
            TernaryFormat::B3 => b3::validate(d, r, c),
            TernaryFormat::Lut => lut::validate(d, r, c),
        }
    }

    /// Unpacks to row-major trits.
    pub fn to_trits(&self) -> Vec<i8> {
        let (r, c, d) = (self.rows, self.cols, self.bytes());
        match self.format {
            TernaryFormat::I2S => i2s::unpack(d, r, c),
            TernaryFormat::Tq1_0 => tq1::unpack(d, r, c),
            TernaryFormat::Tq2_0 => tq2::unpack(d, r, c),
            TernaryFormat::Iq2Bn => iq2bn::unpack(d, r, c),
            TernaryFormat::Iq1Bn => iq1bn::unpack(d, r, c),
            TernaryFormat::HfPacked => hf::unpack(d, r, c),
            TernaryFormat::T2 => t2::unpack(d, r, c),
            TernaryFormat::B3 => b3::unpack(d, r, c),
            TernaryFormat::Lut => lut::unpack(d, r, c),
        }
    }

    /// Converts to another layout; fails where that would lose information.
    pub fn repack(&self, to: TernaryFormat) -> Result<Self> {
        if to == self.format {
            return Ok(self.clone());
        }
        let units = unit_scales(self.format, self.bytes(), self.rows, self.cols);
        let mixed = |u: Vec<f32>| {
            let first = u.iter().copied().find(|&d| d != 0.0);
            u.iter().any(|&d| d != 0.0 && Some(d) != first)
        };
        if units.is_some_and(mixed) {
            return Err(Error::Lossy {
                from: self.format,
                to,
                why: "blocks or rows carry different scales (not one multiplier per tensor)",
            });
        }
        Self::from_trits(to, self.rows, self.cols, &self.to_trits(), self.scale)
    }

    /// Rows `rows` of this matrix (output features), in the same layout and with the same
    /// multiplier: the piece of a layer one node of a tensor-parallel mesh holds.
    pub fn select_rows(&self, rows: std::ops::Range<usize>) -> Result<Self> {
        if rows.start >= rows.end || rows.end > self.rows {
            return Err(Error::Mismatch {
                op: "select_rows",
                expected: self.rows,
                found: rows.end.max(rows.start),
            });
        }
        let (c, n) = (self.cols, rows.len());
        // The kernel layouts store whole rows one after another: copy the bytes.
        let row_bytes = match self.format {
            TernaryFormat::T2 => Some(t2::row_bytes(c)),
            TernaryFormat::B3 => Some(b3::row_bytes(c)),
            _ => None,
        };
        if let Some(rb) = row_bytes {
            let data = self.bytes()[rows.start * rb..rows.end * rb].to_vec();
            let m = TernaryMatrix {
                format: self.format,
                rows: n,
                cols: c,
                data: Storage::Owned(data),
                scale: self.scale,
            };
            return Ok(m);
        }
        let trits = self.to_trits();
        Self::from_trits(self.format, n, c, &trits[rows.start * c..rows.end * c], self.scale)
    }

    /// Columns `cols` of this matrix (input features), in the same layout and with the same
    /// multiplier: the piece of `o` or `down` a tensor-parallel node holds when the nodes sum
    /// their partial products instead of gathering whole rows. Read once at load, so the
    /// matrix goes through its trits (a column cut need not fall on a packed block).
    pub fn select_cols(&self, cols: std::ops::Range<usize>) -> Result<Self> {
        if cols.start >= cols.end || cols.end > self.cols {
            return Err(Error::Mismatch {
                op: "select_cols",
                expected: self.cols,
                found: cols.end.max(cols.start),
            });
        }
        let (c, n) = (self.cols, cols.len());
        let trits = self.to_trits();
        let mut part = Vec::with_capacity(self.rows * n);
        for row in trits.chunks_exact(c) {
            part.extend_from_slice(&row[cols.clone()]);
        }
        Self::from_trits(self.format, self.rows, n, &part, self.scale)
    }

    /// The layout held.
    pub fn format(&self) -> TernaryFormat {
        self.format
    }
    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The packed bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// Whether the bytes are used in place from a shared buffer (a mapped file).
    pub fn is_shared(&self) -> bool {
        matches!(self.data, Storage::Shared(..))
    }
    /// The per-tensor multiplier (W ≈ scale · T).
    pub fn scale(&self) -> f32 {
        self.scale
    }
    /// Stored bits per weight, padding and scales included.
    pub fn bits_per_weight(&self) -> f64 {
        self.bytes().len() as f64 * 8.0 / (self.rows * self.cols) as f64
    }
}

/// The scales of the units (blocks or rows) of layouts that store one per unit, as f32.
fn unit_scales(format: TernaryFormat, d: &[u8], rows: usize, cols: usize) -> Option<Vec<f32>> {
    Some(match format {
        TernaryFormat::Tq1_0 => (0..rows * cols / 256).map(|b| tq1::block_scale(d, b)).collect(),
        TernaryFormat::Tq2_0 => (0..rows * cols / 256).map(|b| tq2::block_scale(d, b)).collect(),
        TernaryFormat::Iq2Bn => (0..rows).map(|r| iq2bn::row_scale(d, r, cols)).collect(),
        TernaryFormat::Iq1Bn => (0..rows).map(|r| iq1bn::row_scale(d, r, cols)).collect(),
        _ => return None,
    })
}

/// Code of a trit in 2-bit layouts: w + 1 (00 = -1, 01 = 0, 10 = +1).
#[inline]
pub(crate) fn code(t: i8) -> u8 {
    (t + 1) as u8
}

/// Trit of a 2-bit code; the caller has rejected code 3.
#[inline]
pub(crate) fn trit(c: u8) -> i8 {
    c as i8 - 1
}

/// Returns the offset of the first 2-bit code equal to 3, if any.
pub(crate) fn find_code3(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| (0..4).any(|i| (b >> (2 * i)) & 3 == 3))
}

//! Where a model's tensors come from: the [`TensorSource`] trait and its GGUF implementation,
//! [`GgufModelFile`] (a memory map and its parsed header), and the float decoders they share.

use super::ternary_matrix;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::mmap::Mapped;
use half::{bf16, f16};
use onebit_kernels::TernaryMatrix;

/// An opened GGUF file: the map and its parsed header.
pub struct GgufModelFile {
    pub(super) map: std::sync::Arc<Mapped>,
    /// Whether T2/B3 tensors and f16 embeddings are used in place (see [`super::LoadOptions::in_place`]).
    pub in_place: bool,
    /// Whether the architecture multiplies linears by optional `.scale` tensors.
    pub scale_tensors: bool,
    /// The parsed header.
    pub header: GgufFile,
    path: String,
}

impl GgufModelFile {
    /// Maps and parses `path`.
    pub fn open(path: &str) -> Result<Self> {
        let map = std::sync::Arc::new(Mapped::open(path)?);
        let header = GgufFile::parse(map.bytes())
            .map_err(|source| Error::Gguf { path: path.into(), source })?;
        let arch = header.get("general.architecture").and_then(crate::gguf::Value::as_str);
        let scale_tensors = header.get("onebit.version").is_none()
            && arch.and_then(crate::config::ArchRules::of).is_some_and(|r| r.scale_tensors);
        Ok(GgufModelFile { map, header, path: path.into(), in_place: true, scale_tensors })
    }

    /// A tensor's bytes as a range of the shared map (for use in place).
    pub fn shared(
        &self,
        name: &str,
    ) -> Result<(onebit_kernels::SharedBytes, std::ops::Range<usize>)> {
        let t = self.header.tensor(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let start = (self.header.data_offset + t.offset) as usize;
        Ok((self.map.clone(), start..start + t.size as usize))
    }

    /// Checks the tensor data against the file's checksum, if it carries one.
    pub fn verify(&self) -> Result<()> {
        // Hashing a file larger than memory must not hold all of it: each tensor's pages are
        // dropped once hashed (they stay in the page cache).
        self.header
            .verify_checksum_with(self.map.bytes(), &mut |r| self.map.release_range(r))
            .map_err(|source| Error::Gguf { path: self.path.clone(), source })?;
        self.release();
        Ok(())
    }

    /// Drops the pages read so far from this process's RSS (they stay in the page cache).
    pub fn release(&self) {
        self.map.release()
    }

    /// A tensor's directory entry and bytes.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let t = self.header.tensor(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        Ok((t, self.header.data(self.map.bytes(), t)))
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A float vector of `len` values (F32/F16/BF16, or a ggml block type dequantized).
    pub fn floats(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (t, d) = self.tensor(name)?;
        let n: u64 = t.dims.iter().product();
        if n != len as u64 {
            return Err(Error::BadTensor {
                name: name.into(),
                why: format!("{n} values, expected {len}"),
            });
        }
        to_f32(name, t.ty, d, len)
    }
}

/// Little-endian float encodings a file may store.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FloatKind {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// Decodes little-endian floats of `kind`.
pub(crate) fn decode_floats(kind: FloatKind, d: &[u8]) -> Vec<f32> {
    match kind {
        FloatKind::F32 => {
            d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        FloatKind::F16 => {
            d.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        FloatKind::Bf16 => {
            d.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
    }
}

pub(super) fn to_f32(name: &str, ty: GgmlType, d: &[u8], n: usize) -> Result<Vec<f32>> {
    crate::gguf::dequant::to_f32(ty, d, n).ok_or_else(|| Error::BadTensor {
        name: name.into(),
        why: format!("type {ty:?} where floats are needed"),
    })
}

/// Where a model's tensors come from. Names are GGUF-style (`blk.N.attn_q.weight`);
/// other sources translate them.
pub trait TensorSource {
    /// A float tensor of exactly `len` values.
    fn floats(&self, name: &str, len: usize) -> Result<Vec<f32>>;
    /// A `rows x cols` linear as a ternary matrix in the source's own layout.
    fn ternary(&self, name: &str, rows: usize, cols: usize) -> Result<TernaryMatrix>;
    /// Whether the source holds `name`.
    fn has(&self, name: &str) -> bool;
    /// A tensor's type and bytes as stored, where the source is a GGUF file (writers copy
    /// tensors the target reads as they are).
    fn raw(&self, _name: &str) -> Option<(GgmlType, &[u8])> {
        None
    }
    /// A `rows x cols` float or block-quantized tensor that can be used in place, if the
    /// source maps one: the bytes, the offset of row 0, the element type and bytes per row.
    fn rows_in_place(
        &self,
        _name: &str,
        _rows: usize,
        _cols: usize,
    ) -> Option<(onebit_kernels::SharedBytes, usize, GgmlType, usize)> {
        None
    }
    /// Called once the model is built: drop what loading paged in.
    fn release(&self) {}
}

impl TensorSource for GgufModelFile {
    fn floats(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        GgufModelFile::floats(self, name, len)
    }
    fn ternary(&self, name: &str, rows: usize, cols: usize) -> Result<TernaryMatrix> {
        ternary_matrix(self, name, rows, cols)
    }
    fn has(&self, name: &str) -> bool {
        self.header.tensor(name).is_some()
    }
    fn raw(&self, name: &str) -> Option<(GgmlType, &[u8])> {
        self.tensor(name).ok().map(|(t, d)| (t.ty, d))
    }
    fn rows_in_place(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Option<(onebit_kernels::SharedBytes, usize, GgmlType, usize)> {
        // Embedding rows are read one per token, so they stay in the map even when the
        // weights are copied.
        let t = self.header.tensor(name)?;
        let row_bytes = t.ty.tensor_bytes(cols as u64, 1)? as usize;
        let dequantizable = crate::gguf::dequant::is_dequantizable(t.ty);
        if !dequantizable || t.matrix_shape() != (rows as u64, cols as u64) {
            return None;
        }
        self.shared(name).ok().map(|(b, r)| (b, r.start, t.ty, row_bytes))
    }
    fn release(&self) {
        GgufModelFile::release(self)
    }
}

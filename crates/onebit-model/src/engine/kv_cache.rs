//! KV cache storage: f32 (exact, the default of the API) or f16 (half the memory and the
//! bytes read per attended position; llama.cpp's default and the CLI's). Attention reads a
//! head's rows through [`KvStore::view`]: f32 rows in place, f16 rows widened into the
//! caller's per-thread scratch, so the attention code is one path for both.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half.
    F16,
}

impl KvDtype {
    /// Parses `f32` / `f16`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(KvDtype::F32),
            "f16" => Some(KvDtype::F16),
            _ => None,
        }
    }
}

/// One cache tensor (all slots, layers and positions of K, or of V).
pub(crate) enum KvStore {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvStore {
    pub(crate) fn new(dtype: KvDtype, len: usize) -> Self {
        match dtype {
            KvDtype::F32 => KvStore::F32(vec![0.0; len]),
            KvDtype::F16 => KvStore::F16(vec![f16::ZERO; len]),
        }
    }

    /// Stores `src` at element `at`.
    pub(crate) fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            KvStore::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            KvStore::F16(v) => v[at..at + src.len()].convert_from_f32_slice(src),
        }
    }

    /// Rows `0..n` of `width` values starting at `at`, `stride` apart, as f32:
    /// `(data, row_stride)` where row p is `data[p·row_stride..][..width]`.
    pub(crate) fn view<'a>(
        &'a self,
        at: usize,
        n: usize,
        stride: usize,
        width: usize,
        scratch: &'a mut [f32],
    ) -> (&'a [f32], usize) {
        match self {
            KvStore::F32(v) => (&v[at..], stride),
            KvStore::F16(v) => {
                for p in 0..n {
                    let src = &v[at + p * stride..at + p * stride + width];
                    src.convert_to_f32_slice(&mut scratch[p * width..(p + 1) * width]);
                }
                (&scratch[..n * width], width)
            }
        }
    }
}

//! Dequantizers for the ggml tensor types that appear beside ternary weights in real files
//! (embeddings, heads and norms quantized by `llama-quantize`): F32, F16, BF16, the 32-value
//! blocks Q4_0 … Q8_0 and the 256-value k-quants Q2_K … Q8_K. Each block type is a function
//! from one block's bytes to its values, matching ggml's reference `dequantize_row_*`
//! bit for bit; lengths are checked by the container (`GgmlType::tensor_bytes`) and again here.

mod kquants;
mod legacy;

pub use legacy::quantize_q8_0;

use super::GgmlType;
use half::{bf16, f16};

/// One block's bytes → its values.
type BlockFn = fn(&[u8], &mut [f32]);

/// The block function, values per block and bytes per block of a dequantizable type.
fn block_fn(ty: GgmlType) -> Option<(BlockFn, usize, usize)> {
    Some(match ty {
        GgmlType::F32 => (|b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]), 1, 4),
        GgmlType::F16 => (|b, y| y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32(), 1, 2),
        GgmlType::Bf16 => (|b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(), 1, 2),
        GgmlType::Q4_0 => (legacy::q4_0, 32, 18),
        GgmlType::Q4_1 => (legacy::q4_1, 32, 20),
        GgmlType::Q5_0 => (legacy::q5_0, 32, 22),
        GgmlType::Q5_1 => (legacy::q5_1, 32, 24),
        GgmlType::Q8_0 => (legacy::q8_0, 32, 34),
        GgmlType::Q2K => (kquants::q2_k, 256, 84),
        GgmlType::Q3K => (kquants::q3_k, 256, 110),
        GgmlType::Q4K => (kquants::q4_k, 256, 144),
        GgmlType::Q5K => (kquants::q5_k, 256, 176),
        GgmlType::Q6K => (kquants::q6_k, 256, 210),
        GgmlType::Q8K => (kquants::q8_k, 256, 292),
        _ => return None,
    })
}

/// Whether [`dequantize`] handles `ty`.
pub fn is_dequantizable(ty: GgmlType) -> bool {
    block_fn(ty).is_some()
}

/// Values of `data` (whole blocks of `ty`) written to `out`; false when `ty` is not a float
/// or block type, or `data` is not exactly the blocks `out` needs.
#[must_use]
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> bool {
    let Some((f, per_block, bytes)) = block_fn(ty) else { return false };
    if !out.len().is_multiple_of(per_block) || data.len() != out.len() / per_block * bytes {
        return false;
    }
    for (b, y) in data.chunks_exact(bytes).zip(out.chunks_exact_mut(per_block)) {
        f(b, y);
    }
    true
}

/// Values of `data` as a new vector (`n` values), or None as for [`dequantize`].
pub fn to_f32(ty: GgmlType, data: &[u8], n: usize) -> Option<Vec<f32>> {
    let mut out = vec![0f32; n];
    dequantize(ty, data, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked() {
        let mut out = vec![0f32; 32];
        assert!(dequantize(GgmlType::Q8_0, &[0; 34], &mut out));
        assert!(!dequantize(GgmlType::Q8_0, &[0; 33], &mut out));
        assert!(!dequantize(GgmlType::Q6K, &[0; 210], &mut out));
        assert!(!dequantize(GgmlType::Tq2_0, &[0; 66], &mut vec![0f32; 256]));
        assert_eq!(to_f32(GgmlType::F16, &[0x00, 0x3C], 1), Some(vec![1.0]));
    }
}

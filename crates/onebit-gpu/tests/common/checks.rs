//! The kernel checks both GPU backends run: integer kernels bit for bit against the CPU's
//! scalar kernels (the definition of correct) on ragged shapes, the quantizer bit for bit,
//! argmax exactly, ties included.
#![allow(dead_code)]

use super::Rng;
use onebit_kernels::head::q8_matmul_on;
use onebit_kernels::quant::quantize_row;
use onebit_kernels::{
    matmul, ActQuant, Isa, Kernel, Q8Matrix, TernaryFormat, TernaryMatrix, ThreadPool,
};

/// One backend's single-kernel runs.
pub trait Device {
    /// The ternary product.
    fn ternary(&self, m: &TernaryMatrix, x: &ActQuant) -> Vec<f32>;
    /// The head product.
    fn int8(&self, m: &Q8Matrix, x: &ActQuant) -> Vec<f32>;
    /// Activation quantization, optionally after RMSNorm.
    fn act_quant(
        &self,
        x: &[f32],
        cols: usize,
        norm: Option<(&[f32], f32)>,
    ) -> (Vec<i8>, Vec<f32>, Vec<i32>);
    /// Argmax per row.
    fn argmax(&self, logits: &[f32], vocab: usize) -> Vec<u32>;
}

fn random_act(rng: &mut Rng, tokens: usize, cols: usize) -> ActQuant {
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.unit() * 3.0).collect();
    let mut a = ActQuant::new(tokens, cols);
    a.quantize(&x);
    a
}

fn same_bits(gpu: &[f32], cpu: &[f32], what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert_eq!(g.to_bits(), c.to_bits(), "{what}: element {i}: gpu {g} cpu {c}");
    }
}

/// Ragged (rows, cols, tokens) for the ternary product: decode-sized token counts and
/// prompt-chunk ones (16 tokens and up run the tiled kernel), none a multiple of the tiles.
pub const TERNARY_SHAPES: [(usize, usize, usize); 11] = [
    (1, 1, 1),
    (3, 17, 2),
    (37, 100, 9),
    (64, 256, 8),
    (70, 333, 11),
    (129, 1000, 3),
    (1, 5, 16),
    (45, 200, 17),
    (70, 333, 33),
    (129, 1000, 40),
    (33, 64, 70),
];

/// Ternary products bit for bit against the T2 scalar kernel on ragged shapes.
pub fn ternary_matmul_is_bit_exact_on_ragged_shapes(dev: &impl Device) {
    ternary_bit_exact(|m, x| dev.ternary(m, x), "");
}

/// `product` bit for bit against the T2 scalar kernel on [`TERNARY_SHAPES`]; `what` names it.
pub fn ternary_bit_exact(product: impl Fn(&TernaryMatrix, &ActQuant) -> Vec<f32>, what: &str) {
    let pool = ThreadPool::new(1);
    let scalar = Kernel::get(TernaryFormat::T2, Isa::Scalar).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (rows, cols, tokens) in TERNARY_SHAPES {
        let trits: Vec<i8> = (0..rows * cols).map(|_| rng.below(3) as i8 - 1).collect();
        let scale = 0.01 + rng.unit().abs();
        let m = TernaryMatrix::from_trits(TernaryFormat::T2, rows, cols, &trits, scale).unwrap();
        let x = random_act(&mut rng, tokens, cols);
        let mut cpu = vec![0f32; tokens * rows];
        matmul(&pool, &scalar, &m, &x, &mut cpu).unwrap();
        let got = product(&m, &x);
        same_bits(&got, &cpu, &format!("ternary{what} {rows}x{cols}, {tokens} tokens"));
    }
}

/// Head products (int8 and 4-bit rows) bit for bit against the scalar head kernel.
pub fn head_matmul_is_bit_exact_for_int8_and_4bit_rows(dev: &impl Device) {
    let pool = ThreadPool::new(1);
    let mut rng = Rng(77);
    for (rows, cols, tokens, bits) in
        [(5, 3, 1, 8), (33, 130, 4, 8), (100, 64, 9, 4), (17, 200, 2, 4)]
    {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.unit()).collect();
        let m = Q8Matrix::from_row_fn_bits(rows, cols, bits, |r, row| {
            row.copy_from_slice(&w[r * cols..(r + 1) * cols])
        });
        let x = random_act(&mut rng, tokens, cols);
        let mut cpu = vec![0f32; tokens * rows];
        q8_matmul_on(&pool, Isa::Scalar, &m, &x, &mut cpu).unwrap();
        let got = dev.int8(&m, &x);
        same_bits(&got, &cpu, &format!("head {rows}x{cols} {bits}-bit, {tokens} tokens"));
    }
}

/// Per-token int8 quantization bit for bit against `quantize_row`, ties included.
pub fn activation_quantizer_is_bit_exact(dev: &impl Device) {
    let mut rng = Rng(5);
    for (tokens, cols) in [(1, 1), (3, 5), (2, 300), (7, 1001), (1, 2560)] {
        let mut x: Vec<f32> = (0..tokens * cols).map(|_| rng.unit() * 4.0).collect();
        // Exact ties at .5 after scaling exercise round-half-to-even.
        x[0] = 2.0;
        let (q, a, s) = dev.act_quant(&x, cols, None);
        for t in 0..tokens {
            let mut want = vec![0i8; cols];
            let (wa, ws) = quantize_row(&x[t * cols..(t + 1) * cols], &mut want);
            assert_eq!(&q[t * cols..(t + 1) * cols], &want[..], "q, {tokens}x{cols} row {t}");
            assert_eq!(a[t].to_bits(), wa.to_bits(), "scale, {tokens}x{cols} row {t}");
            assert_eq!(s[t], ws, "sum, {tokens}x{cols} row {t}");
        }
    }
}

/// RMSNorm then quantization: the device sums the squares in the CPU's order, but its
/// square root and division need not round as the CPU's do, so a code on a rounding
/// boundary may differ by one.
pub fn rmsnorm_then_quantize_matches_the_cpu_to_rounding(dev: &impl Device) {
    let mut rng = Rng(11);
    let (tokens, cols, eps) = (4, 777, 1e-5);
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.unit() * 2.0).collect();
    let w: Vec<f32> = (0..cols).map(|_| 0.5 + rng.unit().abs()).collect();
    let (q, a, _) = dev.act_quant(&x, cols, Some((&w, eps)));
    for t in 0..tokens {
        let row = &x[t * cols..(t + 1) * cols];
        let ms = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let r = 1.0 / (ms + eps).sqrt();
        let normed: Vec<f32> = row.iter().zip(&w).map(|(v, w)| v * r * w).collect();
        let mut want = vec![0i8; cols];
        let (wa, _) = quantize_row(&normed, &mut want);
        assert!((a[t] - wa).abs() <= wa * 1e-5, "scale row {t}: {} vs {wa}", a[t]);
        let off = q[t * cols..(t + 1) * cols].iter().zip(&want).filter(|(g, c)| g != c).count();
        let worst =
            q[t * cols..].iter().zip(&want).map(|(g, c)| (*g as i32 - *c as i32).abs()).max();
        assert!(worst <= Some(1) && off <= cols / 50, "row {t}: {off} codes differ");
    }
}

/// Argmax: the first of equal maxima, NaN skipped.
pub fn argmax_takes_the_first_of_equal_maxima(dev: &impl Device) {
    let mut rng = Rng(3);
    let vocab = 1000;
    let mut logits: Vec<f32> = (0..5 * vocab).map(|_| rng.unit()).collect();
    logits[vocab + 10] = 5.0;
    logits[vocab + 900] = 5.0;
    logits[2 * vocab..3 * vocab].fill(0.25);
    logits[3 * vocab + 999] = 9.0;
    logits[4 * vocab] = f32::NAN;
    let ids = dev.argmax(&logits, vocab);
    for (t, row) in logits.chunks_exact(vocab).enumerate() {
        let want = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        if t == 4 {
            // A NaN first entry: the CPU fold never replaces it; the device skips NaN.
            continue;
        }
        assert_eq!(ids[t] as usize, want, "row {t}");
    }
    assert_eq!(ids[1], 10);
    assert_eq!(ids[2], 0);
}

/// Every check above as a `#[test]` on the device `$device()` gives (`None`: skipped).
#[allow(unused_macros)]
macro_rules! kernel_check_tests {
    ($device:path) => {
        #[test]
        fn ternary_matmul_is_bit_exact_on_ragged_shapes() {
            let Some(d) = $device() else { return };
            common::checks::ternary_matmul_is_bit_exact_on_ragged_shapes(&d);
        }
        #[test]
        fn head_matmul_is_bit_exact_for_int8_and_4bit_rows() {
            let Some(d) = $device() else { return };
            common::checks::head_matmul_is_bit_exact_for_int8_and_4bit_rows(&d);
        }
        #[test]
        fn activation_quantizer_is_bit_exact() {
            let Some(d) = $device() else { return };
            common::checks::activation_quantizer_is_bit_exact(&d);
        }
        #[test]
        fn rmsnorm_then_quantize_matches_the_cpu_to_rounding() {
            let Some(d) = $device() else { return };
            common::checks::rmsnorm_then_quantize_matches_the_cpu_to_rounding(&d);
        }
        #[test]
        fn argmax_takes_the_first_of_equal_maxima() {
            let Some(d) = $device() else { return };
            common::checks::argmax_takes_the_first_of_equal_maxima(&d);
        }
    };
}
#[allow(unused_imports)]
pub(crate) use kernel_check_tests;

/// Implements [`Device`] for `$ty`, a newtype over a backend handle, with the four kernels of
/// module `$kernels` (each `fn(&handle, ...) -> Result<_>`), so both backends' adapters are
/// one definition.
#[allow(unused_macros)]
macro_rules! device_over {
    ($ty:ident, $kernels:path) => {
        impl common::checks::Device for $ty {
            fn ternary(
                &self,
                m: &onebit_kernels::TernaryMatrix,
                x: &onebit_kernels::ActQuant,
            ) -> Vec<f32> {
                use $kernels as k;
                k::ternary_matmul(&self.0, m, x).unwrap()
            }
            fn int8(&self, m: &onebit_kernels::Q8Matrix, x: &onebit_kernels::ActQuant) -> Vec<f32> {
                use $kernels as k;
                k::int8_matmul(&self.0, m, x).unwrap()
            }
            fn act_quant(
                &self,
                x: &[f32],
                cols: usize,
                norm: Option<(&[f32], f32)>,
            ) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
                use $kernels as k;
                k::act_quant(&self.0, x, cols, norm).unwrap()
            }
            fn argmax(&self, logits: &[f32], vocab: usize) -> Vec<u32> {
                use $kernels as k;
                k::argmax(&self.0, logits, vocab).unwrap()
            }
        }
    };
}

#[allow(unused_imports)]
pub(crate) use device_over;

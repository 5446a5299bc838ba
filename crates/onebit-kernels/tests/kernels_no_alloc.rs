//! Kernel calls allocate nothing once every pool thread has made its first call (per-thread
//! scratch grows then and is reused): every ternary layout's best kernel at one token (GEMV)
//! and at several (GEMM), activation quantization, the int8 and 4-bit heads and the dense
//! vector ops, counted on every thread of the process.

#[path = "common/alloc_count.rs"]
mod alloc_count;
mod common;

use alloc_count::{allocations, assert_counter_works};
use common::Rng;
use half::f16;
use onebit_kernels::dense::DenseKernels;
use onebit_kernels::head::q8_matmul;
use onebit_kernels::{
    matmul, ActQuant, Isa, Kernel, Q8Matrix, TernaryFormat, TernaryMatrix, ThreadPool,
};

#[test]
fn kernel_calls_allocate_nothing_after_the_first() {
    assert_counter_works();
    let pool = ThreadPool::new(2);
    let (rows, cols) = (96, 640);
    let mut rng = Rng(7);
    let trits = rng.trits(rows * cols);
    let floats: Vec<f32> = (0..rows * cols).map(|_| rng.unit()).collect();
    let x: Vec<f32> = (0..8 * cols).map(|_| rng.unit()).collect();
    let mut out = vec![0f32; 8 * rows];
    for tokens in [1, 8] {
        let mut xq = ActQuant::new(tokens, cols);
        for format in [TernaryFormat::T2, TernaryFormat::B3, TernaryFormat::Lut] {
            let w = TernaryMatrix::from_trits(format, rows, cols, &trits, 0.5).unwrap();
            let k = Kernel::best(format).unwrap();
            let mut call = || {
                xq.quantize_par(&x[..tokens * cols], &pool);
                matmul(&pool, &k, &w, &xq, &mut out).unwrap();
            };
            call();
            call();
            assert_eq!(allocations(call), 0, "{} at {tokens} tokens", k.name());
        }
        for bits in [8, 4] {
            let head = Q8Matrix::from_row_fn_bits(rows, cols, bits, |r, row| {
                row.copy_from_slice(&floats[r * cols..(r + 1) * cols])
            });
            xq.quantize(&x[..tokens * cols]);
            let mut call = || q8_matmul(&pool, &head, &xq, &mut out).unwrap();
            call();
            call();
            assert_eq!(allocations(call), 0, "{bits}-bit head at {tokens} tokens");
        }
    }
    let dense = DenseKernels::get(Isa::selected()).unwrap();
    let halves: Vec<f16> = floats[..cols].iter().map(|&v| f16::from_f32(v)).collect();
    let bytes: Vec<i8> = rng.acts(cols);
    let scales = vec![0.25f32; cols / 32];
    let mut y = vec![0f32; cols];
    let n = allocations(|| {
        let d = dense.dot(&floats[..cols], &x[..cols]);
        dense.axpy(d, &x[..cols], &mut y);
        dense.widen_f16(&halves, &mut y);
        dense.widen_q8(&bytes, &scales, 32, &mut y);
    });
    assert_eq!(n, 0, "dense vector ops");
}

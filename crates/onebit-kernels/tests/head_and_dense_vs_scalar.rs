//! The head (8- and 4-bit) and the dense vector kernels of every ISA this CPU has, against
//! their plain-Rust definitions on ragged shapes. Integer paths must be bit-exact; the f32
//! dot and axpy may only differ by summation order and FMA rounding.

use half::f16;
use onebit_kernels::dense::DenseKernels;
use onebit_kernels::head::{dot_scalar, q8_matmul_on};
use onebit_kernels::{ActQuant, CpuFeatures, Isa, Q8Matrix, ThreadPool};

mod common;
use common::{std_detected, Rng};

fn assert_all_ran(family: &str, ran: &[Isa]) {
    for isa in std_detected() {
        assert!(
            ran.iter().any(|r| r.name() == isa),
            "this CPU has {isa}, but no {family} kernel for it ran (ran: {ran:?})"
        );
    }
}

#[test]
fn every_head_kernel_matches_scalar_bit_exact() {
    let pool = ThreadPool::new(3);
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|&i| CpuFeatures::get().has(i)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Ranges of 64+ rows per thread and 8+ tokens take the AMX blocks (with tails) where present.
    let shapes = [
        (1, 1),
        (3, 17),
        (5, 33),
        (37, 1000),
        (70, 2560),
        (41, 1984),
        (9, 2049),
        (1000, 200),
        (403, 777),
    ];
    for (rows, cols) in shapes {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.unit()).collect();
        for bits in [8u8, 4] {
            let m = Q8Matrix::from_row_fn_bits(rows, cols, bits, |r, b| {
                b.copy_from_slice(&w[r * cols..(r + 1) * cols])
            });
            for tokens in [1, 2, 5, 8, 16, 21, 40] {
                // ActQuant never produces -128 (|x·127/absmax| ≤ 127), which the AVX2 sign trick relies on.
                let q: Vec<i8> =
                    (0..tokens * cols).map(|_| ((rng.next() % 255) as i32 - 127) as i8).collect();
                let scales: Vec<f32> = (0..tokens).map(|t| 0.5 + t as f32).collect();
                let x = ActQuant::from_quantized(&q, cols, &scales);
                let mut wide = vec![0i8; x.row(0).len()];
                let want: Vec<f32> = (0..tokens)
                    .flat_map(|t| (0..rows).map(move |r| (t, r)))
                    .map(|(t, r)| {
                        wide.fill(0);
                        m.unpack_row(r, &mut wide);
                        dot_scalar(&wide, x.row(t)) as f32 * m.row_scale(r) / scales[t]
                    })
                    .collect();
                for &isa in &isas {
                    let mut got = vec![f32::NAN; rows * tokens];
                    q8_matmul_on(&pool, isa, &m, &x, &mut got).unwrap();
                    assert_eq!(
                        got,
                        want,
                        "{bits}-bit head/{} {rows}x{cols} tokens={tokens}",
                        isa.name()
                    );
                }
            }
        }
    }
    assert_all_ran("head", &isas);
}

#[test]
fn every_dense_kernel_matches_scalar() {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|&i| CpuFeatures::get().has(i)).collect();
    let scalar = DenseKernels::get(Isa::Scalar).unwrap();
    let mut ran = Vec::new();
    let mut rng = Rng(12345);
    for n in [0usize, 1, 7, 15, 16, 17, 63, 100, 1000, 2561] {
        let a: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let h: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
        let q: Vec<i8> = (0..n).map(|_| rng.next() as i8).collect();
        let block = 32;
        let qs: Vec<f32> = (0..n.div_ceil(block)).map(|_| rng.unit()).collect();
        let bound = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>() * 1e-6 + 1e-6;
        for &isa in &isas {
            let k = match DenseKernels::get(isa) {
                Ok(k) => k,
                // AVX2 without FMA/F16C (no such CPU ships, but it is allowed): plain bodies.
                Err(_) => continue,
            };
            let (d, d0) = (k.dot(&a, &b), scalar.dot(&a, &b));
            assert!((d - d0).abs() <= bound, "dot/{} n={n}: {d} vs {d0}", isa.name());
            let (mut y, mut y0) = (b.clone(), b.clone());
            k.axpy(0.75, &a, &mut y);
            scalar.axpy(0.75, &a, &mut y0);
            for (i, (u, v)) in y.iter().zip(&y0).enumerate() {
                assert!((u - v).abs() <= 1e-6 * (1.0 + v.abs()), "axpy/{} n={n} i={i}", isa.name());
            }
            let (mut w, mut w0) = (vec![f32::NAN; n], vec![0f32; n]);
            k.widen_f16(&h, &mut w);
            scalar.widen_f16(&h, &mut w0);
            assert_eq!(w, w0, "widen_f16/{} n={n}", isa.name());
            let (mut w, mut w0) = (vec![f32::NAN; n], vec![0f32; n]);
            k.widen_q8(&q, &qs, block, &mut w);
            scalar.widen_q8(&q, &qs, block, &mut w0);
            assert_eq!(w, w0, "widen_q8/{} n={n}", isa.name());
            ran.push(isa);
        }
    }
    assert_all_ran("dense", &ran);
}

#[test]
fn head_refuses_bad_operands_and_missing_isas() {
    let pool = ThreadPool::new(1);
    let m = Q8Matrix::from_f32(&[0.5; 12], 3, 4).unwrap();
    assert!(Q8Matrix::from_f32(&[0.5; 11], 3, 4).is_err());
    let x = ActQuant::from_quantized(&[1; 5], 5, &[1.0]);
    assert!(q8_matmul_on(&pool, Isa::Scalar, &m, &x, &mut [0.0; 3]).is_err(), "cols mismatch");
    let x = ActQuant::from_quantized(&[1; 4], 4, &[1.0]);
    assert!(q8_matmul_on(&pool, Isa::Scalar, &m, &x, &mut [0.0; 2]).is_err(), "short output");
    for isa in Isa::ALL.into_iter().filter(|&i| !CpuFeatures::get().has(i)) {
        let err = q8_matmul_on(&pool, isa, &m, &x, &mut [0.0; 3]).unwrap_err();
        assert!(err.to_string().contains(isa.name()), "{err}");
        assert!(DenseKernels::get(isa).is_err());
    }
}

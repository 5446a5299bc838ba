//! The head (8- and 4-bit) and the dense vector kernels of every ISA this CPU has, against
//! their plain-Rust definitions on ragged shapes. Integer paths must be bit-exact; the f32
//! dot and axpy may only differ by summation order and FMA rounding.

use half::f16;
use onebit_kernels::dense::{DenseKernels, KvRows};
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

/// Decode attention read from an f16 or int8 cache computes, bit for bit on every ISA, what
/// widening the rows and running the scalar `dot`/`axpy` on them computes: head widths that
/// are and are not multiples of 16, int8 blocks of 32 and of a whole (odd) head, more heads
/// than one pass takes, rows strided inside a wider cache.
#[test]
fn fused_attention_is_widen_then_dot_bit_for_bit() {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|&i| CpuFeatures::get().has(i)).collect();
    let scalar = DenseKernels::get(Isa::Scalar).unwrap();
    let mut ran = Vec::new();
    let mut rng = Rng(0x51ed_270b_2c4d_9e01);
    let shapes = [
        (128, 4, 37, 512),
        (128, 1, 1, 0),
        (64, 5, 20, 64),
        (80, 2, 9, 16),
        (24, 3, 7, 8),
        (256, 6, 3, 0),
        (16, 4, 0, 0),
    ];
    for (hd, heads, n, extra) in shapes {
        let (hd, n): (usize, usize) = (hd, n);
        let stride = hd + extra;
        let len = if n == 0 { 0 } else { (n - 1) * stride + hd };
        let k16: Vec<f16> = (0..len).map(|_| f16::from_f32(4.0 * rng.unit())).collect();
        let v16: Vec<f16> = (0..len).map(|_| f16::from_f32(4.0 * rng.unit())).collect();
        let k8: Vec<i8> = (0..len).map(|_| rng.next() as i8).collect();
        let v8: Vec<i8> = (0..len).map(|_| rng.next() as i8).collect();
        // Blocks of 32 where the head width allows (as the cache), else one per head vector
        // (which then also covers the gap between heads).
        let block = if hd % 32 == 0 && stride % 32 == 0 { 32 } else { stride };
        let ks: Vec<f32> = (0..len.div_ceil(block)).map(|_| 0.01 + rng.unit().abs()).collect();
        let vs: Vec<f32> = (0..len.div_ceil(block)).map(|_| 0.01 + rng.unit().abs()).collect();
        let q: Vec<f32> = (0..heads * hd).map(|_| rng.unit()).collect();
        let o0: Vec<f32> = (0..heads * hd).map(|_| rng.unit()).collect();
        let s: Vec<f32> = (0..heads * n).map(|_| rng.unit()).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let cases = [
            (KvRows::F16(&k16), KvRows::F16(&v16)),
            (KvRows::Q8(&k8, &ks, block), KvRows::Q8(&v8, &vs, block)),
        ];
        for (k, v) in cases {
            // The widen-then-dot reference, in the scalar kernels.
            let widen = |rows: KvRows<'_>, p: usize, out: &mut [f32]| match rows {
                KvRows::F16(x) => scalar.widen_f16(&x[p * stride..][..hd], out),
                KvRows::Q8(x, sc, b) => {
                    let a = p * stride;
                    let sc = &sc[a / b..(a + hd).div_ceil(b)];
                    scalar.widen_q8(&x[a..a + hd], sc, b, out)
                }
            };
            let mut rows = vec![0f32; n * hd];
            for p in 0..n {
                widen(k, p, &mut rows[p * hd..][..hd]);
            }
            let want_s: Vec<f32> = (0..heads * n)
                .map(|i| {
                    let (g, p) = (i / n, i % n);
                    scalar.dot(&q[g * hd..][..hd], &rows[p * hd..][..hd]) * scale
                })
                .collect();
            let mut want_o = o0.clone();
            for p in 0..n {
                widen(v, p, &mut rows[p * hd..][..hd]);
                for g in 0..heads {
                    scalar.axpy(s[g * n + p], &rows[p * hd..][..hd], &mut want_o[g * hd..][..hd]);
                }
            }
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for &isa in &isas {
                let Ok(kern) = DenseKernels::get(isa) else { continue };
                let what = format!("{}: hd {hd} heads {heads} n {n} {k:?}", isa.name());
                let what = &what[..what.len().min(60)];
                let mut got_s = vec![f32::NAN; heads * n];
                kern.scores(&q, hd, k, stride, scale, &mut got_s);
                assert_eq!(bits(&got_s), bits(&want_s), "scores/{what}");
                let mut got_o = o0.clone();
                kern.weigh(&s, v, stride, hd, &mut got_o);
                assert_eq!(bits(&got_o), bits(&want_o), "weigh/{what}");
                ran.push(isa);
            }
        }
    }
    assert_all_ran("fused attention", &ran);
}

/// Softmax's exponentials on every ISA are `exp_f32` bit for bit: a sweep over the whole
/// finite range, the edges where `exp_f32` returns early or scales twice, infinities, NaN,
/// signed zeros and random bit patterns, on row lengths that leave ragged tails.
#[test]
fn vector_exp_is_exp_f32_bit_for_bit() {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|&i| CpuFeatures::get().has(i)).collect();
    let mut rng = Rng(0x0dd_ba11_cafe);
    let mut xs: Vec<f32> = (0..4000).map(|i| -100.0 + 0.05 * i as f32).collect();
    for edge in [-87.0f32, 88.72, 88.38, 88.376_26, -86.9, 0.0, -0.0, 1e-40, -1e-40] {
        xs.extend([edge, f32::from_bits(edge.to_bits() + 1), f32::from_bits(edge.to_bits() - 1)]);
    }
    xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN]);
    xs.extend((0..2000).map(|_| f32::from_bits(rng.next() as u32)));
    let mut ran = Vec::new();
    for &isa in &isas {
        let Ok(kern) = DenseKernels::get(isa) else { continue };
        for m in [0.0f32, 1.5, -3.25, 40.0] {
            for len in [xs.len(), 1, 7, 15, 17, 33] {
                let mut got = xs[..len].to_vec();
                kern.exp_sub(&mut got, m);
                for (x, g) in xs.iter().zip(&got) {
                    let want = onebit_kernels::dense::exp_f32(x - m);
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "exp/{}: exp({x:e} - {m}) = {g:e}, want {want:e}",
                        isa.name()
                    );
                }
            }
        }
        ran.push(isa);
    }
    assert_all_ran("exp", &ran);
}

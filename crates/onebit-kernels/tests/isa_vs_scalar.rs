//! Every kernel this CPU can run against the plain trit dot product, on random and ragged
//! shapes, bit-exact (scales of 1 make the f32 outputs the integer sums themselves).

use onebit_kernels::gemv::scalar::dot_trits;
use onebit_kernels::{matmul, ActQuant, Kernel, TernaryFormat, TernaryMatrix, ThreadPool};
use proptest::prelude::*;

mod common;
use common::Rng;

/// Runs every available kernel of every format on one case; returns the kernels that ran.
fn check_case(
    pool: &ThreadPool,
    seed: u64,
    rows: usize,
    cols: usize,
    tokens: usize,
) -> Vec<String> {
    let mut ran = Vec::new();
    for format in TernaryFormat::ALL {
        let (rows, cols) = format.fit_shape(rows, cols);
        let mut rng = Rng(seed | 1);
        let trits = rng.trits(rows * cols);
        let q = rng.acts(tokens * cols);
        let w = TernaryMatrix::from_trits(format, rows, cols, &trits, 1.0).unwrap();
        let x = ActQuant::from_quantized(&q, cols, &vec![1.0; tokens]);
        let want: Vec<f32> = (0..tokens)
            .flat_map(|t| {
                let (trits, q) = (&trits, &q);
                (0..rows).map(move |r| {
                    dot_trits(&trits[r * cols..(r + 1) * cols], &q[t * cols..(t + 1) * cols]) as f32
                })
            })
            .collect();
        // `best` may pair one ISA's tiles with another's one-token rows (`Isa::rows`).
        for k in Kernel::available(format).into_iter().chain(Kernel::best(format).ok()) {
            let mut got = vec![f32::NAN; rows * tokens];
            matmul(pool, &k, &w, &x, &mut got).unwrap();
            assert_eq!(
                got,
                want,
                "{} rows={rows} cols={cols} tokens={tokens} seed={seed}",
                k.name()
            );
            ran.push(k.name());
        }
    }
    ran
}

#[test]
fn every_kernel_matches_scalar_on_ragged_shapes() {
    let pool = ThreadPool::new(3);
    let mut ran = std::collections::BTreeSet::new();
    let shapes = [
        (1, 1),
        (1, 2),
        (3, 17),
        (4, 255),
        (5, 256),
        (7, 257),
        (9, 320),
        (33, 321),
        (64, 640),
        (65, 1000),
        (31, 1280),
        (40, 2049),
    ];
    for (i, &(rows, cols)) in shapes.iter().enumerate() {
        for tokens in [1, 2, 3, 4, 5, 7, 9, 12, 13, 16, 33, 47, 70] {
            ran.extend(check_case(&pool, 1000 + i as u64 * 31 + tokens as u64, rows, cols, tokens));
        }
    }
    // Rows long enough that a prompt is cut into several chunks of 32 tokens (AMX: packed
    // token chunks below 256 tokens; from 256 whole token pairs in place, then the tail).
    ran.extend(check_case(&pool, 77, 16, 40000, 70));
    ran.extend(check_case(&pool, 78, 8, 40000, 301));
    // Prompts of 256+ tokens on ragged shapes (whole 32-token pairs, then a tail of 0-31).
    for (seed, rows, cols, tokens) in [(79, 7, 257, 256), (80, 33, 321, 290), (81, 65, 1000, 301)] {
        ran.extend(check_case(&pool, seed, rows, cols, tokens));
    }
    println!(
        "kernels checked bit-exact against the scalar reference on this CPU ({}):",
        onebit_kernels::CpuFeatures::get().summary()
    );
    for k in &ran {
        println!("  {k}");
    }
    // Every ISA the CPU reports (asked of std directly, not through our own detection) must
    // have had its kernels checked here, so a detection slip cannot pass as "scalar only".
    let expected = common::std_detected();
    for isa in expected {
        assert!(
            ran.iter().any(|k| k.ends_with(&format!("/t2/{isa}"))),
            "this CPU has {isa}, but no T2 kernel for it ran (ran: {ran:?})"
        );
    }
}

#[test]
fn extreme_activations_do_not_overflow() {
    // All weights +1 or -1 and activations at -128/127 stress the i16 paths.
    let pool = ThreadPool::new(2);
    for format in [TernaryFormat::T2, TernaryFormat::B3, TernaryFormat::Lut] {
        let (rows, cols, tokens) = (8, 28672, 5);
        for (wv, qv) in [(1i8, -128i8), (-1, -128), (1, 127), (-1, 127)] {
            let w =
                TernaryMatrix::from_trits(format, rows, cols, &vec![wv; rows * cols], 1.0).unwrap();
            let x = ActQuant::from_quantized(&vec![qv; tokens * cols], cols, &vec![1.0; tokens]);
            let want = (wv as i64 * qv as i64 * cols as i64) as f32;
            for k in Kernel::available(format) {
                let mut got = vec![0f32; rows * tokens];
                matmul(&pool, &k, &w, &x, &mut got).unwrap();
                assert!(
                    got.iter().all(|&v| v == want),
                    "{} w={wv} q={qv}: {:?} vs {want}",
                    k.name(),
                    &got[..2]
                );
            }
        }
    }
}

#[test]
fn scales_are_applied_once() {
    // One token (row kernels) and five (GEMM kernels, AMX where present), real scales.
    let pool = ThreadPool::new(2);
    let (rows, cols) = (36, 300);
    let mut rng = Rng(7);
    let trits = rng.trits(rows * cols);
    for tokens in [1, 5] {
        let xs: Vec<f32> =
            (0..tokens * cols).map(|i| (i as f32 * 0.37).sin() * (1 + i / cols) as f32).collect();
        let mut x = ActQuant::new(tokens, cols);
        x.quantize(&xs);
        for format in [TernaryFormat::T2, TernaryFormat::B3, TernaryFormat::Lut] {
            let w = TernaryMatrix::from_trits(format, rows, cols, &trits, 0.25).unwrap();
            for k in Kernel::available(format) {
                let mut y = vec![0f32; rows * tokens];
                matmul(&pool, &k, &w, &x, &mut y).unwrap();
                for t in 0..tokens {
                    let a = x.scales()[t];
                    for r in 0..rows {
                        let acc = dot_trits(&trits[r * cols..(r + 1) * cols], &x.row(t)[..cols]);
                        assert_eq!(
                            y[t * rows + r],
                            acc as f32 * (0.25 / a),
                            "{} t={t} r={r}",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn wrong_operands_are_errors() {
    let pool = ThreadPool::new(1);
    let w = TernaryMatrix::from_trits(TernaryFormat::T2, 4, 256, &[0; 1024], 1.0).unwrap();
    let x = ActQuant::from_quantized(&[0; 255], 255, &[1.0]);
    let k = Kernel::get(TernaryFormat::T2, onebit_kernels::Isa::Scalar).unwrap();
    assert!(matmul(&pool, &k, &w, &x, &mut [0.0; 4]).is_err());
    let x = ActQuant::from_quantized(&[0; 256], 256, &[1.0]);
    assert!(matmul(&pool, &k, &w, &x, &mut [0.0; 3]).is_err());
    let kb = Kernel::get(TernaryFormat::B3, onebit_kernels::Isa::Scalar).unwrap();
    assert!(matmul(&pool, &kb, &w, &x, &mut [0.0; 4]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn kernels_match_scalar_on_random_shapes(rows in 1usize..80, cols in 1usize..1500, tokens in 1usize..40, seed: u64) {
        let pool = ThreadPool::new(2);
        check_case(&pool, seed, rows, cols, tokens);
    }
}

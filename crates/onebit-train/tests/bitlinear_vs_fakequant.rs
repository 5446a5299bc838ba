//! The fast BitLinear (integer forward, STE backward through gemm) against the plain
//! fake-quant f32 definition, on random and ragged shapes.

use onebit_kernels::ThreadPool;
use onebit_train::ops::bitlinear::{
    bitlinear_backward, bitlinear_backward_reference, bitlinear_forward,
    bitlinear_forward_reference, BitLinearSaved,
};
use onebit_train::rng::Rng;
use onebit_train::{ParamId, ParamKind, Params};
use proptest::prelude::*;

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-20);
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check(tokens: usize, rows: usize, cols: usize, seed: u64) {
    let pool = ThreadPool::new(2);
    let mut p = Params::new(&[("w".into(), rows, cols, ParamKind::Ternary)]).unwrap();
    let mut rng = Rng::new(seed);
    p.value_mut(ParamId(0)).iter_mut().for_each(|v| *v = rng.normal() * 0.05);
    p.refresh_ternary(1.0, &pool).unwrap();
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.normal() * 3.0).collect();
    let dy: Vec<f32> = (0..tokens * rows).map(|_| rng.normal()).collect();
    let w = p.value(ParamId(0)).to_vec();

    let mut out = vec![0.0; tokens * rows];
    let mut saved = BitLinearSaved::default();
    let cache = p.ternary(ParamId(0)).unwrap();
    bitlinear_forward(&pool, &mut out, &mut saved, &x, cache, p.kernel(), (tokens, rows, cols))
        .unwrap();
    let want = bitlinear_forward_reference(&x, &w, tokens, rows, cols);
    let e = max_rel(&out, &want);
    assert!(e < 1e-5, "forward {tokens}x{rows}x{cols}: rel err {e}");

    let mut dx = vec![0.0; tokens * cols];
    let kernel = *p.kernel();
    let mut backward = |p: &mut Params, dx: &mut [f32]| {
        let (cache, dw) = p.ternary_and_grad(ParamId(0));
        let dims = (tokens, rows, cols);
        bitlinear_backward(&pool, Some(dx), dw, &dy, &mut saved, cache.unwrap(), &kernel, dims)
            .unwrap();
    };
    backward(&mut p, &mut dx);
    let (want_dx, want_dw) = bitlinear_backward_reference(&dy, &x, &w, tokens, rows, cols);
    let (ex, ew) = (max_rel(&dx, &want_dx), max_rel(p.grad(ParamId(0)), &want_dw));
    assert!(ex < 1e-5 && ew < 1e-5, "backward {tokens}x{rows}x{cols}: dx {ex}, dw {ew}");

    // The int8 backward option: dx from int8 dY on the integer kernels, within the int8
    // quantization error; dw unchanged (exact).
    p.set_int8_backward(true);
    p.refresh_ternary(1.0, &pool).unwrap();
    p.zero_grads();
    let mut dx8 = vec![0.0; tokens * cols];
    backward(&mut p, &mut dx8);
    let (ex, ew) = (max_rel(&dx8, &want_dx), max_rel(p.grad(ParamId(0)), &want_dw));
    assert!(ex < 2e-2 && ew < 1e-5, "int8 backward {tokens}x{rows}x{cols}: dx {ex}, dw {ew}");
    if tokens * rows >= 64 {
        assert!(ex > 0.0, "int8 dY must differ from the exact product somewhere");
    }
}

#[test]
fn fixed_shapes_including_ragged() {
    for (i, &(t, r, c)) in [
        (1, 1, 1),
        (3, 7, 5),
        (16, 32, 256),
        (33, 65, 100),
        (64, 96, 333),
        (128, 688, 256),
        (40, 256, 688),
    ]
    .iter()
    .enumerate()
    {
        check(t, r, c, i as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_shapes(t in 1usize..80, r in 1usize..200, c in 1usize..600, seed in any::<u64>()) {
        check(t, r, c, seed);
    }
}

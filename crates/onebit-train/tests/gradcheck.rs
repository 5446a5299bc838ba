//! Gradients of the whole tiny model against finite differences (a five-point stencil;
//! BitLinear at λ = 0, where it is an ordinary linear layer and the STE is the true
//! derivative), for both architectures; and checkpointing gives bit-identical gradients.

use onebit_model::config::Activation;
use onebit_model::ModelConfig;
use onebit_train::model::TrainModel;
use onebit_train::rng::Rng;
use onebit_train::{ParamId, Tape};

fn tiny(act: Activation, sub_norms: bool, tied: bool) -> ModelConfig {
    ModelConfig {
        hidden: 16,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 4,
        intermediate: 24,
        vocab: 11,
        max_positions: 64,
        rope_theta: 10_000.0,
        rope_interleaved: !sub_norms,
        rms_eps: 1e-5,
        act,
        sub_norms,
        tied_embeddings: tied,
        bos: None,
        eos: None,
    }
}

fn loss(m: &mut TrainModel, tape: &mut Tape, tokens: &[u32], targets: &[u32], lambda: f32) -> f32 {
    m.params.refresh_ternary(lambda, tape.pool()).unwrap();
    tape.reset(2, 6, tokens, targets, m.config.vocab).unwrap();
    let (_, l) = m.forward(tape).unwrap();
    tape.value(l)[0]
}

fn batch(seed: u64, vocab: usize) -> (Vec<u32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let toks: Vec<u32> = (0..12).map(|_| rng.below(vocab) as u32).collect();
    let tg: Vec<u32> = (0..12).map(|_| rng.below(vocab) as u32).collect();
    (toks, tg)
}

fn gradcheck(cfg: ModelConfig) {
    let mut m = TrainModel::new(cfg, 7).unwrap();
    // Larger weights than the default init so every op has a visible gradient.
    let mut rng = Rng::new(3);
    for i in 0..m.params.infos().len() {
        if m.params.infos()[i].kind != onebit_train::ParamKind::Norm {
            m.params.value_mut(ParamId(i)).iter_mut().for_each(|v| *v = 0.3 * rng.normal());
        } else {
            m.params.value_mut(ParamId(i)).iter_mut().for_each(|v| *v = 1.0 + 0.2 * rng.normal());
        }
    }
    let (toks, tg) = batch(1, m.config.vocab);
    let mut tape = Tape::new(2);
    let l0 = loss(&mut m, &mut tape, &toks, &tg, 0.0) as f64;
    m.params.zero_grads();
    tape.backward(&mut m.params).unwrap();
    let grads = m.params.grads.clone();
    // Directional derivative per parameter tensor along a random direction.
    let eps = 1e-2f32; // a step of unit norm along a random direction
    for i in 0..m.params.infos().len() {
        let info = m.params.infos()[i].clone();
        let mut dir: Vec<f32> = (0..info.len()).map(|_| rng.normal()).collect();
        let norm = dir.iter().map(|d| d * d).sum::<f32>().sqrt();
        dir.iter_mut().for_each(|d| *d /= norm);
        let analytic: f64 = dir
            .iter()
            .zip(&grads[info.offset..info.offset + info.len()])
            .map(|(&d, &g)| (d * g) as f64)
            .sum();
        let base = m.params.value(ParamId(i)).to_vec();
        let shifted = |s: f32| base.iter().zip(&dir).map(|(&b, &d)| b + s * d).collect::<Vec<_>>();
        // Five-point stencil (truncation error O(eps⁴)). What is left is the estimate's own
        // error, f32 rounding of the loss and relu²'s kinks: up to 2.1e-3 of the directional
        // derivatives here, while a wrong backward is off by O(1). Rounding the loss by δ
        // moves the estimate by up to 18δ/(12·eps): with δ two ulps of the loss that is an
        // absolute floor of about 9e-5 (one tensor's derivative is 6e-4 and its estimate
        // moved by 3.2e-5 between an AVX2 and an AVX-512 machine).
        let mut at = |s: f32| {
            m.params.value_mut(ParamId(i)).copy_from_slice(&shifted(s));
            loss(&mut m, &mut tape, &toks, &tg, 0.0) as f64
        };
        let (l1, l2) = (at(eps) - at(-eps), at(2.0 * eps) - at(-2.0 * eps));
        m.params.value_mut(ParamId(i)).copy_from_slice(&base);
        let numeric = (8.0 * l1 - l2) / (12.0 * eps as f64);
        let floor = 18.0 * 2.0 * l0.abs() * f32::EPSILON as f64 / (12.0 * eps as f64);
        let scale = numeric.abs().max(analytic.abs()).max(1e-2);
        let diff = (numeric - analytic).abs();
        assert!(
            diff <= 3e-3 * scale + floor,
            "{}: analytic {analytic:.6} numeric {numeric:.6} (difference {diff:.2e}, allowed {:.2e})",
            info.name,
            3e-3 * scale + floor
        );
    }
}

#[test]
fn bitnet_architecture_matches_finite_differences() {
    gradcheck(tiny(Activation::Relu2, true, true));
}

#[test]
fn llama_architecture_matches_finite_differences() {
    gradcheck(tiny(Activation::Silu, false, false));
}

#[test]
fn checkpointing_gives_identical_gradients() {
    let mut m = TrainModel::new(tiny(Activation::Relu2, true, true), 9).unwrap();
    let (toks, tg) = batch(5, m.config.vocab);
    let mut grads = Vec::new();
    for ckpt in [false, true] {
        let mut tape = Tape::new(2);
        tape.set_checkpointing(ckpt);
        let l = loss(&mut m, &mut tape, &toks, &tg, 1.0);
        m.params.zero_grads();
        tape.backward(&mut m.params).unwrap();
        grads.push((l, m.params.grads.clone()));
    }
    assert_eq!(grads[0].0.to_bits(), grads[1].0.to_bits());
    assert!(grads[0].1.iter().zip(&grads[1].1).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(grads[0].1.iter().any(|&g| g != 0.0));
}

#[test]
fn hostile_batches_are_errors() {
    let m = TrainModel::new(tiny(Activation::Relu2, true, true), 1).unwrap();
    let mut tape = Tape::new(1);
    assert!(tape.reset(2, 6, &[0; 11], &[0; 12], 11).is_err(), "short batch");
    assert!(tape.reset(2, 6, &[11; 12], &[0; 12], 11).is_err(), "token beyond vocab");
    assert!(tape.reset(0, 6, &[], &[], 11).is_err(), "empty batch");
    let mut p2 = TrainModel::new(tiny(Activation::Relu2, true, true), 1).unwrap();
    tape.reset(2, 6, &[0; 12], &[1; 12], 11).unwrap();
    assert!(tape.backward(&mut p2.params).is_err(), "backward with no loss");
    let _ = m;
}

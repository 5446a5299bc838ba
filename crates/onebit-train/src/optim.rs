//! AdamW with decoupled weight decay and global-norm gradient clipping, f32 moments in one
//! allocation each. Weight decay applies to matrices (ternary, dense, embedding), never to
//! norm gains, as in the BitNet recipe.

use crate::params::{ParamKind, Params};
use onebit_kernels::ThreadPool;
use serde::{Deserialize, Serialize};

/// Optimizer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// Clip the global gradient norm to this (0 = off).
    pub clip: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, clip: 1.0 }
    }
}

/// AdamW state.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// Settings.
    pub cfg: AdamWConfig,
    /// First moments, laid out like the parameters.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Updates applied so far (bias correction).
    pub t: u64,
    decay_mask: Vec<bool>,
}

/// What one update did, for logs and monitors.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Per parameter: Σ(Δw)² of the applied update.
    pub update_sq: Vec<f64>,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(params: &Params, cfg: AdamWConfig) -> Self {
        let n = params.count();
        let mut decay_mask = vec![false; n];
        for info in params.infos() {
            if info.kind != ParamKind::Norm {
                decay_mask[info.offset..info.offset + info.len()].fill(true);
            }
        }
        AdamW { cfg, m: vec![0.0; n], v: vec![0.0; n], t: 0, decay_mask }
    }

    /// One update with learning rate `lr` and weight decay `wd`; gradients are divided by
    /// `grad_scale` first (the number of accumulated micro-batches). With `measure` the
    /// per-parameter update sizes are returned for the monitors.
    pub fn step(
        &mut self,
        p: &mut Params,
        lr: f32,
        wd: f32,
        grad_scale: f32,
        measure: bool,
        pool: &ThreadPool,
    ) -> StepStats {
        let inv = 1.0 / grad_scale;
        let sq: f64 = p.grads.iter().map(|&g| (g * inv) as f64 * (g * inv) as f64).sum();
        let grad_norm = sq.sqrt() as f32;
        let clip = if self.cfg.clip > 0.0 && grad_norm > self.cfg.clip {
            self.cfg.clip / grad_norm
        } else {
            1.0
        };
        let g_mul = inv * clip;
        self.t += 1;
        let (b1, b2, eps) = (self.cfg.beta1, self.cfg.beta2, self.cfg.eps);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let mut update_sq = if measure { vec![0.0f64; p.infos().len()] } else { Vec::new() };
        let grads = &p.grads;
        let mask = &self.decay_mask;
        let n = grads.len();
        let chunk = 4096;
        let rows = n / chunk;
        let body = |base: usize, w: &mut [f32], m: &mut [f32], v: &mut [f32]| {
            for i in 0..w.len() {
                let g = grads[base + i] * g_mul;
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let mhat = m[i] / bc1;
                let vhat = v[i] / bc2;
                let decay = if mask[base + i] { wd * w[i] } else { 0.0 };
                w[i] -= lr * (mhat / (vhat.sqrt() + eps) + decay);
            }
        };
        // Update sizes are recomputed from the moments afterwards, not by keeping old weights.
        let (head_w, tail_w) = p.values.split_at_mut(rows * chunk);
        let (head_m, tail_m) = self.m.split_at_mut(rows * chunk);
        let (head_v, tail_v) = self.v.split_at_mut(rows * chunk);
        if rows > 0 {
            pool.run_parts(
                rows,
                [(head_w, chunk), (head_m, chunk), (head_v, chunk)],
                &|_, r, [w, m, v]| body(r.start * chunk, w, m, v),
            );
        }
        body(rows * chunk, tail_w, tail_m, tail_v);
        for (k, info) in p.infos().iter().enumerate().filter(|_| measure) {
            let (m, v) = (
                &self.m[info.offset..info.offset + info.len()],
                &self.v[info.offset..info.offset + info.len()],
            );
            update_sq[k] = m
                .iter()
                .zip(v)
                .map(|(&m, &v)| {
                    let u = lr * (m / bc1) / ((v / bc2).sqrt() + eps);
                    (u as f64) * (u as f64)
                })
                .sum();
        }
        StepStats { grad_norm, update_sq }
    }
}

//! STE monitors per BitLinear (the quantities QAT practitioners watch): share of weights at
//! -1/0/+1, flips since the last report, latent saturation (|W/γ| > 1.5), activation
//! clipping, latent gradient norm and update/weight ratio, with warnings for frozen,
//! vanishing and collapsed layers. Cheap enough to leave on: one pass over the trits.

use crate::params::{ParamKind, Params};
use crate::tape::ClipStats;
use serde::Serialize;

/// One BitLinear's figures at a report.
#[derive(Clone, Debug, Serialize)]
pub struct LayerStats {
    /// Parameter name.
    pub name: String,
    /// Share of weights at -1.
    pub neg: f32,
    /// Share at 0.
    pub zero: f32,
    /// Share at +1.
    pub pos: f32,
    /// Share of weights whose trit changed since the last report.
    pub flips: f32,
    /// Share that changed sign (−1 ↔ +1).
    pub sign_flips: f32,
    /// Share of latent weights with |W/γ| > 1.5 (they cannot flip back soon).
    pub saturated: f32,
    /// Share of int8 activations at ±127 since the last report.
    pub act_clip: f32,
    /// L2 norm of the latent weight's gradient.
    pub grad_norm: f32,
    /// lr·|ΔW| / |W| of the last update.
    pub update_ratio: f32,
}

/// A report: every BitLinear plus warnings.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorReport {
    /// Optimizer step.
    pub step: u64,
    /// Per layer.
    pub layers: Vec<LayerStats>,
    /// Human-readable warnings.
    pub warnings: Vec<String>,
}

/// Reports after how many flip-free reports a layer counts as frozen.
const FROZEN_REPORTS: u32 = 3;

/// Monitor state between reports.
#[derive(Debug, Default)]
pub struct Monitor {
    prev: Vec<Option<Vec<i8>>>,
    still: Vec<u32>,
}

/// What the monitor reads of one BitLinear weight at a report.
#[derive(Clone, Copy, Debug)]
pub struct LayerInput<'a> {
    /// Parameter name.
    pub name: &'a str,
    /// The trits of the step's quantized weight.
    pub trits: &'a [i8],
    /// Its absmean scale γ.
    pub gamma: f32,
    /// The latent weight.
    pub latent: &'a [f32],
    /// L2 norm of the latent weight's gradient.
    pub grad_norm: f32,
    /// Σ(Δw)² of the last update.
    pub update_sq: f64,
    /// (activations at ±127, activations) since the last report.
    pub clip: (u64, u64),
}

impl Monitor {
    /// Builds a report from the current ternary caches; `grads` are per-parameter gradient
    /// norms, `update_sq` per-parameter Σ(Δw)², `clip` the tape's clipping counts.
    pub fn report(
        &mut self,
        step: u64,
        p: &Params,
        grads: &[f32],
        update_sq: &[f64],
        clip: &ClipStats,
    ) -> MonitorReport {
        let layers =
            p.infos().iter().enumerate().filter(|(_, info)| info.kind == ParamKind::Ternary);
        let inputs: Vec<LayerInput<'_>> = layers
            .map(|(i, info)| {
                let c = p.ternary(crate::ParamId(i)).expect("ternary params have caches");
                LayerInput {
                    name: &info.name,
                    trits: &c.trits,
                    gamma: c.gamma,
                    latent: p.value(crate::ParamId(i)),
                    grad_norm: grads.get(i).copied().unwrap_or(0.0),
                    update_sq: update_sq.get(i).copied().unwrap_or(0.0),
                    clip: clip.get(i).copied().unwrap_or((0, 0)),
                }
            })
            .collect();
        self.report_layers(step, &inputs)
    }

    /// Builds a report from BitLinear weights held anywhere (PyTorch modules included); the
    /// layers must come in the same order at every report, as flips compare with the last.
    pub fn report_layers(&mut self, step: u64, inputs: &[LayerInput<'_>]) -> MonitorReport {
        let n = inputs.len();
        self.prev.resize(n, None);
        self.still.resize(n, 0);
        let mut layers = Vec::new();
        let mut warnings = Vec::new();
        for (i, l) in inputs.iter().enumerate() {
            let len = l.latent.len().max(1) as f32;
            let mut counts = [0usize; 3];
            for &t in l.trits {
                counts[(t + 1) as usize] += 1;
            }
            let (mut flips, mut sign) = (0usize, 0usize);
            if let Some(prev) = &self.prev[i] {
                for (&a, &b) in prev.iter().zip(l.trits) {
                    flips += (a != b) as usize;
                    sign += (a * b == -1) as usize;
                }
            }
            let saturated = l.latent.iter().filter(|&&v| (v / l.gamma).abs() > 1.5).count();
            let wnorm = l.latent.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
            let (clipped, total) = l.clip;
            let s = LayerStats {
                name: l.name.to_string(),
                neg: counts[0] as f32 / len,
                zero: counts[1] as f32 / len,
                pos: counts[2] as f32 / len,
                flips: flips as f32 / len,
                sign_flips: sign as f32 / len,
                saturated: saturated as f32 / len,
                act_clip: if total > 0 { clipped as f32 / total as f32 } else { 0.0 },
                grad_norm: l.grad_norm,
                update_ratio: (l.update_sq.sqrt() / wnorm.max(1e-30)) as f32,
            };
            if self.prev[i].is_some() {
                self.still[i] = if flips == 0 { self.still[i] + 1 } else { 0 };
                if self.still[i] == FROZEN_REPORTS {
                    warnings.push(format!(
                        "{}: frozen, no trit flipped in {FROZEN_REPORTS} reports",
                        s.name
                    ));
                }
            }
            if s.zero > 0.9 {
                warnings.push(format!(
                    "{}: collapsing, {:.0}% of weights are 0",
                    s.name,
                    s.zero * 100.0
                ));
            }
            match &mut self.prev[i] {
                Some(v) if v.len() == l.trits.len() => v.copy_from_slice(l.trits),
                _ => self.prev[i] = Some(l.trits.to_vec()),
            }
            layers.push(s);
        }
        let mut norms: Vec<f32> = layers.iter().map(|l| l.grad_norm).collect();
        norms.sort_by(f32::total_cmp);
        let median = norms.get(norms.len() / 2).copied().unwrap_or(0.0);
        for l in &layers {
            if median > 0.0 && l.grad_norm < 1e-3 * median {
                warnings.push(format!(
                    "{}: vanishing gradient, norm {:.2e} vs median {:.2e}",
                    l.name, l.grad_norm, median
                ));
            }
        }
        MonitorReport { step, layers, warnings }
    }
}

impl MonitorReport {
    /// One console line: averages over layers.
    pub fn summary(&self) -> String {
        let n = self.layers.len().max(1) as f32;
        let avg = |f: fn(&LayerStats) -> f32| self.layers.iter().map(f).sum::<f32>() / n;
        format!(
            "ste: zero {:.1}% flips {:.3}% saturated {:.2}% act-clip {:.2}% upd/w {:.1e}",
            avg(|l| l.zero) * 100.0,
            avg(|l| l.flips) * 100.0,
            avg(|l| l.saturated) * 100.0,
            avg(|l| l.act_clip) * 100.0,
            avg(|l| l.update_ratio)
        )
    }
}

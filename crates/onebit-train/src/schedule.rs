//! Learning-rate and weight-decay schedule of the BitNet b1.58 recipe
//! (BitNet b1.58 2B4T technical report): linear warm-up, then stage 1 with a cosine decay of
//! the LR and a weight decay that follows a cosine from its peak (0.1), then stage 2, a
//! sharp linear cool-down of the LR to zero with weight decay 0.

use serde::{Deserialize, Serialize};

/// Schedule settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate (end of warm-up).
    pub lr: f32,
    /// Warm-up steps.
    pub warmup: u64,
    /// Total steps.
    pub steps: u64,
    /// Share of the steps in stage 2 (cool-down), 0..1.
    pub cooldown: f32,
    /// LR at the end of stage 1 as a share of the peak.
    pub stage1_floor: f32,
    /// LR at the start of stage 2 as a share of the peak.
    pub stage2_start: f32,
    /// Peak weight decay (stage 1).
    pub weight_decay: f32,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            lr: 1.5e-3,
            warmup: 100,
            steps: 1000,
            cooldown: 0.2,
            stage1_floor: 0.5,
            stage2_start: 0.35,
            weight_decay: 0.1,
        }
    }
}

impl Schedule {
    /// (lr, weight decay) for `step` (0-based).
    pub fn at(&self, step: u64) -> (f32, f32) {
        let stage2_from = ((1.0 - self.cooldown.clamp(0.0, 1.0)) * self.steps as f32) as u64;
        if step < self.warmup {
            let lr = self.lr * (step + 1) as f32 / self.warmup as f32;
            return (lr, self.weight_decay);
        }
        if step < stage2_from {
            let span = (stage2_from - self.warmup).max(1) as f32;
            let p = (step - self.warmup) as f32 / span;
            let cos = 0.5 * (1.0 + (std::f32::consts::PI * p).cos());
            let lr = self.lr * (self.stage1_floor + (1.0 - self.stage1_floor) * cos);
            return (lr, self.weight_decay * cos);
        }
        let span = (self.steps - stage2_from).max(1) as f32;
        let p = ((step - stage2_from) as f32 / span).min(1.0);
        (self.lr * self.stage2_start * (1.0 - p), 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_peak_stages_and_cooldown_to_zero() {
        let s = Schedule { lr: 1.0, warmup: 10, steps: 100, cooldown: 0.2, ..Default::default() };
        assert!((s.at(0).0 - 0.1).abs() < 1e-6);
        assert!((s.at(9).0 - 1.0).abs() < 1e-6);
        assert!((s.at(10).0 - 1.0).abs() < 1e-6, "stage 1 starts at the peak");
        assert!(s.at(79).0 > 0.5 - 1e-3 && s.at(79).0 < 0.51, "stage 1 ends at the floor");
        assert!(s.at(79).1 < 0.01, "weight decay follows the cosine down");
        assert!((s.at(80).0 - 0.35).abs() < 1e-6 && s.at(80).1 == 0.0, "stage 2: no weight decay");
        assert!(s.at(99).0 < 0.02 && s.at(150).0 == 0.0);
    }
}

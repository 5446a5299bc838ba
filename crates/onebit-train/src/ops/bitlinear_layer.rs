//! [`BitLinearLayer`]: the BitLinear pair of [`super::bitlinear`] for callers that keep the
//! weights and the autograd themselves (Python's `onebit.nn.BitLinear` inside a
//! `torch.autograd.Function`).
//!
//! The layer keeps no state from a forward for its backward: a module may run its forward
//! several times before one backward (weight sharing, recomputation). The caller either keeps
//! the backward's operands, which [`BitLinearLayer::forward_with_operands`] writes from the
//! codes it has just made (`onebit.nn`'s default: 5-13 % faster training step measured), or
//! keeps the input and latent weight and has the backward re-quantize them (less memory).

use super::bitlinear::{
    bitlinear_backward, bitlinear_forward, quantize_act, quantize_input, write_x_used,
    BitLinearSaved,
};
use crate::params::TernaryCache;
use crate::{Error, Result};
use onebit_kernels::dense::{gemm_f32_pool, MatRef};
use onebit_kernels::{Kernel, TernaryFormat, ThreadPool};

/// Scratch of one BitLinear layer (its ternary cache and quantized activations), reused
/// across calls so a training step allocates only when a shape grows.
#[derive(Debug)]
pub struct BitLinearLayer {
    rows: usize,
    cols: usize,
    cache: TernaryCache,
    saved: BitLinearSaved,
    kernel: Kernel,
}

impl BitLinearLayer {
    /// A layer of `out_features × in_features` on the best T2 kernel of this CPU.
    pub fn new(out_features: usize, in_features: usize) -> Result<Self> {
        if out_features == 0 || in_features == 0 {
            return Err(Error::Config(format!(
                "BitLinear of {out_features}x{in_features}: both sizes must be positive"
            )));
        }
        Ok(BitLinearLayer {
            rows: out_features,
            cols: in_features,
            cache: TernaryCache::new(out_features, in_features)?,
            saved: BitLinearSaved::default(),
            kernel: Kernel::best(TernaryFormat::T2)?,
        })
    }

    fn check(&self, what: &str, len: usize, want: usize) -> Result<()> {
        if len != want {
            return Err(Error::Config(format!(
                "BitLinear {}x{}: {what} has {len} values, expected {want}",
                self.rows, self.cols
            )));
        }
        Ok(())
    }

    /// Checks λ and the shapes of `x` and `w`, then re-quantizes `w` into the cache; returns
    /// the token count.
    fn prepare(&mut self, pool: &ThreadPool, x: &[f32], w: &[f32], lambda: f32) -> Result<usize> {
        check_lambda(lambda)?;
        let tokens = self.tokens(x)?;
        self.check("weight", w.len(), self.rows * self.cols)?;
        self.cache.refresh(w, lambda, false, pool)?;
        Ok(tokens)
    }

    fn tokens(&self, x: &[f32]) -> Result<usize> {
        if !x.len().is_multiple_of(self.cols) {
            return Err(Error::Config(format!(
                "BitLinear {}x{}: input of {} values is not whole rows of {}",
                self.rows,
                self.cols,
                x.len(),
                self.cols
            )));
        }
        Ok(x.len() / self.cols)
    }

    /// `out (tokens × out) = fq(x)·fq(W)ᵀ` on the integer kernels (λ = 1), or the dense
    /// product of the λ blends (0 ≤ λ < 1; λ = 0 is a plain linear layer). Returns γ and
    /// how many int8 activations hit ±127 (the clipping monitor).
    pub fn forward(
        &mut self,
        pool: &ThreadPool,
        out: &mut [f32],
        x: &[f32],
        w: &[f32],
        lambda: f32,
    ) -> Result<(f32, u64)> {
        if lambda != 1.0 {
            let tokens = self.prepare(pool, x, w, lambda)?;
            self.check("output", out.len(), tokens * self.rows)?;
            let dims = (tokens, self.rows, self.cols);
            let clipped =
                bitlinear_forward(pool, out, &mut self.saved, x, &self.cache, &self.kernel, dims)?;
            return Ok((self.cache.gamma, clipped));
        }
        // λ = 1: only the packed trits and the int8 activations (the STE operands are
        // rebuilt by the backward from the same inputs).
        let tokens = self.tokens(x)?;
        self.check("weight", w.len(), self.rows * self.cols)?;
        self.check("output", out.len(), tokens * self.rows)?;
        self.cache.refresh_packed(w, pool)?;
        let clipped = quantize_act(pool, &mut self.saved.act, x, self.cols);
        onebit_kernels::matmul(pool, &self.kernel, &self.cache.packed, &self.saved.act, out)?;
        Ok((self.cache.gamma, clipped))
    }

    /// [`BitLinearLayer::forward`] at λ = 1 that also writes the STE backward's operands,
    /// `x_used = fq(x)` (`tokens × in`) and `w_used = fq(W)` (`out × in`), from the codes it
    /// has just made: a caller that keeps them (PyTorch's autograd) runs the backward as two
    /// dense products with no re-quantization.
    #[allow(clippy::too_many_arguments)] // outputs, then inputs
    pub fn forward_with_operands(
        &mut self,
        pool: &ThreadPool,
        out: &mut [f32],
        (x_used, w_used): (&mut [f32], &mut [f32]),
        x: &[f32],
        w: &[f32],
    ) -> Result<(f32, u64)> {
        let tokens = self.tokens(x)?;
        self.check("x_used", x_used.len(), tokens * self.cols)?;
        self.check("w_used", w_used.len(), self.rows * self.cols)?;
        let done = self.forward(pool, out, x, w, 1.0)?;
        self.cache.write_dense(w_used, w, 1.0, pool);
        write_x_used(pool, x_used, &self.saved.act, x, 1.0);
        Ok(done)
    }

    /// The STE backward of [`BitLinearLayer::forward`] for the same `x`, `w` and `lambda`:
    /// `dx = dout·fq(W)` and `dw = doutᵀ·fq(x)`, overwriting both (either may be skipped).
    #[allow(clippy::too_many_arguments)] // outputs, then inputs
    pub fn backward(
        &mut self,
        pool: &ThreadPool,
        dx: Option<&mut [f32]>,
        dw: Option<&mut [f32]>,
        dout: &[f32],
        x: &[f32],
        w: &[f32],
        lambda: f32,
    ) -> Result<()> {
        let tokens = self.prepare(pool, x, w, lambda)?;
        self.check("output gradient", dout.len(), tokens * self.rows)?;
        quantize_input(pool, &mut self.saved, x, lambda, (tokens, self.cols));
        let dims = (tokens, self.rows, self.cols);
        let mut scratch = Vec::new();
        let dw = match dw {
            Some(dw) => {
                self.check("weight gradient", dw.len(), self.rows * self.cols)?;
                dw.fill(0.0);
                dw
            }
            // The shared backward always forms dW; a caller that does not want it gets a
            // scratch buffer (frozen weights are not the hot path).
            None => {
                scratch.resize(self.rows * self.cols, 0.0);
                &mut scratch[..]
            }
        };
        let dx = match dx {
            Some(dx) => {
                self.check("input gradient", dx.len(), tokens * self.cols)?;
                dx.fill(0.0);
                Some(dx)
            }
            None => None,
        };
        bitlinear_backward(pool, dx, dw, dout, &mut self.saved, &self.cache, &self.kernel, dims)?;
        Ok(())
    }
}

impl BitLinearLayer {
    /// The STE backward's two dense products from operands the caller kept
    /// ([`BitLinearLayer::forward_with_operands`]): `dx = dout·w_used` (`tokens × in`) and
    /// `dw = doutᵀ·x_used` (`out × in`), overwriting whichever is given, on this pool through
    /// the `gemm` crate. Where PyTorch's BLAS runs a slower code path than `gemm` (MKL on AMD
    /// cores with full-width AVX-512: 2.4x slower measured on Zen 5), `onebit.nn` calls this
    /// instead of `torch.mm`.
    pub fn products(
        &self,
        pool: &ThreadPool,
        (dx, dw): (Option<&mut [f32]>, Option<&mut [f32]>),
        dout: &[f32],
        x_used: &[f32],
        w_used: &[f32],
    ) -> Result<()> {
        let tokens = self.tokens(x_used)?;
        self.check("w_used", w_used.len(), self.rows * self.cols)?;
        self.check("output gradient", dout.len(), tokens * self.rows)?;
        let (rows, cols) = (self.rows, self.cols);
        // Every shape first: a refused call writes neither output.
        if let Some(dx) = &dx {
            self.check("input gradient", dx.len(), tokens * cols)?;
        }
        if let Some(dw) = &dw {
            self.check("weight gradient", dw.len(), rows * cols)?;
        }
        if let Some(dx) = dx {
            let (a, b) = (MatRef::rows(dout, rows), MatRef::rows(w_used, cols));
            gemm_f32_pool(pool, (tokens, cols, rows), dx, cols, a, b, 1.0, false);
        }
        if let Some(dw) = dw {
            let (a, b) = (MatRef::transposed(dout, rows), MatRef::rows(x_used, cols));
            gemm_f32_pool(pool, (rows, cols, tokens), dw, cols, a, b, 1.0, false);
        }
        Ok(())
    }

    /// The operands of the STE backward for the same `x`, `w`, `lambda`: `x_used = fq(x)`
    /// (`tokens × in`) and `w_used = fq(W)` (`out × in`), for a caller whose own dense
    /// products compute `dx = dout·w_used` and `dw = doutᵀ·x_used` (PyTorch's BLAS, on its
    /// own threads, in `onebit.nn`).
    pub fn backward_operands(
        &mut self,
        pool: &ThreadPool,
        x_used: &mut [f32],
        w_used: &mut [f32],
        x: &[f32],
        w: &[f32],
        lambda: f32,
    ) -> Result<()> {
        check_lambda(lambda)?;
        let tokens = self.tokens(x)?;
        self.check("weight", w.len(), self.rows * self.cols)?;
        self.check("x_used", x_used.len(), tokens * self.cols)?;
        self.check("w_used", w_used.len(), self.rows * self.cols)?;
        // Straight into the caller's buffers: no packing, no copies.
        self.cache.refresh_trits(w, pool)?;
        self.cache.write_dense(w_used, w, lambda, pool);
        quantize_act(pool, &mut self.saved.act, x, self.cols);
        write_x_used(pool, x_used, &self.saved.act, x, lambda);
        Ok(())
    }
}

fn check_lambda(lambda: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&lambda) {
        return Err(Error::Config(format!("BitLinear lambda {lambda} is outside [0, 1]")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bitlinear::{bitlinear_backward_reference, bitlinear_forward_reference};

    #[test]
    fn matches_the_fake_quant_reference_on_ragged_shapes() {
        let pool = ThreadPool::new(2);
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for (tokens, rows, cols) in [(1, 1, 1), (3, 5, 17), (7, 33, 65), (16, 64, 257)] {
            let x: Vec<f32> = (0..tokens * cols).map(|_| next()).collect();
            let w: Vec<f32> = (0..rows * cols).map(|_| next() * 0.1).collect();
            let dy: Vec<f32> = (0..tokens * rows).map(|_| next()).collect();
            let mut layer = BitLinearLayer::new(rows, cols).unwrap();
            let mut y = vec![0.0; tokens * rows];
            layer.forward(&pool, &mut y, &x, &w, 1.0).unwrap();
            let want = bitlinear_forward_reference(&x, &w, tokens, rows, cols);
            let (mut dx, mut dw) = (vec![1.0; tokens * cols], vec![1.0; rows * cols]);
            layer.backward(&pool, Some(&mut dx), Some(&mut dw), &dy, &x, &w, 1.0).unwrap();
            let (wdx, wdw) = bitlinear_backward_reference(&dy, &x, &w, tokens, rows, cols);
            // The operands path (Python's): the same gradients from x_used and w_used, which
            // the forward writes as the backward would recompute them.
            let (mut xu, mut wu) = (vec![9.0; tokens * cols], vec![9.0; rows * cols]);
            layer.backward_operands(&pool, &mut xu, &mut wu, &x, &w, 1.0).unwrap();
            let (mut fxu, mut fwu) = (vec![7.0; tokens * cols], vec![7.0; rows * cols]);
            let mut y2 = vec![0.0; tokens * rows];
            layer.forward_with_operands(&pool, &mut y2, (&mut fxu, &mut fwu), &x, &w).unwrap();
            assert_eq!((&y2, &fxu, &fwu), (&y, &xu, &wu), "{tokens}x{rows}x{cols}");
            let mut odx = vec![0.0f32; tokens * cols];
            let mut odw = vec![0.0f32; rows * cols];
            for t in 0..tokens {
                for r in 0..rows {
                    for k in 0..cols {
                        odx[t * cols + k] += dy[t * rows + r] * wu[r * cols + k];
                        odw[r * cols + k] += dy[t * rows + r] * xu[t * cols + k];
                    }
                }
            }
            for (name, got, want) in [
                ("y", &y, &want),
                ("dx", &dx, &wdx),
                ("dw", &dw, &wdw),
                ("operands dx", &odx, &wdx),
                ("operands dw", &odw, &wdw),
            ] {
                let scale = want.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
                for (g, e) in got.iter().zip(want.iter()) {
                    assert!(
                        (g - e).abs() <= 1e-5 * scale,
                        "{name} {tokens}x{rows}x{cols}: {g} vs {e}"
                    );
                }
            }
        }
        let mut layer = BitLinearLayer::new(2, 3).unwrap();
        assert!(layer.forward(&pool, &mut [0.0; 2], &[0.0; 4], &[0.0; 6], 1.0).is_err());
        assert!(layer.forward(&pool, &mut [0.0; 2], &[0.0; 3], &[0.0; 6], 1.5).is_err());
        assert!(BitLinearLayer::new(0, 3).is_err());
    }
}

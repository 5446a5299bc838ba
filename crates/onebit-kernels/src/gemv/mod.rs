//! The MAD (multiply-add) kernel family for one or a few tokens: unpack 2-bit or base-3
//! codes and multiply-add them with int8 activations. Every kernel has the signature
//! [`MatmulFn`] and writes f32 outputs through [`crate::quant::dequantize`], so outputs of
//! different kernels are equal exactly when their integer sums are.
//!
//! SIMD kernels multiply the unsigned code `c = w + 1` with the signed activation (the only
//! operand order `vpdpbusd`/`vpmaddubsw` accept) and subtract Σq per token at the end:
//! Σ w·q = Σ c·q − Σ q.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

pub use crate::matmul_args::{MatmulArgs, MatmulFn};

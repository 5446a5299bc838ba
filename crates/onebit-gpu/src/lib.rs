//! onebit's GPU backend: the ternary engine's kernels in WGSL on wgpu, so one code path runs
//! on Vulkan (NVIDIA, AMD, Intel), Metal (Apple Silicon) and DX12, and on the CPU through
//! Mesa's lavapipe Vulkan driver, which is how every developer machine and CI tests it.
//!
//! The kernels are hand-written because no GPU library runs ternary × int8 products:
//! weights are 2-bit codes, activations per-token int8 exactly as the CPU's `ActQuant`, and
//! `dot4I8Packed` does four multiply-adds per instruction. Integer sums are exact, so the
//! matrix products give bit-for-bit the CPU scalar kernels' outputs; the float reductions
//! (RMSNorm, softmax) sum in a different order than the CPU and agree to rounding.
//!
//! [`GpuSession`] implements [`onebit_model::Engine`], so the generation loop, the CLI and
//! the server drive it as they drive the CPU session; the CPU engine stays the reference.
//! Files: `context` (adapter, device, pipelines), `pack` (device layouts), `weights`
//! (uploads), `ops` (one recorded launch), `session` (buffers and the launch list),
//! `engine` (passes and the Engine seam), `kernels` (single-kernel runs for tests and
//! benchmarks), `shaders/*.wgsl` (one kernel per file), `cuda` (the CUDA kernels through
//! `cudarc`, compiled at run time by NVRTC).

mod build;
mod context;
pub mod cuda;
mod engine;
mod error;
pub mod kernels;
mod ops;
pub mod pack;
mod session;
mod weights;

pub use context::{adapters, AdapterSummary, GpuContext};
pub use error::{Error, Result};
pub use session::{Counters, GpuSession};

//! onebit-kernels: packed ternary weight formats, activation quantizers and integer
//! GEMV/GEMM kernels for 1.58-bit models. Knows nothing about models.
//!
//! - [`format`](mod@format): one packed layout per file ([`TernaryMatrix`], [`TernaryFormat`]): the
//!   ecosystem's (bitnet.cpp I2_S, llama.cpp TQ1_0/TQ2_0, transformers' packed uint8) and
//!   ours (T2 2-bit rows, B3 1.6-bit rows, Lut tiles).
//! - [`quant`]: absmean ternarization, per-token int8 [`ActQuant`], Q8_K blocks.
//! - [`gemv`], [`gemm`], [`lut`]: the MAD and lookup-table kernel families, a scalar
//!   reference for each layout plus AVX2, AVX-512 VNNI and NEON versions.
//! - [`matmul_args`]: the kernel interface ([`MatmulArgs`](matmul_args::MatmulArgs), [`MatmulFn`](matmul_args::MatmulFn)).
//! - [`dispatch`]: CPU features detected once, [`Kernel`] lookup, [`matmul`], self-tune.
//! - [`alloc`]: [`HugePageAlloc`], a global allocator putting large blocks on huge pages;
//!   [`aligned`]: [`AlignedBuf`], buffers starting on a cache line.
//! - [`machine`]: CPUs and memory available, checked before big requests.
//! - [`pool`]: the persistent thread pool; [`dense`]: f32/f16 baselines; [`bench`](mod@bench): timing
//!   and read-bandwidth helpers.
//!
//! Why hand-written: no Rust crate has ternary kernels, and they are where a 1-bit
//! model's speed comes from. Dense products use the `gemm` crate.
//!
//! ```
//! use onebit_kernels::{matmul, ActQuant, Kernel, TernaryFormat, TernaryMatrix, ThreadPool};
//! let (rows, cols) = (8, 512);
//! let trits: Vec<i8> = (0..rows * cols).map(|i| (i % 3) as i8 - 1).collect();
//! let w = TernaryMatrix::from_trits(TernaryFormat::T2, rows, cols, &trits, 0.5).unwrap();
//! let mut x = ActQuant::new(1, cols);
//! x.quantize(&vec![1.0; cols]);
//! let mut y = vec![0.0; rows];
//! let pool = ThreadPool::new(2);
//! matmul(&pool, &Kernel::best(TernaryFormat::T2).unwrap(), &w, &x, &mut y).unwrap();
//! assert!(y.iter().all(|v| v.is_finite()));
//! ```

#![deny(missing_docs)]

pub mod aligned;
pub mod alloc;
pub mod bench;
pub mod dense;
pub mod dispatch;
pub mod error;
pub mod format;
pub mod gemm;
pub mod gemv;
pub mod head;
pub mod lut;
pub mod machine;
pub mod matmul_args;
pub mod pool;
pub mod quant;

pub use aligned::AlignedBuf;
pub use alloc::HugePageAlloc;
pub use dispatch::{matmul, matmul_many, self_tune, CpuFeatures, Isa, Kernel};
pub use error::{Error, Result};
pub use format::{SharedBytes, TernaryFormat, TernaryMatrix};
pub use head::Q8Matrix;
pub use pool::{Executor, ThreadPool};
pub use quant::{ActQuant, Q8K};

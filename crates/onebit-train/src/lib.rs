//! onebit-train: native 1.58-bit training on the CPU.
//!
//! Training owns its compute, in the llm.c spirit: [`tensor::Tensor`] and a [`tape::Tape`] of
//! coarse fused ops ([`ops`]), each with a hand-written backward checked against finite
//! differences. Dense products go through the `gemm` crate; BitLinear's forward runs on the
//! same ternary integer kernels the engine uses. Why not candle or burn: see the crate README.
//!
//! The pieces: [`params::Params`] (one allocation for all weights), [`model::TrainModel`]
//! (the engine's architecture built from the same [`onebit_model::ModelConfig`]),
//! [`optim::AdamW`], [`schedule::Schedule`], [`checkpoint`], [`monitor`], [`data`],
//! [`export`] and the [`trainer::Trainer`] loop that ties them together.

#![forbid(unsafe_code)]

pub mod error;
pub mod ops;
pub mod params;
pub mod rng;
pub mod tape;
pub mod tensor;

pub use error::{Error, Result};
pub use params::{ParamId, ParamKind, Params};
pub use tape::{Tape, Var};
pub mod checkpoint;
pub mod convert_any;
pub mod data;
pub mod export;
pub mod finetune;
pub mod model;
pub mod monitor;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod trainer;

//! onebit-model: model configs, the GGUF container, loading and writing models, synthetic
//! models for benchmarks, and the ternary inference engine.
//!
//! - [`config`]: [`ModelConfig`] for BitNet b1.58 and Llama-family switches.
//! - [`gguf`]: the container (read, streaming write), fuzzed by proptest.
//! - [`load`]: GGUF (bitnet.cpp I2_S, llama.cpp TQ1_0/TQ2_0, onebit T2/B3, f16/f32
//!   masters) → [`Model`] with weights repacked into the fastest kernel layout.
//! - [`synthetic`]: `onebit init --shape`: random ternary models streamed to disk; blocks held
//!   in memory for timing them.
//! - [`engine`]: prefill through the GEMM kernels, decode through GEMV, KV cache, sampling.

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod chat_template;
pub mod config;
mod constraint;
pub mod convert;
pub mod engine;
pub mod error;
pub mod gbnf;
pub mod gbnf_machine;
pub mod generation;
pub mod gguf;
pub mod hf;
pub mod json_mode;
pub mod json_number;
pub mod json_pattern;
pub mod json_schema;
pub mod load;
pub mod logprobs;
mod mmap;
pub mod output;
pub mod perplexity;
pub mod save;
pub mod schema_machine;
pub mod shard;
pub mod synthetic;
pub mod target;
pub mod tensors;
pub mod tokenizer;

pub use config::{Activation, ModelConfig};
pub use engine::{
    argmax, candidate_order, penalize, top_k, Draw, Engine, HeadKind, KvDtype, Model, Sampler,
    SamplerConfig, Session, SessionOptions, ShardExchange, StageInput, TensorPart, TensorSplit,
    WireStats, DEVICE_TOP_K,
};
pub use error::{Error, Result};
pub use generation::{
    generate, generate_batch, FinishReason, Generated, GenerationParams, LogitAdjust, Sequence,
};
pub use logprobs::TokenLogprob;
pub use tokenizer::{StreamDecoder, Tokenizer};

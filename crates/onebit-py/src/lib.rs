//! onebit-py: the `onebit` Python package's native module (`onebit._onebit`).
//!
//! Layout after huggingface/tokenizers' `bindings/python`: Rust classes here, the
//! transformers-shaped API and `onebit.nn` in Python under `python/onebit`. Every engine call
//! releases the GIL; long ones run on a worker thread while the calling thread waits in
//! short slices and checks for Ctrl-C between them (`wait.rs`).
//!
//! Nothing here generates, samples or quantizes by itself: generation is
//! `onebit_model::generate` / `generate_batch` (the CLI's and the server's code), BitLinear is
//! `onebit_train::ops::bitlinear_layer` (the trainer's code).

use pyo3::prelude::*;

/// Weights, the head and the KV cache on 2 MiB pages, as in the `onebit` binary (THP is
/// usually `madvise`-only; 4 KiB pages cost a TLB miss per page streamed per token). A
/// cdylib's global allocator serves only this library's Rust allocations, not Python's.
#[global_allocator]
static ALLOC: onebit_kernels::HugePageAlloc = onebit_kernels::HugePageAlloc;

mod errors;
mod model;
mod nn;
#[cfg(unix)]
mod openmp;
mod tokenizer;
mod train;
mod wait;

/// The native module.
#[pymodule]
fn _onebit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("OneBitError", m.py().get_type::<errors::OneBitError>())?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::GenerationStream>()?;
    m.add_class::<tokenizer::Tokenizer>()?;
    m.add_class::<nn::BitLinearKernel>()?;
    m.add_class::<nn::SteMonitor>()?;
    m.add_function(wrap_pyfunction!(nn::set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(train::train, m)?)?;
    m.add_function(wrap_pyfunction!(train::finetune, m)?)?;
    m.add_function(wrap_pyfunction!(train::convert, m)?)?;
    m.add_function(wrap_pyfunction!(model::needs_finetuning, m)?)?;
    m.add_function(wrap_pyfunction!(nn::get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(nn::use_openmp, m)?)?;
    m.add_function(wrap_pyfunction!(nn::threading, m)?)?;
    Ok(())
}

//! The CUDA backend's kernels, through `cudarc` with dynamic loading: the crate builds and its
//! tests run on machines with no CUDA at all; `libnvrtc` (the compiler) and `libcuda` (the
//! driver) are looked up when first used. The kernels are CUDA C in `kernels.cu`, compiled at
//! run time by NVRTC for the device's own architecture, so one binary serves every NVIDIA GPU
//! from Pascal (`dp4a`, compute 6.1) on.
//!
//! What is here: the kernels of the matrix path (ternary and int8 products, RMSNorm fused
//! with activation quantization, argmax), [`compile`] (what CI runs against the PyPI NVRTC
//! wheel so a syntax or type error fails without a GPU), and [`CudaDevice`] with single-kernel
//! runs (`run`) that the tests compare bit for bit against the CPU's scalar kernels where a
//! GPU is present. The whole-model CUDA engine (attention, RoPE, CUDA graphs for the decode
//! step, integer tensor-core MMA for prefill) is not written yet: see the crate README.

mod run;

pub use run::{act_quant, argmax, int8_matmul, ternary_matmul};

use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use std::sync::Arc;

/// The CUDA C source of every kernel.
pub const SOURCE: &str = include_str!("kernels.cu");

/// The kernels `SOURCE` defines, in the order [`CudaDevice`] loads them.
pub const KERNEL_NAMES: [&str; 4] = ["ternary_matmul", "int8_matmul", "act_quant", "argmax"];

/// Whether NVRTC (`libnvrtc.so.12`, e.g. from the PyPI wheel `nvidia-cuda-nvrtc-cu12` on
/// `LD_LIBRARY_PATH`) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library; nothing is called through it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library (`libcuda.so`) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: as in `nvrtc_present`.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Compiles `source` to PTX for `arch` (`compute_80`, …) with the options the kernels rely
/// on (no multiply-add contraction, IEEE division and square root, no flush to zero).
pub fn compile_source(source: &str, arch: &str) -> Result<String> {
    if !nvrtc_present() {
        return Err(Error::NoAdapter(
            "NVRTC (libnvrtc.so.12) not found; install the CUDA toolkit or the PyPI wheel \
             nvidia-cuda-nvrtc-cu12 and put its lib folder on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let opts = CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some("onebit_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            Error::Device(format!("NVRTC for {arch}: {}", log.to_string_lossy().trim()))
        }
        other => Error::Device(format!("NVRTC for {arch}: {other}")),
    })?;
    Ok(ptx.to_src())
}

/// [`SOURCE`] compiled to PTX for `arch`.
pub fn compile(arch: &str) -> Result<String> {
    compile_source(SOURCE, arch)
}

fn driver(what: &str, e: cudarc::driver::DriverError) -> Error {
    Error::Device(format!("CUDA {what}: {e}"))
}

/// One CUDA device with the kernels loaded.
pub struct CudaDevice {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) funcs: Vec<CudaFunction>,
    name: String,
    capability: (i32, i32),
}

impl CudaDevice {
    /// Opens device `ordinal` and compiles the kernels for its architecture. No driver or
    /// no device is [`Error::NoAdapter`]; anything else that fails is an error.
    pub fn open(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(Error::NoAdapter("no CUDA driver (libcuda.so) on this machine".into()));
        }
        let count = CudaContext::device_count().map_err(|e| {
            Error::NoAdapter(format!("the CUDA driver found no usable device ({e})"))
        })?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::NoAdapter(format!(
                "CUDA device {ordinal} asked for; the driver has {count}"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| driver("context", e))?;
        let capability = ctx.compute_capability().map_err(|e| driver("capability", e))?;
        if capability < (6, 1) {
            return Err(Error::Unsupported(format!(
                "compute capability {}.{}: the kernels need dp4a (6.1 or newer)",
                capability.0, capability.1
            )));
        }
        let name = ctx.name().map_err(|e| driver("name", e))?;
        let ptx = compile(&format!("compute_{}{}", capability.0, capability.1))?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| driver("module", e))?;
        let funcs = KERNEL_NAMES
            .iter()
            .map(|k| module.load_function(k).map_err(|e| driver(k, e)))
            .collect::<Result<_>>()?;
        Ok(CudaDevice { stream: ctx.default_stream(), funcs, name, capability })
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }
}

/// One line per CUDA device (name and compute capability), or why there is none.
pub fn devices() -> std::result::Result<Vec<String>, String> {
    if !driver_present() {
        return Err("no CUDA driver (libcuda.so) on this machine".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("CUDA driver: {e}"))?;
    (0..count.max(0) as usize)
        .map(|i| {
            let ctx = CudaContext::new(i).map_err(|e| format!("device {i}: {e}"))?;
            let name = ctx.name().map_err(|e| format!("device {i}: {e}"))?;
            let (ma, mi) = ctx.compute_capability().map_err(|e| format!("device {i}: {e}"))?;
            Ok(format!("{i}: {name} (compute {ma}.{mi})"))
        })
        .collect()
}

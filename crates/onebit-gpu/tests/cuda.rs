//! The CUDA kernels. Everywhere NVRTC can be loaded (CI installs the PyPI wheel
//! `nvidia-cuda-nvrtc-cu12` and sets `ONEBIT_NVRTC_REQUIRED=1`): every kernel compiles to PTX
//! for each architecture we support, with the instructions and options the results depend
//! on. Where a CUDA device is present: the same bit-exact checks as the WGSL kernels.

mod common;

use onebit_gpu::cuda::{self, CudaDevice};
use onebit_gpu::Error;

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Whether NVRTC is here; without it the compile tests skip, or fail under
/// `ONEBIT_NVRTC_REQUIRED=1`.
fn nvrtc() -> bool {
    if cuda::nvrtc_present() {
        return true;
    }
    assert!(
        !required("ONEBIT_NVRTC_REQUIRED"),
        "ONEBIT_NVRTC_REQUIRED=1 but libnvrtc.so.12 is not loadable"
    );
    eprintln!("skipped: NVRTC (libnvrtc.so.12) not found");
    false
}

/// The PTX of one `.entry` (its text up to the next entry).
fn entry<'a>(ptx: &'a str, name: &str) -> &'a str {
    let start = ptx.find(&format!(".entry {name}(")).unwrap_or_else(|| panic!("no entry {name}"));
    let rest = &ptx[start + 1..];
    &ptx[start..start + 1 + rest.find(".entry").unwrap_or(rest.len())]
}

#[test]
fn every_kernel_compiles_to_ptx_for_each_architecture() {
    if !nvrtc() {
        return;
    }
    for arch in ["compute_61", "compute_75", "compute_80", "compute_86", "compute_89", "compute_90"]
    {
        let ptx = cuda::compile(arch).unwrap_or_else(|e| panic!("{e}"));
        let target = format!(".target sm_{}", &arch["compute_".len()..]);
        assert!(ptx.contains(&target), "{arch}: no `{target}`");
        for name in cuda::KERNEL_NAMES {
            let body = entry(&ptx, name);
            if name.ends_with("matmul") {
                // Four-way int8 dot products, and no fused multiply-add in the scaling: the
                // CPU rounds the product and the sum separately.
                assert!(body.contains("dp4a.s32.s32"), "{arch} {name}: no dp4a");
                assert!(!body.contains("fma.rn.f32"), "{arch} {name}: a contracted fma");
            }
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_reported_with_the_compiler_log() {
    if !nvrtc() {
        return;
    }
    let bad = "extern \"C\" __global__ void k(int* x) { x[0] = undeclared_name; }";
    let e = cuda::compile_source(bad, "compute_80").unwrap_err().to_string();
    assert!(e.contains("NVRTC for compute_80") && e.contains("undeclared_name"), "{e}");
}

struct Cuda(CudaDevice);

common::checks::device_over!(Cuda, onebit_gpu::cuda);

/// The first CUDA device, or `None` (with the reason) where there is no driver or device;
/// `ONEBIT_CUDA_REQUIRED=1` makes that a failure.
fn device() -> Option<Cuda> {
    match CudaDevice::open(0) {
        Ok(d) => {
            eprintln!("CUDA device: {} (compute {:?})", d.name(), d.capability());
            Some(Cuda(d))
        }
        Err(e @ Error::NoAdapter(_)) => {
            assert!(!required("ONEBIT_CUDA_REQUIRED"), "ONEBIT_CUDA_REQUIRED=1 but: {e}");
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn without_a_driver_opening_a_device_says_so() {
    if cuda::driver_present() {
        return;
    }
    match CudaDevice::open(0) {
        Err(Error::NoAdapter(m)) => assert!(m.contains("libcuda"), "{m}"),
        Err(e) => panic!("expected NoAdapter, got {e}"),
        Ok(_) => panic!("a device opened without a driver"),
    }
    assert!(cuda::devices().unwrap_err().contains("libcuda"));
}

common::checks::kernel_check_tests!(device);

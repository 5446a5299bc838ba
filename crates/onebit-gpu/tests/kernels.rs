//! Every WGSL kernel against the CPU (the checks in `common/checks.rs`, which the CUDA
//! kernels run too).

mod common;

use common::context;
use onebit_gpu::GpuContext;

struct Wgpu(GpuContext);

common::checks::device_over!(Wgpu, onebit_gpu::kernels);

fn device() -> Option<Wgpu> {
    context().map(Wgpu)
}

common::checks::kernel_check_tests!(device);

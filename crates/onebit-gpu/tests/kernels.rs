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

/// Both ternary kernels on every shape, whatever the token count would pick.
#[test]
fn row_and_tiled_ternary_kernels_are_each_bit_exact() {
    let Some(Wgpu(ctx)) = device() else { return };
    for tiled in [false, true] {
        let what = if tiled { " (tiled)" } else { " (rows)" };
        common::checks::ternary_bit_exact(
            |m, x| onebit_gpu::kernels::ternary_matmul_on(&ctx, m, x, tiled).unwrap(),
            what,
        );
    }
}

//! Every WGSL kernel against the CPU (the checks in `common/checks.rs`, which the CUDA
//! kernels run too).

mod common;

use common::checks::Device;
use common::context;
use onebit_gpu::{kernels, GpuContext};
use onebit_kernels::{ActQuant, Q8Matrix, TernaryMatrix};

struct Wgpu(GpuContext);

impl Device for Wgpu {
    fn ternary(&self, m: &TernaryMatrix, x: &ActQuant) -> Vec<f32> {
        kernels::ternary_matmul(&self.0, m, x).unwrap()
    }
    fn int8(&self, m: &Q8Matrix, x: &ActQuant) -> Vec<f32> {
        kernels::int8_matmul(&self.0, m, x).unwrap()
    }
    fn act_quant(
        &self,
        x: &[f32],
        cols: usize,
        norm: Option<(&[f32], f32)>,
    ) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
        kernels::act_quant(&self.0, x, cols, norm).unwrap()
    }
    fn argmax(&self, logits: &[f32], vocab: usize) -> Vec<u32> {
        kernels::argmax(&self.0, logits, vocab).unwrap()
    }
}

fn device() -> Option<Wgpu> {
    context().map(Wgpu)
}

common::checks::kernel_check_tests!(device);

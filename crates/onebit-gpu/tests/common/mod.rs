//! Shared by the GPU tests: the device, or a skip where there is none.

pub mod checks;

use onebit_gpu::{Error, GpuContext};

#[allow(dead_code)]
/// The device, or `None` (with a message) where wgpu finds no adapter at all. With
/// `ONEBIT_GPU_REQUIRED=1` (CI, which installs lavapipe) a missing adapter fails instead.
pub fn context() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(c) => Some(c),
        Err(e @ Error::NoAdapter(_)) => {
            if std::env::var("ONEBIT_GPU_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("ONEBIT_GPU_REQUIRED=1 but: {e}");
            }
            eprintln!("skipped: {e}");
            None
        }
        // An adapter that cannot compile the kernels is a failure, not a skip.
        Err(e) => panic!("{e}"),
    }
}

/// A xorshift stream for test data.
#[allow(dead_code)]
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A float in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

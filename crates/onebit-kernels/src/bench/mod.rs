//! Measurement helpers shared by `onebit bench-kernels` and the criterion benches: a
//! median timer and the machine's streaming-read bandwidth, the ceiling GEMV is judged by;
//! [`kernels`] is the kernel benchmark itself (`head.rs` its int8 head part).

mod head;
pub mod kernels;

use crate::pool::{split, ThreadPool};
use std::time::{Duration, Instant};

/// Runs `f` once to warm up, then at least `min_reps` times and until `budget` is spent
/// (at most `max_reps`); returns the sorted run times in seconds.
pub fn time_runs(
    min_reps: usize,
    max_reps: usize,
    budget: Duration,
    mut f: impl FnMut(),
) -> Vec<f64> {
    f();
    let start = Instant::now();
    let mut times = Vec::with_capacity(max_reps);
    while times.len() < min_reps || (times.len() < max_reps && start.elapsed() < budget) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times
}

/// Median of sorted times.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// A buffer far larger than the caches, written once so its pages are real memory.
pub struct ReadBuffer(Vec<u64>);

impl ReadBuffer {
    /// Allocates and fills `bytes` bytes.
    pub fn new(bytes: usize) -> Self {
        let n = bytes / 8;
        let mut v = Vec::with_capacity(n);
        v.extend((0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        ReadBuffer(v)
    }

    /// Bytes held.
    pub fn len_bytes(&self) -> usize {
        self.0.len() * 8
    }

    /// Best GB/s of `reps` reads of the whole buffer (after one warm-up): the ceiling a
    /// kernel's share of bandwidth is judged against, so the fastest run, not the median.
    pub fn read_gbs_best(&self, pool: &ThreadPool, reps: usize) -> f64 {
        let fastest = self.read_times(pool, reps).first().copied().unwrap_or(f64::NAN);
        self.len_bytes() as f64 / fastest / 1e9
    }

    /// Median GB/s of reading the whole buffer once, split over the pool's threads.
    pub fn read_gbs(&self, pool: &ThreadPool, reps: usize) -> f64 {
        self.len_bytes() as f64 / median(&self.read_times(pool, reps)) / 1e9
    }

    /// Sorted seconds of `reps` whole-buffer reads.
    fn read_times(&self, pool: &ThreadPool, reps: usize) -> Vec<f64> {
        let threads = pool.threads();
        let sink = std::sync::atomic::AtomicU64::new(0);
        let times = time_runs(reps, reps, Duration::ZERO, || {
            pool.run(&|i| {
                // One sequential stream per thread. Four streams a thread (the AVX-512 row
                // kernels' four rows at once, which the probe mimicked until 2026-12-07) read
                // 11 GB/s on one Zen 4 thread where one stream read 29-30: a bound must be
                // the memory's, not one access pattern's.
                let part = &self.0[split(self.0.len(), threads, i, 256)];
                let mut acc = [0u64; 8];
                for a in part.chunks_exact(8) {
                    for j in 0..8 {
                        acc[j] = acc[j].wrapping_add(a[j]);
                    }
                }
                sink.fetch_add(
                    acc.iter().fold(0, |a, &b| a.wrapping_add(b)),
                    std::sync::atomic::Ordering::Relaxed,
                );
            })
        });
        std::hint::black_box(sink.load(std::sync::atomic::Ordering::Relaxed));
        times
    }
}

/// The CPU's model name (from /proc/cpuinfo on Linux), for benchmark records.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 5.0]), 2.5);
    }

    #[test]
    fn time_runs_respects_bounds() {
        let mut n = 0;
        let t = time_runs(3, 5, Duration::from_secs(10), || n += 1);
        assert_eq!(t.len(), 5);
        assert_eq!(n, 6);
    }

    #[test]
    fn bandwidth_is_positive() {
        let b = ReadBuffer::new(1 << 20);
        assert!(b.read_gbs(&ThreadPool::new(2), 2) > 0.0);
    }
}

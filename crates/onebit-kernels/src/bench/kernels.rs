//! The kernel benchmark behind `onebit bench-kernels`: ternary GEMV/GEMM against dense f32 and
//! f16 on given shapes and thread counts, with the machine's read bandwidth measured in the
//! same run. Ternary timings include quantizing the activations (the dense baselines take
//! f32/f16 activations as they are). Results arrive as [`KernelBenchEvent`]s so the caller
//! decides how to print them.

pub use super::head::HeadRecord;
use super::{median, time_runs, ReadBuffer};
use crate::{
    dense, matmul, ActQuant, Error, Isa, Kernel, Result, TernaryFormat, TernaryMatrix, ThreadPool,
};
use half::f16;
use std::cell::Cell;
use std::time::Duration;

/// (rows, cols) of BitNet b1.58 2B4T's linears and a 70B FFN: the default shapes.
pub const DEFAULT_SHAPES: [(usize, usize); 5] =
    [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912), (8192, 28672)];

/// What to measure.
#[derive(Clone, Debug)]
pub struct KernelBenchConfig {
    /// (rows, cols) of each weight matrix.
    pub shapes: Vec<(usize, usize)>,
    /// Thread counts, one pool each.
    pub threads: Vec<usize>,
    /// Token counts: 1 runs the GEMV path, more the GEMM path.
    pub tokens: Vec<usize>,
    /// Ternary layouts to run.
    pub formats: Vec<TernaryFormat>,
    /// Every non-scalar ISA's kernel rather than the best one per layout.
    pub all_kernels: bool,
    /// Include the lookup-table layout in GEMM runs (it loops its GEMV per token).
    pub lut_gemm: bool,
    /// Measure the dense f32/f16 baselines.
    pub dense: bool,
    /// Minimum timed runs per measurement (the median is reported).
    pub reps: usize,
    /// Size of the streaming-read buffer for the bandwidth figure, MiB (0 skips it).
    pub bandwidth_mib: usize,
    /// Rotate over copies of the weights covering this many MiB so that runs read them from
    /// memory as a model's decode step does (0: one copy, cache-hot).
    pub rotate_mib: usize,
    /// Time spent per measurement beyond the minimum runs.
    pub budget: Duration,
    /// (vocabulary rows, hidden cols) of int8 heads to time after the ternary shapes.
    pub heads: Vec<(usize, usize)>,
}

impl Default for KernelBenchConfig {
    fn default() -> Self {
        KernelBenchConfig {
            shapes: DEFAULT_SHAPES.to_vec(),
            threads: vec![1, 2],
            tokens: vec![1, 64, 512],
            formats: vec![TernaryFormat::T2, TernaryFormat::B3, TernaryFormat::Lut],
            all_kernels: false,
            lut_gemm: false,
            dense: true,
            reps: 5,
            bandwidth_mib: 1024,
            rotate_mib: 1024,
            budget: Duration::from_millis(700),
            heads: Vec::new(),
        }
    }
}

/// One ternary kernel measured on one shape, token count and thread count.
#[derive(Clone, Debug)]
pub struct KernelRecord {
    /// Weight rows.
    pub rows: usize,
    /// Weight columns.
    pub cols: usize,
    /// Tokens per call (1: GEMV).
    pub tokens: usize,
    /// Threads in the pool.
    pub threads: usize,
    /// The kernel that ran.
    pub kernel: Kernel,
    /// Its layout.
    pub format: TernaryFormat,
    /// Bits per weight of the layout.
    pub bits_per_weight: f64,
    /// Packed weight bytes read per call.
    pub weight_bytes: usize,
    /// Median seconds per call.
    pub median_s: f64,
    /// Timed runs behind the median.
    pub runs: usize,
    /// Weight bytes per second over the measured read bandwidth, in percent (NaN without it).
    pub pct_read_bw: f64,
    /// Dense f32 median for the same operation (NaN when not measured).
    pub f32_median_s: f64,
    /// Dense f16 median for the same operation (NaN when not measured).
    pub f16_median_s: f64,
}

impl KernelRecord {
    /// Multiply-accumulates per second, in billions.
    pub fn gmacs(&self) -> f64 {
        (self.rows * self.cols * self.tokens) as f64 / self.median_s / 1e9
    }

    /// Packed weight bytes read per second, in GB.
    pub fn weight_gbs(&self) -> f64 {
        self.weight_bytes as f64 / self.median_s / 1e9
    }
}

/// What the benchmark reports, in the order it measures.
#[derive(Clone, Debug)]
pub enum KernelBenchEvent {
    /// The machine's streaming-read bandwidth with one pool.
    Bandwidth {
        /// Threads in the pool.
        threads: usize,
        /// GB per second.
        read_gbs: f64,
        /// Bytes streamed per run.
        bytes: usize,
    },
    /// One ternary kernel measured.
    Kernel(KernelRecord),
    /// The dense baselines of one shape, token count and thread count.
    Dense {
        /// Weight rows.
        rows: usize,
        /// Weight columns.
        cols: usize,
        /// Tokens per call.
        tokens: usize,
        /// Threads in the pool.
        threads: usize,
        /// Median seconds of the f32 call.
        f32_median_s: f64,
        /// Median seconds of the f16 call.
        f16_median_s: f64,
    },
    /// One int8 head matmul measured.
    Head(HeadRecord),
}

/// Copies of one operand, handed out in turn so that consecutive runs touch different memory.
struct Rotating<T> {
    copies: Vec<T>,
    next: Cell<usize>,
}

impl<T: Clone> Rotating<T> {
    fn new(first: T, bytes: usize, cover: usize) -> Self {
        let n = if bytes == 0 { 1 } else { cover.div_ceil(bytes).max(1) };
        let mut copies = Vec::with_capacity(n);
        for _ in 1..n {
            copies.push(first.clone());
        }
        copies.push(first);
        Rotating { copies, next: Cell::new(0) }
    }

    fn first(&self) -> &T {
        &self.copies[0]
    }

    fn get(&self) -> &T {
        let i = self.next.get();
        self.next.set((i + 1) % self.copies.len());
        &self.copies[i]
    }
}

/// Dense weights of one shape, f32 and f16, each rotating.
struct DenseWeights {
    f32_w: Rotating<Vec<f32>>,
    f16_w: Rotating<Vec<f16>>,
}

/// A small xorshift so that every run of the benchmark measures the same numbers.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check(cfg: &KernelBenchConfig) -> Result<()> {
    let bad = |what| Err(Error::BenchConfig(what));
    if cfg.threads.is_empty() || cfg.threads.contains(&0) {
        return bad("thread counts must be at least 1");
    }
    if cfg.tokens.is_empty() || cfg.tokens.contains(&0) {
        return bad("token counts must be positive");
    }
    if cfg.shapes.iter().chain(&cfg.heads).any(|&(r, c)| r == 0 || c == 0) {
        return bad("shapes must have positive rows and cols");
    }
    if cfg.reps == 0 {
        return bad("at least one timed run is needed");
    }
    Ok(())
}

/// Runs the benchmark, handing each result to `report` as soon as it is measured.
pub fn run_kernel_bench(
    cfg: &KernelBenchConfig,
    mut report: impl FnMut(KernelBenchEvent),
) -> Result<()> {
    check(cfg)?;
    let pools: Vec<ThreadPool> = cfg.threads.iter().map(|&t| ThreadPool::new(t)).collect();
    let mut read_gbs = vec![f64::NAN; pools.len()];
    if cfg.bandwidth_mib > 0 {
        let buf = ReadBuffer::new(cfg.bandwidth_mib << 20);
        for (pool, gbs) in pools.iter().zip(&mut read_gbs) {
            *gbs = buf.read_gbs(pool, 5);
            report(KernelBenchEvent::Bandwidth {
                threads: pool.threads(),
                read_gbs: *gbs,
                bytes: buf.len_bytes(),
            });
        }
    }
    for &(rows, cols) in &cfg.shapes {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1Du64 ^ (rows * 31 + cols) as u64);
        let trits: Vec<i8> = (0..rows * cols).map(|_| (rng.next() % 3) as i8 - 1).collect();
        let scale = 0.02f32;
        let cover = cfg.rotate_mib << 20;
        let mats = cfg
            .formats
            .iter()
            .map(|&f| {
                let m = TernaryMatrix::from_trits(f, rows, cols, &trits, scale)?;
                let bytes = m.bytes().len();
                Ok(Rotating::new(m, bytes, cover))
            })
            .collect::<Result<Vec<_>>>()?;
        let dense = cfg.dense.then(|| {
            let f32_w: Vec<f32> = trits.iter().map(|&t| t as f32 * scale).collect();
            let f16_w: Vec<f16> = f32_w.iter().map(|&v| f16::from_f32(v)).collect();
            DenseWeights {
                f32_w: Rotating::new(f32_w, rows * cols * 4, cover),
                f16_w: Rotating::new(f16_w, rows * cols * 2, cover),
            }
        });
        drop(trits);
        for (pool, &bw) in pools.iter().zip(&read_gbs) {
            for &tokens in &cfg.tokens {
                let x: Vec<f32> =
                    (0..tokens * cols).map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0).collect();
                let shape = Shape { rows, cols, tokens };
                let (f32_s, f16_s) = match &dense {
                    None => (f64::NAN, f64::NAN),
                    Some(d) => time_dense(cfg, pool, d, shape, &x),
                };
                for rot in &mats {
                    let m = rot.first();
                    if m.format() == TernaryFormat::Lut && tokens > 1 && !cfg.lut_gemm {
                        continue;
                    }
                    let kernels: Vec<Kernel> = if cfg.all_kernels {
                        Kernel::available(m.format())
                            .into_iter()
                            .filter(|k| k.isa() != Isa::Scalar)
                            .collect()
                    } else {
                        vec![Kernel::best(m.format())?]
                    };
                    for kernel in kernels {
                        let times = time_ternary(cfg, pool, &kernel, rot, shape, &x)?;
                        let mut rec = KernelRecord {
                            rows,
                            cols,
                            tokens,
                            threads: pool.threads(),
                            kernel,
                            format: m.format(),
                            bits_per_weight: m.bits_per_weight(),
                            weight_bytes: m.bytes().len(),
                            median_s: median(&times),
                            runs: times.len(),
                            pct_read_bw: f64::NAN,
                            f32_median_s: f32_s,
                            f16_median_s: f16_s,
                        };
                        rec.pct_read_bw = 100.0 * rec.weight_gbs() / bw;
                        report(KernelBenchEvent::Kernel(rec));
                    }
                }
                if dense.is_some() {
                    report(KernelBenchEvent::Dense {
                        rows,
                        cols,
                        tokens,
                        threads: pool.threads(),
                        f32_median_s: f32_s,
                        f16_median_s: f16_s,
                    });
                }
            }
        }
    }
    super::head::run_heads(cfg, &pools, &read_gbs, &mut report)
}

#[derive(Clone, Copy)]
struct Shape {
    rows: usize,
    cols: usize,
    tokens: usize,
}

/// Median seconds of the dense f32 and f16 baselines for one shape.
fn time_dense(
    cfg: &KernelBenchConfig,
    pool: &ThreadPool,
    d: &DenseWeights,
    s: Shape,
    x: &[f32],
) -> (f64, f64) {
    let Shape { rows, cols, tokens } = s;
    let nt = pool.threads();
    let mut out = vec![0f32; tokens * rows];
    let t32 = if tokens == 1 {
        time_runs(cfg.reps, 50, cfg.budget, || {
            dense::gemv_f32(pool, d.f32_w.get(), rows, cols, x, &mut out)
        })
    } else {
        time_runs(cfg.reps.min(3), 20, cfg.budget, || {
            dense::gemm_f32(nt, d.f32_w.get(), rows, cols, x, tokens, &mut out)
        })
    };
    let t16 = if tokens == 1 {
        time_runs(cfg.reps, 50, cfg.budget, || {
            dense::gemv_f16(pool, d.f16_w.get(), rows, cols, x, &mut out)
        })
    } else {
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let mut oh = vec![f16::ZERO; tokens * rows];
        time_runs(cfg.reps.min(3), 20, cfg.budget, || {
            dense::gemm_f16(nt, d.f16_w.get(), rows, cols, &xh, tokens, &mut oh)
        })
    };
    (median(&t32), median(&t16))
}

/// Sorted run times of one ternary kernel, activation quantization included.
fn time_ternary(
    cfg: &KernelBenchConfig,
    pool: &ThreadPool,
    kernel: &Kernel,
    weights: &Rotating<TernaryMatrix>,
    s: Shape,
    x: &[f32],
) -> Result<Vec<f64>> {
    let mut xq = ActQuant::new(s.tokens, s.cols);
    let mut out = vec![0f32; s.tokens * s.rows];
    // One checked call first: the timed closure cannot return the error.
    xq.quantize_par(x, pool);
    matmul(pool, kernel, weights.first(), &xq, &mut out)?;
    let mut failed = None;
    let times = time_runs(cfg.reps, 200, cfg.budget, || {
        xq.quantize_par(x, pool);
        if let Err(e) = matmul(pool, kernel, weights.get(), &xq, &mut out) {
            failed = Some(e);
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(times),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> KernelBenchConfig {
        KernelBenchConfig {
            shapes: vec![(40, 300)],
            threads: vec![1, 2],
            tokens: vec![1, 3],
            reps: 1,
            bandwidth_mib: 1,
            rotate_mib: 0,
            budget: Duration::ZERO,
            ..KernelBenchConfig::default()
        }
    }

    #[test]
    fn reports_every_layout_thread_and_token_count() {
        let mut events = Vec::new();
        run_kernel_bench(&tiny(), |e| events.push(e)).unwrap();
        let bw = events.iter().filter(|e| matches!(e, KernelBenchEvent::Bandwidth { .. })).count();
        assert_eq!(bw, 2);
        let recs: Vec<&KernelRecord> = events
            .iter()
            .filter_map(|e| match e {
                KernelBenchEvent::Kernel(r) => Some(r),
                _ => None,
            })
            .collect();
        // t2 and b3 at 1 and 3 tokens, lut only at 1 token (no --lut-gemm): 5 per pool.
        assert_eq!(recs.len(), 10);
        for r in &recs {
            assert!(r.median_s > 0.0 && r.gmacs().is_finite());
            assert!(r.f32_median_s > 0.0 && r.f16_median_s > 0.0);
            assert_eq!(r.kernel.format(), r.format);
        }
        assert!(!recs.iter().any(|r| r.format == TernaryFormat::Lut && r.tokens > 1));
        let dense = events.iter().filter(|e| matches!(e, KernelBenchEvent::Dense { .. })).count();
        assert_eq!(dense, 4);
    }

    #[test]
    fn reports_heads_per_thread_and_token_count() {
        let cfg = KernelBenchConfig { shapes: vec![], heads: vec![(100, 96)], ..tiny() };
        let mut heads = Vec::new();
        run_kernel_bench(&cfg, |e| {
            if let KernelBenchEvent::Head(r) = e {
                heads.push(r)
            }
        })
        .unwrap();
        // Two pools x two token counts.
        assert_eq!(heads.len(), 4);
        for r in &heads {
            assert!((r.rows, r.cols) == (100, 96) && r.median_s > 0.0 && r.gmacs().is_finite());
            assert!(r.weight_bytes >= 100 * 96);
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        for cfg in [
            KernelBenchConfig { threads: vec![0], ..tiny() },
            KernelBenchConfig { tokens: vec![], ..tiny() },
            KernelBenchConfig { shapes: vec![(0, 4)], ..tiny() },
            KernelBenchConfig { reps: 0, ..tiny() },
            KernelBenchConfig { heads: vec![(8, 0)], ..tiny() },
        ] {
            assert!(run_kernel_bench(&cfg, |_| {}).is_err());
        }
    }
}

//! The head part of `onebit bench-kernels --head RxC`: the int8 lm_head matmul
//! ([`crate::head::q8_matmul`]) on a vocabulary-sized matrix, per token count and thread
//! count, at the process's head ISA (tiles at [`Isa::selected`], one-token rows at
//! [`Isa::rows`]) or, with `all_kernels`, at every x86 ISA this CPU has. At batched decode the
//! head is a large share of a step (2B4T at 16 sequences on AVX2: a quarter of it).

use super::kernels::{KernelBenchConfig, KernelBenchEvent};
use super::{median, time_runs};
use crate::head::{q8_matmul, q8_matmul_on};
use crate::{ActQuant, CpuFeatures, Isa, Q8Matrix, Result, ThreadPool};

/// One head matmul measured on one shape, token count and thread count.
#[derive(Clone, Debug)]
pub struct HeadRecord {
    /// Vocabulary rows.
    pub rows: usize,
    /// Hidden columns.
    pub cols: usize,
    /// Tokens per call.
    pub tokens: usize,
    /// Threads in the pool.
    pub threads: usize,
    /// The ISA of the tiles (several tokens) and of the one-token rows, e.g. `avx512+rows-avx2`.
    pub isa: String,
    /// Int8 weight bytes read per call.
    pub weight_bytes: usize,
    /// Median seconds per call (activation quantization included).
    pub median_s: f64,
    /// Timed runs behind the median.
    pub runs: usize,
    /// Weight bytes per second over the measured read bandwidth, in percent (NaN without it).
    pub pct_read_bw: f64,
}

impl HeadRecord {
    /// Multiply-accumulates per second, in billions.
    pub fn gmacs(&self) -> f64 {
        (self.rows * self.cols * self.tokens) as f64 / self.median_s / 1e9
    }

    /// Weight bytes per second, in GB.
    pub fn weight_gbs(&self) -> f64 {
        self.weight_bytes as f64 / self.median_s / 1e9
    }
}

/// Measures every head shape of `cfg` on each pool (`read_gbs`: each pool's bandwidth).
pub(super) fn run_heads(
    cfg: &KernelBenchConfig,
    pools: &[ThreadPool],
    read_gbs: &[f64],
    report: &mut impl FnMut(KernelBenchEvent),
) -> Result<()> {
    for &(rows, cols) in &cfg.heads {
        // A deterministic spread of int8 values (the head is one copy: 128k x 2560 is 328 MB,
        // larger than any last-level cache already).
        let m = Q8Matrix::from_row_fn(rows, cols, |r, row| {
            for (i, v) in row.iter_mut().enumerate() {
                *v = ((r * 31 + i * 17) % 255) as f32 / 64.0 - 2.0;
            }
        });
        // Every x86 head kernel this CPU has, or the process's choice (also where there is none
        // but the scalar one, as on ARM).
        let mut isas: Vec<Option<Isa>> = [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| cfg.all_kernels && CpuFeatures::get().has(i))
            .map(Some)
            .collect();
        if isas.is_empty() {
            isas.push(None);
        }
        for (pool, &bw) in pools.iter().zip(read_gbs) {
            for &tokens in &cfg.tokens {
                let x: Vec<f32> =
                    (0..tokens * cols).map(|i| (i * 13 % 101) as f32 / 50.0 - 1.0).collect();
                let mut xq = ActQuant::new(tokens, cols);
                let mut out = vec![0f32; tokens * rows];
                for &isa in &isas {
                    let call = |xq: &mut ActQuant, out: &mut [f32]| {
                        xq.quantize_par(&x, pool);
                        match isa {
                            Some(isa) => q8_matmul_on(pool, isa, &m, xq, out),
                            None => q8_matmul(pool, &m, xq, out),
                        }
                    };
                    // One checked call first: the timed closure cannot return the error.
                    call(&mut xq, &mut out)?;
                    let times = time_runs(cfg.reps, 100, cfg.budget, || {
                        let _ = call(&mut xq, &mut out);
                    });
                    let name = match isa {
                        Some(i) => i.name().to_string(),
                        None if Isa::rows() == Isa::selected() => {
                            Isa::selected().name().to_string()
                        }
                        None => format!("{}+rows-{}", Isa::selected().name(), Isa::rows().name()),
                    };
                    let mut rec = HeadRecord {
                        rows,
                        cols,
                        tokens,
                        threads: pool.threads(),
                        isa: name,
                        weight_bytes: m.bytes(),
                        median_s: median(&times),
                        runs: times.len(),
                        pct_read_bw: f64::NAN,
                    };
                    rec.pct_read_bw = 100.0 * rec.weight_gbs() / bw;
                    report(KernelBenchEvent::Head(rec));
                }
            }
        }
    }
    Ok(())
}

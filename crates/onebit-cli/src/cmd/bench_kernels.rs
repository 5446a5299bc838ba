//! `onebit bench-kernels`: ternary GEMV/GEMM against dense f32 and f16 on the BitNet 2B4T
//! and a 70B shape, at 1 and 2 threads, with the machine's read bandwidth measured in the
//! same run. Ternary timings include quantizing the activations (the dense baselines take
//! f32/f16 activations as they are).

use anyhow::{bail, Context, Result};
use half::f16;
use onebit_kernels::bench::{cpu_model, median, time_runs, ReadBuffer};
use onebit_kernels::{
    dense, matmul, ActQuant, CpuFeatures, Isa, Kernel, TernaryFormat, TernaryMatrix, ThreadPool,
};
use serde_json::json;
use std::time::Duration;

/// Default shapes: (rows, cols) of BitNet b1.58 2B4T's linears and a 70B FFN.
const SHAPES: [(usize, usize); 5] =
    [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912), (8192, 28672)];

/// Flags of `onebit bench-kernels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this shape, rows x cols (repeatable), e.g. --shape 2560x6912.
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(usize, usize)>,
    /// Only this thread count (default: 1 and 2).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Token counts: 1 runs the GEMV path, more the GEMM path.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64, 512])]
    tokens: Vec<usize>,
    /// Layouts to run (t2, b3, lut, or any format name).
    #[arg(long, value_delimiter = ',', default_values_t = ["t2".to_string(), "b3".into(), "lut".into()])]
    formats: Vec<String>,
    /// Run every ISA's kernel, not only the best one per layout (scalar excluded).
    #[arg(long)]
    all_kernels: bool,
    /// Include the lookup-table layout in GEMM runs (it loops its GEMV per token).
    #[arg(long)]
    lut_gemm: bool,
    /// Skip the dense f32/f16 baselines.
    #[arg(long)]
    no_dense: bool,
    /// Minimum timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Size of the streaming-read buffer for the bandwidth figure, MiB.
    #[arg(long, default_value_t = 1024)]
    bandwidth_mib: usize,
    /// Each timed run reads the next of several copies of the weights, enough copies to cover
    /// this many MiB, so weights come from memory as in a model's decode step rather than from
    /// the last-level cache (0 = one copy, cache-hot).
    #[arg(long, default_value_t = 1024)]
    rotate_mib: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Parses `RxC`.
pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (r, c) = s.split_once(['x', 'X']).ok_or_else(|| format!("shape '{s}' is not ROWSxCOLS"))?;
    let p = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match (p(r), p(c)) {
        (Some(r), Some(c)) => Ok((r, c)),
        _ => Err(format!("shape '{s}': rows and cols must be positive integers")),
    }
}

struct Dense {
    f32_w: Rotating<Vec<f32>>,
    f16_w: Rotating<Vec<f16>>,
}

/// Copies of one operand, handed out in turn so that consecutive runs touch different memory.
struct Rotating<T> {
    copies: Vec<T>,
    next: std::cell::Cell<usize>,
}

impl<T: Clone> Rotating<T> {
    fn new(first: T, bytes: usize, cover: usize) -> Self {
        let n = if bytes == 0 { 1 } else { cover.div_ceil(bytes).max(1) };
        let mut copies = Vec::with_capacity(n);
        for _ in 1..n {
            copies.push(first.clone());
        }
        copies.push(first);
        Rotating { copies, next: std::cell::Cell::new(0) }
    }

    fn get(&self) -> &T {
        let i = self.next.get();
        self.next.set((i + 1) % self.copies.len());
        &self.copies[i]
    }
}

/// Runs `onebit bench-kernels`.
pub fn run(a: Args) -> Result<()> {
    let shapes = if a.shapes.is_empty() { SHAPES.to_vec() } else { a.shapes.clone() };
    let threads = match a.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => vec![t],
        None => vec![1, 2],
    };
    let formats = a
        .formats
        .iter()
        .map(|f| TernaryFormat::from_name(f).with_context(|| format!("unknown format '{f}'")))
        .collect::<Result<Vec<_>>>()?;
    if a.tokens.contains(&0) {
        bail!("--tokens must be positive");
    }
    let cpu = cpu_model();
    let features = CpuFeatures::get().summary();
    if a.json {
        println!(
            "{}",
            json!({"op": "machine", "cpu": cpu, "features": features, "os": std::env::consts::OS, "rotate_mib": a.rotate_mib})
        );
    } else {
        println!("cpu: {cpu}\nfeatures: {features}");
        if a.rotate_mib > 0 {
            println!(
                "weights rotate over copies covering {} MiB (cold, from memory)",
                a.rotate_mib
            );
        } else {
            println!("one copy of the weights (cache-hot)");
        }
    }
    let buf = ReadBuffer::new(a.bandwidth_mib << 20);
    let pools: Vec<ThreadPool> = threads.iter().map(|&t| ThreadPool::new(t)).collect();
    let mut read_gbs = Vec::new();
    for pool in &pools {
        let gbs = buf.read_gbs(pool, 5);
        read_gbs.push(gbs);
        if a.json {
            println!(
                "{}",
                json!({"op": "bandwidth", "threads": pool.threads(), "read_gbs": gbs, "bytes": buf.len_bytes()})
            );
        } else {
            println!(
                "read bandwidth, {} thread(s): {gbs:.1} GB/s ({} MiB streamed)",
                pool.threads(),
                a.bandwidth_mib
            );
        }
    }
    drop(buf);
    if !a.json {
        println!(
            "\n{:<5} {:>11} {:>4} {:>3} {:<18} {:>11} {:>8} {:>8} {:>6} {:>7} {:>7}",
            "op",
            "rows x cols",
            "tok",
            "thr",
            "kernel",
            "median us",
            "GMAC/s",
            "w GB/s",
            "%bw",
            "vs f32",
            "vs f16"
        );
    }
    let budget = Duration::from_millis(700);
    for &(rows, cols) in &shapes {
        let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ (rows * 31 + cols) as u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let trits: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let scale = 0.02f32;
        let cover = a.rotate_mib << 20;
        let mats: Vec<Rotating<TernaryMatrix>> = formats
            .iter()
            .map(|&f| {
                let m = TernaryMatrix::from_trits(f, rows, cols, &trits, scale)?;
                let bytes = m.bytes().len();
                Ok(Rotating::new(m, bytes, cover))
            })
            .collect::<onebit_kernels::Result<_>>()?;
        let dense = (!a.no_dense).then(|| {
            let f32_w: Vec<f32> = trits.iter().map(|&t| t as f32 * scale).collect();
            let f16_w: Vec<f16> = f32_w.iter().map(|&v| f16::from_f32(v)).collect();
            Dense {
                f32_w: Rotating::new(f32_w, rows * cols * 4, cover),
                f16_w: Rotating::new(f16_w, rows * cols * 2, cover),
            }
        });
        drop(trits);
        for (pi, pool) in pools.iter().enumerate() {
            let nt = pool.threads();
            for &tokens in &a.tokens {
                let x: Vec<f32> =
                    (0..tokens * cols).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
                let mut out = vec![0f32; tokens * rows];
                let (f32_s, f16_s) = match &dense {
                    None => (f64::NAN, f64::NAN),
                    Some(d) => {
                        let t32 = if tokens == 1 {
                            time_runs(a.reps, 50, budget, || {
                                dense::gemv_f32(pool, d.f32_w.get(), rows, cols, &x, &mut out)
                            })
                        } else {
                            time_runs(a.reps.min(3), 20, budget, || {
                                dense::gemm_f32(nt, d.f32_w.get(), rows, cols, &x, tokens, &mut out)
                            })
                        };
                        let t16 = if tokens == 1 {
                            time_runs(a.reps, 50, budget, || {
                                dense::gemv_f16(pool, d.f16_w.get(), rows, cols, &x, &mut out)
                            })
                        } else {
                            let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                            let mut oh = vec![f16::ZERO; tokens * rows];
                            time_runs(a.reps.min(3), 20, budget, || {
                                dense::gemm_f16(nt, d.f16_w.get(), rows, cols, &xh, tokens, &mut oh)
                            })
                        };
                        (median(&t32), median(&t16))
                    }
                };
                let op = if tokens == 1 { "gemv" } else { "gemm" };
                for rot in &mats {
                    let m = &rot.copies[0];
                    if m.format() == TernaryFormat::Lut && tokens > 1 && !a.lut_gemm {
                        continue;
                    }
                    let kernels: Vec<Kernel> = if a.all_kernels {
                        Kernel::available(m.format())
                            .into_iter()
                            .filter(|k| k.isa() != Isa::Scalar)
                            .collect()
                    } else {
                        vec![Kernel::best(m.format())?]
                    };
                    let mut xq = ActQuant::new(tokens, cols);
                    for k in kernels {
                        let times = time_runs(a.reps, 200, budget, || {
                            xq.quantize_par(&x, pool);
                            matmul(pool, &k, rot.get(), &xq, &mut out).expect("operands checked");
                        });
                        let med = median(&times);
                        let macs = (rows * cols * tokens) as f64;
                        let gmacs = macs / med / 1e9;
                        let weight_gbs = m.bytes().len() as f64 / med / 1e9;
                        let pct_bw = 100.0 * weight_gbs / read_gbs[pi];
                        if a.json {
                            println!(
                                "{}",
                                json!({
                                    "op": op, "rows": rows, "cols": cols, "tokens": tokens, "threads": nt,
                                    "kernel": k.name(), "format": m.format().name(), "isa": k.isa().name(),
                                    "bpw": m.bits_per_weight(), "weight_bytes": m.bytes().len(),
                                    "gmacs": gmacs, "weight_gbs": weight_gbs, "pct_read_bw": pct_bw,
                                    "median_s": med, "runs": times.len(),
                                    "f32_median_s": f32_s, "speedup_vs_f32": f32_s / med,
                                    "f16_median_s": f16_s, "speedup_vs_f16": f16_s / med,
                                })
                            );
                        } else {
                            println!(
                                "{:<5} {:>11} {:>4} {:>3} {:<18} {:>11.1} {:>8.1} {:>8.2} {:>5.0}% {:>6.1}x {:>6.1}x",
                                op,
                                format!("{rows}x{cols}"),
                                tokens,
                                nt,
                                k.name(),
                                med * 1e6,
                                gmacs,
                                weight_gbs,
                                pct_bw,
                                f32_s / med,
                                f16_s / med
                            );
                        }
                    }
                }
                if !a.json && dense.is_some() {
                    let macs = (rows * cols * tokens) as f64;
                    println!(
                        "{:<5} {:>11} {:>4} {:>3} {:<18} {:>11.1} {:>8.1}   (f16 {:.1} us, {:.1} GMAC/s)",
                        op,
                        format!("{rows}x{cols}"),
                        tokens,
                        nt,
                        "dense/f32",
                        f32_s * 1e6,
                        macs / f32_s / 1e9,
                        f16_s * 1e6,
                        macs / f16_s / 1e9
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_reject() {
        assert_eq!(parse_shape("2560x6912"), Ok((2560, 6912)));
        assert_eq!(parse_shape("8X4"), Ok((8, 4)));
        assert!(parse_shape("2560").is_err());
        assert!(parse_shape("0x5").is_err());
        assert!(parse_shape("ax5").is_err());
    }

    #[test]
    fn flags_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        let t = T::try_parse_from([
            "x",
            "--shape",
            "64x256",
            "--threads",
            "2",
            "--tokens",
            "1,4",
            "--json",
        ])
        .unwrap();
        assert_eq!(t.a.shapes, vec![(64, 256)]);
        assert_eq!(t.a.tokens, vec![1, 4]);
        assert!(t.a.json);
        assert!(T::try_parse_from(["x", "--shape", "64"]).is_err());
    }
}

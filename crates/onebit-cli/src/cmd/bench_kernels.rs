//! `onebit bench-kernels`: flags and printing around
//! [`onebit_kernels::bench::kernels`], which measures ternary GEMV/GEMM against dense f32 and
//! f16 (default: the BitNet 2B4T shapes and a 70B FFN, at 1 and 2 threads).

use anyhow::{Context, Result};
use onebit_kernels::bench::cpu_model;
use onebit_kernels::bench::kernels::{
    run_kernel_bench, KernelBenchConfig, KernelBenchEvent, KernelRecord, DEFAULT_SHAPES,
};
use onebit_kernels::{CpuFeatures, TernaryFormat};
use serde_json::json;

/// Flags of `onebit bench-kernels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this shape, rows x cols (repeatable), e.g. --shape 2560x6912.
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(usize, usize)>,
    /// Also time the int8 lm_head on this shape, vocabulary x hidden (repeatable), e.g.
    /// --head 128256x2560; given alone, only heads run.
    #[arg(long = "head", value_parser = parse_shape)]
    heads: Vec<(usize, usize)>,
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

impl Args {
    fn config(&self) -> Result<KernelBenchConfig> {
        let formats = self
            .formats
            .iter()
            .map(|f| TernaryFormat::from_name(f).with_context(|| format!("unknown format '{f}'")))
            .collect::<Result<Vec<_>>>()?;
        Ok(KernelBenchConfig {
            shapes: if self.shapes.is_empty() && self.heads.is_empty() {
                DEFAULT_SHAPES.to_vec()
            } else {
                self.shapes.clone()
            },
            threads: self.threads.map_or(vec![1, 2], |t| vec![t]),
            tokens: self.tokens.clone(),
            formats,
            all_kernels: self.all_kernels,
            lut_gemm: self.lut_gemm,
            dense: !self.no_dense,
            reps: self.reps,
            bandwidth_mib: self.bandwidth_mib,
            rotate_mib: self.rotate_mib,
            heads: self.heads.clone(),
            ..KernelBenchConfig::default()
        })
    }
}

/// Runs `onebit bench-kernels`.
pub fn run(a: Args) -> Result<()> {
    let cfg = a.config()?;
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
    let mut header_done = false;
    run_kernel_bench(&cfg, |event| {
        if a.json {
            // The dense figures already ride on each kernel's line.
            if let Some(line) = event_json(&event) {
                println!("{line}");
            }
            return;
        }
        if !header_done && !matches!(event, KernelBenchEvent::Bandwidth { .. }) {
            print_header();
            header_done = true;
        }
        print_row(&event);
    })?;
    Ok(())
}

fn event_json(event: &KernelBenchEvent) -> Option<serde_json::Value> {
    Some(match event {
        KernelBenchEvent::Bandwidth { threads, read_gbs, bytes } => {
            json!({"op": "bandwidth", "threads": threads, "read_gbs": read_gbs, "bytes": bytes})
        }
        KernelBenchEvent::Kernel(r) => json!({
            "op": op_name(r.tokens), "rows": r.rows, "cols": r.cols, "tokens": r.tokens,
            "threads": r.threads, "kernel": r.kernel.name(), "format": r.format.name(),
            "isa": r.kernel.isa().name(), "bpw": r.bits_per_weight, "weight_bytes": r.weight_bytes,
            "gmacs": r.gmacs(), "weight_gbs": r.weight_gbs(), "pct_read_bw": r.pct_read_bw,
            "median_s": r.median_s, "runs": r.runs,
            "f32_median_s": r.f32_median_s, "speedup_vs_f32": r.f32_median_s / r.median_s,
            "f16_median_s": r.f16_median_s, "speedup_vs_f16": r.f16_median_s / r.median_s,
        }),
        KernelBenchEvent::Dense { .. } => return None,
        KernelBenchEvent::Head(h) => json!({
            "op": "head", "rows": h.rows, "cols": h.cols, "tokens": h.tokens, "threads": h.threads,
            "kernel": format!("q8/{}", h.isa), "weight_bytes": h.weight_bytes, "gmacs": h.gmacs(),
            "weight_gbs": h.weight_gbs(), "pct_read_bw": h.pct_read_bw, "median_s": h.median_s,
            "runs": h.runs,
        }),
    })
}

fn op_name(tokens: usize) -> &'static str {
    if tokens == 1 {
        "gemv"
    } else {
        "gemm"
    }
}

fn print_header() {
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

fn print_row(event: &KernelBenchEvent) {
    match event {
        KernelBenchEvent::Bandwidth { threads, read_gbs, bytes } => println!(
            "read bandwidth, {threads} thread(s): {read_gbs:.1} GB/s ({} MiB streamed)",
            bytes >> 20
        ),
        KernelBenchEvent::Kernel(r) => print_kernel(r),
        KernelBenchEvent::Head(h) => println!(
            "{:<5} {:>11} {:>4} {:>3} {:<18} {:>11.1} {:>8.1} {:>8.2} {:>6}",
            "head",
            format!("{}x{}", h.rows, h.cols),
            h.tokens,
            h.threads,
            format!("q8/{}", h.isa),
            h.median_s * 1e6,
            h.gmacs(),
            h.weight_gbs(),
            ratio(h.pct_read_bw, 0, "%"),
        ),
        KernelBenchEvent::Dense { rows, cols, tokens, threads, f32_median_s, f16_median_s } => {
            let macs = (rows * cols * tokens) as f64;
            println!(
                "{:<5} {:>11} {:>4} {:>3} {:<18} {:>11.1} {:>8.1}   (f16 {:.1} us, {:.1} GMAC/s)",
                op_name(*tokens),
                format!("{rows}x{cols}"),
                tokens,
                threads,
                "dense/f32",
                f32_median_s * 1e6,
                macs / f32_median_s / 1e9,
                f16_median_s * 1e6,
                macs / f16_median_s / 1e9
            );
        }
    }
}

/// A ratio against a baseline that was not measured (--no-dense, no bandwidth probe) is "-".
fn ratio(v: f64, digits: usize, unit: &str) -> String {
    if v.is_finite() {
        format!("{v:.digits$}{unit}")
    } else {
        "-".to_string()
    }
}

fn print_kernel(r: &KernelRecord) {
    println!(
        "{:<5} {:>11} {:>4} {:>3} {:<18} {:>11.1} {:>8.1} {:>8.2} {:>6} {:>7} {:>7}",
        op_name(r.tokens),
        format!("{}x{}", r.rows, r.cols),
        r.tokens,
        r.threads,
        r.kernel.name(),
        r.median_s * 1e6,
        r.gmacs(),
        r.weight_gbs(),
        ratio(r.pct_read_bw, 0, "%"),
        ratio(r.f32_median_s / r.median_s, 1, "x"),
        ratio(r.f16_median_s / r.median_s, 1, "x")
    );
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
            "--head",
            "100x64",
        ])
        .unwrap();
        assert_eq!(t.a.heads, vec![(100, 64)]);
        assert!(t.a.config().unwrap().shapes == vec![(64, 256)]);
        assert_eq!(t.a.shapes, vec![(64, 256)]);
        assert_eq!(t.a.tokens, vec![1, 4]);
        assert!(t.a.json);
        assert!(T::try_parse_from(["x", "--shape", "64"]).is_err());
    }
}

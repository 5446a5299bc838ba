//! `onebit bench`: llama-bench-style prompt processing (ppN) and generation (tgN) speed of a
//! model file, with model size, bits per weight, peak RSS and the bandwidth-bound ceiling
//! (read bandwidth measured in the same run ÷ bytes read per token).

use super::mesh_args::{Layout, Runner};
use anyhow::{bail, Result};
use onebit_dist::pipeline::{PipelineHead, WireStats};
use onebit_kernels::bench::{cpu_model, ReadBuffer};
use onebit_kernels::ThreadPool;
use onebit_model::{argmax, Engine, KvDtype, SessionOptions};
use serde_json::json;
use std::time::Instant;

/// Flags of `onebit bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    m: super::model_args::ModelArgs,
    /// Prompt tokens (pp test; 0 skips).
    #[arg(short = 'p', long, default_value_t = 512)]
    prompt: usize,
    /// Generated tokens (tg test; 0 skips).
    #[arg(short = 'n', long, default_value_t = 128)]
    gen: usize,
    /// Repetitions of each test.
    #[arg(short, long, default_value_t = 5)]
    reps: usize,
    /// Output: table or json (one object per test).
    #[arg(short, long, default_value = "table")]
    output: String,
    /// Prompt tokens per forward pass (larger chunks share weight decoding, smaller keep
    /// activations in cache).
    #[arg(long, default_value_t = 128)]
    ubatch: usize,
    /// Sequences decoded together in the tg test (comma list, e.g. 1,4,16): each step
    /// advances every sequence by one token in one pass; tok/s is the aggregate.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Skip the untimed warm-up run before each test (by default one full run first, as
    /// llama-bench does, so that first-touch page faults and cold caches are not timed).
    #[arg(long)]
    no_warmup: bool,
    /// KV cache element type: f16, f32 or q8 (int8 in blocks of 32, about half of f16's bytes).
    #[arg(long, default_value = "f16")]
    kv_cache: String,
    /// Tokens already in every sequence's context when a test starts (llama-bench's `-d`):
    /// filled once, untimed, so the pp and tg tests measure attention over a long context.
    #[arg(short = 'd', long, default_value_t = 0)]
    depth: usize,
    #[command(flatten)]
    mesh: super::mesh_args::MeshArgs,
    /// With --mesh, decode a batch as one group at a time instead of two overlapping groups
    /// (to measure what the overlap gains).
    #[arg(long, requires = "mesh")]
    no_overlap: bool,
}

/// Bytes of a model file, or of all files in a model directory.
fn model_size(path: &str) -> Result<u64> {
    let m = std::fs::metadata(path)?;
    if !m.is_dir() {
        return Ok(m.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(path)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Energy counter (µJ) of the CPU package, where Linux exposes RAPL.
fn rapl_uj() -> Option<u64> {
    std::fs::read_to_string("/sys/class/powercap/intel-rapl:0/energy_uj").ok()?.trim().parse().ok()
}

/// Runs `run` (returning the tokens it processed) once untimed when `warmup`, then `reps`
/// timed times: tok/s of each timed run, and joules per token where RAPL is readable.
fn timed(
    reps: usize,
    warmup: bool,
    mut run: impl FnMut() -> Result<usize>,
) -> Result<(Vec<f64>, Option<f64>)> {
    if warmup {
        run()?;
    }
    let e0 = rapl_uj();
    let (mut rates, mut tokens) = (Vec::with_capacity(reps), 0);
    for _ in 0..reps {
        let t = Instant::now();
        let n = run()?;
        rates.push(n as f64 / t.elapsed().as_secs_f64());
        tokens += n;
    }
    let joules = e0.zip(rapl_uj()).map(|(a0, a1)| a1.saturating_sub(a0) as f64 / 1e6);
    Ok((rates, joules.map(|j| j / tokens.max(1) as f64)))
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

/// One test's name (pp512, tg128, tg128@b4), tok/s per timed run, joules per token, and on
/// a mesh what the head's link carried per token.
type TestResult = (String, Vec<f64>, Option<f64>, Option<WirePerToken>);

/// The head's traffic over one test (its warm-up run included), per token processed.
#[derive(Clone, Copy, Debug)]
struct WirePerToken {
    /// Payload bytes the head sent and received.
    bytes: f64,
    /// Exchanges (tensor parallel) or passes (pipeline).
    syncs: f64,
    /// Milliseconds the head waited on the other nodes.
    wait_ms: f64,
}

impl WirePerToken {
    /// The difference between `before` and `after`, over `tokens`.
    fn between(before: Option<WireStats>, after: Option<WireStats>, tokens: usize) -> Option<Self> {
        let (b, a) = (before?, after?);
        let n = tokens.max(1) as f64;
        Some(WirePerToken {
            bytes: (a.sent + a.received - b.sent - b.received) as f64 / n,
            syncs: (a.steps - b.steps) as f64 / n,
            wait_ms: (a.wait - b.wait).as_secs_f64() * 1e3 / n,
        })
    }
}

/// The session every test runs on: room for the largest batch and prompt chunk.
fn session_options(a: &Args, ctx: usize, kv: KvDtype) -> SessionOptions {
    let slots = a.batch.iter().copied().max().unwrap_or(1).max(1);
    SessionOptions { max_ctx: ctx, max_batch: a.ubatch.max(slots).max(1), slots, kv }
}

/// `n` decode steps of every slot, as two groups of slots kept in flight in the pipeline (the
/// head computes one group while the workers compute the other).
fn overlapped_decode(p: &mut PipelineHead, next: &mut [u32], n: usize) -> Result<()> {
    let b = next.len();
    let slots: Vec<usize> = (0..b).collect();
    let groups = [0..b / 2, b / 2..b];
    let vocab = p.vocab();
    for g in &groups {
        p.submit(&next[g.clone()], &slots[g.clone()], false)?;
    }
    for step in 0..n {
        for g in &groups {
            let l = p.collect()?;
            for (t, row) in next[g.clone()].iter_mut().zip(l.chunks_exact(vocab)) {
                *t = argmax(row);
            }
            if step + 1 < n {
                p.submit(&next[g.clone()], &slots[g.clone()], false)?;
            }
        }
    }
    Ok(())
}

/// Runs the pp and tg tests the flags ask for on one engine (a local session or a mesh).
fn run_tests(a: &Args, bench: &mut Runner, ctx: usize, bos: u32) -> Result<Vec<TestResult>> {
    let vocab = bench.engine().vocab();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut tok = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % vocab as u64) as u32
    };
    let mut results = Vec::new();
    let warmup = !a.no_warmup;
    let depth = a.depth.min(ctx - 1);
    let context: Vec<u32> = (0..depth).map(|_| tok()).collect();
    let suffix = if depth > 0 { format!("@d{depth}") } else { String::new() };
    // Slots `0..slots` hold the same `depth` tokens, prefilled once for every test.
    let mut filled = 0;
    let mut fill = |bench: &mut Runner, slots: usize| -> Result<()> {
        for s in filled.min(slots)..slots {
            bench.engine().reset_slot(s)?;
            bench.engine().forward_slot(s, &context)?;
        }
        filled = filled.max(slots);
        Ok(())
    };
    if a.prompt > 0 {
        let prompt: Vec<u32> = (0..a.prompt.min(ctx - depth)).map(|_| tok()).collect();
        if depth > 0 {
            fill(bench, 1)?;
        }
        let w0 = bench.wire_stats();
        let (rates, jpt) = timed(a.reps, warmup, || {
            let e = bench.engine();
            e.truncate_slot(0, depth)?;
            e.forward_slot(0, &prompt)?;
            Ok(prompt.len())
        })?;
        let runs = a.reps + usize::from(warmup);
        let wire = WirePerToken::between(w0, bench.wire_stats(), runs * prompt.len());
        results.push((format!("pp{}{suffix}", prompt.len()), rates, jpt, wire));
    }
    let n = a.gen.min(ctx - 1 - depth);
    for &b in a.batch.iter().filter(|_| a.gen > 0) {
        let slots: Vec<usize> = (0..b).collect();
        let mut next = vec![0u32; b];
        let mut picked = Vec::with_capacity(b);
        if depth > 0 {
            fill(bench, b)?;
        }
        let w0 = bench.wire_stats();
        let (rates, jpt) = timed(a.reps, warmup, || {
            for &s in &slots {
                bench.engine().truncate_slot(s, depth)?;
            }
            next.iter_mut().for_each(|t| *t = if b == 1 { bos } else { tok() });
            if let (Runner::Mesh(p), true) = (&mut *bench, b > 1 && !a.no_overlap) {
                overlapped_decode(p, &mut next, n)?;
                return Ok(b * n);
            }
            // Greedy, as `onebit run --temp 0` decodes: a tensor-parallel mesh picks each
            // row's token on its nodes and gathers picks, not logits.
            let e = bench.engine();
            for _ in 0..n {
                e.decode_argmax(&next, &slots, &mut picked)?;
                next.copy_from_slice(&picked);
            }
            Ok(b * n)
        })?;
        let name = if b == 1 { format!("tg{n}{suffix}") } else { format!("tg{n}@b{b}{suffix}") };
        let runs = a.reps + usize::from(warmup);
        let wire = WirePerToken::between(w0, bench.wire_stats(), runs * b * n);
        results.push((name, rates, jpt, wire));
    }
    Ok(results)
}

/// Runs `onebit bench`.
pub fn run(a: Args) -> Result<()> {
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let json_out = match a.output.as_str() {
        "json" => true,
        "table" => false,
        o => bail!("unknown --output '{o}' (table, json)"),
    };
    // The bandwidth probe runs before the model is loaded (so its buffer is not part of the
    // peak RSS) and again after the tests; the bound uses the better of the two, because the
    // memory bandwidth a VM gets drifts by ±10 % between minutes.
    let probe = |pool: &ThreadPool| ReadBuffer::new(512 << 20).read_gbs_best(pool, 5);
    let gbs_before = probe(&ThreadPool::new(a.m.threads));
    // The probe's buffer is gone; start the peak-RSS count here (Linux: "5" resets VmHWM),
    // else a model smaller than the buffer would report the buffer.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t0 = Instant::now();
    let kv = KvDtype::from_name(&a.kv_cache)
        .ok_or_else(|| anyhow::anyhow!("unknown --kv-cache '{}' (f16, f32, q8)", a.kv_cache))?;
    let header_ctx = a.depth + a.prompt.max(a.gen) + 1;
    let (model, comm, split) = a.mesh.load(&a.m, session_options(&a, header_ctx, kv))?;
    tracing::info!("loaded {} in {:.1} s", a.m.model, t0.elapsed().as_secs_f64());
    let c = &model.config;
    let per_token = model.bytes_per_token();
    let model_bytes = model_size(&a.m.model)?;
    if a.depth > 0 && header_ctx > c.max_positions {
        bail!(
            "--depth {} and {} more tokens need {header_ctx} positions; the model has {}",
            a.depth,
            a.prompt.max(a.gen),
            c.max_positions
        );
    }
    let ctx = header_ctx.min(c.max_positions);
    let bos = c.bos.unwrap_or(0).min(c.vocab as u32 - 1);
    let mut bench = a.mesh.runner(&model, comm, &split, session_options(&a, ctx, kv))?;
    let results = run_tests(&a, &mut bench, ctx, bos)?;
    let rss = peak_rss();
    let gbs_after = probe(&model.pool);
    let read_gbs = gbs_before.max(gbs_after);
    let bound = read_gbs * 1e9 / per_token as f64;
    if !json_out {
        println!(
            "cpu: {} · threads {} · kernel {} · read bandwidth {:.1} GB/s (best probe run; {:.1} before, {:.1} after the tests)",
            cpu_model(),
            a.m.threads,
            model.kernel_name(),
            read_gbs,
            gbs_before,
            gbs_after
        );
        println!(
            "model: {} · {:.2} GB file · ternary {:.3} bpw · {:.0} MB read per token{} · bound {:.1} tok/s",
            a.m.model,
            model_bytes as f64 / 1e9,
            model.ternary_bpw(),
            per_token as f64 / 1e6,
            if matches!(split, Layout::One) { "" } else { " on the head (its part)" },
            bound
        );
        println!("{:<10} {:>16} {:>10} {:>14}", "test", "tok/s", "% bound", "J/token");
    }
    for (test, rates, jpt, wire) in &results {
        let (m, sd) = mean_sd(rates);
        if json_out {
            println!(
                "{}",
                json!({
                    "test": test.split('@').next().unwrap_or(test), "threads": a.m.threads,
                    "batch": test.split('@').find_map(|p| p.strip_prefix('b')?.parse().ok()).unwrap_or(1),
                    "depth": test.split('@').find_map(|p| p.strip_prefix('d')?.parse().ok()).unwrap_or(0),
                    "tok_s_mean": m, "tok_s_sd": sd,
                    "model_bytes": model_bytes, "bpw": model.ternary_bpw(), "kernel": model.kernel_name(),
                    "peak_rss_bytes": rss, "bound_tok_s": bound, "read_gbs": read_gbs, "read_gbs_before": gbs_before, "read_gbs_after": gbs_after,
                    "bytes_per_token": per_token, "kv_cache": a.kv_cache, "kv_bytes_per_value": kv.bytes_per_value(), "joules_per_token": jpt, "cpu": cpu_model(), "reps": rates.len(),
                    "wire_bytes_per_token": wire.map(|w| w.bytes), "wire_syncs_per_token": wire.map(|w| w.syncs),
                    "wire_wait_ms_per_token": wire.map(|w| w.wait_ms),
                })
            );
        } else {
            // With a mesh the bound above is this node's part only: no percentage.
            let pct =
                if test.starts_with("tg") && !test.contains("@b") && matches!(split, Layout::One) {
                    format!("{:.0}%", 100.0 * m / bound)
                } else {
                    "-".into()
                };
            let j = jpt.map_or("n/a (no RAPL)".to_string(), |j| format!("{j:.3}"));
            println!("{test:<10} {:>9.2} ± {:<5.2} {pct:>10} {j:>14}", m, sd);
            if let Some(w) = wire {
                let syncs = if matches!(bench, Runner::Tensor(_)) { "exchanges" } else { "passes" };
                println!(
                    "           per token: {:.1} kB on the head's links (sent + received) · {:.2} {syncs} · {:.3} ms waiting",
                    w.bytes / 1e3,
                    w.syncs,
                    w.wait_ms
                );
            }
        }
    }
    if !json_out {
        println!("peak RSS: {}", rss.map_or("n/a".into(), |r| format!("{:.0} MB", r as f64 / 1e6)));
        if let Some(line) = bench.wire_summary(&split) {
            println!("{line}");
        }
    }
    Ok(())
}

//! `onebit bench-train`: median tokens/s of full training steps (forward + backward +
//! AdamW) on random tokens, for the reference shape by default (d 256, 4 layers, seq 256, batch 8, vocab 8192), and peak RSS.

use anyhow::Result;
use onebit_kernels::bench::{cpu_model, median};
use onebit_model::ModelConfig;
use onebit_train::data::TokenData;
use onebit_train::rng::Rng;
use onebit_train::schedule::Schedule;
use onebit_train::trainer::{TrainConfig, Trainer};
use std::time::Instant;

/// Flags of `onebit bench-train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Residual width.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// FFN width.
    #[arg(long, default_value_t = 688)]
    ffn: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 8192)]
    vocab: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(short = 'r', long, default_value_t = 10)]
    steps: usize,
    /// Threads.
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    /// Gradient checkpointing per block.
    #[arg(long)]
    checkpointing: bool,
    /// BitLinear input gradients on the int8 kernels (not exact).
    #[arg(long)]
    int8_backward: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `onebit bench-train`.
pub fn run(a: Args) -> Result<()> {
    let total = a.steps + 2;
    let reference = TrainConfig::reference(a.vocab);
    let cfg = TrainConfig {
        model: ModelConfig {
            hidden: a.hidden,
            layers: a.layers,
            heads: a.heads,
            kv_heads: a.heads,
            head_dim: a.hidden / a.heads.max(1),
            intermediate: a.ffn,
            max_positions: a.seq,
            ..reference.model.clone()
        },
        seq: a.seq,
        batch: a.batch,
        schedule: Schedule { lr: 1e-3, warmup: 2, steps: total as u64, ..Default::default() },
        threads: a.threads,
        checkpointing: a.checkpointing,
        int8_backward: a.int8_backward,
        eval_batches: 1,
        val_share: 0.0,
        ..reference
    };
    let mut rng = Rng::new(7);
    let n = (total * a.batch + 1) * a.seq + 1;
    let data =
        TokenData { train: (0..n).map(|_| rng.below(a.vocab) as u32).collect(), val: Vec::new() };
    let mut t = Trainer::new(cfg)?;
    let mut rates = Vec::new();
    for i in 0..total {
        let t0 = Instant::now();
        let r = t.train_step(&data)?;
        if i >= 2 {
            rates.push(r.tokens as f64 / t0.elapsed().as_secs_f64());
        }
    }
    rates.sort_by(f64::total_cmp);
    let med = median(&rates);
    let (lo, hi) = rates.iter().fold((f64::MAX, 0.0f64), |(l, h), &v| (l.min(v), h.max(v)));
    let rss = peak_rss();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "test": "train_step", "hidden": a.hidden, "layers": a.layers, "heads": a.heads,
                "ffn": a.ffn, "vocab": a.vocab, "seq": a.seq, "batch": a.batch,
                "threads": a.threads, "checkpointing": a.checkpointing, "int8_backward": a.int8_backward, "steps": a.steps,
                "tok_s_median": med, "tok_s_min": lo, "tok_s_max": hi,
                "peak_rss_bytes": rss, "cpu": cpu_model(), "kernel": t.model.params.kernel().name(),
            })
        );
    } else {
        println!(
            "train step d={} L={} H={} ffn={} vocab={} seq={} batch={} threads={} ckpt={} int8-bwd={}: \
             median {:.0} tok/s (min {:.0}, max {:.0}, {} steps), peak RSS {:.0} MB, {} [{}]",
            a.hidden,
            a.layers,
            a.heads,
            a.ffn,
            a.vocab,
            a.seq,
            a.batch,
            a.threads,
            a.checkpointing,
            a.int8_backward,
            med,
            lo,
            hi,
            a.steps,
            rss.unwrap_or(0) as f64 / 1e6,
            t.model.params.kernel().name(),
            cpu_model()
        );
    }
    Ok(())
}

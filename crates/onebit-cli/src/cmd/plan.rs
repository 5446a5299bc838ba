//! `onebit plan`: measures the mesh (every link, then every node's decode speed on the model's
//! shape, one node after another) and prints each way to run the model with its predicted
//! tok/s, bytes on the wire and syncs per token, and the choice.

use anyhow::{bail, Context, Result};
use onebit_dist::bootstrap::{run_head, Job, JobResult, MeshFile, PlanJob};
use onebit_dist::key::read_key_file;
use onebit_dist::plan::{plan, NodeSpec, Strategy};
use onebit_dist::probe::ProbeOptions;
use onebit_dist::TcpConfig;
use onebit_model::load::GgufModelFile;
use onebit_model::ModelConfig;
use std::net::TcpListener;
use std::time::Duration;

/// Flags of `onebit plan`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model (GGUF file): only its shape is read.
    model: String,
    /// The mesh file (every worker running `onebit worker`).
    #[arg(long)]
    mesh: String,
    /// Threads every node measures with (as it will run).
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    /// Sequences in flight for the batch figure.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Which strategy to choose: auto (the fastest for one sequence), tp, pp or single.
    #[arg(long, default_value = "auto")]
    strategy: String,
}

fn describe(s: &Strategy) -> String {
    match s {
        Strategy::Single { node } => format!("one node ({node})"),
        Strategy::Tensor { kv_heads, ffn } => {
            format!("tensor parallel: kv heads {kv_heads:?}, ffn {ffn:?}")
        }
        Strategy::Pipeline { layers } => format!("pipeline: blocks {layers:?}"),
    }
}

/// Runs `onebit plan`.
pub fn run(a: Args) -> Result<()> {
    if a.batch == 0 || a.threads == 0 {
        bail!("--batch and --threads must be at least 1");
    }
    let pick = |s: &Strategy| match a.strategy.as_str() {
        "auto" => true,
        "tp" => matches!(s, Strategy::Tensor { .. }),
        "pp" => matches!(s, Strategy::Pipeline { .. }),
        "single" => matches!(s, Strategy::Single { .. }),
        _ => false,
    };
    if !["auto", "tp", "pp", "single"].contains(&a.strategy.as_str()) {
        bail!("unknown --strategy '{}' (auto, tp, pp, single)", a.strategy);
    }
    let c = ModelConfig::from_gguf(&GgufModelFile::open(&a.model)?.header)?;
    let m = MeshFile::read(&a.mesh)?;
    let addrs = m.addrs()?;
    let cfg = TcpConfig::new(read_key_file(&m.key_file)?);
    let listener = TcpListener::bind(addrs[0])
        .with_context(|| format!("cannot listen on the head address {}", addrs[0]))?;
    let job =
        Job::Plan(PlanJob { shape: c.clone(), threads: a.threads, probe: ProbeOptions::default() });
    let JobResult::Plan(links, nodes) =
        run_head(&listener, &addrs, &job, &cfg, Duration::from_secs(1800))?
    else {
        bail!("the plan job returned another job's result");
    };
    print!("{}", onebit_dist::probe::links_table(&links));
    println!(
        "{:<6} {:<24} {:>12} {:>12} {:>12}",
        "node", "address", "alone tok/s", "batch slope", "memory GB"
    );
    for (i, (n, addr)) in nodes.iter().zip(&addrs).enumerate() {
        println!(
            "{i:<6} {:<24} {:>12.2} {:>12.3} {:>12.1}",
            addr.to_string(),
            1.0 / n.token_s,
            n.batch_slope,
            n.mem_bytes as f64 / 1e9
        );
    }
    let specs: Vec<NodeSpec> = nodes
        .iter()
        .zip(&addrs)
        .map(|(n, addr)| NodeSpec {
            name: addr.to_string(),
            token_s: n.token_s,
            mem_bytes: n.mem_bytes,
            batch_slope: n.batch_slope,
        })
        .collect();
    let plans = plan(&c, 2.0, &specs, &links, a.batch)?;
    println!(
        "{:<64} {:>10} {:>12} {:>12} {:>6}",
        "candidate",
        "tok/s",
        format!("tok/s @{}", a.batch),
        "wire B/tok",
        "syncs"
    );
    for p in &plans {
        println!(
            "{:<64} {:>10.2} {:>12.2} {:>12} {:>6}",
            describe(&p.strategy),
            p.tok_s,
            p.tok_s_batch,
            p.wire_bytes,
            p.syncs
        );
    }
    let Some(choice) = plans.iter().find(|p| pick(&p.strategy)) else {
        bail!("no '{}' candidate fits this mesh", a.strategy);
    };
    println!("choice: {}", describe(&choice.strategy));
    if let Strategy::Pipeline { layers } = &choice.strategy {
        let split: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
        println!("run it: onebit run {} --mesh {} --split {}", a.model, a.mesh, split.join(","));
    }
    Ok(())
}

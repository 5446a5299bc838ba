//! `onebit worker`: a node of a device mesh. It waits on its port for a head (`onebit mesh …`
//! on another machine holding the same key file), joins the mesh the head describes, runs
//! the job, and waits for the next one.

use anyhow::{Context, Result};
use onebit_dist::bootstrap::{serve_one_job, JobResult, WorkerSetup};
use onebit_dist::key::read_key_file;
use onebit_dist::link_emulation::LinkEmulation;
use onebit_dist::TcpConfig;
use std::net::TcpListener;
use std::time::Duration;

/// Flags of `onebit worker`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (the one the mesh file lists for this node), e.g. 0.0.0.0:7070.
    #[arg(long)]
    listen: String,
    /// The mesh's pre-shared key file (`onebit mesh new-key`); the same on every node.
    #[arg(long)]
    key_file: String,
    /// Exit after this many jobs (default: serve until stopped).
    #[arg(long)]
    jobs: Option<usize>,
    /// This node's copy of the model, where its path differs from the head's (checked to
    /// be the same file by fingerprint; a different file there is refused).
    #[arg(long)]
    model: Option<String>,
    /// A folder holding this node's models: the head's model file is looked for there by
    /// its file name (default: at the head's path).
    #[arg(long, conflicts_with = "model")]
    models: Option<std::path::PathBuf>,
    /// Where shards of models streamed from the head are kept, when this node has no copy of
    /// the head's file: only the tensors this node reads travel, once,
    /// and later jobs load them from here. Default: $XDG_CACHE_HOME/onebit/shards (or
    /// ~/.cache/onebit/shards).
    #[arg(long)]
    cache: Option<std::path::PathBuf>,
    /// Test mode for link-emulation benchmarks on one machine: hold every mesh message for
    /// DELAY_MS (± JITTER_MS); the head needs the same flag.
    #[arg(long, value_name = "DELAY_MS[,JITTER_MS]", value_parser = LinkEmulation::parse, hide = true)]
    emulate_link: Option<LinkEmulation>,
    /// Hold this node to this many GB of memory in all: a job whose part would exceed it is
    /// refused, and the planner is told this as the node's memory.
    #[arg(long, value_name = "GB")]
    mem_limit: Option<f64>,
    /// Never ask the head for weights: a node without the file refuses the job.
    #[arg(long, conflicts_with = "cache")]
    no_fetch: bool,
}

/// The default cache folder for shards.
fn default_cache() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("onebit").join("shards"))
}

/// Runs `onebit worker`.
pub fn run(a: Args) -> Result<()> {
    if let Some(gb) = a.mem_limit {
        onebit_kernels::machine::set_memory_limit(super::model_args::mem_limit_bytes(gb)?);
    }
    let key = read_key_file(&a.key_file)?;
    let cfg = TcpConfig { emulate: a.emulate_link, ..TcpConfig::new(key) };
    let listener =
        TcpListener::bind(&a.listen).with_context(|| format!("cannot listen on {}", a.listen))?;
    eprintln!("worker listening on {}", listener.local_addr()?);
    let cache = if a.no_fetch { None } else { a.cache.clone().or_else(default_cache) };
    let setup = WorkerSetup {
        model: a.model.clone(),
        models: a.models.clone(),
        cache,
        progress: super::transfer_bar::bars(),
        ..Default::default()
    };
    let mut done = 0;
    while a.jobs.is_none_or(|n| done < n) {
        match serve_one_job(&listener, &cfg, &setup, Duration::from_secs(600)) {
            Ok(JobResult::Probe(links)) => eprintln!("probe done: {} links", links.len()),
            Ok(JobResult::Plan(links, nodes)) => {
                eprintln!("plan measurements done: {} links, {} nodes", links.len(), nodes.len())
            }
            Ok(JobResult::Stage(w)) => eprintln!(
                "stage done: {} steps, {:.1} MB in, {:.1} MB out",
                w.steps,
                w.received as f64 / 1e6,
                w.sent as f64 / 1e6
            ),
            // A failed job (a head that went away) leaves the worker waiting for the next.
            Err(e) => eprintln!("job failed: {e}"),
        }
        done += 1;
    }
    Ok(())
}

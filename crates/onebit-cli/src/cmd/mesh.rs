//! `onebit mesh`: the device mesh from the head's side: `new-key` writes a pre-shared key
//! file, `probe` forms the mesh of a mesh file and measures every link.

use anyhow::{bail, Context, Result};
use onebit_dist::bootstrap::{run_head, Job, JobResult, MeshFile};
use onebit_dist::key::{key_hex, read_key_file};
use onebit_dist::probe::ProbeOptions;
use onebit_dist::TcpConfig;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// Subcommands of `onebit mesh`.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Write a new random pre-shared key file; copy it to every node of the mesh.
    NewKey {
        /// Output file (refused if it exists).
        #[arg(short, long)]
        output: String,
    },
    /// Form the mesh of a mesh file (workers must be running) and measure every link:
    /// round-trip time, jitter, and latency + bandwidth fitted over a size sweep.
    Probe {
        /// The mesh file (TOML: key_file, head, workers).
        #[arg(long)]
        mesh: String,
        /// Small round trips per link.
        #[arg(long, default_value_t = 20)]
        pings: usize,
        /// Transfers per size of the sweep.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Seconds to wait for every worker to join.
        #[arg(long, default_value_t = 30)]
        join_timeout: u64,
    },
}

/// Runs `onebit mesh`.
pub fn run(a: Args) -> Result<()> {
    match a {
        Args::NewKey { output } => new_key(&output),
        Args::Probe { mesh, pings, reps, join_timeout } => {
            if pings == 0 || reps == 0 {
                bail!("--pings and --reps must be at least 1");
            }
            probe(&mesh, pings, reps, join_timeout)
        }
    }
}

fn new_key(output: &str) -> Result<()> {
    if std::path::Path::new(output).exists() {
        bail!("{output} exists; a new key would lock out the nodes holding it");
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    let mut f = onebit_model::output::AtomicFile::create(output)?;
    writeln!(f, "{}", key_hex(&key))?;
    f.commit()?;
    eprintln!("wrote {output}: copy it to every node (it is the mesh's password)");
    Ok(())
}

fn probe(mesh: &str, pings: usize, reps: usize, join_timeout: u64) -> Result<()> {
    let m = MeshFile::read(mesh)?;
    let key = read_key_file(&m.key_file)?;
    let addrs = m.addrs()?;
    let cfg = TcpConfig { join_timeout: Duration::from_secs(join_timeout), ..TcpConfig::new(key) };
    let listener = TcpListener::bind(addrs[0])
        .with_context(|| format!("cannot listen on the head address {}", addrs[0]))?;
    let opts = ProbeOptions { pings, reps, ..ProbeOptions::default() };
    let JobResult::Probe(links) =
        run_head(&listener, &addrs, &Job::Probe(opts), &cfg, Duration::from_secs(600))?
    else {
        anyhow::bail!("the probe returned another job's result");
    };
    print!("{}", onebit_dist::probe::links_table(&links));
    Ok(())
}

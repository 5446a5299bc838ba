//! The `onebit` binary: parse flags, run one subcommand, turn errors into an exit code.

#![forbid(unsafe_code)]

mod cmd;

use clap::Parser;
use std::process::ExitCode;

/// onebit: 1.58-bit (ternary) LLM kernels, inference and training on ordinary CPUs.
#[derive(Parser, Debug)]
#[command(name = "onebit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

/// Large blocks (weights, head, KV cache) on transparent huge pages: fewer TLB misses while
/// a decode step streams the weights (see `onebit_kernels::alloc`).
#[global_allocator]
static ALLOC: onebit_kernels::HugePageAlloc = onebit_kernels::HugePageAlloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ONEBIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

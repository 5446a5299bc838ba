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
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ONEBIT_LOG").unwrap_or_else(
            |_| {
                tracing_subscriber::EnvFilter::new("warn,wgpu_hal=error,wgpu_core=error,naga=error")
            },
        ))
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs piped to a file or a CI log stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: library errors already name their
/// source in their own message ("file.gguf: No such file"), so a cause whose text is already
/// there is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

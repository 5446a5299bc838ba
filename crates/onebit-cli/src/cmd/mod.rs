//! One subcommand per file; each turns its flags into library calls.

pub mod bench_kernels;
pub mod kernels;

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Benchmark the ternary kernels against dense f32/f16 on model shapes.
    BenchKernels(bench_kernels::Args),
    /// Show this CPU's features and the kernel chosen for each format.
    Kernels(kernels::Args),
}

/// Runs a parsed subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::BenchKernels(a) => bench_kernels::run(a),
        Command::Kernels(a) => kernels::run(a),
    }
}

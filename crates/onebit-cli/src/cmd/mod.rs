//! One subcommand per file; each turns its flags into library calls.

pub mod bench;
pub mod bench_kernels;
pub mod bench_train;
pub mod chat;
pub mod convert;
pub mod export;
pub mod finetune;
pub mod generate;
pub mod info;
pub mod init;
pub mod kernels;
pub mod mesh;
pub mod mesh_args;
pub mod mesh_reform;
pub mod model_args;
pub mod perplexity;
pub mod plan;
pub mod plot;
pub mod run;
pub mod serve;
pub mod tokenizer;
pub mod train;
pub mod transfer_bar;
pub mod worker;

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt with a model (GGUF file or HF directory).
    Run(run::Args),
    /// Chat interactively (standard input) using the model's chat template.
    Chat(chat::Args),
    /// Serve a model over an OpenAI-compatible HTTP API, with a chat page at /.
    Serve(serve::Args),
    /// Benchmark the ternary kernels against dense f32/f16 on model shapes.
    BenchKernels(bench_kernels::Args),
    /// Show this CPU's features and the kernel chosen for each format.
    Kernels(kernels::Args),
    /// Write a synthetic model (random ternary weights) of a named shape.
    Init(init::Args),
    /// Show a model file's architecture, shapes, tensor types and sizes.
    Info(info::Args),
    /// Measure prompt (pp) and generation (tg) speed of a model, llama-bench style.
    Bench(bench::Args),
    /// Rewrite a model's ternary linears in another layout (I2_S, TQ1_0, TQ2_0, T2, B3).
    Convert(convert::Args),
    /// Perplexity of a model on a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(perplexity::Args),
    /// Train a 1.58-bit model from scratch on text files (QAT with the straight-through estimator).
    Train(train::Args),
    /// Fine-tune a full-precision model into 1.58 bits (BitLinear QAT with λ phase-in).
    Finetune(finetune::Args),
    /// Turn a training checkpoint into a GGUF model.
    Export(export::Args),
    /// Tokenizer tools.
    #[command(subcommand)]
    Tokenizer(tokenizer::Args),
    /// Draw a training run's loss and STE monitor curves (SVG).
    Plot(plot::Args),
    /// Time training steps (forward + backward + AdamW) on a model shape.
    BenchTrain(bench_train::Args),
    /// Serve as a node of a device mesh (waits for a head running `onebit mesh`).
    Worker(worker::Args),
    /// The device mesh from the head: new key files, probing every link.
    #[command(subcommand)]
    Mesh(mesh::Args),
    /// Measure a mesh's links and nodes and predict every way to run a model on it.
    Plan(plan::Args),
}

/// Runs a parsed subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Run(a) => run::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Serve(a) => serve::run(a),
        Command::BenchKernels(a) => bench_kernels::run(a),
        Command::Kernels(a) => kernels::run(a),
        Command::Init(a) => init::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Train(a) => train::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Export(a) => export::run(a),
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Plot(a) => plot::run(a),
        Command::BenchTrain(a) => bench_train::run(a),
        Command::Worker(a) => worker::run(a),
        Command::Mesh(a) => mesh::run(a),
    }
}

//! `onebit kernels`: CPU features, every kernel this CPU can run, the default per format,
//! the GPU adapters wgpu finds (what `--device gpu` would use), and (with `--tune RxC`) the
//! self-tuned choice for a shape.

use anyhow::Result;
use onebit_kernels::dense::DenseKernels;
use onebit_kernels::{
    bench::cpu_model, self_tune, CpuFeatures, Isa, Kernel, TernaryFormat, ThreadPool,
};

/// Flags of `onebit kernels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Time every kernel on this shape (rows x cols, e.g. 2560x6912) and print the fastest.
    #[arg(long, value_parser = super::bench_kernels::parse_shape)]
    tune: Option<(usize, usize)>,
    /// Threads for --tune.
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    /// Tokens for --tune.
    #[arg(long, default_value_t = 1)]
    tokens: usize,
}

/// Runs `onebit kernels`.
pub fn run(a: Args) -> Result<()> {
    println!("cpu: {}", cpu_model());
    println!("features: {}", CpuFeatures::get().summary());
    for f in TernaryFormat::ALL {
        let all: Vec<String> =
            Kernel::available(f).iter().map(|k| k.isa().name().to_string()).collect();
        println!(
            "{:>6}: default {} (available: {})",
            f.name(),
            Kernel::best(f)?.name(),
            all.join(", ")
        );
    }
    // The head and the dense vector ops follow the same ISA choice (ONEBIT_KERNEL included).
    let isa = Isa::selected();
    let rows = if Isa::rows() == isa {
        String::new()
    } else {
        format!(" (one token: {})", Isa::rows().name())
    };
    println!("{:>6}: q8/q4 {}{rows}", "head", isa.name());
    let dense = DenseKernels::get(isa).map(|k| k.isa()).unwrap_or(Isa::Scalar);
    println!("{:>6}: f32/f16 {}", "dense", dense.name());
    print_adapters();
    print_cuda();
    if let Some((rows, cols)) = a.tune {
        let pool = ThreadPool::new(a.threads);
        for f in [TernaryFormat::T2, TernaryFormat::B3, TernaryFormat::Lut] {
            let (k, s) = self_tune(&pool, f, rows, cols, a.tokens, 5)?;
            println!(
                "tuned {rows}x{cols} tokens={} threads={}: {} {:.1} us",
                a.tokens,
                a.threads,
                k.name(),
                s * 1e6
            );
        }
    }
    Ok(())
}

/// The adapters wgpu finds and which one `--device gpu` would open.
fn print_adapters() {
    let list = onebit_gpu::adapters();
    if list.is_empty() {
        println!("gpu: no adapter (--device gpu needs a Vulkan, Metal or DX12 driver; on Debian, mesa-vulkan-drivers gives the CPU's lavapipe)");
        return;
    }
    for a in &list {
        println!(
            "gpu: {} ({}, {}, driver {}; storage binding up to {} MiB, {} workgroups per dimension)",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.max_storage_binding >> 20,
            a.max_workgroups
        );
    }
    match onebit_gpu::GpuContext::new() {
        Ok(c) => println!("gpu: --device gpu uses {}", c.adapter().name),
        Err(e) => println!("gpu: --device gpu fails: {e}"),
    }
}

/// The CUDA devices the driver reports and whether NVRTC (the kernels' compiler) loads.
fn print_cuda() {
    match onebit_gpu::cuda::devices() {
        Ok(list) if list.is_empty() => println!("cuda: the driver loaded but reports no device"),
        Ok(list) => list.iter().for_each(|d| println!("cuda: device {d}")),
        Err(e) => println!("cuda: {e}"),
    }
    let nvrtc = if onebit_gpu::cuda::nvrtc_present() { "found" } else { "not found" };
    println!("cuda: NVRTC (libnvrtc.so.12) {nvrtc}; the CUDA kernels run single-kernel tests only (no whole-model CUDA engine yet)");
}

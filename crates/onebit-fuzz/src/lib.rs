//! onebit-fuzz: a mutation fuzzer for onebit's parsers that runs on stable Rust and inside
//! `cargo test`. Why not cargo-fuzz: it needs nightly and sanitizer runtimes, so CI could not
//! run it on every change; coverage guidance is traded for seeds that already reach deep into
//! each parser (valid files of every type the repository reads).

#![forbid(unsafe_code)]

pub mod mutate;
pub mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// One fuzz target: seed inputs and the code run on each input.
pub trait Target {
    /// Name on the command line.
    fn name(&self) -> &'static str;
    /// Valid inputs mutations start from.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Runs the code under test; errors are fine, a panic is a crash.
    fn run(&self, input: &[u8]);
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs run.
    pub execs: u64,
    /// Inputs that panicked (each saved under `target/fuzz-crashes/`).
    pub crashes: u64,
    /// The longest single execution.
    pub slowest: Duration,
}

/// An execution slower than this is reported and its input saved (a hang in the making).
pub const SLOW: Duration = Duration::from_millis(200);

/// Where crashing inputs are saved: the workspace's `target/fuzz-crashes`.
pub fn crash_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes")
}

/// Runs `target` on mutated seeds until `iters` inputs or `limit` time, whichever first.
pub fn fuzz(target: &dyn Target, iters: u64, limit: Duration, seed: u64) -> Stats {
    let seeds = target.seeds();
    assert!(!seeds.is_empty(), "{}: no seeds", target.name());
    let mut m = mutate::Mutator::new(seed);
    let mut stats = Stats::default();
    let start = Instant::now();
    // Panics are expected to be caught here; keep the default hook from printing each one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while stats.execs < iters && start.elapsed() < limit {
        let input = if stats.execs < seeds.len() as u64 {
            seeds[stats.execs as usize].clone()
        } else {
            m.mutate(&seeds)
        };
        stats.execs += 1;
        let t0 = Instant::now();
        let panicked = catch_unwind(AssertUnwindSafe(|| target.run(&input))).is_err();
        let took = t0.elapsed();
        if took > stats.slowest {
            stats.slowest = took;
            if took > SLOW {
                let _ = std::fs::create_dir_all(crash_dir());
                let path = crash_dir().join(format!("{}-{seed}-slowest.bin", target.name()));
                let _ = std::fs::write(&path, &input);
                eprintln!(
                    "{}: input {} took {took:?} (saved to {})",
                    target.name(),
                    stats.execs,
                    path.display()
                );
            }
        }
        if panicked {
            let dir = crash_dir();
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{}-{seed}-{}.bin", target.name(), stats.crashes));
            let _ = std::fs::write(&path, &input);
            eprintln!(
                "{}: crash on input {} (saved to {})",
                target.name(),
                stats.execs,
                path.display()
            );
            stats.crashes += 1;
        }
    }
    std::panic::set_hook(hook);
    stats
}

//! The fuzz targets for a bounded number of executions each (what CI runs on every change):
//! every seed is valid and runs, and no mutated input panics.

use std::time::Duration;

#[test]
fn every_target_survives_a_bounded_run() {
    let iters =
        std::env::var("ONEBIT_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    for t in onebit_fuzz::targets::all() {
        let s = onebit_fuzz::fuzz(t.as_ref(), iters, Duration::from_secs(60), 0xC1);
        println!(
            "{}: {} executions, {} crashes, slowest {:?}",
            t.name(),
            s.execs,
            s.crashes,
            s.slowest
        );
        assert_eq!(s.crashes, 0, "{} crashed (inputs saved under target/fuzz-crashes/)", t.name());
        assert!(s.execs >= t.seeds().len() as u64);
        // Not a speed bound: an input that takes seconds is a hang in the making (one found
        // this way: a GGUF claiming 2^24 blocks took a minute to list its tensors).
        assert!(
            s.slowest < Duration::from_secs(10),
            "{}: one input took {:?}",
            t.name(),
            s.slowest
        );
    }
}

//! `onebit-fuzz TARGET|all [--iters N] [--seconds S] [--seed K]`: fuzz onebit's parsers and
//! print executions and crashes per target; exits non-zero if anything crashed.
//! `onebit-fuzz TARGET --replay FILE` runs one saved input (a crash reproduces with its panic).

use std::time::Duration;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let which = args.first().map(String::as_str).unwrap_or("all");
    let (iters, secs, seed) =
        (flag("--iters", 100_000), flag("--seconds", u64::MAX / 4), flag("--seed", 1));
    let all = onebit_fuzz::targets::all();
    let names: Vec<&str> = all.iter().map(|t| t.name()).collect();
    let names = names.join(", ");
    let targets: Vec<_> = all.into_iter().filter(|t| which == "all" || t.name() == which).collect();
    if targets.is_empty() {
        eprintln!("unknown target '{which}' ({names}, all)");
        return std::process::ExitCode::from(2);
    }
    if let Some(i) = args.iter().position(|a| a == "--replay") {
        let Some(path) = args.get(i + 1) else {
            eprintln!("--replay needs a file");
            return std::process::ExitCode::from(2);
        };
        let input = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{path}: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        for t in &targets {
            t.run(&input);
            println!("{}: no panic on {path}", t.name());
        }
        return std::process::ExitCode::SUCCESS;
    }
    let mut crashed = false;
    for t in targets {
        let start = std::time::Instant::now();
        let s = onebit_fuzz::fuzz(t.as_ref(), iters, Duration::from_secs(secs), seed);
        println!(
            "{:10} {:>12} executions, {} crashes, {:.0} s ({:.0} exec/s)",
            t.name(),
            s.execs,
            s.crashes,
            start.elapsed().as_secs_f64(),
            s.execs as f64 / start.elapsed().as_secs_f64()
        );
        crashed |= s.crashes > 0;
    }
    if crashed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

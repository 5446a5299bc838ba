//! `onebit plan`: measures the mesh (every link, then every node's decode speed on the model's
//! shape, one node after another) and prints each way to run the model with its predicted
//! tok/s, bytes on the wire and syncs per token, and the choice.

use anyhow::{bail, Result};
use onebit_dist::auto::{self, Goal};
use onebit_dist::link_emulation::LinkEmulation;
use onebit_dist::plan::Strategy;
use onebit_dist::wire::WireDtype;
use onebit_model::load::GgufModelFile;
use onebit_model::ModelConfig;

/// Flags of `onebit plan`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model (GGUF file): only its shape is read.
    model: String,
    /// The mesh file (every worker running `onebit worker`).
    #[arg(long)]
    mesh: String,
    /// Threads every node measures with (as it will run).
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    /// Sequences in flight for the batch figure.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Which strategy to choose: auto (the fastest for one sequence the head takes part
    /// in, as `run --strategy auto` runs it), tp, pp, hybrid or single.
    #[arg(long, default_value = "auto")]
    strategy: String,
    /// Measure the mesh again instead of reusing the figures cached beside the mesh file.
    #[arg(long)]
    remeasure: bool,
    /// Positions already in each sequence's context when the nodes' decode is timed: a long
    /// chat decodes slower than a fresh one (attention reads every cached position), so plan
    /// at the context you will run at (as `onebit bench --depth`). Each node fills 16
    /// sequences that long before timing.
    #[arg(long, default_value_t = 0)]
    ctx: usize,
    /// The element type on the wire: auto (price f32, f16 and q8 and take a lossy one only
    /// where it is predicted 10 % faster than exact f32), or f32, f16, q8.
    #[arg(long, default_value = "auto")]
    wire: String,
    /// Test mode for link-emulation benchmarks (as `run --emulate-link`): hold every mesh
    /// message for DELAY_MS (± JITTER_MS); the workers need the same flag.
    #[arg(long, value_name = "DELAY_MS[,JITTER_MS]", value_parser = LinkEmulation::parse, hide = true)]
    emulate_link: Option<LinkEmulation>,
}

/// Refuses a planning context (`flag` names it) longer than the nodes can time for `c`.
pub(super) fn check_ctx(flag: &str, ctx: usize, c: &ModelConfig) -> Result<()> {
    if ctx > auto::max_ctx(c) {
        bail!(
            "{flag} {ctx}: at most {} for this model ({} positions, some taken by the timing)",
            auto::max_ctx(c),
            c.max_positions
        );
    }
    Ok(())
}

fn describe(s: &Strategy) -> String {
    match s {
        Strategy::Single { node } => format!("one node ({node})"),
        Strategy::Tensor { q_heads, ffn } => {
            format!("tensor parallel: query heads {q_heads:?}, ffn {ffn:?}")
        }
        Strategy::Pipeline { layers } => format!("pipeline: blocks {layers:?}"),
        Strategy::Hybrid { groups, layers } => {
            format!("hybrid: nodes per stage {groups:?}, blocks {layers:?}")
        }
    }
}

/// A candidate as [`describe`] names its strategy, with how tensor-parallel pieces meet where
/// they are summed (a lossy wire: `--tp-merge auto`).
fn describe_plan(p: &onebit_dist::plan::Plan) -> String {
    match p.strategy {
        Strategy::Tensor { .. } if p.wire != WireDtype::F32 => {
            format!("{}, summed", describe(&p.strategy))
        }
        _ => describe(&p.strategy),
    }
}

/// Runs `onebit plan`.
pub fn run(a: Args) -> Result<()> {
    if a.batch == 0 || a.threads == 0 {
        bail!("--batch and --threads must be at least 1");
    }
    let pick = |s: &Strategy| match a.strategy.as_str() {
        "tp" => matches!(s, Strategy::Tensor { .. }),
        "pp" => matches!(s, Strategy::Pipeline { .. }),
        "single" => matches!(s, Strategy::Single { .. }),
        "hybrid" => matches!(s, Strategy::Hybrid { .. }),
        _ => false,
    };
    if !["auto", "tp", "pp", "hybrid", "single"].contains(&a.strategy.as_str()) {
        bail!("unknown --strategy '{}' (auto, tp, pp, hybrid, single)", a.strategy);
    }
    let wire = match a.wire.as_str() {
        "auto" => None,
        w => Some(
            WireDtype::from_name(w)
                .ok_or_else(|| anyhow::anyhow!("unknown --wire '{w}' (auto, f32, f16, q8)"))?,
        ),
    };
    let c = ModelConfig::from_gguf(&GgufModelFile::open(&a.model)?.header)?;
    check_ctx("--ctx", a.ctx, &c)?;
    let measured = auto::measure(&a.mesh, &c, a.threads, a.ctx, a.remeasure, a.emulate_link)?;
    if a.ctx > 0 {
        println!("decode timed after {} positions of context", a.ctx);
    }
    if measured.cached {
        println!("figures from {} (--remeasure to measure again)", auto::cache_path(&a.mesh));
    }
    let (links, nodes, addrs) = (&measured.links, &measured.nodes, &measured.names);
    print!("{}", onebit_dist::probe::links_table(links));
    // The batch curve: a pass over 2, 4, 8, 16 sequences as a multiple of one sequence's, and
    // the linears' and the context's attention's shares of the blocks' pass at 1 and 16
    // sequences (what tensor parallelism splits), and the head's share of a one-sequence pass.
    println!(
        "{:<6} {:<24} {:>12} {:>7} {:>23} {:>23} {:>9} {:>9} {:>10}",
        "node",
        "address",
        "alone tok/s",
        "head %",
        "blocks x2/4/8/16",
        "head x2/4/8/16",
        "lin 1/16",
        "ctx 1/16",
        "memory GB"
    );
    let curve =
        |x: &[f64; 5]| x[1..].iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" ");
    for (i, (n, addr)) in nodes.iter().zip(addrs).enumerate() {
        let ends = |s: &[f64; 5]| format!("{:.2} {:.2}", s[0], s[4]);
        let head = n.batch.head_share.map_or("-".to_string(), |h| format!("{:.1}", 100.0 * h));
        println!(
            "{i:<6} {:<24} {:>12.2} {head:>7} {:>23} {:>23} {:>9} {:>9} {:>10.1}",
            addr,
            1.0 / n.token_s,
            curve(&n.batch.blocks),
            curve(&n.batch.head),
            ends(&n.batch.linear_share),
            ends(&n.batch.context_share),
            n.mem_bytes as f64 / 1e9
        );
    }
    let (plans, auto_choice) = auto::choose(&c, 2.0, &measured, a.batch, wire)?;
    // A plan mixing types names each link's (`hops=q8,f32/groups=f32,-`).
    let ww = plans.iter().map(|p| p.wire_label().len()).max().unwrap_or(4).max(4);
    println!(
        "{:<64} {:>ww$} {:>10} {:>12} {:>12} {:>6}",
        "candidate",
        "wire",
        "tok/s",
        format!("tok/s @{}", a.batch),
        "wire B/tok",
        "syncs"
    );
    for p in &plans {
        println!(
            "{:<64} {:>ww$} {:>10.2} {:>12.2} {:>12} {:>6}",
            describe_plan(p),
            p.wire_label(),
            p.tok_s,
            p.tok_s_batch,
            p.wire_bytes,
            p.syncs
        );
    }
    // An explicit strategy takes its fastest candidate under the rule auto uses for the type.
    let choice = if a.strategy == "auto" {
        Some(&auto_choice)
    } else {
        let exact = wire.unwrap_or(WireDtype::F32);
        auto::fastest_with_wire_rule(&plans, exact, |p| pick(&p.strategy), Goal::OneSequence)
    };
    let Some(choice) = choice else {
        bail!("no '{}' candidate fits this mesh", a.strategy);
    };
    match choice.strategy {
        Strategy::Single { .. } => println!("choice: {}", describe(&choice.strategy)),
        _ => println!("choice: {} (wire {})", describe_plan(choice), choice.wire_label()),
    }
    let wire_flag = match choice.wire {
        WireDtype::F32 => String::new(),
        _ => format!(" --wire {}", choice.wire_label()),
    };
    match &choice.strategy {
        Strategy::Pipeline { layers } => {
            let split: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
            println!(
                "run it: onebit run {} --mesh {} --split {}{wire_flag}",
                a.model,
                a.mesh,
                split.join(",")
            );
        }
        Strategy::Tensor { .. } => {
            let shares: Vec<String> =
                auto::speed_shares(&measured).iter().map(|s| format!("{s:.2}")).collect();
            println!(
                "run it: onebit run {} --mesh {} --strategy tp --shares {}{wire_flag}",
                a.model,
                a.mesh,
                shares.join(",")
            );
        }
        Strategy::Hybrid { groups, layers } => {
            let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
            let shares: Vec<String> =
                auto::speed_shares(&measured).iter().map(|s| format!("{s:.2}")).collect();
            println!(
                "run it: onebit run {} --mesh {} --strategy hybrid --groups {} --split {} --shares {}{wire_flag}",
                a.model,
                a.mesh,
                list(groups),
                list(layers),
                shares.join(",")
            );
        }
        Strategy::Single { .. } => {}
    }
    if a.strategy == "auto" && a.batch > 1 {
        // What `onebit serve --slots N --strategy auto` runs: the fastest aggregate of the same
        // candidates (priced above for `a.batch` in flight).
        let busy = auto::pick_for(&plans, wire, Goal::InFlight)?;
        println!(
            "for {} sequences in flight (serve --slots {} --strategy auto): {}{}, {:.2} tok/s decoding",
            a.batch,
            a.batch,
            describe_plan(busy),
            match busy.strategy {
                Strategy::Single { .. } => String::new(),
                _ => format!(" (wire {})", busy.wire_label()),
            },
            busy.tok_s_batch
        );
    }
    Ok(())
}

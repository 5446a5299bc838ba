//! The planner's staged plans: a pipeline (every stage one node) and hybrids (stages of
//! consecutive nodes, each running its blocks tensor-parallel, as [`crate::hybrid`] does).
//! Both pick the blocks per stage by the same dynamic programming within every node's memory,
//! twice: for sequences in flight the split whose slowest stage is fastest, for one sequence
//! the split whose trip round the stages is shortest (more blocks on faster stages); each is
//! a candidate where they differ.
//!
//! A stage of nodes `G` running `l` of the `L` blocks takes, per token,
//! `(l/L) / Σ_{i∈G} 1/b_i` (its nodes' speeds add up: pieces are in proportion to speed; `b_i`
//! node i's time for every block, its measured share of a pass), plus on the head's stage the
//! output head (the head's measured time), both grown by the curves at the stage's rows (one
//! for one sequence, the micro-batch for sequences in flight), plus, where
//! `G` has several nodes, `4l` gathers over the group's slowest link (latency plus the
//! pieces a node receives over its bandwidth, in the group's element type) and the leader
//! handing the rows to the others (in the type they came in; the head's own as f32).
//! Each hop between leaders costs its link's latency and the rows in the hop's type.

use crate::plan::{Inputs, Plan, Strategy, LOSSY_LINK_GAIN};
use crate::probe::LinkProbe;
use crate::speed::BatchCurve;
use crate::stage_wires::StageWires;
use crate::wire::WireDtype;
use std::ops::Range;

/// What the planner knows of one stage's group.
struct Group {
    nodes: Range<usize>,
    /// Sum of the nodes' speeds over the blocks (passes over every block per second).
    speed: f64,
    /// The slowest node's seconds for a pass over every block: the pace of the work outside
    /// the linears, which every node of the group does whole.
    slowest_s: f64,
    /// The nodes' mean batch curve.
    batch: BatchCurve,
    /// The slowest link inside the group: latency (s) and bandwidth (bytes/s).
    latency: f64,
    bandwidth: f64,
}

/// The pipeline over every node in mesh order (its split for throughput, and for one
/// sequence where that differs).
pub(crate) fn pipeline_plans(x: &Inputs<'_>, links: &[LinkProbe]) -> Vec<Plan> {
    let sizes = vec![1; x.nodes.len()];
    let w = StageWires::uniform(sizes.len(), x.wire);
    both_goals(x, links, &sizes, &w).into_iter().map(|p| named(sizes.clone(), p)).collect()
}

/// Stages of consecutive nodes for every hybrid of `n` nodes: at least one stage with several
/// nodes and more than one stage.
fn hybrid_sizes(n: usize) -> Vec<Vec<usize>> {
    if n < 3 {
        return Vec::new();
    }
    // Bit i of `cuts` set: a stage ends after node i.
    (1..(1u32 << (n - 1)) - 1)
        .map(|cuts| {
            let mut sizes = vec![1];
            for i in 0..n - 1 {
                if cuts & (1 << i) != 0 {
                    sizes.push(1);
                } else {
                    *sizes.last_mut().expect("one stage at least") += 1;
                }
            }
            sizes
        })
        .collect()
}

/// The plan of stages of `sizes` nodes, named as a pipeline or a hybrid.
fn named(sizes: Vec<usize>, (layers, p): (Vec<usize>, Plan)) -> Plan {
    let strategy = match sizes.iter().all(|&n| n == 1) {
        true => Strategy::Pipeline { layers },
        false => Strategy::Hybrid { groups: sizes, layers },
    };
    Plan { strategy, ..p }
}

/// Fastest first; beyond 4 nodes only the 3 fastest.
fn fastest_hybrids(mut out: Vec<Plan>, n: usize) -> Vec<Plan> {
    out.sort_by(|a, b| b.tok_s.total_cmp(&a.tok_s));
    if n > 4 {
        out.truncate(3);
    }
    out
}

/// Every hybrid of 3 or more nodes (stages of consecutive nodes, at least one with several
/// and more than one stage), fastest first; beyond 4 nodes only the 3 fastest.
pub(crate) fn hybrid_plans(x: &Inputs<'_>, links: &[LinkProbe]) -> Vec<Plan> {
    let n = x.nodes.len();
    let out = hybrid_sizes(n)
        .into_iter()
        .flat_map(|sizes| {
            let w = StageWires::uniform(sizes.len(), x.wire);
            both_goals(x, links, &sizes, &w).into_iter().map(move |p| named(sizes.clone(), p))
        })
        .collect();
    fastest_hybrids(out, n)
}

/// The pipeline and every hybrid with each link's type chosen on its own ([`per_link`]),
/// where that mixes types (one type everywhere is [`pipeline_plans`]' and [`hybrid_plans`]').
pub(crate) fn per_link_plans(x: &Inputs<'_>, links: &[LinkProbe]) -> Vec<Plan> {
    let n = x.nodes.len();
    let mixed = |sizes: Vec<usize>| {
        let w = per_link(x, links, &sizes)?;
        let plans = both_goals(x, links, &sizes, &w);
        Some(plans.into_iter().map(move |p| named(sizes.clone(), p)))
    };
    let hybrids =
        fastest_hybrids(hybrid_sizes(n).into_iter().filter_map(mixed).flatten().collect(), n);
    mixed(vec![1; n]).into_iter().flatten().chain(hybrids).collect()
}

/// The types of stages of `sizes` nodes with each link's chosen on its own, where they mix:
/// starting from f32 everywhere, a hop or a group's gathers goes f16 or int8 (the faster)
/// where that alone makes the plan (its split for one sequence) [`LOSSY_LINK_GAIN`] times as
/// fast.
fn per_link(x: &Inputs<'_>, links: &[LinkProbe], sizes: &[usize]) -> Option<StageWires> {
    let s = sizes.len();
    let exact = StageWires::uniform(s, WireDtype::F32);
    let speed = |w: &StageWires| staged(x, links, sizes, w, Goal::Latency).map(|p| p.1.tok_s);
    let base = speed(&exact)?;
    let mut chosen = exact.clone();
    // Slots 0..s: the hops; s..2s: the groups' gathers (none for a stage of one node).
    for slot in (0..2 * s).filter(|&i| i < s || sizes[i - s] > 1) {
        let mut best = (base * LOSSY_LINK_GAIN, WireDtype::F32);
        for d in [WireDtype::F16, WireDtype::Q8] {
            let mut w = exact.clone();
            *slot_of(&mut w, slot, s) = d;
            match speed(&w) {
                Some(v) if v > best.0 => best = (v, d),
                _ => {}
            }
        }
        *slot_of(&mut chosen, slot, s) = best.1;
    }
    chosen.single_type(sizes).is_none().then_some(chosen)
}

fn slot_of(w: &mut StageWires, slot: usize, s: usize) -> &mut WireDtype {
    match slot < s {
        true => &mut w.hops[slot],
        false => &mut w.gathers[slot - s],
    }
}

/// What the blocks per stage of a staged plan are chosen for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Goal {
    /// Sequences in flight: the slowest stage fastest (then the shortest trip).
    Throughput,
    /// One sequence: the shortest trip round the stages (then the fastest slowest stage).
    Latency,
}

impl Goal {
    /// Whether (slowest stage, sum of stages) `a` is better than `b` (equal within 1e-9 on
    /// the first figure: the other decides).
    fn prefers(self, a: (f64, f64), b: (f64, f64)) -> bool {
        // Nothing found yet: any split that runs is better.
        if !b.0.is_finite() {
            return a.0.is_finite();
        }
        let key = |(worst, sum): (f64, f64)| match self {
            Goal::Throughput => (worst, sum),
            Goal::Latency => (sum, worst),
        };
        let (a, b) = (key(a), key(b));
        let tol = 1e-9 * b.0.abs();
        a.0 < b.0 - tol || (a.0 <= b.0 + tol && a.1 < b.1)
    }
}

/// The plans of stages of `sizes` sending as `wires`: blocks per stage for throughput, and
/// for one sequence where that split differs.
fn both_goals(
    x: &Inputs<'_>,
    links: &[LinkProbe],
    sizes: &[usize],
    wires: &StageWires,
) -> Vec<(Vec<usize>, Plan)> {
    let mut out: Vec<(Vec<usize>, Plan)> = Vec::new();
    for goal in [Goal::Throughput, Goal::Latency] {
        match staged(x, links, sizes, wires, goal) {
            Some(p) if out.iter().all(|(l, _)| l != &p.0) => out.push(p),
            _ => {}
        }
    }
    out
}

/// The best blocks per stage for `goal` for stages of `sizes` consecutive nodes sending as
/// `wires`, and the plan's figures.
fn staged(
    x: &Inputs<'_>,
    links: &[LinkProbe],
    sizes: &[usize],
    wires: &StageWires,
    goal: Goal,
) -> Option<(Vec<usize>, Plan)> {
    let Inputs { c, bytes, block_frac, nodes, hop, k, .. } = *x;
    let hidden = c.hidden as f64;
    // Bytes of one hidden state hopping out of stage g, and handed on inside it (the head's
    // group gets its embeddings as f32).
    let hop_bytes = |g: usize| hidden * wires.hops[g].value_bytes();
    let hand_on_bytes = |g: usize| match g {
        0 => hidden * 4.0,
        _ => hop_bytes(g - 1),
    };
    let layers = c.layers as f64;
    let per_layer_bytes = bytes * block_frac / layers;
    let head_bytes = bytes * (1.0 - block_frac);
    let link =
        |a: usize, b: usize| links.iter().find(|l| l.a == a.min(b) && l.b == a.max(b)).cloned();
    let mut groups = Vec::with_capacity(sizes.len());
    let mut first = 0;
    for &n in sizes {
        let r = first..first + n;
        let pairs: Vec<LinkProbe> = r
            .clone()
            .flat_map(|a| (a + 1..r.end).map(move |b| (a, b)))
            .map(|(a, b)| link(a, b))
            .collect::<Option<_>>()?;
        let blocks_s = |i: usize| nodes[i].blocks_s(block_frac);
        groups.push(Group {
            speed: r.clone().map(|i| 1.0 / blocks_s(i)).sum(),
            slowest_s: r.clone().map(blocks_s).fold(0.0, f64::max),
            batch: BatchCurve::mean(r.clone().map(|i| nodes[i].batch)),
            latency: pairs.iter().map(|l| l.exchange_latency_s).fold(0.0, f64::max),
            bandwidth: pairs.iter().map(|l| l.exchange_bandwidth_bps).fold(f64::INFINITY, f64::min),
            nodes: r,
        });
        first += n;
    }
    let gathered = |g: usize| crate::plan::gathered_per_block(c, wires.gathers[g].value_bytes());
    let stage_t = |g: usize, l: usize, rows: f64| {
        let gr = &groups[g];
        let n = gr.nodes.len() as f64;
        // The linears and attention over the context split in proportion to speed; the rest
        // is every node's.
        let share = gr.batch.linear_share_at(rows) + gr.batch.context_share_at(rows);
        let per_block = share / gr.speed + (1.0 - share) * gr.slowest_s;
        let mut t = l as f64 / layers * per_block * gr.batch.blocks_x(rows);
        if g == 0 {
            t += nodes[0].head_s(block_frac) * nodes[0].batch.head_x(rows);
        }
        if n > 1.0 {
            let lead = gr.nodes.start;
            t += 4.0 * l as f64 * gr.latency
                + gathered(g) * l as f64 * (n - 1.0) / n * rows / gr.bandwidth
                + hop(lead, lead + 1, rows * hand_on_bytes(g));
        }
        t
    };
    let fits = |g: usize, l: usize| {
        let gr = &groups[g];
        gr.nodes.clone().all(|i| {
            // The executor's pieces: in proportion to whole-model speed.
            let speed: f64 = gr.nodes.clone().map(|j| 1.0 / nodes[j].token_s).sum();
            let share = 1.0 / nodes[i].token_s / speed;
            per_layer_bytes * l as f64 * share + if i == 0 { head_bytes } else { 0.0 }
                <= nodes[i].mem_bytes as f64
        })
    };
    // best[i][j]: with stages 0..i holding j blocks, every stage at least one block, the
    // (slowest stage, sum of stages) pair best for `goal` at its rows (sequences in flight go
    // round in s micro-batches); back[i][j] the blocks of stage i - 1.
    let (s, total) = (groups.len(), c.layers);
    let micro = (k as f64 / s as f64).max(1.0);
    let rows = match goal {
        Goal::Throughput => micro,
        Goal::Latency => 1.0,
    };
    let inf = (f64::INFINITY, f64::INFINITY);
    let mut best = vec![vec![inf; total + 1]; s + 1];
    let mut back = vec![vec![0usize; total + 1]; s + 1];
    best[0][0] = (0.0, 0.0);
    for i in 1..=s {
        for j in i..=total {
            for l in 1..=j - (i - 1) {
                let (worst, sum) = best[i - 1][j - l];
                if worst.is_finite() && fits(i - 1, l) {
                    let t = stage_t(i - 1, l, rows);
                    let v = (worst.max(t), sum + t);
                    if goal.prefers(v, best[i][j]) {
                        best[i][j] = v;
                        back[i][j] = l;
                    }
                }
            }
        }
    }
    if !best[s][total].0.is_finite() {
        return None;
    }
    let mut split = vec![0; s];
    let mut j = total;
    for i in (1..=s).rev() {
        split[i - 1] = back[i][j];
        j -= back[i][j];
    }
    // A trip: every stage once and a hop between leaders after each (the last to the head).
    let leader = |g: usize| groups[g % s].nodes.start;
    let trip = |rows: f64| -> Vec<f64> {
        (0..s)
            .map(|g| {
                stage_t(g, split[g], rows) + hop(leader(g), leader(g + 1), rows * hop_bytes(g))
            })
            .collect()
    };
    let t: f64 = trip(1.0).iter().sum();
    // k sequences in s micro-batches: a micro-batch finishes each cycle of the slowest step,
    // and no sequence moves faster than its own trip.
    let steps = trip(micro);
    let cycle = steps.iter().copied().fold(0.0, f64::max);
    let sum: f64 = steps.iter().sum();
    let batch = (micro / cycle)
        .min(k as f64 / sum * s as f64)
        .min(k as f64 / sum * (k as f64 / micro).max(1.0));
    let (mut syncs, mut bytes_out) = (s, (0..s).map(hop_bytes).sum::<f64>());
    for (g, gr) in groups.iter().enumerate() {
        let n = gr.nodes.len();
        if n > 1 {
            syncs += 4 * split[g] + 1;
            bytes_out +=
                (n - 1) as f64 * hand_on_bytes(g) + gathered(g) * split[g] as f64 * (n - 1) as f64;
        }
    }
    let plan = Plan {
        strategy: Strategy::Pipeline { layers: Vec::new() },
        tok_s: 1.0 / t,
        tok_s_batch: batch,
        wire_bytes: bytes_out as u64,
        syncs,
        wire: wires.lossiest(sizes),
        wires: wires.clone(),
    };
    Some((split, plan))
}

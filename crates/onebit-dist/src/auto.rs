//! `--strategy auto`: measure the mesh (every link, every node's speed on the model's shape;
//! [`crate::bootstrap::Job::Plan`]) or reuse the measurements cached beside the mesh file,
//! ask the planner, and take its fastest plan for one sequence that the executors run from
//! this head: one node (the head alone), tensor parallel over all nodes (shares in
//! proportion to the measured speeds, the planner's split) or a pipeline (the planner's
//! block ranges). A plan that puts the whole model on a worker is left out: the head holds
//! the user's session and samples, so it takes part in every plan it runs. The head alone is
//! kept unless a plan across the network is predicted [`NETWORK_GAIN`] times as fast: node
//! timings drift by a few percent, and a plan a few percent ahead on paper is a coin toss
//! that adds the network's failures.
//!
//! The element type on the wire is chosen the same way when the user leaves it to the
//! planner: f32 (exact) unless f16 or int8 is predicted at least [`LOSSY_WIRE_GAIN`] times
//! as fast for one sequence (a slow link); they change the logits slightly, so they have to
//! buy a clear gain.
//!
//! The cache (`<mesh file>.measured.toml`) holds the addresses, the model's shape and the
//! threads it was measured for; any of them changing, or `remeasure`, measures again.

use crate::bootstrap::{run_head, Job, JobResult, MeshFile, PlanJob};
use crate::error::{DistError, Result};
use crate::key::read_key_file;
use crate::link_emulation::LinkEmulation;
use crate::plan::{plan_per_link, plan_with, NodeSpec, Plan, Strategy, LOSSY_LINK_GAIN};
use crate::probe::{LinkProbe, ProbeOptions};
use crate::speed::{BatchCurve, NodeMeasure};
use crate::tcp::TcpConfig;
use crate::wire::WireDtype;
use onebit_model::ModelConfig;
use std::net::TcpListener;
use std::time::Duration;

/// A link's figures in the cache: ranks, rtt, jitter, latency, bandwidth, and the
/// exchange's latency and bandwidth.
type CachedLink = (usize, usize, f64, f64, f64, f64, f64, f64);

/// The measurements the planner needs, as cached.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Cached {
    addrs: Vec<String>,
    shape: Vec<usize>,
    threads: usize,
    /// Positions in context when the nodes were timed (0 in caches written before it).
    #[serde(default)]
    ctx: usize,
    /// The emulated link's delay and jitter, µs (0, 0: none).
    emulated_us: (u64, u64),
    /// Per link: lower rank, higher rank, rtt, jitter, latency (s), bandwidth (B/s), the
    /// exchange's latency (s) and bandwidth (B/s).
    links: Vec<CachedLink>,
    /// Per node: seconds per token, memory bytes, batch curve of the blocks and of the head,
    /// the linears' and the context's shares, the head's share of a pass (NaN: none)
    /// (`crate::speed::BatchCurve`). A cache from before the head's share does not parse and
    /// is measured again.
    nodes: Vec<CachedNode>,
}

impl Cached {
    /// Whether these figures were measured for exactly this mesh, shape, threads, context and
    /// link emulation (each changes what is measured).
    fn is_for(
        &self,
        names: &[String],
        c: &ModelConfig,
        threads: usize,
        ctx: usize,
        emulated: (u64, u64),
    ) -> bool {
        self.addrs == names
            && self.shape == shape(c)
            && (self.threads, self.ctx, self.emulated_us) == (threads, ctx, emulated)
    }
}

/// A node in the cache: seconds per token, memory bytes, the blocks' and the head's batch
/// curve, the linears' and the context's shares, the head's share of a pass.
type CachedNode = (f64, u64, [f64; 5], [f64; 5], [f64; 5], [f64; 5], f64);

fn emulated_us(e: Option<LinkEmulation>) -> (u64, u64) {
    e.map_or((0, 0), |e| (e.delay.as_micros() as u64, e.jitter.as_micros() as u64))
}

fn shape(c: &ModelConfig) -> Vec<usize> {
    vec![c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab]
}

/// The mesh as measured: links, nodes, and whether it came from the cache.
pub struct Measured {
    /// Every link.
    pub links: Vec<LinkProbe>,
    /// Every node, head first.
    pub nodes: Vec<NodeMeasure>,
    /// Their addresses.
    pub names: Vec<String>,
    /// Read from the cache rather than measured now.
    pub cached: bool,
}

/// The cache file of a mesh file.
pub fn cache_path(mesh: &str) -> String {
    format!("{mesh}.measured.toml")
}

/// The longest context the nodes can time decoding after for `c`: the model must hold it and
/// the positions the timing adds.
pub fn max_ctx(c: &ModelConfig) -> usize {
    c.max_positions.saturating_sub(crate::speed::TIMED_PASSES).min(crate::bootstrap::MAX_CTX)
}

/// Measures the mesh in `mesh` for a model of shape `c` run with `threads` threads per node,
/// decoding after `ctx` positions, or reads the measurements cached for exactly that (unless
/// `remeasure`).
/// `emulate`: the links' test-mode delay (it changes what is measured, so it is part of the
/// cache's key).
pub fn measure(
    mesh: &str,
    c: &ModelConfig,
    threads: usize,
    ctx: usize,
    remeasure: bool,
    emulate: Option<LinkEmulation>,
) -> Result<Measured> {
    let m = MeshFile::read(mesh)?;
    let addrs = m.addrs()?;
    let names: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let path = cache_path(mesh);
    let found = std::fs::read_to_string(&path).ok().and_then(|t| toml::from_str::<Cached>(&t).ok());
    if let Some(k) =
        found.filter(|k| !remeasure && k.is_for(&names, c, threads, ctx, emulated_us(emulate)))
    {
        let links = k
            .links
            .iter()
            .map(|&(a, b, rtt_s, jitter_s, latency_s, bandwidth_bps, ex_lat, ex_bw)| LinkProbe {
                a,
                b,
                rtt_s,
                jitter_s,
                latency_s,
                bandwidth_bps,
                exchange_latency_s: ex_lat,
                exchange_bandwidth_bps: ex_bw,
            })
            .collect();
        let nodes = k
            .nodes
            .iter()
            .map(|&(token_s, mem_bytes, blocks, head, linear_share, context_share, h)| {
                let head_share = Some(h).filter(|h| !h.is_nan());
                let batch = BatchCurve { blocks, head, linear_share, context_share, head_share };
                NodeMeasure { token_s, mem_bytes, batch }
            })
            .collect();
        return Ok(Measured { links, nodes, names, cached: true });
    }
    let cfg = TcpConfig { emulate, ..TcpConfig::new(read_key_file(&m.key_file)?) };
    let listener = TcpListener::bind(addrs[0]).map_err(|e| {
        DistError::Usage(format!("cannot listen on the head address {}: {e}", addrs[0]))
    })?;
    let job = Job::Plan(PlanJob { shape: c.clone(), threads, ctx, probe: ProbeOptions::default() });
    let JobResult::Plan(links, nodes) =
        run_head(&listener, &addrs, &job, &cfg, Duration::from_secs(1800))?
    else {
        return Err(DistError::Usage("the plan job returned another job's result".into()));
    };
    let k = Cached {
        addrs: names.clone(),
        shape: shape(c),
        threads,
        ctx,
        emulated_us: emulated_us(emulate),
        links: links
            .iter()
            .map(|l| {
                let ex = (l.exchange_latency_s, l.exchange_bandwidth_bps);
                (l.a, l.b, l.rtt_s, l.jitter_s, l.latency_s, l.bandwidth_bps, ex.0, ex.1)
            })
            .collect(),
        nodes: nodes
            .iter()
            .map(|n| {
                let b = &n.batch;
                let h = b.head_share.unwrap_or(f64::NAN);
                (n.token_s, n.mem_bytes, b.blocks, b.head, b.linear_share, b.context_share, h)
            })
            .collect(),
    };
    // A cache that cannot be written only costs a measurement next time.
    match toml::to_string(&k) {
        Ok(text) => {
            let tmp = format!("{path}.tmp{}", std::process::id());
            if std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)).is_err() {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!("cannot write the measurement cache {path}");
            }
        }
        Err(e) => tracing::warn!("cannot encode the measurement cache: {e}"),
    }
    Ok(Measured { links, nodes, names, cached: false })
}

/// How many times as fast (predicted, one sequence) a plan sending f16 or int8 must be as
/// the best f32 plan for the planner to choose it.
pub const LOSSY_WIRE_GAIN: f64 = 1.1;

/// How many times as fast (predicted, by the goal's speed) a plan across the network must be
/// as the head alone for the planner to leave it. Two nodes of one CPU model measure 4-8 %
/// apart from run to run on a shared host (bench/runs/2026-12-07-zen4-issue15-wire-like-link.txt:
/// 19.63 vs 21.22 tok/s), and the pipeline that moved 29 of 30 blocks to the "faster" one ran
/// at 0.90-1.00x the head alone; a plan that leans on the network has to buy a clear gain.
pub const NETWORK_GAIN: f64 = 1.05;

/// What `--strategy auto` chooses a plan for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// One sequence (`run`, `chat`, `bench`): the fastest plan for it.
    OneSequence,
    /// The `k` sequences a server keeps in flight (`serve --slots k`): the fastest aggregate,
    /// where a pipeline keeps every node busy and one sequence alone would gain nothing.
    InFlight,
}

impl Goal {
    /// The predicted speed this goal compares plans by.
    pub fn speed(self, p: &Plan) -> f64 {
        match self {
            Goal::OneSequence => p.tok_s,
            Goal::InFlight => p.tok_s_batch,
        }
    }
}

/// [`choose_for`] one sequence.
pub fn choose(
    c: &ModelConfig,
    bpw: f64,
    m: &Measured,
    k: usize,
    wire: Option<WireDtype>,
) -> Result<(Vec<Plan>, Plan)> {
    choose_for(c, bpw, m, k, wire, Goal::OneSequence)
}

/// Every candidate for `c` on the measured mesh (`k` sequences for the batch figure), the
/// fastest for one sequence first, and the one `--strategy auto` runs for `goal`: the fastest
/// the head takes part in.
/// `wire` fixes the element type on the wire; None prices f32, f16 and int8 on every link and,
/// for pipelines and hybrids, a type chosen link by link ([`plan_per_link`]), and takes a plan
/// with any lossy link only where it is [`LOSSY_WIRE_GAIN`] times as fast as exact f32.
pub fn choose_for(
    c: &ModelConfig,
    bpw: f64,
    m: &Measured,
    k: usize,
    wire: Option<WireDtype>,
    goal: Goal,
) -> Result<(Vec<Plan>, Plan)> {
    let specs: Vec<NodeSpec> = m
        .nodes
        .iter()
        .zip(&m.names)
        .map(|(n, name)| NodeSpec {
            name: name.clone(),
            token_s: n.token_s,
            mem_bytes: n.mem_bytes,
            batch: n.batch,
        })
        .collect();
    let first = wire.unwrap_or(WireDtype::F32);
    let mut plans = plan_with(c, bpw, &specs, &m.links, k, first)?;
    if wire.is_none() {
        // One node sends nothing: its plan is listed once, with the first type.
        let split = |p: &Plan| !matches!(p.strategy, Strategy::Single { .. });
        for d in [WireDtype::F16, WireDtype::Q8] {
            plans.extend(plan_with(c, bpw, &specs, &m.links, k, d)?.into_iter().filter(split));
        }
        plans.extend(plan_per_link(c, bpw, &specs, &m.links, k)?.into_iter().filter(split));
        plans.sort_by(|a, b| b.tok_s.total_cmp(&a.tok_s));
    }
    let choice = pick_for(&plans, wire, goal)?.clone();
    Ok((plans, choice))
}

/// The plan `--strategy auto` runs for `goal` among the candidates [`choose_for`] listed with
/// the same `wire`: the fastest the head takes part in, under the wire rule.
pub fn pick_for(plans: &[Plan], wire: Option<WireDtype>, goal: Goal) -> Result<&Plan> {
    let runnable = |p: &Plan| !matches!(p.strategy, Strategy::Single { node } if node != 0);
    let exact = wire.unwrap_or(WireDtype::F32);
    fastest_with_wire_rule(plans, exact, runnable, goal).ok_or_else(|| {
        DistError::Usage("no plan this head can run fits the mesh (only single workers)".into())
    })
}

/// Among `plans` that pass `keep`, by `goal`'s speed: the fastest sending `exact` (the head
/// alone, where it is listed, unless that plan is [`NETWORK_GAIN`] times as fast), unless one
/// sending another type on some link is [`LOSSY_WIRE_GAIN`] times as fast; then, of those
/// within [`LOSSY_LINK_GAIN`] of the fastest, the one rounding on the fewest links (plans
/// priced with one type only: the fastest). Ties go to the earlier plan.
pub fn fastest_with_wire_rule(
    plans: &[Plan],
    exact: WireDtype,
    keep: impl Fn(&Plan) -> bool,
    goal: Goal,
) -> Option<&Plan> {
    let v = |p: &Plan| goal.speed(p);
    let faster = |a: &&Plan, b: &&Plan| v(a).total_cmp(&v(b));
    // `max_by` keeps the last of equals: reversed, the first.
    let best = plans.iter().rev().filter(|p| keep(p) && p.wire == exact).max_by(faster)?;
    let home = |p: &&Plan| keep(p) && matches!(p.strategy, Strategy::Single { node: 0 });
    let best = match plans.iter().find(home) {
        Some(h) if v(best) < v(h) * NETWORK_GAIN => h,
        _ => best,
    };
    let gains = |p: &&Plan| keep(p) && p.wire != exact && v(p) >= v(best) * LOSSY_WIRE_GAIN;
    let Some(top) = plans.iter().filter(gains).map(v).reduce(f64::max) else {
        return Some(best);
    };
    plans
        .iter()
        .filter(gains)
        .filter(|p| v(p) * LOSSY_LINK_GAIN >= top)
        .min_by(|a, b| a.lossy_links().cmp(&b.lossy_links()).then(v(b).total_cmp(&v(a))))
}

/// Tensor-parallel shares in proportion to the measured speeds (the planner's split).
pub fn speed_shares(m: &Measured) -> Vec<f64> {
    m.nodes.iter().map(|n| 1.0 / n.token_s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_through_toml() {
        let k = Cached {
            addrs: vec!["127.0.0.1:1".into(), "[::1]:2".into()],
            shape: vec![1, 2, 3, 4, 5, 6, 7],
            threads: 2,
            ctx: 1000,
            emulated_us: (5000, 2000),
            links: vec![(0, 1, 1e-4, 2e-5, 5e-5, 1.2e9, 2e-5, 8e8)],
            nodes: vec![
                (
                    0.07,
                    1 << 34,
                    [1.0, 1.5, 1.8, 2.2, 3.0],
                    [1.0, 1.1, 1.2, 1.4, 1.8],
                    [0.9; 5],
                    [0.0; 5],
                    0.26,
                ),
                (
                    0.08,
                    1 << 33,
                    [1.0; 5],
                    [1.0, 1.2, 1.3, 1.6, 2.0],
                    [1.0, 0.9, 0.9, 0.8, 0.8],
                    [0.1; 5],
                    0.3,
                ),
            ],
        };
        let back: Cached = toml::from_str(&toml::to_string(&k).unwrap()).unwrap();
        assert_eq!(back, k);
        // One written before the context was measured reads as context 0.
        let no_ctx = toml::to_string(&k).unwrap().replace("ctx = 1000\n", "");
        assert_eq!(toml::from_str::<Cached>(&no_ctx).unwrap().ctx, 0);
        // A cache written before the batch curve (one slope per node) does not parse: the
        // mesh is measured again.
        let old = toml::to_string(&k).unwrap().replace("nodes = [", "nodes_old = [");
        let old = format!("{old}nodes = [[0.07, 17179869184, 0.3]]\n");
        assert!(toml::from_str::<Cached>(&old).is_err());
        // Nor one written before the exchange figures (six fields per link).
        let six = toml::to_string(&k).unwrap().replace(", 0.00002, 800000000.0]", "]");
        assert!(six.contains("1200000000.0]]"), "{six}");
        assert!(toml::from_str::<Cached>(&six).is_err());
        // Nor one written before the linear shares (four fields per node), the context's
        // (five) or the head's share of a pass (six).
        let curve = "[1.0, 1.0, 1.0, 1.0, 1.0]";
        let old = toml::to_string(&k).unwrap().replace("nodes = [", "nodes_old = [");
        let node = |n: usize, tail: &str| {
            let curves = vec![curve; n].join(", ");
            format!("{old}nodes = [[0.07, 17179869184, {curves}{tail}]]\n")
        };
        for n in 2..=4 {
            assert!(toml::from_str::<Cached>(&node(n, "")).is_err(), "{n} curves");
        }
        let with_share = node(4, ", 0.25");
        assert!(
            toml::from_str::<Cached>(&with_share).is_ok(),
            "the same text with the share parses"
        );
        // A node without a measured head share (NaN) reads back as none.
        let mut nan = k.clone();
        nan.nodes[0].6 = f64::NAN;
        let back: Cached = toml::from_str(&toml::to_string(&nan).unwrap()).unwrap();
        assert!(back.nodes[0].6.is_nan());
    }

    #[test]
    fn cached_figures_are_reused_only_for_what_they_measured() {
        let c = ModelConfig::bitnet_2b4t();
        let names = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        let k = Cached {
            addrs: names.clone(),
            shape: shape(&c),
            threads: 1,
            ctx: 512,
            emulated_us: (0, 0),
            links: vec![],
            nodes: vec![],
        };
        assert!(k.is_for(&names, &c, 1, 512, (0, 0)));
        assert!(!k.is_for(&names, &c, 1, 0, (0, 0)), "another context");
        assert!(!k.is_for(&names, &c, 2, 512, (0, 0)), "other threads");
        assert!(!k.is_for(&names, &c, 1, 512, (5000, 2000)), "an emulated link");
        assert!(!k.is_for(&names[..1], &c, 1, 512, (0, 0)), "another mesh");
        let other = ModelConfig { layers: 4, ..c.clone() };
        assert!(!k.is_for(&names, &other, 1, 512, (0, 0)), "another shape");
    }

    fn mesh(speeds: [f64; 2], latency_s: f64, bandwidth_bps: f64) -> Measured {
        let link = LinkProbe::uniform(0, 1, latency_s, bandwidth_bps);
        Measured {
            links: vec![link],
            nodes: speeds
                .iter()
                .map(|s| NodeMeasure {
                    token_s: 1.0 / s,
                    mem_bytes: 64 << 30,
                    batch: BatchCurve::linear(0.3),
                })
                .collect(),
            names: vec!["a:1".into(), "b:2".into()],
            cached: false,
        }
    }

    #[test]
    fn attention_over_a_context_is_split_by_the_kv_heads_each_node_reads() {
        let c = ModelConfig::bitnet_2b4t();
        let tp = |m: &Measured| {
            let (plans, _) = choose(&c, 2.0, m, 8, Some(WireDtype::F32)).unwrap();
            let p = plans.into_iter().find(|p| matches!(p.strategy, Strategy::Tensor { .. }));
            p.map(|p| (p.tok_s, p.tok_s_batch)).unwrap()
        };
        let single = |m: &Measured| {
            let (plans, _) = choose(&c, 2.0, m, 8, Some(WireDtype::F32)).unwrap();
            let p = plans.into_iter().find(|p| p.strategy == Strategy::Single { node: 0 });
            p.map(|p| p.tok_s).unwrap()
        };
        let mut m = mesh([15.0, 15.0], 1e-9, 1e15);
        m.nodes.iter_mut().for_each(|n| n.batch.linear_share = [0.5; 5]);
        let (base, base8) = tp(&m);
        // 40 % of the blocks' pass moves from work every node does whole to attention over a
        // context: one node is as fast as before, tensor parallelism faster (each node reads
        // 3 of the 5 KV heads), at one sequence and at eight.
        m.nodes.iter_mut().for_each(|n| n.batch.context_share = [0.4; 5]);
        let (with, with8) = tp(&m);
        assert!(with > base * 1.1 && with8 > base8 * 1.1, "{base} {base8} -> {with} {with8}");
        assert_eq!(single(&m), 15.0);
    }

    #[test]
    fn auto_takes_the_fastest_plan_the_head_is_part_of() {
        let c = ModelConfig::bitnet_2b4t();
        // A fast link: splitting wins.
        let f32 = Some(WireDtype::F32);
        let (plans, choice) = choose(&c, 2.0, &mesh([15.0, 15.0], 30e-6, 1e9), 8, f32).unwrap();
        assert_eq!(choice.strategy, plans[0].strategy);
        assert!(matches!(choice.strategy, Strategy::Tensor { .. }), "{plans:?}");
        // A WiFi-like link: the head alone.
        let (_, choice) = choose(&c, 2.0, &mesh([15.0, 15.0], 5e-3, 12e6), 8, f32).unwrap();
        assert_eq!(choice.strategy, Strategy::Single { node: 0 });
        // A worker much faster than the head behind a slow link: the planner's best is that
        // worker alone, which this head cannot run; auto takes the best plan with the head.
        let (plans, choice) = choose(&c, 2.0, &mesh([5.0, 40.0], 5e-3, 12e6), 8, f32).unwrap();
        assert_eq!(plans[0].strategy, Strategy::Single { node: 1 });
        assert_ne!(choice.strategy, Strategy::Single { node: 1 });
        assert_eq!(choice.strategy, plans[1].strategy);
    }

    #[test]
    fn a_server_gets_the_plan_fastest_for_its_sequences_in_flight() {
        let c = ModelConfig::bitnet_2b4t();
        let f32 = Some(WireDtype::F32);
        // A WiFi-like link: one sequence is fastest on the head alone, but eight in flight
        // keep both stages of a pipeline busy (its split for throughput).
        let wifi = mesh([15.0, 15.0], 5e-3, 12e6);
        let (_, one) = choose(&c, 2.0, &wifi, 8, f32).unwrap();
        assert_eq!(one.strategy, Strategy::Single { node: 0 });
        let (plans, many) = choose_for(&c, 2.0, &wifi, 8, f32, Goal::InFlight).unwrap();
        assert!(matches!(many.strategy, Strategy::Pipeline { .. }), "{many:?}");
        let best = plans.iter().map(|p| p.tok_s_batch).fold(0.0, f64::max);
        assert_eq!(many.tok_s_batch, best, "{plans:#?}");
        assert!(many.tok_s_batch > one.tok_s_batch * 1.2, "{many:?} vs {one:?}");
        // One sequence in flight is the same question as one sequence.
        let (_, k1) = choose_for(&c, 2.0, &wifi, 1, f32, Goal::InFlight).unwrap();
        assert!(k1.tok_s_batch >= one.tok_s * 0.999, "{k1:?} vs {one:?}");
    }

    #[test]
    fn the_head_alone_unless_the_network_buys_a_clear_gain() {
        let c = ModelConfig::bitnet_2b4t();
        let f32 = Some(WireDtype::F32);
        let lan = |worker: f64| mesh([20.0, worker], 2e-4, 125e6);
        let away = |plans: &[Plan]| {
            let split = plans.iter().filter(|p| !matches!(p.strategy, Strategy::Single { .. }));
            split.map(|p| p.tok_s).fold(0.0, f64::max)
        };
        // A worker measured 3 % faster: the pipeline that hands it all but one block is
        // predicted a little faster than the head alone, not enough to leave it.
        let (plans, choice) = choose(&c, 2.0, &lan(20.6), 8, f32).unwrap();
        let home = plans.iter().find(|p| p.strategy == Strategy::Single { node: 0 }).unwrap();
        let gain = away(&plans) / home.tok_s;
        assert!(gain > 1.0 && gain < NETWORK_GAIN, "{gain} {plans:#?}");
        assert_eq!(choice.strategy, Strategy::Single { node: 0 });
        // 30 % faster: worth the hop.
        let (plans, choice) = choose(&c, 2.0, &lan(26.0), 8, f32).unwrap();
        assert!(!matches!(choice.strategy, Strategy::Single { .. }), "{plans:#?}");
        assert_eq!(choice.tok_s, away(&plans));
        assert!(choice.tok_s >= home.tok_s * NETWORK_GAIN);
    }

    #[test]
    fn the_wire_type_is_exact_unless_a_lossy_one_buys_a_clear_gain() {
        let c = ModelConfig::bitnet_2b4t();
        // Loopback-fast link: tensor parallel, f32 (int8 would save well under 10 %).
        let (plans, choice) = choose(&c, 2.0, &mesh([15.0, 15.0], 30e-6, 4e9), 8, None).unwrap();
        assert!(matches!(choice.strategy, Strategy::Tensor { .. }), "{plans:?}");
        assert_eq!(choice.wire, WireDtype::F32);
        // Every split strategy is priced with each type; the one-node plan appears once.
        let tensor = plans.iter().filter(|p| matches!(p.strategy, Strategy::Tensor { .. }));
        let mut types: Vec<_> = tensor.map(|p| p.wire).collect();
        types.sort_by_key(|w| w.value_bytes() as u32);
        assert_eq!(types, [WireDtype::Q8, WireDtype::F16, WireDtype::F32]);
        let singles = plans.iter().filter(|p| matches!(p.strategy, Strategy::Single { .. }));
        assert_eq!(singles.count(), 2);
        // A switched 1 Gbit LAN with low latency: tensor parallelism's ~1 MB of f32 a token
        // received take ~9 ms at 125 MB/s; int8 moves a quarter and wins more than 10 %.
        let lan = mesh([15.0, 15.0], 30e-6, 125e6);
        let (_, exact) = choose(&c, 2.0, &lan, 8, Some(WireDtype::F32)).unwrap();
        let (plans, choice) = choose(&c, 2.0, &lan, 8, None).unwrap();
        assert_eq!(choice.wire, WireDtype::Q8, "{plans:#?}");
        assert!(matches!(choice.strategy, Strategy::Tensor { .. }));
        assert!(choice.tok_s >= exact.tok_s * LOSSY_WIRE_GAIN);
        // A fixed type is kept.
        let (plans, choice) = choose(&c, 2.0, &lan, 8, Some(WireDtype::F16)).unwrap();
        assert!(plans.iter().all(|p| p.wire == WireDtype::F16));
        assert_eq!(choice.wire, WireDtype::F16);
    }

    #[test]
    fn a_slow_hop_goes_lossy_and_the_islands_stay_exact() {
        // Two wired islands (30 µs, 10 Gbit/s) of nodes holding half the model each, joined by
        // a slow WiFi hop (5 ms, 20 Mbit/s): a hybrid of the two islands. Int8 everywhere is
        // fastest, but int8 on the two hops alone is within 2 % of it and rounds on two links,
        // not four: auto takes that, the islands' gathers exact.
        let link = |a: usize, b: usize| {
            let (latency_s, bandwidth_bps) =
                if a / 2 == b / 2 { (3e-5, 1.25e9) } else { (5e-3, 2.5e6) };
            LinkProbe::uniform(a, b, latency_s, bandwidth_bps)
        };
        let m = Measured {
            links: (0..4).flat_map(|a| (a + 1..4).map(move |b| link(a, b))).collect(),
            nodes: (0..4)
                .map(|_| NodeMeasure {
                    token_s: 1.0 / 30.0,
                    mem_bytes: 500 << 20,
                    batch: BatchCurve::linear(0.3),
                })
                .collect(),
            names: (0..4).map(|i| format!("n:{i}")).collect(),
            cached: false,
        };
        let c = ModelConfig::bitnet_2b4t();
        let (plans, choice) = choose(&c, 2.0, &m, 8, None).unwrap();
        assert!(
            matches!(&choice.strategy, Strategy::Hybrid { groups, .. } if groups == &[2, 2]),
            "{choice:?} of {plans:#?}"
        );
        assert_eq!(choice.wires.gathers, [WireDtype::F32; 2], "{choice:?}");
        assert!(choice.wires.hops.iter().all(|&d| d != WireDtype::F32), "{choice:?}");
        assert_eq!(choice.lossy_links(), 2);
        let exact = plans.iter().find(|p| p.wire == WireDtype::F32).unwrap();
        assert!(choice.tok_s >= exact.tok_s * LOSSY_WIRE_GAIN, "{choice:?} vs {exact:?}");
        assert!(plans.iter().any(|p| p.lossy_links() == 4 && p.tok_s > choice.tok_s));
    }
}

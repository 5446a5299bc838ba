//! The planner on the 2B4T shape: uneven KV-head splits, the choice flipping from one node to
//! tensor parallel as the link gets faster, pipeline throughput with sequences in flight on
//! a WiFi-like link, memory limits, a clear refusal when the model fits nowhere, and the
//! element type chosen link by link.

use onebit_dist::plan::{apportion, plan, plan_per_link, plan_with, NodeSpec, Plan, Strategy};
use onebit_dist::probe::LinkProbe;
use onebit_dist::speed::BatchCurve;
use onebit_dist::wire::WireDtype;
use onebit_model::ModelConfig;

fn node(token_s: f64, mem_gb: f64) -> NodeSpec {
    NodeSpec {
        name: "n".into(),
        token_s,
        mem_bytes: (mem_gb * 1e9) as u64,
        batch: BatchCurve::linear(0.42),
    }
}

fn link(latency_s: f64, bandwidth_bps: f64) -> Vec<LinkProbe> {
    vec![LinkProbe::uniform(0, 1, latency_s, bandwidth_bps)]
}

#[test]
fn shares_follow_speed_by_largest_remainder() {
    assert_eq!(apportion(5, &[1.0, 1.0]), vec![3, 2]);
    assert_eq!(apportion(5, &[1.0, 2.0]), vec![2, 3]);
    assert_eq!(apportion(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
    assert_eq!(apportion(216, &[3.0, 1.0]), vec![162, 54]);
}

#[test]
fn the_link_decides_between_one_node_and_tensor_parallel() {
    let c = ModelConfig::bitnet_2b4t();
    let nodes = [node(1.0 / 30.0, 8.0), node(1.0 / 30.0, 8.0)];
    // Wired gigabit with 0.2 ms per message: 121 syncs (4 gathers per block and the logits)
    // cost more than half the model's compute, so one node is best.
    let p = plan(&c, 2.0, &nodes, &link(2e-4, 125e6), 1).unwrap();
    assert!(matches!(p[0].strategy, Strategy::Single { .. }), "{p:?}");
    let tp = p.iter().find(|x| matches!(x.strategy, Strategy::Tensor { .. })).unwrap();
    assert!(tp.tok_s < p[0].tok_s && tp.syncs == 121, "{tp:?}");
    // A loopback-fast link: tensor parallel wins, the 20 query heads split 10:10 (the
    // middle one of the 5 KV heads on both nodes).
    let p = plan(&c, 2.0, &nodes, &link(3e-5, 1e9), 1).unwrap();
    match &p[0].strategy {
        Strategy::Tensor { q_heads, ffn } => {
            assert_eq!(q_heads, &vec![10, 10]);
            assert_eq!(ffn.iter().sum::<usize>(), 6912);
        }
        s => panic!("expected tensor parallel first, got {s:?}"),
    }
    assert!(p[0].tok_s > 1.1 * 30.0, "{:?}", p[0]);
}

#[test]
fn a_lossy_wire_sums_partial_updates_in_half_the_syncs() {
    let c = ModelConfig::bitnet_2b4t();
    let nodes = [node(1.0 / 30.0, 8.0), node(1.0 / 30.0, 8.0)];
    let lan = link(2e-4, 125e6);
    let tp = |wire| {
        let p = plan_with(&c, 2.0, &nodes, &lan, 1, wire).unwrap();
        p.into_iter().find(|x| matches!(x.strategy, Strategy::Tensor { .. })).unwrap()
    };
    let (exact, q8, f16) = (tp(WireDtype::F32), tp(WireDtype::Q8), tp(WireDtype::F16));
    assert_eq!((exact.syncs, q8.syncs, f16.syncs), (121, 61, 61));
    // Each node sends its whole update twice a block: 2 · 30 · (2560 + 8) bytes in int8,
    // received by the other (and the head's pick, 8 bytes); 2 bytes a value in f16.
    assert_eq!(q8.wire_bytes, 2 * (2 * 30 * (2560 + 8) + 8));
    assert_eq!(f16.wire_bytes, 2 * (2 * 30 * (2 * 2560 + 4) + 8));
    // Gathering f32 pieces moves (2560 + 2 · 2560 + 6912) values a block, each sent once.
    assert_eq!(exact.wire_bytes, 30 * (2560 * 3 + 6912) * 4 + 8);
    // On a 0.2 ms link the halved syncs make tensor parallelism faster than one node.
    assert!(q8.tok_s > 1.2 * exact.tok_s && q8.tok_s > 30.0, "{q8:?} vs {exact:?}");
}

#[test]
fn a_pipeline_over_wifi_gains_throughput_with_sequences_in_flight() {
    let c = ModelConfig::bitnet_2b4t();
    // Each node holds only part of the model: the single-node plans are gone.
    let nodes = [node(1.0 / 30.0, 0.8), node(1.0 / 30.0, 0.8)];
    let p = plan(&c, 2.0, &nodes, &link(5e-3, 12.5e6), 8).unwrap();
    assert!(p.iter().all(|x| !matches!(x.strategy, Strategy::Single { .. })));
    let pp = p.iter().find(|x| matches!(x.strategy, Strategy::Pipeline { .. })).unwrap();
    match &pp.strategy {
        Strategy::Pipeline { layers } => assert_eq!(layers.iter().sum::<usize>(), 30),
        _ => unreachable!(),
    }
    assert!(pp.tok_s_batch > 2.0 * pp.tok_s, "{pp:?}");
}

#[test]
fn a_model_that_fits_nowhere_is_refused_with_the_shortfall() {
    let c = ModelConfig::preset("70b").unwrap();
    let e = plan(&c, 1.6, &[node(1.0, 4.0), node(1.0, 4.0)], &link(1e-4, 1e8), 1).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("needs") && msg.contains("all 2 together 8.00 GB"), "{msg}");
}

/// Links between every pair of `n` nodes: fast inside each island of `island` consecutive
/// nodes, slow between islands.
fn islands(n: usize, island: usize, fast: (f64, f64), slow: (f64, f64)) -> Vec<LinkProbe> {
    let mut v = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            let (latency_s, bandwidth_bps) = if a / island == b / island { fast } else { slow };
            v.push(LinkProbe::uniform(a, b, latency_s, bandwidth_bps));
        }
    }
    v
}

#[test]
fn two_islands_joined_by_a_slow_link_are_a_hybrid() {
    let c = ModelConfig::bitnet_2b4t();
    // Four nodes that each hold about half the model: two pairs on wired links (30 µs),
    // the pairs joined by WiFi (5 ms, 100 Mbit/s).
    let nodes = [
        node(1.0 / 30.0, 0.5),
        node(1.0 / 30.0, 0.5),
        node(1.0 / 30.0, 0.5),
        node(1.0 / 30.0, 0.5),
    ];
    let links = islands(4, 2, (3e-5, 1e9), (5e-3, 12.5e6));
    let p = plan(&c, 2.0, &nodes, &links, 8).unwrap();
    match &p[0].strategy {
        Strategy::Hybrid { groups, layers } => {
            assert_eq!(groups, &vec![2, 2], "{p:?}");
            assert_eq!(layers.iter().sum::<usize>(), 30);
        }
        s => panic!("expected a hybrid of the two islands first, got {s:?} in {p:?}"),
    }
    let best = |f: fn(&Strategy) -> bool| p.iter().find(|x| f(&x.strategy)).map(|x| x.tok_s);
    let tp = best(|s| matches!(s, Strategy::Tensor { .. })).unwrap();
    let pp = best(|s| matches!(s, Strategy::Pipeline { .. })).unwrap();
    assert!(p[0].tok_s > 1.1 * pp && p[0].tok_s > 2.0 * tp, "{p:?}");
    // Every composition of 4 nodes into 2 or 3 stages with a group is a candidate (some with
    // two splits: for throughput and for one sequence).
    let mut compositions: Vec<&Vec<usize>> = p
        .iter()
        .filter_map(|x| match &x.strategy {
            Strategy::Hybrid { groups, .. } => Some(groups),
            _ => None,
        })
        .collect();
    compositions.dedup();
    compositions.sort();
    compositions.dedup();
    assert_eq!(compositions.len(), 6, "{p:?}");
    // With the islands on fast links everywhere, one tensor-parallel mesh beats the hybrid.
    let fast = islands(4, 4, (3e-5, 1e9), (3e-5, 1e9));
    let p = plan(&c, 2.0, &nodes, &fast, 1).unwrap();
    assert!(matches!(p[0].strategy, Strategy::Tensor { .. }), "{p:?}");
}

#[test]
fn each_link_of_two_islands_gets_its_own_type() {
    // Two wired islands (1 Gbit/s, 30 µs) joined by WiFi (5 ms, 40 Mbit/s: what a 100 Mbit/s
    // WiFi link often delivers): chosen link by link, the hops across the WiFi go lossy (each
    // alone makes the plan ~4 % faster) and the gathers inside each island stay exact f32
    // (int8 there would buy ~1 %).
    let c = ModelConfig::bitnet_2b4t();
    let nodes = [0.5; 4].map(|m| node(1.0 / 30.0, m));
    let links = islands(4, 2, (3e-5, 1e9), (5e-3, 5e6));
    let mixed = plan_per_link(&c, 2.0, &nodes, &links, 8).unwrap();
    let hybrid = mixed
        .iter()
        .find(|p| matches!(&p.strategy, Strategy::Hybrid { groups, .. } if groups == &[2, 2]))
        .unwrap_or_else(|| panic!("no mixed [2, 2] hybrid in {mixed:?}"));
    let w = &hybrid.wires;
    assert_eq!(w.gathers, [WireDtype::F32; 2], "{hybrid:?}");
    assert!(w.hops.iter().all(|&d| d != WireDtype::F32), "{hybrid:?}");
    assert_ne!(hybrid.wire, WireDtype::F32, "the plan is listed by its lossiest link");
    let label = hybrid.wire_label();
    assert!(label.starts_with("hops=") && label.ends_with("/groups=f32,f32"), "{label}");
    // It is priced between exact f32 everywhere and the lossy type everywhere, and sends
    // fewer bytes than f32 everywhere.
    let same = |ps: Vec<Plan>| {
        ps.into_iter()
            .find(|p| matches!(&p.strategy, Strategy::Hybrid { groups, .. } if groups == &[2, 2]))
            .unwrap()
    };
    let exact = same(plan_with(&c, 2.0, &nodes, &links, 8, WireDtype::F32).unwrap());
    let lossy = same(plan_with(&c, 2.0, &nodes, &links, 8, w.hops[0]).unwrap());
    assert!(hybrid.tok_s > exact.tok_s * 1.02, "{hybrid:?} vs {exact:?}");
    assert!(hybrid.tok_s <= lossy.tok_s * 1.0001, "{hybrid:?} vs {lossy:?}");
    assert!(hybrid.wire_bytes < exact.wire_bytes && hybrid.wire_bytes > lossy.wire_bytes);
    // On loopback-fast links everywhere no link buys 2 %: nothing mixed is offered.
    let fast = islands(4, 4, (2e-5, 1e10), (2e-5, 1e10));
    let none = plan_per_link(&c, 2.0, &nodes, &fast, 8).unwrap();
    assert!(none.iter().all(|p| matches!(p.strategy, Strategy::Single { .. })), "{none:?}");
}

#[test]
fn one_sequence_gets_the_split_with_the_shortest_trip() {
    // An island of two nodes (fast links) and a third node as fast as one of them, behind a
    // 100 Mbit/s link: for sequences in flight the hybrid [2, 1] balances its two stages (the
    // island, twice as fast, also runs the output head and its gathers); for one sequence the
    // shortest trip puts as many blocks as memory allows on the island.
    let c = ModelConfig::bitnet_2b4t();
    let nodes = [node(1.0 / 16.0, 24.0), node(1.0 / 16.0, 24.0), node(1.0 / 16.0, 24.0)];
    let links = islands(3, 2, (3e-5, 1e9), (3e-5, 12.5e6));
    let p = plan(&c, 2.0, &nodes, &links, 8).unwrap();
    let splits: Vec<&Plan> = p
        .iter()
        .filter(|x| matches!(&x.strategy, Strategy::Hybrid { groups, .. } if groups == &[2, 1]))
        .collect();
    assert_eq!(splits.len(), 2, "{p:?}");
    let island = |x: &Plan| match &x.strategy {
        Strategy::Hybrid { layers, .. } => layers[0],
        _ => unreachable!(),
    };
    let (one, many) = match splits[0].tok_s > splits[1].tok_s {
        true => (splits[0], splits[1]),
        false => (splits[1], splits[0]),
    };
    assert!(island(one) > island(many) && island(one) == 29, "{one:?} vs {many:?}");
    assert!(
        one.tok_s > many.tok_s * 1.1 && many.tok_s_batch > one.tok_s_batch,
        "{one:?} vs {many:?}"
    );
    // Where memory keeps the island to about half the model, one sequence's split is capped.
    let small = [node(1.0 / 16.0, 0.4), node(1.0 / 16.0, 0.4), node(1.0 / 16.0, 24.0)];
    let p = plan(&c, 2.0, &small, &links, 8).unwrap();
    let most = p
        .iter()
        .filter(|x| matches!(&x.strategy, Strategy::Hybrid { groups, .. } if groups == &[2, 1]))
        .map(island)
        .max()
        .unwrap();
    assert!(most < 29, "{p:?}");
}

#[test]
fn work_outside_the_linears_is_every_tensor_parallel_nodes_whole() {
    let c = ModelConfig::bitnet_2b4t();
    let links = link(1e-5, 3e9);
    // Seconds per token of the tensor-parallel plan and of the pipeline [15, 15] when the
    // linears take `share` of the blocks' pass.
    let priced = |share: f64| {
        let mut nodes = [node(0.06, 24.0), node(0.06, 24.0)];
        nodes.iter_mut().for_each(|n| n.batch.linear_share = [share; 5]);
        let plans = plan(&c, 2.0, &nodes, &links, 8).unwrap();
        let find = |f: &dyn Fn(&Strategy) -> bool| {
            1.0 / plans.iter().find(|p| f(&p.strategy)).expect("the plan").tok_s
        };
        let tp = find(&|s| matches!(s, Strategy::Tensor { .. }));
        let one = find(&|s| matches!(s, Strategy::Single { node: 0 }));
        (tp, one)
    };
    let (tp1, one1) = priced(1.0);
    let (tp8, one8) = priced(0.8);
    let (tp6, one6) = priced(0.6);
    // One node runs everything anyway.
    assert_eq!((one1, one8), (one6, one6));
    // Tensor parallelism splits only the linears: the less they take, the slower it is, by
    // the part of the blocks each node now does whole (linear in the share).
    assert!(tp1 < tp8 && tp8 < tp6, "{tp1} {tp8} {tp6}");
    let ratio = (tp6 - tp1) / (tp8 - tp1);
    assert!((ratio - 2.0).abs() < 1e-9, "{ratio}");
    // With every node repeating 40 % of the blocks, two nodes gain less than 1.6x.
    assert!(one6 / tp6 < 1.6, "{}", one6 / tp6);
}

/// The blocks of the pipeline's first stage (the head's) in its split for sequences in
/// flight: the candidate with the higher batch figure.
fn head_blocks_in_flight(p: &[Plan]) -> usize {
    p.iter()
        .filter(|x| matches!(x.strategy, Strategy::Pipeline { .. }))
        .max_by(|a, b| a.tok_s_batch.total_cmp(&b.tok_s_batch))
        .map(|x| match &x.strategy {
            Strategy::Pipeline { layers } => layers[0],
            _ => unreachable!(),
        })
        .expect("a pipeline candidate")
}

#[test]
fn the_pipeline_splits_by_the_measured_head_time_at_the_micro_batch() {
    // Two equal nodes, 8 sequences in flight (two micro-batches of 4). By bytes the 2B4T's
    // int8 head is 39 % of a pass, so the head's stage takes 5 or 6 of the 30 blocks; a head
    // measured at 25 % of the pass balances at 10 (0.75·l/30 + 0.25 = 0.75·(30 - l)/30).
    let c = ModelConfig::bitnet_2b4t();
    let links = link(3e-5, 1e9);
    let by_bytes = [node(1.0 / 22.0, 24.0), node(1.0 / 22.0, 24.0)];
    let l = head_blocks_in_flight(&plan(&c, 2.0, &by_bytes, &links, 8).unwrap());
    assert!((5..=6).contains(&l), "{l}");
    let measured = by_bytes.clone().map(|mut n| {
        n.batch.head_share = Some(0.25);
        n
    });
    assert_eq!(head_blocks_in_flight(&plan(&c, 2.0, &measured, &links, 8).unwrap()), 10);
    // A head whose pass does not grow with the rows (x1 at 4) while the blocks' does (x1.9):
    // at the micro-batch the head weighs less and the head's stage takes more blocks,
    // 1.425·l/30 + 0.25 = 1.425·(30 - l)/30 at l = 12.4 (at one row it would stay at 10).
    let flat_head = measured.clone().map(|mut n| {
        n.batch.blocks = [1.0, 1.3, 1.9, 3.1, 5.5];
        n.batch.head = [1.0; 5];
        n
    });
    assert_eq!(head_blocks_in_flight(&plan(&c, 2.0, &flat_head, &links, 8).unwrap()), 12);
}

//! The planner: per-token cost of every way to run a model on a mesh — one node, tensor
//! parallel over all nodes with uneven shares, pipeline with layer ranges chosen by dynamic
//! programming — from the nodes' measured speed and memory and the probed links. The cost
//! model (facts in the crate README):
//! - a link moves `m` bytes in `α + m/β` (the probe's latency and bandwidth);
//! - node i decodes the whole model alone in `t_i` seconds, a `1/L` share of it per block;
//! - tensor parallel, as the executor (`crate::tensor`) runs it: every node holds pieces of
//!   every block and of the head in proportion to `1/t_i` (query heads with the KV heads they
//!   read, a KV head whose group is cut held on both sides) and takes its bytes' share of
//!   `t_i`; per token `4L + 1` syncs (four f32 all-gathers per block, each node's greedy
//!   pick of its rows of the head gathered on rank 0), each costing the slowest link's exchange latency, plus the bytes a node
//!   receives over its exchange bandwidth (the probe's exchanges: both ends sending at once);
//!   with f16 or int8 on the wire, `2L + 1` syncs of partial updates instead, each node
//!   receiving every other's whole update (`TensorSplit::sums`, as `--tp-merge auto` runs);
//! - pipeline: contiguous layer ranges, one hop of the hidden state per stage boundary and
//!   the sampled token back to the head; with `k` sequences in flight its throughput is
//!   `min(k / T, 1 / slowest stage)`; the ranges that make the slowest stage fastest (for
//!   sequences in flight) and, where they differ, those that make the trip shortest (one
//!   sequence: more blocks on faster nodes) are both candidates;
//! - hybrid: a pipeline whose stages are groups of consecutive nodes, each group running its
//!   blocks tensor-parallel (the group's speeds add up; four gathers per block over the
//!   group's slowest link, plus the leader handing the rows on); `plan_stages.rs`;
//! - bytes on the wire as the element type each link sends: 4 a value (f32, exact), 2 (f16)
//!   or about 1 (int8 with a scale a row); tensor parallelism's logits go as f16 when the
//!   pieces go as int8. [`plan_with`] prices one type on every link; [`plan_per_link`] prices
//!   pipelines and hybrids with a type chosen link by link (a link goes lossy only where that
//!   alone makes the plan [`LOSSY_LINK_GAIN`] times as fast); `auto::choose` weighs them.

use crate::error::{DistError, Result};
use crate::probe::LinkProbe;
use crate::speed::BatchCurve;
use crate::stage_wires::StageWires;
use crate::wire::WireDtype;
use onebit_model::{ModelConfig, TensorSplit};

/// What the planner knows of one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// A name for messages (host:port).
    pub name: String,
    /// Seconds this node takes to decode one token of the whole model alone.
    pub token_s: f64,
    /// Bytes of memory it can give the model.
    pub mem_bytes: u64,
    /// How a decode pass grows with the sequences in it ([`BatchCurve::linear`] for a
    /// guess: 0 is purely bandwidth-bound; the engine's 16-sequence aggregate of 2.2x one
    /// sequence on a 2-core Zen2 is a slope of 0.42).
    pub batch: BatchCurve,
}

impl NodeSpec {
    /// Seconds of one decode pass over `k` sequences (`by_bytes`: the blocks' share of the
    /// weight bytes, for a node whose head share was not measured).
    pub(crate) fn pass_s(&self, k: f64, by_bytes: f64) -> f64 {
        self.token_s * self.batch.pass_x(k, by_bytes)
    }

    /// Seconds of this node's one-sequence pass over every block (`by_bytes` as above).
    pub(crate) fn blocks_s(&self, by_bytes: f64) -> f64 {
        self.token_s * self.batch.block_frac(by_bytes)
    }

    /// Seconds of this node's one-sequence pass over the whole output head.
    pub(crate) fn head_s(&self, by_bytes: f64) -> f64 {
        self.token_s - self.blocks_s(by_bytes)
    }
}

/// How a plan runs the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Everything on one node.
    Single {
        /// The node.
        node: usize,
    },
    /// Every block split over all nodes.
    Tensor {
        /// Query heads per node (with the KV heads they read).
        q_heads: Vec<usize>,
        /// FFN columns per node.
        ffn: Vec<usize>,
    },
    /// Blocks split into contiguous ranges, one per node in mesh order.
    Pipeline {
        /// Blocks per node.
        layers: Vec<usize>,
    },
    /// A pipeline of stages of consecutive nodes, each stage's blocks split tensor-parallel
    /// over its nodes in proportion to their speed.
    Hybrid {
        /// Nodes per stage, head's first.
        groups: Vec<usize>,
        /// Blocks per stage.
        layers: Vec<usize>,
    },
}

/// One candidate and its predicted cost.
#[derive(Clone, Debug)]
pub struct Plan {
    /// How.
    pub strategy: Strategy,
    /// Predicted tokens per second for one sequence.
    pub tok_s: f64,
    /// Predicted aggregate tokens per second with `k` sequences in flight (pipeline: in as
    /// many micro-batches as stages).
    pub tok_s_batch: f64,
    /// Bytes on the wire per token (all links).
    pub wire_bytes: u64,
    /// Waits on another node per token.
    pub syncs: usize,
    /// The lossiest element type any of the plan's links sends (f32: exact everywhere).
    pub wire: WireDtype,
    /// Pipelines and hybrids: the type of each stage's hop and gathers; tensor parallel: one
    /// stage whose gathers are the pieces' type; one node: no stage.
    pub wires: StageWires,
}

impl Plan {
    /// The element types on the wire as `onebit plan` prints them: `-` for one node, one name
    /// where every link sends one type, else each hop's and each group's.
    pub fn wire_label(&self) -> String {
        match &self.strategy {
            Strategy::Single { .. } => "-".into(),
            Strategy::Tensor { .. } => self.wire.name().into(),
            Strategy::Pipeline { layers } => self.wires.label(&vec![1; layers.len()]),
            Strategy::Hybrid { groups, .. } => self.wires.label(groups),
        }
    }

    /// Links (a hop, a group's gathers, tensor parallelism's pieces) that send a lossy type.
    pub fn lossy_links(&self) -> usize {
        match &self.strategy {
            Strategy::Single { .. } => 0,
            Strategy::Tensor { .. } => usize::from(self.wire != WireDtype::F32),
            Strategy::Pipeline { layers } => self.wires.lossy_links(&vec![1; layers.len()]),
            Strategy::Hybrid { groups, .. } => self.wires.lossy_links(groups),
        }
    }
}

/// How many times as fast (predicted, one sequence) sending one link of a pipeline or hybrid
/// in f16 or int8 must make the plan for [`plan_per_link`] to choose it for that link.
pub const LOSSY_LINK_GAIN: f64 = 1.02;

/// Weight bytes of the model (ternary linears at `bpw`, the head and embeddings at one
/// byte per value) and the fraction of decode time the blocks take.
fn model_bytes(c: &ModelConfig, bpw: f64) -> (f64, f64) {
    let per_block =
        (c.hidden * (c.q_dim() * 2 + c.kv_dim() * 2) + 3 * c.hidden * c.intermediate) as f64;
    let blocks = per_block * c.layers as f64 * bpw / 8.0;
    let head = (c.vocab * c.hidden) as f64 * if c.tied_embeddings { 1.0 } else { 2.0 };
    (blocks + head, blocks / (blocks + c.vocab as f64 * c.hidden as f64))
}

/// Bytes a tensor-parallel block gathers per row (attention output, `o` rows, FFN values,
/// `down` rows) at `value_bytes` a value, as the executor (`crate::tensor`) sends them.
pub(crate) fn gathered_per_block(c: &ModelConfig, value_bytes: f64) -> f64 {
    (c.q_dim() + 2 * c.hidden + c.intermediate) as f64 * value_bytes
}

/// Splits `total` units in proportion to `weights` by largest remainder, at least one each
/// where `total` allows.
pub fn apportion(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut out: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b))
    });
    let left = total - out.iter().sum::<usize>();
    for &i in order.iter().take(left) {
        out[i] += 1;
    }
    out
}

/// Every candidate that fits with f32 (exact) on the wire, fastest first for one sequence;
/// `k` sequences in flight for the batch figure; `bpw` the ternary layout's bits per weight.
pub fn plan(
    c: &ModelConfig,
    bpw: f64,
    nodes: &[NodeSpec],
    links: &[LinkProbe],
    k: usize,
) -> Result<Vec<Plan>> {
    plan_with(c, bpw, nodes, links, k, WireDtype::F32)
}

/// [`plan`] with activations sent as `wire` on every link.
pub fn plan_with(
    c: &ModelConfig,
    bpw: f64,
    nodes: &[NodeSpec],
    links: &[LinkProbe],
    k: usize,
    wire: WireDtype,
) -> Result<Vec<Plan>> {
    plans(c, bpw, nodes, links, k, wire, false)
}

/// The pipeline and hybrids with each link's element type chosen on its own (exact f32
/// unless f16 or int8 on that link alone makes the plan [`LOSSY_LINK_GAIN`] times as fast),
/// those that mix types only (one type everywhere is [`plan_with`]'s), and one node where it
/// fits; empty where nothing mixes.
pub fn plan_per_link(
    c: &ModelConfig,
    bpw: f64,
    nodes: &[NodeSpec],
    links: &[LinkProbe],
    k: usize,
) -> Result<Vec<Plan>> {
    plans(c, bpw, nodes, links, k, WireDtype::F32, true)
}

fn plans(
    c: &ModelConfig,
    bpw: f64,
    nodes: &[NodeSpec],
    links: &[LinkProbe],
    k: usize,
    wire: WireDtype,
    per_link: bool,
) -> Result<Vec<Plan>> {
    let n = nodes.len();
    if n == 0 || k == 0 {
        return Err(DistError::Usage("a plan needs nodes and at least one sequence".into()));
    }
    // Seconds to move `bytes` over a link (infinite where none was probed).
    let hop = |a: usize, b: usize, bytes: f64| {
        let (a, b) = (a.min(b), a.max(b));
        links
            .iter()
            .find(|l| l.a == a && l.b == b)
            .map_or(f64::INFINITY, |l| l.latency_s + bytes / l.bandwidth_bps)
    };
    let (bytes, block_frac) = model_bytes(c, bpw);
    let mut plans = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if node.mem_bytes as f64 >= bytes {
            plans.push(Plan {
                strategy: Strategy::Single { node: i },
                tok_s: 1.0 / node.token_s,
                tok_s_batch: k as f64 / node.pass_s(k as f64, block_frac),
                wire_bytes: 0,
                syncs: 0,
                wire,
                wires: StageWires { hops: Vec::new(), gathers: Vec::new() },
            });
        }
    }
    let all_linked = (0..n).all(|a| (a + 1..n).all(|b| hop(a, b, 1.0).is_finite()));
    if n >= 2 && all_linked {
        let x = Inputs { c, bytes, block_frac, nodes, hop: &hop, k, wire };
        match per_link {
            false => {
                plans.extend(tensor_plan(&x, links, bpw));
                plans.extend(crate::plan_stages::pipeline_plans(&x, links));
                plans.extend(crate::plan_stages::hybrid_plans(&x, links));
            }
            true => plans.extend(crate::plan_stages::per_link_plans(&x, links)),
        }
    }
    // Per link, no plan mixing types is an answer, not a refusal ([`plan_with`] refuses).
    if plans.is_empty() && !per_link {
        let largest = nodes.iter().map(|n| n.mem_bytes).max().unwrap_or(0);
        let all: u64 = nodes.iter().map(|n| n.mem_bytes).sum();
        return Err(DistError::Usage(format!(
            "the model needs {:.2} GB; the largest node has {:.2} GB and all {n} together {:.2} GB",
            bytes / 1e9,
            largest as f64 / 1e9,
            all as f64 / 1e9
        )));
    }
    plans.sort_by(|a, b| b.tok_s.total_cmp(&a.tok_s));
    Ok(plans)
}

/// What the split strategies share: the model, its weight bytes and the blocks' share of
/// them (of decode time where a node's head share was not measured), the nodes, the cost of moving some bytes between two ranks, and the element
/// type on the wire (every link's, where one type is priced).
#[derive(Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub(crate) c: &'a ModelConfig,
    pub(crate) bytes: f64,
    pub(crate) block_frac: f64,
    pub(crate) nodes: &'a [NodeSpec],
    pub(crate) hop: &'a dyn Fn(usize, usize, f64) -> f64,
    pub(crate) k: usize,
    pub(crate) wire: WireDtype,
}

fn tensor_plan(x: &Inputs<'_>, links: &[LinkProbe], bpw: f64) -> Option<Plan> {
    let Inputs { c, nodes, k, wire, .. } = *x;
    let value_bytes = wire.value_bytes();
    let n = nodes.len();
    // The executor's split (`onebit_model::TensorSplit`) with shares in proportion to speed.
    let speed: Vec<f64> = nodes.iter().map(|x| 1.0 / x.token_s).collect();
    // A lossy wire sums the products of `o` and `down` (as `--tp-merge auto` runs it): two
    // exchanges a block instead of four gathers.
    let sums = wire != WireDtype::F32;
    let split = TensorSplit::proportional(c, &speed).ok()?.with_sums(sums);
    // Bytes each node reads per token: its rows of every linear, and of the int8 head.
    let (h, hd) = (c.hidden as f64, c.head_dim as f64);
    // Weights a node reads per token between two exchanges of a block: q of its query heads
    // and k/v of the KV heads they read (a group cut by the split is read on both sides),
    // its rows of `o`, its columns of gate and up, its rows of `down`; summing, its columns
    // of `o` with the first stretch and of `down` with the gate and up (two stretches).
    let stretches = |i: usize| {
        let (q, kv) = (split.q_range(i).len() as f64, split.kv_range(c, i).len() as f64);
        let (ffn, rows) = (split.ffn_range(i).len() as f64, split.hidden_range(i).len() as f64);
        let per_layer = if sums {
            [(q + 2.0 * kv) * hd * h + h * q * hd, 0.0, 3.0 * ffn * h, 0.0]
        } else {
            [
                (q + 2.0 * kv) * hd * h,
                rows * c.q_dim() as f64,
                2.0 * ffn * h,
                rows * c.intermediate as f64,
            ]
        };
        per_layer.map(|w| w * c.layers as f64 * bpw / 8.0)
    };
    let block_bytes = |i: usize| stretches(i).iter().sum::<f64>();
    let head_bytes = |i: usize| split.vocab_range(i).len() as f64 * h;
    let node_bytes = |i: usize| block_bytes(i) + head_bytes(i);
    // One node's blocks whole: the nodes' pieces add up to more where a KV head is shared.
    let (qd, kvd, ffn_all) = (c.q_dim() as f64, c.kv_dim() as f64, c.intermediate as f64);
    let whole_blocks = (2.0 * qd + 2.0 * kvd + 3.0 * ffn_all) * h * c.layers as f64 * bpw / 8.0;
    let total_head: f64 = (0..n).map(head_bytes).sum();
    if (0..n).any(|i| nodes[i].mem_bytes as f64 * 0.999 < node_bytes(i)) {
        return None;
    }
    // Four all-gathers per block (attention output, `o` rows, FFN columns, `down` rows) and
    // each node's greedy pick of its rows of the head gathered on rank 0 (8 bytes a row: a
    // greedy decode step, as `onebit run --temp 0` and `onebit bench` run; replies sampled at
    // a temperature gather the logits instead); a node receives the others' share of each,
    // over the slowest link.
    // Priced as the probe's exchanges: both ends sending at once, caches cold from a stretch.
    let lat = links.iter().map(|l| l.exchange_latency_s).fold(0.0, f64::max);
    let bw = links.iter().map(|l| l.exchange_bandwidth_bps).fold(f64::INFINITY, f64::min);
    // Bytes a node receives per row and token: the others' share of every gather, or each
    // other node's whole partial update (and its scale and sum of squares) twice a block.
    let received = if sums {
        // The wire's own row size (int8's scale included), and the row's sum of squares.
        let row = crate::wire::values_len(1, c.hidden, wire).unwrap_or(usize::MAX);
        let update = row as f64 + 4.0;
        (n - 1) as f64 * 2.0 * update * c.layers as f64 + 8.0
    } else {
        let others = (n - 1) as f64 / n as f64;
        (gathered_per_block(c, value_bytes) * c.layers as f64 + 8.0) * others
    };
    let syncs = if sums { 2 } else { 4 } * c.layers + 1;
    let block_frac = x.block_frac;
    // A node's share of the blocks' and of the head's one-sequence time, each grown by its
    // own measured curve. Every gather waits for the slowest node of the stretch before it,
    // so the block costs the sum over its four stretches of the slowest node's time (the
    // first stretch follows the query heads, in steps of one head, whatever the FFN split).
    // The work outside the linears (norms, RoPE, attention on a fresh cache) is priced as
    // every node's whole: the norms are. Attention over a context the nodes were timed after
    // (`onebit plan --ctx`) is split by the KV heads each node reads (a head shared by a cut
    // group is read on both sides).
    let cost = |rows: f64| {
        let slowest = |f: &dyn Fn(usize) -> f64| (0..n).map(f).fold(0.0, f64::max);
        let blocks_s = |i: usize| nodes[i].blocks_s(block_frac) * nodes[i].batch.blocks_x(rows);
        let linears: f64 = (0..4)
            .map(|j| {
                slowest(&|i| {
                    let share = nodes[i].batch.linear_share_at(rows);
                    blocks_s(i) * share * stretches(i)[j] / whole_blocks
                })
            })
            .sum();
        let kv_frac = |i: usize| split.kv_range(c, i).len() as f64 / c.kv_heads as f64;
        let attend = slowest(&|i| blocks_s(i) * nodes[i].batch.context_share_at(rows) * kv_frac(i));
        let rest = slowest(&|i| {
            let b = &nodes[i].batch;
            blocks_s(i) * (1.0 - b.linear_share_at(rows) - b.context_share_at(rows))
        });
        let blocks = linears + attend + rest;
        let head = slowest(&|i| {
            nodes[i].head_s(block_frac) * head_bytes(i) / total_head * nodes[i].batch.head_x(rows)
        });
        let compute = blocks + head;
        compute + syncs as f64 * lat + received * rows / bw
    };
    let (tok_s, tok_s_batch) = (1.0 / cost(1.0), k as f64 / cost(k as f64));
    let counts = |b: &[usize]| b.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
    Some(Plan {
        strategy: Strategy::Tensor { q_heads: counts(&split.q_heads), ffn: counts(&split.ffn) },
        tok_s,
        tok_s_batch,
        // Every node receives as much as it sends.
        wire_bytes: (received * n as f64) as u64,
        syncs,
        wire,
        wires: StageWires::uniform(1, wire),
    })
}

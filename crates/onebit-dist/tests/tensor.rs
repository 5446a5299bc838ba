//! Tensor parallelism against one node: on the shipped (trained) model, the same greedy
//! tokens and bit-identical logits over 64 steps, batched decode and mixed steps, for 2 nodes
//! even (2:2 query heads) and uneven (3:1), 3 nodes, in process and over loopback TCP; on a
//! synthetic model with the 2B4T's 5 KV heads in groups of two query heads, cuts inside a
//! group (the KV head held on both sides) over 2 and 3 nodes, and whole KV heads 3:2; a
//! worker that dies or stalls is a clear error naming it within the bound; a call every node
//! refuses leaves the mesh usable. Summed partial updates (`TensorSplit::sums`): one node's
//! greedy tokens on the shipped model with every wire type and split, and on synthetic models
//! with and without sub-norms the prompt's logits close to one node's.

mod common;

use common::{exercise, in_process, opts, prompt, repo, tcp, Quitter};
use onebit_dist::pipeline::PipelineTimeouts;
use onebit_dist::tensor::{serve_tensor, TensorHead};
use onebit_dist::wire::WireDtype;
use onebit_dist::Comm;
use onebit_model::load::LoadOptions;
use onebit_model::{Engine, Model, ModelConfig, Session, TensorPart, TensorSplit};
use std::thread;
use std::time::{Duration, Instant};

fn load(path: &str, tensor: Option<TensorPart>) -> Model {
    let opts = LoadOptions { threads: 1, tensor, ..Default::default() };
    Model::from_pretrained(path, &opts).unwrap()
}

/// Runs [`exercise`] on a mesh of `comms` (rank 0 first) split by `split`.
fn tensor(
    path: &str,
    comms: Vec<Box<dyn Comm>>,
    split: &TensorSplit,
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    tensor_on(path, comms, split, steps, WireDtype::F32)
}

/// [`tensor`] with the gathers' pieces sent as `wire`.
fn tensor_on(
    path: &str,
    comms: Vec<Box<dyn Comm>>,
    split: &TensorSplit,
    steps: usize,
    wire: WireDtype,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let models: Vec<Model> = (0..comms.len())
        .map(|rank| load(path, Some(TensorPart { split: split.clone(), rank })))
        .collect();
    let mut comms = comms.into_iter();
    let head_comm = comms.next().unwrap();
    thread::scope(|sc| {
        let workers: Vec<_> = comms
            .zip(&models[1..])
            .map(|(c, m)| {
                sc.spawn(move || {
                    let s = Session::with_options(m, opts(4));
                    serve_tensor(s, c, PipelineTimeouts::default()).unwrap()
                })
            })
            .collect();
        let s = Session::with_options(&models[0], opts(4));
        let head = TensorHead::new(s, head_comm, PipelineTimeouts::default()).unwrap();
        let mut head = head.with_wire(wire).unwrap();
        // Sampled replies pick among the nodes' candidates (not a gather of logits).
        assert!(head.samples(&common::sampled()));
        let out = exercise(&mut head, steps);
        let wire = head.wire();
        // Four gathers per block per pass, or two sums.
        let per_block = if split.sums { 2 } else { 4 };
        let layers = models[0].config.layers as u64;
        let least = per_block * layers * (steps as u64 + 4);
        assert!(wire.steps >= least && wire.sent > 0, "{wire:?}");
        // Exactly that many, plus one gather of the head's rows per pass: nothing else
        // crosses the mesh inside a pass.
        let passes = wire.steps / (per_block * layers + 1);
        assert_eq!(wire.steps, passes * (per_block * layers + 1), "{wire:?}");
        drop(head);
        for w in workers {
            assert!(w.join().unwrap().steps >= per_block * layers * steps as u64);
        }
        out
    })
}

#[test]
fn tensor_parallel_matches_one_node_bit_for_bit() {
    let path = repo("models/austen.gguf");
    let m = load(&path, None);
    let (tokens, logits) = exercise(&mut Session::with_options(&m, opts(4)), 64);
    let c = &m.config;
    for (name, comms, shares) in [
        ("2 nodes in process, even", in_process(2), vec![1.0, 1.0]),
        ("2 nodes in process, uneven", in_process(2), vec![4.0, 1.0]),
        ("3 nodes in process", in_process(3), vec![1.0, 1.0, 1.0]),
        ("2 nodes over TCP, uneven", tcp(2), vec![1.0, 2.0]),
    ] {
        let split = TensorSplit::proportional(c, &shares).unwrap();
        if shares == [4.0, 1.0] {
            assert_eq!(
                (split.q_heads.clone(), split.hidden.clone()),
                (vec![0, 3, 4], vec![0, 192, 256])
            );
        }
        let (t, l) = tensor(&path, comms, &split, 64);
        assert_eq!(t, tokens, "{name} {split:?}: greedy tokens");
        assert_eq!(l.len(), logits.len());
        assert!(l == logits, "{name} {split:?}: logits differ from one node's");
    }
}

#[test]
fn f16_and_int8_pieces_keep_the_greedy_tokens() {
    let path = repo("models/austen.gguf");
    let m = load(&path, None);
    let (tokens, logits) = exercise(&mut Session::with_options(&m, opts(4)), 64);
    let split = TensorSplit::proportional(&m.config, &[1.0, 1.0]).unwrap();
    for wire in [WireDtype::F16, WireDtype::Q8] {
        let (t, l) = tensor_on(&path, in_process(2), &split, 64, wire);
        assert_eq!(t, tokens, "{wire:?}: greedy tokens");
        let worst = worst_logit_difference(&l, &logits, m.config.vocab);
        eprintln!(
            "{wire:?} on the wire: largest logit difference {worst:.2e} of the step's largest"
        );
        assert!(worst > 0.0 && worst < 0.1, "{wire:?}: {worst}");
    }
}

/// The largest logit difference of any step between `l` and `logits`, relative to that
/// step's largest logit (rows of logits only: the picks of rounded logits may differ).
fn worst_logit_difference(l: &[Vec<f32>], logits: &[Vec<f32>], vocab: usize) -> f32 {
    l.iter()
        .zip(logits)
        .filter(|(_, b)| b.len() == vocab)
        .map(|(a, b)| {
            let top = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / top
        })
        .fold(0f32, f32::max)
}

#[test]
fn summed_partial_products_keep_the_greedy_tokens() {
    let path = repo("models/austen.gguf");
    let m = load(&path, None);
    let (tokens, logits) = exercise(&mut Session::with_options(&m, opts(4)), 64);
    let c = &m.config;
    for (comms, shares, wire) in [
        (in_process(2), vec![1.0, 1.0], WireDtype::F32),
        (in_process(2), vec![1.0, 1.0], WireDtype::F16),
        (in_process(2), vec![1.0, 1.0], WireDtype::Q8),
        (in_process(2), vec![4.0, 1.0], WireDtype::Q8),
        (in_process(3), vec![1.0, 1.0, 1.0], WireDtype::Q8),
        (tcp(2), vec![1.0, 2.0], WireDtype::Q8),
    ] {
        let split = TensorSplit::proportional(c, &shares).unwrap().with_sums(true);
        let n = shares.len();
        let (t, l) = tensor_on(&path, comms, &split, 64, wire);
        assert_eq!(t, tokens, "{n} nodes {shares:?}, {wire:?}: greedy tokens");
        let worst = worst_logit_difference(&l, &logits, c.vocab);
        eprintln!(
            "summed o/down, {n} nodes {shares:?}, {wire:?} on the wire: largest logit difference {worst:.2e} of the step's largest"
        );
        // Each node rounds its own piece to int8: close to one node, never exactly it.
        assert!(worst > 0.0 && worst < 0.1, "{wire:?}: {worst}");
    }
}

#[test]
fn summed_updates_scale_by_the_whole_rows_rms_with_or_without_sub_norms() {
    let tmp = tempfile::Builder::new().prefix("onebit-tensor-sums-").tempdir().unwrap();
    for sub_norms in [true, false] {
        let cfg = ModelConfig {
            hidden: 512,
            heads: 8,
            kv_heads: 4,
            head_dim: 64,
            intermediate: 1376,
            layers: 2,
            vocab: 4096,
            sub_norms,
            ..ModelConfig::preset("micro").unwrap()
        };
        let path = tmp.path().join(format!("sub{sub_norms}.gguf")).to_string_lossy().into_owned();
        let ty = onebit_model::synthetic::linear_type(onebit_kernels::TernaryFormat::T2).unwrap();
        onebit_model::synthetic::write_synthetic(&path, &cfg, ty, 5, &mut |_, _| {}).unwrap();
        let m = load(&path, None);
        assert_eq!(m.layers[0].attn_sub_norm.is_some(), sub_norms);
        let (_, single) = exercise(&mut Session::with_options(&m, opts(4)), 0);
        // Uneven, the FFN cut off T2's 256-column blocks: 1376 columns 3:2.
        let split = TensorSplit::proportional(&cfg, &[3.0, 2.0]).unwrap().with_sums(true);
        assert_ne!(split.ffn[1] % 256, 0);
        let (_, summed) = tensor(&path, in_process(2), &split, 0);
        // The prompt's logits (random weights: later steps would amplify the rounding): each
        // node rounds its own piece to int8, so close, not equal. A missing or doubled 1/rms
        // would be off by the rms itself.
        let worst = worst_logit_difference(&summed[..1], &single[..1], cfg.vocab);
        eprintln!("sub-norms {sub_norms}: prompt logits within {worst:.2e} of one node's");
        assert!(worst > 0.0 && worst < 0.05, "sub-norms {sub_norms}: {worst}");
    }
}

#[test]
fn query_heads_cut_inside_a_kv_group_match_one_node() {
    let cfg = ModelConfig {
        hidden: 640,
        heads: 10,
        kv_heads: 5,
        head_dim: 64,
        intermediate: 1728,
        layers: 2,
        vocab: 4096,
        ..ModelConfig::preset("micro").unwrap()
    };
    let tmp = tempfile::Builder::new().prefix("onebit-tensor-test-").tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("kv5.gguf").to_string_lossy().into_owned();
    let ty = onebit_model::synthetic::linear_type(onebit_kernels::TernaryFormat::T2).unwrap();
    onebit_model::synthetic::write_synthetic(&path, &cfg, ty, 11, &mut |_, _| {}).unwrap();
    let m = load(&path, None);
    let single = exercise(&mut Session::with_options(&m, opts(4)), 16);
    // 10 query heads in groups of two: 5:5 shares KV head 2; 3:3:4 shares KV heads 1 and 3.
    let two = TensorSplit::proportional(&cfg, &[1.0, 1.0]).unwrap();
    assert_eq!(
        (two.q_heads.clone(), two.kv_range(&cfg, 0), two.kv_range(&cfg, 1)),
        (vec![0, 5, 10], 0..3, 2..5)
    );
    let three = TensorSplit::proportional(&cfg, &[1.0, 1.0, 1.0]).unwrap();
    assert_eq!(three.q_heads, vec![0, 3, 6, 10]);
    // Shares 3:2 cut on a group boundary: whole KV heads 3:2, none shared.
    let whole = TensorSplit::proportional(&cfg, &[3.0, 2.0]).unwrap();
    assert_eq!(
        (whole.q_heads.clone(), whole.kv_range(&cfg, 0), whole.kv_range(&cfg, 1)),
        (vec![0, 6, 10], 0..3, 3..5)
    );
    let got = [
        tensor(&path, in_process(2), &two, 16),
        tensor(&path, in_process(3), &three, 16),
        tensor(&path, in_process(2), &whole, 16),
    ];
    assert!(got[0] == single, "5:5 query heads differ from one node");
    assert!(got[1] == single, "3:3:4 query heads differ from one node");
    assert!(got[2] == single, "KV heads 3:2 differ from one node");
}

#[test]
fn a_worker_that_dies_or_stalls_is_a_clear_error_in_bounded_time() {
    let path = repo("models/austen.gguf");
    let c = load(&path, None).config;
    let split = TensorSplit::proportional(&c, &[1.0, 1.0]).unwrap();
    let piece = |rank| load(&path, Some(TensorPart { split: split.clone(), rank }));
    let (head_model, worker_model) = (piece(0), piece(1));
    let timeouts = PipelineTimeouts {
        step: Duration::from_millis(800),
        per_row: Duration::from_millis(10),
        ..Default::default()
    };
    for stall in [false, true] {
        let mut comms = tcp(2).into_iter();
        let (head_comm, worker_comm) = (comms.next().unwrap(), comms.next().unwrap());
        let wm = &worker_model;
        thread::scope(|sc| {
            sc.spawn(move || {
                // A real worker that serves the prompt, then dies (drops its connection) or
                // stalls: a wrapper comm that gives up after the prompt's traffic.
                let s = Session::with_options(wm, opts(1));
                let quit = Box::new(Quitter { inner: worker_comm, left: 1 + 4 * 6, stall });
                let _ = serve_tensor(s, quit, timeouts);
            });
            let s = Session::with_options(&head_model, opts(1));
            let mut head = TensorHead::new(s, head_comm, timeouts).unwrap();
            head.forward_slot(0, &prompt()[..8]).unwrap();
            let t0 = Instant::now();
            let e = head.decode(&[5], &[0]).unwrap_err().to_string();
            let took = t0.elapsed();
            assert!(took < Duration::from_secs(2), "{took:?}: {e}");
            assert!(e.contains("node 1"), "names the node: {e}");
            let want = if stall { "no answer" } else { "closed" };
            assert!(e.contains(want), "stall {stall}: {e}");
            let again = head.decode(&[5], &[0]).unwrap_err().to_string();
            assert!(again.contains("failed earlier"), "{again}");
        });
    }
}

#[test]
fn a_call_every_node_refuses_leaves_the_mesh_usable() {
    let path = repo("models/austen.gguf");
    let m = load(&path, None);
    let split = TensorSplit::proportional(&m.config, &[1.0, 1.0]).unwrap();
    let models: Vec<Model> =
        (0..2).map(|rank| load(&path, Some(TensorPart { split: split.clone(), rank }))).collect();
    let mut comms = in_process(2).into_iter();
    let head_comm = comms.next().unwrap();
    let worker_comm = comms.next().unwrap();
    let mut one = Session::with_options(&m, opts(2));
    let want = one.forward_slot(0, &prompt()).unwrap().to_vec();
    thread::scope(|sc| {
        let wm = &models[1];
        let w = sc.spawn(move || {
            serve_tensor(
                Session::with_options(wm, opts(2)),
                worker_comm,
                PipelineTimeouts::default(),
            )
        });
        let mut head = TensorHead::new(
            Session::with_options(&models[0], opts(2)),
            head_comm,
            PipelineTimeouts::default(),
        )
        .unwrap();
        let too_long = vec![5u32; 300];
        assert!(head.forward_slot(0, &too_long).unwrap_err().to_string().contains("context full"));
        assert!(head.decode(&[1, 2], &[0, 0]).unwrap_err().to_string().contains("repeated"));
        assert!(head.forward_slot(7, &[1]).is_err());
        assert!(head.forward_slot(0, &[99_999]).is_err());
        assert_eq!(head.forward_slot(0, &prompt()).unwrap(), &want[..]);
        drop(head);
        w.join().unwrap().unwrap();
    });
}

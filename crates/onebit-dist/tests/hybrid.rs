//! Hybrid meshes against one node: pipelines whose stages are tensor-parallel groups, on the
//! shipped (trained) model, give the same greedy tokens and bit-identical logits over 64
//! steps, batched decode and mixed steps — the head's stage split or alone, a later stage
//! split, two split stages with uneven pieces, in process and over loopback TCP; overlapped
//! passes (two groups of slots in flight) as well; a group member that dies is a clear error
//! at the head within the bound.

mod common;

use common::{exercise, in_process, opts, prompt, repo, tcp, Quitter, Run};
use onebit_dist::hybrid::{HybridLayout, Ring};
use onebit_dist::pipeline::{PipelineHead, PipelineTimeouts};
use onebit_dist::stage_wires::StageWires;
use onebit_dist::wire::WireDtype::{F16, F32, Q8};
use onebit_dist::worker_stage::serve_hybrid;
use onebit_dist::Comm;
use onebit_model::load::{LoadOptions, ModelPart};
use onebit_model::{Engine, Model, Session};
use std::thread;
use std::time::{Duration, Instant};

fn load(path: &str, layout: Option<(&HybridLayout, usize)>) -> Model {
    let (part, tensor) = match layout {
        Some((l, rank)) => {
            let (layers, tensor) = l.part_of(rank).unwrap();
            (Some(ModelPart { layers, ends: rank == 0 }), tensor)
        }
        None => (None, None),
    };
    let opts = LoadOptions { threads: 1, part, tensor, ..Default::default() };
    Model::from_pretrained(path, &opts).unwrap()
}

/// Every rank's model of `layout`, rank 0 first.
fn pieces(path: &str, layout: &HybridLayout) -> Vec<Model> {
    (0..layout.sizes().iter().sum()).map(|r| load(path, Some((layout, r)))).collect()
}

/// Runs `body` on the head of a mesh of `comms` laid out as `layout`, the other ranks
/// serving their parts on threads; returns what `body` returned.
fn on_mesh<T>(
    models: &[Model],
    comms: Vec<Box<dyn Comm>>,
    ring: &Ring,
    timeouts: PipelineTimeouts,
    body: impl FnOnce(&mut PipelineHead) -> T,
) -> T {
    on_mesh_sending(models, comms, ring, timeouts, None, body)
}

/// [`on_mesh`] with the head sending `wires` first (none: f32 on every link, unsaid).
fn on_mesh_sending<T>(
    models: &[Model],
    comms: Vec<Box<dyn Comm>>,
    ring: &Ring,
    timeouts: PipelineTimeouts,
    wires: Option<StageWires>,
    body: impl FnOnce(&mut PipelineHead) -> T,
) -> T {
    let mut comms = comms.into_iter();
    let head_comm = comms.next().unwrap();
    thread::scope(|sc| {
        for (c, m) in comms.zip(&models[1..]) {
            sc.spawn(move || {
                let s = Session::with_options(m, opts(4));
                let rank = c.rank();
                if let Err(e) = serve_hybrid(s, c, ring, timeouts) {
                    eprintln!("rank {rank}: {e}");
                }
            });
        }
        let s = Session::with_options(&models[0], opts(4));
        let mut head = PipelineHead::hybrid(s, head_comm, ring, timeouts).unwrap();
        if let Some(w) = wires {
            head = head.with_wires(w).unwrap();
        }
        body(&mut head)
    })
}

#[test]
fn hybrid_meshes_match_one_node_bit_for_bit() {
    let path = repo("models/austen.gguf");
    let m = load(&path, None);
    let c = &m.config;
    let want = exercise(&mut Session::with_options(&m, opts(4)), 64);
    let layout = |groups: &[usize], blocks: &[usize], shares: Option<&[f64]>| {
        HybridLayout::new(c, groups, blocks, shares).unwrap()
    };
    for (name, comms, l) in [
        ("head alone, then 2 split, in process", in_process(3), layout(&[1, 2], &[2, 4], None)),
        ("head's stage split, then 1, in process", in_process(3), layout(&[2, 1], &[3, 3], None)),
        (
            "two split stages, uneven, in process",
            in_process(4),
            layout(&[2, 2], &[4, 2], Some(&[3.0, 1.0, 1.0, 2.0])),
        ),
        ("head alone, then 2 split, over TCP", tcp(3), layout(&[1, 2], &[3, 3], None)),
    ] {
        let models = pieces(&path, &l);
        let ring = l.ring().unwrap();
        let got: Run = on_mesh(&models, comms, &ring, PipelineTimeouts::default(), |h| {
            let out = exercise(h, 64);
            let w = h.wire();
            assert!(w.sent > 0 && w.received > 0, "{name}: {w:?}");
            out
        });
        assert_eq!(got.0, want.0, "{name}: greedy tokens");
        assert!(got.1 == want.1, "{name}: logits differ from one node's");
    }
}

#[test]
fn each_link_sends_in_its_own_type() {
    // A hybrid whose head group gathers exactly (f32) and whose hops go int8 out and f32 back
    // computes what a pipeline with the same blocks and hop types computes, bit for bit: the
    // group is exact and the hops round alike. Each type takes effect: int8 out differs from
    // one node, int8 back as well differs, int8 gathers differ again.
    let path = repo("models/austen.gguf");
    let m = load(&path, None);
    let c = &m.config;
    let one = exercise(&mut Session::with_options(&m, opts(4)), 24);
    let run = |groups: &[usize], hops: [_; 2], gathers: [_; 2]| -> (Run, u64) {
        let l = HybridLayout::new(c, groups, &[3, 3], None).unwrap();
        let models = pieces(&path, &l);
        let wires = StageWires { hops: hops.to_vec(), gathers: gathers.to_vec() };
        let ring = l.ring().unwrap();
        let n = groups.iter().sum();
        on_mesh_sending(&models, tcp(n), &ring, PipelineTimeouts::default(), Some(wires), |h| {
            let out = exercise(h, 24);
            (out, h.wire().received)
        })
    };
    let (pipe, pipe_in) = run(&[1, 1], [Q8, F32], [F16, F16]);
    let (hybrid, _) = run(&[2, 1], [Q8, F32], [F32, Q8]);
    assert!(
        hybrid == pipe,
        "the exact group and int8-out / f32-back hops differ from the pipeline's"
    );
    assert!(pipe.1 != one.1, "int8 out of the head changed nothing");
    let (both_q8, both_in) = run(&[1, 1], [Q8, Q8], [F32, F32]);
    assert!(both_q8.1 != pipe.1, "int8 back to the head changed nothing");
    // The rows coming back to the head: f32 is about four times int8's bytes.
    assert!(pipe_in > 3 * both_in, "{pipe_in} vs {both_in} bytes in");
    let (lossy_group, _) = run(&[2, 1], [Q8, F32], [Q8, F32]);
    assert!(lossy_group.1 != hybrid.1, "int8 gathers in the head's group changed nothing");
    let (all_q8, _) = run(&[2, 1], [Q8, Q8], [Q8, Q8]);
    // The largest logit difference from one node's, relative to the step's largest logit.
    let rel = |r: &Run| {
        r.1.iter().zip(&one.1).fold(0f32, |m, (a, b)| {
            let top = b.iter().fold(0f32, |t, v| t.max(v.abs()));
            a.iter().zip(b).fold(m, |m, (x, y)| m.max((x - y).abs() / top))
        })
    };
    for (name, r) in [
        ("hybrid [2, 1], int8 out, f32 back, group f32", &hybrid),
        ("hybrid [2, 1], int8 out, f32 back, group int8", &lossy_group),
        ("hybrid [2, 1], int8 everywhere", &all_q8),
        ("pipeline [1, 1], int8 both hops", &both_q8),
    ] {
        eprintln!("{name}: largest logit difference from one node {:.2e}", rel(r));
    }
    assert_eq!(hybrid.0[..4], one.0[..4], "greedy tokens part from one node's at once");
}

/// One decode step of four slots: every row's logits.
type DecodeStep<'a> = dyn FnMut(&[u32], &[usize]) -> Vec<Vec<f32>> + 'a;

#[test]
fn overlapped_passes_through_split_stages_match_one_node() {
    let path = repo("models/austen.gguf");
    let m = load(&path, None);
    let l = HybridLayout::new(&m.config, &[2, 2], &[3, 3], None).unwrap();
    let models = pieces(&path, &l);
    // Four slots decoded as two groups of two kept in flight, 16 steps.
    let run = |e: &mut DecodeStep| {
        let mut next = [3u32, 5, 7, 9];
        let mut all = Vec::new();
        for _ in 0..16 {
            let rows = e(&next, &[0, 1, 2, 3]);
            for (t, r) in next.iter_mut().zip(&rows) {
                *t = common::argmax(r);
            }
            all.extend(rows);
        }
        all
    };
    let mut one = Session::with_options(&m, opts(4));
    let vocab = m.config.vocab;
    let want = run(&mut |t, s| {
        one.decode(t, s).unwrap().chunks_exact(vocab).map(<[f32]>::to_vec).collect()
    });
    let ring = l.ring().unwrap();
    let got = on_mesh(&models, in_process(4), &ring, PipelineTimeouts::default(), |h| {
        run(&mut |t, s| {
            h.submit(&t[..2], &s[..2], false).unwrap();
            h.submit(&t[2..], &s[2..], false).unwrap();
            assert_eq!(h.in_flight(), 2);
            let mut rows: Vec<Vec<f32>> =
                h.collect().unwrap().chunks_exact(vocab).map(<[f32]>::to_vec).collect();
            rows.extend(h.collect().unwrap().chunks_exact(vocab).map(<[f32]>::to_vec));
            rows
        })
    });
    assert!(got == want, "overlapped hybrid passes differ from one node");
}

#[test]
fn a_group_member_that_dies_is_a_clear_error_in_bounded_time() {
    let path = repo("models/austen.gguf");
    let c = load(&path, None).config;
    let l = HybridLayout::new(&c, &[1, 2], &[3, 3], None).unwrap();
    let models = pieces(&path, &l);
    let ring = l.ring().unwrap();
    let timeouts = PipelineTimeouts {
        step: Duration::from_millis(800),
        per_row: Duration::from_millis(10),
        ..Default::default()
    };
    let mut comms = tcp(3);
    // Rank 2 (stage 1's second node) serves the prompt's pass, then drops its connections:
    // one message from its leader, then four gathers per block.
    let member = comms.pop().unwrap();
    comms.push(Box::new(Quitter { inner: member, left: 1 + 4 * 3, stall: false }));
    on_mesh(&models, comms, &ring, timeouts, |head| {
        head.forward_slot(0, &prompt()[..8]).unwrap();
        let t0 = Instant::now();
        let e = head.decode(&[5], &[0]).unwrap_err().to_string();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}: {e}");
        assert!(e.contains("node 1"), "names the stage's leader: {e}");
        let again = head.decode(&[5], &[0]).unwrap_err().to_string();
        assert!(again.contains("failed earlier"), "{again}");
    });
}

#[test]
fn a_head_whose_model_is_not_its_stage_is_refused() {
    let path = repo("models/austen.gguf");
    let c = load(&path, None).config;
    let l = HybridLayout::new(&c, &[2, 1], &[3, 3], None).unwrap();
    let ring = l.ring().unwrap();
    // A plain pipeline part (no piece) for a head whose stage has two nodes.
    let plain = LoadOptions {
        threads: 1,
        part: Some(ModelPart { layers: 0..3, ends: true }),
        ..Default::default()
    };
    let m = Model::from_pretrained(&path, &plain).unwrap();
    let mut comms = in_process(3).into_iter();
    let s = Session::with_options(&m, opts(1));
    let e = PipelineHead::hybrid(s, comms.next().unwrap(), &ring, PipelineTimeouts::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("not its stage"), "{e}");
    assert!(PipelineHead::hybrid(
        Session::with_options(&m, opts(1)),
        in_process(2).remove(0),
        &ring,
        PipelineTimeouts::default()
    )
    .is_err());
}

//! Pipeline parallelism against one node on the shipped (trained) model: the same greedy
//! tokens and bit-identical logits over 64 steps, and the same batched replies, for 2 and 3
//! stages with even and uneven block ranges, over in-process channels and loopback TCP, also
//! with two groups of sequences in flight at once (the overlapped schedule); and
//! a stage that dies or stalls gives the head a clear error within its bound, never a hang.

mod common;

use common::{argmax, greedy_steps, in_process, prompt, repo, tcp, Run};
use onebit_dist::pipeline::{serve_stage, PipelineHead, PipelineTimeouts};
use onebit_dist::wire::WireDtype;
use onebit_dist::{Comm, InProcComm};
use onebit_model::load::{LoadOptions, ModelPart};
use onebit_model::{Engine, Model, Session, SessionOptions};
use std::thread;
use std::time::{Duration, Instant};

fn load(part: Option<ModelPart>) -> Model {
    let opts = LoadOptions { threads: 1, part, ..Default::default() };
    Model::from_pretrained(&repo("models/austen.gguf"), &opts).unwrap()
}

fn opts(slots: usize) -> SessionOptions {
    SessionOptions { max_ctx: 256, max_batch: 16, slots, kv: onebit_model::KvDtype::F32 }
}

/// 64 greedy steps: the tokens and every step's logits.
fn greedy(e: &mut dyn Engine, prompt: &[u32]) -> Run {
    greedy_steps(e, prompt, 64)
}

/// Three prompts decoded together, each step's logits.
fn batched(e: &mut dyn Engine) -> Vec<Vec<f32>> {
    let p = prompt();
    let mut out = vec![];
    for s in 0..3 {
        e.reset_slot(s).unwrap();
        out.push(e.forward_slot(s, &p[..p.len() - s]).unwrap().to_vec());
    }
    for step in 0..8u32 {
        out.push(e.decode(&[step + 10, step + 20, step + 30], &[2, 0, 1]).unwrap().to_vec());
    }
    out
}

/// Prefills slots 0..3 with prompts of different lengths for [`four_greedy`].
fn prefill_four(e: &mut dyn Engine) -> Vec<u32> {
    let p = prompt();
    (0..4)
        .map(|s| {
            e.reset_slot(s).unwrap();
            argmax(e.forward_slot(s, &p[..p.len() - 2 * s]).unwrap())
        })
        .collect()
}

/// 8 greedy steps of four sequences decoded together: every step's logits, per slot.
fn four_greedy(e: &mut dyn Engine) -> Vec<Vec<f32>> {
    let mut next = prefill_four(e);
    let vocab = e.vocab();
    let mut out = vec![];
    for _ in 0..8 {
        let l = e.decode(&next, &[0, 1, 2, 3]).unwrap();
        for (t, row) in next.iter_mut().zip(l.chunks_exact(vocab)) {
            out.push(row.to_vec());
            *t = row
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0 as u32;
        }
    }
    out
}

/// The same as [`four_greedy`] with slots {0, 1} and {2, 3} as two groups kept in flight; once
/// with group {2, 3} out, slot 0 is truncated (to where it is): the pass stays in flight.
fn four_overlapped(p: &mut PipelineHead) -> Vec<Vec<f32>> {
    let mut next = prefill_four(p);
    let vocab = p.vocab();
    let mut rows = vec![vec![]; 32];
    p.submit(&next[..2], &[0, 1], false).unwrap();
    p.submit(&next[2..], &[2, 3], false).unwrap();
    for step in 0..8 {
        for g in 0..2 {
            assert_eq!(p.in_flight(), if step == 7 { 2 - g } else { 2 });
            let l = p.collect().unwrap();
            for (j, row) in l.chunks_exact(vocab).enumerate() {
                rows[step * 4 + g * 2 + j] = row.to_vec();
                next[g * 2 + j] = row
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                    .0 as u32;
            }
            if step == 4 && g == 0 {
                let at = p.position_of(0).unwrap();
                p.truncate_slot(0, at).unwrap();
                assert_eq!(p.in_flight(), 1, "truncating a slot no pass holds drained the other");
            }
            if step < 7 {
                p.submit(&next[g * 2..g * 2 + 2], &[g * 2, g * 2 + 1], false).unwrap();
            }
        }
    }
    rows
}

type Outputs = (Vec<u32>, Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

fn single() -> Outputs {
    let m = load(None);
    let mut s = Session::with_options(&m, opts(4));
    let (t, l) = greedy(&mut s, &prompt());
    let b = batched(&mut s);
    (t, l, b, four_greedy(&mut s))
}

/// Runs the head's checks with stages over `comms` (rank 0 first), blocks split by `split`.
fn pipelined(comms: Vec<Box<dyn Comm>>, split: &[usize]) -> Outputs {
    let starts: Vec<usize> = split
        .iter()
        .scan(0, |a, &n| {
            *a += n;
            Some(*a - n)
        })
        .collect();
    let parts: Vec<ModelPart> = split
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(r, (&n, &s))| ModelPart { layers: s..s + n, ends: r == 0 })
        .collect();
    let models: Vec<Model> = parts.iter().map(|p| load(Some(p.clone()))).collect();
    let mut comms = comms.into_iter();
    let head_comm = comms.next().unwrap();
    thread::scope(|sc| {
        let workers: Vec<_> = comms
            .zip(&models[1..])
            .map(|(mut c, m)| {
                sc.spawn(move || {
                    let mut s = Session::with_options(m, opts(4));
                    serve_stage(&mut s, &mut *c, PipelineTimeouts::default()).unwrap()
                })
            })
            .collect();
        let s = Session::with_options(&models[0], opts(4));
        let mut head = PipelineHead::new(s, head_comm, PipelineTimeouts::default()).unwrap();
        let (t, l) = greedy(&mut head, &prompt());
        let b = batched(&mut head);
        let four = four_overlapped(&mut head);
        let wire = head.wire();
        assert!(wire.steps >= 64 + 11 && wire.sent > 0, "{wire:?}");
        drop(head);
        for w in workers {
            let stats = w.join().unwrap();
            assert!(stats.steps >= 64 + 11);
        }
        (t, l, b, four)
    })
}

#[test]
fn pipelines_match_one_node_bit_for_bit() {
    let (tokens, logits, batch, four) = single();
    for (name, comms, split) in [
        ("2 stages in process, 3:3", in_process(2), vec![3, 3]),
        ("2 stages in process, 1:5", in_process(2), vec![1, 5]),
        ("3 stages in process, 2:1:3", in_process(3), vec![2, 1, 3]),
        ("2 stages over TCP, 4:2", tcp(2), vec![4, 2]),
        ("3 stages over TCP, 1:2:3", tcp(3), vec![1, 2, 3]),
    ] {
        let (t, l, b, f) = pipelined(comms, &split);
        assert_eq!(t, tokens, "{name}: greedy tokens");
        assert!(l == logits, "{name}: logits differ from one node's");
        assert!(b == batch, "{name}: batched logits differ from one node's");
        assert!(f == four, "{name}: two overlapped groups differ from one batch on one node");
    }
}

#[test]
fn a_stage_that_dies_or_stalls_is_a_clear_error_in_bounded_time() {
    let head_model = load(Some(ModelPart { layers: 0..3, ends: true }));
    let tail = load(Some(ModelPart { layers: 3..6, ends: false }));
    let timeouts = PipelineTimeouts {
        step: Duration::from_millis(800),
        per_row: Duration::from_millis(10),
        ..Default::default()
    };
    for stall in [false, true] {
        let mut comms = tcp(2).into_iter();
        let (head_comm, mut worker_comm) = (comms.next().unwrap(), comms.next().unwrap());
        let tail = &tail;
        thread::scope(|sc| {
            sc.spawn(move || {
                // Answers the prompt, then dies (drops its connection) or stalls.
                let mut s = Session::with_options(tail, opts(1));
                let mut buf = Vec::new();
                let far = Instant::now() + Duration::from_secs(30);
                worker_comm.recv(0, &mut buf, far).unwrap();
                let n = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
                let h = tail.config.hidden;
                let x: Vec<f32> = buf[6 + 4 * n..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let y = s.stage(onebit_model::StageInput::Hidden(&x), &vec![0; n]).unwrap();
                let mut msg = buf[..6 + 4 * n].to_vec();
                msg.extend(y.iter().flat_map(|v| v.to_le_bytes()));
                assert_eq!(msg.len(), buf.len(), "{h}");
                worker_comm.send(0, &msg, far).unwrap();
                if stall {
                    thread::sleep(Duration::from_secs(3));
                }
                drop(worker_comm);
            });
            let s = Session::with_options(&head_model, opts(1));
            let mut head = PipelineHead::new(s, head_comm, timeouts).unwrap();
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
fn f16_and_int8_on_the_wire_keep_the_greedy_tokens() {
    let (tokens, logits, _, _) = single();
    let parts = [ModelPart { layers: 0..3, ends: true }, ModelPart { layers: 3..6, ends: false }];
    let models: Vec<Model> = parts.iter().map(|p| load(Some(p.clone()))).collect();
    for dtype in [WireDtype::F16, WireDtype::Q8] {
        let mut comms = InProcComm::mesh(2).into_iter();
        let (head_comm, mut tail) = (comms.next().unwrap(), comms.next().unwrap());
        let (t, l) = thread::scope(|sc| {
            let tail_model = &models[1];
            sc.spawn(move || {
                let mut s = Session::with_options(tail_model, opts(4));
                serve_stage(&mut s, &mut tail, PipelineTimeouts::default()).unwrap()
            });
            let s = Session::with_options(&models[0], opts(4));
            let mut head = PipelineHead::new(s, Box::new(head_comm), PipelineTimeouts::default())
                .unwrap()
                .with_wire(dtype)
                .unwrap();
            greedy(&mut head, &prompt())
        });
        // The largest logit difference relative to the step's largest logit, over 65 steps.
        let rel = l
            .iter()
            .zip(&logits)
            .map(|(a, b)| {
                let top = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / top
            })
            .fold(0f32, f32::max);
        eprintln!("{dtype:?} on the wire: largest logit difference {rel:.2e} of the largest logit");
        assert!(rel > 0.0 && rel < 0.1, "{dtype:?}: {rel}");
        assert_eq!(t, tokens, "{dtype:?}: greedy tokens differ from one node's");
    }
}

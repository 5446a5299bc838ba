//! What the executor tests share: the repository's files, meshes of 1-n ranks in process or
//! over loopback TCP, the shipped model's prompt, argmax.

#![allow(dead_code)]

use onebit_dist::{Comm, InProcComm, TcpComm, TcpConfig};
use onebit_model::{Engine, Sampler, SamplerConfig, Tokenizer};
use std::net::{SocketAddr, TcpListener};
use std::thread;

/// A path in the repository.
pub fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

/// A mesh of `n` ranks joined by channels, rank 0 first.
pub fn in_process(n: usize) -> Vec<Box<dyn Comm>> {
    InProcComm::mesh(n).into_iter().map(|c| Box::new(c) as Box<dyn Comm>).collect()
}

/// A mesh of `n` ranks joined over loopback TCP, rank 0 first.
pub fn tcp(n: usize) -> Vec<Box<dyn Comm>> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let addrs = addrs.clone();
            thread::spawn(move || TcpComm::join(&l, r, &addrs, &TcpConfig::new([3; 32])).unwrap())
        })
        .collect();
    handles.into_iter().map(|h| Box::new(h.join().unwrap()) as Box<dyn Comm>).collect()
}

/// The shipped model's test prompt: longer than one 16-row chunk, so it crosses a mesh in
/// several passes, the first through the blocked attention path.
pub fn prompt() -> Vec<u32> {
    let tok = Tokenizer::from_file(&repo("models/austen.tokenizer.json")).unwrap();
    let p = tok
        .encode("It is a truth universally acknowledged, that a single man in possession", true)
        .unwrap();
    assert!(p.len() > 16, "{} tokens", p.len());
    p
}

/// The index of the largest logit (the first of equals).
pub fn argmax(l: &[f32]) -> u32 {
    l.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

/// Greedy tokens and every step's logits.
pub type Run = (Vec<u32>, Vec<Vec<f32>>);

/// `prompt` in slot 0, then `steps` greedy steps: the tokens and every step's logits.
pub fn greedy_steps(e: &mut dyn Engine, prompt: &[u32], steps: usize) -> Run {
    let mut logits = vec![e.forward_slot(0, prompt).unwrap().to_vec()];
    let mut tokens = vec![];
    for _ in 0..steps {
        let t = argmax(logits.last().unwrap());
        tokens.push(t);
        logits.push(e.decode(&[t], &[0]).unwrap().to_vec());
    }
    (tokens, logits)
}

/// A session's size for the executor tests: `slots` sequences of up to 256 positions.
pub fn opts(slots: usize) -> onebit_model::SessionOptions {
    onebit_model::SessionOptions {
        max_ctx: 256,
        max_batch: 16,
        slots,
        kv: onebit_model::KvDtype::F32,
    }
}

/// The sampling of [`exercise`]'s sampled picks: every setting on, a penalty on the prompt.
pub fn sampled() -> SamplerConfig {
    SamplerConfig {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.01,
        repeat_penalty: 1.3,
        repeat_last_n: 12,
        seed: 7,
    }
}

/// Greedy steps, batched decode of three slots, and mixed steps (a prompt chunk beside
/// decode rows, logits for some rows): every row of logits, in order, and the greedy tokens.
pub fn exercise(e: &mut dyn Engine, steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let p = prompt();
    let mut logits = vec![e.forward_slot(0, &p).unwrap().to_vec()];
    let mut tokens = vec![];
    for _ in 0..steps {
        let t = argmax(logits.last().unwrap());
        tokens.push(t);
        logits.push(e.decode(&[t], &[0]).unwrap().to_vec());
    }
    for s in 1..3 {
        logits.push(e.forward_slot(s, &p[..p.len() - s]).unwrap().to_vec());
    }
    let vocab = e.vocab();
    for step in 0..4u32 {
        let l = e.decode(&[step + 10, step + 20, step + 30], &[2, 0, 1]).unwrap();
        logits.extend(l.chunks_exact(vocab).map(<[f32]>::to_vec));
    }
    // Greedy picks of a batched step (a tensor-parallel mesh picks on its nodes), as rows.
    let mut ids = Vec::new();
    for step in 0..3u32 {
        e.decode_argmax(&[step + 40, step + 50, step + 60], &[1, 2, 0], &mut ids).unwrap();
        logits.push(ids.iter().map(|&i| i as f32).collect());
    }
    // Sampled picks, drawn as replies draw them (a tensor-parallel mesh picks among its
    // nodes' candidates, one node on its whole rows of logits).
    let mut samplers: Vec<Sampler> =
        (0..3).map(|i| Sampler::new(SamplerConfig { seed: 7 + i, ..sampled() }, vocab)).collect();
    for step in 0..4u32 {
        let mut penalized = Vec::new();
        let draws: Vec<_> = samplers.iter_mut().map(|s| s.draw(&p, &mut penalized)).collect();
        let rows = [step + 70, step + 80, step + 90];
        e.decode_sampled(&rows, &[1, 2, 0], &draws, &penalized, &mut ids).unwrap();
        logits.push(ids.iter().map(|&i| i as f32).collect());
    }
    e.truncate_slot(1, 5).unwrap();
    let l = e.step(&[7, 8, 9, 11], &[1, 1, 2, 1], &[false, true, true, true]).unwrap();
    logits.extend(l.chunks_exact(vocab).map(<[f32]>::to_vec));
    e.reset_slot(2).unwrap();
    logits.push(e.forward_slot(2, &p[..3]).unwrap().to_vec());
    (tokens, logits)
}

/// A worker's comm that works for `left` receives, then closes (or first stalls 3 s).
pub struct Quitter {
    /// The real end.
    pub inner: Box<dyn Comm>,
    /// Receives left before it quits.
    pub left: usize,
    /// Whether it stalls before quitting.
    pub stall: bool,
}

impl Comm for Quitter {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn send(&mut self, to: usize, msg: &[u8], d: std::time::Instant) -> onebit_dist::Result<()> {
        self.inner.send(to, msg, d)
    }
    fn recv(
        &mut self,
        from: usize,
        buf: &mut Vec<u8>,
        d: std::time::Instant,
    ) -> onebit_dist::Result<()> {
        if self.left == 0 {
            if self.stall {
                thread::sleep(std::time::Duration::from_secs(3));
            }
            return Err(onebit_dist::DistError::Usage("worker quits".into()));
        }
        self.left -= 1;
        self.inner.recv(from, buf, d)
    }
}

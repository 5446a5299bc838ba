//! What the executor tests share: the repository's files, meshes of 1-n ranks in process or
//! over loopback TCP, the shipped model's prompt, argmax.

#![allow(dead_code)]

use onebit_dist::{Comm, InProcComm, TcpComm, TcpConfig};
use onebit_model::{Engine, Tokenizer};
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

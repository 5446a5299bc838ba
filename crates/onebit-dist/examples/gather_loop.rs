//! Times the tensor-parallel exchange alone: two ranks on one machine (or two) all-gather
//! pieces the size of a 2B4T decode step's, in the order a block gathers them, with no model.
//! Run each rank pinned to its own core:
//!   taskset -c 0 gather_loop 0 127.0.0.1:7700,127.0.0.1:7701 & taskset -c 1 gather_loop 1 ...
//!   (arguments: RANK ADDRS [ITERATIONS [KIB of memory streamed between exchanges [ROWS]]]);
//!   ROWS (default 1) multiplies every piece, as a batched decode step of that many sequences does.
//! Prints the median microseconds per exchange of each size over the iterations.

use onebit_dist::collective::all_gather;
use onebit_dist::{TcpComm, TcpConfig};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: gather_loop RANK ADDR0,ADDR1 [ITERS]");
        std::process::exit(2);
    }
    let rank: usize = args[1].parse().expect("rank");
    let addrs: Vec<SocketAddr> = args[2].split(',').map(|a| a.parse().expect("address")).collect();
    let iters: usize = args.get(3).map_or(3000, |s| s.parse().expect("iterations"));
    let listener = TcpListener::bind(addrs[rank]).expect("bind");
    let mut comm = TcpComm::join(&listener, rank, &addrs, &TcpConfig::new([7; 32])).expect("join");
    // One block's pieces at batch 1, f32: attention 1280, hidden 1280, FFN 3456, hidden 1280.
    let rows: usize = args.get(5).map_or(1, |s| s.parse().expect("rows"));
    let sizes = [1280 * 4, 1280 * 4, 3456 * 4, 1280 * 4].map(|n| n * rows);
    let pieces: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![rank as u8; n]).collect();
    let mut out = Vec::new();
    // Optional work between exchanges: KIB kibibytes streamed from a 256 MiB buffer, as a
    // decode step streams weights (0: the exchanges alone).
    let kib: usize = args.get(4).map_or(0, |s| s.parse().expect("KiB of work"));
    let big = vec![1u64; if kib > 0 { 32 << 20 } else { 1 }];
    let mut at = 0;
    let mut sink = 0u64;
    let mut per = vec![Vec::with_capacity(iters); sizes.len()];
    for it in 0..iters + 200 {
        for (i, p) in pieces.iter().enumerate() {
            for _ in 0..kib * 128 {
                sink = sink.wrapping_add(big[at]);
                at = (at + 1) % big.len();
            }
            let t = Instant::now();
            let deadline = t + Duration::from_secs(10);
            all_gather(&mut comm, p, &mut out, deadline).expect("gather");
            if it >= 200 {
                per[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    std::hint::black_box(sink);
    for (i, mut v) in per.into_iter().enumerate() {
        v.sort_by(f64::total_cmp);
        let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
        println!(
            "rank {rank} piece {i} ({} B): median {:.1} us, p10 {:.1}, p90 {:.1}",
            sizes[i],
            q(0.5),
            q(0.1),
            q(0.9)
        );
    }
}

//! The link probe on in-process, delayed (the link emulation shim) and loopback TCP meshes:
//! every rank gets the same list, an injected 5 ms ± 2 ms delay is what it measures, and a
//! propagation delay of the TCP backend's emulation is in the exchange latency.

use onebit_dist::link_emulation::LinkEmulation;
use onebit_dist::probe::{probe_links, DelayedComm, LinkProbe, ProbeOptions};
use onebit_dist::{Comm, InProcComm, TcpComm, TcpConfig};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

fn run_all<C: Comm + 'static>(comms: Vec<C>, o: ProbeOptions) -> Vec<Vec<LinkProbe>> {
    let handles: Vec<_> = comms
        .into_iter()
        .map(|mut c| {
            let o = o.clone();
            thread::spawn(move || {
                probe_links(&mut c, &o, Instant::now() + Duration::from_secs(30)).unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn small() -> ProbeOptions {
    ProbeOptions { pings: 10, sizes: vec![1 << 10, 64 << 10], reps: 3 }
}

#[test]
fn every_rank_gets_every_link() {
    let results = run_all(InProcComm::mesh(3), small());
    assert!(results.iter().all(|r| r == &results[0]));
    let pairs: Vec<(usize, usize)> = results[0].iter().map(|l| (l.a, l.b)).collect();
    assert_eq!(pairs, vec![(0, 1), (0, 2), (1, 2)]);
    for l in &results[0] {
        assert!(l.rtt_s > 0.0 && l.rtt_s < 0.05 && l.bandwidth_bps > 1e6, "{l:?}");
        assert!(l.exchange_bandwidth_bps > 1e6 && l.exchange_latency_s < 0.05, "{l:?}");
    }
}

#[test]
fn an_injected_delay_is_what_the_probe_measures() {
    let comms: Vec<_> = InProcComm::mesh(2)
        .into_iter()
        .enumerate()
        .map(|(r, c)| {
            DelayedComm::new(c, Duration::from_millis(5), Duration::from_millis(2), r as u64)
        })
        .collect();
    let l = &run_all(comms, small())[0][0];
    // A round trip is two delayed sends: 10 ms ± 4 ms, plus scheduling.
    assert!(l.rtt_s > 0.007 && l.rtt_s < 0.025, "{l:?}");
    assert!(l.latency_s > 0.006 && l.latency_s < 0.025, "{l:?}");
    // Both ends send at once: an exchange waits for one delayed message, not two.
    assert!(l.exchange_latency_s > 0.003 && l.exchange_latency_s < 0.02, "{l:?}");
    assert!(l.jitter_s >= 0.0 && l.jitter_s < 0.02, "{l:?}");
}

/// Two ranks over loopback TCP with `emulate` (the backend's link emulation, if any).
fn tcp_pair(emulate: Option<LinkEmulation>) -> Vec<TcpComm> {
    let ls: Vec<TcpListener> = (0..2).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let cfg =
        TcpConfig { join_timeout: Duration::from_secs(5), emulate, ..TcpConfig::new([3; 32]) };
    let handles: Vec<_> = ls
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let (addrs, cfg) = (addrs.clone(), cfg.clone());
            thread::spawn(move || TcpComm::join(&l, r, &addrs, &cfg).unwrap())
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn loopback_tcp_links_are_probed() {
    let results = run_all(tcp_pair(None), small());
    assert_eq!(results[0], results[1]);
    let l = &results[0][0];
    eprintln!("loopback: {l:?}");
    assert!(l.rtt_s < 0.05 && l.bandwidth_bps > 1e7, "{l:?}");
}

#[test]
fn a_propagation_delay_is_in_the_exchange_latency() {
    // The TCP backend's link emulation holds each message at the receiver (the sender goes
    // on, as over a real link): an exchange's latency is one way's delay, not zero.
    let emulate = Some(LinkEmulation { delay: Duration::from_millis(3), jitter: Duration::ZERO });
    let l = &run_all(tcp_pair(emulate), small())[0][0];
    eprintln!("3 ms emulated: {l:?}");
    assert!(l.rtt_s > 0.0055 && l.rtt_s < 0.02, "{l:?}");
    assert!(l.exchange_latency_s > 0.0025 && l.exchange_latency_s < 0.012, "{l:?}");
}

#[test]
fn an_exchange_is_priced_at_what_a_chain_of_them_costs() {
    // A pass's exchanges follow one another, each waiting for the piece the other end sent
    // when the one before reached it. On an emulated 4 ms link, the probe's price of an
    // exchange is checked against the mean of 40 such exchanges timed on the same pair.
    let emulate = Some(LinkEmulation { delay: Duration::from_millis(4), jitter: Duration::ZERO });
    let o = ProbeOptions { pings: 20, sizes: vec![1 << 10, 16 << 10], reps: 5 };
    let handles: Vec<_> = tcp_pair(emulate)
        .into_iter()
        .map(|mut c| {
            let o = o.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                let links = probe_links(&mut c, &o, deadline).unwrap();
                let (piece, mut out) = (vec![7u8; 1 << 10], Vec::new());
                let t = Instant::now();
                for _ in 0..40 {
                    onebit_dist::collective::all_gather(&mut c, &piece, &mut out, deadline)
                        .unwrap();
                }
                (links[0].clone(), t.elapsed().as_secs_f64() / 40.0)
            })
        })
        .collect();
    let (l, chain) = handles.into_iter().map(|h| h.join().unwrap()).next().unwrap();
    let priced = l.exchange_latency_s + (1 << 10) as f64 / l.exchange_bandwidth_bps;
    eprintln!("4 ms: an exchange priced {priced:.5} s, a chain's {chain:.5} s; {l:?}");
    assert!(priced > chain * 0.8 && priced < chain * 1.25, "priced {priced} vs {chain}: {l:?}");
}

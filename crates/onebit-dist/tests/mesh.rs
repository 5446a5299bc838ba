//! The collectives on in-process and loopback TCP meshes of 1 to 4 ranks (results equal to
//! the rank-order sum and bit-identical on every rank), and the faults a home cluster meets:
//! a wrong key, garbage on the port, an oversized frame, a stalled peer, a peer that dies.
//! Every wait has a deadline, and each test checks it returned within its bound.

use onebit_dist::collective::{all_gather, all_reduce_sum, barrier, broadcast};
use onebit_dist::link_emulation::LinkEmulation;
use onebit_dist::{Comm, DistError, InProcComm, TcpComm, TcpConfig};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const KEY: [u8; 32] = [7; 32];

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// Rank r's vector: a few thousand values with rounding-sensitive magnitudes.
fn values(r: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + r * 104_729) % 1000) as f32 * 1e-3 * (1.0 + r as f32 * 1e4))
        .collect()
}

/// Runs the collectives on one rank; returns its all-reduce result.
fn exercise(comm: &mut dyn Comm) -> Vec<f32> {
    let (rank, size) = (comm.rank(), comm.size());
    let n = 3000;
    let mut data = values(rank, n);
    let mut scratch = Vec::new();
    all_reduce_sum(comm, &mut data, &mut scratch, soon()).unwrap();
    let mut want = values(0, n);
    for r in 1..size {
        for (w, v) in want.iter_mut().zip(values(r, n)) {
            *w += v;
        }
    }
    assert_eq!(data, want, "rank {rank}: the sum in rank order");
    let mut out = Vec::new();
    all_gather(comm, &[rank as u8; 3], &mut out, soon()).unwrap();
    assert_eq!(out, (0..size).map(|r| vec![r as u8; 3]).collect::<Vec<_>>());
    // A message far larger than one Noise message (65,519 bytes of plaintext).
    let mut big =
        if rank == size - 1 { (0..300_001).map(|i| (i % 251) as u8).collect() } else { Vec::new() };
    broadcast(comm, size - 1, &mut big, soon()).unwrap();
    assert_eq!(big, (0..300_001).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    barrier(comm, soon()).unwrap();
    data
}

#[test]
fn in_process_collectives_are_exact_and_identical_on_every_rank() {
    for size in 1..=4 {
        let handles: Vec<_> = InProcComm::mesh(size)
            .into_iter()
            .map(|mut c| thread::spawn(move || exercise(&mut c)))
            .collect();
        let results: Vec<Vec<f32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.iter().all(|r| r == &results[0]), "size {size}");
    }
}

fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    (ls, addrs)
}

/// Joins a loopback mesh, one thread per rank, each with its own config.
fn tcp_mesh(cfgs: Vec<TcpConfig>) -> Vec<onebit_dist::Result<TcpComm>> {
    let (ls, addrs) = listeners(cfgs.len());
    let handles: Vec<_> = ls
        .into_iter()
        .zip(cfgs)
        .enumerate()
        .map(|(r, (l, cfg))| {
            let addrs = addrs.clone();
            thread::spawn(move || TcpComm::join(&l, r, &addrs, &cfg))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn quick(key: [u8; 32]) -> TcpConfig {
    TcpConfig { join_timeout: Duration::from_secs(3), ..TcpConfig::new(key) }
}

#[test]
fn tcp_collectives_match_the_in_process_ones() {
    for size in [2, 3] {
        let comms: Vec<TcpComm> =
            tcp_mesh(vec![quick(KEY); size]).into_iter().map(|c| c.unwrap()).collect();
        let handles: Vec<_> =
            comms.into_iter().map(|mut c| thread::spawn(move || exercise(&mut c))).collect();
        let results: Vec<Vec<f32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.iter().all(|r| r == &results[0]), "size {size}");
    }
}

#[test]
fn an_emulated_link_delays_each_message_without_blocking_the_sender_and_needs_both_ends() {
    let link = LinkEmulation::parse("20,2").unwrap();
    let emulated = TcpConfig { emulate: Some(link), ..quick(KEY) };
    let mut comms: Vec<TcpComm> =
        tcp_mesh(vec![emulated.clone(); 2]).into_iter().map(|c| c.unwrap()).collect();
    let (mut b, mut a) = (comms.pop().unwrap(), comms.pop().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    // Ten messages sent at once leave at once and arrive about 20 ms later, all of them.
    let t = Instant::now();
    for i in 0..10u8 {
        a.send(1, &[i; 100], deadline).unwrap();
    }
    assert!(t.elapsed() < Duration::from_millis(15), "{:?}", t.elapsed());
    let mut buf = Vec::new();
    for i in 0..10u8 {
        b.recv(0, &mut buf, deadline).unwrap();
        assert_eq!(buf, [i; 100]);
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(18) && took < Duration::from_millis(200), "{took:?}");
    let t2 = thread::spawn(move || exercise(&mut b));
    exercise(&mut a);
    t2.join().unwrap();
    // One end emulating, the other not: the peer is refused (and the refusal logged), the
    // mesh does not form, rank 0 names the node it still lacks.
    for cfgs in [vec![emulated.clone(), quick(KEY)], vec![quick(KEY), emulated.clone()]] {
        let r = tcp_mesh(cfgs);
        let errs: Vec<String> =
            r.iter().filter_map(|c| c.as_ref().err().map(|e| e.to_string())).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("[1]") && errs[0].contains("join"), "{errs:?}");
    }
}

#[test]
fn a_wrong_key_is_refused_and_named() {
    let t = Instant::now();
    let r = tcp_mesh(vec![quick(KEY), quick([8; 32])]);
    let (e0, e1) = (r[0].as_ref().err().unwrap(), r[1].as_ref().err().unwrap());
    // Rank 0 waited for rank 1 until its deadline; rank 1 saw the handshake fail or the
    // connection dropped by rank 0.
    assert!(matches!(e0, DistError::Timeout { op: "join", .. }), "{e0}");
    assert!(e0.to_string().contains("[1]"), "{e0}");
    assert!(matches!(e1, DistError::Handshake { .. } | DistError::Closed { .. }), "{e1}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[test]
fn garbage_on_the_port_is_refused_and_the_mesh_still_forms() {
    let (mut ls, addrs) = listeners(2);
    let l1 = ls.pop().unwrap();
    let l0 = ls.pop().unwrap();
    let a = addrs.clone();
    let head = thread::spawn(move || TcpComm::join(&l0, 0, &a, &quick(KEY)));
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0xff; 3][..], &[0x00, 0x04, 1, 2, 3, 4][..]] {
        let mut s = TcpStream::connect(addrs[0]).unwrap();
        s.write_all(junk).unwrap();
        drop(s);
    }
    let worker = TcpComm::join(&l1, 1, &addrs, &quick(KEY)).unwrap();
    let mut head = head.join().unwrap().unwrap();
    let mut w = worker;
    let t = thread::spawn(move || exercise(&mut w));
    exercise(&mut head);
    t.join().unwrap();
}

#[test]
fn oversized_frames_stalled_and_dead_peers_are_clear_errors_in_bounded_time() {
    let small = TcpConfig { max_frame: 1000, ..quick(KEY) };
    let mut comms: Vec<TcpComm> =
        tcp_mesh(vec![small, quick(KEY)]).into_iter().map(|c| c.unwrap()).collect();
    let stalled = comms.pop().unwrap();
    let mut head = comms.pop().unwrap();
    let mut buf = Vec::new();

    // A stalled peer: nothing arrives, the deadline holds.
    let t = Instant::now();
    let e = head.recv(1, &mut buf, Instant::now() + Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, DistError::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The timed-out connection is dropped: later calls fail at once instead of reading a
    // stream that may be mid-frame.
    assert!(matches!(head.send(1, b"x", soon()), Err(DistError::Closed { .. })));

    // An oversized frame: refused before anything is allocated for it.
    let mut comms: Vec<TcpComm> =
        tcp_mesh(vec![TcpConfig { max_frame: 1000, ..quick(KEY) }, quick(KEY)])
            .into_iter()
            .map(|c| c.unwrap())
            .collect();
    let mut w = comms.pop().unwrap();
    head = comms.pop().unwrap();
    w.send(0, &[1u8; 2000], soon()).unwrap();
    let e = head.recv(1, &mut buf, soon()).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit of 1000"), "{e}");

    // A peer that dies: the head learns it at once, not at the deadline.
    let mut comms: Vec<TcpComm> =
        tcp_mesh(vec![quick(KEY), quick(KEY)]).into_iter().map(|c| c.unwrap()).collect();
    drop(comms.pop());
    let mut head = comms.pop().unwrap();
    let t = Instant::now();
    let e = head.recv(1, &mut buf, soon()).unwrap_err();
    assert!(matches!(e, DistError::Closed { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop((w, stalled));
}

#[test]
fn misuse_is_an_error() {
    let mut m = InProcComm::mesh(2);
    assert!(matches!(m[0].send(0, b"", soon()), Err(DistError::Usage(_))));
    assert!(matches!(m[0].send(2, b"", soon()), Err(DistError::Usage(_))));
    let (ls, addrs) = listeners(1);
    let l = ls.into_iter().next().unwrap();
    assert!(TcpComm::join(&l, 1, &addrs, &quick(KEY)).is_err());
}

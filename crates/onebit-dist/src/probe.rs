//! The link probe: per pair of nodes, round-trip time of small messages (median and
//! jitter) and a least-squares fit of transfer time against size (`t = latency + size / bw`)
//! over a size sweep — what the planner's cost model needs of a link.
//!
//! Every rank walks the same list of pairs in the same order; in a pair the lower rank times
//! and the higher echoes, the others wait. The results are then gathered so every rank holds
//! every link's figures.

use crate::collective::all_gather;
use crate::comm::Comm;
use crate::error::{DistError, Result};
use std::time::{Duration, Instant};

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Small round trips per pair.
    pub pings: usize,
    /// Payload sizes of the bandwidth sweep, bytes.
    pub sizes: Vec<usize>,
    /// Transfers per size (the median is fitted).
    pub reps: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { pings: 20, sizes: vec![1 << 10, 16 << 10, 256 << 10, 1 << 20], reps: 5 }
    }
}

/// The links as a table for people: rtt, jitter, fitted latency and bandwidth.
pub fn links_table(links: &[LinkProbe]) -> String {
    let mut t = format!(
        "{:<12} {:>10} {:>10} {:>12} {:>14}\n",
        "link", "rtt ms", "jitter ms", "latency ms", "bandwidth MB/s"
    );
    for l in links {
        t += &format!(
            "{:<12} {:>10.3} {:>10.3} {:>12.3} {:>14.1}\n",
            format!("{} - {}", l.a, l.b),
            l.rtt_s * 1e3,
            l.jitter_s * 1e3,
            l.latency_s * 1e3,
            l.bandwidth_bps / 1e6
        );
    }
    t
}

/// One link, measured from its lower rank.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkProbe {
    /// The lower rank of the pair.
    pub a: usize,
    /// The higher rank.
    pub b: usize,
    /// Median round trip of an 8-byte message, seconds.
    pub rtt_s: f64,
    /// Jitter: the 90th percentile round trip minus the median, seconds.
    pub jitter_s: f64,
    /// Fitted fixed cost of one transfer, seconds (≥ 0).
    pub latency_s: f64,
    /// Fitted bandwidth, bytes per second.
    pub bandwidth_bps: f64,
}

impl LinkProbe {
    /// Predicted seconds to move `bytes` one way over this link.
    pub fn transfer_s(&self, bytes: usize) -> f64 {
        self.latency_s + bytes as f64 / self.bandwidth_bps
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48);
        v.extend((self.a as u64).to_le_bytes());
        v.extend((self.b as u64).to_le_bytes());
        for x in [self.rtt_s, self.jitter_s, self.latency_s, self.bandwidth_bps] {
            v.extend(x.to_le_bytes());
        }
        v
    }

    fn from_bytes(b: &[u8]) -> Option<LinkProbe> {
        if b.len() != 48 {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes")) as usize;
        let f = |i: usize| f64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(LinkProbe {
            a: u(0),
            b: u(8),
            rtt_s: f(16),
            jitter_s: f(24),
            latency_s: f(32),
            bandwidth_bps: f(40),
        })
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Least-squares line through (size, seconds): (intercept, slope), intercept clamped at 0
/// and the slope at a positive floor (a link faster than memory is a measuring artefact).
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|&(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
    let slope = if sxx > 0.0 { (sxy / sxx).max(1e-12) } else { 1e-12 };
    ((my - slope * mx).max(0.0), slope)
}

/// Measures every link of the mesh; call on every rank with the same options. Returns the
/// links in pair order (0-1, 0-2, …, 1-2, …), the same list on every rank.
pub fn probe_links(
    comm: &mut dyn Comm,
    o: &ProbeOptions,
    deadline: Instant,
) -> Result<Vec<LinkProbe>> {
    if o.pings == 0 || o.reps == 0 || o.sizes.is_empty() {
        return Err(DistError::Usage("a probe needs pings, reps and sizes".into()));
    }
    let (rank, size) = (comm.rank(), comm.size());
    let largest = o.sizes.iter().copied().max().unwrap_or(0);
    let payload = vec![0x5au8; largest.max(8)];
    let mut buf = Vec::new();
    let mut mine = Vec::new();
    for a in 0..size {
        for b in a + 1..size {
            if rank == a {
                mine.extend(time_link(comm, b, o, &payload, &mut buf, deadline)?.to_bytes());
            } else if rank == b {
                echo(comm, a, o, &mut buf, deadline)?;
            }
        }
    }
    let mut all = Vec::new();
    all_gather(comm, &mine, &mut all, deadline)?;
    let mut links = Vec::new();
    for (r, bytes) in all.iter().enumerate() {
        for chunk in bytes.chunks(48) {
            let l = LinkProbe::from_bytes(chunk).ok_or_else(|| DistError::Frame {
                peer: r.to_string(),
                why: format!("probe results of {} bytes", bytes.len()),
            })?;
            links.push(l);
        }
    }
    links.sort_by_key(|l| (l.a, l.b));
    Ok(links)
}

/// The timing side of one pair: pings, then the size sweep (each transfer acknowledged by
/// a 1-byte reply).
fn time_link(
    comm: &mut dyn Comm,
    peer: usize,
    o: &ProbeOptions,
    payload: &[u8],
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<LinkProbe> {
    let mut rtts = Vec::with_capacity(o.pings);
    for _ in 0..o.pings {
        let t = Instant::now();
        comm.send(peer, &payload[..8], deadline)?;
        comm.recv(peer, buf, deadline)?;
        rtts.push(t.elapsed().as_secs_f64());
    }
    let rtt = median(&mut rtts);
    let p90 = rtts[(rtts.len() * 9 / 10).min(rtts.len() - 1)];
    let mut points = Vec::with_capacity(o.sizes.len());
    for &s in &o.sizes {
        let mut times = Vec::with_capacity(o.reps);
        for _ in 0..o.reps {
            let t = Instant::now();
            comm.send(peer, &payload[..s], deadline)?;
            comm.recv(peer, buf, deadline)?;
            times.push(t.elapsed().as_secs_f64());
        }
        points.push((s as f64, median(&mut times)));
    }
    let (latency, slope) = fit(&points);
    Ok(LinkProbe {
        a: comm.rank(),
        b: peer,
        rtt_s: rtt,
        jitter_s: p90 - rtt,
        latency_s: latency,
        bandwidth_bps: 1.0 / slope,
    })
}

/// The echoing side: returns each ping whole and acknowledges each transfer with one byte.
fn echo(
    comm: &mut dyn Comm,
    peer: usize,
    o: &ProbeOptions,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<()> {
    for _ in 0..o.pings {
        comm.recv(peer, buf, deadline)?;
        comm.send(peer, buf, deadline)?;
    }
    for _ in 0..o.sizes.len() * o.reps {
        comm.recv(peer, buf, deadline)?;
        comm.send(peer, &[1], deadline)?;
    }
    Ok(())
}

/// A [`Comm`] that holds every send for a fixed delay plus uniform jitter: the link emulation
/// of the tests (this kernel has no `netem`), e.g. 5 ms ± 2 ms for WiFi.
pub struct DelayedComm<C> {
    inner: C,
    delay: Duration,
    jitter: Duration,
    state: u64,
}

impl<C: Comm> DelayedComm<C> {
    /// Wraps `inner`: each send waits `delay` plus up to ±`jitter` (seeded, reproducible).
    pub fn new(inner: C, delay: Duration, jitter: Duration, seed: u64) -> Self {
        DelayedComm { inner, delay, jitter, state: seed | 1 }
    }
}

impl<C: Comm> Comm for DelayedComm<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn send(&mut self, to: usize, msg: &[u8], deadline: Instant) -> Result<()> {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let u = (self.state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let wait = self.delay.as_secs_f64() + u * self.jitter.as_secs_f64();
        std::thread::sleep(Duration::from_secs_f64(wait.max(0.0)));
        self.inner.send(to, msg, deadline)
    }

    fn recv(&mut self, from: usize, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        self.inner.recv(from, buf, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_line_and_clamps_nonsense() {
        let pts: Vec<(f64, f64)> =
            [1e3, 1e4, 1e5, 1e6].iter().map(|&s| (s, 0.002 + s / 1e8)).collect();
        let (a, b) = fit(&pts);
        assert!((a - 0.002).abs() < 1e-9 && (1.0 / b - 1e8).abs() < 1.0, "{a} {b}");
        // Time falling with size: the slope is floored, the intercept stays the mean.
        let (a, b) = fit(&[(1.0, 5.0), (2.0, 1.0)]);
        assert!((a - 3.0).abs() < 1e-9 && b == 1e-12, "{a} {b}");
        let l =
            LinkProbe { a: 0, b: 1, rtt_s: 1.0, jitter_s: 2.0, latency_s: 3.0, bandwidth_bps: 4.0 };
        assert_eq!(LinkProbe::from_bytes(&l.to_bytes()), Some(l));
        assert_eq!(LinkProbe::from_bytes(&[0; 47]), None);
    }
}

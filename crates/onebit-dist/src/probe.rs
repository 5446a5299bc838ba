//! The link probe: per pair of nodes, round-trip time of small messages (median and
//! jitter) and a least-squares fit of transfer time against size (`t = latency + size / bw`)
//! over a size sweep — what the planner's cost model needs of a link: one way, as a
//! pipeline's hop moves a hidden state, and as an exchange, as a tensor-parallel gather moves
//! its pieces (both ends send at once, and each has just streamed a stretch of weights).
//! The two differ where the link is fast and the nodes' processors do the work: on loopback
//! each end encrypts its piece and decrypts the other's on its one core, and a gather after
//! 3 MB of weights took 16-23 µs for the pieces that took 6-9 µs back to back.
//!
//! Every rank walks the same list of pairs in the same order; in a pair the lower rank times
//! and the higher echoes, the others wait. The results are then gathered so every rank holds
//! every link's figures.

use crate::collective::all_gather;
use crate::comm::{Comm, GroupComm};
use crate::error::{DistError, Result};
use std::time::{Duration, Instant};

/// Bytes of memory each end streams before every timed exchange: about what a node of a
/// 2B4T-sized tensor-parallel mesh reads between two gathers, more than a core's L2.
pub const EXCHANGE_STREAM: usize = 4 << 20;

/// Bytes of one link's figures on the wire.
const LINK_BYTES: usize = 64;

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

/// The sweep stops at 256 kB, about what a pass moves at once: a tensor-parallel piece at 16
/// sequences is at most 82 kB (f32), a pipeline hop at 8 is 80 kB. Exchanges of 1 MB each
/// way at once measured 55 MB/s on a tbf-shaped 1 Gbit/s link (why, not established: two bulk
/// TCP streams crossing the shaper's queues) where 256 kB ones measured 124 MB/s, and
/// a line through both priced a pass's 58 kB f32 pieces at half the speed they crossed at.
impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { pings: 20, sizes: vec![1 << 10, 16 << 10, 64 << 10, 256 << 10], reps: 5 }
    }
}

/// The links as a table for people: rtt, jitter, fitted latency and bandwidth one way and
/// for exchanges.
pub fn links_table(links: &[LinkProbe]) -> String {
    let mut t = format!(
        "{:<12} {:>10} {:>10} {:>12} {:>14} {:>14} {:>14}\n",
        "link",
        "rtt ms",
        "jitter ms",
        "latency ms",
        "bandwidth MB/s",
        "exch. lat. ms",
        "exch. MB/s"
    );
    for l in links {
        t += &format!(
            "{:<12} {:>10.3} {:>10.3} {:>12.3} {:>14.1} {:>14.3} {:>14.1}\n",
            format!("{} - {}", l.a, l.b),
            l.rtt_s * 1e3,
            l.jitter_s * 1e3,
            l.latency_s * 1e3,
            l.bandwidth_bps / 1e6,
            l.exchange_latency_s * 1e3,
            l.exchange_bandwidth_bps / 1e6
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
    /// Fitted fixed cost of one exchange (both ends send a message of the same size at once,
    /// after streaming [`EXCHANGE_STREAM`] bytes of memory; half of two in a row, so one
    /// way's propagation delay is in it), seconds (≥ 0).
    pub exchange_latency_s: f64,
    /// Fitted bandwidth of an exchange: bytes a node receives per second.
    pub exchange_bandwidth_bps: f64,
}

impl LinkProbe {
    /// A link whose exchanges cost what its one-way transfers do (a full-duplex wire the
    /// nodes' processors keep up with), its round trip twice the latency, without jitter.
    pub fn uniform(a: usize, b: usize, latency_s: f64, bandwidth_bps: f64) -> LinkProbe {
        LinkProbe {
            a,
            b,
            rtt_s: 2.0 * latency_s,
            jitter_s: 0.0,
            latency_s,
            bandwidth_bps,
            exchange_latency_s: latency_s,
            exchange_bandwidth_bps: bandwidth_bps,
        }
    }

    /// Predicted seconds to move `bytes` one way over this link.
    pub fn transfer_s(&self, bytes: usize) -> f64 {
        self.latency_s + bytes as f64 / self.bandwidth_bps
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(LINK_BYTES);
        v.extend((self.a as u64).to_le_bytes());
        v.extend((self.b as u64).to_le_bytes());
        let (el, eb) = (self.exchange_latency_s, self.exchange_bandwidth_bps);
        for x in [self.rtt_s, self.jitter_s, self.latency_s, self.bandwidth_bps, el, eb] {
            v.extend(x.to_le_bytes());
        }
        v
    }

    fn from_bytes(b: &[u8]) -> Option<LinkProbe> {
        if b.len() != LINK_BYTES {
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
            exchange_latency_s: f(48),
            exchange_bandwidth_bps: f(56),
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

/// As [`fit`] for the slope, the intercept taken from the smallest size's point: the fixed
/// cost of the small pieces a tensor-parallel gather sends at one row (5-14 kB on the 2B4T).
/// An unweighted line through the exchanges on loopback put it at 0-3 µs, bent by the
/// megabyte points, where a 5 kB exchange after a stretch of weights takes ~16 µs; a line
/// weighted by relative error instead took its slope from the small sizes, which a shaped
/// link's token bucket lets through at full speed (65 MB/s on a 100 Mbit/s link).
fn fit_anchored(points: &[(f64, f64)]) -> (f64, f64) {
    let (_, slope) = fit(points);
    let &(x, y) = points.iter().min_by(|a, b| a.0.total_cmp(&b.0)).expect("a point");
    ((y - slope * x).max(0.0), slope)
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
    let (mut buf, mut parts) = (Vec::new(), Vec::new());
    let mut mine = Vec::new();
    let stream = Stream(vec![1; EXCHANGE_STREAM / 8]);
    for a in 0..size {
        for b in a + 1..size {
            let (buf, parts) = (&mut buf, &mut parts);
            let mut s = Sweep { comm: &mut *comm, o, payload: &payload, buf, parts, deadline };
            if rank == a {
                mine.extend(time_link(&mut s, b, &stream)?.to_bytes());
            } else if rank == b {
                echo(&mut s, a, &stream)?;
            }
        }
    }
    let mut all = Vec::new();
    all_gather(comm, &mine, &mut all, deadline)?;
    let mut links = Vec::new();
    for (r, bytes) in all.iter().enumerate() {
        for chunk in bytes.chunks(LINK_BYTES) {
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

/// Memory streamed before each timed exchange, as a pass streams weights between gathers.
struct Stream(Vec<u64>);

impl Stream {
    fn read(&self) {
        std::hint::black_box(self.0.iter().fold(0u64, |a, &x| a.wrapping_add(x)));
    }
}

/// What both sides of a pair's sweeps use.
struct Sweep<'a, 'c> {
    comm: &'a mut (dyn Comm + 'c),
    o: &'a ProbeOptions,
    payload: &'a [u8],
    buf: &'a mut Vec<u8>,
    parts: &'a mut Vec<Vec<u8>>,
    deadline: Instant,
}

impl Sweep<'_, '_> {
    /// `bytes` of the payload to `peer` and as many back: the executor's all-gather over the
    /// pair.
    fn exchange(&mut self, peer: usize, bytes: usize) -> Result<()> {
        let me = self.comm.rank();
        let pair = [me.min(peer), me.max(peer)];
        let mut g = GroupComm::new(&mut *self.comm, &pair)?;
        all_gather(&mut g, &self.payload[..bytes], self.parts, self.deadline)
    }

    /// Medians of `o.reps` timings of `one(size)` for each of `o.sizes`, as (size, seconds).
    fn sweep(&mut self, mut one: impl FnMut(&mut Self, usize) -> Result<f64>) -> Result<Points> {
        let o = self.o;
        let mut points = Vec::with_capacity(o.sizes.len());
        for &size in &o.sizes {
            let mut times = (0..o.reps).map(|_| one(self, size)).collect::<Result<Vec<_>>>()?;
            points.push((size as f64, median(&mut times)));
        }
        Ok(points)
    }
}

/// (bytes, seconds) pairs of a sweep.
type Points = Vec<(f64, f64)>;

/// The timing side of one pair: pings, then the one-way size sweep (each transfer
/// acknowledged by a 1-byte reply), then the exchange sweep.
fn time_link(s: &mut Sweep<'_, '_>, peer: usize, stream: &Stream) -> Result<LinkProbe> {
    let (o, deadline) = (s.o, s.deadline);
    let mut rtts = Vec::with_capacity(o.pings);
    for _ in 0..o.pings {
        let t = Instant::now();
        s.comm.send(peer, &s.payload[..8], deadline)?;
        s.comm.recv(peer, s.buf, deadline)?;
        rtts.push(t.elapsed().as_secs_f64());
    }
    let rtt = median(&mut rtts);
    let p90 = rtts[(rtts.len() * 9 / 10).min(rtts.len() - 1)];
    let one_way = s.sweep(|s, size| {
        let t = Instant::now();
        s.comm.send(peer, &s.payload[..size], deadline)?;
        s.comm.recv(peer, s.buf, deadline)?;
        Ok(t.elapsed().as_secs_f64())
    })?;
    tracing::debug!(peer, ?one_way, "one-way transfers: (bytes, seconds)");
    let (latency, slope) = fit(&one_way);
    let exchanges = s.sweep(|s, size| {
        // Both ends start streaming together (the echo side answers this ping first), the
        // echo side one way's latency earlier: its piece of a first exchange is here by the
        // time this side's starts, and the second exchange right after waits for the link
        // twice. Two exchanges in a row cost what two of a pass's syncs cost (timing one
        // alone saw no latency on a link with a real propagation delay).
        s.comm.send(peer, &s.payload[..1], deadline)?;
        s.comm.recv(peer, s.buf, deadline)?;
        stream.read();
        let t = Instant::now();
        s.exchange(peer, size)?;
        s.exchange(peer, size)?;
        Ok(t.elapsed().as_secs_f64() / 2.0)
    })?;
    tracing::debug!(peer, ?exchanges, "exchanges: (bytes each way, seconds)");
    let (exchange_latency, exchange_slope) = fit_anchored(&exchanges);
    // A pass's exchanges follow one another, each waiting for a piece the other end sent when
    // the one before reached it: one way's latency each, what half the pings' median rtt
    // measures over 20 trips where the sweep's smallest point has 5. On a 5 ms ± 2 ms link
    // those 5 put an exchange at 4.1 ms, rtt/2 at 5.3, a pass at ~5.7 an exchange.
    let exchange_latency = exchange_latency.max(rtt / 2.0);
    Ok(LinkProbe {
        a: s.comm.rank(),
        b: peer,
        rtt_s: rtt,
        jitter_s: p90 - rtt,
        latency_s: latency,
        bandwidth_bps: 1.0 / slope,
        exchange_latency_s: exchange_latency,
        exchange_bandwidth_bps: 1.0 / exchange_slope,
    })
}

/// The echoing side: returns each ping whole, acknowledges each transfer with one byte, and
/// takes its part in each exchange.
fn echo(s: &mut Sweep<'_, '_>, peer: usize, stream: &Stream) -> Result<()> {
    let (o, deadline) = (s.o, s.deadline);
    for _ in 0..o.pings {
        s.comm.recv(peer, s.buf, deadline)?;
        s.comm.send(peer, s.buf, deadline)?;
    }
    for _ in 0..o.sizes.len() * o.reps {
        s.comm.recv(peer, s.buf, deadline)?;
        s.comm.send(peer, &[1], deadline)?;
    }
    for &size in &o.sizes {
        for _ in 0..o.reps {
            s.comm.recv(peer, s.buf, deadline)?;
            s.comm.send(peer, &[1], deadline)?;
            stream.read();
            s.exchange(peer, size)?;
            s.exchange(peer, size)?;
        }
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
        // Anchored at the smallest size: exact on a line, and the small sizes' fixed cost
        // kept where the big ones bend the line, with the unweighted slope.
        let (a, b) = fit_anchored(&[(1e6, 0.002 + 1e6 / 1e8), (1e3, 0.002 + 1e3 / 1e8)]);
        assert!((a - 0.002).abs() < 1e-9 && (1.0 / b - 1e8).abs() < 1.0, "{a} {b}");
        let pts = [(1e3, 16e-6), (16e3, 25e-6), (256e3, 170e-6), (1e6, 700e-6)];
        let (a, b) = (fit_anchored(&pts), fit(&pts));
        assert!(a.0 > 14e-6 && b.0 < 10e-6 && a.1 == b.1, "{a:?} {b:?}");
        // Time falling with size: the slope is floored, the intercept stays the mean.
        let (a, b) = fit(&[(1.0, 5.0), (2.0, 1.0)]);
        assert!((a - 3.0).abs() < 1e-9 && b == 1e-12, "{a} {b}");
        let l = LinkProbe {
            exchange_latency_s: 5.0,
            exchange_bandwidth_bps: 6.0,
            ..LinkProbe::uniform(0, 1, 3.0, 4.0)
        };
        assert_eq!(LinkProbe::from_bytes(&l.to_bytes()), Some(l));
        assert_eq!(LinkProbe::from_bytes(&[0; 63]), None);
    }
}

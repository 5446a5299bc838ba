//! Link emulation for benchmarks on one machine (this kernel has no `netem`): every message of
//! a TCP mesh carries the time it was sent, and the receiver holds it for a delay and a
//! jitter after it arrived, so the link has a propagation delay without slowing the sender (a
//! pipeline keeps its groups in flight, as over a real link). Messages keep their order, as
//! TCP does: one never arrives before the one sent ahead of it. The clock is the system
//! clock, shared by the processes and network namespaces of one machine, not across machines.
//! Both ends must run with it (the hello frame says whether a node does): `--emulate-link`.
//!
//! When it arrived: where the receiver was waiting for it, the moment its last bytes came in
//! (after the shaped link's serialization, as on a wire: bytes, then propagation); where it
//! was already there, the receiver cannot tell and counts from the send time. Counting from
//! the send time alone held a message for max(delay, serialization) instead of their sum: a
//! 58 kB exchange on the 100 Mbit/s + 5 ms link cost ~6.8 ms where a wire takes ~10. It also
//! hid the receiver's wake-up from `poll` inside the delay; now that adds, as it does on a
//! real machine: ~0.3 ms a message between the benchmarks' pinned processes, ~1.1 ms between
//! two threads of one test process in the Firecracker VM this was measured in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A delay and a jitter (uniform in ±jitter) added to every message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkEmulation {
    /// Added to every message.
    pub delay: Duration,
    /// Each message gets a further uniform offset in ±jitter (never below zero in all).
    pub jitter: Duration,
}

impl LinkEmulation {
    /// Parses `DELAY_MS` or `DELAY_MS,JITTER_MS` (e.g. `5,2`).
    pub fn parse(s: &str) -> Result<LinkEmulation, String> {
        let ms = |v: &str| -> Result<Duration, String> {
            let x: f64 = v.trim().parse().map_err(|_| format!("'{v}' is not milliseconds"))?;
            if !(0.0..=10_000.0).contains(&x) {
                return Err(format!("{x} ms is outside 0..10000"));
            }
            Ok(Duration::from_secs_f64(x / 1e3))
        };
        let (d, j) = s.split_once(',').unwrap_or((s, "0"));
        Ok(LinkEmulation { delay: ms(d)?, jitter: ms(j)? })
    }
}

/// Nanoseconds since the Unix epoch on this machine's clock.
fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// One node's side of the emulation: its jitter generator and when the last message from
/// each peer arrived.
pub(crate) struct Emulator {
    link: LinkEmulation,
    state: u64,
    last: Vec<u64>,
}

impl Emulator {
    /// For rank `rank` of a mesh of `size` (the seed differs per rank, reproducibly).
    pub(crate) fn new(link: LinkEmulation, rank: usize, size: usize) -> Self {
        Emulator { link, state: 0x9e37_79b9_7f4a_7c15 ^ (rank as u64 + 1), last: vec![0; size] }
    }

    /// `out` becomes the send time followed by `msg`.
    pub(crate) fn stamp(out: &mut Vec<u8>, msg: &[u8]) {
        out.clear();
        out.extend(now_ns().to_le_bytes());
        out.extend_from_slice(msg);
    }

    /// Waits until the message in `buf` (from `from`, stamped) is due, then strips the stamp:
    /// its delay after now if it `arrived_now` (the receiver waited for it), else after its
    /// send time.
    pub(crate) fn arrive(
        &mut self,
        from: usize,
        buf: &mut Vec<u8>,
        arrived_now: bool,
    ) -> Result<(), String> {
        let stamp = buf.get(..8).ok_or("a message without the emulated link's stamp")?;
        let sent = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let u = (self.state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let extra = (self.link.delay.as_secs_f64() + u * self.link.jitter.as_secs_f64()).max(0.0);
        let now = now_ns();
        let from_t = if arrived_now { now.max(sent) } else { sent };
        let due = (from_t + (extra * 1e9) as u64).max(self.last[from]);
        self.last[from] = due;
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        buf.drain(..8);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_delay_and_jitter() {
        let ms = Duration::from_millis;
        assert_eq!(LinkEmulation::parse("5,2"), Ok(LinkEmulation { delay: ms(5), jitter: ms(2) }));
        assert_eq!(
            LinkEmulation::parse("0.2"),
            Ok(LinkEmulation { delay: Duration::from_micros(200), jitter: ms(0) })
        );
        for bad in ["", "x", "-1", "5,", "1e9"] {
            assert!(LinkEmulation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_waits_its_delay_and_never_overtakes() {
        let link =
            LinkEmulation { delay: Duration::from_millis(3), jitter: Duration::from_millis(2) };
        let mut e = Emulator::new(link, 1, 2);
        let mut buf = Vec::new();
        let mut last = std::time::Instant::now();
        for i in 0..20u8 {
            Emulator::stamp(&mut buf, &[i]);
            let t0 = std::time::Instant::now();
            e.arrive(0, &mut buf, i % 2 == 0).unwrap();
            assert_eq!(buf, [i]);
            // 3 ms ± 2 ms after sending, and not before the previous message.
            assert!(t0.elapsed() >= Duration::from_micros(900), "{:?}", t0.elapsed());
            assert!(std::time::Instant::now() >= last);
            last = std::time::Instant::now();
        }
        assert!(e.arrive(0, &mut vec![1, 2], false).is_err());
    }

    #[test]
    fn a_message_that_just_came_in_waits_its_delay_from_now() {
        let link = LinkEmulation { delay: Duration::from_millis(4), jitter: Duration::ZERO };
        let mut e = Emulator::new(link, 1, 2);
        let mut buf = Vec::new();
        // Sent 3 ms ago (its bytes took that long to cross): counted from its send time it is
        // due in 1 ms; having just come in, in 4.
        Emulator::stamp(&mut buf, &[7]);
        std::thread::sleep(Duration::from_millis(3));
        let t0 = std::time::Instant::now();
        e.arrive(0, &mut buf, true).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(4), "{:?}", t0.elapsed());
        Emulator::stamp(&mut buf, &[8]);
        std::thread::sleep(Duration::from_millis(3));
        let t0 = std::time::Instant::now();
        e.arrive(0, &mut buf, false).unwrap();
        let held = t0.elapsed();
        assert!(held < Duration::from_millis(3), "{held:?}");
    }
}

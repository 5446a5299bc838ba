//! One TCP connection's byte stream with deadlines: the length-prefixed Noise messages of
//! [`crate::frame`] written whole and read from a receive buffer.
//!
//! A tensor-parallel node exchanges a few kilobytes with each peer over a hundred times per
//! token, so the per-message system calls are part of the decode's critical path. The socket
//! stays blocking and every call says how it wants to wait: `send`/`recv` with `MSG_DONTWAIT`
//! and, only when the socket has no room or no bytes, `poll` until the deadline (rustix's safe
//! wrappers: this crate has no `unsafe`). Before, each message cost four more calls (socket
//! timeouts set and the socket switched to non-blocking and back) and a second read for the
//! length prefix; now a message costs one write, and a read usually takes every message
//! waiting (bench/runs/2026-12-06-xeon-issue15-socket-calls.txt).

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{recv, send, RecvFlags, SendFlags};
use std::io::{Error, ErrorKind, Result};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long a read spins on an empty socket before it sleeps in `poll`: a node of a
/// tensor-parallel mesh waits for its peers a few dozen times per token, and waking a sleeping
/// thread costs tens of microseconds (more in a VM) on top of the link's own latency.
const SPIN: Duration = Duration::from_millis(1);

/// Bytes of the prefix before each message.
pub(crate) const PREFIX: usize = 2;

/// A connected socket and the bytes read from it but not yet taken.
pub(crate) struct Sock {
    stream: TcpStream,
    rx: Vec<u8>,
    /// `rx[start..end]` is read and not yet taken.
    start: usize,
    end: usize,
    /// Whether a read found nothing there yet since [`Sock::take_waited`] last asked (the link
    /// emulation's clue that a message arrived just now rather than earlier).
    waited: bool,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND: SendFlags = SendFlags::DONTWAIT;

impl Sock {
    /// Wraps a connected stream; `max_msg` is the largest message it will read.
    pub(crate) fn new(stream: TcpStream, max_msg: usize) -> Sock {
        Sock { stream, rx: vec![0; 2 * (PREFIX + max_msg)], start: 0, end: 0, waited: false }
    }

    /// The socket, for its options.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether a read had to wait for bytes since the last call.
    pub(crate) fn take_waited(&mut self) -> bool {
        std::mem::take(&mut self.waited)
    }

    /// Writes all of `buf` by `deadline`.
    pub(crate) fn write_all(&mut self, mut buf: &[u8], deadline: Instant) -> Result<()> {
        while !buf.is_empty() {
            match send(&self.stream, buf, SEND) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e == rustix::io::Errno::AGAIN => wait(&self.stream, false, deadline)?,
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes the message `framed[PREFIX..]` by `deadline`, its length put in the first
    /// [`PREFIX`] bytes, in one write where it fits the socket: with TCP_NODELAY a separate
    /// write of the prefix would go out as its own segment and wake the receiver twice.
    pub(crate) fn write_msg(&mut self, framed: &mut [u8], deadline: Instant) -> Result<()> {
        let len = framed.len().checked_sub(PREFIX).ok_or_else(|| Error::other("no prefix"))?;
        let len = u16::try_from(len).map_err(|_| Error::other("a message over 64 KiB"))?;
        framed[..PREFIX].copy_from_slice(&len.to_be_bytes());
        self.write_all(framed, deadline)
    }

    /// The next message, read by `deadline`; valid until the next call.
    pub(crate) fn read_msg(&mut self, deadline: Instant) -> Result<&[u8]> {
        self.fill(PREFIX, deadline)?;
        let len = u16::from_be_bytes([self.rx[self.start], self.rx[self.start + 1]]) as usize;
        if PREFIX + len > self.rx.len() / 2 {
            return Err(Error::new(ErrorKind::InvalidData, format!("a message of {len} bytes")));
        }
        self.fill(PREFIX + len, deadline)?;
        let at = self.start + PREFIX;
        self.start = at + len;
        Ok(&self.rx[at..at + len])
    }

    /// Reads until `want` bytes are buffered: spinning for [`SPIN`], then sleeping in `poll`.
    fn fill(&mut self, want: usize, deadline: Instant) -> Result<()> {
        if self.end - self.start >= want {
            return Ok(());
        }
        // Room for the rest of the message and more behind it: the half of the buffer
        // holds the largest message.
        if self.start + want > self.rx.len() / 2 {
            self.rx.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        let t0 = Instant::now();
        while self.end - self.start < want {
            match recv(&self.stream, &mut self.rx[self.end..], RecvFlags::DONTWAIT) {
                Ok((_, 0)) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok((_, n)) => self.end += n,
                Err(e) if e == rustix::io::Errno::AGAIN => {
                    self.waited = true;
                    if t0.elapsed() < SPIN {
                        std::hint::spin_loop();
                    } else {
                        wait(&self.stream, true, deadline)?;
                    }
                }
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Sleeps until the socket can be read (`read`) or written, or `deadline` passes
/// (`ErrorKind::TimedOut`).
fn wait(stream: &TcpStream, read: bool, deadline: Instant) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    let flags = if read { PollFlags::IN } else { PollFlags::OUT };
    let mut fds = [PollFd::new(stream, flags)];
    let t = Timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ };
    match poll(&mut fds, Some(&t)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn pair() -> (Sock, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (Sock::new(a, 100), b)
    }

    #[test]
    fn messages_split_and_joined_on_the_wire_come_out_whole() {
        let (mut s, mut peer) = pair();
        let soon = || Instant::now() + Duration::from_secs(5);
        // Three messages in one write, then one in single bytes with pauses.
        peer.write_all(&[0, 3, 1, 2, 3, 0, 0, 0, 2, 9, 8]).unwrap();
        assert_eq!(s.read_msg(soon()).unwrap(), &[1, 2, 3]);
        assert_eq!(s.read_msg(soon()).unwrap(), &[] as &[u8]);
        assert_eq!(s.read_msg(soon()).unwrap(), &[9, 8]);
        let t = std::thread::spawn(move || {
            for b in [0u8, 100].into_iter().chain(0..100) {
                peer.write_all(&[b]).unwrap();
                if b % 37 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
            peer
        });
        let want: Vec<u8> = (0..100).collect();
        assert_eq!(s.read_msg(soon()).unwrap(), &want[..]);
        let mut peer = t.join().unwrap();
        let mut framed = vec![0, 0, 5, 6];
        s.write_msg(&mut framed, soon()).unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 2, 5, 6]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Messages of any sizes, written in chunks of any sizes, are read back whole and in
        /// order (the buffer compacts and refills across message boundaries).
        #[test]
        fn any_chunking_of_any_messages_reads_back_the_messages(
            lens in proptest::collection::vec(0usize..=100, 1..40),
            cuts in proptest::collection::vec(1usize..300, 1..20),
        ) {
            let (mut s, mut peer) = pair();
            let msgs: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            let mut stream = Vec::new();
            for m in &msgs {
                stream.extend((m.len() as u16).to_be_bytes());
                stream.extend(m);
            }
            let t = std::thread::spawn(move || {
                let mut rest = &stream[..];
                for &c in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (now, later) = rest.split_at(c.min(rest.len()));
                    peer.write_all(now).unwrap();
                    peer.flush().unwrap();
                    rest = later;
                }
                peer
            });
            for m in &msgs {
                let got = s.read_msg(Instant::now() + Duration::from_secs(5)).unwrap();
                proptest::prop_assert_eq!(got, &m[..]);
            }
            drop(t.join().unwrap());
        }
    }

    #[test]
    fn oversized_silent_and_closed_peers_are_errors() {
        let (mut s, mut peer) = pair();
        peer.write_all(&[0, 101]).unwrap();
        let e = s.read_msg(Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        let (mut s, peer) = pair();
        let t0 = Instant::now();
        let e = s.read_msg(t0 + Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(peer);
        let (mut s, mut peer) = pair();
        peer.write_all(&[0, 9, 1]).unwrap();
        drop(peer);
        let e = s.read_msg(Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }
}

//! [`TcpComm`]: the mesh over TCP for home clusters. Each rank listens on its address;
//! every rank connects to each lower rank and accepts the higher ones. A connection starts
//! with a Noise `NNpsk0` handshake (X25519, AES-256-GCM, BLAKE2s) keyed by the mesh's
//! pre-shared key, so only nodes holding the key file get in and everything after is
//! encrypted and authenticated; then each side sends a hello frame (its rank and the mesh
//! size). Frames are [`crate::frame`]'s, read and written by `crate::sock`. A peer with the
//! wrong key, another protocol version, or a malformed or oversized frame is refused with a
//! logged error; the listening rank keeps accepting until its peers have joined or the
//! deadline passes. The cipher is `ring`'s (snow's `ring-accelerated` resolver; the handshake's
//! X25519 and BLAKE2s stay snow's defaults): RustCrypto's capped a loopback link near 0.9 GB/s,
//! below what a 10 Gbit/s wire carries (bench/runs/2026-12-06-xeon-issue15-ring-cipher.txt).
//! AES-GCM rather than ChaCha20-Poly1305: every x86-64 CPU of the last decade and every
//! 64-bit ARM one has AES and carry-less multiply instructions, and there `ring`'s AES-GCM
//! took a tensor-parallel exchange of 5 kB from 12 to 8 µs on loopback
//! (bench/runs/2026-12-06-xeon-issue15-socket-calls.txt).

use crate::comm::{check_peer, Comm};
use crate::error::{DistError, Result};
use crate::frame::{decode_header, encode_header, CHUNK, HEADER_LEN, NOISE_MAX};
use crate::link_emulation::{Emulator, LinkEmulation};
use crate::sock::{Sock, PREFIX};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The Noise protocol every node speaks.
const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";

/// How a node joins a TCP mesh.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The mesh's pre-shared key ([`crate::key::read_key_file`]).
    pub key: [u8; 32],
    /// The largest frame this node accepts, bytes.
    pub max_frame: usize,
    /// How long joining may take (peers starting later are waited for).
    pub join_timeout: Duration,
    /// Test mode: a delay and jitter on every message ([`crate::link_emulation`]).
    pub emulate: Option<LinkEmulation>,
}

impl TcpConfig {
    /// Defaults: frames up to 256 MiB, 30 s to join.
    pub fn new(key: [u8; 32]) -> Self {
        TcpConfig {
            key,
            max_frame: 256 << 20,
            join_timeout: Duration::from_secs(30),
            emulate: None,
        }
    }
}

/// One connection: the socket, its Noise state and reusable buffers.
pub(crate) struct Peer {
    name: String,
    sock: Sock,
    noise: snow::TransportState,
    /// A Noise message to send, behind room for its length prefix.
    cipher: Vec<u8>,
    /// A frame's next plaintext chunk to send, and the last one received.
    plain_out: Vec<u8>,
    plain_in: Vec<u8>,
    /// Bytes of this socket's send buffer as the kernel granted it.
    send_room: usize,
}

/// Socket buffers each connection asks for (the kernel may grant less: Linux caps at
/// `net.core.wmem_max`, 208 KiB on a default Debian): room for a tensor-parallel decode
/// step's pieces, so both ends of a link can send before either receives.
const SOCKET_BUFFER: usize = 1 << 20;

/// One rank of a TCP mesh.
pub struct TcpComm {
    rank: usize,
    size: usize,
    max_frame: usize,
    peers: Vec<Option<Peer>>,
    emulator: Option<Emulator>,
    /// A message with its emulation stamp (reused).
    stamped: Vec<u8>,
}

fn io_err(peer: &str, op: &'static str, e: std::io::Error, wait: Duration) -> DistError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            DistError::Timeout { peer: peer.into(), op, after: wait }
        }
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => DistError::Closed { peer: peer.into(), op },
        _ => DistError::Io { peer: peer.into(), op, source: e },
    }
}

/// Time left before `deadline`, or a timeout error.
fn remaining(deadline: Instant, peer: &str, op: &'static str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(DistError::Timeout { peer: peer.into(), op, after: Duration::ZERO });
    }
    Ok(left)
}

/// The error of a socket call on the link to `peer`; `wait` is how long it was given.
fn sock_err<'a>(
    peer: &'a str,
    op: &'static str,
    wait: Duration,
) -> impl Fn(std::io::Error) -> DistError + 'a {
    move |e| io_err(peer, op, e, wait)
}

pub(crate) fn handshake(
    stream: TcpStream,
    name: String,
    key: &[u8; 32],
    initiator: bool,
    deadline: Instant,
) -> Result<Peer> {
    let fail = |why: String| DistError::Handshake { peer: name.clone(), why };
    stream.set_nodelay(true).map_err(|e| io_err(&name, "connect", e, Duration::ZERO))?;
    let params = PATTERN.parse().expect("a valid Noise pattern");
    let builder = snow::Builder::new(params).psk(0, key);
    let mut hs = if initiator { builder.build_initiator() } else { builder.build_responder() }
        .map_err(|e| fail(e.to_string()))?;
    let mut sock = Sock::new(stream, NOISE_MAX);
    let (mut msg, mut payload) = (vec![0u8; PREFIX + NOISE_MAX], vec![0u8; NOISE_MAX]);
    let wait = deadline.saturating_duration_since(Instant::now());
    for step in 0..2 {
        if (step == 0) == initiator {
            let n = hs.write_message(&[], &mut msg[PREFIX..]).map_err(|e| fail(e.to_string()))?;
            msg.truncate(PREFIX + n);
            sock.write_msg(&mut msg, deadline).map_err(sock_err(&name, "send", wait))?;
        } else {
            let wire = sock.read_msg(deadline).map_err(sock_err(&name, "recv", wait))?;
            hs.read_message(wire, &mut payload).map_err(|e| fail(e.to_string()))?;
        }
    }
    let noise = hs.into_transport_mode().map_err(|e| fail(e.to_string()))?;
    // Linux reports the send buffer doubled for its own bookkeeping: half is payload room.
    let opts = socket2::SockRef::from(sock.stream());
    let _ = opts.set_send_buffer_size(SOCKET_BUFFER);
    let _ = opts.set_recv_buffer_size(SOCKET_BUFFER);
    let send_room = opts.send_buffer_size().unwrap_or(0) / 2;
    Ok(Peer {
        name,
        sock,
        noise,
        cipher: vec![0; PREFIX + NOISE_MAX],
        plain_out: Vec::with_capacity(CHUNK),
        plain_in: vec![0; NOISE_MAX],
        send_room,
    })
}

impl Peer {
    /// Who is at the other end (rank and address, or the address before it has a rank).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn send_frame(&mut self, msg: &[u8], deadline: Instant) -> Result<()> {
        let len = u32::try_from(msg.len())
            .map_err(|_| DistError::Usage(format!("a message of {} bytes", msg.len())))?;
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut rest = msg;
        let mut first = true;
        while first || !rest.is_empty() {
            self.plain_out.clear();
            if first {
                self.plain_out.extend_from_slice(&encode_header(len));
            }
            let take = rest.len().min(CHUNK - self.plain_out.len());
            self.plain_out.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            first = false;
            // Sized once at the handshake; write_message fills the front.
            let n = self
                .noise
                .write_message(&self.plain_out, &mut self.cipher[PREFIX..])
                .map_err(|e| DistError::Frame { peer: self.name.clone(), why: e.to_string() })?;
            self.sock
                .write_msg(&mut self.cipher[..PREFIX + n], deadline)
                .map_err(sock_err(&self.name, "send", wait))?;
        }
        Ok(())
    }

    pub(crate) fn recv_frame(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        deadline: Instant,
    ) -> Result<()> {
        let bad = |name: &str, why: String| DistError::Frame { peer: name.into(), why };
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut total = None;
        buf.clear();
        loop {
            let wire = self.sock.read_msg(deadline).map_err(sock_err(&self.name, "recv", wait))?;
            let n = self
                .noise
                .read_message(wire, &mut self.plain_in)
                .map_err(|e| bad(&self.name, format!("cannot decrypt ({e})")))?;
            let mut part = &self.plain_in[..n];
            let want = match total {
                Some(t) => t,
                None => {
                    let t = decode_header(part, max).map_err(|why| bad(&self.name, why))?;
                    part = &part[HEADER_LEN..];
                    buf.reserve(t);
                    total = Some(t);
                    t
                }
            };
            if buf.len() + part.len() > want {
                return Err(bad(&self.name, format!("more than the {want} bytes announced")));
            }
            buf.extend_from_slice(part);
            if buf.len() == want {
                return Ok(());
            }
        }
    }
}

impl TcpComm {
    /// Joins the mesh as `rank`: `listener` is bound to `addrs[rank]` (bind it first, so that
    /// peers can be told the port), the other ranks listen at the other `addrs`.
    pub fn join(
        listener: &TcpListener,
        rank: usize,
        addrs: &[SocketAddr],
        cfg: &TcpConfig,
    ) -> Result<TcpComm> {
        let size = addrs.len();
        if rank >= size {
            return Err(DistError::Usage(format!("rank {rank} in a mesh of {size} addresses")));
        }
        let deadline = Instant::now() + cfg.join_timeout;
        let mut comm = TcpComm {
            rank,
            size,
            max_frame: cfg.max_frame,
            peers: (0..size).map(|_| None).collect(),
            emulator: cfg.emulate.map(|e| Emulator::new(e, rank, size)),
            stamped: Vec::new(),
        };
        for (lower, addr) in addrs.iter().enumerate().take(rank) {
            let peer = connect(*addr, lower, cfg, deadline)?;
            comm.peers[lower] = Some(peer);
            comm.exchange_hello(lower, deadline)?;
        }
        comm.accept_higher(listener, cfg, deadline)?;
        Ok(comm)
    }

    fn accept_higher(
        &mut self,
        listener: &TcpListener,
        cfg: &TcpConfig,
        deadline: Instant,
    ) -> Result<()> {
        let io = |e| io_err("listener", "accept", e, cfg.join_timeout);
        listener.set_nonblocking(true).map_err(io)?;
        while self.peers.iter().enumerate().any(|(r, p)| r > self.rank && p.is_none()) {
            let (stream, from) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let missing: Vec<usize> =
                        (self.rank + 1..self.size).filter(|&r| self.peers[r].is_none()).collect();
                    if remaining(deadline, "", "join").is_err() {
                        let _ = listener.set_nonblocking(false);
                        return Err(DistError::Timeout {
                            peer: format!("{missing:?}"),
                            op: "join",
                            after: cfg.join_timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => {
                    let _ = listener.set_nonblocking(false);
                    return Err(io(e));
                }
            };
            stream.set_nonblocking(false).map_err(io)?;
            // A rogue or misconfigured peer is refused and logged; the mesh keeps waiting.
            let hs_deadline = deadline.min(Instant::now() + Duration::from_secs(5));
            match self.admit(stream, from, cfg, hs_deadline) {
                Ok(r) => tracing::debug!("rank {} joined from {from}", r),
                Err(e) => tracing::warn!("refused {from}: {e}"),
            }
        }
        // The listener outlives the mesh (a worker serves one job after another).
        listener.set_nonblocking(false).map_err(io)
    }

    /// Handshakes with an accepted connection and reads its hello; returns its rank.
    fn admit(
        &mut self,
        stream: TcpStream,
        from: SocketAddr,
        cfg: &TcpConfig,
        deadline: Instant,
    ) -> Result<usize> {
        let mut peer = handshake(stream, from.to_string(), &cfg.key, false, deadline)?;
        let mut hello = Vec::new();
        peer.recv_frame(&mut hello, 16, deadline)?;
        let (r, size, emulated) = parse_hello(&hello).ok_or_else(|| DistError::Frame {
            peer: peer.name.clone(),
            why: format!("a hello of {} bytes", hello.len()),
        })?;
        if emulated != self.emulator.is_some() {
            return Err(DistError::Frame {
                peer: peer.name.clone(),
                why: "link emulation (--emulate-link) on one end only".into(),
            });
        }
        if size != self.size || r <= self.rank || r >= self.size || self.peers[r].is_some() {
            return Err(DistError::Frame {
                peer: peer.name.clone(),
                why: format!(
                    "hello from rank {r} of {size}; expected a new rank above {} of {}",
                    self.rank, self.size
                ),
            });
        }
        peer.send_frame(&hello_bytes(self.rank, self.size, emulated), deadline)?;
        peer.name = r.to_string();
        self.peers[r] = Some(peer);
        Ok(r)
    }

    fn exchange_hello(&mut self, lower: usize, deadline: Instant) -> Result<()> {
        let (rank, size, max) = (self.rank, self.size, self.max_frame);
        let emulated = self.emulator.is_some();
        let peer = self.peers[lower].as_mut().expect("just connected");
        peer.send_frame(&hello_bytes(rank, size, emulated), deadline)?;
        let mut hello = Vec::new();
        peer.recv_frame(&mut hello, max.min(16), deadline)?;
        match parse_hello(&hello) {
            Some((r, s, e)) if r == lower && s == size && e == emulated => Ok(()),
            other => Err(DistError::Frame {
                peer: lower.to_string(),
                why: format!("hello {other:?}, expected rank {lower} of {size}"),
            }),
        }
    }

    fn peer(&mut self, r: usize, op: &'static str) -> Result<&mut Peer> {
        check_peer(self.rank, self.size, r)?;
        self.peers[r].as_mut().ok_or(DistError::Closed { peer: r.to_string(), op })
    }
}

/// A hello: rank, mesh size, and whether the node emulates its links (both ends must).
fn hello_bytes(rank: usize, size: usize, emulated: bool) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[..4].copy_from_slice(&(rank as u32).to_le_bytes());
    h[4..8].copy_from_slice(&(size as u32).to_le_bytes());
    h[8] = emulated as u8;
    h
}

fn parse_hello(b: &[u8]) -> Option<(usize, usize, bool)> {
    if b.len() != 9 || b[8] > 1 {
        return None;
    }
    let r = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let s = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    Some((r, s, b[8] == 1))
}

/// Connects to `addr` (retrying while the peer is not listening yet) and handshakes.
pub(crate) fn connect(
    addr: SocketAddr,
    rank: usize,
    cfg: &TcpConfig,
    deadline: Instant,
) -> Result<Peer> {
    let name = rank.to_string();
    loop {
        let wait = remaining(deadline, &name, "connect").map_err(|_| DistError::Timeout {
            peer: format!("{rank} ({addr})"),
            op: "connect",
            after: cfg.join_timeout,
        })?;
        match TcpStream::connect_timeout(&addr, wait.min(Duration::from_secs(1))) {
            Ok(s) => return handshake(s, name, &cfg.key, true, deadline),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::TimedOut) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(&name, "connect", e, wait)),
        }
    }
}

impl Comm for TcpComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&mut self, to: usize, msg: &[u8], deadline: Instant) -> Result<()> {
        let mut stamped = std::mem::take(&mut self.stamped);
        let msg = match self.emulator {
            Some(_) => {
                Emulator::stamp(&mut stamped, msg);
                &stamped[..]
            }
            None => msg,
        };
        let r = self.peer(to, "send").and_then(|p| p.send_frame(msg, deadline));
        self.stamped = stamped;
        if r.is_err() {
            // A half-written frame leaves the stream unusable: later calls say so at once.
            self.peers[to] = None;
        }
        r
    }

    fn send_first_max(&self) -> usize {
        // Frames add a header and Noise tags: keep a quarter of the smallest room spare.
        let room = self.peers.iter().flatten().map(|p| p.send_room).min().unwrap_or(0);
        (room / 4 * 3).max(crate::collective::SEND_FIRST_MAX)
    }

    fn recv(&mut self, from: usize, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        let max = self.max_frame;
        let peer = self.peer(from, "recv")?;
        peer.sock.take_waited();
        let mut r = peer.recv_frame(buf, max, deadline);
        let waited = peer.sock.take_waited();
        if let (Ok(()), Some(e)) = (&r, &mut self.emulator) {
            r = e
                .arrive(from, buf, waited)
                .map_err(|why| DistError::Frame { peer: from.to_string(), why });
        }
        if r.is_err() {
            self.peers[from] = None;
        }
        r
    }
}

//! Collectives over any [`Comm`]: all-reduce (sum of f32), all-gather, broadcast, barrier.
//!
//! Every rank exchanges with every other rank directly (a mesh of 2 to 8 consumer machines,
//! where one hop beats a ring's n − 1). Pairs are visited in the same order everywhere and in
//! each pair the lower rank sends first, so blocking sockets cannot deadlock: two ranks are
//! never both writing a large message to each other. A message of at most
//! [`Comm::send_first_max`] bytes (what the sockets' buffers hold) is sent to every peer
//! before any receive instead: its write returns without the peer reading, and a gather of
//! the pieces of a tensor-parallel step costs one trip across the link, not a round trip. The sum adds the ranks' vectors in rank
//! order 0, 1, 2, … on every rank, so all ranks hold bit-identical results.

use crate::comm::Comm;
use crate::error::{DistError, Result};
use std::time::Instant;

/// Messages up to this size are sent before receiving on any backend (TCP's default buffers
/// on Linux, 16 KiB to send plus the receive window, hold them whole).
pub const SEND_FIRST_MAX: usize = 32 << 10;

/// Exchanges `mine` with every other rank; `out[r]` receives rank r's message (`out[rank]`
/// a copy of `mine`).
pub fn all_gather(
    comm: &mut dyn Comm,
    mine: &[u8],
    out: &mut Vec<Vec<u8>>,
    deadline: Instant,
) -> Result<()> {
    exchange_pieces(comm, mine, out, deadline)?;
    out[comm.rank()].extend_from_slice(mine);
    Ok(())
}

/// [`all_gather`] that leaves `out[rank]` empty: a tensor-parallel node already holds its
/// own piece, and copying it costs as much as reading a peer's (2 MB a step at 8 rows).
pub fn exchange_pieces(
    comm: &mut dyn Comm,
    mine: &[u8],
    out: &mut Vec<Vec<u8>>,
    deadline: Instant,
) -> Result<()> {
    let (rank, size) = (comm.rank(), comm.size());
    out.resize_with(size, Vec::new);
    out[rank].clear();
    if mine.len() <= comm.send_first_max() {
        for peer in (0..size).filter(|&p| p != rank) {
            comm.send(peer, mine, deadline)?;
        }
        for peer in (0..size).filter(|&p| p != rank) {
            comm.recv(peer, &mut out[peer], deadline)?;
        }
        return Ok(());
    }
    for peer in (0..size).filter(|&p| p != rank) {
        if rank < peer {
            comm.send(peer, mine, deadline)?;
            comm.recv(peer, &mut out[peer], deadline)?;
        } else {
            comm.recv(peer, &mut out[peer], deadline)?;
            comm.send(peer, mine, deadline)?;
        }
    }
    Ok(())
}

/// Replaces `data` on every rank by the element-wise sum of all ranks' `data`, added in rank
/// order; `scratch` holds the other ranks' vectors between calls.
pub fn all_reduce_sum(
    comm: &mut dyn Comm,
    data: &mut [f32],
    scratch: &mut Vec<Vec<u8>>,
    deadline: Instant,
) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mine: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    all_gather(comm, &mine, scratch, deadline)?;
    for (r, bytes) in scratch.iter().enumerate() {
        if bytes.len() != mine.len() {
            return Err(DistError::Usage(format!(
                "all-reduce: rank {r} sent {} values, this rank has {}",
                bytes.len() / 4,
                data.len()
            )));
        }
    }
    for (i, v) in data.iter_mut().enumerate() {
        let at = |r: usize| {
            let b = &scratch[r][4 * i..4 * i + 4];
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        let mut s = at(0);
        for r in 1..scratch.len() {
            s += at(r);
        }
        *v = s;
    }
    Ok(())
}

/// Copies `root`'s `buf` into every other rank's `buf`.
pub fn broadcast(
    comm: &mut dyn Comm,
    root: usize,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<()> {
    let (rank, size) = (comm.rank(), comm.size());
    if root >= size {
        return Err(DistError::Usage(format!("broadcast from rank {root} in a mesh of {size}")));
    }
    if rank == root {
        for peer in (0..size).filter(|&p| p != rank) {
            comm.send(peer, buf, deadline)?;
        }
        Ok(())
    } else {
        comm.recv(root, buf, deadline)
    }
}

/// Returns once every rank has called it (or the deadline passes).
pub fn barrier(comm: &mut dyn Comm, deadline: Instant) -> Result<()> {
    let mut out = Vec::new();
    all_gather(comm, &[], &mut out, deadline)
}

//! [`Comm`]: point-to-point messages between the ranks of a mesh, each call with a deadline.

use crate::error::{DistError, Result};
use std::time::Instant;

/// One node's end of a mesh of `size` nodes numbered `0..size`. Messages between two ranks
/// arrive in the order they were sent. Every call returns by its deadline, with
/// [`DistError::Timeout`] if the peer has not done its part.
pub trait Comm: Send {
    /// This node's rank.
    fn rank(&self) -> usize;
    /// Nodes in the mesh.
    fn size(&self) -> usize;
    /// Sends one message to rank `to`.
    fn send(&mut self, to: usize, msg: &[u8], deadline: Instant) -> Result<()>;
    /// Receives the next message from rank `from` into `buf` (its old contents replaced).
    fn recv(&mut self, from: usize, buf: &mut Vec<u8>, deadline: Instant) -> Result<()>;
    /// The largest message a rank may send to every peer before receiving from any: one
    /// that [`Comm::send`] hands over without the peer reading (collectives use it to
    /// exchange in one trip instead of a round trip).
    fn send_first_max(&self) -> usize {
        crate::collective::SEND_FIRST_MAX
    }
}

/// Checks that `peer` is another rank of a mesh of `size` seen from `rank`.
pub(crate) fn check_peer(rank: usize, size: usize, peer: usize) -> Result<()> {
    if peer >= size || peer == rank {
        return Err(DistError::Usage(format!(
            "rank {rank} cannot talk to rank {peer} in a mesh of {size}"
        )));
    }
    Ok(())
}

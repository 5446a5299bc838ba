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

/// A borrowed mesh end is a mesh end (a stage loop borrows its caller's).
impl<C: Comm + ?Sized> Comm for &mut C {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn send(&mut self, to: usize, msg: &[u8], deadline: Instant) -> Result<()> {
        (**self).send(to, msg, deadline)
    }
    fn recv(&mut self, from: usize, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        (**self).recv(from, buf, deadline)
    }
    fn send_first_max(&self) -> usize {
        (**self).send_first_max()
    }
}

/// Some ranks of a mesh seen as a mesh of their own (a hybrid stage's group: its
/// collectives run among its members only). Rank `i` of the group is mesh rank
/// `members[i]`; errors name the mesh ranks.
pub struct GroupComm<'a> {
    inner: &'a mut dyn Comm,
    members: &'a [usize],
    rank: usize,
}

impl<'a> GroupComm<'a> {
    /// The group of `members` (mesh ranks, this node's among them) over `inner`.
    pub fn new(inner: &'a mut dyn Comm, members: &'a [usize]) -> Result<Self> {
        let me = inner.rank();
        let rank = members.iter().position(|&m| m == me).ok_or_else(|| {
            DistError::Usage(format!("rank {me} is not in the group {members:?}"))
        })?;
        if let Some(&m) = members.iter().find(|&&m| m >= inner.size()) {
            return Err(DistError::Usage(format!(
                "group member {m} in a mesh of {}",
                inner.size()
            )));
        }
        Ok(GroupComm { inner, members, rank })
    }
}

impl Comm for GroupComm<'_> {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.members.len()
    }
    fn send(&mut self, to: usize, msg: &[u8], deadline: Instant) -> Result<()> {
        check_peer(self.rank, self.members.len(), to)?;
        self.inner.send(self.members[to], msg, deadline)
    }
    fn recv(&mut self, from: usize, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        check_peer(self.rank, self.members.len(), from)?;
        self.inner.recv(self.members[from], buf, deadline)
    }
    fn send_first_max(&self) -> usize {
        self.inner.send_first_max()
    }
}

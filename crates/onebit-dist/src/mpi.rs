//! [`MpiComm`]: the mesh as the ranks of an MPI job, for clusters that already launch their
//! work with `mpirun` (built with the `mpi` cargo feature; the `mpi` crate binds the MPI
//! library the machine has, e.g. Debian's OpenMPI). MPI's own transports (shared memory, TCP,
//! InfiniBand) carry the messages; ranks and the job's membership are `mpirun`'s.
//!
//! A send hands MPI a copy of the message (`MPI_Isend` from a buffer this value owns and
//! recycles) and returns at once, as a TCP send returns once the socket has the bytes: the
//! pipeline keeps two groups in flight and the collectives send to every peer before
//! receiving, which would deadlock on sends that wait for their receive (MPI's rendezvous
//! above the eager limit, 4 KiB over OpenMPI's shared memory). Sends still in flight are
//! tested on every call; more than [`MAX_PENDING`] of them make the next send wait for the
//! oldest until its deadline, then fail with [`DistError::Timeout`] naming the peer. A receive
//! polls (`MPI_Improbe`) until its message is there or its deadline passes, then returns
//! [`DistError::Timeout`] naming the peer, as the TCP backend does. A rank that dies ends the
//! job: that is `mpirun`'s rule, not this backend's.
//!
//! Why `unsafe` here, in a crate that otherwise forbids it: the `mpi` crate's communicator
//! holds a raw MPI handle and is not `Send`, while a [`Comm`] is; and its safe non-blocking
//! send borrows the buffer for a scope, where these sends outlive the call. MPI is initialized
//! with `MPI_THREAD_SERIALIZED` and every call goes through `&mut self` (rank and size are
//! fixed at creation), so calls are never concurrent, which is what that level requires of a
//! program that moves its handle between threads; a buffer in flight is owned by this value
//! and not touched until MPI says its send completed (or, at drop, leaked if it never does).

#![allow(unsafe_code)]

use crate::comm::{check_peer, Comm};
use crate::error::{DistError, Result};
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::ffi;
use mpi::point_to_point::Source;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::time::{Duration, Instant};

/// Sends in flight beyond which the next send waits for the oldest.
pub const MAX_PENDING: usize = 64;
/// Spare send buffers kept for reuse.
const SPARE: usize = 16;

/// A send MPI has not finished with: the bytes it reads and its request.
struct Pending {
    buf: Vec<u8>,
    req: ffi::MPI_Request,
    to: usize,
}

/// How long a receive polls before it naps between polls (see the TCP backend's `SPIN`).
const SPIN: Duration = Duration::from_millis(1);

/// This process's rank of the MPI job (`MPI_COMM_WORLD`); dropping it finalizes MPI.
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    pending: VecDeque<Pending>,
    spare: Vec<Vec<u8>>,
    // Declared last: MPI is finalized after the communicator is gone.
    _universe: Universe,
}

// SAFETY: see the module documentation: MPI runs at MPI_THREAD_SERIALIZED (checked in
// `world`) and every MPI call on this value needs `&mut self`, so no two run at once.
unsafe impl Send for MpiComm {}

/// Whether a send has completed (its request is then released by MPI).
fn done(p: &mut Pending) -> bool {
    let mut flag: c_int = 0;
    // SAFETY: `p.req` is a request MPI_Isend returned and no one has completed yet (a
    // completed one is removed from the queue at once); the status is ignored.
    unsafe { ffi::MPI_Test(&mut p.req, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
    flag != 0
}

impl MpiComm {
    /// Initializes MPI and joins `MPI_COMM_WORLD`; an error if MPI was initialized already
    /// or cannot promise serialized calls from several threads.
    pub fn world() -> Result<MpiComm> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| DistError::Usage("MPI is already initialized in this process".into()))?;
        if level < Threading::Serialized {
            return Err(DistError::Usage(format!(
                "the MPI library offers only {level:?} threading; onebit needs Serialized"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiComm {
            world,
            rank,
            size,
            pending: VecDeque::new(),
            spare: Vec::new(),
            _universe: universe,
        })
    }

    /// Retires the sends that have completed, keeping their buffers for reuse.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            if done(&mut self.pending[i]) {
                let p = self.pending.remove(i).expect("in range");
                if self.spare.len() < SPARE {
                    self.spare.push(p.buf);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Whether this process was started by an MPI launcher (`mpirun`, `srun`), judged by the
    /// environment it sets.
    pub fn launched() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"]
            .iter()
            .any(|k| std::env::var_os(k).is_some())
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&mut self, to: usize, msg: &[u8], deadline: Instant) -> Result<()> {
        check_peer(self.rank, self.size, to)?;
        self.reap();
        while self.pending.len() >= MAX_PENDING {
            let oldest = self.pending.front_mut().expect("non-empty");
            if done(oldest) {
                self.pending.pop_front();
            } else if Instant::now() >= deadline {
                let peer = oldest.to.to_string();
                return Err(DistError::Timeout { peer, op: "send", after: Duration::ZERO });
            } else {
                std::hint::spin_loop();
            }
        }
        let count = c_int::try_from(msg.len())
            .map_err(|_| DistError::Usage(format!("a message of {} bytes", msg.len())))?;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(msg);
        // SAFETY: reading a constant the MPI shim defines.
        let null = unsafe { ffi::RSMPI_REQUEST_NULL };
        let mut p = Pending { buf, req: null, to };
        // SAFETY: the buffer is owned by `p`, which goes into `self.pending` and is neither
        // changed nor freed until MPI_Test reports the send complete (or, at drop, leaked);
        // the datatype and communicator are live handles of this initialized MPI.
        let rc = unsafe {
            ffi::MPI_Isend(
                p.buf.as_ptr() as *const c_void,
                count,
                u8::equivalent_datatype().as_raw(),
                to as c_int,
                0,
                self.world.as_raw(),
                &mut p.req,
            )
        };
        if rc != 0 {
            return Err(DistError::Usage(format!("MPI_Isend to rank {to} failed ({rc})")));
        }
        self.pending.push_back(p);
        Ok(())
    }

    fn send_first_max(&self) -> usize {
        // A send never waits for its receive (see the module documentation).
        usize::MAX
    }

    fn recv(&mut self, from: usize, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        check_peer(self.rank, self.size, from)?;
        let peer = self.world.process_at_rank(from as i32);
        let t0 = Instant::now();
        loop {
            if let Some((message, status)) = peer.immediate_matched_probe() {
                let n = status.count(u8::equivalent_datatype()) as usize;
                buf.resize(n, 0);
                message.matched_receive_into(&mut buf[..]);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DistError::Timeout {
                    peer: from.to_string(),
                    op: "recv",
                    after: t0.elapsed(),
                });
            }
            if t0.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                // A long wait (the head between requests) leaves the core to others.
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl Drop for MpiComm {
    fn drop(&mut self) {
        // Sends in flight are waited for a while (the peer may still be reading); MPI must be
        // done with a buffer before it is freed, so the ones it never finishes are leaked.
        let until = Instant::now() + Duration::from_secs(2);
        while !self.pending.is_empty() && Instant::now() < until {
            self.reap();
            std::hint::spin_loop();
        }
        for p in self.pending.drain(..) {
            tracing::warn!("a send to rank {} never completed", p.to);
            std::mem::forget(p.buf);
        }
    }
}

//! [`InProcComm`]: a mesh of threads in one process joined by channels, for tests and for
//! checking a distributed plan against a single process without a network.

use crate::comm::{check_peer, Comm};
use crate::error::{DistError, Result};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

/// One rank of an in-process mesh.
pub struct InProcComm {
    rank: usize,
    to: Vec<Option<Sender<Vec<u8>>>>,
    from: Vec<Option<Receiver<Vec<u8>>>>,
}

impl InProcComm {
    /// A mesh of `size` ranks, one channel per ordered pair; hand each to its own thread.
    pub fn mesh(size: usize) -> Vec<InProcComm> {
        let mut comms: Vec<InProcComm> = (0..size)
            .map(|rank| InProcComm {
                rank,
                to: (0..size).map(|_| None).collect(),
                from: (0..size).map(|_| None).collect(),
            })
            .collect();
        for a in 0..size {
            for b in 0..size {
                if a != b {
                    let (tx, rx) = channel();
                    comms[a].to[b] = Some(tx);
                    comms[b].from[a] = Some(rx);
                }
            }
        }
        comms
    }
}

impl Comm for InProcComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.to.len()
    }

    fn send(&mut self, to: usize, msg: &[u8], _deadline: Instant) -> Result<()> {
        check_peer(self.rank, self.size(), to)?;
        let tx = self.to[to].as_ref().expect("every other rank has a channel");
        tx.send(msg.to_vec()).map_err(|_| DistError::Closed { peer: to.to_string(), op: "send" })
    }

    fn send_first_max(&self) -> usize {
        // Channels are unbounded: a send never waits for the receiver.
        usize::MAX
    }

    fn recv(&mut self, from: usize, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        check_peer(self.rank, self.size(), from)?;
        let rx = self.from[from].as_ref().expect("every other rank has a channel");
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(m) => {
                *buf = m;
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => {
                Err(DistError::Timeout { peer: from.to_string(), op: "recv", after: wait })
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(DistError::Closed { peer: from.to_string(), op: "recv" })
            }
        }
    }
}

//! A worker's side of a pipeline ([`crate::pipeline`]): its stage's loop.

use crate::comm::Comm;
use crate::error::{DistError, Result};
use crate::pipeline::{PipelineTimeouts, WireStats, RESET, STOP, TRUNCATE};
use crate::wire::{get_rows, put_rows, ROWS};
use onebit_model::{Session, StageInput};
use std::time::Instant;

/// A worker's stage: receives rows from the rank before, runs its blocks, sends the hidden
/// states to the next rank (the last sends them back to the head), until the head stops it.
/// Returns what went over the wire.
pub fn serve_stage(
    session: &mut Session<'_>,
    comm: &mut dyn Comm,
    timeouts: PipelineTimeouts,
) -> Result<WireStats> {
    let (rank, size) = (comm.rank(), comm.size());
    if rank == 0 || size < 2 {
        return Err(DistError::Usage(format!("rank {rank} of {size} cannot be a worker stage")));
    }
    let (prev, next) = (rank - 1, (rank + 1) % size);
    let h = session.model().config.hidden;
    let (mut inb, mut out, mut slots, mut x) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut stats = WireStats::default();
    loop {
        comm.recv(prev, &mut inb, Instant::now() + timeouts.idle)?;
        stats.received += inb.len() as u64;
        let bad = |why: String| DistError::Frame { peer: prev.to_string(), why };
        match inb.first() {
            Some(&ROWS) => {
                let dtype = get_rows(&inb, h, &mut slots, &mut x).map_err(bad)?;
                let y = session.stage(StageInput::Hidden(&x), &slots)?;
                put_rows(&mut out, &slots, y, dtype);
                let deadline =
                    Instant::now() + timeouts.step + timeouts.per_row * slots.len() as u32;
                comm.send(next, &out, deadline)?;
                stats.sent += out.len() as u64;
                stats.steps += 1;
            }
            Some(&TRUNCATE) if inb.len() == 9 => {
                let word = |at: usize| {
                    u32::from_le_bytes([inb[at], inb[at + 1], inb[at + 2], inb[at + 3]]) as usize
                };
                session.truncate_slot(word(1), word(5))?;
                if next != 0 {
                    comm.send(next, &inb, Instant::now() + timeouts.step)?;
                }
            }
            Some(&RESET) if inb.len() == 5 => {
                let slot = u32::from_le_bytes([inb[1], inb[2], inb[3], inb[4]]) as usize;
                session.reset_slot(slot)?;
                if next != 0 {
                    comm.send(next, &inb, Instant::now() + timeouts.step)?;
                }
            }
            Some(&STOP) if inb.len() == 1 => {
                if next != 0 {
                    comm.send(next, &inb, Instant::now() + timeouts.step)?;
                }
                return Ok(stats);
            }
            _ => return Err(bad(format!("unknown message of {} bytes", inb.len()))),
        }
    }
}

//! A worker's side of a pipeline ([`crate::pipeline`]) or a hybrid mesh ([`crate::hybrid`]):
//! its stage's loop. A stage's leader receives rows from the stage before, hands them to its
//! group, runs its blocks (with the group's gathers) and sends the hidden states on, in the
//! types the head set for its links ([`crate::stage_wires`]); any
//! other node of a group receives from its leader and runs the same rows (the head's group
//! gets the head's embedded tokens, so only the head holds the embeddings).

use crate::comm::Comm;
use crate::error::{DistError, Result};
use crate::hybrid::{Ring, Role};
use crate::pipeline::{PipelineTimeouts, WireStats, RESET, STOP, TRUNCATE};
use crate::stage_wires::{StageWires, WIRES};
use crate::tensor::{lock, Link, MeshExchange, SharedLink};
use crate::wire::{get_rows, put_rows, ROWS};
use onebit_model::{Session, StageInput};
use std::time::Instant;

/// A worker's stage of a pipeline whose stages are one node each: receives rows from the
/// rank before, runs its blocks, sends the hidden states to the next rank (the last sends
/// them back to the head), until the head stops it. Returns what went over the wire.
pub fn serve_stage(
    session: &mut Session<'_>,
    comm: &mut dyn Comm,
    timeouts: PipelineTimeouts,
) -> Result<WireStats> {
    let (rank, size) = (comm.rank(), comm.size());
    if rank == 0 || size < 2 {
        return Err(DistError::Usage(format!("rank {rank} of {size} cannot be a worker stage")));
    }
    let role = Ring::plain(size)?.role(rank)?;
    stage_loop(session, &Link::shared(Box::new(comm), timeouts), &role)
}

/// A worker of a hybrid mesh laid out as `ring`: `session` holds this rank's stage blocks
/// (its piece of them where the stage has several nodes). Runs until the head stops it;
/// returns what went over the wire.
pub fn serve_hybrid<'m>(
    mut session: Session<'m>,
    comm: Box<dyn Comm + 'm>,
    ring: &Ring,
    timeouts: PipelineTimeouts,
) -> Result<WireStats> {
    let (rank, size) = (comm.rank(), comm.size());
    if rank == 0 || ring.nodes() != size {
        return Err(DistError::Usage(format!(
            "rank {rank} of {size} cannot serve a ring of {} nodes",
            ring.nodes()
        )));
    }
    let role = ring.role(rank)?;
    let link = join_stage(&mut session, comm, &role, timeouts)?;
    stage_loop(&mut session, &link, &role)
}

/// Checks that `session`'s model is the piece of its stage that `role` says (whole blocks
/// for a stage of one node; whole ends where it has them) and joins it to its group's
/// gathers; the link over `comm` that the stage's loop then uses.
pub(crate) fn join_stage<'m>(
    session: &mut Session<'m>,
    comm: Box<dyn Comm + 'm>,
    role: &Role,
    timeouts: PipelineTimeouts,
) -> Result<SharedLink<'m>> {
    let rank = comm.rank();
    let m = session.model();
    let piece = m.tensor.as_ref().map(|t| (t.rank, t.split.nodes()));
    let want = role.group.first().map(|&first| (rank - first, role.group.len()));
    if piece != want || m.tensor_head {
        return Err(DistError::Usage(format!(
            "rank {rank}'s model piece {piece:?} is not its stage's {want:?} with whole ends"
        )));
    }
    let link = Link::shared(comm, timeouts);
    if !role.group.is_empty() {
        lock(&link).group = role.group.clone();
        session.set_exchange(Box::new(MeshExchange(link.clone())));
    }
    Ok(link)
}

/// Sends `msg` to each of `to` over the link, counting the bytes.
fn send_all(link: &SharedLink<'_>, to: &[usize], msg: &[u8], rows: usize) -> Result<()> {
    let mut l = lock(link);
    let t = l.timeouts;
    let deadline = Instant::now() + t.step + t.per_row * rows as u32;
    for &peer in to {
        l.comm.send(peer, msg, deadline)?;
        l.stats.sent += msg.len() as u64;
    }
    Ok(())
}

/// The loop of a node with `role`, on `link`, until the head says stop.
fn stage_loop(session: &mut Session<'_>, link: &SharedLink<'_>, role: &Role) -> Result<WireStats> {
    let h = session.model().config.hidden;
    let (mut inb, mut out, mut slots, mut x) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let idle = lock(link).timeouts.idle;
    // Control messages go on round the ring, but never back to the head that sent them.
    let onward: Vec<usize> = role.next.filter(|&n| n != 0).into_iter().collect();
    // The type this stage's leader sends on in, once the head has said (until then: the
    // type the rows came in).
    let mut hop_out = None;
    loop {
        {
            let mut l = lock(link);
            l.comm.recv(role.source, &mut inb, Instant::now() + idle)?;
            l.stats.received += inb.len() as u64;
        }
        let bad = |why: String| DistError::Frame { peer: role.source.to_string(), why };
        // A leader's group runs whatever it runs, in the same order.
        send_all(link, &role.members, &inb, inb.len() / (4 * h).max(1))?;
        match inb.first() {
            Some(&ROWS) => {
                let dtype = get_rows(&inb, h, &mut slots, &mut x).map_err(bad)?;
                let y = match session.stage(StageInput::Hidden(&x), &slots) {
                    Err(e) if role.next.is_none() => {
                        // The leader refuses alike and ends the stage: this node hears it.
                        tracing::warn!("refused, as on the stage's leader: {e}");
                        continue;
                    }
                    r => r?,
                };
                if let Some(next) = role.next {
                    put_rows(&mut out, &slots, y, hop_out.unwrap_or(dtype));
                    send_all(link, &[next], &out, slots.len())?;
                    lock(link).stats.steps += 1;
                }
            }
            Some(&TRUNCATE) if inb.len() == 9 => {
                let word = |at: usize| {
                    u32::from_le_bytes([inb[at], inb[at + 1], inb[at + 2], inb[at + 3]]) as usize
                };
                session.truncate_slot(word(1), word(5))?;
                send_all(link, &onward, &inb, 0)?;
            }
            Some(&RESET) if inb.len() == 5 => {
                let slot = u32::from_le_bytes([inb[1], inb[2], inb[3], inb[4]]) as usize;
                session.reset_slot(slot)?;
                send_all(link, &onward, &inb, 0)?;
            }
            Some(&WIRES) => {
                let w = StageWires::decode(&inb).map_err(bad)?;
                let (Some(&hop), Some(&gather)) =
                    (w.hops.get(role.stage), w.gathers.get(role.stage))
                else {
                    return Err(bad(format!("element types for {} stages", w.stages())));
                };
                hop_out = Some(hop);
                lock(link).wire = gather;
                send_all(link, &onward, &inb, 0)?;
            }
            Some(&STOP) if inb.len() == 1 => {
                send_all(link, &onward, &inb, 0)?;
                return Ok(lock(link).stats);
            }
            _ => return Err(bad(format!("unknown message of {} bytes", inb.len()))),
        }
    }
}

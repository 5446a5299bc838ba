//! A worker's side of a tensor-parallel mesh ([`crate::tensor`]): its command loop.

use crate::comm::Comm;
use crate::error::{DistError, Result};
use crate::pipeline::{PipelineTimeouts, WireStats};
use crate::tensor::{lock, Link, MeshExchange};
use crate::tensor_msg::{parse, Command, Rows};
use onebit_model::Session;
use std::time::Instant;

/// A worker of a tensor-parallel mesh: runs on `session` (a model loaded with this rank's
/// `TensorPart`) whatever the head runs, joining every block's exchanges, until the head
/// stops it. A call its session refuses before computing is refused on the head alike and
/// the loop goes on; a failed exchange or a malformed command ends it with the error.
/// Returns what went over the wire.
pub fn serve_tensor<'m>(
    mut session: Session<'m>,
    comm: Box<dyn Comm + 'm>,
    timeouts: PipelineTimeouts,
) -> Result<WireStats> {
    let rank = comm.rank();
    let nodes = session.model().tensor.as_ref().map(|t| (t.rank, t.split.nodes()));
    if rank == 0 || nodes != Some((rank, comm.size())) {
        return Err(DistError::Usage(format!(
            "rank {rank} of {} cannot serve tensor piece {nodes:?}",
            comm.size()
        )));
    }
    let link = Link::shared(comm, timeouts);
    session.set_exchange(Box::new(MeshExchange(link.clone())));
    let (mut inb, mut rows, mut out) = (Vec::new(), Rows::default(), Vec::new());
    loop {
        {
            let mut l = lock(&link);
            l.comm.recv(0, &mut inb, Instant::now() + timeouts.idle)?;
            l.stats.received += inb.len() as u64;
        }
        let cmd =
            parse(&inb, &mut rows).map_err(|why| DistError::Frame { peer: "0".into(), why })?;
        let Rows { tokens, slots, want, draws, penalized } = &rows;
        let r = match cmd {
            Command::Prefill(slot) => session.forward_slot(slot, tokens).map(|_| ()),
            Command::Rows => session.step(tokens, slots, want).map(|_| ()),
            Command::Argmax => session.decode_top(tokens, slots, &[], &[], &mut out),
            Command::Sample => session.decode_top(tokens, slots, draws, penalized, &mut out),
            Command::Reset(slot) => session.reset_slot(slot),
            Command::Truncate(slot, len) => session.truncate_slot(slot, len),
            Command::Stop => return Ok(lock(&link).stats),
            Command::Wire(d) => {
                lock(&link).wire = d;
                Ok(())
            }
        };
        match r {
            Err(onebit_model::Error::Mesh(why)) => return Err(DistError::Usage(why)),
            Err(e) => tracing::warn!("refused, as on the head: {e}"),
            Ok(()) => {}
        }
    }
}

//! Starting a mesh whose ranks already exist: the processes of an MPI job (`mpirun -n 2
//! onebit run MODEL --mpi`), or threads joined in process. Every rank runs the same command:
//! each reads the model's shape, works out the same layout from the same flags, checks that
//! every rank's model file is rank 0's (fingerprints gathered to all), loads its own part
//! and says whether it is ready; then rank 0 leads (it gets its part and the mesh back) and
//! every other rank serves its part until the head says stop.
//!
//! Unlike a mesh file's bootstrap there is no job to hand out and no weights to stream: the
//! launcher placed the processes, and a cluster that runs MPI shares its file system.

use crate::collective::all_gather;
use crate::comm::Comm;
use crate::error::{DistError, Result};
use crate::launch::{hybrid_layout, load_head, pipeline_blocks, stage_jobs, tensor_pieces, Layout};
use crate::pipeline::{PipelineTimeouts, WireStats};
use crate::stage_job::fingerprint;
use onebit_model::load::{GgufModelFile, LoadOptions};
use onebit_model::{Model, ModelConfig, Session, SessionOptions};
use std::time::{Duration, Instant};

/// The layout the ranks are asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// A range of blocks per rank (`None`: [`crate::launch::default_split`]).
    Pipeline(Option<Vec<usize>>),
    /// A piece of every block per rank, in proportion to the shares (`None`: equal).
    Tensor(Option<Vec<f64>>),
    /// Stages of `groups[i]` ranks each (tensor-parallel within a stage of several), with
    /// `blocks[i]` blocks (`None`: [`crate::launch::hybrid_blocks`]).
    Hybrid {
        /// Ranks per stage, head's first.
        groups: Vec<usize>,
        /// Blocks per stage.
        blocks: Option<Vec<usize>>,
    },
}

/// What every rank is told (the same on all of them).
#[derive(Clone, Debug)]
pub struct RankLaunch {
    /// The model file, at the same path on every rank.
    pub model: String,
    /// How rank 0 loads its part.
    pub load: LoadOptions,
    /// Threads on the other ranks.
    pub worker_threads: usize,
    /// Session size, the same on every rank.
    pub session: SessionOptions,
    /// Pipeline or tensor parallel.
    pub strategy: Strategy,
    /// The waits of a step, and how long a rank waits for the head before giving up.
    pub timeouts: PipelineTimeouts,
    /// How long every rank may take to load its part.
    pub ready_timeout: Duration,
    /// A tensor-parallel layout sums the ranks' products of `o` and `down`
    /// ([`onebit_model::TensorSplit::sums`]).
    pub tensor_sums: bool,
}

/// What a rank ends up doing.
pub enum RankStart {
    /// Rank 0: its part of the model, the mesh and the layout; it drives generation.
    Head {
        /// Rank 0's part.
        model: Box<Model>,
        /// The mesh, rank 0's end.
        comm: Box<dyn Comm>,
        /// How the model is laid out.
        layout: Layout,
    },
    /// Any other rank, once the head has said stop: what went over its wire.
    Served(WireStats),
}

/// The first rank whose status (a 0 byte, then anything; or 1 and why) is a failure, as an
/// error saying it `what`.
fn agree(all: &[Vec<u8>], what: &str) -> Result<()> {
    for (r, s) in all.iter().enumerate() {
        match s.split_first() {
            Some((0, _)) => {}
            Some((_, why)) => {
                let why = String::from_utf8_lossy(why);
                return Err(DistError::Usage(format!("rank {r} {what}: {why}")));
            }
            None => return Err(DistError::Usage(format!("rank {r} {what}: no answer"))),
        }
    }
    Ok(())
}

/// Runs rank `comm.rank()`'s part of the launch (see the module documentation).
pub fn start_ranks(mut comm: Box<dyn Comm>, l: &RankLaunch) -> Result<RankStart> {
    let (rank, nodes) = (comm.rank(), comm.size());
    if nodes < 2 {
        return Err(DistError::Usage(format!("a mesh of {nodes} rank needs at least 2")));
    }
    // Every rank says what it found (the model's fingerprint, or why it has none) before any
    // rank acts on it, so a rank without the file stops all of them with its reason.
    let deadline = Instant::now() + l.ready_timeout;
    let mine = GgufModelFile::open(&l.model)
        .and_then(|f| ModelConfig::from_gguf(&f.header))
        .map_err(DistError::from)
        .and_then(|c| Ok((c, fingerprint(&l.model)?)));
    let status = match &mine {
        Ok((_, fp)) => [&[0u8][..], fp].concat(),
        Err(e) => [&[1u8][..], e.to_string().as_bytes()].concat(),
    };
    let mut all = Vec::new();
    all_gather(&mut *comm, &status, &mut all, deadline)?;
    agree(&all, "cannot open its model file")?;
    if let Some(r) = all.iter().position(|s| s != &all[0]) {
        return Err(DistError::Usage(format!(
            "rank {r}'s model file {} is not rank 0's (the fingerprints differ)",
            l.model
        )));
    }
    let (config, fp) = mine?;
    let layout = match &l.strategy {
        Strategy::Pipeline(s) => {
            Layout::Pipeline(pipeline_blocks(&config, nodes, l.load.head, s.clone())?)
        }
        Strategy::Tensor(s) => {
            Layout::Tensor(tensor_pieces(&config, nodes, s.clone(), l.tensor_sums)?)
        }
        Strategy::Hybrid { groups, blocks } => {
            let (head, b) = (l.load.head, blocks.clone());
            Layout::Hybrid(hybrid_layout(&config, nodes, head, groups, b, None)?)
        }
    };
    // Load, then tell every rank whether this one is ready, so none starts on a broken mesh.
    let loaded = if rank == 0 {
        load_head(&l.model, &l.load, &layout)
    } else {
        let jobs = stage_jobs(&layout, &l.model, fp, &config, l.worker_threads, l.session);
        // Every rank's fingerprint was compared above: no need to read the file again.
        jobs[rank - 1].load_checked(&l.model)
    };
    let loaded = loaded.and_then(|m| {
        drop(Session::try_with_options(&m, l.session)?);
        Ok(m)
    });
    let status = match &loaded {
        Ok(_) => vec![0],
        Err(e) => std::iter::once(1).chain(e.to_string().into_bytes()).collect(),
    };
    all_gather(&mut *comm, &status, &mut all, deadline)?;
    agree(&all, "cannot run its part")?;
    let model = loaded?;
    if rank == 0 {
        return Ok(RankStart::Head { model: Box::new(model), comm, layout });
    }
    let session = Session::try_with_options(&model, l.session)?;
    Ok(RankStart::Served(match layout {
        Layout::Tensor(_) => crate::tensor::serve_tensor(session, comm, l.timeouts)?,
        Layout::Hybrid(h) => {
            crate::worker_stage::serve_hybrid(session, comm, &h.ring()?, l.timeouts)?
        }
        Layout::Pipeline(_) => {
            let mut session = session;
            crate::worker_stage::serve_stage(&mut session, &mut *comm, l.timeouts)?
        }
    }))
}

//! Starting a pipeline from a mesh file: what `onebit run|chat|bench --mesh` do before they
//! generate. The head reads the model's shape from its file, splits the blocks (so every node
//! reads about the same bytes per token, or as `--split` says), loads its own part, hands each
//! worker its blocks with the file's fingerprint, waits until all are loaded, and forms the mesh.

use crate::bootstrap::{start_head, Job, MeshFile};
use crate::error::{DistError, Result};
use crate::hybrid::HybridLayout;
use crate::key::read_key_file;
use crate::pipeline::balanced_stages;
use crate::shard_stream::Progress;
use crate::stage_job::{fingerprint, StageJob};
use crate::tcp::{TcpComm, TcpConfig};
use onebit_model::load::{GgufModelFile, LoadOptions, ModelPart};
use onebit_model::{HeadKind, Model, ModelConfig, SessionOptions, TensorPart, TensorSplit};
use std::net::TcpListener;
use std::time::Duration;

/// The head's part of a pipeline, and the mesh it leads.
pub struct PipelineStart {
    /// The head's model: the embeddings, the first blocks and the head.
    pub model: Model,
    /// Rank 0 of the mesh.
    pub comm: TcpComm,
    /// Blocks per node, head first.
    pub split: Vec<usize>,
}

/// How to start.
#[derive(Clone, Debug)]
pub struct PipelineLaunch {
    /// The mesh file.
    pub mesh: String,
    /// The model file (GGUF) on the head; workers use the same path unless started with
    /// their own `--model`.
    pub model: String,
    /// How the head loads its part (its `part` is set here).
    pub load: LoadOptions,
    /// Threads each worker uses.
    pub worker_threads: usize,
    /// Session size, the same on every node.
    pub session: SessionOptions,
    /// Blocks per node; `None`: [`default_split`].
    pub split: Option<Vec<usize>>,
    /// How long workers may take to load their blocks.
    pub ready_timeout: Duration,
    /// Where shards streamed to workers without the file are shown.
    pub progress: Progress,
    /// Test mode: a delay and jitter on every message (the workers must emulate too).
    pub emulate: Option<crate::link_emulation::LinkEmulation>,
    /// Workers of the mesh file to leave out (indexes into its `workers`): a mesh formed
    /// again without nodes that failed.
    pub skip: Vec<usize>,
    /// A tensor-parallel layout sums the nodes' products of `o` and `down` (two exchanges a
    /// block, for slow links; see [`TensorSplit::sums`]) instead of gathering their rows.
    pub tensor_sums: bool,
}

/// Blocks per node for `c` over `nodes` (the head reads the output head besides its blocks).
pub fn default_split(c: &ModelConfig, nodes: usize, head: HeadKind) -> Vec<usize> {
    hybrid_blocks(c, &vec![1; nodes], head)
}

/// Blocks per node, head first: `split` checked against the model, or [`default_split`].
pub fn pipeline_blocks(
    config: &ModelConfig,
    nodes: usize,
    head: HeadKind,
    split: Option<Vec<usize>>,
) -> Result<Vec<usize>> {
    let split = split.unwrap_or_else(|| default_split(config, nodes, head));
    if split.len() != nodes || split.iter().sum::<usize>() != config.layers || split[0] == 0 {
        return Err(DistError::Usage(format!(
            "split {split:?}: {nodes} nodes need block counts summing to {} (the head at least 1)",
            config.layers
        )));
    }
    Ok(split)
}

/// Blocks per stage of a hybrid layout with `groups[i]` nodes in stage i, so that every
/// node reads about the same bytes per token (the head's stage also reads the output head).
pub fn hybrid_blocks(c: &ModelConfig, groups: &[usize], head: HeadKind) -> Vec<usize> {
    let block = c.ternary_params() as f64 / c.layers.max(1) as f64 * 2.0 / 8.0;
    balanced_stages(c.layers, groups, block, head_bytes(c, head))
}

/// A hybrid layout of `groups` (nodes per stage, summing to `nodes`) with `blocks` per stage
/// ([`hybrid_blocks`] if `None`), each group's pieces in proportion to its nodes' `shares`
/// (one per node; equal if `None`).
pub fn hybrid_layout(
    config: &ModelConfig,
    nodes: usize,
    head: HeadKind,
    groups: &[usize],
    blocks: Option<Vec<usize>>,
    shares: Option<&[f64]>,
) -> Result<HybridLayout> {
    if groups.iter().sum::<usize>() != nodes {
        return Err(DistError::Usage(format!(
            "hybrid groups {groups:?} for a mesh of {nodes} nodes: the groups must hold every node"
        )));
    }
    let blocks = blocks.unwrap_or_else(|| hybrid_blocks(config, groups, head));
    HybridLayout::new(config, groups, &blocks, shares)
}

/// Every node's piece for tensor parallelism, in proportion to `shares` (equal if `None`),
/// `o` and `down` summed where `sums` is set ([`TensorSplit::sums`]).
pub fn tensor_pieces(
    config: &ModelConfig,
    nodes: usize,
    shares: Option<Vec<f64>>,
    sums: bool,
) -> Result<TensorSplit> {
    let shares = shares.unwrap_or_else(|| vec![1.0; nodes]);
    if shares.len() != nodes {
        return Err(DistError::Usage(format!("{} tensor shares for {nodes} nodes", shares.len())));
    }
    Ok(TensorSplit::proportional(config, &shares)?.with_sums(sums))
}

/// Bytes per token the output head reads, by how it is stored.
fn head_bytes(c: &ModelConfig, head: HeadKind) -> f64 {
    let per_value = match head {
        HeadKind::Q8 => 1.0,
        HeadKind::Q4 => 0.5,
        HeadKind::F32 => 4.0,
    };
    (c.vocab * c.hidden) as f64 * per_value
}

/// The mesh file's addresses and key, and the model's shape, checked for a mesh.
fn mesh_and_shape(
    l: &PipelineLaunch,
) -> Result<(Vec<std::net::SocketAddr>, TcpConfig, ModelConfig)> {
    let mesh = MeshFile::read(&l.mesh)?;
    let mut addrs = mesh.addrs()?;
    if let Some(&w) = l.skip.iter().find(|&&w| w + 1 >= addrs.len()) {
        return Err(DistError::Usage(format!("no worker {w} in {} to leave out", l.mesh)));
    }
    // Rank 0 is the head; worker i is rank i + 1.
    let mut rank = 0;
    addrs.retain(|_| {
        rank += 1;
        rank == 1 || !l.skip.contains(&(rank - 2))
    });
    if addrs.len() < 2 {
        return Err(DistError::Usage(format!("no worker of {} is left", l.mesh)));
    }
    let cfg = TcpConfig { emulate: l.emulate, ..TcpConfig::new(read_key_file(&mesh.key_file)?) };
    if std::path::Path::new(&l.model).is_dir() {
        return Err(DistError::Usage(format!(
            "{}: a mesh runs GGUF files; convert the directory first (onebit convert)",
            l.model
        )));
    }
    let config = {
        let f = GgufModelFile::open(&l.model)?;
        ModelConfig::from_gguf(&f.header)?
    };
    Ok((addrs, cfg, config))
}

/// The head's piece of a tensor-parallel mesh, and the mesh it leads.
pub struct TensorStart {
    /// The head's model: its piece of every block, the embeddings and the head.
    pub model: Model,
    /// Rank 0 of the mesh.
    pub comm: TcpComm,
    /// Every node's piece.
    pub split: TensorSplit,
}

/// How a model is laid out over a mesh.
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    /// Blocks per node, head first.
    Pipeline(Vec<usize>),
    /// Every node's piece of every block.
    Tensor(TensorSplit),
    /// Stages of one node or of a tensor-parallel group, head's first.
    Hybrid(HybridLayout),
}

/// The jobs of ranks 1.. for `layout` of the model at `model` (its fingerprint `fp`).
pub fn stage_jobs(
    layout: &Layout,
    model: &str,
    fp: [u8; 32],
    config: &ModelConfig,
    threads: usize,
    session: SessionOptions,
) -> Vec<StageJob> {
    let job = |layers, tensor| StageJob {
        model: model.to_string(),
        layers,
        threads,
        session,
        fingerprint: fp,
        tensor,
        stages: None,
    };
    match layout {
        Layout::Tensor(split) => (1..split.nodes())
            .map(|rank| job(0..config.layers, Some(TensorPart { split: split.clone(), rank })))
            .collect(),
        Layout::Pipeline(split) => {
            let mut start = split[0];
            split[1..]
                .iter()
                .map(|&n| {
                    start += n;
                    job(start - n..start, None)
                })
                .collect()
        }
        Layout::Hybrid(h) => (1..h.sizes().iter().sum())
            .filter_map(|rank| h.part_of(rank).ok())
            .map(|(layers, piece)| StageJob { stages: Some(h.sizes()), ..job(layers, piece) })
            .collect(),
    }
}

/// Loads rank 0's part of `layout` (the embeddings and the head come with it).
pub fn load_head(model: &str, load: &LoadOptions, layout: &Layout) -> Result<Model> {
    let opts = match layout {
        Layout::Tensor(split) => {
            let tensor = Some(TensorPart { split: split.clone(), rank: 0 });
            LoadOptions { tensor, ..load.clone() }
        }
        Layout::Pipeline(split) => {
            let part = Some(ModelPart { layers: 0..split[0], ends: true });
            LoadOptions { part, ..load.clone() }
        }
        Layout::Hybrid(h) => {
            let (layers, tensor) = h.part_of(0)?;
            LoadOptions { part: Some(ModelPart { layers, ends: true }), tensor, ..load.clone() }
        }
    };
    Ok(Model::from_pretrained(model, &opts)?)
}

/// Rank 0's engine for `layout`: the head over `session` (on rank 0's part) and `comm`.
pub fn head_engine<'m>(
    session: onebit_model::Session<'m>,
    comm: Box<dyn crate::Comm + 'm>,
    layout: &Layout,
    timeouts: crate::pipeline::PipelineTimeouts,
) -> Result<Box<dyn onebit_model::Engine + 'm>> {
    use crate::pipeline::PipelineHead;
    Ok(match layout {
        Layout::Tensor(_) => Box::new(crate::tensor::TensorHead::new(session, comm, timeouts)?),
        Layout::Pipeline(_) => Box::new(PipelineHead::new(session, comm, timeouts)?),
        Layout::Hybrid(h) => Box::new(PipelineHead::hybrid(session, comm, &h.ring()?, timeouts)?),
    })
}

/// Starts a mesh of the nodes at `addrs` laid out as `layout`.
fn start(
    l: &PipelineLaunch,
    (addrs, cfg, config): (Vec<std::net::SocketAddr>, TcpConfig, ModelConfig),
    layout: &Layout,
) -> Result<(Model, TcpComm)> {
    let model_path = std::fs::canonicalize(&l.model)
        .map_or_else(|_| l.model.clone(), |p| p.display().to_string());
    let fp = fingerprint(&l.model)?;
    let jobs: Vec<Job> = stage_jobs(layout, &model_path, fp, &config, l.worker_threads, l.session)
        .into_iter()
        .map(Job::Stage)
        .collect();
    let model = load_head(&l.model, &l.load, layout)?;
    let listener = TcpListener::bind(addrs[0]).map_err(|e| {
        DistError::Usage(format!("cannot listen on the head address {}: {e}", addrs[0]))
    })?;
    let comm = start_head(&listener, &addrs, &jobs, &cfg, l.ready_timeout, &l.progress)?;
    Ok((model, comm))
}

/// Starts a tensor-parallel mesh: every node holds a piece of every block and of the output
/// head, equal pieces unless `shares` says otherwise; `l.split` must be empty.
pub fn start_tensor(l: &PipelineLaunch, shares: Option<Vec<f64>>) -> Result<TensorStart> {
    let mesh = mesh_and_shape(l)?;
    if l.split.is_some() {
        return Err(DistError::Usage("--split sets pipeline blocks, not tensor pieces".into()));
    }
    let split = tensor_pieces(&mesh.2, mesh.0.len(), shares, l.tensor_sums)?;
    let (model, comm) = start(l, mesh, &Layout::Tensor(split.clone()))?;
    Ok(TensorStart { model, comm, split })
}

/// Starts a hybrid mesh: stages of `groups[i]` nodes in mesh order (head's first), each
/// group splitting its stage's blocks tensor-parallel in proportion to `shares` (one per
/// node; equal if `None`); `l.split` gives the blocks per stage ([`hybrid_blocks`] if `None`).
pub fn start_hybrid(
    l: &PipelineLaunch,
    groups: &[usize],
    shares: Option<&[f64]>,
) -> Result<(Model, TcpComm, HybridLayout)> {
    let mesh = mesh_and_shape(l)?;
    let (nodes, head) = (mesh.0.len(), l.load.head);
    let layout = hybrid_layout(&mesh.2, nodes, head, groups, l.split.clone(), shares)?;
    let (model, comm) = start(l, mesh, &Layout::Hybrid(layout.clone()))?;
    Ok((model, comm, layout))
}

/// Starts the pipeline the launch describes.
pub fn start_pipeline(l: &PipelineLaunch) -> Result<PipelineStart> {
    let mesh = mesh_and_shape(l)?;
    let split = pipeline_blocks(&mesh.2, mesh.0.len(), l.load.head, l.split.clone())?;
    let (model, comm) = start(l, mesh, &Layout::Pipeline(split.clone()))?;
    Ok(PipelineStart { model, comm, split })
}

//! Forming a mesh from the command line: `onebit worker` waits on its port for a head; the
//! head (the machine running `onebit mesh …`) reads a mesh file, tells each worker its rank,
//! every rank's address and the job, then all of them join the mesh ([`TcpComm::join`]) and
//! run the job. The first contact is a Noise handshake with the mesh key like every other
//! connection, so a stranger cannot hand a worker a job. A worker prepares its job (a
//! pipeline stage loads its blocks) and answers "ready" or why not before the mesh forms, so
//! a missing or different model file is reported to the head by name.

use crate::error::{DistError, Result};
use crate::pipeline::{serve_stage, PipelineTimeouts, WireStats};
use crate::probe::{probe_links, LinkProbe, ProbeOptions};
use crate::shard_stream::{cached_shard, fetch_shard, send_shard, Progress, NEED_WEIGHTS};
use crate::speed::{measure_mesh, shape_config, shape_words, NodeMeasure};
use crate::stage_job::StageJob;
use crate::tcp::{connect, handshake, Peer, TcpComm, TcpConfig};
use crate::worker_stage::serve_hybrid;
use onebit_model::{Model, ModelConfig, Session};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A mesh file (TOML): the head's address as the workers reach it, and the workers.
///
/// ```toml
/// key_file = "mesh.key"
/// head = "192.168.1.10:7070"
/// workers = ["192.168.1.11:7070", "192.168.1.12:7070"]
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFile {
    /// The pre-shared key file (relative to the mesh file's folder).
    pub key_file: String,
    /// Where the head listens, as the workers reach it (rank 0).
    pub head: String,
    /// The workers' `onebit worker --listen` addresses (ranks 1, 2, …).
    pub workers: Vec<String>,
}

impl MeshFile {
    /// Reads and checks a mesh file; the key file is resolved beside it.
    pub fn read(path: &str) -> Result<MeshFile> {
        let bad = |why: String| DistError::Usage(format!("mesh file {path}: {why}"));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut m: MeshFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if m.workers.is_empty() {
            return Err(bad("no workers".into()));
        }
        let dir = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new("."));
        m.key_file = dir.join(&m.key_file).display().to_string();
        Ok(m)
    }

    /// Every rank's address, head first.
    pub fn addrs(&self) -> Result<Vec<SocketAddr>> {
        std::iter::once(&self.head)
            .chain(&self.workers)
            .map(|a| {
                a.to_socket_addrs()
                    .ok()
                    .and_then(|mut it| it.next())
                    .ok_or_else(|| DistError::Usage(format!("'{a}' is not a host:port")))
            })
            .collect()
    }
}

/// What a mesh runs once it has formed.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    /// Measure every link ([`probe_links`]).
    Probe(ProbeOptions),
    /// Serve some blocks of a model as a pipeline stage ([`serve_stage`]).
    Stage(StageJob),
    /// What the planner needs: every link probed, then every node's speed on a model's
    /// shape measured in turn ([`measure_mesh`]).
    Plan(PlanJob),
}

/// The planner's measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanJob {
    /// The model's shape (its config; only the dimensions travel).
    pub shape: ModelConfig,
    /// Threads every node measures with.
    pub threads: usize,
    /// Positions already in every sequence's cache when the decode pass is timed (attention
    /// reads them all: a long chat decodes slower than a fresh one).
    pub ctx: usize,
    /// How to probe the links.
    pub probe: ProbeOptions,
}

const JOB_PROBE: u8 = 1;
const JOB_STAGE: u8 = 2;
const JOB_PLAN: u8 = 3;

fn encode_probe(v: &mut Vec<u8>, o: &ProbeOptions) {
    for n in [o.pings, o.reps, o.sizes.len()] {
        v.extend((n as u32).to_le_bytes());
    }
    for &s in &o.sizes {
        v.extend((s as u32).to_le_bytes());
    }
}

pub(crate) fn encode_job(rank: usize, addrs: &[SocketAddr], job: &Job) -> Vec<u8> {
    let mut v = vec![];
    v.extend((rank as u32).to_le_bytes());
    let list = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    v.extend((list.len() as u32).to_le_bytes());
    v.extend(list.as_bytes());
    match job {
        Job::Probe(o) => {
            v.push(JOB_PROBE);
            encode_probe(&mut v, o);
        }
        Job::Plan(p) => {
            v.push(JOB_PLAN);
            for w in shape_words(&p.shape) {
                v.extend(w.to_le_bytes());
            }
            v.extend((p.threads as u32).to_le_bytes());
            v.extend((p.ctx as u32).to_le_bytes());
            encode_probe(&mut v, &p.probe);
        }
        Job::Stage(j) => {
            v.push(JOB_STAGE);
            j.encode(&mut v);
        }
    }
    v
}

/// Parses a job frame: (rank, addresses, job), or why it is malformed.
fn decode_job(b: &[u8]) -> std::result::Result<(usize, Vec<SocketAddr>, Job), String> {
    let mut at = 0;
    let mut u32_at = |b: &[u8]| -> std::result::Result<usize, String> {
        let s = b.get(at..at + 4).ok_or("truncated job")?;
        at += 4;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let rank = u32_at(b)?;
    let len = u32_at(b)?;
    let list = b.get(8..8 + len).ok_or("truncated address list")?;
    let list = std::str::from_utf8(list).map_err(|_| "address list is not UTF-8")?;
    let addrs = list
        .split(',')
        .map(|a| a.parse::<SocketAddr>().map_err(|_| format!("'{a}' is not an address")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let rest = &b[8 + len..];
    let (&kind, rest) = rest.split_first().ok_or("no job")?;
    if rank == 0 || rank >= addrs.len() {
        return Err(format!("rank {rank} of {} addresses", addrs.len()));
    }
    match kind {
        JOB_PROBE => Ok((rank, addrs, Job::Probe(decode_probe(rest)?))),
        JOB_STAGE => Ok((rank, addrs, Job::Stage(StageJob::decode(rest)?))),
        JOB_PLAN => Ok((rank, addrs, Job::Plan(decode_plan(rest)?))),
        _ => Err(format!("unknown job {kind}")),
    }
}

/// The longest context a plan job measures at.
pub const MAX_CTX: usize = 1 << 20;

fn decode_plan(b: &[u8]) -> std::result::Result<PlanJob, String> {
    let word = |i: usize| -> std::result::Result<u32, String> {
        let s = b.get(4 * i..4 * i + 4).ok_or("truncated plan job")?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut shape = [0u32; 7];
    for (i, w) in shape.iter_mut().enumerate() {
        *w = word(i)?;
    }
    let threads = word(7)? as usize;
    if threads == 0 || threads > 1024 {
        return Err(format!("{threads} threads"));
    }
    let ctx = word(8)? as usize;
    if ctx > MAX_CTX {
        return Err(format!("a context of {ctx} positions (at most {MAX_CTX})"));
    }
    Ok(PlanJob { shape: shape_config(shape)?, threads, ctx, probe: decode_probe(&b[36..])? })
}

fn decode_probe(rest: &[u8]) -> std::result::Result<ProbeOptions, String> {
    let word = |i: usize| -> std::result::Result<usize, String> {
        let s = rest.get(4 * i..4 * i + 4).ok_or("truncated probe options")?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let (pings, reps, n) = (word(0)?, word(1)?, word(2)?);
    if n > 64 || rest.len() != 12 + 4 * n {
        return Err(format!("probe options of {} bytes for {n} sizes", rest.len()));
    }
    let sizes = (0..n).map(|i| word(3 + i)).collect::<std::result::Result<Vec<_>, _>>()?;
    if sizes.iter().any(|&s| s > 64 << 20) || pings > 10_000 || reps > 1000 {
        return Err("probe options beyond their limits".into());
    }
    Ok(ProbeOptions { pings, sizes, reps })
}

/// What a job produced.
#[derive(Clone, Debug)]
pub enum JobResult {
    /// Every link's figures.
    Probe(Vec<LinkProbe>),
    /// What a pipeline stage moved.
    Stage(WireStats),
    /// Every link and every node (in rank order) as measured.
    Plan(Vec<LinkProbe>, Vec<NodeMeasure>),
}

/// The head's side for a job it runs itself: hands every worker its job, waits until each
/// is ready, joins as rank 0 on `listener` and runs the job.
pub fn run_head(
    listener: &TcpListener,
    addrs: &[SocketAddr],
    job: &Job,
    cfg: &TcpConfig,
    job_timeout: Duration,
) -> Result<JobResult> {
    let jobs = vec![job.clone(); addrs.len().saturating_sub(1)];
    let mut comm = start_head(listener, addrs, &jobs, cfg, cfg.join_timeout, &Progress::default())?;
    let deadline = Instant::now() + job_timeout;
    match job {
        Job::Probe(o) => Ok(JobResult::Probe(probe_links(&mut comm, o, deadline)?)),
        Job::Plan(p) => {
            let links = probe_links(&mut comm, &p.probe, deadline)?;
            Ok(JobResult::Plan(
                links,
                measure_mesh(&mut comm, &p.shape, p.threads, p.ctx, deadline)?,
            ))
        }
        Job::Stage(_) => Err(DistError::Usage("the head does not serve a stage".into())),
    }
}

/// Hands worker `r` (rank r ≥ 1) the job `jobs[r - 1]`, waits up to `ready_timeout` for each
/// to say it is ready (a stage loads its blocks first; a stage without the model file gets
/// its shard streamed first, shown on `progress`), then joins the mesh as rank 0.
pub fn start_head(
    listener: &TcpListener,
    addrs: &[SocketAddr],
    jobs: &[Job],
    cfg: &TcpConfig,
    ready_timeout: Duration,
    progress: &Progress,
) -> Result<TcpComm> {
    if jobs.len() + 1 != addrs.len() {
        return Err(DistError::Usage(format!(
            "{} jobs for {} workers",
            jobs.len(),
            addrs.len() - 1
        )));
    }
    let deadline = Instant::now() + cfg.join_timeout;
    let mut peers = Vec::new();
    for (rank, &addr) in addrs.iter().enumerate().skip(1) {
        let mut peer = connect(addr, rank, cfg, deadline)?;
        peer.send_frame(&encode_job(rank, addrs, &jobs[rank - 1]), deadline)?;
        peers.push((rank, addr, peer));
    }
    let mut reply = Vec::new();
    for (rank, addr, mut peer) in peers {
        let mut ready = Instant::now() + ready_timeout;
        loop {
            peer.recv_frame(&mut reply, 1 << 16, ready)?;
            match (reply.split_first(), &jobs[rank - 1]) {
                (Some((0, _)), _) => break,
                (Some((1, why)), _) => {
                    return Err(DistError::Usage(format!(
                        "node {rank} ({addr}) cannot run its job: {}",
                        String::from_utf8_lossy(why)
                    )))
                }
                (Some((&NEED_WEIGHTS, [])), Job::Stage(j)) => {
                    send_shard(&mut peer, j, progress)?;
                    // Loading starts once the shard is there.
                    ready = Instant::now() + ready_timeout;
                }
                _ => {
                    return Err(DistError::Frame {
                        peer: format!("{rank} ({addr})"),
                        why: "bad ready reply".into(),
                    })
                }
            }
        }
    }
    TcpComm::join(listener, 0, addrs, cfg)
}

/// How a worker serves jobs.
#[derive(Clone, Debug, Default)]
pub struct WorkerSetup {
    /// This node's copy of the model file, where its path differs from the head's.
    pub model: Option<String>,
    /// A folder holding this node's models: the head's file is looked for there by its file
    /// name (`None`: at the head's path).
    pub models: Option<std::path::PathBuf>,
    /// Where shards streamed from the head are kept; `None`: never ask for one.
    pub cache: Option<std::path::PathBuf>,
    /// Where a shard transfer's progress is shown.
    pub progress: Progress,
    /// Waits of a pipeline stage.
    pub timeouts: PipelineTimeouts,
}

/// What a worker prepared for its job before the mesh forms.
enum Prepared {
    Probe(ProbeOptions),
    Plan(PlanJob),
    /// The model, the session's size and a hybrid mesh's stage sizes.
    Stage(Box<Model>, onebit_model::SessionOptions, Option<Vec<usize>>),
}

/// Loads a stage's part: from the node's own copy of the file; else from a shard in the
/// cache; else from a shard the head streams now.
fn load_stage(j: &StageJob, setup: &WorkerSetup, peer: &mut Peer) -> Result<Model> {
    // A path the user gave is their word: another file there is an error, not a download.
    if let Some(p) = &setup.model {
        return j.load(Some(p));
    }
    let own = match &setup.models {
        Some(dir) => {
            let name = std::path::Path::new(&j.model).file_name().unwrap_or_default();
            dir.join(name).display().to_string()
        }
        None => j.model.clone(),
    };
    let why = match j.check_copy(&own) {
        Ok(()) => return j.load_checked(&own),
        Err(e) => e,
    };
    let Some(cache) = &setup.cache else { return Err(why) };
    if let Some(p) = cached_shard(cache, j) {
        let path = p.display().to_string();
        match j.load_shard(&path) {
            Ok(m) => {
                tracing::info!("loaded the stage from the cached shard {path}");
                return Ok(m);
            }
            // A shard whose bytes are wrong (rotted, cut) is fetched again; any other failure
            // (too little memory) would fail the same way on a fresh copy.
            Err(e @ DistError::Model(onebit_model::Error::Gguf { .. })) => {
                tracing::warn!("cached shard {path}: {e}; fetching it again");
                let _ = std::fs::remove_file(&p);
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!("{why}; fetching the weights from the head");
    let p = fetch_shard(peer, j, cache, &setup.progress)?;
    j.load_shard(&p.display().to_string())
}

fn prepare(job: Job, setup: &WorkerSetup, peer: &mut Peer) -> Result<Prepared> {
    Ok(match job {
        Job::Probe(o) => Prepared::Probe(o),
        Job::Plan(p) => Prepared::Plan(p),
        Job::Stage(j) => {
            let model = load_stage(&j, setup, peer)?;
            // A session too large for this node's memory is refused now, before "ready".
            drop(Session::try_with_options(&model, j.session)?);
            Prepared::Stage(Box::new(model), j.session, j.stages)
        }
    })
}

/// Answers the head on the job connection: ready, or why not.
fn answer(peer: &mut Peer, r: &Result<Prepared>) -> Result<()> {
    let msg = match r {
        Ok(_) => vec![0],
        Err(e) => std::iter::once(1).chain(e.to_string().into_bytes()).collect(),
    };
    peer.send_frame(&msg, Instant::now() + Duration::from_secs(5))
}

/// The worker's side: waits on `listener` for a head, prepares the job, joins the mesh it
/// describes and runs the job. A connection that fails the handshake or sends a malformed job
/// is refused and logged, and the worker keeps waiting.
pub fn serve_one_job(
    listener: &TcpListener,
    cfg: &TcpConfig,
    setup: &WorkerSetup,
    job_timeout: Duration,
) -> Result<JobResult> {
    loop {
        let (stream, from) = listener.accept().map_err(|e| DistError::Io {
            peer: "listener".into(),
            op: "accept",
            source: e,
        })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let job =
            handshake(stream, from.to_string(), &cfg.key, false, deadline).and_then(|mut p| {
                let mut frame = Vec::new();
                p.recv_frame(&mut frame, 1 << 16, deadline)?;
                decode_job(&frame)
                    .map(|j| (p, j))
                    .map_err(|why| DistError::Frame { peer: from.to_string(), why })
            });
        let (mut peer, (rank, addrs, job)) = match job {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!("refused {from}: {e}");
                continue;
            }
        };
        tracing::info!("job from {from}: rank {rank} of {}", addrs.len());
        let prepared = prepare(job, setup, &mut peer);
        answer(&mut peer, &prepared)?;
        let prepared = prepared?;
        let mut comm = TcpComm::join(listener, rank, &addrs, cfg)?;
        let deadline = Instant::now() + job_timeout;
        return match prepared {
            Prepared::Probe(o) => Ok(JobResult::Probe(probe_links(&mut comm, &o, deadline)?)),
            Prepared::Plan(p) => {
                let links = probe_links(&mut comm, &p.probe, deadline)?;
                Ok(JobResult::Plan(
                    links,
                    measure_mesh(&mut comm, &p.shape, p.threads, p.ctx, deadline)?,
                ))
            }
            Prepared::Stage(model, opts, Some(stages)) => {
                let session = Session::try_with_options(&model, opts)?;
                let ring = crate::hybrid::Ring::new(&stages)?;
                let t = setup.timeouts;
                Ok(JobResult::Stage(serve_hybrid(session, Box::new(comm), &ring, t)?))
            }
            Prepared::Stage(model, opts, None) if model.tensor.is_some() => {
                let session = Session::try_with_options(&model, opts)?;
                let t = setup.timeouts;
                Ok(JobResult::Stage(crate::tensor::serve_tensor(session, Box::new(comm), t)?))
            }
            Prepared::Stage(model, opts, None) => {
                let mut session = Session::try_with_options(&model, opts)?;
                Ok(JobResult::Stage(serve_stage(&mut session, &mut comm, setup.timeouts)?))
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jobs_round_trip() {
        let addrs: Vec<SocketAddr> =
            vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
        let job = Job::Probe(ProbeOptions { pings: 3, sizes: vec![10, 20], reps: 2 });
        assert_eq!(decode_job(&encode_job(1, &addrs, &job)), Ok((1, addrs.clone(), job.clone())));
        assert!(decode_job(&encode_job(0, &addrs, &job)).is_err());
        assert!(decode_job(&encode_job(2, &addrs, &job)).is_err());
        let plan = Job::Plan(PlanJob {
            shape: ModelConfig::bitnet_2b4t(),
            threads: 3,
            ctx: 1000,
            probe: ProbeOptions { pings: 3, sizes: vec![10], reps: 2 },
        });
        let Ok((1, _, Job::Plan(p))) = decode_job(&encode_job(1, &addrs, &plan)) else {
            panic!("a plan job does not round-trip");
        };
        assert_eq!(
            (shape_words(&p.shape), p.threads, p.ctx, p.probe.sizes),
            (shape_words(&ModelConfig::bitnet_2b4t()), 3, 1000, vec![10])
        );
        // An absurd context is refused where the job is read.
        let Job::Plan(mut too_long) = plan else { unreachable!() };
        too_long.ctx = MAX_CTX + 1;
        let e = decode_job(&encode_job(1, &addrs, &Job::Plan(too_long))).unwrap_err();
        assert!(e.contains("a context of"), "{e}");
    }

    proptest! {
        #[test]
        fn malformed_jobs_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_job(&bytes);
        }
    }
}

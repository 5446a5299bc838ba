//! Forming a mesh from the command line: `onebit worker` waits on its port for a head; the
//! head (the machine running `onebit mesh …`) reads a mesh file, tells each worker its rank,
//! every rank's address and the job, then all of them join the mesh ([`TcpComm::join`]) and
//! run the job. The first contact is a Noise handshake with the mesh key like every other
//! connection, so a stranger cannot hand a worker a job.

use crate::error::{DistError, Result};
use crate::probe::{probe_links, LinkProbe, ProbeOptions};
use crate::tcp::{connect, handshake, TcpComm, TcpConfig};
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
}

const JOB_PROBE: u8 = 1;

fn encode_job(rank: usize, addrs: &[SocketAddr], job: &Job) -> Vec<u8> {
    let mut v = vec![];
    v.extend((rank as u32).to_le_bytes());
    let list = addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    v.extend((list.len() as u32).to_le_bytes());
    v.extend(list.as_bytes());
    match job {
        Job::Probe(o) => {
            v.push(JOB_PROBE);
            for n in [o.pings, o.reps, o.sizes.len()] {
                v.extend((n as u32).to_le_bytes());
            }
            for &s in &o.sizes {
                v.extend((s as u32).to_le_bytes());
            }
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
    if kind != JOB_PROBE {
        return Err(format!("unknown job {kind}"));
    }
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
    if rank == 0 || rank >= addrs.len() {
        return Err(format!("rank {rank} of {} addresses", addrs.len()));
    }
    Ok((rank, addrs, Job::Probe(ProbeOptions { pings, sizes, reps })))
}

/// What a job produced.
#[derive(Clone, Debug, PartialEq)]
pub enum JobResult {
    /// Every link's figures.
    Probe(Vec<LinkProbe>),
}

fn run_job(comm: &mut TcpComm, job: &Job, deadline: Instant) -> Result<JobResult> {
    match job {
        Job::Probe(o) => Ok(JobResult::Probe(probe_links(comm, o, deadline)?)),
    }
}

/// The head's side: hands every worker its rank and the job, joins as rank 0 on `listener`
/// (bound to the mesh file's head address) and runs the job.
pub fn run_head(
    listener: &TcpListener,
    addrs: &[SocketAddr],
    job: &Job,
    cfg: &TcpConfig,
    job_timeout: Duration,
) -> Result<JobResult> {
    let deadline = Instant::now() + cfg.join_timeout;
    for (rank, &addr) in addrs.iter().enumerate().skip(1) {
        let mut peer = connect(addr, rank, cfg, deadline)?;
        peer.send_frame(&encode_job(rank, addrs, job), deadline)?;
    }
    let mut comm = TcpComm::join(listener, 0, addrs, cfg)?;
    run_job(&mut comm, job, Instant::now() + job_timeout)
}

/// The worker's side: waits on `listener` for a head, joins the mesh it describes and runs
/// its job. A connection that fails the handshake or sends a malformed job is refused and
/// logged, and the worker keeps waiting.
pub fn serve_one_job(
    listener: &TcpListener,
    cfg: &TcpConfig,
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
                decode_job(&frame).map_err(|why| DistError::Frame { peer: from.to_string(), why })
            });
        let (rank, addrs, job) = match job {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!("refused {from}: {e}");
                continue;
            }
        };
        tracing::info!("job from {from}: rank {rank} of {}", addrs.len());
        let mut comm = TcpComm::join(listener, rank, &addrs, cfg)?;
        return run_job(&mut comm, &job, Instant::now() + job_timeout);
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
    }

    proptest! {
        #[test]
        fn malformed_jobs_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_job(&bytes);
        }
    }
}

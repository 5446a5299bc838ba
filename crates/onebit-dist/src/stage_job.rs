//! The job a worker runs for a pipeline or a tensor-parallel mesh: which blocks (or which
//! piece of every block) of which model file, how to size its session, and the file's
//! fingerprint so a worker never serves blocks of another model. Each worker loads only its
//! own blocks or piece from its own copy of the file.

use crate::error::{DistError, Result};
use blake2::{Blake2s256, Digest};
use onebit_model::load::{LoadOptions, ModelPart};
use onebit_model::{KvDtype, Model, SessionOptions, TensorPart, TensorSplit};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

/// One pipeline stage's assignment.
#[derive(Clone, Debug, PartialEq)]
pub struct StageJob {
    /// The model file as the head names it (a worker may use its own path instead).
    pub model: String,
    /// The blocks this stage holds.
    pub layers: Range<usize>,
    /// Threads for the stage's products.
    pub threads: usize,
    /// The session's size (the same on every stage, so every stage accepts the same rows).
    pub session: SessionOptions,
    /// [`fingerprint`] of the head's file.
    pub fingerprint: [u8; 32],
    /// For a tensor-parallel mesh: this node's piece of every block (`layers` is then all
    /// of them); for a stage of a hybrid mesh run by several nodes, this node's piece of the
    /// stage's blocks; `None`: whole blocks.
    pub tensor: Option<TensorPart>,
    /// For a hybrid mesh: nodes per stage in rank order ([`crate::hybrid::Ring`]; this
    /// node's stage is the one holding its rank); `None`: a pipeline stage of one node or a
    /// tensor-parallel node.
    pub stages: Option<Vec<usize>>,
}

/// Flags of a job's optional sections.
const HAS_TENSOR: u8 = 1;
const HAS_STAGES: u8 = 2;

/// BLAKE2s of a model file's length, its first 16 MiB (the GGUF header: metadata, tensor
/// directory and, in onebit's files, the checksum of all tensor data) and its last 1 MiB.
/// Two copies of one file agree; a different model or a truncated copy does not.
pub fn fingerprint(path: &str) -> Result<[u8; 32]> {
    let io = |e: std::io::Error| DistError::Usage(format!("model file {path}: {e}"));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut h = Blake2s256::new();
    h.update(len.to_le_bytes());
    let mut buf = vec![0u8; (16 << 20).min(len as usize)];
    f.read_exact(&mut buf).map_err(io)?;
    h.update(&buf);
    let tail = (1u64 << 20).min(len);
    f.seek(SeekFrom::Start(len - tail)).map_err(io)?;
    buf.resize(tail as usize, 0);
    f.read_exact(&mut buf).map_err(io)?;
    h.update(&buf);
    Ok(h.finalize().into())
}

fn kv_code(k: KvDtype) -> u8 {
    match k {
        KvDtype::F32 => 0,
        KvDtype::F16 => 1,
        KvDtype::Q8 => 2,
    }
}

impl StageJob {
    /// Appends the job's bytes.
    pub(crate) fn encode(&self, v: &mut Vec<u8>) {
        let s = &self.session;
        for n in [self.layers.start, self.layers.end, self.threads, s.max_ctx, s.max_batch, s.slots]
        {
            v.extend((n as u32).to_le_bytes());
        }
        v.push(kv_code(s.kv));
        v.extend(self.fingerprint);
        v.extend((self.model.len() as u32).to_le_bytes());
        v.extend(self.model.as_bytes());
        let flags = u8::from(self.tensor.is_some()) * HAS_TENSOR
            + u8::from(self.stages.is_some()) * HAS_STAGES;
        v.push(flags);
        if let Some(t) = &self.tensor {
            v.extend((t.rank as u32).to_le_bytes());
            t.split.encode(v);
        }
        if let Some(st) = &self.stages {
            v.extend((st.len() as u32).to_le_bytes());
            v.extend(st.iter().flat_map(|&n| (n as u32).to_le_bytes()));
        }
    }

    /// Parses a job, or says why it is malformed.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<StageJob, String> {
        let word = |i: usize| -> std::result::Result<usize, String> {
            let s = b.get(4 * i..4 * i + 4).ok_or("truncated stage job")?;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        };
        let w: Vec<usize> = (0..6).map(word).collect::<std::result::Result<_, _>>()?;
        let kv = match b.get(24) {
            Some(0) => KvDtype::F32,
            Some(1) => KvDtype::F16,
            Some(2) => KvDtype::Q8,
            _ => return Err("unknown KV cache type".into()),
        };
        let fingerprint: [u8; 32] =
            b.get(25..57).ok_or("truncated fingerprint")?.try_into().expect("32 bytes");
        let len = b.get(57..61).ok_or("truncated model path")?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let path = b.get(61..61 + len).ok_or("truncated model path")?;
        let model = std::str::from_utf8(path).map_err(|_| "model path is not UTF-8")?;
        let (&flags, mut rest) = b[61 + len..].split_first().ok_or("truncated stage job")?;
        if flags & !(HAS_TENSOR | HAS_STAGES) != 0 {
            return Err(format!("unknown stage job sections {flags:#x}"));
        }
        let u32_at = |b: &[u8]| -> std::result::Result<usize, String> {
            let s = b.get(..4).ok_or("truncated stage job")?;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        };
        let tensor = if flags & HAS_TENSOR != 0 {
            let rank = u32_at(rest)?;
            let (split, left) = TensorSplit::decode(&rest[4..])?;
            if rank >= split.nodes() {
                return Err(format!("tensor piece of rank {rank} of {}", split.nodes()));
            }
            rest = left;
            Some(TensorPart { split, rank })
        } else {
            None
        };
        let stages = if flags & HAS_STAGES != 0 {
            let n = u32_at(rest)?;
            if n == 0 || n > 64 || rest.len() != 4 + 4 * n {
                return Err(format!("{n} stages in {} bytes", rest.len()));
            }
            let st = (0..n)
                .map(|i| u32_at(&rest[4 + 4 * i..]))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            rest = &[];
            Some(st)
        } else {
            None
        };
        if !rest.is_empty() {
            return Err(format!("{} bytes after the stage job", rest.len()));
        }
        if w[0] > w[1] || w[2] == 0 || w[2] > 1024 || w[3] == 0 || w[4] == 0 || w[5] == 0 {
            return Err(format!("stage job out of range: {w:?}"));
        }
        Ok(StageJob {
            model: model.to_string(),
            layers: w[0]..w[1],
            threads: w[2],
            session: SessionOptions { max_ctx: w[3], max_batch: w[4], slots: w[5], kv },
            fingerprint,
            tensor,
            stages,
        })
    }

    /// Loads this stage's blocks from `path` (the job's own path when `None`) after checking
    /// the file is the head's.
    pub fn load(&self, path: Option<&str>) -> Result<Model> {
        let path = path.unwrap_or(&self.model);
        self.check_copy(path)?;
        self.load_checked(path)
    }

    /// Checks that `path` is a copy of the head's file.
    pub fn check_copy(&self, path: &str) -> Result<()> {
        let mine = fingerprint(path)?;
        if mine != self.fingerprint {
            return Err(DistError::Usage(format!(
                "model file {path} on this node is not the head's (fingerprint {} here, {} there)",
                &crate::shard_stream::hex(&mine)[..16],
                &crate::shard_stream::hex(&self.fingerprint)[..16]
            )));
        }
        Ok(())
    }

    /// Loads this stage's blocks from a shard of the head's file
    /// ([`crate::shard_stream`]), after checking the shard says it is one and holds them
    /// (its checksum is checked as it loads).
    pub fn load_shard(&self, path: &str) -> Result<Model> {
        let f = onebit_model::load::GgufModelFile::open(path)?;
        let hex = crate::shard_stream::hex(&self.fingerprint);
        let need = crate::shard_stream::job_span(self);
        match onebit_model::shard::shard_identity(&f.header) {
            Some((source, span)) if source == hex && span.covers(&need) => {}
            _ => {
                return Err(DistError::Usage(format!(
                    "{path} is not a shard of the head's model holding {need:?}"
                )))
            }
        }
        drop(f);
        self.load_checked(path)
    }

    /// Loads this stage's blocks from `path`, a file already known to be the head's (its
    /// fingerprint checked, or agreed by every rank).
    pub(crate) fn load_checked(&self, path: &str) -> Result<Model> {
        // A tensor-parallel node holds a piece of every block; any other job a range.
        let whole_blocks = self.tensor.is_some() && self.stages.is_none();
        let part =
            Some(ModelPart { layers: self.layers.clone(), ends: false }).filter(|_| !whole_blocks);
        let tensor = self.tensor.clone();
        let opts = LoadOptions { threads: self.threads, part, tensor, ..Default::default() };
        Ok(Model::from_pretrained(path, &opts)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jobs_round_trip() {
        let j = StageJob {
            model: "/models/ü.gguf".into(),
            layers: 3..30,
            threads: 2,
            session: SessionOptions { max_ctx: 2048, max_batch: 128, slots: 4, kv: KvDtype::Q8 },
            fingerprint: [9; 32],
            tensor: None,
            stages: None,
        };
        let mut v = Vec::new();
        j.encode(&mut v);
        assert_eq!(StageJob::decode(&v), Ok(j.clone()));
        assert!(StageJob::decode(&v[..v.len() - 1]).is_err());
        let split = TensorSplit {
            q_heads: vec![0, 10, 20],
            ffn: vec![0, 16, 64],
            hidden: vec![0, 8, 9],
            vocab: vec![0, 100, 256],
            sums: true,
        };
        let j = StageJob { tensor: Some(TensorPart { split, rank: 1 }), ..j };
        let mut v = Vec::new();
        j.encode(&mut v);
        assert_eq!(StageJob::decode(&v), Ok(j.clone()));
        for cut in 1..52 {
            assert!(StageJob::decode(&v[..v.len() - cut]).is_err(), "cut {cut}");
        }
        let j = StageJob { stages: Some(vec![1, 2]), ..j };
        let mut v = Vec::new();
        j.encode(&mut v);
        assert_eq!(StageJob::decode(&v), Ok(j.clone()));
        for cut in 1..70 {
            assert!(StageJob::decode(&v[..v.len() - cut]).is_err(), "cut {cut}");
        }
        v.push(0);
        assert!(StageJob::decode(&v).is_err());
    }

    proptest! {
        #[test]
        fn malformed_jobs_are_errors_not_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = StageJob::decode(&b);
        }
    }
}

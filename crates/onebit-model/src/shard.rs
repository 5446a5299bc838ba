//! A node's shard of a model file: a GGUF holding the source's metadata and only the tensors
//! one node of a device mesh reads (a pipeline stage: its blocks; a tensor-parallel node:
//! every tensor, since it holds rows of all of them). Tensors are copied byte for byte in
//! the source's order, so a shard loads exactly as the source does for that part. The shard
//! records what it is a shard of (`onebit.shard.*`) and always carries onebit's checksum of
//! its tensor data, even when the source (a peer's file) carried none, so a cached shard that
//! rotted on disk is caught at load.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufWriter, TensorPlan, Value, CHECKSUM_KEY};
use crate::load::GgufModelFile;
use std::io::Write;
use std::ops::Range;

/// Metadata key: the source file's fingerprint, as hex (the mesh's identity of a model file).
pub const SOURCE_KEY: &str = "onebit.shard.source";
/// Metadata key: the first and one-past-last block held (`[start, end]`); absent: every tensor.
pub const LAYERS_KEY: &str = "onebit.shard.layers";
/// Metadata key: whether the source ties the output head to the embeddings (a shard without
/// the head could not tell from its tensors).
pub const TIED_KEY: &str = "onebit.shard.tied_embeddings";

/// Which tensors a shard holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardSpan {
    /// Blocks `start..end` only (a pipeline stage that is not the head).
    Blocks(Range<usize>),
    /// Every tensor (a tensor-parallel node reads rows of all of them).
    Whole,
}

impl ShardSpan {
    /// Whether a shard of this span serves a node that needs `need`.
    pub fn covers(&self, need: &ShardSpan) -> bool {
        match (self, need) {
            (ShardSpan::Whole, _) => true,
            (ShardSpan::Blocks(have), ShardSpan::Blocks(want)) => {
                have.start <= want.start && want.end <= have.end
            }
            (ShardSpan::Blocks(_), ShardSpan::Whole) => false,
        }
    }

    fn holds(&self, tensor: &str) -> bool {
        match self {
            ShardSpan::Whole => true,
            ShardSpan::Blocks(r) => block_of(tensor).is_some_and(|b| r.contains(&b)),
        }
    }
}

/// The block index of a `blk.N.…` tensor.
pub(crate) fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// A shard about to be written: its header is planned, so its length is known up front.
pub struct ShardWriter<'a> {
    src: &'a GgufModelFile,
    meta: Vec<(String, Value)>,
    plan: Vec<TensorPlan>,
}

impl<'a> ShardWriter<'a> {
    /// Plans the shard of `src` holding `span`, recording `source` (the source's fingerprint)
    /// in its metadata.
    pub fn new(src: &'a GgufModelFile, span: &ShardSpan, source: &[u8; 32]) -> Result<Self> {
        let g = &src.header;
        if let ShardSpan::Blocks(r) = span {
            let layers = crate::ModelConfig::from_gguf(g)?.layers;
            if r.start >= r.end || r.end > layers {
                return Err(Error::Config(format!(
                    "shard of blocks {}..{} of a model of {layers} blocks",
                    r.start, r.end
                )));
            }
        }
        let mut meta: Vec<(String, Value)> = g
            .metadata
            .iter()
            .filter(|(k, _)| !k.starts_with("onebit.shard.") && k != CHECKSUM_KEY)
            .cloned()
            .collect();
        let hex: String = source.iter().map(|b| format!("{b:02x}")).collect();
        meta.push((SOURCE_KEY.into(), Value::String(hex)));
        if let ShardSpan::Blocks(r) = span {
            let ends = vec![Value::U64(r.start as u64), Value::U64(r.end as u64)];
            meta.push((LAYERS_KEY.into(), Value::Array(ends)));
        }
        let tied = crate::ModelConfig::from_gguf(g)?.tied_embeddings;
        meta.push((TIED_KEY.into(), Value::Bool(tied)));
        meta.push((CHECKSUM_KEY.into(), Value::String(String::new())));
        let mut order: Vec<_> = g.tensors.iter().filter(|t| span.holds(&t.name)).collect();
        order.sort_by_key(|t| t.offset);
        let plan = order
            .iter()
            .map(|t| TensorPlan { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty })
            .collect();
        Ok(ShardWriter { src, meta, plan })
    }

    /// Tensors the shard holds.
    pub fn tensors(&self) -> usize {
        self.plan.len()
    }

    /// The shard's length in bytes.
    pub fn planned_len(&self) -> Result<u64> {
        let w = GgufWriter::new(std::io::sink(), &self.meta, &self.plan)
            .map_err(|source| Error::Gguf { path: self.src.path().into(), source })?;
        Ok(w.planned_len())
    }

    /// Writes the shard to `w` (a file, a socket) and returns the checksum patch: the
    /// offset of the checksum value in the output and the bytes that go there, known only
    /// once every tensor has passed (a stream cannot seek back; the receiver applies it).
    /// `progress` gets the bytes written so far and the total.
    pub fn write<W: Write>(
        &self,
        w: W,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(u64, Vec<u8>)> {
        let gg = |source| Error::Gguf { path: self.src.path().into(), source };
        let mut w = GgufWriter::new(w, &self.meta, &self.plan).map_err(gg)?;
        let total = w.planned_len();
        let mut done = w.written();
        progress(done, total);
        for t in &self.plan {
            let (_, bytes) = self.src.tensor(&t.name)?;
            // Whole tensors can be gigabytes: write (and report) them in slices.
            for piece in bytes.chunks(4 << 20) {
                w.write_slice(piece).map_err(gg)?;
                done += piece.len() as u64;
                progress(done, total);
            }
            w.end_tensor(&t.name).map_err(gg)?;
            self.src.release();
        }
        let patch = w.checksum_patch().expect("the shard plans a checksum");
        w.finish().map_err(gg)?;
        progress(total, total);
        Ok(patch)
    }
}

/// What a shard file says it is: the source's fingerprint (hex) and the span it holds.
pub fn shard_identity(g: &GgufFile) -> Option<(String, ShardSpan)> {
    let source = g.get(SOURCE_KEY)?.as_str()?.to_string();
    let span = match g.get(LAYERS_KEY) {
        None => ShardSpan::Whole,
        Some(Value::Array(v)) if v.len() == 2 => {
            let (a, b) = (v[0].as_u64()? as usize, v[1].as_u64()? as usize);
            ShardSpan::Blocks(a..b)
        }
        Some(_) => return None,
    };
    Some((source, span))
}

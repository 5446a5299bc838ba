//! Writing GGUF v3: the header is written up front from a plan of tensors, then each
//! tensor's bytes in plan order, so models larger than memory stream straight to disk.

use super::{GgmlType, GgufError, Value};
use std::io::Write;

type Result<T> = std::result::Result<T, GgufError>;

/// A tensor to be written: name, dims (innermost first) and type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    /// Tensor name.
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
}

/// Streams a GGUF file: header on creation, then tensors in plan order. When the metadata
/// holds [`super::CHECKSUM_KEY`], its value is a placeholder until the tensors are written:
/// [`GgufWriter::checksum_patch`] then gives the bytes to write over it.
pub struct GgufWriter<W: Write> {
    w: W,
    alignment: u64,
    sizes: Vec<(String, u64)>,
    next: usize,
    /// Bytes of the current tensor written so far.
    cur: u64,
    header_len: u64,
    data_len: u64,
    checksum: Option<(u64, xxhash_rust::xxh3::Xxh3)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            let ety = items.first().map_or(4, Value::type_id);
            if items.iter().any(|i| i.type_id() != ety) {
                return Err(GgufError::Usage("array items must share one type".into()));
            }
            out.extend_from_slice(&ety.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i)?;
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header (metadata and tensor directory) and returns a writer for the data.
    pub fn new(mut w: W, metadata: &[(String, Value)], tensors: &[TensorPlan]) -> Result<Self> {
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(32);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::Usage(format!("alignment {alignment} is not a power of two")));
        }
        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        let mut checksum = None;
        for (k, v) in metadata {
            put_str(&mut h, k);
            h.extend_from_slice(&v.type_id().to_le_bytes());
            if k == super::CHECKSUM_KEY {
                let placeholder = super::checksum_text(0);
                put_str(&mut h, &placeholder);
                let at = (h.len() - placeholder.len()) as u64;
                checksum = Some((at, xxhash_rust::xxh3::Xxh3::new()));
            } else {
                put_value(&mut h, v)?;
            }
        }
        let mut offset = 0u64;
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in tensors {
            let rows: u64 = t.dims.iter().skip(1).product();
            let size = t
                .ty
                .tensor_bytes(t.dims.first().copied().unwrap_or(0), rows)
                .filter(|_| !t.dims.is_empty() && t.dims.len() <= 4)
                .ok_or_else(|| GgufError::Dims { name: t.name.clone(), dims: t.dims.clone() })?;
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
            sizes.push((t.name.clone(), size));
            offset = (offset + size).div_ceil(alignment) * alignment;
        }
        let pad = (h.len() as u64).div_ceil(alignment) * alignment - h.len() as u64;
        h.resize(h.len() + pad as usize, 0);
        w.write_all(&h)?;
        let (header_len, data_len) = (h.len() as u64, offset);
        Ok(GgufWriter { w, alignment, sizes, next: 0, cur: 0, header_len, data_len, checksum })
    }

    /// The whole file's length once every tensor is written.
    pub fn planned_len(&self) -> u64 {
        self.header_len + self.data_len
    }

    /// Bytes written so far (the header on creation).
    pub fn written(&self) -> u64 {
        let done: u64 = self.sizes[..self.next]
            .iter()
            .map(|(_, s)| s.div_ceil(self.alignment) * self.alignment)
            .sum();
        self.header_len + done + self.cur
    }

    /// Writes the next tensor's bytes; `name` and length must match the plan.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        if self.cur != 0 {
            return Err(GgufError::Usage(format!("tensor '{name}' after a partial tensor")));
        }
        self.write_slice(data)?;
        self.end_tensor(name)
    }

    /// Writes the next bytes of the current tensor (a tensor may arrive in slices).
    pub fn write_slice(&mut self, data: &[u8]) -> Result<()> {
        let Some((want, size)) = self.sizes.get(self.next) else {
            return Err(GgufError::Usage("tensor data beyond the plan".into()));
        };
        if self.cur + data.len() as u64 > *size {
            return Err(GgufError::Usage(format!("more than {size} bytes for tensor '{want}'")));
        }
        self.w.write_all(data)?;
        if let Some((_, h)) = &mut self.checksum {
            h.update(data);
        }
        self.cur += data.len() as u64;
        Ok(())
    }

    /// Ends the current tensor, which must be `name` and complete.
    pub fn end_tensor(&mut self, name: &str) -> Result<()> {
        let Some((want, size)) = self.sizes.get(self.next) else {
            return Err(GgufError::Usage(format!("tensor '{name}' is beyond the plan")));
        };
        if want != name || *size != self.cur {
            return Err(GgufError::Usage(format!(
                "expected tensor '{want}' of {size} bytes, got '{name}' of {} bytes",
                self.cur
            )));
        }
        let pad = (*size).div_ceil(self.alignment) * self.alignment - size;
        self.w.write_all(&vec![0u8; pad as usize])?;
        self.next += 1;
        self.cur = 0;
        Ok(())
    }

    /// Where the checksum placeholder sits in the output and the bytes that replace it, once
    /// every tensor is written (None without a checksum key).
    pub fn checksum_patch(&self) -> Option<(u64, Vec<u8>)> {
        let (at, h) = self.checksum.as_ref()?;
        Some((*at, super::checksum_text(h.digest()).into_bytes()))
    }

    /// Checks every planned tensor was written and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        if self.next != self.sizes.len() {
            return Err(GgufError::Usage(format!(
                "{} of {} tensors written",
                self.next,
                self.sizes.len()
            )));
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

//! Parsing a GGUF file from bytes (usually a memory map), every read bounds-checked.

use super::{GgmlType, GgufError, TensorInfo, Value};
use std::collections::HashMap;

type Result<T> = std::result::Result<T, GgufError>;

/// Most nesting of arrays inside arrays accepted.
const MAX_DEPTH: u32 = 4;

/// A parsed GGUF header: metadata and the tensor directory. Data stays in the caller's bytes.
#[derive(Clone, Debug)]
pub struct GgufFile {
    /// Format version.
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Byte offset of the data section.
    pub data_offset: u64,
    /// Alignment of tensor data.
    pub alignment: u64,
    index: HashMap<String, usize>,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        let left = (self.b.len() - self.at) as u64;
        if n > left {
            return Err(GgufError::Truncated { at: self.at as u64, need: n - left, what });
        }
        let s = &self.b[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("length checked"))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn remaining(&self) -> u64 {
        (self.b.len() - self.at) as u64
    }
    fn string(&mut self, what: &'static str) -> Result<String> {
        let at = self.at as u64;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Utf8(at))
    }
    /// A count of items each at least `min_size` bytes, checked against what is left.
    fn count(&mut self, what: &'static str, min_size: u64) -> Result<u64> {
        let at = self.at as u64;
        let n = self.u64(what)?;
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(GgufError::TooLarge { what, value: n, at });
        }
        Ok(n)
    }

    fn value(&mut self, key: &str, ty: u32, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>("u8")?[0]),
            1 => Value::I8(self.array::<1>("i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => Value::Bool(self.array::<1>("bool")?[0] != 0),
            8 => Value::String(self.string("string value")?),
            9 if depth < MAX_DEPTH => {
                let ety = self.u32("array type")?;
                let min = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => return Err(GgufError::ValueType { key: key.into(), ty: ety }),
                };
                let n = self.count("array length", min)?;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(key, ety, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            _ => return Err(GgufError::ValueType { key: key.into(), ty }),
        })
    }
}

impl GgufFile {
    /// Parses the header of a GGUF file held in `bytes` and checks every tensor lies inside it.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        let mut c = Cursor { b: bytes, at: 0 };
        let magic: [u8; 4] = c.array("magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 12)?;
        let mut metadata = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("value type")?;
            let v = c.value(&key, ty, 0)?;
            metadata.push((key, v));
        }
        let get = |k: &str| metadata.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let alignment = get("general.alignment").and_then(Value::as_u64).unwrap_or(32);
        if alignment == 0 || !alignment.is_power_of_two() || alignment > 1 << 20 {
            return Err(GgufError::TooLarge { what: "general.alignment", value: alignment, at: 0 });
        }
        let arch = get("general.architecture").and_then(Value::as_str).unwrap_or("");
        let bitnet = arch.starts_with("bitnet");
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut index = HashMap::new();
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor dims")?;
            if n_dims == 0 || n_dims > 4 {
                return Err(GgufError::Dims { name, dims: vec![n_dims as u64] });
            }
            let dims = (0..n_dims).map(|_| c.u64("tensor dim")).collect::<Result<Vec<u64>>>()?;
            let ty_id = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            let ty = GgmlType::from_id(ty_id, bitnet)
                .ok_or_else(|| GgufError::TensorType { name: name.clone(), ty: ty_id })?;
            let rows = dims[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let size = match rows.and_then(|r| ty.tensor_bytes(dims[0], r)) {
                Some(s) if dims.iter().all(|&d| d > 0) => s,
                _ => return Err(GgufError::Dims { name, dims }),
            };
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Duplicate(name));
            }
            tensors.push(TensorInfo { name, dims, ty, offset, size });
        }
        let data_offset = (c.at as u64).div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        for t in &tensors {
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.size));
            if t.offset % alignment != 0 || end.is_none_or(|e| e > file_len) {
                return Err(GgufError::TensorRange {
                    name: t.name.clone(),
                    offset: t.offset,
                    size: t.size,
                });
            }
        }
        Ok(GgufFile { version, metadata, tensors, data_offset, alignment, index })
    }

    /// Checks the tensor data against the checksum onebit wrote into the file, if any.
    pub fn verify_checksum(&self, bytes: &[u8]) -> Result<()> {
        self.verify_checksum_with(bytes, &mut |_| {})
    }

    /// [`GgufFile::verify_checksum`], calling `done(r)` after hashing each tensor's byte
    /// range `r` of `bytes` (a mapped file drops those pages again: bounded memory).
    pub fn verify_checksum_with(
        &self,
        bytes: &[u8],
        done: &mut dyn FnMut(std::ops::Range<usize>),
    ) -> Result<()> {
        let Some(expected) = self.get(super::CHECKSUM_KEY).and_then(Value::as_str) else {
            return Ok(());
        };
        let mut order: Vec<&TensorInfo> = self.tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for t in order {
            h.update(self.data(bytes, t));
            let start = (self.data_offset + t.offset) as usize;
            done(start..start + t.size as usize);
        }
        let found = super::checksum_text(h.digest());
        if found != expected {
            return Err(GgufError::Checksum { expected: expected.into(), found });
        }
        Ok(())
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor's directory entry.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes within the file bytes this header was parsed from.
    pub fn data<'a>(&self, bytes: &'a [u8], t: &TensorInfo) -> &'a [u8] {
        let start = (self.data_offset + t.offset) as usize;
        &bytes[start..start + t.size as usize]
    }
}

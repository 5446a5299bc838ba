//! GGML tensor type ids and their byte sizes, for the types onebit reads and writes.
//!
//! I2_S is 36 only in bitnet.cpp's fork (upstream ggml reused ids in that range), so it is
//! accepted only in files whose architecture is a BitNet one. onebit's own layouts use ids
//! far above ggml's range so no other tool mistakes them for its own.

/// A tensor element type as stored in GGUF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit blocks of 32 with an f16 scale (34 bytes).
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale, value d·(q − 8) (18 bytes).
    Q4_0,
    /// 4-bit blocks of 32 with f16 scale and minimum, value d·q + m (20 bytes).
    Q4_1,
    /// llama.cpp TQ1_0.
    Tq1_0,
    /// llama.cpp TQ2_0.
    Tq2_0,
    /// bitnet.cpp I2_S (x86 layout).
    I2S,
    /// onebit T2 rows.
    OnebitT2,
    /// onebit B3 rows.
    OnebitB3,
}

impl GgmlType {
    /// The id written in the file.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Bf16 => 30,
            GgmlType::Tq1_0 => 34,
            GgmlType::Tq2_0 => 35,
            GgmlType::I2S => 36,
            GgmlType::OnebitT2 => 0x4F42_0002,
            GgmlType::OnebitB3 => 0x4F42_0003,
        }
    }

    /// The type of an id (I2_S only when `bitnet` says the file is bitnet.cpp's).
    pub fn from_id(id: u32, bitnet: bool) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            34 => GgmlType::Tq1_0,
            35 => GgmlType::Tq2_0,
            36 if bitnet => GgmlType::I2S,
            0x4F42_0002 => GgmlType::OnebitT2,
            0x4F42_0003 => GgmlType::OnebitB3,
            _ => return None,
        })
    }

    /// Bytes of a tensor with `ne[0] = cols` and `rows` rows, or None if the shape does not fit.
    pub fn tensor_bytes(self, cols: u64, rows: u64) -> Option<u64> {
        let n = cols.checked_mul(rows)?;
        let blocks = |b: u64, bytes: u64| cols.is_multiple_of(b).then(|| n / b * bytes);
        match self {
            GgmlType::F32 => n.checked_mul(4),
            GgmlType::F16 | GgmlType::Bf16 => n.checked_mul(2),
            GgmlType::Q8_0 => blocks(32, 34),
            GgmlType::Q4_0 => blocks(32, 18),
            GgmlType::Q4_1 => blocks(32, 20),
            GgmlType::Tq1_0 => blocks(256, 54),
            GgmlType::Tq2_0 => blocks(256, 66),
            GgmlType::I2S => n.is_multiple_of(128).then(|| n / 4 + 32),
            GgmlType::OnebitT2 => rows.checked_mul(cols.div_ceil(256) * 64),
            GgmlType::OnebitB3 => rows.checked_mul(cols.div_ceil(320) * 64),
        }
    }
}

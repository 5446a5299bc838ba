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
    /// 5-bit blocks of 32 with an f16 scale (22 bytes).
    Q5_0,
    /// 5-bit blocks of 32 with f16 scale and minimum (24 bytes).
    Q5_1,
    /// k-quant, 2 bits in 256-value super-blocks (84 bytes).
    Q2K,
    /// k-quant, 3 bits (110 bytes per 256).
    Q3K,
    /// k-quant, 4 bits (144 bytes per 256).
    Q4K,
    /// k-quant, 5 bits (176 bytes per 256).
    Q5K,
    /// k-quant, 6 bits (210 bytes per 256): llama-quantize's default for a tied embedding.
    Q6K,
    /// k-quant, 8 bits with an f32 scale and block sums (292 bytes per 256).
    Q8K,
    /// llama.cpp TQ1_0.
    Tq1_0,
    /// llama.cpp TQ2_0.
    Tq2_0,
    /// bitnet.cpp I2_S (x86 layout).
    I2S,
    /// ik_llama.cpp IQ1_BN (134): f16 row scale, 64-weight blocks of 13 bytes.
    Iq1Bn,
    /// ik_llama.cpp IQ2_BN (135): f32 row scale, 64-weight blocks of 16 bytes.
    Iq2Bn,
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
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Q8K => 15,
            GgmlType::Bf16 => 30,
            GgmlType::Tq1_0 => 34,
            GgmlType::Tq2_0 => 35,
            GgmlType::I2S => 36,
            GgmlType::Iq1Bn => 134,
            GgmlType::Iq2Bn => 135,
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
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::Bf16,
            34 => GgmlType::Tq1_0,
            35 => GgmlType::Tq2_0,
            36 if bitnet => GgmlType::I2S,
            134 => GgmlType::Iq1Bn,
            135 => GgmlType::Iq2Bn,
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
            GgmlType::Q5_0 => blocks(32, 22),
            GgmlType::Q5_1 => blocks(32, 24),
            GgmlType::Q2K => blocks(256, 84),
            GgmlType::Q3K => blocks(256, 110),
            GgmlType::Q4K => blocks(256, 144),
            GgmlType::Q5K => blocks(256, 176),
            GgmlType::Q6K => blocks(256, 210),
            GgmlType::Q8K => blocks(256, 292),
            GgmlType::Tq1_0 => blocks(256, 54),
            GgmlType::Tq2_0 => blocks(256, 66),
            GgmlType::I2S => n.is_multiple_of(128).then(|| n / 4 + 32),
            GgmlType::Iq1Bn => {
                if cols.is_multiple_of(64) {
                    rows.checked_mul(2 + cols / 64 * 13)
                } else {
                    None
                }
            }
            GgmlType::Iq2Bn => {
                if cols.is_multiple_of(64) {
                    rows.checked_mul(4 + cols / 64 * 16)
                } else {
                    None
                }
            }
            GgmlType::OnebitT2 => rows.checked_mul(cols.div_ceil(256) * 64),
            GgmlType::OnebitB3 => rows.checked_mul(cols.div_ceil(320) * 64),
        }
    }
}

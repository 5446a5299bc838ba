//! The rows message of a pipeline: slots and hidden states, the states as f32 (exact), f16
//! (half the bytes) or int8 with one f32 absmax scale per row (a quarter, plus 4 bytes a row),
//! for slow links. Layout: `ROWS`, the element type (0 f32, 1 f16, 2 int8), the row count n
//! (u32), n slots (u32), then the rows, little-endian. Parsing checks every length first.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// The rows message's kind byte.
pub(crate) const ROWS: u8 = 1;

/// How hidden states travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WireDtype {
    /// 4 bytes a value: the pipeline computes exactly what one node computes.
    #[default]
    F32,
    /// 2 bytes a value.
    F16,
    /// 1 byte a value and an f32 scale a row (absmax / 127, round to nearest).
    Q8,
}

impl WireDtype {
    /// Parses `f32`, `f16` or `q8` (also `int8`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(WireDtype::F32),
            "f16" => Some(WireDtype::F16),
            "q8" | "int8" => Some(WireDtype::Q8),
            _ => None,
        }
    }

    /// Bytes of one value on the wire, as the planner prices it (int8's scale, 4 bytes a row,
    /// left out).
    pub fn value_bytes(self) -> f64 {
        match self {
            WireDtype::F32 => 4.0,
            WireDtype::F16 => 2.0,
            WireDtype::Q8 => 1.0,
        }
    }

    /// The name [`WireDtype::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            WireDtype::F32 => "f32",
            WireDtype::F16 => "f16",
            WireDtype::Q8 => "q8",
        }
    }

    /// The byte that names this type on the wire.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The type a [`WireDtype::code`] byte names.
    pub(crate) fn from_code(b: u8) -> Option<Self> {
        match b {
            0 => Some(WireDtype::F32),
            1 => Some(WireDtype::F16),
            2 => Some(WireDtype::Q8),
            _ => None,
        }
    }

    fn row_bytes(self, hidden: usize) -> Option<usize> {
        match self {
            WireDtype::F32 => hidden.checked_mul(4),
            WireDtype::F16 => hidden.checked_mul(2),
            WireDtype::Q8 => hidden.checked_add(4),
        }
    }
}

/// Writes a rows message for `slots` and their `hidden` states (whole rows of equal width).
pub(crate) fn put_rows(out: &mut Vec<u8>, slots: &[usize], hidden: &[f32], dtype: WireDtype) {
    out.clear();
    out.extend([ROWS, dtype.code()]);
    out.extend((slots.len() as u32).to_le_bytes());
    for &s in slots {
        out.extend((s as u32).to_le_bytes());
    }
    put_values(out, slots.len(), hidden, dtype);
}

/// Parses a rows message for rows of `hidden` values into `slots` and `x`; returns the element
/// type it came in.
pub(crate) fn get_rows(
    b: &[u8],
    hidden: usize,
    slots: &mut Vec<usize>,
    x: &mut Vec<f32>,
) -> Result<WireDtype, String> {
    let dtype = b
        .get(1)
        .and_then(|&c| WireDtype::from_code(c))
        .ok_or("unknown element type in a rows message")?;
    let word = |at: usize| -> Result<u32, String> {
        let s = b.get(at..at + 4).ok_or("truncated rows message")?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let n = word(2)? as usize;
    let row = dtype.row_bytes(hidden).ok_or("row width overflows")?;
    let want =
        n.checked_mul(4 + row).and_then(|v| v.checked_add(6)).ok_or("row count overflows")?;
    if b.len() != want {
        return Err(format!("{} bytes for {n} rows of {hidden} (expected {want})", b.len()));
    }
    slots.clear();
    for i in 0..n {
        slots.push(word(6 + 4 * i)? as usize);
    }
    x.clear();
    x.resize(n * hidden, 0.0);
    get_values(&b[6 + 4 * n..], (n, hidden), dtype, x, (hidden, 0))?;
    // A stage fed a NaN would pass it on as logits.
    if first_non_finite(x).is_some() {
        return Err(format!("{} in the rows", non_finite(dtype)));
    }
    Ok(dtype)
}

/// Appends `values` (`rows` rows of equal width) in `dtype`, without a header: a piece of a
/// tensor-parallel gather.
pub(crate) fn put_values(out: &mut Vec<u8>, rows: usize, values: &[f32], dtype: WireDtype) {
    match dtype {
        // A tensor-parallel node sends ~100 of these a token (58 kB each at 8 rows): one
        // copy, not a push per value (that ran at ~3 GB/s, 17 us a piece).
        WireDtype::F32 if cfg!(target_endian = "little") => {
            out.extend_from_slice(bytemuck::cast_slice(values))
        }
        WireDtype::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        WireDtype::F16 => {
            // Through a block on the stack so `half` converts whole slices (F16C where the
            // CPU has it) rather than a value at a time.
            let mut block = [f16::ZERO; BLOCK];
            for c in values.chunks(BLOCK) {
                let b = &mut block[..c.len()];
                b.convert_from_f32_slice(c);
                if cfg!(target_endian = "little") {
                    out.extend_from_slice(bytemuck::cast_slice(b));
                } else {
                    b.iter().for_each(|v| out.extend(v.to_le_bytes()));
                }
            }
        }
        WireDtype::Q8 => {
            let width = values.len() / rows.max(1);
            for row in values.chunks_exact(width.max(1)) {
                put_q8_row(out, row);
            }
        }
    }
}

/// Values converted per block between f32 and f16.
const BLOCK: usize = 256;

/// One int8 row: the scale (absmax / 127; NaN where the row holds a NaN or an infinity, so
/// the receiver's check names the node), then each value / scale rounded half away from
/// zero. Written as loops the compiler vectorizes: a node of a tensor-parallel mesh puts
/// a hundred of these a token, and a rounding call per value cost ~40 us a piece at 8 rows.
/// Not the kernels' `quantize_row`: that one floors the absmax at 1e-5 (a row of smaller
/// values would arrive as zeros) and rounds half to even, and the wire's codes predate it.
fn put_q8_row(out: &mut Vec<u8>, row: &[f32]) {
    let mut lanes = [0f32; 8];
    let mut bad = 0u32;
    let chunks = row.chunks_exact(8);
    for &v in chunks.remainder() {
        lanes[0] = if v.abs() > lanes[0] { v.abs() } else { lanes[0] };
        bad |= u32::from(v.to_bits() & INF == INF);
    }
    for c in chunks {
        for i in 0..8 {
            let a = c[i].abs();
            lanes[i] = if a > lanes[i] { a } else { lanes[i] };
            bad |= u32::from(c[i].to_bits() & INF == INF);
        }
    }
    let max = lanes.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    let scale = if bad != 0 { f32::NAN } else { max / 127.0 };
    out.extend(scale.to_le_bytes());
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let at = out.len();
    out.resize(at + row.len(), 0);
    for (d, &v) in out[at..].iter_mut().zip(row) {
        *d = round_q8(v * inv) as u8;
    }
}

/// `y.round().clamp(-127, 127)` as an int8 (NaN: 0), in operations that vectorize without
/// SSE4.1: truncate, then step away from zero where the dropped fraction is at least half.
#[inline(always)]
fn round_q8(y: f32) -> i8 {
    let y = if y.is_nan() { 0.0 } else { y.clamp(-127.0, 127.0) };
    let t = y as i32;
    let frac = y - t as f32;
    (t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)) as i8
}

/// An f32's exponent bits: all set in infinities and NaNs.
const INF: u32 = 0x7f80_0000;

/// Where `x` first holds a NaN or an infinity: one pass the compiler vectorizes (every gather
/// and rows message is checked), then a search only when there is one.
pub(crate) fn first_non_finite(x: &[f32]) -> Option<usize> {
    let bad = x.iter().fold(false, |b, v| b | (v.to_bits() & INF == INF));
    if bad {
        x.iter().position(|v| !v.is_finite())
    } else {
        None
    }
}

/// What a received NaN or infinity is called, with the likely cause where the wire is f16.
pub(crate) fn non_finite(dtype: WireDtype) -> &'static str {
    match dtype {
        WireDtype::F16 => "a NaN or infinite value (f16 holds at most 65504: try --wire q8 or f32)",
        _ => "a NaN or infinite value",
    }
}

/// Bytes [`put_values`] writes for `rows` rows of `width`.
pub(crate) fn values_len(rows: usize, width: usize, dtype: WireDtype) -> Option<usize> {
    dtype.row_bytes(width)?.checked_mul(rows)
}

/// Reads [`put_values`]' bytes for `rows` rows of `width` into `full`, row t at
/// `t * stride + offset`; the bytes' length must be exact.
pub(crate) fn get_values(
    b: &[u8],
    (rows, width): (usize, usize),
    dtype: WireDtype,
    full: &mut [f32],
    (stride, offset): (usize, usize),
) -> Result<(), String> {
    let each = dtype.row_bytes(width).ok_or("row width overflows")?;
    if Some(b.len()) != values_len(rows, width, dtype) {
        return Err(format!("{} bytes for {rows} rows of {width} ({dtype:?})", b.len()));
    }
    if rows > 0 && (rows - 1) * stride + offset + width > full.len() {
        return Err(format!("{rows} rows of {width} do not fit the gather"));
    }
    for (t, r) in b.chunks_exact(each.max(1)).enumerate().take(rows) {
        let dst = &mut full[t * stride + offset..t * stride + offset + width];
        match dtype {
            WireDtype::F32 => {
                // The bytes are read as they are where the machine is little-endian and
                // the row starts on a 4-byte boundary (as a Vec's rows do): one copy.
                if cfg!(target_endian = "little") {
                    if let Ok(v) = bytemuck::try_cast_slice::<u8, f32>(r) {
                        dst.copy_from_slice(v);
                        continue;
                    }
                }
                for (d, c) in dst.iter_mut().zip(r.chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            WireDtype::F16 => {
                let mut block = [f16::ZERO; BLOCK];
                for (d, c) in dst.chunks_mut(BLOCK).zip(r.chunks(2 * BLOCK)) {
                    let b = &mut block[..d.len()];
                    match bytemuck::try_cast_slice::<u8, f16>(c) {
                        Ok(v) if cfg!(target_endian = "little") => b.copy_from_slice(v),
                        _ => b.iter_mut().zip(c.chunks_exact(2)).for_each(|(h, c)| {
                            *h = f16::from_le_bytes([c[0], c[1]]);
                        }),
                    }
                    b.convert_to_f32_slice(d);
                }
            }
            WireDtype::Q8 => {
                let scale = f32::from_le_bytes([r[0], r[1], r[2], r[3]]);
                for (d, &q) in dst.iter_mut().zip(&r[4..]) {
                    *d = q as i8 as f32 * scale;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rows_round_trip_in_every_type() {
        let h = [1.0, -2.5, 3.0, 0.0, 1e-3, -127.0];
        for (dtype, tol) in [(WireDtype::F32, 0.0), (WireDtype::F16, 1e-3), (WireDtype::Q8, 0.5)] {
            let mut out = Vec::new();
            put_rows(&mut out, &[3, 1], &h, dtype);
            let (mut s, mut x) = (Vec::new(), Vec::new());
            assert_eq!(get_rows(&out, 3, &mut s, &mut x), Ok(dtype));
            assert_eq!(s, vec![3, 1]);
            for (a, b) in x.iter().zip(h) {
                assert!((a - b).abs() <= tol * b.abs().max(1.0), "{dtype:?}: {a} for {b}");
            }
            assert!(get_rows(&out, 2, &mut s, &mut x).is_err());
            assert!(get_rows(&out[..out.len() - 1], 3, &mut s, &mut x).is_err());
        }
        // Hand-computed int8 bytes: absmax 4 → scale 4/127; 2.0 → round(63.5) = 64.
        let mut out = Vec::new();
        put_rows(&mut out, &[0], &[4.0, -2.0, 2.0, 0.0], WireDtype::Q8);
        assert_eq!(&out[14..], &[127u8, (-64i8) as u8, 64, 0]);
        assert_eq!(&out[10..14], &(4.0f32 / 127.0).to_le_bytes());
    }

    #[test]
    fn pieces_round_trip_and_refuse_wrong_lengths() {
        let v = [1.0, -2.5, 3.0, 0.0, 1e-3, -127.0];
        for (dtype, tol) in [(WireDtype::F32, 0.0), (WireDtype::F16, 1e-3), (WireDtype::Q8, 0.5)] {
            let mut out = Vec::new();
            put_values(&mut out, 2, &v, dtype);
            assert_eq!(Some(out.len()), values_len(2, 3, dtype));
            // Two rows of 3 into rows of 4 at offset 1.
            let mut x = [9f32; 8];
            get_values(&out, (2, 3), dtype, &mut x, (4, 1)).unwrap();
            assert_eq!((x[0], x[4]), (9.0, 9.0));
            let x: Vec<f32> = [&x[1..4], &x[5..8]].concat();
            for (a, b) in x.iter().zip(v) {
                assert!((a - b).abs() <= tol * b.abs().max(1.0), "{dtype:?}: {a} for {b}");
            }
            let mut y = [0f32; 8];
            assert!(get_values(&out[1..], (2, 3), dtype, &mut y, (4, 1)).is_err());
            assert!(get_values(&out, (2, 3), dtype, &mut y, (4, 2)).is_err());
        }
    }

    #[test]
    fn f32_pieces_read_alike_from_aligned_and_unaligned_bytes() {
        let v = [1.5, -0.0, f32::MIN_POSITIVE / 4.0, -3e38, 7.25, 1e-3];
        let mut out = Vec::new();
        put_values(&mut out, 2, &v, WireDtype::F32);
        let want: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(out, want);
        // The same bytes one past a 4-byte boundary take the value-by-value path.
        let mut shifted = vec![0u8; out.len() + 1];
        shifted[1..].copy_from_slice(&out);
        let (mut a, mut b) = ([0f32; 6], [0f32; 6]);
        get_values(&out, (2, 3), WireDtype::F32, &mut a, (3, 0)).unwrap();
        get_values(&shifted[1..], (2, 3), WireDtype::F32, &mut b, (3, 0)).unwrap();
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&v));
        assert_eq!(bits(&b), bits(&v));
    }

    /// The definition [`put_values`] keeps: one value at a time, as the wire was first written.
    fn put_one_by_one(out: &mut Vec<u8>, rows: usize, values: &[f32], dtype: WireDtype) {
        let width = values.len() / rows.max(1);
        match dtype {
            WireDtype::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
            WireDtype::F16 => {
                values.iter().for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes()))
            }
            WireDtype::Q8 => {
                for row in values.chunks_exact(width.max(1)) {
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale =
                        if row.iter().all(|v| v.is_finite()) { max / 127.0 } else { f32::NAN };
                    out.extend(scale.to_le_bytes());
                    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                    out.extend(
                        row.iter().map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8),
                    );
                }
            }
        }
    }

    #[test]
    fn q8_rounds_ties_away_from_zero_like_f32_round() {
        let ties = [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.5, -127.5, 200.0, -1e30];
        let near = [0.49999997f32, -0.49999997, 0.50000006, 1.4999999, -1.4999999, 0.0, -0.0];
        for y in ties.into_iter().chain(near) {
            assert_eq!(round_q8(y), y.round().clamp(-127.0, 127.0) as i8, "{y}");
        }
        assert_eq!(round_q8(f32::NAN), 0);
    }

    #[test]
    fn a_rows_message_holding_a_nan_or_infinity_is_refused() {
        for dtype in [WireDtype::F32, WireDtype::F16, WireDtype::Q8] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut h = [0.5f32; 6];
                h[4] = bad;
                let mut out = Vec::new();
                put_rows(&mut out, &[0, 1], &h, dtype);
                let e = get_rows(&out, 3, &mut Vec::new(), &mut Vec::new()).unwrap_err();
                assert!(e.contains("NaN or infinite"), "{dtype:?} {bad}: {e}");
            }
        }
    }

    #[test]
    fn a_row_with_a_nan_or_infinity_arrives_as_nans() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = vec![0.25f32; 20];
            v[13] = bad;
            let mut out = Vec::new();
            put_values(&mut out, 2, &v, WireDtype::Q8);
            let mut x = [0f32; 20];
            get_values(&out, (2, 10), WireDtype::Q8, &mut x, (10, 0)).unwrap();
            assert!(x[..10].iter().all(|v| *v == 0.25f32 / (0.25 / 127.0) * (0.25 / 127.0)));
            assert!(x[10..].iter().all(|v| v.is_nan()), "{bad}: {x:?}");
        }
    }

    proptest! {
        /// Rows longer than a conversion block, ragged widths, values over many binades: the
        /// sliced f16 and vectorized int8 writers give the one-value-at-a-time bytes, and the
        /// f16 reader gives the same values from aligned and unaligned bytes.
        #[test]
        fn block_writers_equal_the_value_by_value_definition(
            rows in 1usize..4,
            width in 1usize..700,
            seed in any::<u64>(),
        ) {
            let mut s = seed | 1;
            let v: Vec<f32> = (0..rows * width).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                let m = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                m * 2f32.powi((s % 40) as i32 - 20)
            }).collect();
            for dtype in [WireDtype::F32, WireDtype::F16, WireDtype::Q8] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                put_values(&mut a, rows, &v, dtype);
                put_one_by_one(&mut b, rows, &v, dtype);
                prop_assert_eq!(&a, &b, "{:?}", dtype);
                let mut shifted = vec![0u8; a.len() + 1];
                shifted[1..].copy_from_slice(&a);
                let (mut x, mut y) = (vec![0f32; v.len()], vec![0f32; v.len()]);
                get_values(&a, (rows, width), dtype, &mut x, (width, 0)).unwrap();
                get_values(&shifted[1..], (rows, width), dtype, &mut y, (width, 0)).unwrap();
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&x), bits(&y));
                if dtype == WireDtype::F16 {
                    let want: Vec<f32> = v.iter().map(|f| f16::from_f32(*f).to_f32()).collect();
                    prop_assert_eq!(bits(&x), bits(&want));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn malformed_rows_are_errors_not_panics(b in proptest::collection::vec(any::<u8>(), 0..64), h in 0usize..8) {
            let _ = get_rows(&b, h, &mut Vec::new(), &mut Vec::new());
        }
    }
}

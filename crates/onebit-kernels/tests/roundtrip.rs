//! Pack/unpack round trips for every layout, conversions between all pairs, and hostile
//! bytes (bad lengths, impossible codes) rejected with errors.

use onebit_kernels::{Error, TernaryFormat, TernaryMatrix};
use proptest::prelude::*;

/// `n` trits from an xorshift stream seeded by `seed`.
fn random_trits(n: usize, seed: u64) -> Vec<i8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 3) as i8 - 1
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn every_layout_round_trips(rows in 1usize..20, cols in 1usize..700, seed: u64, scale in 0.001f32..10.0) {
        for format in TernaryFormat::ALL {
            let (rows, cols) = format.fit_shape(rows, cols);
            let trits = random_trits(rows * cols, seed);
            let m = TernaryMatrix::from_trits(format, rows, cols, &trits, scale).unwrap();
            prop_assert_eq!(m.to_trits(), trits.clone());
            let scale_kept = format.stored_scale(scale);
            let back = TernaryMatrix::from_bytes(format, rows, cols, m.bytes().to_vec(), Some(scale)).unwrap();
            prop_assert_eq!(back.to_trits(), trits.clone());
            prop_assert_eq!(back.scale(), scale_kept);
            for to in TernaryFormat::ALL {
                if to.fit_shape(rows, cols) == (rows, cols) {
                    let r = m.repack(to).unwrap();
                    prop_assert_eq!(r.to_trits(), trits.clone());
                    let rr = r.repack(format).unwrap();
                    prop_assert_eq!(rr.bytes(), m.bytes());
                }
            }
        }
    }

    #[test]
    fn selected_rows_are_the_rows(rows in 1usize..20, cols in 1usize..700, seed: u64, a in 0usize..20, len in 1usize..20) {
        for format in TernaryFormat::ALL {
            let (rows, cols) = format.fit_shape(rows, cols);
            let trits = random_trits(rows * cols, seed);
            let m = TernaryMatrix::from_trits(format, rows, cols, &trits, 0.5).unwrap();
            let (a, b) = (a % rows, (a % rows + len).min(rows));
            if format.packed_len(b - a, cols).is_err() {
                prop_assert!(m.select_rows(a..b).is_err());
                continue;
            }
            let part = m.select_rows(a..b).unwrap();
            prop_assert_eq!(part.to_trits(), trits[a * cols..b * cols].to_vec());
            prop_assert_eq!((part.rows(), part.cols(), part.scale(), part.format()), (b - a, cols, m.scale(), format));
            prop_assert!(m.select_rows(b..b).is_err());
            prop_assert!(m.select_rows(a..rows + 1).is_err());
        }
    }

    #[test]
    fn selected_cols_are_the_cols(rows in 1usize..20, cols in 1usize..700, seed: u64, a in 0usize..700, len in 1usize..700) {
        for format in TernaryFormat::ALL {
            let (rows, cols) = format.fit_shape(rows, cols);
            let trits = random_trits(rows * cols, seed);
            let m = TernaryMatrix::from_trits(format, rows, cols, &trits, 0.5).unwrap();
            let (a, b) = (a % cols, (a % cols + len).min(cols));
            let want: Vec<i8> = trits.chunks_exact(cols).flat_map(|r| r[a..b].to_vec()).collect();
            match m.select_cols(a..b) {
                // Layouts with whole blocks along a row (TQ1_0, TQ2_0, I2_S, ...) refuse a
                // cut that is not a whole number of them, as from_trits does.
                Err(_) => prop_assert!(format.packed_len(rows, b - a).is_err()),
                Ok(part) => {
                    prop_assert_eq!(part.to_trits(), want);
                    prop_assert_eq!((part.rows(), part.cols(), part.scale(), part.format()), (rows, b - a, m.scale(), format));
                }
            }
            prop_assert!(m.select_cols(b..b).is_err());
            prop_assert!(m.select_cols(a..cols + 1).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(format_i in 0usize..TernaryFormat::ALL.len(), rows in 1usize..5, cols in 1usize..600, bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let format = TernaryFormat::ALL[format_i];
        let _ = TernaryMatrix::from_bytes(format, rows, cols, bytes.clone(), Some(1.0));
        if let Ok(len) = format.packed_len(rows, cols) {
            let mut b = bytes;
            b.resize(len, 0x55);
            if let Ok(m) = TernaryMatrix::from_bytes(format, rows, cols, b, Some(1.0)) {
                prop_assert!(m.to_trits().iter().all(|t| (-1..=1).contains(t)));
            }
        }
    }
}

#[test]
fn hostile_bytes_are_errors() {
    use TernaryFormat::*;
    let e = TernaryMatrix::from_bytes(T2, 1, 256, vec![0x55; 63], Some(1.0)).unwrap_err();
    assert!(matches!(e, Error::BadLength { expected: 64, found: 63, .. }), "{e}");
    let mut b = vec![0x55; 64];
    b[10] = 0xFF;
    let e = TernaryMatrix::from_bytes(T2, 1, 256, b, Some(1.0)).unwrap_err();
    assert!(matches!(e, Error::BadCode { byte: 10, .. }), "{e}");
    let mut b = vec![128u8; 64];
    b[5] = 237; // no base-3 group encodes to 237 (242 -> 255, 237 is skipped)
    let e = TernaryMatrix::from_bytes(B3, 1, 320, b, Some(1.0)).unwrap_err();
    assert!(matches!(e, Error::BadTritByte { byte: 5, value: 237, .. }), "{e}");
    let e = TernaryMatrix::from_bytes(Lut, 1, 2, vec![0x9F; 16], Some(1.0)).unwrap_err();
    assert!(matches!(e, Error::BadCode { .. }), "{e}");
    let mut b = vec![0x55u8; 64];
    b[32..36].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = TernaryMatrix::from_bytes(I2S, 1, 128, b, None).unwrap_err();
    assert!(matches!(e, Error::BadScale(_)), "{e}");
    let mut b = vec![0x55u8; 66];
    b[64..66].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    assert!(TernaryMatrix::from_bytes(Tq2_0, 1, 256, b, None).is_err());
    assert!(TernaryMatrix::from_bytes(HfPacked, 3, 4, vec![0x55; 3], Some(1.0)).is_err());
    assert!(TernaryMatrix::from_bytes(Tq1_0, 1, 100, vec![0; 54], None).is_err());
    assert!(TernaryMatrix::from_bytes(T2, 1, 256, vec![0x55; 64], None).is_err());
    assert!(TernaryMatrix::from_trits(T2, 1, 2, &[2, 0], 1.0).is_err());
    assert!(TernaryMatrix::from_trits(T2, 0, 2, &[], 1.0).is_err());
}

#[test]
fn tq_blocks_with_different_scales_do_not_convert() {
    let m = TernaryMatrix::from_trits(TernaryFormat::Tq2_0, 1, 512, &[1; 512], 1.0).unwrap();
    let mut b = m.bytes().to_vec();
    b[66 + 64..66 + 66].copy_from_slice(&half::f16::from_f32(2.0).to_le_bytes());
    let m = TernaryMatrix::from_bytes(TernaryFormat::Tq2_0, 1, 512, b, None).unwrap();
    assert!(matches!(m.repack(TernaryFormat::T2), Err(Error::Lossy { .. })));
}

#[test]
fn iq_rows_with_scale_zero_are_zero_and_mixed_rows_do_not_convert() {
    use TernaryFormat::{Iq1Bn, Iq2Bn};
    for format in [Iq2Bn, Iq1Bn] {
        let mut t = vec![1i8; 3 * 64];
        t[64..128].fill(0);
        let m = TernaryMatrix::from_trits(format, 3, 64, &t, 0.5).unwrap();
        // ik_llama.cpp's quantizer writes code 2 (+1) all over a row whose absmax is 0.
        let mut b = m.bytes().to_vec();
        let rb = b.len() / 3;
        let codes_at = if format == Iq2Bn { 4 } else { 2 };
        let plus = if format == Iq2Bn { 0xAA } else { 255 };
        b[rb + codes_at..2 * rb].fill(plus);
        let m = TernaryMatrix::from_bytes(format, 3, 64, b.clone(), None).unwrap();
        assert_eq!(m.to_trits(), t, "{format:?}");
        assert_eq!(m.scale(), 0.5);
        assert_eq!(m.repack(TernaryFormat::T2).unwrap().to_trits(), t);
        // A row with its own scale is not one multiplier per tensor.
        if format == Iq2Bn {
            b[2 * rb..2 * rb + 4].copy_from_slice(&0.25f32.to_le_bytes());
        } else {
            b[2 * rb..2 * rb + 2].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        }
        let m = TernaryMatrix::from_bytes(format, 3, 64, b, None).unwrap();
        assert!(matches!(m.repack(TernaryFormat::T2), Err(Error::Lossy { .. })), "{format:?}");
    }
}

#[test]
fn zero_tq_blocks_do_not_set_the_scale() {
    // llama.cpp's quantizer stores d = 0 for an all-zero block.
    let mut t = vec![0i8; 512];
    t[300] = -1;
    let m = TernaryMatrix::from_trits(TernaryFormat::Tq2_0, 1, 512, &t, 2.0).unwrap();
    let mut b = m.bytes().to_vec();
    b[64..66].copy_from_slice(&[0, 0]);
    let m = TernaryMatrix::from_bytes(TernaryFormat::Tq2_0, 1, 512, b, None).unwrap();
    assert_eq!(m.scale(), 2.0);
    assert_eq!(m.repack(TernaryFormat::T2).unwrap().to_trits(), t);
}

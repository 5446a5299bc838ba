//! Packed bytes checked against examples computed by hand from each layout's definition
//! (bitnet.cpp's quantize_i2_s, ggml's quantize_row_tq*_ref,
//! transformers' pack_weights).

use onebit_kernels::{TernaryFormat, TernaryMatrix};

fn packed(
    format: TernaryFormat,
    rows: usize,
    cols: usize,
    set: &[(usize, i8)],
    scale: f32,
) -> Vec<u8> {
    let mut t = vec![0i8; rows * cols];
    for &(i, v) in set {
        t[i] = v;
    }
    let m = TernaryMatrix::from_trits(format, rows, cols, &t, scale).unwrap();
    assert_eq!(m.to_trits(), t);
    m.bytes().to_vec()
}

#[test]
fn i2s_block_and_scale_tail() {
    // byte 0 = code(e0)<<6 | code(e32)<<4 | code(e64)<<2 | code(e96) = 2<<6 | 0<<4 | 1<<2 | 2.
    let b = packed(TernaryFormat::I2S, 1, 128, &[(0, 1), (32, -1), (96, 1)], 0.5);
    assert_eq!(b.len(), 128 / 4 + 32);
    assert_eq!(b[0], 0x86);
    assert!(b[1..32].iter().all(|&v| v == 0x55));
    assert_eq!(&b[32..36], &0.5f32.to_le_bytes());
    assert!(b[36..].iter().all(|&v| v == 0));
}

#[test]
fn tq2_block() {
    // qs[0]: e0 | e32<<2 | e64<<4 | e96<<6 = 2 | 0 | 1<<4 | 1<<6 = 0x52
    // qs[32]: e128 | e160<<2 | e192<<4 | e224<<6 = 0 | 4 | 16 | 64 = 0x54
    // qs[63]: e159 | e191<<2 | e223<<4 | e255<<6 = 1 | 4 | 16 | 2<<6 = 0x95
    let b = packed(TernaryFormat::Tq2_0, 1, 256, &[(0, 1), (32, -1), (128, -1), (255, 1)], 1.0);
    assert_eq!(b.len(), 66);
    assert_eq!((b[0], b[32], b[63]), (0x52, 0x54, 0x95));
    assert_eq!(b[1], 0x55);
    assert_eq!(&b[64..66], &[0x00, 0x3C]); // f16 1.0
}

#[test]
fn tq1_block() {
    // qs[0] codes (2,0,1,1,1): v = 162+0+9+3+1 = 175 -> ceil(175*256/243) = 185.
    // plain zero byte (1,1,1,1,1): v = 121 -> 128.  qs[32] codes (0,1,1,1,1): v = 40 -> 43.
    // qh[0] codes (2,1,1,1)+shift: v = 67*3 = 201 -> 212;  other qh: 40*3 = 120 -> 127.
    let b = packed(TernaryFormat::Tq1_0, 1, 256, &[(0, 1), (32, -1), (160, -1), (240, 1)], 2.0);
    assert_eq!(b.len(), 54);
    assert_eq!(b[0], 185);
    assert_eq!(b[1], 128);
    assert_eq!(b[32], 43);
    assert_eq!(b[48], 212);
    assert_eq!(&b[49..52], &[127, 127, 127]);
    assert_eq!(&b[52..54], &[0x00, 0x40]); // f16 2.0
}

#[test]
fn hf_packs_four_row_blocks() {
    // R = rows/4 = 1: byte k holds rows 0..4 of column k in bits [1:0],[3:2],[5:4],[7:6].
    // col 0 codes (2,0,1,2) -> 2 | 1<<4 | 2<<6 = 146; col 1 codes (1,1,2,0) -> 1 | 1<<2 | 2<<4 = 37.
    let b = packed(TernaryFormat::HfPacked, 4, 2, &[(0, 1), (2, -1), (5, 1), (6, 1), (7, -1)], 1.0);
    assert_eq!(b, vec![146, 37]);
    // R = 2: byte [r, k] holds rows r, r+2, r+4, r+6; +1 at row 5, col 0 -> byte [1,0] bits [5:4].
    let b = packed(TernaryFormat::HfPacked, 8, 1, &[(5, 1)], 1.0);
    assert_eq!(b, vec![0x55, 0x55 ^ (0b11 << 4)]);
}

#[test]
fn t2_block_and_padding() {
    // byte 0: e0 | e64<<2 | e128<<4 | e192<<6 = 2 | 0 | 1<<4 | 1<<6 = 0x52.
    let b = packed(TernaryFormat::T2, 1, 256, &[(0, 1), (64, -1)], 1.0);
    assert_eq!(b.len(), 64);
    assert_eq!(b[0], 0x52);
    assert!(b[1..].iter().all(|&v| v == 0x55));
    // 3 columns: one block, pads are code 1.
    let b = packed(TernaryFormat::T2, 2, 3, &[(0, -1)], 1.0);
    assert_eq!(b.len(), 128);
    assert_eq!(b[0], 0x54);
}

#[test]
fn b3_block() {
    // byte 0 holds e0, e64, e128, e192, e256 (first most significant), TQ1_0 encoding.
    // codes (2,0,1,1,1) -> 185 as in tq1_block; a 330-column row takes two blocks.
    let b = packed(TernaryFormat::B3, 1, 330, &[(0, 1), (64, -1)], 1.0);
    assert_eq!(b.len(), 128);
    assert_eq!(b[0], 185);
    assert!(b[1..].iter().all(|&v| v == 128));
}

#[test]
fn lut_tile() {
    // byte j of pair g: row j low nibble, row j+16 high; index = 3(w0+1) + (w1+1).
    // row 0: (+1, -1) -> 6; row 16: (-1, +1) -> 2; zero pairs -> 4; padding rows -> 4.
    let cols = 2;
    let b = packed(TernaryFormat::Lut, 17, cols, &[(0, 1), (1, -1), (32, -1), (33, 1)], 1.0);
    assert_eq!(b.len(), 16);
    assert_eq!(b[0], 6 | (2 << 4));
    assert!(b[1..].iter().all(|&v| v == 0x44));
}

#[test]
fn bits_per_weight() {
    let m = |f| {
        TernaryMatrix::from_trits(f, 256, 2560, &vec![0; 256 * 2560], 1.0)
            .unwrap()
            .bits_per_weight()
    };
    assert_eq!(m(TernaryFormat::Tq2_0), 2.0625);
    assert_eq!(m(TernaryFormat::Tq1_0), 1.6875);
    assert_eq!(m(TernaryFormat::B3), 1.6);
    assert_eq!(m(TernaryFormat::T2), 2.0);
}

#[test]
fn iq2_bn_row() {
    // ik_llama.cpp IQ2_BN: f32 row scale, then byte j = e_j | e_{16+j}<<2 | e_{32+j}<<4 | e_{48+j}<<6.
    // byte 0: codes (2, 0, 1, 1) = 2 | 0 | 1<<4 | 1<<6 = 0x52; byte 15: (1, 1, 1, 2) = 0x95.
    let b = packed(TernaryFormat::Iq2Bn, 1, 64, &[(0, 1), (16, -1), (63, 1)], 0.75);
    assert_eq!(b.len(), 4 + 16);
    assert_eq!(&b[..4], &0.75f32.to_le_bytes());
    assert_eq!((b[4], b[5], b[19]), (0x52, 0x55, 0x95));
}

#[test]
fn iq1_bn_block() {
    // ik_llama.cpp IQ1_BN: f16 row scale, then per 16-group g three bytes of five digits
    // (element 16g + 5k + j is digit j, least significant first) and a 13th byte with element
    // 16g + 15 as digit g; bytes store ceil(256·v/243).
    // byte 0 digits (2, 0, 1, 1, 1): v = 2 + 0 + 9 + 27 + 81 = 119 -> ceil(119·256/243) = 126.
    // zero byte (1, 1, 1, 1, 1): v = 121 -> 128.  extra digits (0, 1, 1, 2): v = 0+3+9+54 = 66 -> 70.
    let b = packed(TernaryFormat::Iq1Bn, 1, 64, &[(0, 1), (1, -1), (15, -1), (63, 1)], 1.0);
    assert_eq!(b.len(), 2 + 13);
    assert_eq!(&b[..2], &[0x00, 0x3C]);
    assert_eq!((b[2], b[3], b[14]), (126, 128, 70));
}

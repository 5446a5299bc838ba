//! The wire format of [`crate::TcpComm`]. On the socket, every Noise message travels as a
//! big-endian `u16` length and that many bytes (the Noise limit is 65,535). A frame — one
//! [`crate::Comm::send`] — is one or more Noise messages whose plaintexts join into an 8-byte
//! header (`b"OB"`, protocol version `u16`, payload length `u32`, little-endian) and the
//! payload. The receiver checks the header of the first message before it allocates anything.

/// Protocol version; a peer speaking another one is refused (2: the pipeline's link-by-link
/// element types, `crate::stage_wires`; 3: AES-GCM in place of ChaCha20-Poly1305, so a node
/// of version 2 already fails the handshake; 4: a tensor split's first boundaries count
/// query heads, not KV heads; 5: the plan job's context and the node measure's context
/// shares).
pub const VERSION: u16 = 6;
/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"OB";
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 8;
/// The largest Noise message.
pub const NOISE_MAX: usize = 65_535;
/// The AEAD tag each Noise transport message carries.
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per Noise message.
pub const CHUNK: usize = NOISE_MAX - TAG_LEN;

/// The header of a frame carrying `len` payload bytes.
pub fn encode_header(len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..2].copy_from_slice(&MAGIC);
    h[2..4].copy_from_slice(&VERSION.to_le_bytes());
    h[4..].copy_from_slice(&len.to_le_bytes());
    h
}

/// The payload length a header announces, checked against the protocol and `max` bytes.
pub fn decode_header(h: &[u8], max: usize) -> Result<usize, String> {
    if h.len() < HEADER_LEN {
        return Err(format!("{} bytes where an 8-byte header belongs", h.len()));
    }
    if h[..2] != MAGIC {
        return Err(format!("magic {:02x}{:02x} is not a onebit frame", h[0], h[1]));
    }
    let version = u16::from_le_bytes([h[2], h[3]]);
    if version != VERSION {
        return Err(format!("protocol version {version}, this node speaks {VERSION}"));
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > max {
        return Err(format!("a frame of {len} bytes exceeds the limit of {max}"));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_bytes_are_as_documented() {
        assert_eq!(encode_header(0x0102_0304), [b'O', b'B', 6, 0, 4, 3, 2, 1]);
        assert_eq!(decode_header(&encode_header(77), 100), Ok(77));
        assert!(decode_header(&encode_header(101), 100).unwrap_err().contains("exceeds"));
        assert!(decode_header(&[b'O', b'B', 1, 0, 0, 0, 0, 0], 9)
            .unwrap_err()
            .contains("version 1"));
        assert!(decode_header(b"GET / HTTP", 9).unwrap_err().contains("not a onebit frame"));
        assert!(decode_header(b"OB", 9).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_length_within_the_limit_or_an_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..16), max in 0usize..1 << 20
        ) {
            if let Ok(n) = decode_header(&bytes, max) {
                prop_assert!(n <= max);
            }
        }
    }
}

//! Pre-shared keys: 32 random bytes written as 64 hex characters in a key file that every
//! node of a mesh holds.

use crate::error::{DistError, Result};

/// Reads a key file: 64 hex characters (surrounding white space ignored).
pub fn read_key_file(path: &str) -> Result<[u8; 32]> {
    let bad = |why: String| DistError::Key { path: path.into(), why };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse_key(text.trim()).map_err(bad)
}

/// Parses 64 hex characters into a key.
pub fn parse_key(hex: &str) -> std::result::Result<[u8; 32], String> {
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(format!("expected 64 hex characters, found {}", hex.chars().count()));
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("'{}' is not hex", &hex[2 * i..2 * i + 2]))?;
    }
    Ok(key)
}

/// A key as 64 hex characters (what `onebit worker --new-key` would write).
pub fn key_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_ones_are_refused() {
        let k: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(parse_key(&key_hex(&k)).unwrap(), k);
        assert!(parse_key("00").is_err());
        assert!(parse_key(&"zz".repeat(32)).is_err());
        assert!(parse_key(&"é".repeat(32)).is_err());
    }
}

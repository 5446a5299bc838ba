//! The head's commands to the workers of a tensor-parallel mesh ([`crate::tensor`]), one
//! frame each: kind (1 byte), then for [`PREFILL`] a slot and a token count (u32 each) and the
//! tokens (u32 each); for [`ROWS`] a row count, the tokens and the slots (u32 each) and one
//! byte per row, 1 where its logits are wanted; for `RESET` a slot, for `TRUNCATE` a slot and
//! a length (u32 each), for `STOP` nothing (the kinds shared with [`crate::pipeline`]); for
//! [`WIRE`] the element type of the gathers from now on (u32: 0 f32, 1 f16, 2 int8); for
//! [`ARGMAX`] the layout of `ROWS` (every flag 1): a decode step whose rows keep only their
//! greedy token.
//! Parsing checks every length before it reads and never allocates past its buffers' growth.

use crate::pipeline::{RESET, STOP, TRUNCATE};
use crate::wire::WireDtype;

/// A prompt for one slot, run in the session's chunks.
pub(crate) const PREFILL: u8 = 5;
/// Rows from any slots, with the rows whose logits are wanted.
pub(crate) const ROWS: u8 = 6;
/// The element type of the gathers.
pub(crate) const WIRE: u8 = 7;
/// A decode step keeping each row's greedy token (the nodes' picks go to rank 0, not logits).
pub(crate) const ARGMAX: u8 = 8;

/// A parsed command; the tokens, slots and flags are left in the caller's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Prefill this slot with the tokens.
    Prefill(usize),
    /// Run the rows (tokens, slots, wanted flags).
    Rows,
    /// Decode the rows (tokens, slots), keeping each row's greedy token.
    Argmax,
    /// Forget this slot.
    Reset(usize),
    /// Keep this many positions of this slot.
    Truncate(usize, usize),
    /// Finish.
    Stop,
    /// Send the gathers' pieces in this type.
    Wire(WireDtype),
}

/// Appends a [`PREFILL`] command.
pub(crate) fn put_prefill(msg: &mut Vec<u8>, slot: usize, tokens: &[u32]) {
    msg.clear();
    msg.push(PREFILL);
    msg.extend((slot.min(u32::MAX as usize) as u32).to_le_bytes());
    msg.extend((tokens.len() as u32).to_le_bytes());
    msg.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
}

/// Appends a [`ROWS`] command; `want: None` wants every row's logits.
pub(crate) fn put_rows(msg: &mut Vec<u8>, tokens: &[u32], slots: &[usize], want: Option<&[bool]>) {
    put_rows_as(msg, ROWS, tokens, slots, want);
}

/// Appends an [`ARGMAX`] command.
pub(crate) fn put_argmax(msg: &mut Vec<u8>, tokens: &[u32], slots: &[usize]) {
    put_rows_as(msg, ARGMAX, tokens, slots, None);
}

fn put_rows_as(
    msg: &mut Vec<u8>,
    kind: u8,
    tokens: &[u32],
    slots: &[usize],
    want: Option<&[bool]>,
) {
    msg.clear();
    msg.push(kind);
    msg.extend((tokens.len() as u32).to_le_bytes());
    msg.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
    msg.extend(slots.iter().flat_map(|&s| (s.min(u32::MAX as usize) as u32).to_le_bytes()));
    msg.extend((0..tokens.len()).map(|i| u8::from(want.is_none_or(|w| w[i]))));
}

/// Appends a control command (`RESET`, `TRUNCATE`, `STOP`) with its words.
pub(crate) fn put_control(msg: &mut Vec<u8>, kind: u8, words: &[usize]) {
    msg.clear();
    msg.push(kind);
    msg.extend(words.iter().flat_map(|&w| (w.min(u32::MAX as usize) as u32).to_le_bytes()));
}

/// Reads the u32 word `i` after a command's kind byte.
fn word(b: &[u8], i: usize) -> usize {
    let w = &b[1 + 4 * i..5 + 4 * i];
    u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize
}

/// Parses a command into `tokens`, `slots` and `want`, or says why it is malformed.
pub(crate) fn parse(
    b: &[u8],
    tokens: &mut Vec<u32>,
    slots: &mut Vec<usize>,
    want: &mut Vec<bool>,
) -> Result<Command, String> {
    let len = b.len();
    let bad = || Err(format!("unknown command of {len} bytes"));
    match b.first() {
        Some(&PREFILL) if len >= 9 && len == 9 + 4 * word(b, 1) => {
            tokens.clear();
            tokens.extend((0..word(b, 1)).map(|i| word(b, 2 + i) as u32));
            Ok(Command::Prefill(word(b, 0)))
        }
        Some(&k @ (ROWS | ARGMAX)) if len >= 5 && len == 5 + 9 * word(b, 0) => {
            let n = word(b, 0);
            tokens.clear();
            tokens.extend((0..n).map(|i| word(b, 1 + i) as u32));
            slots.clear();
            slots.extend((0..n).map(|i| word(b, 1 + n + i)));
            want.clear();
            want.extend(b[5 + 8 * n..].iter().map(|&f| f != 0));
            Ok(if k == ROWS { Command::Rows } else { Command::Argmax })
        }
        Some(&RESET) if len == 5 => Ok(Command::Reset(word(b, 0))),
        Some(&TRUNCATE) if len == 9 => Ok(Command::Truncate(word(b, 0), word(b, 1))),
        Some(&STOP) if len == 1 => Ok(Command::Stop),
        Some(&WIRE) if len == 5 => match WireDtype::from_code(word(b, 0).min(255) as u8) {
            Some(d) => Ok(Command::Wire(d)),
            None => Err(format!("unknown element type {}", word(b, 0))),
        },
        _ => bad(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_round_trip() {
        let (mut t, mut s, mut w) = (vec![], vec![], vec![]);
        let mut m = vec![];
        put_prefill(&mut m, 2, &[7, 8, 9]);
        assert_eq!(m.len(), 9 + 12);
        assert_eq!(parse(&m, &mut t, &mut s, &mut w), Ok(Command::Prefill(2)));
        assert_eq!(t, [7, 8, 9]);
        put_rows(&mut m, &[4, 5], &[1, 0], Some(&[false, true]));
        assert_eq!(m, [ROWS, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(parse(&m, &mut t, &mut s, &mut w), Ok(Command::Rows));
        assert_eq!(
            (t.as_slice(), s.as_slice(), w.as_slice()),
            (&[4, 5][..], &[1, 0][..], &[false, true][..])
        );
        put_rows(&mut m, &[4], &[3], None);
        assert_eq!(parse(&m, &mut t, &mut s, &mut w), Ok(Command::Rows));
        assert_eq!(w, [true]);
        put_argmax(&mut m, &[9, 7], &[0, 2]);
        assert_eq!(m, [ARGMAX, 2, 0, 0, 0, 9, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 1]);
        assert_eq!(parse(&m, &mut t, &mut s, &mut w), Ok(Command::Argmax));
        assert_eq!((t.as_slice(), s.as_slice()), (&[9, 7][..], &[0, 2][..]));
        assert!(parse(&m[..m.len() - 1], &mut t, &mut s, &mut w).is_err());
        put_control(&mut m, TRUNCATE, &[1, 40]);
        assert_eq!(parse(&m, &mut t, &mut s, &mut w), Ok(Command::Truncate(1, 40)));
        put_control(&mut m, STOP, &[]);
        assert_eq!(parse(&m, &mut t, &mut s, &mut w), Ok(Command::Stop));
        put_control(&mut m, WIRE, &[2]);
        assert_eq!(parse(&m, &mut t, &mut s, &mut w), Ok(Command::Wire(WireDtype::Q8)));
        put_control(&mut m, WIRE, &[3]);
        assert!(parse(&m, &mut t, &mut s, &mut w).is_err());
        put_prefill(&mut m, 0, &[1, 2]);
        assert!(parse(&m[..m.len() - 1], &mut t, &mut s, &mut w).is_err());
    }

    proptest! {
        #[test]
        fn malformed_commands_are_errors_not_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (mut t, mut s, mut w) = (vec![], vec![], vec![]);
            if let Ok(Command::Rows | Command::Argmax) = parse(&b, &mut t, &mut s, &mut w) {
                prop_assert!(t.len() == s.len() && s.len() == w.len());
            }
        }
    }
}

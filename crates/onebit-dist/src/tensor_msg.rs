//! The head's commands to the workers of a tensor-parallel mesh ([`crate::tensor`]), one
//! frame each: kind (1 byte), then for [`PREFILL`] a slot and a token count (u32 each) and the
//! tokens (u32 each); for [`ROWS`] a row count, the tokens and the slots (u32 each) and one
//! byte per row, 1 where its logits are wanted; for `RESET` a slot, for `TRUNCATE` a slot and
//! a length (u32 each), for `STOP` nothing (the kinds shared with [`crate::pipeline`]); for
//! [`WIRE`] the element type of the gathers from now on (u32: 0 f32, 1 f16, 2 int8); for
//! [`ARGMAX`] the layout of `ROWS` (every flag 1): a decode step whose rows keep only their
//! greedy token; for [`SAMPLE`] a row count, the tokens and the slots, one draw per row (12
//! u32 words: [`Draw`]'s fields in order, floats as their bits), a count of penalized
//! tokens and those tokens: a decode step whose rows keep only their candidates.
//! Parsing checks every length before it reads and never allocates past its buffers' growth.

use crate::pipeline::{RESET, STOP, TRUNCATE};
use crate::wire::WireDtype;
use onebit_model::Draw;

/// A prompt for one slot, run in the session's chunks.
pub(crate) const PREFILL: u8 = 5;
/// Rows from any slots, with the rows whose logits are wanted.
pub(crate) const ROWS: u8 = 6;
/// The element type of the gathers.
pub(crate) const WIRE: u8 = 7;
/// A decode step keeping each row's greedy token (the nodes' picks go to rank 0, not logits).
pub(crate) const ARGMAX: u8 = 8;
/// A decode step keeping each row's candidates for its draw.
pub(crate) const SAMPLE: u8 = 9;

/// Words of a [`Draw`] on the wire.
const DRAW_WORDS: usize = 12;

/// A command's rows: the buffers [`parse`] fills.
#[derive(Default)]
pub(crate) struct Rows {
    pub tokens: Vec<u32>,
    pub slots: Vec<usize>,
    pub want: Vec<bool>,
    pub draws: Vec<Draw>,
    pub penalized: Vec<u32>,
}

/// A parsed command; the tokens, slots and flags are left in the caller's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Prefill this slot with the tokens.
    Prefill(usize),
    /// Run the rows (tokens, slots, wanted flags).
    Rows,
    /// Decode the rows (tokens, slots), keeping each row's greedy token.
    Argmax,
    /// Decode the rows (tokens, slots), keeping each row's candidates for its draw.
    Sample,
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

/// Appends a [`SAMPLE`] command.
pub(crate) fn put_sample(
    msg: &mut Vec<u8>,
    tokens: &[u32],
    slots: &[usize],
    draws: &[Draw],
    penalized: &[u32],
) {
    put_rows_as(msg, SAMPLE, tokens, slots, None);
    msg.truncate(msg.len() - tokens.len());
    for d in draws {
        let floats = [d.temperature, d.inv_temperature];
        msg.extend(floats.iter().flat_map(|f| f.to_bits().to_le_bytes()));
        msg.extend(d.top_k.to_le_bytes());
        let floats = [d.top_p, d.min_p, d.repeat_penalty, d.inv_penalty, d.u];
        msg.extend(floats.iter().flat_map(|f| f.to_bits().to_le_bytes()));
        let words = [d.hist_start, d.hist_len, d.pad[0], d.pad[1]];
        msg.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    }
    msg.extend((penalized.len() as u32).to_le_bytes());
    msg.extend(penalized.iter().flat_map(|t| t.to_le_bytes()));
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

/// Parses a command into `rows`, or says why it is malformed.
pub(crate) fn parse(b: &[u8], rows: &mut Rows) -> Result<Command, String> {
    let len = b.len();
    let bad = || Err(format!("unknown command of {len} bytes"));
    let Rows { tokens, slots, want, draws, penalized } = rows;
    // Words are read only below a length checked first, in u64 (a hostile count cannot wrap).
    let fits = |words: u64| len as u64 > 4 * words;
    match b.first() {
        Some(&PREFILL) if len >= 9 && len == 9 + 4 * word(b, 1) => {
            tokens.clear();
            tokens.extend((0..word(b, 1)).map(|i| word(b, 2 + i) as u32));
            Ok(Command::Prefill(word(b, 0)))
        }
        Some(&k @ (ROWS | ARGMAX)) if len >= 5 && len == 5 + 9 * word(b, 0) => {
            let n = word(b, 0);
            read_rows(b, n, tokens, slots);
            want.clear();
            want.extend(b[5 + 8 * n..].iter().map(|&f| f != 0));
            Ok(if k == ROWS { Command::Rows } else { Command::Argmax })
        }
        Some(&SAMPLE) if fits(1) && fits(1 + (2 + DRAW_WORDS as u64) * word(b, 0) as u64 + 1) => {
            let n = word(b, 0);
            let at = 1 + (2 + DRAW_WORDS) * n;
            let m = word(b, at);
            if len as u64 != 1 + 4 * (at as u64 + 1 + m as u64) {
                return bad();
            }
            read_rows(b, n, tokens, slots);
            draws.clear();
            draws.extend((0..n).map(|r| {
                let w = |i: usize| word(b, 1 + 2 * n + DRAW_WORDS * r + i) as u32;
                let f = |i: usize| f32::from_bits(w(i));
                Draw {
                    temperature: f(0),
                    inv_temperature: f(1),
                    top_k: w(2),
                    top_p: f(3),
                    min_p: f(4),
                    repeat_penalty: f(5),
                    inv_penalty: f(6),
                    u: f(7),
                    hist_start: w(8),
                    hist_len: w(9),
                    pad: [w(10), w(11)],
                }
            }));
            penalized.clear();
            penalized.extend((0..m).map(|i| word(b, at + 1 + i) as u32));
            Ok(Command::Sample)
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

/// The tokens and slots of `n` rows after the count.
fn read_rows(b: &[u8], n: usize, tokens: &mut Vec<u32>, slots: &mut Vec<usize>) {
    tokens.clear();
    tokens.extend((0..n).map(|i| word(b, 1 + i) as u32));
    slots.clear();
    slots.extend((0..n).map(|i| word(b, 1 + n + i)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_round_trip() {
        let mut r = Rows::default();
        let mut m = vec![];
        put_prefill(&mut m, 2, &[7, 8, 9]);
        assert_eq!(m.len(), 9 + 12);
        assert_eq!(parse(&m, &mut r), Ok(Command::Prefill(2)));
        assert_eq!(r.tokens, [7, 8, 9]);
        put_rows(&mut m, &[4, 5], &[1, 0], Some(&[false, true]));
        assert_eq!(m, [ROWS, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(parse(&m, &mut r), Ok(Command::Rows));
        assert_eq!(
            (r.tokens.as_slice(), r.slots.as_slice(), r.want.as_slice()),
            (&[4, 5][..], &[1, 0][..], &[false, true][..])
        );
        put_rows(&mut m, &[4], &[3], None);
        assert_eq!(parse(&m, &mut r), Ok(Command::Rows));
        assert_eq!(r.want, [true]);
        put_argmax(&mut m, &[9, 7], &[0, 2]);
        assert_eq!(m, [ARGMAX, 2, 0, 0, 0, 9, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 1]);
        assert_eq!(parse(&m, &mut r), Ok(Command::Argmax));
        assert_eq!((r.tokens.as_slice(), r.slots.as_slice()), (&[9, 7][..], &[0, 2][..]));
        assert!(parse(&m[..m.len() - 1], &mut r).is_err());
        let d = |k: u32, start: u32| Draw {
            temperature: 0.7,
            inv_temperature: 1.0 / 0.7,
            top_k: k,
            top_p: 0.9,
            min_p: 0.05,
            repeat_penalty: 1.1,
            inv_penalty: 1.0 / 1.1,
            u: 0.375,
            hist_start: start,
            hist_len: 2,
            pad: [0, 0],
        };
        let draws = [d(40, 0), d(1, 2)];
        put_sample(&mut m, &[3, 4], &[1, 0], &draws, &[11, 12, 13, 14]);
        assert_eq!(m.len(), 1 + 4 * (1 + 2 + 2 + 2 * 12 + 1 + 4));
        assert_eq!(&m[..5], [SAMPLE, 2, 0, 0, 0]);
        assert_eq!(&m[21..25], 0.7f32.to_bits().to_le_bytes());
        assert_eq!(parse(&m, &mut r), Ok(Command::Sample));
        assert_eq!((r.tokens.as_slice(), r.slots.as_slice()), (&[3, 4][..], &[1, 0][..]));
        assert_eq!(
            (r.draws.as_slice(), r.penalized.as_slice()),
            (&draws[..], &[11, 12, 13, 14][..])
        );
        assert!(parse(&m[..m.len() - 1], &mut r).is_err());
        let mut longer = m.clone();
        longer.extend([0; 4]);
        assert!(parse(&longer, &mut r).is_err());
        put_control(&mut m, TRUNCATE, &[1, 40]);
        assert_eq!(parse(&m, &mut r), Ok(Command::Truncate(1, 40)));
        put_control(&mut m, STOP, &[]);
        assert_eq!(parse(&m, &mut r), Ok(Command::Stop));
        put_control(&mut m, WIRE, &[2]);
        assert_eq!(parse(&m, &mut r), Ok(Command::Wire(WireDtype::Q8)));
        put_control(&mut m, WIRE, &[3]);
        assert!(parse(&m, &mut r).is_err());
        put_prefill(&mut m, 0, &[1, 2]);
        assert!(parse(&m[..m.len() - 1], &mut r).is_err());
    }

    proptest! {
        #[test]
        fn malformed_commands_are_errors_not_panics(
            kind in 0u8..12,
            b in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut r = Rows::default();
            let mut b = b;
            b.insert(0, kind);
            match parse(&b, &mut r) {
                Ok(Command::Rows | Command::Argmax) => {
                    prop_assert!(r.tokens.len() == r.slots.len() && r.slots.len() == r.want.len());
                }
                Ok(Command::Sample) => {
                    prop_assert!(r.tokens.len() == r.slots.len() && r.slots.len() == r.draws.len());
                }
                _ => {}
            }
        }
    }
}

//! JSON mode (OpenAI's `response_format: {"type": "json_object"}`): a reply constrained to
//! one JSON object. Before each token is sampled, every vocabulary token whose bytes cannot
//! continue a valid JSON object is masked out ([`JsonMachine`], a byte-level pushdown
//! recognizer small enough to copy per token); once the object closes the reply ends.
//!
//! Written here rather than taken from a crate: the JSON crates parse whole documents (or
//! stream them, refusing a truncated one as an error), while masking needs "can these bytes
//! still extend the prefix read so far?" asked of a cheap copy of the parser state, 128k
//! times a token. Like llama.cpp's JSON grammar, runs of whitespace are capped
//! ([`MAX_SPACE`]), so a model cannot stall the reply on endless newlines, and the reply
//! starts with its `{`.

use crate::tokenizer::Tokenizer;

/// Deepest nesting of objects and arrays a reply may use.
pub const MAX_DEPTH: u8 = 64;
/// Most whitespace bytes in a row.
pub const MAX_SPACE: u8 = 20;

/// Where the recognizer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Before the top-level object (only `{`).
    Start,
    /// A value is expected (after `:` or `,` in an array).
    Value,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After a value: `,` or the container's closing bracket.
    After,
    /// In a string (`key`: an object key); `esc`: 0 none, 1 after `\`, 2-5 hex digits left
    /// + 1; `utf8`: continuation bytes still due.
    Str { key: bool, esc: u8, utf8: u8 },
    /// In a number.
    Num(Num),
    /// In `true`, `false` or `null`: which one and how many bytes are read.
    Lit { which: u8, at: u8 },
    /// The top-level object is closed.
    Done,
}

/// The parts of a JSON number (also read by [`crate::schema_machine`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    /// Whether a number may end here.
    pub(crate) fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }

    /// The part after byte `b` (`integer`: no fraction or exponent), None when `b` cannot
    /// continue the number.
    pub(crate) fn step(self, b: u8, integer: bool) -> Option<Num> {
        Some(match (self, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') | (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') if !integer => Num::Dot,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') if !integer => Num::E,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Num::Exp,
            _ => return None,
        })
    }
}

/// One byte of a string's content other than its closing quote: escapes and UTF-8. `esc`:
/// 0 none, 1 after `\`, 5 to 2 hex digits left + 1, 7 the second hex digit after a `d`
/// (only where `surrogates` is false: JSON Schema counts a surrogate pair as one character,
/// so structured output writes such characters in UTF-8); `utf8`: continuation bytes due
/// (1 to 3), or 4 to 7 after a lead whose next byte has a narrower range (E0, ED, F0, F4).
/// Returns the new (esc, utf8) and whether `b` begins a character, None when it cannot be
/// string content.
pub(crate) fn string_step(esc: u8, utf8: u8, b: u8, surrogates: bool) -> Option<(u8, u8, bool)> {
    Some(if utf8 > 0 {
        // Leads E0, ED, F0 and F4 narrow their first continuation byte: no overlong forms,
        // no surrogates, nothing past U+10FFFF (RFC 3629), so the bytes are UTF-8 a decoder
        // keeps as they are.
        let (lo, hi, left) = match utf8 {
            4 => (0xA0, 0xBF, 1),
            5 => (0x80, 0x9F, 1),
            6 => (0x90, 0xBF, 2),
            7 => (0x80, 0x8F, 2),
            n => (0x80, 0xBF, n - 1),
        };
        if !(lo..=hi).contains(&b) {
            return None;
        }
        (0, left, false)
    } else if esc == 1 {
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => (0, 0, false),
            b'u' => (5, 0, false),
            _ => return None,
        }
    } else if esc == 5 && !surrogates && matches!(b, b'd' | b'D') {
        (7, 0, false)
    } else if esc == 7 {
        if !matches!(b, b'0'..=b'7') {
            return None;
        }
        (3, 0, false)
    } else if esc > 1 {
        if !b.is_ascii_hexdigit() {
            return None;
        }
        (if esc == 2 { 0 } else { esc - 1 }, 0, false)
    } else {
        match b {
            b'\\' => (1, 0, true),
            0x00..=0x1F | b'"' => return None,
            0x20..=0x7F => (0, 0, true),
            0xC2..=0xDF => (0, 1, true),
            0xE0 => (0, 4, true),
            0xED => (0, 5, true),
            0xE1..=0xEF => (0, 2, true),
            0xF0 => (0, 6, true),
            0xF4 => (0, 7, true),
            0xF1..=0xF3 => (0, 3, true),
            _ => return None,
        }
    })
}

const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// A byte-level recognizer of one JSON object: [`JsonMachine::feed`] takes a byte and says
/// whether the text read so far is still the start of a valid object. `Copy`, so a mask
/// tries each token on its own copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonMachine {
    mode: Mode,
    /// Open containers, innermost in bit `depth - 1`: 1 an object, 0 an array.
    stack: u64,
    depth: u8,
    space: u8,
}

impl Default for JsonMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// JSON's whitespace.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonMachine {
    /// A recognizer before the first byte of an object.
    pub fn new() -> Self {
        JsonMachine { mode: Mode::Start, stack: 0, depth: 0, space: 0 }
    }

    /// Whether the machine is inside a string, outside an escape and between characters.
    fn in_plain_string(&self) -> bool {
        matches!(self.mode, Mode::Str { esc: 0, utf8: 0, .. })
    }

    /// Whether the object is complete (nothing more may follow).
    pub fn is_done(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Takes `bytes`; false (the machine then undefined) when they cannot continue the object.
    pub fn feed_all(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(b))
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.stack >> (self.depth - 1) & 1 == 1
    }

    fn open(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        let bit = 1u64 << self.depth;
        self.stack = if object { self.stack | bit } else { self.stack & !bit };
        self.depth += 1;
        self.mode = if object { Mode::KeyOrClose } else { Mode::ValueOrClose };
        true
    }

    fn close(&mut self, object: bool) -> bool {
        if self.depth == 0 || self.in_object() != object {
            return false;
        }
        self.depth -= 1;
        self.mode = if self.depth == 0 { Mode::Done } else { Mode::After };
        true
    }

    /// Whitespace between tokens, counted against [`MAX_SPACE`].
    fn space(&mut self) -> bool {
        self.space += 1;
        self.space <= MAX_SPACE
    }

    /// The first byte of a value.
    fn value(&mut self, b: u8) -> bool {
        self.mode = match b {
            b'{' => return self.open(true),
            b'[' => return self.open(false),
            b'"' => Mode::Str { key: false, esc: 0, utf8: 0 },
            b'-' => Mode::Num(Num::Minus),
            b'0' => Mode::Num(Num::Zero),
            b'1'..=b'9' => Mode::Num(Num::Int),
            b't' => Mode::Lit { which: 0, at: 1 },
            b'f' => Mode::Lit { which: 1, at: 1 },
            b'n' => Mode::Lit { which: 2, at: 1 },
            _ => return false,
        };
        true
    }

    /// Takes one byte; false when it cannot continue the object.
    pub fn feed(&mut self, b: u8) -> bool {
        if !matches!(self.mode, Mode::Str { .. }) && is_space(b) {
            return match self.mode {
                Mode::Num(n) if n.complete() => {
                    self.mode = Mode::After;
                    self.space()
                }
                // The reply starts with its `{`, as OpenAI's do.
                Mode::Start | Mode::Num(_) | Mode::Lit { .. } | Mode::Done => false,
                _ => self.space(),
            };
        }
        self.space = 0;
        match self.mode {
            Mode::Start => b == b'{' && self.open(true),
            Mode::Value => self.value(b),
            Mode::ValueOrClose => b == b']' && self.close(false) || b != b']' && self.value(b),
            Mode::KeyOrClose if b == b'}' => self.close(true),
            Mode::KeyOrClose | Mode::Key => {
                self.mode = Mode::Str { key: true, esc: 0, utf8: 0 };
                b == b'"'
            }
            Mode::Colon => {
                self.mode = Mode::Value;
                b == b':'
            }
            Mode::After => match b {
                b',' => {
                    self.mode = if self.in_object() { Mode::Key } else { Mode::Value };
                    true
                }
                b'}' => self.close(true),
                b']' => self.close(false),
                _ => false,
            },
            Mode::Str { key, esc, utf8 } => self.string(key, esc, utf8, b),
            Mode::Num(n) => self.number(n, b),
            Mode::Lit { which, at } => {
                let lit = LITERALS[which as usize];
                if lit.get(at as usize) != Some(&b) {
                    return false;
                }
                self.mode = if at as usize + 1 == lit.len() {
                    Mode::After
                } else {
                    Mode::Lit { which, at: at + 1 }
                };
                true
            }
            Mode::Done => false,
        }
    }

    fn string(&mut self, key: bool, esc: u8, utf8: u8, b: u8) -> bool {
        if (esc, utf8, b) == (0, 0, b'"') {
            self.mode = if key { Mode::Colon } else { Mode::After };
            return true;
        }
        let Some((esc, utf8, _)) = string_step(esc, utf8, b, true) else { return false };
        self.mode = Mode::Str { key, esc, utf8 };
        true
    }

    fn number(&mut self, n: Num, b: u8) -> bool {
        match n.step(b, false) {
            Some(to) => {
                self.mode = Mode::Num(to);
                true
            }
            None if n.complete() => {
                // The number ended: the byte belongs to what follows it.
                self.mode = Mode::After;
                self.feed(b)
            }
            None => false,
        }
    }
}

/// Every vocabulary token's bytes as it adds them to the text, for masking; a special token
/// (which decodes to nothing) has none and is never allowed inside JSON.
#[derive(Debug)]
pub struct TokenBytes {
    /// The tokens' bytes one after another; token i's end at `ends[i]`.
    data: Vec<u8>,
    ends: Vec<u32>,
    /// Tokens that may follow any string content as more of it (printable ASCII but `"` and
    /// `\`, or whole UTF-8 characters): most of a vocabulary, decided once so a mask inside
    /// a string need not read them (2B4T's 128k tokens: ~10 ms a token otherwise).
    plain: Vec<bool>,
    /// Each token's set of bytes (a 256-bit set), made on first use by a grammar's mask.
    byte_sets: std::sync::OnceLock<Vec<[u64; 4]>>,
}

/// Whether `b` is string content that leaves a string as it found it (outside an escape,
/// after a whole character).
fn is_plain(b: &[u8]) -> bool {
    !b.is_empty()
        && std::str::from_utf8(b).is_ok()
        && b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
}

/// GPT-2's byte ↔ character table of byte-level BPE vocabularies: printable Latin-1 bytes
/// stand for themselves, the others for U+0100 onwards in byte order.
fn byte_level_char_to_byte() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\u{FFFD}')
        };
        map.insert(c, b);
    }
    map
}

/// Appends the bytes of vocabulary string `s` to `out`: through `table` (GPT-2's byte table)
/// for a byte-level vocabulary, else SentencePiece's `<0xNN>` byte tokens and `▁` spaces.
fn token_bytes_into(
    s: &str,
    table: Option<&std::collections::HashMap<char, u8>>,
    out: &mut Vec<u8>,
) {
    if let Some(table) = table {
        let from = out.len();
        for c in s.chars() {
            match table.get(&c) {
                Some(&b) => out.push(b),
                None => {
                    // A character outside the table (an added token): its UTF-8 as written.
                    out.truncate(from);
                    out.extend_from_slice(s.as_bytes());
                    return;
                }
            }
        }
        return;
    }
    if let Some(b) = s
        .strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .and_then(|h| u8::from_str_radix(h, 16).ok())
    {
        out.push(b);
        return;
    }
    out.extend_from_slice(s.replace('\u{2581}', " ").as_bytes());
}

impl TokenBytes {
    /// The bytes of each of `tok`'s tokens: byte-level BPE vocabularies (GPT-2, Llama 3,
    /// BitNet 2B4T, SmolLM2) map each character back to its byte; SentencePiece ones read `▁`
    /// as a space and `<0xNN>` as byte NN.
    pub fn from_tokenizer(tok: &Tokenizer) -> Self {
        let n = tok.vocab_size();
        let strings: Vec<Option<String>> = (0..n as u32).map(|id| tok.id_to_token(id)).collect();
        let table = byte_level_char_to_byte();
        // Byte-level when every character of every ordinary token is in the table.
        let byte_level = strings
            .iter()
            .flatten()
            .filter(|s| !s.starts_with('<'))
            .take(4096)
            .all(|s| s.chars().all(|c| table.contains_key(&c)));
        let special = tok.special_ids();
        let mut t = TokenBytes {
            data: Vec::new(),
            ends: Vec::with_capacity(n),
            plain: Vec::with_capacity(n),
            byte_sets: std::sync::OnceLock::new(),
        };
        for (id, s) in (0..n as u32).zip(&strings) {
            let from = t.data.len();
            match s {
                Some(s) if !special.contains(&id) => {
                    token_bytes_into(s, byte_level.then_some(&table), &mut t.data)
                }
                _ => {}
            }
            t.ends.push(t.data.len() as u32);
            t.plain.push(is_plain(&t.data[from..]));
        }
        t
    }

    /// Token `id`'s bytes (none beyond the vocabulary).
    pub fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match self.ends.get(i) {
            Some(&end) => {
                &self.data[if i == 0 { 0 } else { self.ends[i - 1] as usize }..end as usize]
            }
            None => &[],
        }
    }

    /// The set of bytes of each token (bit `b % 64` of word `b / 64`): a token whose bytes
    /// each leave a reader's state as it is can follow that state without being read.
    pub fn byte_sets(&self) -> &[[u64; 4]] {
        self.byte_sets.get_or_init(|| {
            (0..self.ends.len() as u32)
                .map(|id| {
                    let mut set = [0u64; 4];
                    for &b in self.get(id) {
                        set[b as usize / 64] |= 1 << (b % 64);
                    }
                    set
                })
                .collect()
        })
    }

    /// Whether token `id` is whole characters of string content without `"`, `\\` or
    /// control bytes (it leaves a string as it found it).
    pub fn is_plain(&self, id: u32) -> bool {
        self.plain.get(id as usize).copied().unwrap_or(false)
    }

    /// Sets every logit whose token cannot follow `state` to −∞, and `eos`'s (the reply
    /// ends when the object closes); returns how many remain.
    pub fn mask(&self, state: &JsonMachine, logits: &mut [f32], eos: Option<u32>) -> usize {
        let in_string = state.in_plain_string();
        let mut left = 0;
        for (id, l) in logits.iter_mut().enumerate() {
            let continues = || {
                let b = self.get(id as u32);
                let mut s = *state;
                !b.is_empty() && s.feed_all(b)
            };
            let plain = in_string && self.plain.get(id).copied().unwrap_or(false);
            let ok = Some(id as u32) != eos && (plain || continues());
            if ok {
                left += 1;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn accepts(text: &str) -> Option<bool> {
        let mut m = JsonMachine::new();
        m.feed_all(text.as_bytes()).then(|| m.is_done())
    }

    /// String content is exactly UTF-8 as Rust's decoder reads it (no overlong forms, no
    /// surrogates, nothing past U+10FFFF): every 1- and 2-byte sequence, and 3- and 4-byte
    /// ones over the bytes where the ranges change; a prefix the machine takes always
    /// extends to a valid sequence.
    #[test]
    fn string_bytes_are_exactly_utf8() {
        let edges: Vec<u8> = vec![
            0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
            0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF,
        ];
        let mut seqs: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for a in 0x20..=255u8 {
            for b in 0..=255u8 {
                seqs.push(vec![a, b]);
            }
        }
        for &a in &edges {
            for &b in &edges {
                for &c in &edges {
                    seqs.push(vec![a, b, c]);
                    for &d in &edges {
                        seqs.push(vec![a, b, c, d]);
                    }
                }
            }
        }
        // Escapes (after a backslash) are tested with the objects below.
        for seq in seqs.into_iter().filter(|s| !s.contains(&b'\\')) {
            let content_ok = std::str::from_utf8(&seq)
                .is_ok_and(|t| t.chars().all(|c| c >= ' ' && c != '"' && c != '\\'));
            let (mut esc, mut utf8, mut ok) = (0u8, 0u8, true);
            for &b in &seq {
                match string_step(esc, utf8, b, true) {
                    Some((e, u, _)) => (esc, utf8) = (e, u),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            assert_eq!(ok && utf8 == 0 && esc == 0, content_ok, "{seq:02X?}");
            // A taken prefix is part of some valid character.
            if ok && utf8 > 0 {
                let more = (0x80..=0xBFu8).any(|b| string_step(esc, utf8, b, true).is_some());
                assert!(more, "{seq:02X?}");
            }
        }
    }

    #[test]
    fn objects_and_their_prefixes() {
        for doc in [
            r#"{}"#,
            r#"{ "a" : 1 }"#,
            r#"{"a":[1,-2.5e+3,0,0.25,true,false,null,"x\"\\\/\b\f\n\r\tA\u00e9"],"b":{"c":[]}}"#,
            "{\"caf\u{e9}\": \"\u{1F600}\"}",
            "{\n  \"a\": [\n    {}\n  ]\n}",
        ] {
            assert_eq!(accepts(doc), Some(true), "{doc}");
            for cut in 0..doc.len() {
                let mut m = JsonMachine::new();
                assert!(m.feed_all(&doc.as_bytes()[..cut]), "{doc} cut at {cut}");
                assert!(!m.is_done(), "{doc} cut at {cut}");
            }
        }
    }

    #[test]
    fn what_json_refuses_is_refused() {
        for bad in [
            "[1]",
            "1",
            "\"a\"",
            "{,}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":True}",
            "{\"a\":\"\n\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":[}",
            "{\"a\":[1}",
            "{\"a\":{]}",
            "{}}",
            "{} x",
            "{\"a\":1 2}",
            "{'a':1}",
        ] {
            let mut m = JsonMachine::new();
            let ok = m.feed_all(bad.as_bytes()) && m.is_done();
            assert!(!ok, "{bad:?} accepted");
            assert!(
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(bad).is_err(),
                "{bad}"
            );
        }
        // Stricter than JSON: the reply starts with its `{`.
        assert!(!JsonMachine::new().feed(b' '));
        // Invalid UTF-8 inside a string: a stray continuation byte, a lead byte without one.
        for bytes in [&b"{\"a\":\"\x80\"}"[..], b"{\"a\":\"\xC3x\"}", b"{\"a\":\"\xFF\"}"] {
            assert!(!JsonMachine::new().feed_all(bytes));
        }
    }

    #[test]
    fn depth_and_whitespace_are_capped() {
        let deep = "{\"a\":".to_string() + &"[".repeat(MAX_DEPTH as usize - 1);
        assert!(JsonMachine::new().feed_all(deep.as_bytes()));
        assert!(!JsonMachine::new().feed_all((deep + "[").as_bytes()));
        let spaces = " ".repeat(MAX_SPACE as usize);
        assert!(JsonMachine::new().feed_all(format!("{{{spaces}\"a\":1}}").as_bytes()));
        assert!(!JsonMachine::new().feed_all(format!("{{{spaces} \"a\":1}}").as_bytes()));
    }

    #[test]
    fn the_plain_token_shortcut_is_what_feeding_them_says() {
        let string = {
            let mut m = JsonMachine::new();
            assert!(m.feed_all(b"{\"k\":\"ab"));
            m
        };
        assert!(string.in_plain_string());
        for tok in [&b"abc"[..], b" caf\xC3\xA9", b"\xF0\x9F\x98\x80", b"\x7F", b"~"] {
            assert!(is_plain(tok) && string.clone().feed_all(tok), "{tok:?}");
        }
        for tok in [&b"a\"b"[..], b"\\", b"\n", b"\xC3", b""] {
            assert!(!is_plain(tok), "{tok:?}");
        }
    }

    /// A SentencePiece-style vocabulary (`▁` for spaces, `<0xNN>` byte tokens, Llama 2's
    /// decoder minus its first-token space strip): every token's bytes are the tokenizers
    /// crate's decoding of it.
    #[test]
    fn sentencepiece_token_bytes_are_what_the_tokenizer_decodes() {
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}
            ]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": {"<unk>": 0, "<s>": 1, "<0x0A>": 2, "<0x22>": 3, "\u{2581}": 4, "\u{2581}a": 5,
                    "{": 6, "\u{2581}caf\u{e9}": 7, "\"}": 8},
                "merges": []}
        });
        let tok = Tokenizer::from_json(&json.to_string()).unwrap();
        let bytes = TokenBytes::from_tokenizer(&tok);
        for id in 0..tok.vocab_size() as u32 {
            let want = if id < 2 { String::new() } else { tok.decode(&[id]).unwrap() };
            assert_eq!(bytes.get(id), want.as_bytes(), "token {id}");
        }
        assert_eq!(bytes.get(2), b"\n");
        assert_eq!(bytes.get(7), " caf\u{e9}".as_bytes());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// serde_json is the oracle: every object it writes (compact or pretty) is accepted,
        /// each proper prefix is an unfinished object, and whatever the machine accepts as a
        /// whole object serde_json parses.
        #[test]
        fn agrees_with_serde_json(v in json_value(), pretty in any::<bool>(), cut in any::<prop::sample::Index>(), junk in any::<u8>()) {
            let obj = serde_json::json!({"v": v});
            let doc = if pretty { serde_json::to_string_pretty(&obj).unwrap() } else { obj.to_string() };
            prop_assume!(doc.len() < 4000 && !doc.contains("                                 "));
            prop_assert_eq!(accepts(&doc), Some(true));
            let at = cut.index(doc.len());
            let mut m = JsonMachine::new();
            prop_assert!(m.feed_all(&doc.as_bytes()[..at]));
            prop_assert!(!m.is_done());
            // One byte spliced in: accepted as a whole object only if serde_json agrees.
            let mut spliced = doc.as_bytes()[..at].to_vec();
            spliced.push(junk);
            spliced.extend_from_slice(&doc.as_bytes()[at..]);
            let mut m = JsonMachine::new();
            if m.feed_all(&spliced) && m.is_done() {
                let parsed = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&spliced);
                // JSON's grammar has no range; serde_json's f64 does (a spliced 1E0309).
                let range = parsed.as_ref().is_err_and(|e| e.to_string().contains("number out of range"));
                prop_assert!(parsed.is_ok() || range, "{:?}", String::from_utf8_lossy(&spliced));
            }
        }
    }
}

//! `pattern` on strings in structured output: the ECMA-262 regular expression JSON Schema
//! names, read as a table of automaton states a string's characters walk, with every state
//! that can no longer reach a match removed, so a reply never enters a string it cannot
//! finish (no dead ends).
//!
//! JSON Schema's `pattern` matches anywhere in the string (`"abc"` accepts `"xabcx"`); `^`
//! and `$` anchor it. The ECMA-262 text is translated to Rust's syntax by `jsonschema-regex`
//! (the translation the `jsonschema` crate validates with: ASCII `\d` and `\w`, ECMA's `\s`
//! and `.`), wrapped as `(?s:.*)(?:P)(?s:.*)` and compiled by `regex-automata` into a
//! dense DFA matching all strings of that language; that DFA is then walked once from its
//! start state over the bytes a JSON string can carry and flattened into `Pattern`.
//!
//! Bytes a string can carry: raw bytes from 0x20 up (valid UTF-8, which the string reader
//! checks on its own), and through the short escapes `\" \\ \/ \b \f \n \r \t` the bytes
//! 0x22, 0x5C, 0x2F, 0x08, 0x0C, 0x0A, 0x0D, 0x09. A `\u` escape is not written in a
//! string under a pattern, so the other control characters are out of reach, and a state
//! that only they lead on from counts as dead. `\b` (a word boundary) is read on ASCII
//! text only: a string under a pattern using it holds no other characters.
//!
//! Beside `minLength` / `maxLength` (up to [`MAX_PATTERN_LENGTH`] characters) each state also
//! knows which lengths its rest may have (`Lengths`, layer by layer backwards from the
//! matches), so the reader stops a string neither short of a match that fits nor past one.
//!
//! Written here, not taken from a crate: the regex crates answer "does this text match",
//! and masking asks "can this prefix still become a match", which needs the automaton's
//! states and their futures.

use crate::json_schema::UNBOUNDED;
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::{primitives::StateID, start};
use regex_automata::{Anchored, MatchKind};

/// A state of no future (the string may not take the byte).
pub(crate) const DEAD: u32 = u32::MAX;
/// Most automaton states one pattern may compile to.
pub const MAX_PATTERN_STATES: usize = 4096;
/// The decoded byte of each short escape, by the letter after the backslash.
const ESCAPES: [(u8, u8); 8] = [
    (b'"', 0x22),
    (b'\\', 0x5C),
    (b'/', 0x2F),
    (b'b', 0x08),
    (b'f', 0x0C),
    (b'n', 0x0A),
    (b'r', 0x0D),
    (b't', 0x09),
];

/// A compiled `pattern`: states 0.. (0 the start), each byte's class, and per state and
/// class the next state or [`DEAD`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pattern {
    /// The schema's text of the pattern (for messages).
    pub source: String,
    classes: [u16; 256],
    stride: usize,
    next: Vec<u32>,
    accept: Vec<bool>,
    /// With `minLength` / `maxLength`: which lengths the rest may have from each state.
    bounds: Option<Lengths>,
}

impl Pattern {
    /// Compiles an ECMA-262 pattern for strings of `min..=max` characters (`max`
    /// [`UNBOUNDED`]: no limit); the error says why it cannot be used.
    pub fn compile(source: &str, min: u32, max: u32) -> Result<Pattern, String> {
        let rust = jsonschema_regex::to_rust_regex(source).map_err(|()| {
            format!("pattern {source:?} is not a valid ECMA-262 regular expression")
        })?;
        let full = format!("(?s:.*)(?:{rust})(?s:.*)");
        let config = dense::Config::new()
            .match_kind(MatchKind::All)
            .start_kind(StartKind::Anchored)
            .unicode_word_boundary(true)
            // A hostile pattern is refused in well under a second.
            .dfa_size_limit(Some(4 << 20))
            .determinize_size_limit(Some(4 << 20));
        let dfa = dense::Builder::new()
            .configure(config)
            .build(&full)
            .map_err(|e| format!("pattern {source:?} cannot be used: {}", deepest(&e)))?;
        let start_config = start::Config::new().anchored(Anchored::Yes);
        let start = dfa
            .start_state(&start_config)
            .map_err(|e| format!("pattern {source:?} has no start state: {e}"))?;
        let mut p = Self::flatten(&dfa, start, source)?;
        if (min, max) != (0, UNBOUNDED) {
            p.bounds = Some(Lengths::new(&p, min, max)?);
            if !p.fits(0, 0) {
                return Err(format!(
                    "no string of {min} to {} characters matches pattern {source:?}",
                    if max == UNBOUNDED { "any number of".to_string() } else { max.to_string() }
                ));
            }
        }
        Ok(p)
    }

    /// Numbers the states reachable from `start` over the bytes a string can carry and
    /// drops those from which no match is reachable.
    fn flatten(
        dfa: &dense::DFA<Vec<u32>>,
        start: StateID,
        source: &str,
    ) -> Result<Pattern, String> {
        let dfa_classes = dfa.byte_classes();
        // Class 0: bytes a string cannot carry; class 1 + 2c (+ 1 for UTF-8 continuation
        // bytes, which begin no character): the DFA's class c.
        let mut classes = [0u16; 256];
        let mut reps: Vec<Option<u8>> = vec![None; 2 * dfa_classes.alphabet_len() + 1];
        for b in 0..=255u8 {
            if carried(b) {
                let c = 1 + 2 * dfa_classes.get(b) as usize + continues(b) as usize;
                classes[b as usize] = c as u16;
                reps[c].get_or_insert(b);
            }
        }
        let stride = reps.len();
        let mut ids = vec![start];
        let mut index = std::collections::HashMap::from([(start, 0u32)]);
        let mut next: Vec<u32> = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            let from = ids[i];
            for rep in &reps {
                let to = match rep {
                    Some(b) => dfa.next_state(from, *b),
                    None => {
                        next.push(DEAD);
                        continue;
                    }
                };
                if dfa.is_dead_state(to) || dfa.is_quit_state(to) {
                    next.push(DEAD);
                    continue;
                }
                let n = ids.len() as u32;
                let id = *index.entry(to).or_insert_with(|| {
                    ids.push(to);
                    n
                });
                if ids.len() > MAX_PATTERN_STATES {
                    return Err(format!(
                        "pattern {source:?} needs more than {MAX_PATTERN_STATES} automaton states"
                    ));
                }
                next.push(id);
            }
            i += 1;
        }
        let accept: Vec<bool> =
            ids.iter().map(|&s| dfa.is_match_state(dfa.next_eoi_state(s))).collect();
        // A state lives when it accepts or leads to a living one.
        let mut live = accept.clone();
        let mut changed = true;
        while changed {
            changed = false;
            for s in 0..ids.len() {
                if !live[s]
                    && next[s * stride..][..stride].iter().any(|&t| t != DEAD && live[t as usize])
                {
                    live[s] = true;
                    changed = true;
                }
            }
        }
        if !live[0] {
            return Err(format!("pattern {source:?} matches no string a JSON reply can hold"));
        }
        for t in &mut next {
            if *t != DEAD && !live[*t as usize] {
                *t = DEAD;
            }
        }
        Ok(Pattern { source: source.to_string(), classes, stride, next, accept, bounds: None })
    }

    /// Whether this was compiled from `source` for `min..=max` characters.
    pub fn is(&self, source: &str, min: u32, max: u32) -> bool {
        let bounds = self.bounds.as_ref().map_or((0, UNBOUNDED), |b| (b.min, b.max));
        self.source == source && bounds == (min, max)
    }

    /// Whether a string in `state` with `chars` characters read (the one being read
    /// included) can still end within its length bounds.
    #[inline]
    pub fn fits(&self, state: u32, chars: u32) -> bool {
        self.bounds.as_ref().is_none_or(|b| b.fits(state, chars))
    }

    /// Cells of its table (states × byte classes), what it costs in memory (4 bytes each).
    pub fn cells(&self) -> usize {
        self.next.len()
    }

    /// The state after `byte` (a decoded byte of the string), or [`DEAD`].
    #[inline]
    pub fn step(&self, state: u32, byte: u8) -> u32 {
        self.next[state as usize * self.stride + self.classes[byte as usize] as usize]
    }

    /// Whether the string may end in `state`.
    pub fn accepts(&self, state: u32) -> bool {
        self.accept[state as usize]
    }

    /// The decoded byte of the short escape `\letter`, if it is one.
    pub fn escaped(letter: u8) -> Option<u8> {
        ESCAPES.iter().find(|e| e.0 == letter).map(|e| e.1)
    }

    /// Whether some short escape may follow in `state` (so a `\` is no dead end), the
    /// string then holding `chars` characters.
    pub fn escape_ok(&self, state: u32, chars: u32) -> bool {
        ESCAPES.iter().any(|e| {
            let t = self.step(state, e.1);
            t != DEAD && self.fits(t, chars)
        })
    }
}

/// The innermost cause of a build error on one line (the regex parser's messages draw the
/// pattern over several lines and end with `error: why`).
fn deepest(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(inner) = e.source() {
        e = inner;
    }
    let text = e.to_string();
    let line = text.lines().rev().find(|l| l.starts_with("error: ")).unwrap_or(&text);
    line.trim_start_matches("error: ").to_string()
}

/// RFC 3339 full-date, month lengths and leap years included.
const DATE: &str = r"(\d{4}-(0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|\d{4}-(0[469]|11)-(0[1-9]|[12]\d|30)|\d{4}-02-(0[1-9]|1\d|2[0-8])|(\d\d(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29)";
/// RFC 3339 full-time without leap seconds.
const TIME: &str = r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)";
/// One octet of a dotted IPv4 address, without leading zeros.
const OCTET: &str = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)";

/// The pattern a string `format` is held to, for the formats structured output enforces
/// (OpenAI's structured outputs and llama.cpp's schema grammars enforce these too); other
/// formats stay annotations. Each pattern is a subset of its format: `T` and `Z` in capitals,
/// no leap seconds.
pub(crate) fn format_pattern(format: &str) -> Option<String> {
    let hex = |n: u32| format!("[0-9a-fA-F]{{{n}}}");
    Some(match format {
        "date" => format!("^{DATE}$"),
        "time" => format!("^{TIME}$"),
        "date-time" => format!("^{DATE}T{TIME}$"),
        "uuid" => format!("^{}-{}-{}-{}-{}$", hex(8), hex(4), hex(4), hex(4), hex(12)),
        "ipv4" => format!(r"^({OCTET}\.){{3}}{OCTET}$"),
        _ => return None,
    })
}

/// Whether `b` continues a UTF-8 character rather than beginning one.
fn continues(b: u8) -> bool {
    (0x80..0xC0).contains(&b)
}

/// Most characters a `minLength` / `maxLength` beside a pattern may name.
pub const MAX_PATTERN_LENGTH: u32 = 1024;

/// Per state of a [`Pattern`], a bit set over lengths k (in characters) of what may still
/// follow: with a finite `max`, bit k says some rest of exactly k characters ends in a
/// match (k ≤ `max`); with no `max`, bit k says some rest of k characters leaves the string
/// where it can still end (k ≤ `min`), so anything longer is then possible too.
#[derive(Clone, Debug, PartialEq)]
struct Lengths {
    min: u32,
    max: u32,
    words: usize,
    bits: Vec<u64>,
}

impl Lengths {
    /// Layer by layer: the states whose rest can be k characters are those one character
    /// (a byte beginning one, then its continuation bytes) before a state of layer k − 1.
    fn new(p: &Pattern, min: u32, max: u32) -> Result<Lengths, String> {
        let top = if max == UNBOUNDED { min } else { max };
        if top > MAX_PATTERN_LENGTH {
            return Err(format!(
                "minLength/maxLength above {MAX_PATTERN_LENGTH} beside pattern {:?} is not supported",
                p.source
            ));
        }
        if (top as usize + 1).saturating_mul(p.next.len()) > 1 << 25 {
            return Err(format!(
                "pattern {:?} is too large to bound by minLength/maxLength {min}..{max}",
                p.source
            ));
        }
        let n = p.accept.len();
        let words = (top as usize + 1).div_ceil(64);
        let mut bits = vec![0u64; n * words];
        let get = |bits: &[u64], s: usize, k: usize| bits[s * words + k / 64] >> (k % 64) & 1 == 1;
        // Layer 0: states that end a match, or (no max) every state, all being live.
        for s in 0..n {
            if max != UNBOUNDED && !p.accept[s] {
                continue;
            }
            bits[s * words] |= 1;
        }
        for k in 0..=top as usize {
            let mut changed = true;
            let mut first = k > 0;
            while changed {
                changed = false;
                for s in 0..n {
                    if get(&bits, s, k) {
                        continue;
                    }
                    let row = &p.next[s * p.stride..][..p.stride];
                    let hit = row.iter().enumerate().skip(1).any(|(c, &t)| {
                        // Odd classes begin a character (a layer down), even ones continue it.
                        t != DEAD
                            && if c % 2 == 1 {
                                first && get(&bits, t as usize, k - 1)
                            } else {
                                get(&bits, t as usize, k)
                            }
                    });
                    if hit {
                        bits[s * words + k / 64] |= 1 << (k % 64);
                        changed = true;
                    }
                }
                first = false;
            }
        }
        Ok(Lengths { min, max, words, bits })
    }

    fn fits(&self, state: u32, chars: u32) -> bool {
        if chars > self.max {
            return false;
        }
        let row = &self.bits[state as usize * self.words..][..self.words];
        let get = |k: u32| row[k as usize / 64] >> (k % 64) & 1 == 1;
        let lo = self.min.saturating_sub(chars);
        if self.max == UNBOUNDED {
            return get(lo);
        }
        (lo..=self.max - chars).any(get)
    }
}

/// Whether a JSON string under a pattern can carry the decoded byte `b`.
fn carried(b: u8) -> bool {
    b >= 0x20 || ESCAPES.iter().any(|e| e.1 == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(p: &Pattern, text: &str) -> bool {
        let mut s = 0;
        for &b in text.as_bytes() {
            s = p.step(s, b);
            if s == DEAD {
                return false;
            }
        }
        p.accepts(s)
    }

    #[test]
    fn matches_anywhere_unless_anchored() {
        let p = Pattern::compile("ab+c", 0, UNBOUNDED).unwrap();
        assert!(full(&p, "xxabbcyy"));
        assert!(!full(&p, "xxacyy"));
        let p = Pattern::compile("^ab+c$", 0, UNBOUNDED).unwrap();
        assert!(full(&p, "abbbc"));
        assert!(!full(&p, "xabc"));
        assert!(!full(&p, "abcx"));
        // A prefix that can no longer match is dead at once.
        assert_eq!(p.step(0, b'x'), DEAD);
    }

    #[test]
    fn ecma_classes_are_ascii() {
        let p = Pattern::compile(r"^\d{3}-\w+$", 0, UNBOUNDED).unwrap();
        assert!(full(&p, "123-ab_9"));
        assert!(!full(&p, "١٢٣-ab"));
        assert!(!full(&p, "123-é"));
    }

    #[test]
    fn refusals_name_the_problem() {
        for (pat, why) in [
            ("(?=a)b", "look-around"),
            ("[", "not a valid"),
            ("^\\x01$", "no string"),
            ("^x{5000}$", "automaton states"),
            ("(a|b|c|d|e|f){1,4000}x[a-z]{1,20}", "size limit"),
        ] {
            let e = Pattern::compile(pat, 0, UNBOUNDED).unwrap_err();
            assert!(e.contains(why), "{pat}: {e}");
        }
    }
}

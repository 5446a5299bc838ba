//! The recognizer of structured output: [`SchemaMachine`] reads a reply byte by byte against
//! a compiled [`JsonSchema`] and says whether the bytes so far can still become a document
//! the schema accepts; [`SchemaMask`] masks a vocabulary with it before each token.
//!
//! The machine holds a fixed stack of open objects and arrays and the scalar being read, no
//! heap, so a mask copies it per token. Every state it accepts can still be completed (no
//! dead ends): a string at its `maxLength` only closes, an array at `maxItems` only ends,
//! a bounded number's digits stay on a path to a value within its bounds, a required key is never
//! skipped. Like JSON mode ([`crate::json_mode`]), the reply starts with its value and
//! nothing follows it; whitespace between tokens is a space, or a newline and an indent.

use crate::json_mode::{is_space, string_step, Num, TokenBytes};
use crate::json_number::Digits;
use crate::json_pattern::{Pattern, DEAD};
use crate::json_schema::{has, JsonSchema, Node, NodeId, ANY, ANY_WORD, UNBOUNDED};

/// Deepest nesting of objects and arrays.
pub const MAX_FRAMES: usize = 32;

/// What an open container expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// After `{` or `[`: a key / value, or the closing bracket.
    Open,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// A value (after `:`, or after `,` in an array).
    Value,
    /// After a value: `,` or the closing bracket.
    After,
}

/// An open object or array: its node, and how many keys (the index of the next declared
/// property) or items it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    node: NodeId,
    count: u16,
    phase: Phase,
    object: bool,
    /// Which literal the object's last literal value was (for [`Node::ByTag`]).
    tag: u16,
}

/// The scalar or key being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    None,
    /// A string (`key`: a map's key); `esc`: 0 none, 1 after `\`, 5..=2 hex digits left + 1,
    /// 7 the second hex digit after a `d`; `utf8`: continuation bytes due; `chars` read;
    /// `re`: the state of its node's `pattern` (0 without one).
    Str {
        node: NodeId,
        key: bool,
        esc: u8,
        utf8: u8,
        chars: u32,
        re: u32,
    },
    /// A number: its part, and its digits (for bounds).
    Num {
        node: NodeId,
        part: Num,
        digits: Digits,
    },
    /// One of a literal node's values: the first candidate that matches, bytes read.
    Lit {
        node: NodeId,
        cand: u16,
        pos: u16,
    },
    /// A declared key of the innermost object: the first candidate that matches, bytes read.
    Key {
        cand: u16,
        pos: u16,
    },
}

/// A byte-level recognizer of one document of a [`JsonSchema`] (which it is given at each
/// call, so the state stays a small `Copy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaMachine {
    frames: [Frame; MAX_FRAMES],
    depth: u8,
    leaf: Leaf,
    space: u8,
    done: bool,
    /// The literals the innermost `uniqueItems` array holds so far, a bit each (its items
    /// are literals, so no other container opens inside it: one set for the machine).
    used: u64,
}

impl SchemaMachine {
    /// A machine before the document's first byte.
    pub fn new() -> Self {
        let f = Frame { node: ANY, count: 0, phase: Phase::Open, object: false, tag: 0 };
        SchemaMachine {
            frames: [f; MAX_FRAMES],
            depth: 0,
            leaf: Leaf::None,
            space: 0,
            done: false,
            used: 0,
        }
    }

    /// Whether the document is complete and nothing may follow it.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the document could end here (complete, or a top-level number or literal that
    /// more bytes could also extend).
    pub fn can_end(&self, s: &JsonSchema) -> bool {
        if self.done {
            return true;
        }
        self.depth == 0
            && match self.leaf {
                Leaf::Num { node, part, digits } => self.number_ends(s, node, part, digits),
                Leaf::Lit { node, cand, pos } => lit_complete(s, node, cand, pos, 0),
                _ => false,
            }
    }

    /// Whether the reader is inside a string with no length limit, between characters:
    /// any whole-character text without `"`, `\` or control bytes may follow.
    pub fn in_free_string(&self, s: &JsonSchema) -> bool {
        match self.leaf {
            Leaf::Str { node, esc: 0, utf8: 0, .. } => !matches!(
                s.nodes[node as usize],
                Node::String { max, pattern, .. } if max != UNBOUNDED || pattern.is_some()
            ),
            _ => false,
        }
    }

    /// Takes `bytes`; false (the machine then undefined) when they cannot continue a document.
    pub fn feed_all(&mut self, s: &JsonSchema, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(s, b))
    }

    /// Takes one byte; false when it cannot continue a document of the schema.
    pub fn feed(&mut self, s: &JsonSchema, b: u8) -> bool {
        if self.done {
            return false;
        }
        match self.leaf {
            Leaf::None => {}
            Leaf::Str { .. } => return self.string(s, b),
            Leaf::Key { cand, pos } => return self.key(s, cand, pos, b),
            Leaf::Num { node, part, digits } => {
                if let Some(ok) = self.number(s, node, part, digits, b) {
                    return ok;
                }
            }
            Leaf::Lit { node, cand, pos } => {
                if let Some(ok) = self.literal(s, node, cand, pos, b) {
                    return ok;
                }
            }
        }
        self.structural(s, b)
    }

    fn top(&mut self) -> &mut Frame {
        &mut self.frames[self.depth as usize - 1]
    }

    /// A byte between values: whitespace, punctuation or the start of a value.
    fn structural(&mut self, s: &JsonSchema, b: u8) -> bool {
        if is_space(b) {
            // The reply starts with its value and ends with it.
            return self.depth > 0 && self.whitespace(b);
        }
        self.space = 0;
        if self.depth == 0 {
            return self.start_value(s, s.root(), b);
        }
        let f = *self.top();
        if let Node::Union { props, empty, .. } = &s.nodes[f.node as usize] {
            return match (f.phase, b) {
                (Phase::Open, b'}') if *empty => self.close(),
                (Phase::Open, b'"') => {
                    self.leaf = Leaf::Key { cand: 0, pos: 1 };
                    true
                }
                (Phase::Colon, b':') => {
                    self.top().phase = Phase::Value;
                    true
                }
                (Phase::Value, _) => self.start_value(s, props[f.count as usize - 1].value, b),
                _ => false,
            };
        }
        if f.object {
            let Node::Object { props, extra, last_required, names, min, max } =
                &s.nodes[f.node as usize]
            else {
                return self.generic_object(s, f, b);
            };
            let n = f.count as u32;
            let closes = last_required.is_none_or(|r| (r as usize) < f.count as usize) && n >= *min;
            let more =
                (f.count as usize) < props.len() || props.is_empty() && extra.is_some() && n < *max;
            match (f.phase, b) {
                (Phase::Open, b'}') | (Phase::After, b'}') if closes => self.close(),
                (Phase::Open | Phase::Key, b'"') if more => {
                    if props.is_empty() {
                        let node = *names;
                        self.leaf = Leaf::Str { node, key: true, esc: 0, utf8: 0, chars: 0, re: 0 };
                    } else {
                        self.leaf = Leaf::Key { cand: f.count, pos: 1 };
                    }
                    true
                }
                (Phase::Colon, b':') => {
                    self.top().phase = Phase::Value;
                    true
                }
                (Phase::Value, _) => {
                    let node = if props.is_empty() {
                        extra.unwrap_or(ANY)
                    } else {
                        props[f.count as usize - 1].value
                    };
                    self.start_value(s, node, b)
                }
                (Phase::After, b',') if more => {
                    self.top().phase = Phase::Key;
                    true
                }
                _ => false,
            }
        } else {
            let (min, max) = match &s.nodes[f.node as usize] {
                Node::Array { min, max, .. } => (*min, *max),
                _ => (0, UNBOUNDED),
            };
            let n = f.count as u32;
            match (f.phase, b) {
                (Phase::Open | Phase::After, b']') => n >= min && self.close(),
                (Phase::After, b',') => {
                    self.top().phase = Phase::Value;
                    n < max
                }
                (Phase::Open, _) if n < max => self.start_value(s, self.item(s, f), b),
                (Phase::Value, _) => self.start_value(s, self.item(s, f), b),
                _ => false,
            }
        }
    }

    /// Whitespace between tokens: one space, or a newline and an indent of at most four
    /// columns a level (`json.dumps(indent=4)`, serde_json's two). Tighter than llama.cpp's
    /// schema grammars (`space ::= | " " | "\n"{1,2} [ \t]{0,20}`): a prose model held to a
    /// schema spent most of its tokens on their blank lines and 20-space indents and ran out
    /// of context mid-document. `space`: 1 after a space, 2 + n after a newline and n columns.
    fn whitespace(&mut self, b: u8) -> bool {
        let most = (4 * self.depth).min(20);
        self.space = match (self.space, b) {
            (0, b' ') => 1,
            (0, b'\n') => 2,
            (n @ 2.., b' ' | b'\t') if n - 2 < most => n + 1,
            _ => return false,
        };
        true
    }

    /// An object of an unconstrained value: any keys, any values.
    fn generic_object(&mut self, s: &JsonSchema, f: Frame, b: u8) -> bool {
        match (f.phase, b) {
            (Phase::Open | Phase::After, b'}') => self.close(),
            (Phase::Open | Phase::Key, b'"') => {
                self.leaf = Leaf::Str { node: ANY, key: true, esc: 0, utf8: 0, chars: 0, re: 0 };
                true
            }
            (Phase::Colon, b':') => {
                self.top().phase = Phase::Value;
                true
            }
            (Phase::Value, _) => self.start_value(s, ANY, b),
            (Phase::After, b',') => {
                self.top().phase = Phase::Key;
                true
            }
            _ => false,
        }
    }

    /// The node of the innermost array's next item.
    fn item(&self, s: &JsonSchema, f: Frame) -> NodeId {
        match &s.nodes[f.node as usize] {
            Node::Array { prefix, items, .. } => {
                prefix.get(f.count as usize).copied().or(*items).unwrap_or(ANY)
            }
            _ => ANY,
        }
    }

    fn open(&mut self, node: NodeId, object: bool) -> bool {
        if self.depth as usize >= MAX_FRAMES {
            return false;
        }
        self.frames[self.depth as usize] =
            Frame { node, count: 0, phase: Phase::Open, object, tag: 0 };
        self.depth += 1;
        self.used = 0;
        true
    }

    fn close(&mut self) -> bool {
        self.depth -= 1;
        self.value_done();
        true
    }

    /// A value ended: its container expects what follows it, or the document is complete.
    fn value_done(&mut self) {
        self.leaf = Leaf::None;
        if self.depth == 0 {
            self.done = true;
            return;
        }
        let f = self.top();
        f.phase = Phase::After;
        if !f.object {
            f.count = f.count.saturating_add(1);
        }
    }

    /// The first byte of a value of `node`.
    fn start_value(&mut self, s: &JsonSchema, mut node: NodeId, b: u8) -> bool {
        if let (Node::ByTag(alts), true) = (&s.nodes[node as usize], self.depth > 0) {
            node = alts.get(self.top().tag as usize).copied().unwrap_or(ANY);
        }
        while let Node::Choice(alts) = &s.nodes[node as usize] {
            match alts.iter().find(|&&a| has(&s.first[a as usize], b)) {
                Some(&a) => node = a,
                None => return false,
            }
        }
        match &s.nodes[node as usize] {
            Node::Any => match b {
                b'{' => self.open(ANY, true),
                b'[' => self.open(ANY, false),
                b'"' => {
                    self.leaf =
                        Leaf::Str { node: ANY, key: false, esc: 0, utf8: 0, chars: 0, re: 0 };
                    true
                }
                b'-' | b'0'..=b'9' => self.start_number(s, ANY, b),
                _ => self.start_literal(s, ANY_WORD, b),
            },
            Node::Literals(_) => self.start_literal(s, node, b),
            Node::Number { .. } => self.start_number(s, node, b),
            Node::String { .. } => {
                self.leaf = Leaf::Str { node, key: false, esc: 0, utf8: 0, chars: 0, re: 0 };
                b == b'"'
            }
            Node::Object { .. } | Node::Union { .. } => b == b'{' && self.open(node, true),
            Node::Array { .. } => b == b'[' && self.open(node, false),
            Node::Choice(_) | Node::ByTag(_) | Node::Pending => false,
        }
    }

    /// The literals of `node` this reply may not write again: those the innermost array
    /// holds when it is a `uniqueItems` array of `node`.
    fn banned(&self, s: &JsonSchema, node: NodeId) -> u64 {
        if self.in_unique(s, node) {
            self.used
        } else {
            0
        }
    }

    /// Whether the innermost container is a `uniqueItems` array of `node`'s literals.
    fn in_unique(&self, s: &JsonSchema, node: NodeId) -> bool {
        self.depth > 0
            && matches!(s.nodes[self.frames[self.depth as usize - 1].node as usize],
                Node::Array { unique: true, items: Some(i), .. } if i == node)
    }

    fn start_literal(&mut self, s: &JsonSchema, node: NodeId, b: u8) -> bool {
        let Node::Literals(c) = &s.nodes[node as usize] else { return false };
        let banned = self.banned(s, node);
        let Some(cand) = (0..c.len()).find(|&i| free(banned, i) && c[i][0] == b) else {
            return false;
        };
        self.leaf = Leaf::Lit { node, cand: cand as u16, pos: 1 };
        self.literal_settle(s, node, cand as u16, 1);
        true
    }

    /// Ends a literal as soon as no candidate could continue it.
    fn literal_settle(&mut self, s: &JsonSchema, node: NodeId, cand: u16, pos: u16) {
        let Node::Literals(c) = &s.nodes[node as usize] else { return };
        let banned = self.banned(s, node);
        let read = &c[cand as usize][..pos as usize];
        let longer = (0..c.len())
            .any(|i| free(banned, i) && c[i].len() > read.len() && c[i].starts_with(read));
        if !longer && lit_complete(s, node, cand, pos, banned) {
            self.literal_done(s, node, cand, pos);
        }
    }

    /// Some(accepted) for a byte of the literal, None when it ended before `b`.
    fn literal(
        &mut self,
        s: &JsonSchema,
        node: NodeId,
        cand: u16,
        pos: u16,
        b: u8,
    ) -> Option<bool> {
        let Node::Literals(c) = &s.nodes[node as usize] else { return Some(false) };
        let banned = self.banned(s, node);
        let read = &c[cand as usize][..pos as usize];
        let p = pos as usize;
        if let Some(i) = (0..c.len()).find(|&i| {
            let l = &c[i];
            free(banned, i) && l.len() > p && l.starts_with(read) && l[p] == b
        }) {
            self.leaf = Leaf::Lit { node, cand: i as u16, pos: pos + 1 };
            self.literal_settle(s, node, i as u16, pos + 1);
            return Some(true);
        }
        if self.depth > 0 && lit_complete(s, node, cand, pos, banned) {
            self.literal_done(s, node, cand, pos);
            return None;
        }
        Some(false)
    }

    /// A literal ended: its object remembers which it was.
    fn literal_done(&mut self, s: &JsonSchema, node: NodeId, cand: u16, pos: u16) {
        if let (Node::Literals(c), true) = (&s.nodes[node as usize], self.depth > 0) {
            let read = &c[cand as usize][..pos as usize];
            if let Some(i) = c.iter().position(|l| l.as_slice() == read) {
                if self.in_unique(s, node) {
                    self.used |= 1 << i;
                }
                let f = self.top();
                f.tag = i as u16;
                // A key several alternatives begin with: its value says which object this is.
                if let Node::Union { routes, .. } = &s.nodes[f.node as usize] {
                    if let Some(&(node, count)) = routes[f.count as usize - 1].get(i) {
                        (f.node, f.count) = (node, count);
                    }
                }
            }
        }
        self.value_done();
    }

    fn start_number(&mut self, s: &JsonSchema, node: NodeId, b: u8) -> bool {
        let part = match b {
            b'-' => Num::Minus,
            b'0' => Num::Zero,
            b'1'..=b'9' => Num::Int,
            _ => return false,
        };
        let digits = Digits::default().after(b, part);
        if let Node::Number { range: Some(r), .. } = s.nodes[node as usize] {
            if !r.admits(part, digits) {
                return false;
            }
        }
        self.leaf = Leaf::Num { node, part, digits };
        true
    }

    /// Whether a number read so far is whole and within its node's bounds.
    fn number_ends(&self, s: &JsonSchema, node: NodeId, part: Num, digits: Digits) -> bool {
        part.complete()
            && match s.nodes[node as usize] {
                Node::Number { range: Some(r), .. } => r.holds(digits),
                _ => true,
            }
    }

    /// Some(accepted) for a byte of the number, None when it ended before `b`.
    fn number(
        &mut self,
        s: &JsonSchema,
        node: NodeId,
        part: Num,
        digits: Digits,
        b: u8,
    ) -> Option<bool> {
        let (integer, range) = match s.nodes[node as usize] {
            Node::Number { integer, range } => (integer, range),
            _ => (false, None),
        };
        let Some(to) = part.step(b, integer) else {
            if self.depth > 0 && self.number_ends(s, node, part, digits) {
                self.value_done();
                return None;
            }
            return Some(false);
        };
        let digits = digits.after(b, to);
        if range.is_some_and(|r| !r.admits(to, digits)) {
            return Some(false);
        }
        self.leaf = Leaf::Num { node, part: to, digits };
        Some(true)
    }

    /// A byte of the string being read.
    fn string(&mut self, s: &JsonSchema, b: u8) -> bool {
        let Leaf::Str { node, key, esc, utf8, chars, mut re } = self.leaf else { return false };
        let (min, max, pattern) = match s.nodes[node as usize] {
            Node::String { min, max, pattern } => {
                (min, max, pattern.map(|p| &s.patterns[p as usize]))
            }
            _ => (0, UNBOUNDED, None),
        };
        if (esc, utf8, b) == (0, 0, b'"') {
            if chars < min || pattern.is_some_and(|p| !p.accepts(re)) {
                return false;
            }
            self.leaf = Leaf::None;
            if key {
                let f = self.top();
                f.phase = Phase::Colon;
                f.count = f.count.saturating_add(1);
            } else {
                self.value_done();
            }
            return true;
        }
        let Some((to_esc, to_utf8, starts)) = string_step(esc, utf8, b, false) else {
            return false;
        };
        if starts && chars >= max {
            return false;
        }
        if let Some(p) = pattern {
            // The pattern reads the string's text: an escape's character once it is whole.
            // `\u` is not written under a pattern (see json_pattern).
            let text = match (esc, b) {
                (0, b'\\') => None,
                (0, _) => Some(b),
                (1, _) => match Pattern::escaped(b) {
                    Some(t) => Some(t),
                    None => return false,
                },
                _ => return false,
            };
            let chars = chars + starts as u32;
            match text {
                Some(t) => {
                    re = p.step(re, t);
                    if re == DEAD || !p.fits(re, chars) {
                        return false;
                    }
                }
                None if !p.escape_ok(re, chars) => return false,
                None => {}
            }
        }
        self.leaf =
            Leaf::Str { node, key, esc: to_esc, utf8: to_utf8, chars: chars + starts as u32, re };
        true
    }

    /// A byte of a declared key of the innermost object.
    fn key(&mut self, s: &JsonSchema, cand: u16, pos: u16, b: u8) -> bool {
        let f = *self.top();
        let (props, from, upto) = match &s.nodes[f.node as usize] {
            // Keys come in order; a required one may not be passed over.
            Node::Object { props, .. } => {
                let from = f.count as usize;
                let upto = (from..props.len()).find(|&i| props[i].required);
                (props, from, upto.unwrap_or(props.len() - 1))
            }
            Node::Union { props, .. } => (props, 0, props.len() - 1),
            _ => return false,
        };
        let read = &props[cand as usize].key[..pos as usize];
        let p = pos as usize;
        let Some(i) = (from..=upto).find(|&i| {
            props[i].key.len() > p && props[i].key.starts_with(read) && props[i].key[p] == b
        }) else {
            return false;
        };
        if props[i].key.len() == p + 1 {
            self.leaf = Leaf::None;
            let f = self.top();
            f.count = i as u16 + 1;
            f.phase = Phase::Colon;
            // A key only one alternative begins with: read on as that object.
            if let Node::Union { routes, .. } = &s.nodes[f.node as usize] {
                if let [(node, count)] = routes[i][..] {
                    (f.node, f.count) = (node, count);
                }
            }
        } else {
            self.leaf = Leaf::Key { cand: i as u16, pos: pos + 1 };
        }
        true
    }
}

impl Default for SchemaMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether some candidate of a literal node not in `banned` is exactly the bytes read.
fn lit_complete(s: &JsonSchema, node: NodeId, cand: u16, pos: u16, banned: u64) -> bool {
    let Node::Literals(c) = &s.nodes[node as usize] else { return false };
    let read = &c[cand as usize][..pos as usize];
    (0..c.len()).any(|i| free(banned, i) && c[i].as_slice() == read)
}

/// Whether literal `i` is not in the set `banned` (literals past 64 are never banned: a
/// `uniqueItems` array has at most 64).
fn free(banned: u64, i: usize) -> bool {
    i >= 64 || banned >> i & 1 == 0
}

/// Masks a vocabulary with a [`SchemaMachine`]: the state after each possible first byte is
/// worked out once per token, so a token costs a lookup plus its remaining bytes.
#[derive(Debug)]
pub struct SchemaMask {
    after_first: Vec<Option<SchemaMachine>>,
}

impl Default for SchemaMask {
    fn default() -> Self {
        SchemaMask { after_first: vec![None; 256] }
    }
}

impl SchemaMask {
    /// Sets every logit whose token cannot follow `m` to −∞; `eos` stays only where the
    /// document may end. Returns how many tokens remain.
    pub fn mask(
        &mut self,
        s: &JsonSchema,
        m: &SchemaMachine,
        bytes: &TokenBytes,
        logits: &mut [f32],
        eos: Option<u32>,
    ) -> usize {
        for (b, slot) in self.after_first.iter_mut().enumerate() {
            let mut n = *m;
            *slot = n.feed(s, b as u8).then_some(n);
        }
        let free = m.in_free_string(s);
        let end = m.can_end(s);
        let mut left = 0;
        for (id, l) in logits.iter_mut().enumerate() {
            let ok = if Some(id as u32) == eos {
                end
            } else if free && bytes.is_plain(id as u32) {
                true
            } else {
                let b = bytes.get(id as u32);
                match b
                    .split_first()
                    .and_then(|(&f, rest)| self.after_first[f as usize].map(|n| (n, rest)))
                {
                    None => false,
                    Some((_, [])) => true,
                    Some((mut n, rest)) => n.feed_all(s, rest),
                }
            };
            if ok {
                left += 1;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        left
    }
}

//! The reader of a GBNF [`Grammar`]: which bytes may extend a reply, for masking tokens.
//!
//! A position in the grammar is a stack, as llama.cpp's grammar reader keeps it: the element
//! to read next and, below it, where to go on in each enclosing rule; a reader state is the
//! set of stacks the text so far allows (the grammar may be ambiguous) plus a partly read
//! UTF-8 character. Stacks are nodes of one shared arena (`(element, parent)`, each made once),
//! so a state is a short sorted list of ids and two states compare by value.
//!
//! States are interned and their transitions on each byte cached as they are first needed:
//! a lazily built DFA over bytes. Masking a vocabulary walks each token's bytes through that
//! table, so after the first tokens of a reply most steps are one array read (llama.cpp
//! re-derives stacks per candidate token each time). The tables are rebuilt from the current
//! state when they grow past their caps.

use crate::gbnf::{Elem, Grammar};
use crate::json_mode::TokenBytes;
use std::collections::HashMap;
use std::sync::Arc;

/// The parent of the outermost position: the grammar ends when a stack returns to it.
const BOTTOM: u32 = u32::MAX;
/// A transition not worked out yet.
const UNKNOWN: u32 = u32::MAX;
/// No state: the byte cannot extend the text.
const DEAD: u32 = u32::MAX - 1;
/// A transition not cached because the table is full.
const FULL: u32 = u32::MAX - 2;
/// Most states cached (each with a 1 kB row of transitions).
const MAX_STATES: usize = 1 << 13;
/// Arena size past which the tables are rebuilt before the next mask.
const MAX_NODES: usize = 1 << 20;

/// What the reader holds between bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// Stack ids, sorted, each with a character element on top.
    stacks: Box<[u32]>,
    /// Whether the text read is a whole sentence of the grammar.
    accept: bool,
    /// A UTF-8 character being read: its bits so far, continuation bytes due, its length.
    cp: u32,
    need: u8,
    len: u8,
}

/// A reply's reader of one grammar ([module docs](self)).
#[derive(Debug)]
pub struct GrammarMachine {
    g: Arc<Grammar>,
    nodes: Vec<(u32, u32)>,
    node_ids: HashMap<(u32, u32), u32>,
    states: Vec<State>,
    state_ids: HashMap<State, u32>,
    next: Vec<[u32; 256]>,
    cur: u32,
}

impl GrammarMachine {
    /// A reader before the reply's first byte.
    pub fn new(g: Arc<Grammar>) -> Self {
        let mut m = GrammarMachine {
            g,
            nodes: Vec::new(),
            node_ids: HashMap::new(),
            states: Vec::new(),
            state_ids: HashMap::new(),
            next: Vec::new(),
            cur: 0,
        };
        let (mut live, mut accept) = (Vec::new(), false);
        let starts = m.g.rules[m.g.root as usize].clone();
        for a in starts {
            m.expand(a, BOTTOM, &mut live, &mut accept);
        }
        live.sort_unstable();
        live.dedup();
        let s = State { stacks: live.into(), accept, cp: 0, need: 0, len: 0 };
        m.cur = m.intern(s);
        m
    }

    /// Whether the reply may end here (what was read is a sentence of the grammar).
    pub fn can_end(&self) -> bool {
        self.states[self.cur as usize].accept
    }

    /// Whether the reply must end here: a whole sentence that no byte can extend.
    pub fn is_done(&self) -> bool {
        let s = &self.states[self.cur as usize];
        s.accept && s.stacks.is_empty()
    }

    /// Takes `bytes`; false (the reader then unchanged) when they cannot extend the text.
    pub fn feed_all(&mut self, bytes: &[u8]) -> bool {
        self.compact_if_large();
        let mut s = self.cur;
        for &b in bytes {
            s = self.step(s, b);
            if s == FULL {
                self.compact();
                return self.feed_all(bytes);
            }
            if s == DEAD {
                return false;
            }
        }
        self.cur = s;
        true
    }

    /// Sets every logit whose token cannot extend the text to −∞; `eos` stays only where
    /// the reply may end. Returns how many tokens remain.
    pub fn mask(&mut self, bytes: &TokenBytes, logits: &mut [f32], eos: Option<u32>) -> usize {
        self.compact_if_large();
        let end = self.can_end();
        // Bytes that leave the state as it is (text inside a string, say): a token made of
        // them only follows without being read, as most of a vocabulary does there.
        let mut stay = [0u64; 4];
        for b in 0..=255u8 {
            let n = self.step(self.cur, b);
            if n == FULL {
                self.compact();
                return self.mask(bytes, logits, eos);
            }
            if n == self.cur {
                stay[b as usize / 64] |= 1 << (b % 64);
            }
        }
        let sets = bytes.byte_sets();
        let mut left = 0;
        for (id, l) in logits.iter_mut().enumerate() {
            let ok = if Some(id as u32) == eos {
                end
            } else {
                let b = bytes.get(id as u32);
                let kept = sets.get(id).is_some_and(|s| (0..4).all(|i| s[i] & !stay[i] == 0));
                !b.is_empty() && (kept || self.accepts(b))
            };
            if ok {
                left += 1;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        left
    }

    /// Whether `bytes` can follow the current text.
    fn accepts(&mut self, bytes: &[u8]) -> bool {
        let mut s = self.cur;
        for (i, &b) in bytes.iter().enumerate() {
            match self.step(s, b) {
                DEAD => return false,
                FULL => {
                    let mut st = self.states[s as usize].clone();
                    for &b in &bytes[i..] {
                        match self.compute(&st, b) {
                            Some(n) => st = n,
                            None => return false,
                        }
                    }
                    return true;
                }
                n => s = n,
            }
        }
        true
    }

    /// The state after byte `b` from state `s` (cached), [`DEAD`], or [`FULL`].
    fn step(&mut self, s: u32, b: u8) -> u32 {
        let n = self.next[s as usize][b as usize];
        if n != UNKNOWN {
            return n;
        }
        let st = self.states[s as usize].clone();
        let n = match self.compute(&st, b) {
            None => DEAD,
            Some(_) if self.states.len() >= MAX_STATES => return FULL,
            Some(n) => self.intern(n),
        };
        self.next[s as usize][b as usize] = n;
        n
    }

    /// The state after byte `b` from `st`, None when `b` cannot follow.
    fn compute(&mut self, st: &State, b: u8) -> Option<State> {
        let (cp, need, len) = if st.need == 0 {
            match b {
                0x00..=0x7F => (b as u32, 0, 1),
                0xC2..=0xDF => ((b & 0x1F) as u32, 1, 2),
                0xE0..=0xEF => ((b & 0x0F) as u32, 2, 3),
                0xF0..=0xF4 => ((b & 0x07) as u32, 3, 4),
                _ => return None,
            }
        } else {
            if b & 0xC0 != 0x80 {
                return None;
            }
            (st.cp << 6 | (b & 0x3F) as u32, st.need - 1, st.len)
        };
        let (least, most) = match len {
            1 => (0, 0x7F),
            2 => (0x80, 0x7FF),
            3 => (0x800, 0xFFFF),
            _ => (0x10000, 0x10FFFF),
        };
        if need > 0 {
            // Part of a character: go on if some stack reads a character it may become.
            let lo = (cp << (6 * need as u32)).max(least);
            let hi = (cp << (6 * need as u32) | ((1 << (6 * need as u32)) - 1)).min(most);
            let viable = lo <= hi
                && st.stacks.iter().any(|&s| {
                    let (pos, _) = self.nodes[s as usize];
                    self.g.elems[pos as usize].meets(lo, hi)
                });
            let stacks = st.stacks.clone();
            return viable.then_some(State { stacks, accept: false, cp, need, len });
        }
        if cp < least || (0xD800..=0xDFFF).contains(&cp) {
            return None;
        }
        let (mut live, mut accept) = (Vec::new(), false);
        for &s in st.stacks.iter() {
            let (pos, parent) = self.nodes[s as usize];
            if self.g.elems[pos as usize].matches(cp) {
                self.expand(pos + 1, parent, &mut live, &mut accept);
            }
        }
        if live.is_empty() && !accept {
            return None;
        }
        live.sort_unstable();
        live.dedup();
        Some(State { stacks: live.into(), accept, cp: 0, need: 0, len: 0 })
    }

    /// The stacks that reading from element `pos` (returning to `parent`) may be at before
    /// its next character, into `live`; `accept` when it can return past the bottom.
    fn expand(&mut self, pos: u32, parent: u32, live: &mut Vec<u32>, accept: &mut bool) {
        let g = self.g.clone();
        let mut work = vec![(pos, parent)];
        let mut seen: Vec<(u32, u32)> = Vec::new();
        while let Some((pos, parent)) = work.pop() {
            if seen.contains(&(pos, parent)) {
                continue;
            }
            seen.push((pos, parent));
            match &g.elems[pos as usize] {
                Elem::End if parent == BOTTOM => *accept = true,
                Elem::End => work.push(self.nodes[parent as usize]),
                Elem::Rule(r) => {
                    // A reference at the end of its alternative returns where that one would.
                    let ret = if g.elems[pos as usize + 1] == Elem::End {
                        parent
                    } else {
                        self.node(pos + 1, parent)
                    };
                    for &a in &g.rules[*r as usize] {
                        work.push((a, ret));
                    }
                }
                Elem::Chars { .. } | Elem::Any => live.push(self.node(pos, parent)),
            }
        }
    }

    fn node(&mut self, pos: u32, parent: u32) -> u32 {
        if let Some(&id) = self.node_ids.get(&(pos, parent)) {
            return id;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push((pos, parent));
        self.node_ids.insert((pos, parent), id);
        id
    }

    fn intern(&mut self, s: State) -> u32 {
        if let Some(&id) = self.state_ids.get(&s) {
            return id;
        }
        let id = self.states.len() as u32;
        self.states.push(s.clone());
        self.state_ids.insert(s, id);
        self.next.push([UNKNOWN; 256]);
        id
    }

    fn compact_if_large(&mut self) {
        if self.nodes.len() > MAX_NODES || self.states.len() >= MAX_STATES {
            self.compact();
        }
    }

    /// Rebuilds the arena and the tables from the current state alone.
    fn compact(&mut self) {
        let cur = self.states[self.cur as usize].clone();
        let old = std::mem::take(&mut self.nodes);
        self.node_ids.clear();
        self.states.clear();
        self.state_ids.clear();
        self.next.clear();
        let mut stacks = Vec::with_capacity(cur.stacks.len());
        for &s in cur.stacks.iter() {
            let mut chain = Vec::new();
            let mut at = s;
            while at != BOTTOM {
                chain.push(old[at as usize].0);
                at = old[at as usize].1;
            }
            let mut parent = BOTTOM;
            for &pos in chain.iter().rev() {
                parent = self.node(pos, parent);
            }
            stacks.push(parent);
        }
        stacks.sort_unstable();
        self.cur = self.intern(State { stacks: stacks.into(), ..cur });
    }
}

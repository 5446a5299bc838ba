//! Byte-level mutations of seed inputs, the mix libFuzzer and AFL use without coverage:
//! a random stack of 1-4 edits per input.

/// A seeded mutation engine.
pub struct Mutator {
    state: u64,
}

const INTERESTING: [u64; 10] =
    [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 40, u64::MAX];

impl Mutator {
    /// A mutator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Mutator { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1 }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// A new input: one of `seeds` with a few random edits.
    pub fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut b = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(4) {
            self.edit(&mut b, seeds);
        }
        b
    }

    fn edit(&mut self, b: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let n = b.len();
        match self.below(9) {
            0 if n > 0 => {
                let i = self.below(n);
                b[i] ^= 1 << self.below(8);
            }
            1 if n > 0 => {
                let i = self.below(n);
                b[i] = self.next() as u8;
            }
            2 if n >= 8 => {
                // An interesting integer at an aligned offset: where lengths and counts live.
                let width = [1, 2, 4, 8][self.below(4)];
                let i = self.below(n - width + 1) / width * width;
                let v = INTERESTING[self.below(INTERESTING.len())].to_le_bytes();
                b[i..i + width].copy_from_slice(&v[..width]);
            }
            3 => {
                let i = self.below(n + 1);
                let len = 1 + self.below(16);
                let bytes: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
                b.splice(i..i, bytes);
            }
            4 if n > 0 => {
                let i = self.below(n);
                let len = 1 + self.below((n - i).min(64));
                b.drain(i..i + len);
            }
            5 if n > 0 => {
                let i = self.below(n);
                let len = 1 + self.below((n - i).min(64));
                let copy = b[i..i + len].to_vec();
                let at = self.below(n + 1);
                b.splice(at..at, copy);
            }
            6 => {
                let other = &seeds[self.below(seeds.len())];
                if !other.is_empty() {
                    let cut = self.below(n + 1);
                    let from = self.below(other.len());
                    b.truncate(cut);
                    b.extend_from_slice(&other[from..]);
                }
            }
            7 => b.truncate(self.below(n + 1)),
            _ if n > 0 => {
                // ASCII edits reach text formats (JSON, templates) past their first byte.
                let i = self.below(n);
                b[i] = b"{}[]\"\\:,0-9.%{{}}()<>'"[self.below(22)];
            }
            _ => b.push(self.next() as u8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_repeatable_and_change_inputs() {
        let seeds = vec![b"GGUF seed bytes for the test".to_vec()];
        let (mut a, mut b) = (Mutator::new(7), Mutator::new(7));
        let xs: Vec<Vec<u8>> = (0..50).map(|_| a.mutate(&seeds)).collect();
        let ys: Vec<Vec<u8>> = (0..50).map(|_| b.mutate(&seeds)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().filter(|x| **x != seeds[0]).count() > 40);
    }
}

//! [`AlignedBuf`]: a growable buffer whose elements start on a 64-byte boundary, for the
//! activations and scratch the kernels stream through with 64-byte loads and stores.
//!
//! Why: a `Vec` below the huge-page allocator's threshold comes from the system allocator,
//! which aligns to 16 bytes, so a kernel buffer started 16, 32 or 48 bytes into a cache line
//! depending on what the process had allocated before — down to the length of the program's
//! path. Every AVX-512 store into the T2 GEMM's decoded codes and every load from them then
//! split across two lines: the 2B4T decode at 8 sequences ran 51-53 tok/s when the binary
//! was started as `target/release/onebit` and 58-62 as `/work/main/target/release/onebit`
//! (one thread, Xeon, alternating runs; bench/runs/2026-12-06-xeon-aligned-scratch.txt).
//! The buffer over-allocates one line and starts at the first aligned element, in safe code.

/// The boundary every buffer starts on: a cache line, one AVX-512 register, one AMX tile row.
pub const LINE: usize = 64;

/// A buffer of `len` elements of `T` starting on a [`LINE`] boundary (when `T`'s size
/// divides it; otherwise wherever the allocation starts).
#[derive(Debug, Default)]
pub struct AlignedBuf<T> {
    v: Vec<T>,
    at: usize,
    len: usize,
}

impl<T: Copy + Default> AlignedBuf<T> {
    /// A buffer of `len` default elements.
    pub fn new(len: usize) -> Self {
        let mut b = AlignedBuf { v: Vec::new(), at: 0, len: 0 };
        b.resize(len);
        b
    }

    /// Elements of slack that let the start move to a boundary.
    fn pad() -> usize {
        LINE / std::mem::size_of::<T>().clamp(1, LINE)
    }

    /// Makes the buffer `len` elements long, keeping the first `min(len, old len)` values;
    /// new elements are `T::default()`.
    pub fn resize(&mut self, len: usize) {
        let kept = self.len.min(len);
        if self.at + len > self.v.len() {
            let mut v = vec![T::default(); len + Self::pad()];
            let at = Self::offset(&v);
            v[at..at + kept].copy_from_slice(&self.v[self.at..self.at + kept]);
            self.v = v;
            self.at = at;
        } else {
            self.v[self.at + kept..self.at + len].fill(T::default());
        }
        self.len = len;
    }

    /// The first element index of `v` on a boundary (0 where none is within the slack).
    fn offset(v: &[T]) -> usize {
        let at = v.as_ptr().align_offset(LINE);
        if at < Self::pad() {
            at
        } else {
            0
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        &self.v[self.at..self.at + self.len]
    }

    /// The elements, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.v[self.at..self.at + self.len]
    }

    /// The first `len` elements, growing the buffer (with default values) when it is shorter:
    /// a thread's scratch for one call.
    pub fn scratch(&mut self, len: usize) -> &mut [T] {
        if len > self.len {
            self.resize(len);
        }
        &mut self.as_mut_slice()[..len]
    }
}

impl<T: Copy + Default> Clone for AlignedBuf<T> {
    /// A copy aligned on its own allocation (the original's offset would not be).
    fn clone(&self) -> Self {
        let mut b = AlignedBuf::new(self.len);
        b.as_mut_slice().copy_from_slice(self.as_slice());
        b
    }
}

impl<T> AlignedBuf<T> {
    /// An empty buffer, usable in `const` contexts (thread-local scratch).
    pub const fn empty() -> Self {
        AlignedBuf { v: Vec::new(), at: 0, len: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffer_starts_on_a_line_and_keeps_its_values_when_it_grows() {
        for len in [0usize, 1, 7, 63, 64, 65, 1000, 5000] {
            let mut b = AlignedBuf::<i8>::new(len);
            assert_eq!(b.len(), len);
            // An empty buffer allocates nothing and has no address to align.
            assert!(
                len == 0 || (b.as_slice().as_ptr() as usize).is_multiple_of(LINE),
                "i8 x {len}"
            );
            b.as_mut_slice().iter_mut().enumerate().for_each(|(i, v)| *v = i as i8);
            b.resize(len * 3 + 100);
            assert_eq!(b.as_slice().as_ptr() as usize % LINE, 0);
            assert!(b.as_slice()[..len].iter().enumerate().all(|(i, &v)| v == i as i8));
            assert!(b.as_slice()[len..].iter().all(|&v| v == 0));
            let c = b.clone();
            assert_eq!(c.as_slice(), b.as_slice());
            assert_eq!(c.as_slice().as_ptr() as usize % LINE, 0);
            let mut f = AlignedBuf::<f32>::new(len);
            assert!(
                len == 0 || (f.as_slice().as_ptr() as usize).is_multiple_of(LINE),
                "f32 x {len}"
            );
            assert_eq!(f.scratch(len + 9).len(), len + 9);
            assert_eq!(f.as_slice().as_ptr() as usize % LINE, 0);
        }
        let mut s = AlignedBuf::<u8>::empty();
        assert!(s.is_empty());
        assert_eq!(s.scratch(300).len(), 300);
        assert_eq!(s.scratch(10).len(), 10);
        assert_eq!(s.len(), 300, "a shorter scratch keeps the buffer");
        // Shrinking keeps the prefix and allocates nothing; growing back reads defaults.
        s.as_mut_slice().fill(7);
        let p = s.as_slice().as_ptr();
        s.resize(5);
        assert_eq!((s.len(), s.as_slice().as_ptr()), (5, p));
        s.resize(300);
        assert_eq!(s.as_slice().as_ptr(), p);
        assert!(
            s.as_slice()[..5].iter().all(|&v| v == 7) && s.as_slice()[5..].iter().all(|&v| v == 0)
        );
    }
}

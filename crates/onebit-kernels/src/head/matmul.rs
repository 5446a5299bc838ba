//! The head matmul: rows split over the pool, L2-sized row blocks shared by every token,
//! the dot product of the selected ISA (on AVX-512, four rows × four tokens per tile once
//! there are four tokens; on AVX2, four rows × two tokens once there are two); on AMX,
//! batches of tokens take `amx` for all but the last rows of each thread's range. Tokens
//! left over from the tiles (one-token decode) run at [`Isa::rows`], which on an AMD CPU
//! with AVX-512 is AVX2: one row at a time, a single sequential stream of the head.

use super::Q8Matrix;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use crate::dispatch::{CpuFeatures, Isa};
use crate::pool::{split, SyncPtr, ThreadPool};
use crate::quant::ActQuant;

thread_local! {
    /// Widened 4-bit rows of the block a thread is working on.
    static WIDE: std::cell::RefCell<crate::AlignedBuf<i8>> =
        const { std::cell::RefCell::new(crate::AlignedBuf::empty()) };
}

/// Σ w·q over one padded row, plain Rust (the definition of correct).
pub fn dot_scalar(w: &[i8], q: &[i8]) -> i32 {
    w.iter().zip(q).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// `out[t·rows + r]` for every token of `x`, rows split over the pool, at [`Isa::selected`]
/// (tokens left over from the tiles at [`Isa::rows`]).
pub fn q8_matmul(
    pool: &ThreadPool,
    m: &Q8Matrix,
    x: &ActQuant,
    out: &mut [f32],
) -> crate::Result<()> {
    q8_matmul_with(pool, Isa::selected(), Isa::rows(), m, x, out)
}

/// [`q8_matmul`] with the head kernels of `isa` (AMX shares the AVX-512 rows; NEON has no
/// head kernel of its own yet and runs the scalar one, which the compiler vectorizes).
pub fn q8_matmul_on(
    pool: &ThreadPool,
    isa: Isa,
    m: &Q8Matrix,
    x: &ActQuant,
    out: &mut [f32],
) -> crate::Result<()> {
    q8_matmul_with(pool, isa, isa, m, x, out)
}

/// The head with the tiles (several tokens) of `isa` and the one-token rows of `row_isa`.
pub(super) fn q8_matmul_with(
    pool: &ThreadPool,
    isa: Isa,
    row_isa: Isa,
    m: &Q8Matrix,
    x: &ActQuant,
    out: &mut [f32],
) -> crate::Result<()> {
    if x.cols() != m.cols {
        return Err(crate::Error::Mismatch {
            op: "q8_matmul cols",
            expected: m.cols,
            found: x.cols(),
        });
    }
    if out.len() < x.tokens() * m.rows {
        return Err(crate::Error::Mismatch {
            op: "q8_matmul out",
            expected: x.tokens() * m.rows,
            found: out.len(),
        });
    }
    for isa in [isa, row_isa] {
        if !CpuFeatures::get().has(isa) {
            return Err(crate::Error::Unavailable(format!("q8 head/{}", isa.name())));
        }
    }
    let path = HeadPath::of(isa);
    let row_path = HeadPath::of(row_isa);
    #[cfg(target_arch = "x86_64")]
    if m.bits == 4 && path == HeadPath::Avx512 {
        super::q4_avx512::q4_matmul_avx512(pool, m, x, out);
        return Ok(());
    }
    let threads = pool.threads();
    let outp = SyncPtr(out.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let on_amx = isa == Isa::Amx && m.bits == 8 && x.tokens() >= super::amx::MIN_TOKENS;
    pool.run(&|i| {
        let rows = split(m.rows, threads, i, 16);
        #[allow(unused_mut)]
        let mut b0 = rows.start;
        #[cfg(target_arch = "x86_64")]
        if on_amx {
            let end = b0 + (rows.end - b0) / super::amx::BLOCK_ROWS * super::amx::BLOCK_ROWS;
            // SAFETY: the CPU has AMX (checked above); 8-bit rows; rows b0..end are this
            // thread's; out holds tokens × rows floats (checked above).
            unsafe { super::amx::rows(m, x, b0, end, outp.get()) };
            b0 = end;
        }
        // Blocks of rows small enough to stay in L2 while every token passes over them, so
        // a batch of tokens reads the head from memory once, not once per token. The first
        // pass over a block (t0 == 0) is the one that waits on memory: its tiles prefetch the
        // next four rows into L2 (`ahead`), which the hardware prefetcher did not do for four
        // interleaved row streams. `onebit bench-kernels --head 128256x2560`, Zen 4, 2
        // threads: AVX-512 tiles at 4 tokens 16.3 → 8.9-12.0 ms, 16 tokens 26.2 → 19.3-21.5;
        // AVX2 tiles at 2 tokens 17.7 → 10.5-11.5, 16 tokens 55 → 44-49 (into L1 instead:
        // a third of that gain); bench/runs/2026-12-07-zen4-head-prefetch.txt.
        WIDE.with(|wide| {
            let mut wide = wide.borrow_mut();
            let wide = wide.scratch(if m.bits == 4 { ROW_BLOCK * m.padded } else { 0 });
            while b0 < rows.end {
                let b1 = (b0 + ROW_BLOCK).min(rows.end);
                if m.bits == 4 {
                    for r in b0..b1 {
                        m.unpack_row(r, &mut wide[(r - b0) * m.padded..(r - b0 + 1) * m.padded]);
                    }
                }
                let wide: &[i8] = wide;
                let row = |r: usize| -> &[i8] {
                    if m.bits == 4 {
                        &wide[(r - b0) * m.padded..(r - b0 + 1) * m.padded]
                    } else {
                        m.row(r)
                    }
                };
                // The AVX-512 dot products add 128 to every activation (`vpdpbusd` is u8 × s8).
                let put_from = |p: HeadPath, t: usize, r: usize, v: i32| {
                    let v = if p == HeadPath::Avx512 { v - 128 * m.wsum[r] } else { v };
                    // SAFETY: rows are split disjointly; t·rows + r < out.len() by the check above.
                    unsafe {
                        *outp.get().add(t * m.rows + r) = v as f32 * m.scale[r] / x.scales()[t]
                    };
                };
                let put = |t: usize, r: usize, v: i32| put_from(path, t, r, v);
                #[allow(unused_mut)] // only the x86-64 tile loop below advances it
                let mut t0 = 0;
                #[cfg(target_arch = "x86_64")]
                if path == HeadPath::Avx512 {
                    // Four tokens at a time: four rows × four tokens per tile.
                    let q = |t: usize| &x.row(t)[..m.padded];
                    while t0 + 4 <= x.tokens() {
                        let qs = [q(t0), q(t0 + 1), q(t0 + 2), q(t0 + 3)];
                        let mut r = b0;
                        while r + 4 <= b1 {
                            let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                            // SAFETY: features checked above; every slice holds `padded` bytes.
                            let s = unsafe { avx512::dot4x4(rows, qs, t0 == 0) };
                            for (i, s) in s.iter().enumerate() {
                                for (j, &v) in s.iter().enumerate() {
                                    put(t0 + j, r + i, v);
                                }
                            }
                            r += 4;
                        }
                        for r in r..b1 {
                            for (j, q) in qs.iter().enumerate() {
                                // SAFETY: features checked above; row r exists.
                                put(t0 + j, r, unsafe { avx512::dot(row(r), q) });
                            }
                        }
                        t0 += 4;
                    }
                }
                #[cfg(target_arch = "x86_64")]
                if path == HeadPath::Avx2 {
                    // Two tokens × four rows per tile; a last token goes row by row below, as
                    // one-token decode did before the tiles (a 4-row tile at one token was
                    // 3-9 % slower in the one run that tried it).
                    let q = |t: usize| &x.row(t)[..m.padded];
                    while t0 + 2 <= x.tokens() {
                        let qs = [q(t0), q(t0 + 1)];
                        let mut r = b0;
                        while r < b1 {
                            let emit = |s: &[[i32; 2]]| {
                                for (i, s) in s.iter().enumerate() {
                                    for (j, &v) in s.iter().enumerate() {
                                        put(t0 + j, r + i, v);
                                    }
                                }
                            };
                            if r + 4 <= b1 {
                                let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                                // SAFETY: AVX2 checked above; rows and tokens hold `padded`
                                // bytes; head codes are in ±127, activations ≥ −127.
                                emit(&unsafe { avx2::dot_tile::<4, 2>(rows, qs, t0 == 0) });
                                r += 4;
                            } else {
                                // SAFETY: as above, for one row.
                                emit(&unsafe { avx2::dot_tile::<1, 2>([row(r)], qs, false) });
                                r += 1;
                            }
                        }
                        t0 += 2;
                    }
                }
                for t in t0..x.tokens() {
                    let q = &x.row(t)[..m.padded];
                    let mut r = b0;
                    while r < b1 {
                        // Four rows at a time share the activation loads on AVX-512.
                        let n = if row_path == HeadPath::Avx512 { 4.min(b1 - r) } else { 1 };
                        let mut acc = [0i32; 4];
                        match (row_path, n) {
                            #[cfg(target_arch = "x86_64")]
                            (HeadPath::Avx512, 4) => {
                                // SAFETY: features checked above; rows r..r+4 exist and hold `padded` bytes.
                                acc = unsafe {
                                    avx512::dot4([row(r), row(r + 1), row(r + 2), row(r + 3)], q)
                                }
                            }
                            #[cfg(target_arch = "x86_64")]
                            (HeadPath::Avx512, _) => {
                                for (i, a) in acc.iter_mut().enumerate().take(n) {
                                    // SAFETY: features checked above; row r + i exists.
                                    *a = unsafe { avx512::dot(row(r + i), q) };
                                }
                            }
                            // SAFETY: AVX2 checked above; one padded row.
                            #[cfg(target_arch = "x86_64")]
                            (HeadPath::Avx2, _) => acc[0] = unsafe { avx2::dot(row(r), q) },
                            _ => acc[0] = dot_scalar(row(r), q),
                        }
                        for (i, &v) in acc.iter().enumerate().take(n) {
                            put_from(row_path, t, r + i, v);
                        }
                        r += n;
                    }
                }
                b0 = b1;
            }
        });
    });
    Ok(())
}

/// Which head kernel an [`Isa`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadPath {
    Scalar,
    Avx2,
    Avx512,
}

impl HeadPath {
    fn of(isa: Isa) -> HeadPath {
        match isa {
            Isa::Avx2 => HeadPath::Avx2,
            Isa::Avx512 | Isa::Amx => HeadPath::Avx512,
            Isa::Scalar | Isa::Neon | Isa::NeonDot => HeadPath::Scalar,
        }
    }
}

/// Rows per L2-resident block of [`q8_matmul`] (32 rows of a 2560-wide head: 80 KB).
pub(super) const ROW_BLOCK: usize = 32;

//! The kernel interface: the operands every ternary kernel takes ([`MatmulArgs`]) and the
//! signature every kernel has ([`MatmulFn`]), shared by the GEMV, GEMM and LUT families and
//! checked once in [`crate::dispatch`].

/// Operands of one matrix product `out[t][r] = Σ_k W[r][k]·x[t][k]` over packed rows.
///
/// Built and checked by [`crate::dispatch`]; kernels trust it. `w` holds whole packed rows of
/// `row_bytes` each (for the Lut layout, whole 32-row tiles of `row_bytes` each).
#[derive(Clone, Copy, Debug)]
pub struct MatmulArgs<'a> {
    /// Packed weights, all rows.
    pub w: &'a [u8],
    /// Bytes per packed row (per tile for Lut).
    pub row_bytes: usize,
    /// Logical columns.
    pub cols: usize,
    /// Logical rows.
    pub rows: usize,
    /// Quantized activations, `tokens x act_stride`, zero-padded.
    pub act: &'a [i8],
    /// Row stride of `act`.
    pub act_stride: usize,
    /// Per-token activation scales `a_t`.
    pub act_scale: &'a [f32],
    /// Per-token Σ q.
    pub act_sum: &'a [i32],
    /// Tokens.
    pub tokens: usize,
    /// Weight multiplier.
    pub w_scale: f32,
    /// Output, `tokens x out_stride` f32; kernels write rows of their range only.
    pub out: *mut f32,
    /// Row stride of `out` (≥ rows).
    pub out_stride: usize,
}

// SAFETY: `out` is only written at disjoint row ranges by the threads that share the args
// (the pool hands each thread its own range).
unsafe impl Send for MatmulArgs<'_> {}
// SAFETY: as above.
unsafe impl Sync for MatmulArgs<'_> {}

impl MatmulArgs<'_> {
    /// Writes one output already scaled by `factor` (= [`crate::quant::dequant_factor`] of
    /// token t), for kernels that hoist the factor out of a column.
    ///
    /// # Safety
    /// As for [`MatmulArgs::store`].
    #[inline(always)]
    pub unsafe fn store_with(&self, t: usize, r: usize, acc: i32, factor: f32) {
        debug_assert!(t < self.tokens && r < self.rows);
        // SAFETY: in bounds by the caller's contract and the checks in dispatch.
        unsafe { *self.out.add(t * self.out_stride + r) = acc as f32 * factor };
    }

    /// Writes the outputs of token `t` for rows `r..r + accs.len()`: `(acc − offset)·factor`,
    /// as [`MatmulArgs::store_with`] does one at a time (contiguous, so it vectorizes).
    ///
    /// # Safety
    /// As for [`MatmulArgs::store`], for every row written.
    #[inline(always)]
    pub unsafe fn store_run(&self, t: usize, r: usize, accs: &[i32], offset: i32, factor: f32) {
        debug_assert!(t < self.tokens && r + accs.len() <= self.rows);
        // SAFETY: in bounds by the caller's contract and the checks in dispatch; rows
        // r..r + len of token t belong to the calling thread only.
        let out = unsafe {
            std::slice::from_raw_parts_mut(self.out.add(t * self.out_stride + r), accs.len())
        };
        for (o, &acc) in out.iter_mut().zip(accs) {
            *o = (acc - offset) as f32 * factor;
        }
    }

    /// Writes one output.
    ///
    /// # Safety
    /// `t < tokens`, `r < rows`, and no other thread writes row `r`.
    #[inline(always)]
    pub unsafe fn store(&self, t: usize, r: usize, acc: i32) {
        debug_assert!(t < self.tokens && r < self.rows);
        let v = crate::quant::dequantize(acc, self.act_scale[t], self.w_scale);
        // SAFETY: in bounds by the caller's contract and the checks in dispatch.
        unsafe { *self.out.add(t * self.out_stride + r) = v };
    }
}

/// A kernel: computes rows `r0..r1` of the output for all tokens.
///
/// # Safety
/// The CPU supports the kernel's ISA, `args` passed [`crate::dispatch`]'s checks, and
/// no other thread writes rows `r0..r1` concurrently.
pub type MatmulFn = unsafe fn(args: &MatmulArgs<'_>, r0: usize, r1: usize);

//! [`HugePageAlloc`]: a global allocator that backs large allocations (model weights, the
//! quantized head, the KV cache) with transparent huge pages.
//!
//! Why: a decode step streams every weight once, hundreds of MB, and with 4 KiB pages the
//! TLB misses on every page. Most Linux distributions ship THP in `madvise` mode, so a
//! region gets 2 MiB pages only when the program asks with `MADV_HUGEPAGE` before touching
//! it. Measured on the 2b4t shape (Xeon, 2 threads, same run, THP switched system-wide as
//! a stand-in): tg128 26.2–26.9 tok/s with huge pages against 24.4–24.8 without; with this
//! allocator in the `onebit` binary, A/B alternated in one run: tg128 24.95 → 30.15 tok/s,
//! pp512 245 → 311 (the figures the crate README quotes).
//!
//! How: allocations of at least [`HUGE_MIN`] bytes are their own anonymous mapping whose
//! start is aligned to 2 MiB (a larger mapping is made and its unaligned ends unmapped), so
//! every whole 2 MiB piece can be a huge page. The mapping's end is rounded up to 2 MiB too
//! when that wastes at most a quarter of the size, so a 1.6 MiB matrix still gets one huge
//! page. Everything else goes to the system allocator. Binaries opt in with
//! `#[global_allocator] static A: HugePageAlloc = HugePageAlloc;`; on other systems than
//! Linux it is the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// Size of a transparent huge page on x86-64 and most aarch64 kernels.
pub const HUGE_PAGE: usize = 2 << 20;

/// Allocations at least this large get their own huge-page-advised mapping.
pub const HUGE_MIN: usize = 1 << 20;

/// The system allocator, except that large blocks are 2 MiB-aligned mappings advised for
/// transparent huge pages (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePageAlloc;

/// Bytes actually mapped for a large allocation of `size` bytes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn mapped_len(size: usize) -> usize {
    let pages = size.next_multiple_of(4096);
    let whole = size.next_multiple_of(HUGE_PAGE);
    if whole - size <= size / 4 {
        whole
    } else {
        pages
    }
}

fn is_large(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= HUGE_MIN && layout.align() <= HUGE_PAGE
}

// SAFETY: large blocks come from `map_huge`, are exactly `layout.size()` bytes or more, aligned
// to 2 MiB (≥ any alignment we accept), and are released by `unmap` with the same length
// computed from the same layout; all other blocks are the system allocator's.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            map_huge(layout.size())
        } else {
            // SAFETY: forwarded with the caller's contract.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            // Fresh anonymous mappings read as zero: no memset, and untouched pages stay free.
            map_huge(layout.size())
        } else {
            // SAFETY: forwarded with the caller's contract.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) {
            // SAFETY: `ptr` came from `map_huge(layout.size())` (same layout, by the contract).
            unsafe { unmap(ptr, layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's contract.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` > 0 and fits `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_large(layout) && !is_large(new_layout) {
            // SAFETY: both blocks are the system allocator's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if is_large(layout)
            && is_large(new_layout)
            && mapped_len(new_size) == mapped_len(layout.size())
        {
            // The same mapping still fits, and `dealloc` with the new size unmaps the same length.
            return ptr;
        }
        // SAFETY: `new_layout` has a non-zero size (caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(target_os = "linux")]
fn map_huge(size: usize) -> *mut u8 {
    let len = mapped_len(size);
    let span = len + HUGE_PAGE;
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory; the result is checked against MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let start = (base as usize).next_multiple_of(HUGE_PAGE);
    let (head, tail) = (start - base as usize, base as usize + span - (start + len));
    // SAFETY: both ranges lie inside the mapping just made and outside [start, start + len);
    // they are page-aligned because base, start and len are.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        // Advice only: if THP is off ("never") this fails harmlessly and the block still works.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    start as *mut u8
}

#[cfg(target_os = "linux")]
unsafe fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr` is the start of a mapping of `mapped_len(size)` bytes made by `map_huge`.
    unsafe { libc::munmap(ptr as *mut libc::c_void, mapped_len(size)) };
}

#[cfg(not(target_os = "linux"))]
fn map_huge(_size: usize) -> *mut u8 {
    unreachable!("large blocks are only mapped on Linux")
}

#[cfg(not(target_os = "linux"))]
unsafe fn unmap(_ptr: *mut u8, _size: usize) {
    unreachable!("large blocks are only mapped on Linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_length_rounds_to_a_huge_page_only_when_cheap() {
        assert_eq!(mapped_len(HUGE_MIN), HUGE_MIN); // 1 MiB → 2 MiB would waste 100 %
        assert_eq!(mapped_len(1_700_000), HUGE_PAGE); // 1.6 MiB → one huge page
        assert_eq!(mapped_len(4_423_680), 4_423_680usize.next_multiple_of(4096));
        assert_eq!(mapped_len(3 * HUGE_PAGE), 3 * HUGE_PAGE);
    }

    #[test]
    fn large_and_small_blocks_allocate_grow_shrink_and_free() {
        let a = HugePageAlloc;
        for &(size, grow) in
            &[(64usize, 5000usize), (100_000, 3 << 20), (3 << 20, 7 << 20), (5 << 20, 1000)]
        {
            for align in [8usize, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; the block is used within its size and freed once.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0);
                    if is_large(layout) {
                        assert_eq!(p as usize % HUGE_PAGE, 0);
                    }
                    let s = std::slice::from_raw_parts_mut(p, size);
                    assert!(s.iter().all(|&b| b == 0));
                    for (i, b) in s.iter_mut().enumerate() {
                        *b = (i % 251) as u8;
                    }
                    let q = a.realloc(p, layout, grow);
                    assert!(!q.is_null());
                    let kept = size.min(grow);
                    let s = std::slice::from_raw_parts(q, kept);
                    assert!(s.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                    a.dealloc(q, Layout::from_size_align(grow, align).unwrap());
                }
            }
        }
    }
}

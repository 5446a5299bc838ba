//! The crate's only unsafe code: mapping a model file read-only.

#![allow(unsafe_code)]

use crate::error::{Error, Result};
use std::fs::File;

/// A read-only memory map of a whole file.
pub struct Mapped(memmap2::Mmap);

impl Mapped {
    /// Maps `path`.
    ///
    /// The file must not be modified while mapped (onebit never writes a file it reads);
    /// another process truncating it would make reads fault, which memmap2 cannot prevent.
    pub fn open(path: &str) -> Result<Mapped> {
        let io = |source| Error::Io { path: path.to_string(), source };
        // Checked before opening: opening a FIFO blocks until a writer appears, and a device
        // or folder maps to nonsense or fails with an unrelated OS message.
        let meta = std::fs::metadata(path).map_err(io)?;
        let kind = meta.file_type();
        let not_file = |what: &'static str| Err(Error::NotAFile { path: path.into(), what });
        if kind.is_dir() {
            return not_file("a folder");
        }
        if !kind.is_file() {
            return not_file("not a regular file (a FIFO, socket or device)");
        }
        if meta.len() == 0 {
            return not_file("empty");
        }
        let f = File::open(path).map_err(io)?;
        // SAFETY: read-only map of a file we do not modify; see the contract above.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        Ok(Mapped(m))
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Drops this process's resident pages of the map (they stay in the page cache and fault
    /// back in on the next read), so bytes copied out at load stop counting in RSS.
    pub fn release(&self) {
        // SAFETY: DONTNEED on a read-only, file-backed private map only discards our page
        // references; later reads see the file's contents again, which we never modify.
        #[cfg(unix)]
        let _ = unsafe { self.0.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }

    /// [`Mapped::release`] for the pages wholly inside `range` only.
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        const PAGE: usize = 4096;
        let (start, end) = (range.start.div_ceil(PAGE) * PAGE, range.end / PAGE * PAGE);
        if start < end && end <= self.0.len() {
            // SAFETY: as in `release`: a read-only, file-backed private map; discarding our
            // page references only makes later reads fault the file's contents back in.
            #[cfg(unix)]
            let _ = unsafe {
                self.0.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

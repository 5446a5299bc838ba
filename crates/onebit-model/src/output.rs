//! One output discipline for every file the project writes: bytes go to a temporary file in
//! the target's folder, are synced, and replace the target by a rename only when complete,
//! so a failure or a kill leaves either the old file or the new one, never a torn one. An
//! output path that is one of the inputs, or that is not a regular file, is refused before
//! anything is written.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file being written; it appears at its path on [`AtomicFile::commit`] and is removed if
/// dropped before.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<File>>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

impl AtomicFile {
    /// Starts writing `path` (through a temporary file beside it).
    pub fn create(path: impl AsRef<Path>) -> Result<AtomicFile> {
        let path = path.as_ref().to_path_buf();
        check_output(&path, &[])?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        Ok(AtomicFile { path, tmp, file: Some(std::io::BufWriter::with_capacity(1 << 22, file)) })
    }

    /// Syncs the data and renames the temporary file onto the target path.
    pub fn commit(mut self) -> Result<()> {
        let w = self.file.take().expect("not yet committed");
        let file = w.into_inner().map_err(|e| Error::Io {
            path: self.tmp.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(&self.tmp))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        // The rename is durable once the folder's entry is.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Overwrites bytes already written at `offset` (a header field whose value is known only
    /// once everything after it is written).
    pub fn patch(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let tmp = self.tmp.clone();
        let w = self.file.as_mut().expect("not yet committed");
        let end = w.stream_position().map_err(io(&tmp))?;
        w.seek(SeekFrom::Start(offset)).map_err(io(&tmp))?;
        w.write_all(bytes).map_err(io(&tmp))?;
        w.seek(SeekFrom::Start(end)).map_err(io(&tmp))?;
        Ok(())
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.as_mut().expect("not yet committed").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("not yet committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path.as_ref())?;
    f.write_all(bytes).map_err(io(path.as_ref()))?;
    f.commit()
}

/// Refuses an output path that is not a regular file (a folder, a FIFO, a device) or that is
/// the same file as one of `inputs` (writing it would destroy the input while it is read).
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    let bad = |why: String| Err(Error::Output { path: out.display().to_string(), why });
    if let Ok(meta) = std::fs::metadata(out) {
        if !meta.is_file() {
            return bad("exists and is not a regular file".into());
        }
        for input in inputs {
            if same_file(out, input) {
                return bad(format!("is the input {}; write to another path", input.display()));
            }
        }
    }
    match out.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => bad(format!("folder {} does not exist", dir.display())),
        _ => Ok(()),
    }
}

/// Refuses to replace an existing file at `out` that is not a `kind` file (does not start
/// with `magic`): `export run/checkpoint.safetensors -o run/checkpoint.safetensors`, or any
/// slip that would turn a user's other file into a model.
pub fn check_replaces(out: &Path, magic: &[u8], kind: &str) -> Result<()> {
    let Ok(mut f) = File::open(out) else { return Ok(()) };
    let mut head = vec![0u8; magic.len()];
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    if n == 0 || (n == magic.len() && head == magic) {
        return Ok(());
    }
    Err(Error::Output {
        path: out.display().to_string(),
        why: format!("exists and is not a {kind} file; refusing to replace it"),
    })
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_file_leaves_the_old_contents_and_no_temporary() {
        let tmp = tempfile::Builder::new().prefix("onebit-atomic-").tempdir().unwrap();
        let dir = tmp.path();
        let p = dir.join("m.gguf");
        std::fs::write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half of the new").unwrap();
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(check_output(&p, &[&p]).is_err());
        assert!(check_output(dir, &[]).is_err());
        assert!(check_output(&dir.join("missing/x.gguf"), &[]).is_err());
    }
}

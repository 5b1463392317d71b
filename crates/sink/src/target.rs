//! Atomic output files: data goes to a hidden temporary file next to the destination and is
//! renamed into place only by `commit`, so an export that fails or is interrupted leaves
//! neither a half-written file nor its temporary behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{temp, SinkError};

/// The destination of one sink: its final name and the temporary file it is written under.
/// Dropping it without `commit` removes the temporary file.
#[derive(Debug)]
pub(crate) struct OutputTarget {
    final_path: PathBuf,
    tmp_path: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl OutputTarget {
    /// Refuses an existing destination unless `overwrite`, then creates the temporary file in
    /// the destination's directory (same file system, so the final rename is atomic).
    pub(crate) fn create(path: &Path, overwrite: bool) -> Result<(Self, File), SinkError> {
        check_destination(path, overwrite)?;
        let name = path
            .file_name()
            .ok_or_else(|| SinkError::InvalidArgument {
                what: format!("output path {} has no file name", path.display()),
            })?
            .to_string_lossy()
            .into_owned();
        let tmp_path = temp::temp_path(&directory_of(path), &name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|source| SinkError::Io {
                path: tmp_path.clone(),
                during: "creating the temporary output file",
                source,
            })?;
        Ok((
            Self {
                final_path: path.to_path_buf(),
                tmp_path,
                overwrite,
                committed: false,
            },
            file,
        ))
    }

    pub(crate) fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Moves the finished temporary file to its final name and returns its size in bytes.
    pub(crate) fn commit(mut self) -> Result<u64, SinkError> {
        let bytes = fs::metadata(&self.tmp_path)
            .map_err(|source| self.io("reading the size of the finished file", source))?
            .len();
        if self.overwrite {
            fs::rename(&self.tmp_path, &self.final_path)
                .map_err(|source| self.io("renaming the temporary file into place", source))?;
        } else {
            self.commit_no_clobber()?;
        }
        self.committed = true;
        Ok(bytes)
    }

    /// Without overwrite, a file that appeared at the destination while we were writing must
    /// not be replaced. A hard link fails atomically if the name exists (rename would
    /// silently replace it); file systems without hard links fall back to check-then-rename.
    fn commit_no_clobber(&self) -> Result<(), SinkError> {
        match fs::hard_link(&self.tmp_path, &self.final_path) {
            Ok(()) => fs::remove_file(&self.tmp_path)
                .map_err(|source| self.io("removing the temporary file after linking", source)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SinkError::Exists {
                path: self.final_path.clone(),
            }),
            Err(_) => {
                check_destination(&self.final_path, false)?;
                fs::rename(&self.tmp_path, &self.final_path)
                    .map_err(|source| self.io("renaming the temporary file into place", source))
            }
        }
    }

    fn io(&self, during: &'static str, source: io::Error) -> SinkError {
        SinkError::Io {
            path: self.final_path.clone(),
            during,
            source,
        }
    }
}

impl Drop for OutputTarget {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: this runs on error and interrupt paths, where a second error
            // (e.g. the directory vanished) must not mask the first one.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// The directory a file at `path` goes in.
pub(crate) fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Ok if `path` may be written: it does not exist, or it is a file and `overwrite` is set.
pub(crate) fn check_destination(path: &Path, overwrite: bool) -> Result<(), SinkError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(SinkError::InvalidArgument {
            what: format!("output path {} is a directory", path.display()),
        }),
        Ok(_) if !overwrite => Err(SinkError::Exists {
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SinkError::Io {
            path: path.to_path_buf(),
            during: "checking the output path",
            source,
        }),
    }
}

/// The first I/O error seen by an [`ErrorTap`], shared with the sink that owns it.
pub(crate) type IoErrorSlot = Arc<Mutex<Option<io::Error>>>;

/// Passes writes through and keeps the first I/O error. The Parquet and IPC writers wrap I/O
/// errors in their own error types (parquet as a boxed `External`, sometimes re-wrapped), so
/// the sink reads the original `io::Error` (with its errno, e.g. ENOSPC) back from here.
pub(crate) struct ErrorTap<W> {
    inner: W,
    slot: IoErrorSlot,
}

impl<W: Write> ErrorTap<W> {
    pub(crate) fn new(inner: W, slot: IoErrorSlot) -> Self {
        Self { inner, slot }
    }

    pub(crate) fn into_inner(self) -> W {
        self.inner
    }

    fn record(&self, e: io::Error) -> io::Error {
        // `write_all` retries Interrupted itself; it is not a failure of the output.
        if e.kind() == io::ErrorKind::Interrupted {
            return e;
        }
        let copy = io::Error::new(e.kind(), e.to_string());
        if let Ok(mut slot) = self.slot.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        copy
    }
}

impl<W: Write> Write for ErrorTap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.record(e))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf).map_err(|e| self.record(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.record(e))
    }
}

/// Takes the recorded I/O error, if any, out of `slot`.
pub(crate) fn take_io_error(slot: &IoErrorSlot) -> Option<io::Error> {
    slot.lock().ok().and_then(|mut s| s.take())
}

//! Large-object bridges between a byte region (GPU memory another process
//! exported through CUDA IPC, or a host buffer) and a PostgreSQL large
//! object, as PG-Strom's `lo_import_gpu` and `lo_export_gpu` did
//! (`gpupgparser lo-import`, `gpupgparser lo-export`; docs/store.md).
//!
//! - [`import_region`]: bytes `offset..offset + length` of the region into
//!   a new large object, into one created with a given OID, or replacing
//!   the contents of an existing one (which keeps its OID, owner and
//!   privileges). One transaction: on any failure nothing changes.
//! - [`export_region`]: a large object into `offset..offset + length` of
//!   the region, the rest of that span zero-filled. An object longer than
//!   `length` is refused before anything is written.
//!
//! Offsets and lengths are checked against the region before any SQL runs.
//! Data moves in chunks of `chunk_bytes` ([`DEFAULT_CHUNK_BYTES`]) as binary
//! `bytea` (`lo_put` and `lo_get` over the extended protocol), so memory
//! stays bounded for regions of many gigabytes.
//!
//! ```no_run
//! use gpupg_source::{ConnectConfig, Connection};
//! use gpupg_store::large_object::{export_region, import_region, HostRegion, DEFAULT_CHUNK_BYTES};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut conn = Connection::connect(&ConnectConfig::resolve(None)?)?;
//! let region = HostRegion::new(b"some bytes".to_vec());
//! let done = import_region(&mut conn, &region, 5, 5, None, DEFAULT_CHUNK_BYTES)?;
//! let mut back = HostRegion::new(vec![1; 8]);
//! let n = export_region(&mut conn, done.oid, &mut back, 0, 8, DEFAULT_CHUNK_BYTES)?;
//! assert_eq!((n, back.as_slice()), (5, &b"bytes\0\0\0"[..]));
//! # Ok(()) }
//! ```

use gpupg_gpu::{GpuError, IpcHandle, MappedRegion};
use gpupg_source::large_object::{self as lo, Transaction, INV_READ, INV_WRITE, MAX_SIZE};
use gpupg_source::{Connection, SourceError};
use thiserror::Error;

/// Bytes moved per `lo_put` / `lo_get` by default (the commands use it).
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// The largest chunk used whatever is asked: a `bytea` value and a
/// protocol message stay far below their 1 GB limits.
pub const MAX_CHUNK_BYTES: usize = 256 << 20;

/// A span of bytes that can be read and written at offsets: a device
/// allocation mapped through CUDA IPC ([`MappedRegion`]) or host memory
/// ([`HostRegion`]).
pub trait ByteRegion {
    /// Bytes in the region.
    fn len(&self) -> u64;

    /// Whether the region has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the region is, for messages ("the allocation mapped on GPU 0").
    fn describe(&self) -> String;

    /// Copies `dst.len()` bytes at `offset` into `dst`.
    fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), GpuError>;

    /// Copies `src` to `offset`.
    fn write(&mut self, offset: u64, src: &[u8]) -> Result<(), GpuError>;

    /// Waits until every write is in place (device memory, for a mapping).
    fn flush(&mut self) -> Result<(), GpuError> {
        Ok(())
    }
}

impl ByteRegion for MappedRegion {
    fn len(&self) -> u64 {
        MappedRegion::len(self) as u64
    }

    fn describe(&self) -> String {
        format!("the allocation mapped on GPU {}", self.device())
    }

    fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), GpuError> {
        MappedRegion::read(self, offset, dst)
    }

    fn write(&mut self, offset: u64, src: &[u8]) -> Result<(), GpuError> {
        MappedRegion::write(self, offset, src)
    }

    fn flush(&mut self) -> Result<(), GpuError> {
        self.synchronize()
    }
}

/// Host memory as a [`ByteRegion`] (for tests and callers without a GPU).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostRegion(Vec<u8>);

impl HostRegion {
    /// A region holding `bytes` (its length is the region's).
    pub fn new(bytes: Vec<u8>) -> HostRegion {
        HostRegion(bytes)
    }

    /// The region's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    fn range(&self, offset: u64, len: usize) -> Result<std::ops::Range<usize>, GpuError> {
        let size = self.0.len();
        match usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(len)?))
        {
            Some(r) if r.end <= size => Ok(r),
            _ => Err(GpuError::OutOfRange {
                offset,
                len: len as u64,
                size: size as u64,
            }),
        }
    }
}

impl ByteRegion for HostRegion {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn describe(&self) -> String {
        "the host buffer".to_string()
    }

    fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), GpuError> {
        let r = self.range(offset, dst.len())?;
        dst.copy_from_slice(&self.0[r]);
        Ok(())
    }

    fn write(&mut self, offset: u64, src: &[u8]) -> Result<(), GpuError> {
        let r = self.range(offset, src.len())?;
        self.0[r].copy_from_slice(src);
        Ok(())
    }
}

/// What can go wrong moving bytes between a region and a large object.
/// Each message is one line naming the object, the bytes and the place.
#[derive(Debug, Error)]
pub enum LoError {
    /// Opening the region: a malformed or unopenable IPC handle (foreign,
    /// stale, exported by this very process), a device that does not
    /// exist, no GPU or no CUDA driver.
    #[error(transparent)]
    Gpu(Box<GpuError>),

    /// OID 0 names no large object.
    #[error("OID 0 is not a large object (large object OIDs are 1 and up)")]
    InvalidOid,

    /// `offset + length` does not fit in 64 bits.
    #[error("offset {offset} plus length {length} is past the largest possible address")]
    Overflow {
        /// The span's start.
        offset: u64,
        /// The span's length.
        length: u64,
    },

    /// The span is not inside the region. Checked before any SQL runs.
    #[error("bytes {offset}..{end} (offset {offset}, length {length}) are outside {region} of {size} bytes", end = *.offset as u128 + *.length as u128)]
    OutOfRange {
        /// The span's start.
        offset: u64,
        /// The span's length.
        length: u64,
        /// The region's size.
        size: u64,
        /// The region, in words.
        region: String,
    },

    /// More bytes than a large object holds.
    #[error("a large object holds at most {max} bytes; length {length} is more")]
    TooLarge {
        /// The length asked for.
        length: u64,
        /// The most a large object holds.
        max: u64,
    },

    /// The large object to export does not exist.
    #[error("large object {oid} does not exist")]
    NoSuchObject {
        /// The object's OID.
        oid: u32,
    },

    /// The large object does not fit the span it is exported into; nothing
    /// was written.
    #[error("large object {oid} is {size} bytes, longer than the {length} bytes to export it into (nothing was written)")]
    TooLong {
        /// The object's OID.
        oid: u32,
        /// Its size.
        size: u64,
        /// The span's length.
        length: u64,
    },

    /// The server refused or failed (its message, e.g. "permission denied
    /// for large object 16385", passed through).
    #[error("{during}: {source}")]
    Sql {
        /// The step, naming the object.
        during: String,
        /// The server's error.
        #[source]
        source: Box<SourceError>,
    },

    /// Reading or writing the region failed.
    #[error("{during}: {source}")]
    Region {
        /// The step, naming the bytes.
        during: String,
        /// The GPU's error.
        #[source]
        source: Box<GpuError>,
    },

    /// `lo_get` returned fewer bytes than the object's size promised.
    #[error("large object {oid}: expected {expected} bytes at offset {offset}, the server returned {got}")]
    ShortRead {
        /// The object's OID.
        oid: u32,
        /// Where the read started.
        offset: u64,
        /// Bytes asked for.
        expected: usize,
        /// Bytes returned.
        got: usize,
    },
}

impl From<GpuError> for LoError {
    fn from(e: GpuError) -> LoError {
        LoError::Gpu(Box::new(e))
    }
}

impl LoError {
    /// The SQLSTATE of a server error (`42501` for permission denied).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            LoError::Sql { source, .. } => source.sqlstate(),
            _ => None,
        }
    }
}

/// What [`import_region`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The large object's OID.
    pub oid: u32,
    /// Bytes written (the object's new size).
    pub bytes: u64,
    /// Whether the object was created (else an existing one was replaced).
    pub created: bool,
}

/// Opens the GPU allocation a hex IPC handle names on `device` (another
/// process exported it).
pub fn open_device_region(device: usize, ipc_handle_hex: &str) -> Result<MappedRegion, LoError> {
    let handle = IpcHandle::from_hex(ipc_handle_hex)?;
    Ok(MappedRegion::open(device, &handle)?)
}

/// Checks that `offset..offset + length` does not overflow (before the
/// region is known).
pub fn check_span(offset: u64, length: u64) -> Result<(), LoError> {
    match offset.checked_add(length) {
        Some(_) => Ok(()),
        None => Err(LoError::Overflow { offset, length }),
    }
}

/// Checks that `offset..offset + length` lies inside `region`.
pub fn check_region<R: ByteRegion + ?Sized>(
    region: &R,
    offset: u64,
    length: u64,
) -> Result<(), LoError> {
    check_span(offset, length)?;
    let size = region.len();
    if offset.checked_add(length).is_some_and(|end| end <= size) {
        Ok(())
    } else {
        Err(LoError::OutOfRange {
            offset,
            length,
            size,
            region: region.describe(),
        })
    }
}

fn chunk_size(chunk_bytes: usize) -> usize {
    chunk_bytes.clamp(1, MAX_CHUNK_BYTES)
}

fn sql(during: impl Into<String>) -> impl FnOnce(SourceError) -> LoError {
    let during = during.into();
    move |source| LoError::Sql {
        during,
        source: Box::new(source),
    }
}

/// Writes bytes `offset..offset + length` of `region` into a large object
/// and returns its OID: a new one (`loid` `None`), the existing object
/// `loid` with its contents replaced (truncated, then written: its OID,
/// owner and privileges stay), or a new object with OID `loid` when none
/// has it. One transaction on `conn`: on any error nothing changes (the
/// connection must not be inside a transaction block already). Moves
/// `chunk_bytes` at a time (at least 1, at most [`MAX_CHUNK_BYTES`]).
pub fn import_region<R: ByteRegion + ?Sized>(
    conn: &mut Connection,
    region: &R,
    offset: u64,
    length: u64,
    loid: Option<u32>,
    chunk_bytes: usize,
) -> Result<ImportOutcome, LoError> {
    if loid == Some(0) {
        return Err(LoError::InvalidOid);
    }
    check_region(region, offset, length)?;
    if length > MAX_SIZE {
        return Err(LoError::TooLarge {
            length,
            max: MAX_SIZE,
        });
    }
    let chunk = chunk_size(chunk_bytes);
    let mut tx = Transaction::begin(conn, "BEGIN").map_err(sql("starting the import"))?;
    let (oid, created) = match loid {
        None => {
            let oid = lo::create(tx.conn(), 0).map_err(sql("creating a large object"))?;
            (oid, true)
        }
        Some(oid) => {
            let during = format!("replacing the contents of large object {oid}");
            if lo::exists(tx.conn(), oid).map_err(sql(during.clone()))? {
                let fd =
                    lo::open(tx.conn(), oid, INV_READ | INV_WRITE).map_err(sql(during.clone()))?;
                lo::truncate(tx.conn(), fd, 0).map_err(sql(during))?;
                (oid, false)
            } else {
                lo::create(tx.conn(), oid).map_err(sql(format!("creating large object {oid}")))?;
                (oid, true)
            }
        }
    };
    let mut buf = vec![0u8; chunk.min(usize::try_from(length).unwrap_or(usize::MAX))];
    let mut pos = 0u64;
    while pos < length {
        let n = chunk.min(usize::try_from(length - pos).unwrap_or(usize::MAX));
        let part = &mut buf[..n];
        let at = offset + pos;
        region.read(at, part).map_err(|source| LoError::Region {
            during: format!(
                "reading bytes {at}..{} of {}",
                at + n as u64,
                region.describe()
            ),
            source: Box::new(source),
        })?;
        // pos < length <= MAX_SIZE < i64::MAX.
        lo::put(tx.conn(), oid, pos as i64, part).map_err(sql(format!(
            "writing bytes {pos}..{} of large object {oid}",
            pos + n as u64
        )))?;
        pos += n as u64;
    }
    tx.commit()
        .map_err(sql(format!("committing large object {oid}")))?;
    Ok(ImportOutcome {
        oid,
        bytes: length,
        created,
    })
}

/// Writes large object `oid` into `offset..offset + length` of `region`,
/// zero-fills the rest of that span when the object is shorter, and
/// returns the object's size (the bytes written from it). An object longer
/// than `length` is an error before anything is written, as is a span
/// outside the region (checked before any SQL runs). Reads in one
/// repeatable-read transaction, `chunk_bytes` at a time (at least 1, at
/// most [`MAX_CHUNK_BYTES`]).
pub fn export_region<R: ByteRegion + ?Sized>(
    conn: &mut Connection,
    oid: u32,
    region: &mut R,
    offset: u64,
    length: u64,
    chunk_bytes: usize,
) -> Result<u64, LoError> {
    if oid == 0 {
        return Err(LoError::InvalidOid);
    }
    check_region(region, offset, length)?;
    let chunk = chunk_size(chunk_bytes);
    let reading = format!("reading large object {oid}");
    let mut tx = Transaction::begin(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(sql(reading.clone()))?;
    if !lo::exists(tx.conn(), oid).map_err(sql(reading.clone()))? {
        return Err(LoError::NoSuchObject { oid });
    }
    let size = lo::size(tx.conn(), oid).map_err(sql(reading))?;
    if size > length {
        return Err(LoError::TooLong { oid, size, length });
    }
    let write_err = |region: &R, at: u64, n: usize| {
        let what = region.describe();
        move |source| LoError::Region {
            during: format!("writing bytes {at}..{} of {what}", at + n as u64),
            source: Box::new(source),
        }
    };
    let mut pos = 0u64;
    while pos < size {
        let n = chunk.min(usize::try_from(size - pos).unwrap_or(usize::MAX));
        // n <= MAX_CHUNK_BYTES < i32::MAX; pos < size <= MAX_SIZE.
        let data = lo::get(tx.conn(), oid, pos as i64, n as i32).map_err(sql(format!(
            "reading bytes {pos}..{} of large object {oid}",
            pos + n as u64
        )))?;
        if data.len() != n {
            return Err(LoError::ShortRead {
                oid,
                offset: pos,
                expected: n,
                got: data.len(),
            });
        }
        let at = offset + pos;
        region.write(at, &data).map_err(write_err(region, at, n))?;
        pos += n as u64;
    }
    let tail = length - size;
    if tail > 0 {
        let zeros = vec![0u8; chunk.min(usize::try_from(tail).unwrap_or(usize::MAX))];
        let mut done = 0u64;
        while done < tail {
            let n = zeros
                .len()
                .min(usize::try_from(tail - done).unwrap_or(usize::MAX));
            let at = offset + size + done;
            region
                .write(at, &zeros[..n])
                .map_err(write_err(region, at, n))?;
            done += n as u64;
        }
    }
    region.flush().map_err(|source| LoError::Region {
        during: format!("finishing the writes to {}", region.describe()),
        source: Box::new(source),
    })?;
    tx.commit()
        .map_err(sql(format!("ending the read of large object {oid}")))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_region_reads_and_writes_in_bounds_only() {
        let mut r = HostRegion::new(vec![0; 8]);
        r.write(2, b"abc").unwrap();
        let mut out = [0u8; 4];
        r.read(1, &mut out).unwrap();
        assert_eq!(&out, b"\0abc");
        let e = r.write(6, b"xyz").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bytes 6..9 are outside the mapped region of 8 bytes"
        );
        assert!(r.read(u64::MAX, &mut out).is_err());
        assert_eq!(r.as_slice(), b"\0\0abc\0\0\0");
        assert!(r.read(8, &mut []).is_ok());
    }

    #[test]
    fn spans_are_checked_against_the_region() {
        let r = HostRegion::new(vec![0; 100]);
        assert!(check_region(&r, 0, 100).is_ok());
        assert!(check_region(&r, 100, 0).is_ok());
        let e = check_region(&r, 90, 11).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bytes 90..101 (offset 90, length 11) are outside the host buffer of 100 bytes"
        );
        let e = check_region(&r, u64::MAX, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "offset {} plus length 2 is past the largest possible address",
                u64::MAX
            )
        );
        assert!(check_span(u64::MAX - 1, 1).is_ok());
    }

    #[test]
    fn chunks_are_clamped() {
        assert_eq!(chunk_size(0), 1);
        assert_eq!(chunk_size(7), 7);
        assert_eq!(chunk_size(usize::MAX), MAX_CHUNK_BYTES);
    }

    #[test]
    fn malformed_handles_fail_before_any_gpu_call() {
        let e = open_device_region(0, "xyz").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid CUDA IPC handle: expected 128 hex digits, got 3 characters"
        );
    }
}

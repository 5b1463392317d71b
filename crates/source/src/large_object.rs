//! PostgreSQL large objects through the server-side functions (`lo_create`,
//! `lo_open`, `lo_truncate64`, `lo_put`, `lo_get`, `lo_lseek64`), with
//! binary parameters and results ([`Connection::query_binary`]): a chunk
//! travels as its bytes, never as hex text. Descriptors (`lo_open`) live
//! until the end of the transaction, so the calls that need one run inside
//! a [`Transaction`].
//!
//! The server checks the privileges (`SELECT` to read, `UPDATE` to write,
//! ownership to unlink) and its message is passed through as
//! [`SourceError::Server`].
//!
//! ```no_run
//! use gpupg_source::{large_object as lo, ConnectConfig, Connection};
//!
//! # fn main() -> Result<(), gpupg_source::SourceError> {
//! let mut conn = Connection::connect(&ConnectConfig::resolve(None)?)?;
//! let mut tx = lo::Transaction::begin(&mut conn, "BEGIN")?;
//! let oid = lo::create(tx.conn(), 0)?;
//! lo::put(tx.conn(), oid, 0, b"hello")?;
//! tx.commit()?;
//! assert_eq!(lo::get(&mut conn, oid, 1, 3)?, b"ell");
//! assert_eq!(lo::size(&mut conn, oid)?, 5);
//! # Ok(()) }
//! ```

use crate::conn::{BinaryRows, Connection, Param};
use crate::error::SourceError;

/// `lo_open` mode bit: open for writing (`INV_WRITE`).
pub const INV_WRITE: i32 = 0x20000;
/// `lo_open` mode bit: open for reading (`INV_READ`).
pub const INV_READ: i32 = 0x40000;
/// Bytes of one row of `pg_largeobject` (`LOBLKSIZE` of a default build).
pub const LOBLKSIZE: u64 = 2048;
/// The largest large object the server stores: `INT_MAX` pages of
/// [`LOBLKSIZE`] bytes (4 TB less 2 kB).
pub const MAX_SIZE: u64 = i32::MAX as u64 * LOBLKSIZE;

/// A transaction block: `BEGIN ...` when made, `COMMIT` by
/// [`Transaction::commit`], `ROLLBACK` when dropped without one (nothing
/// of it stays). A connection that broke needs no rollback: the server
/// aborts the transaction when the session ends.
#[derive(Debug)]
pub struct Transaction<'c> {
    conn: &'c mut Connection,
    open: bool,
}

impl<'c> Transaction<'c> {
    /// Runs `begin` (`BEGIN`, `BEGIN ISOLATION LEVEL REPEATABLE READ READ
    /// ONLY`, ...) and holds the connection until commit or rollback.
    pub fn begin(conn: &'c mut Connection, begin: &str) -> Result<Transaction<'c>, SourceError> {
        conn.execute(begin)?;
        Ok(Transaction { conn, open: true })
    }

    /// The connection, to run statements in the transaction.
    pub fn conn(&mut self) -> &mut Connection {
        self.conn
    }

    /// `COMMIT`. A transaction that failed earlier is rolled back by the
    /// server instead, which is an error here.
    pub fn commit(mut self) -> Result<(), SourceError> {
        self.open = false;
        // COMMIT of a failed transaction answers "ROLLBACK" without an
        // error; a statement that failed already returned its error, so
        // reaching here means every statement succeeded.
        self.conn.execute("COMMIT")
    }

    /// `ROLLBACK`.
    pub fn rollback(mut self) -> Result<(), SourceError> {
        self.open = false;
        self.conn.execute("ROLLBACK")
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.broken {
            let _ = self.conn.execute("ROLLBACK");
        }
    }
}

/// Whether large object `oid` exists (`pg_largeobject_metadata`, which
/// every role may read).
pub fn exists(conn: &mut Connection, oid: u32) -> Result<bool, SourceError> {
    let rows = conn.query_binary(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1)",
        &[Param::oid(oid)],
    )?;
    let v = single(conn, &rows, "EXISTS", 1)?;
    Ok(v[0] != 0)
}

/// `lo_create(oid)`: a new, empty large object with that OID, or with one
/// the server picks when `oid` is 0. Returns its OID. Fails (SQLSTATE
/// 42710) when `oid` exists already.
pub fn create(conn: &mut Connection, oid: u32) -> Result<u32, SourceError> {
    let rows = conn.query_binary("SELECT pg_catalog.lo_create($1)", &[Param::oid(oid)])?;
    let v = single(conn, &rows, "lo_create", 4)?;
    Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// `lo_open(oid, mode)`: a descriptor valid until the transaction ends
/// (use inside a [`Transaction`]). `mode` is [`INV_READ`], [`INV_WRITE`]
/// or both.
pub fn open(conn: &mut Connection, oid: u32, mode: i32) -> Result<i32, SourceError> {
    let rows = conn.query_binary(
        "SELECT pg_catalog.lo_open($1, $2)",
        &[Param::oid(oid), Param::int4(mode)],
    )?;
    let v = single(conn, &rows, "lo_open", 4)?;
    Ok(i32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// `lo_truncate64(fd, len)`: cuts (or extends with zeros) the object open
/// for writing on descriptor `fd` to `len` bytes.
pub fn truncate(conn: &mut Connection, fd: i32, len: i64) -> Result<(), SourceError> {
    let rows = conn.query_binary(
        "SELECT pg_catalog.lo_truncate64($1, $2)",
        &[Param::int4(fd), Param::int8(len)],
    )?;
    single(conn, &rows, "lo_truncate64", 4)?;
    Ok(())
}

/// `lo_put(oid, offset, data)`: writes `data` at `offset` of the object
/// (extending it as needed), in binary.
pub fn put(conn: &mut Connection, oid: u32, offset: i64, data: &[u8]) -> Result<(), SourceError> {
    conn.query_binary(
        "SELECT pg_catalog.lo_put($1, $2, $3)",
        &[Param::oid(oid), Param::int8(offset), Param::bytea(data)],
    )?;
    Ok(())
}

/// `lo_get(oid, offset, len)`: up to `len` bytes from `offset` (fewer at
/// the end of the object), in binary.
pub fn get(conn: &mut Connection, oid: u32, offset: i64, len: i32) -> Result<Vec<u8>, SourceError> {
    let mut rows = conn.query_binary(
        "SELECT pg_catalog.lo_get($1, $2, $3)",
        &[Param::oid(oid), Param::int8(offset), Param::int4(len)],
    )?;
    single(conn, &rows, "lo_get", usize::MAX)?;
    Ok(rows[0][0].take().unwrap_or_default())
}

/// The object's size in bytes (`lo_lseek64` to its end on a descriptor
/// opened for reading; needs `SELECT` on it).
pub fn size(conn: &mut Connection, oid: u32) -> Result<u64, SourceError> {
    let rows = conn.query_binary(
        "SELECT pg_catalog.lo_lseek64(pg_catalog.lo_open($1, $2), 0, 2)",
        &[Param::oid(oid), Param::int4(INV_READ)],
    )?;
    let v = single(conn, &rows, "lo_lseek64", 8)?;
    let n = i64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
    u64::try_from(n).map_err(|_| protocol(conn, "lo_lseek64", format!("negative size {n}")))
}

/// The one non-NULL value of a one-row, one-column result, of `width`
/// bytes (`usize::MAX`: any).
fn single<'r>(
    conn: &Connection,
    rows: &'r BinaryRows,
    what: &str,
    width: usize,
) -> Result<&'r [u8], SourceError> {
    match rows.as_slice() {
        [row] => match row.as_slice() {
            [Some(v)] if width == usize::MAX || v.len() == width => Ok(v),
            [Some(v)] => Err(protocol(
                conn,
                what,
                format!("a value of {} bytes where {width} were expected", v.len()),
            )),
            [None] => Err(protocol(conn, what, "NULL result".into())),
            other => Err(protocol(
                conn,
                what,
                format!("{} columns instead of 1", other.len()),
            )),
        },
        other => Err(protocol(
            conn,
            what,
            format!("{} rows instead of 1", other.len()),
        )),
    }
}

fn protocol(conn: &Connection, what: &str, message: String) -> SourceError {
    SourceError::Protocol {
        host: conn.endpoint().to_string(),
        during: format!("reading the result of {what}"),
        message,
    }
}

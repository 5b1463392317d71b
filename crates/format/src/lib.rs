//! PostgreSQL data formats with no I/O.
//!
//! This crate is the bottom of the pipeline: it knows how PostgreSQL lays out
//! data on the wire (the binary `COPY` format) and nothing about sockets,
//! files or Arrow. Everything above it (the COPY source, the CPU and GPU
//! decoders) shares these definitions.
//!
//! - [`types`]: the PostgreSQL types gpupgparser understands ([`PgType`]) and a
//!   column as the catalog describes it ([`ColumnDesc`]).
//! - [`chunk`]: a [`CopyChunk`], one large buffer of whole COPY rows plus
//!   their offsets, the unit every decoder consumes.
//! - [`copy`]: the binary COPY file header and tuple framing.
//! - [`value`]: decoding of single values from their binary send format.
//! - `encode`: the inverse, building tuples from typed values (for tests,
//!   behind the `test-utils` feature).
//! - [`cluster`]: `global/pg_control` and `postmaster.pid`, which tell whose
//!   a data directory is.
//! - [`heap`]: PostgreSQL heap pages (page and tuple layout, checksums, the
//!   visibility map, varlena forms, pglz) and their conversion to binary COPY
//!   rows, for reading a table's files directly.
//! - [`wal`]: the write-ahead log's pages and records, read for the blocks
//!   they change (the heap path's list of pages changed since a checkpoint).
//! - [`crc32c`]: PostgreSQL's CRC-32C.

pub mod chunk;
pub mod cluster;
pub mod copy;
pub mod crc32c;
#[cfg(any(test, feature = "test-utils"))]
pub mod encode;
pub mod heap;
pub mod types;
pub mod value;
pub mod wal;

pub use chunk::CopyChunk;
pub use types::{ColumnDesc, PgType};

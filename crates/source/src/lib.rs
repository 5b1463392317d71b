//! Everything that talks to PostgreSQL: a minimal blocking frontend/backend
//! protocol v3 client whose COPY reader frames `COPY ... TO STDOUT (FORMAT
//! binary)` straight in large chunk buffers, plus the catalog queries,
//! snapshot sharing and range planning of a parallel export.
//!
//! Layout (one concept per file; protocol parts without I/O beneath the
//! client):
//! - [`dsn`]: connection strings, environment and defaults; `service`
//!   (pg_service.conf) and `pgpass` (password files) beside it.
//! - [`protocol`]: message encoding and decoding, no I/O.
//! - [`conn`]: sockets, startup, simple/extended queries; [`tls`] and
//!   [`auth`] beneath it.
//! - [`copy`]: the COPY reader (the hot path); [`pool`]: its buffers.
//! - [`cancel`]: CancelRequest, to stop another connection's statement.
//! - [`catalog`], [`snapshot`], [`ranges`], [`sql`]: what to read and how.

mod auth;
pub mod cancel;
pub mod catalog;
pub mod conn;
pub mod copy;
pub mod dsn;
pub mod error;
pub mod large_object;
mod pgpass;
pub mod pool;
pub mod protocol;
pub mod ranges;
mod service;
pub mod size;
pub mod snapshot;
pub mod sql;
mod timeout;
mod tls;

pub use cancel::CancelToken;
pub use catalog::{
    query_columns, resolve_table, table_columns, SelectColumn, TableInfo, UnsupportedTypes,
};
pub use conn::{BinaryRows, Connection, DescribedColumn, Param};
pub use copy::CopyOutStats;
pub use dsn::{ConnectConfig, Host, SslMode};
pub use error::SourceError;
pub use pool::BufferPool;
pub use ranges::{
    copy_query_sql, copy_sql, copy_sql_blocks, fragment_ranges, plan_ranges, plan_table_reads,
    split_range, PageRange, ReadSpec, ReadTask,
};
pub use size::parse_size;
pub use snapshot::{begin_exported_snapshot, begin_with_snapshot};
pub use sql::{quote_ident, quote_literal};

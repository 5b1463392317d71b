//! The export's errors: why an export failed ([`ExportError`]) and why a
//! request was refused before it ran ([`RequestError`]).

use thiserror::Error;

use crate::request::{MAX_CHUNK_BYTES, MIN_CHUNK_BYTES};

/// Why an export failed. Each variant's message is one line saying what went
/// wrong and where; the underlying library errors already name the table,
/// column, row or file. A variant that adds context returns its cause as
/// [`std::error::Error::source`] and does not repeat its text: print the
/// chain (`{:#}` in anyhow) for the whole line.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Talking to the server failed, or it refused a statement.
    #[error(transparent)]
    Source(#[from] gpupg_source::SourceError),
    /// A value could not be decoded on the CPU.
    #[error(transparent)]
    Decode(#[from] gpupg_decode::DecodeError),
    /// Writing the output failed.
    #[error(transparent)]
    Sink(#[from] gpupg_sink::SinkError),
    /// The GPU engine failed (or none is usable where the GPU is required).
    #[error("GPU engine")]
    Gpu(#[source] gpupg_gpu::GpuError),
    /// A value of one row cannot be exported; the row is named by the
    /// table's primary key or its ctid (see `row_name`).
    #[error("column {column} of the row with {row} in table {table}: {reason}")]
    RowValue {
        /// The column and its type: `n (numeric)`.
        column: String,
        /// The table as the user named it.
        table: String,
        /// `id=1000`, or `ctid (0,7)`.
        row: String,
        /// Why the value cannot be exported.
        reason: String,
    },
    /// A setting of the request no export can run with
    /// ([`crate::RequestBuilder::build`] refuses these before any export).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The request cannot run against this table, server or machine; the
    /// message says why.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The heap files were required ([`crate::Source::Heap`]) and this
    /// table cannot be read from them; the message says why.
    #[error("invalid request: reading the heap files: {0}")]
    HeapRefused(String),
    /// The row filter is not one condition on the table's columns: the
    /// server's reason.
    #[error(
        "invalid request: the row filter {filter:?} is not one condition on table {table}: \
         {message} (give a boolean SQL expression on its columns, e.g. \"id > 100\")"
    )]
    FilterNotACondition {
        /// The filter as given.
        filter: String,
        /// The table, as the statement names it.
        table: String,
        /// The server's message.
        message: String,
    },
    /// The exported snapshot the request imports
    /// ([`crate::ExportRequest::snapshot`]) is not there: the transaction
    /// that exported it ended, or the id is wrong.
    #[error(
        "snapshot {snapshot:?} cannot be imported: {message} (the transaction that exported it \
         has ended, or the id is wrong)"
    )]
    SnapshotGone {
        /// The snapshot id as given.
        snapshot: String,
        /// The server's message.
        message: String,
    },
    /// The request's cancel flag was set.
    #[error("export interrupted; no output was left behind")]
    Cancelled,
    /// A thread of the pipeline panicked (a bug).
    #[error("internal error: a {0} thread panicked")]
    ThreadPanicked(&'static str),
    /// A bug in gpupgparser, not in the request or the data: the message
    /// says which invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A setting no export can run with, in the library's words: the command
/// line names the flag and the table store the JSON field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// A chunk buffer smaller than [`MIN_CHUNK_BYTES`] or larger than
    /// [`MAX_CHUNK_BYTES`].
    #[error(
        "a chunk of {bytes} bytes: the chunk size must be from {} KiB to {} MiB",
        MIN_CHUNK_BYTES >> 10,
        MAX_CHUNK_BYTES >> 20
    )]
    ChunkSize {
        /// The size asked for (saturated where MiB to bytes overflowed).
        bytes: usize,
    },
    /// A row filter on a query, which has no table to filter.
    #[error("a row filter applies to a table; put the condition into the query")]
    FilterOnQuery,
    /// A column list on a query, which selects its own columns.
    #[error("a column list applies to a table; select the columns in the query")]
    ColumnsOnQuery,
    /// Device-resident output with the CPU engine: only the GPU decodes
    /// into device memory.
    #[error("device-resident output needs the GPU engine, not the CPU engine")]
    DeviceOutputOnCpu,
    /// A name that is none of a setting's choices.
    #[error("{value:?} is not a {what} (expected {expected})")]
    UnknownChoice {
        /// The setting, e.g. `source`.
        what: &'static str,
        /// The name given.
        value: String,
        /// The choices, e.g. `auto, copy, heap`.
        expected: &'static str,
    },
    /// No connection to read with.
    #[error("at least one connection is needed")]
    NoConnections,
    /// No decoder thread.
    #[error("at least one decoder thread is needed")]
    NoThreads,
    /// An empty list of GPU ordinals.
    #[error("no GPU ordinal given")]
    NoDevices,
    /// One of the columns asked for has an empty name.
    #[error("a column name is empty (columns {columns:?})")]
    EmptyColumnName {
        /// The columns as given, separated by commas.
        columns: String,
    },
    /// A column asked for twice: readers such as pyarrow cannot read a
    /// file with two columns of one name.
    #[error("column {0:?} is given twice")]
    ColumnTwice(String),
    /// A GPU ordinal that appears twice in a list of GPUs.
    #[error("GPU {0} is given twice")]
    DeviceTwice(usize),
    /// A part of a list of GPUs that is not a number.
    #[error("{0:?} is not a GPU ordinal (expected all, or ordinals such as 0,1)")]
    NotAnOrdinal(String),
    /// Every GPU was asked for, and the driver sees none.
    #[error("every GPU was asked for, but this machine has no GPU")]
    NoGpu,
    /// Every GPU was asked for, and the driver is not usable (why).
    #[error("every GPU was asked for, but none is usable ({0})")]
    NoUsableGpu(String),
    /// A GPU ordinal beyond the GPUs the driver sees.
    #[error("GPU {device} does not exist (this machine has {count} GPU(s))")]
    NoSuchGpu {
        /// The ordinal asked for.
        device: usize,
        /// How many GPUs the driver sees.
        count: usize,
    },
}

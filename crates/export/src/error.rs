use thiserror::Error;

/// Why an export failed. Each variant's message is one line saying what went
/// wrong and where; the underlying library errors already name the table,
/// column, row or file.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("{0}")]
    Source(#[from] gpupg_source::SourceError),
    #[error("{0}")]
    Decode(#[from] gpupg_decode::DecodeError),
    #[error("{0}")]
    Sink(#[from] gpupg_sink::SinkError),
    #[error("--engine gpu: {0}")]
    Gpu(gpupg_gpu::GpuError),
    /// A value of one row cannot be exported; the row is named by the
    /// table's primary key or its ctid (see `row_name`).
    #[error("column {column} of the row with {row} in table {table}: {reason}")]
    RowValue {
        /// The column and its type: `n (numeric)`.
        column: String,
        table: String,
        /// `id=1000`, or `ctid (0,7)`.
        row: String,
        reason: String,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("export interrupted; no output was left behind")]
    Cancelled,
    #[error("internal error: a {0} thread panicked")]
    ThreadPanicked(&'static str),
    /// A bug in gpupgparser, not in the request or the data: the message
    /// says which invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

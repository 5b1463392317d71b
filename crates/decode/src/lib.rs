//! Binary COPY chunks to Arrow record batches.
//!
//! [`OutputSchema`] fixes, once per export, how every PostgreSQL column maps
//! to an Arrow type (with [`TypeOptions`] for the choices that have no single
//! right answer). A [`Decoder`] then turns each [`CopyChunk`] into a
//! [`RecordBatch`]. [`CpuDecoder`] is the CPU implementation and the
//! bit-exact reference the GPU decoder is tested against.
//!
//! The CPU decoder is laid out like the GPU kernels: pass 1 walks every row
//! of a block once and records where each field starts and how long it is
//! (checking the framing exactly); pass 2 decodes column by column from
//! those offsets straight into Arrow buffers. Blocks of rows keep the offsets
//! and the row bytes in cache between the two passes.

mod builder;
mod choices;
mod decoder;
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzz;
mod schema;

pub use builder::ValueFailure;
pub use choices::TypeChoiceError;
pub use decoder::{CpuDecoder, PagesDecoded};
pub use schema::OutputSchema;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use gpupg_format::copy::FramingError;
use gpupg_format::value::ValueError;
use gpupg_format::CopyChunk;
use thiserror::Error;

/// How values without one obvious Arrow type are represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TypeOptions {
    /// How `interval` columns are represented.
    pub interval: IntervalRepr,
    /// How `numeric` without a usable precision and scale is represented.
    pub numeric: UnconstrainedNumeric,
    /// How enum columns are represented.
    pub enums: EnumRepr,
    /// How array columns are represented (whether a shape is kept).
    pub arrays: ArrayRepr,
}

/// Arrow type of `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntervalRepr {
    /// `Interval(MonthDayNano)`: the Arrow IPC type; nanoseconds are
    /// microseconds × 1000 (an overflow is an error).
    #[default]
    MonthDayNano,
    /// `Struct{months: Int32, days: Int32, microseconds: Int64}`: lossless,
    /// for Parquet, which has no signed interval type.
    Struct,
}

/// Arrow type of `numeric` without a typmod (or with a precision over 38, or
/// a scale Arrow's decimals cannot hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnconstrainedNumeric {
    /// Utf8 holding the canonical text, as `numeric_out` prints it: lossless.
    #[default]
    Text,
    /// `Decimal128(38, scale)`, rounded half away from zero to `scale`
    /// digits; NaN, ±Infinity and values of more than 38 digits are errors.
    Decimal128 {
        /// Digits after the decimal point.
        scale: i8,
    },
    /// Float64, the nearest double; NaN and ±Infinity kept.
    Float64,
}

/// Arrow type of enum columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnumRepr {
    /// Utf8 with the label.
    #[default]
    Utf8,
    /// `Dictionary(Int32, Utf8)`, one dictionary per batch.
    Dictionary,
}

/// Arrow type of array columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArrayRepr {
    /// `List<element>`; a multi-dimensional array's elements are flattened
    /// in row-major order and its shape is lost (counted in
    /// [`DecodeStats::flattened_arrays`]).
    #[default]
    List,
    /// `Struct{dims: List<Int32>, lower_bounds: List<Int32>, values:
    /// List<element>}`: lossless.
    Struct,
}

/// Counters a decoder keeps over its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeStats {
    /// Rows decoded.
    pub rows: u64,
    /// Multi-dimensional array values flattened under [`ArrayRepr::List`].
    pub flattened_arrays: u64,
}

/// Turns binary COPY chunks into record batches of one [`OutputSchema`].
pub trait Decoder: Send {
    /// Decodes every row of `chunk`. The batch has the schema's
    /// [`OutputSchema::arrow_schema`] and `chunk.num_rows()` rows.
    fn decode(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, DecodeError>;
    /// Counters since the decoder was made.
    fn stats(&self) -> DecodeStats;
}

/// Why a schema could not be built or a chunk could not be decoded. Errors
/// about data name the column, its type and the row: a COPY row by its
/// partition and index within it (the export then names it by the table's
/// key or ctid), a heap tuple by its ctid.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// A column whose type has no Arrow mapping here.
    #[error("column {column} ({type_name}) cannot be exported: {reason}")]
    Unsupported {
        /// The column's name.
        column: String,
        /// Its PostgreSQL type, as the catalog prints it.
        type_name: String,
        /// Why.
        reason: String,
    },
    /// Options or a schema the decoder cannot take (a Decimal128 scale over
    /// 38, more columns than a COPY tuple carries).
    #[error("invalid type options: {0}")]
    Options(String),
    /// A chunk whose row offsets are inconsistent (a caller's bug).
    #[error("malformed chunk (partition {partition}, first row {first_row}): {reason}")]
    BadChunk {
        /// The chunk's partition.
        partition: u32,
        /// Index of its first row in that partition.
        first_row: u64,
        /// What is inconsistent.
        reason: String,
    },
    /// A row's binary COPY framing is broken.
    #[error("partition {partition}, row {row}: {source}")]
    Framing {
        /// The chunk's partition (the COPY it came from).
        partition: u32,
        /// The row's index in that partition.
        row: u64,
        /// What is wrong with it.
        source: FramingError,
    },
    /// A value cannot be decoded.
    #[error("column {column} ({type_name}), partition {partition}, row {row}: {source}")]
    Value {
        /// The column's name.
        column: String,
        /// Its PostgreSQL type, as the catalog prints it.
        type_name: String,
        /// The chunk's partition (the COPY it came from).
        partition: u32,
        /// The row's index in that partition.
        row: u64,
        /// What is wrong with it.
        source: ValueError,
    },
    /// NULL in a NOT NULL column (the schema said it cannot happen).
    #[error("column {column} ({type_name}), partition {partition}, row {row}: NULL in a column declared NOT NULL")]
    UnexpectedNull {
        /// The column's name.
        column: String,
        /// Its PostgreSQL type, as the catalog prints it.
        type_name: String,
        /// The chunk's partition (the COPY it came from).
        partition: u32,
        /// The row's index in that partition.
        row: u64,
    },
    /// One chunk holds more of the column than Arrow's 32-bit offsets allow.
    #[error("column {column} ({type_name}), partition {partition}, row {row}: the chunk holds more than 2 GiB of this column, over an Arrow batch's limit; use smaller chunks")]
    TooLarge {
        /// The column's name.
        column: String,
        /// Its PostgreSQL type, as the catalog prints it.
        type_name: String,
        /// The chunk's partition (the COPY it came from).
        partition: u32,
        /// The row's index in that partition.
        row: u64,
    },
    /// A value located in a heap page cannot be decoded.
    #[error("column {column} ({type_name}) of the row with ctid ({block},{offnum}): {failure}")]
    HeapValue {
        /// The column's name.
        column: String,
        /// Its PostgreSQL type, as the catalog prints it.
        type_name: String,
        /// The page's block number.
        block: u32,
        /// The tuple's line pointer (1-based).
        offnum: u16,
        /// What is wrong with the value.
        failure: ValueFailure,
    },
    /// Arrow refused the batch built from the columns.
    #[error("building the Arrow batch: {0}")]
    Arrow(#[from] ArrowError),
}

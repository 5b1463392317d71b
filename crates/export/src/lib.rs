//! The export pipeline: a COPY source feeds chunks of whole rows to decoder
//! threads, whose Arrow batches go to a sink.
//!
//! ```text
//!  connections (one snapshot)      decoder threads            sink
//!  COPY range 0 ─┐                ┌─ decode ─ encode ─┐
//!  COPY range 1 ─┼─ CopyChunk ──► ├─ decode ─ encode ─┼─► Parquet / Arrow IPC
//!  COPY range k ─┘  (bounded)     └─ decode ─ encode ─┘    (temp file, renamed at the end)
//! ```
//!
//! [`export`] runs one export described by an [`ExportRequest`] and returns an
//! [`ExportReport`]; [`export_to_device`] reads into device-resident Arrow
//! columns instead of files, [`export_to_host`] into record batches in
//! memory (both re-read only changed pages when refreshing an earlier load,
//! see [`PageMap`]); [`measure_copy_ceiling`] runs the same COPY statements into
//! nothing, which is the server's own speed limit that `bench` compares with.

mod carry;
mod ceiling;
mod connections;
mod cputime;
mod engine;
mod error;
mod heap_io;
mod heap_source;
mod interrupt;
mod pack;
mod pipeline;
mod plan;
mod progress;
mod report;
mod request;
mod row_name;

pub use carry::{
    BatchOrigin, BatchSize, CarriedBatch, PageMap, PageRows, CARRY_BATCH_BYTES, CARRY_BATCH_ROWS,
};
pub use ceiling::{measure_copy_ceiling, CeilingReport};
pub use error::{ExportError, RequestError};
pub use heap_source::HeapReport;
pub use pipeline::{export, export_to_device, export_to_host, Loaded};
pub use progress::{NoProgress, Progress};
pub use report::{ExportReport, GpuPhases, OutputFile, Phases, Resident};
pub use request::{
    chunk_bytes_from_mib, default_parallelism, DeviceChoice, Engine, ExportRequest, GpuSelection,
    HeapIo, Output, RequestBuilder, Source, Target, DEFAULT_CHUNK_BYTES, DEFAULT_HEAP_CHUNK_BYTES,
    DEFAULT_HEAP_THRESHOLD, DEVICE_WORKERS, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES,
};

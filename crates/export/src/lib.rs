//! The export pipeline: a source yields work, decoder threads decode it
//! into Arrow batches, a sink consumes them; bounded channels join them.
//!
//! ```text
//!  source/ (one snapshot)              decoder/ (threads)          sink/
//!  copy: COPY range 0 ─┐                ┌─ CPU or GPU ─┐
//!  copy: COPY range k ─┼─ Work::Rows ──►├─ decoder     ├─► files (Parquet / Arrow IPC)
//!  heap: readers ──────┼─ Work::Pages ─►└─ decoder ────┘   host / device memory
//!   ▲   fallback ◄─────┴── pages back (flagged) ◄──┘        channel (stream)
//!   └── refused pages: COPY statements to the connections
//! ```
//!
//! - `source`: the COPY connections (`source::copy`) and
//!   the heap files (`source::heap`: reading, I/O, judging pages, packing,
//!   the fallback of flagged pages, catalog, files, proof, server calls).
//! - `decoder`: one `BatchDecoder` trait, the CPU's and the GPU's.
//! - `sink`: one `BatchSink` trait: files, memory, channel.
//! - `pipeline`: wires them for one export.
//!
//! [`export`] runs one export described by an [`ExportRequest`] and returns an
//! [`ExportReport`]; [`export_to_device`] reads into device-resident Arrow
//! columns instead of files, [`export_to_host`] into record batches in
//! memory (both re-read only changed pages when refreshing an earlier load,
//! see [`PageMap`]); [`stream`] and [`stream_to_device`] yield the batches as
//! they are decoded; [`measure_copy_ceiling`] runs the same COPY statements
//! into nothing, which is the server's own speed limit that `bench` compares
//! with. [`FragmentPlan`] splits a table into page ranges read by many
//! processes under one exported snapshot.

mod api;
mod carry;
mod ceiling;
mod cputime;
mod decoder;
mod error;
mod fragments;
mod interrupt;
mod pipeline;
mod plan;
mod progress;
mod report;
mod request;
mod row_name;
mod sink;
mod source;
mod state;
mod stream;
mod summary;

pub use api::{export, export_to_device, export_to_host, Loaded};
pub use carry::{
    BatchOrigin, BatchSize, CarriedBatch, PageMap, PageRows, CARRY_BATCH_BYTES, CARRY_BATCH_ROWS,
};
pub use ceiling::{measure_copy_ceiling, CeilingReport};
pub use error::{ExportError, RequestError};
pub use fragments::FragmentPlan;
pub use progress::{NoProgress, Progress};
pub use report::{ExportReport, GpuPhases, OutputFile, Phases, Resident};
pub use request::{
    chunk_bytes_from_mib, default_parallelism, type_options, DeviceChoice, Engine, ExportRequest,
    GpuSelection, HeapIo, HeapSync, Output, RequestBuilder, Source, Target, DEFAULT_CHUNK_BYTES,
    DEFAULT_HEAP_CHUNK_BYTES, DEFAULT_HEAP_THRESHOLD, DEVICE_WORKERS, MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
};
pub use source::heap::HeapReport;
pub use stream::{
    start_stream, stream, stream_to_device, BatchStream, DeviceBatchStream, StartingStream,
};

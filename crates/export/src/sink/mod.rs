//! Where decoded batches go: every sink takes batches of one kind
//! ([`OutBatch`]: host or device) with the partition and pages they came
//! from, from all decoder threads at once, and is finished once the last
//! batch is in (only when the export succeeded; dropped otherwise, which
//! removes temporary files and frees memory).
//!
//! - [`files::FileSink`]: Parquet or Arrow IPC through `gpupg_sink`, one
//!   file, or one per partition for `--output-dir`.
//! - [`memory::MemorySink`]: kept in host or device memory
//!   ([`crate::export_to_host`], [`crate::export_to_device`]).
//! - [`channel::ChannelSink`]: handed to a consumer through a bounded
//!   channel ([`crate::stream`]).

pub(crate) mod channel;
pub(crate) mod files;
pub(crate) mod memory;

use std::sync::Arc;

use arrow_schema::SchemaRef;
use gpupg_gpu::DeviceArena;

use crate::carry::{BatchOrigin, PageMap};
use crate::decoder::OutBatch;
use crate::report::{OutputFile, Resident};
use crate::ExportError;

/// What a sink is made from, known once the columns are and before the
/// connections that read rows are opened (an output refused costs no
/// connection).
pub(crate) struct SinkSetup {
    pub schema: SchemaRef,
    /// The stem of `--output-dir` file names.
    pub stem: String,
    /// Connections, the number of partitions of `--output-dir`.
    pub connections: usize,
}

/// What a finished sink leaves, for the report and the caller.
pub(crate) struct SinkEnd<K> {
    pub files: Vec<OutputFile>,
    /// Thread-seconds spent encoding inside the sink's writes.
    pub encode_seconds: f64,
    pub resident: Option<Resident>,
    /// What the sink kept (the batches of a load kept in memory).
    pub kept: K,
}

impl<K: Default> SinkEnd<K> {
    fn nothing() -> SinkEnd<K> {
        SinkEnd {
            files: Vec::new(),
            encode_seconds: 0.0,
            resident: None,
            kept: K::default(),
        }
    }
}

/// Consumes the decoded batches of one export.
pub(crate) trait BatchSink<B: OutBatch>: Sync {
    /// What [`BatchSink::finish`] hands back.
    type Kept;

    /// The device arenas the decoders carve device batches from, one per
    /// GPU of the export (none: each batch allocates its own).
    fn arenas(&self) -> &[Arc<DeviceArena>] {
        &[]
    }

    /// Takes one batch: its rows came from `partition` (a connection or a
    /// heap reader) and from the pages `origin` names.
    fn write(&self, batch: B, partition: u32, origin: BatchOrigin) -> Result<(), ExportError>;

    /// Called once after the last batch of a successful export; a load
    /// kept in memory records each batch's size in `pages`.
    fn finish(self, pages: &mut PageMap) -> Result<SinkEnd<Self::Kept>, ExportError>;
}

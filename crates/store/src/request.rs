//! A [`LoadSpec`] as the export's [`ExportRequest`]: a device-resident load
//! with the export's defaults for everything the spec leaves out.

use std::sync::atomic::AtomicBool;

use gpupg_decode::TypeOptions;
use gpupg_export::{
    default_parallelism, Engine, ExportRequest, HeapIo, Output, Source, Target,
    DEFAULT_CHUNK_BYTES, DEFAULT_HEAP_CHUNK_BYTES, DEFAULT_HEAP_THRESHOLD, DEVICE_WORKERS,
};
use gpupg_sink::{Compression, Format, SinkOptions};
use gpupg_source::{ConnectConfig, UnsupportedTypes};

use crate::error::StoreError;
use crate::protocol::{LoadSpec, SourceKind};

/// The request that loads `spec` into device memory, stopped early when
/// `cancel` is set (server shutdown).
pub(crate) fn export_request<'a>(
    spec: &LoadSpec,
    cancel: &'a AtomicBool,
) -> Result<ExportRequest<'a>, StoreError> {
    let connect = ConnectConfig::resolve(Some(&spec.dsn))
        .map_err(|e| StoreError::BadRequest(format!("connection string: {e}")))?;
    if let Some(mib) = spec.chunk_mib.filter(|&m| m == 0 || m > 1024) {
        return Err(StoreError::BadRequest(format!(
            "chunk size {mib} MiB: must be from 1 to 1024"
        )));
    }
    Ok(ExportRequest {
        connect,
        target: Target::Table(spec.table.clone()),
        columns: spec.columns.clone(),
        filter: None,
        output: Output::Device,
        parallel: spec.parallel.unwrap_or_else(default_parallelism),
        workers: spec.threads.unwrap_or(DEVICE_WORKERS),
        chunk_bytes: spec.chunk_mib.map_or(DEFAULT_CHUNK_BYTES, |m| m << 20),
        heap_chunk_bytes: spec.chunk_mib.map_or(DEFAULT_HEAP_CHUNK_BYTES, |m| m << 20),
        engine: Engine::Gpu,
        device: spec.device,
        // Set by the registry from the memory limit.
        device_limit: None,
        // Arrow's own types (MonthDayNano intervals): what device columns
        // and the Arrow IPC format hold.
        types: TypeOptions::default(),
        unsupported: UnsupportedTypes::Error,
        sink: SinkOptions {
            format: Format::Arrow,
            compression: Compression::None,
            overwrite: false,
            row_group_rows: 0,
        },
        source: match spec.source {
            SourceKind::Auto => Source::Auto,
            SourceKind::Copy => Source::Copy,
            SourceKind::Heap => Source::Heap,
        },
        heap_threshold: spec.heap_threshold.unwrap_or(DEFAULT_HEAP_THRESHOLD),
        heap_io: HeapIo::Auto,
        data_dir: spec.data_dir.clone(),
        // Set by the registry on a refresh.
        prior: None,
        cancel: Some(cancel),
    })
}

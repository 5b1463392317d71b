//! A [`LoadSpec`] as the export's [`ExportRequest`]: a device-resident load
//! with the export's defaults for everything the spec leaves out.

use std::sync::atomic::AtomicBool;

use gpupg_export::{
    DeviceChoice, Engine, ExportRequest, GpuSelection, Output, Source, Target, DEFAULT_CHUNK_BYTES,
    DEFAULT_HEAP_CHUNK_BYTES, DEFAULT_HEAP_THRESHOLD, DEVICE_WORKERS,
};
use gpupg_sink::{Compression, Format, SinkOptions};
use gpupg_source::ConnectConfig;

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
    let devices = spec_devices(spec)?;
    let defaults = ExportRequest::new(connect, Target::Table(spec.table.clone()), Output::Device);
    Ok(ExportRequest {
        columns: spec.columns.clone(),
        parallel: spec.parallel.unwrap_or(defaults.parallel),
        workers: spec
            .threads
            .unwrap_or(DEVICE_WORKERS * devices.len().max(1)),
        chunk_bytes: spec.chunk_mib.map_or(DEFAULT_CHUNK_BYTES, |m| m << 20),
        heap_chunk_bytes: spec.chunk_mib.map_or(DEFAULT_HEAP_CHUNK_BYTES, |m| m << 20),
        engine: Engine::Gpu,
        devices,
        // Arrow's own types (MonthDayNano intervals), as device columns
        // hold them; the memory limit is set by the registry, the previous
        // revision (`prior`) on a refresh.
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
        gpu_selection: GpuSelection {
            policy: match &spec.gpu_selection {
                Some(p) => p
                    .parse()
                    .map_err(|e| StoreError::BadRequest(format!("gpu_selection: {e}")))?,
                None => Default::default(),
            },
            manual: spec
                .manual_optimal_gpus
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: gpupg_topology::ManualSpecError| {
                    StoreError::BadRequest(e.to_string())
                })?,
        },
        data_dir: spec.data_dir.clone(),
        cancel: Some(cancel),
        ..defaults
    })
}

/// The GPUs of `spec`: `devices` when given (`all` resolved on this
/// machine), else `device`.
pub(crate) fn spec_devices(spec: &LoadSpec) -> Result<Vec<usize>, StoreError> {
    match &spec.devices {
        None => Ok(vec![spec.device]),
        Some(text) => {
            let choice: DeviceChoice = text
                .parse()
                .map_err(|e| StoreError::BadRequest(format!("devices: {e}")))?;
            match choice {
                DeviceChoice::List(list) => Ok(list),
                DeviceChoice::All => {
                    choice
                        .resolve_here()
                        .map_err(|detail| StoreError::BadDevice {
                            device: spec.device,
                            detail,
                        })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_selection_is_parsed_and_checked() {
        let cancel = AtomicBool::new(false);
        let mut spec = LoadSpec::new("t", "host=/tmp");
        let req = export_request(&spec, &cancel).unwrap();
        assert_eq!(req.gpu_selection.policy, gpupg_topology::Policy::Optimal);
        assert!(req.gpu_selection.manual.is_none());
        spec.gpu_selection = Some("numa".into());
        spec.manual_optimal_gpus = Some("nvme3=gpu2:gpu3,/mnt/nfs=gpu1".into());
        let req = export_request(&spec, &cancel).unwrap();
        assert_eq!(req.gpu_selection.policy, gpupg_topology::Policy::Numa);
        assert_eq!(
            req.gpu_selection.manual.unwrap().to_string(),
            "nvme3=gpu2:gpu3,/mnt/nfs=gpu1"
        );
        let bad = |spec: &LoadSpec| match export_request(spec, &cancel) {
            Err(e @ StoreError::BadRequest(_)) => e.to_string(),
            Err(e) => panic!("not a bad request: {e}"),
            Ok(_) => panic!("accepted"),
        };
        spec.gpu_selection = Some("nearest".into());
        let e = bad(&spec);
        assert!(
            e.contains("gpu_selection") && e.contains("optimal, numa or system"),
            "{e}"
        );
        spec.gpu_selection = None;
        spec.manual_optimal_gpus = Some("nvme3=gpuX".into());
        assert!(bad(&spec).contains("manual-optimal-gpus"), "{}", bad(&spec));
    }
}

//! A [`LoadSpec`] as the export's [`ExportRequest`]: a device-resident load
//! with the export's defaults for everything the spec leaves out.

use std::sync::atomic::AtomicBool;

use gpupg_export::{
    DeviceChoice, Engine, ExportRequest, GpuSelection, Output, RequestError, Target,
};
use gpupg_sink::{Compression, Format, SinkOptions};
use gpupg_source::ConnectConfig;

use crate::error::StoreError;
use crate::protocol::LoadSpec;

/// The request that loads `spec` into device memory, stopped early when
/// `cancel` is set (server shutdown). The export's builder checks the
/// settings and fills in its defaults; a refusal names the spec's field.
pub(crate) fn export_request<'a>(
    spec: &LoadSpec,
    cancel: &'a AtomicBool,
) -> Result<ExportRequest<'a>, StoreError> {
    let connect = ConnectConfig::resolve(Some(&spec.dsn))
        .map_err(|e| StoreError::BadRequest(format!("connection string: {e}")))?;
    let devices = spec_devices(spec)?;
    let gpu_selection = GpuSelection {
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
                StoreError::BadRequest(format!("manual_optimal_gpus: {e}"))
            })?,
    };
    ExportRequest::builder(connect, Target::Table(spec.table.clone()), Output::Device)
        .columns(spec.columns.clone())
        .parallel(spec.parallel)
        .threads(spec.threads)
        .chunk_mib(spec.chunk_mib)
        .engine(Engine::Gpu)
        .devices(devices)
        // Arrow's own types (MonthDayNano intervals), as device columns
        // hold them; the memory limit is set by the registry, the previous
        // revision (`prior`) on a refresh.
        .sink(SinkOptions {
            format: Format::Arrow,
            compression: Compression::None,
            overwrite: false,
            row_group_rows: 0,
        })
        .source(spec.source)
        .heap_threshold(spec.heap_threshold)
        .heap_sync(spec.heap_sync)
        .gpu_selection(gpu_selection)
        .data_dir(spec.data_dir.clone())
        .cancel(cancel)
        .build()
        .map_err(|e| StoreError::BadRequest(field_message(&e, spec)))
}

/// A refused setting in the words of the load spec's JSON fields.
pub(crate) fn field_message(e: &RequestError, spec: &LoadSpec) -> String {
    match e {
        RequestError::ChunkSize { .. } => match spec.chunk_mib {
            Some(mib) => format!("chunk_mib {mib}: must be from 1 to 1024"),
            None => e.to_string(),
        },
        RequestError::NoConnections => format!("parallel 0: {e}"),
        RequestError::NoThreads => format!("threads 0: {e}"),
        RequestError::EmptyColumnName { .. } | RequestError::ColumnTwice(_) => {
            format!("columns: {e}")
        }
        RequestError::UnknownChoice { .. } => format!("source: {e}"),
        // A spec names a table and loads it on the GPU engine: these
        // cannot come from one, and say what they are in any words.
        RequestError::FilterOnQuery
        | RequestError::ColumnsOnQuery
        | RequestError::DeviceOutputOnCpu => e.to_string(),
        RequestError::NoDevices
        | RequestError::DeviceTwice(_)
        | RequestError::NotAnOrdinal(_)
        | RequestError::NoGpu
        | RequestError::NoUsableGpu(_)
        | RequestError::NoSuchGpu { .. } => match &spec.devices {
            Some(devices) => format!("devices {devices}: {e}"),
            None => format!("devices: {e}"),
        },
    }
}

/// The GPUs of `spec`: `devices` when given (`all` resolved on this
/// machine), else `device`.
pub(crate) fn spec_devices(spec: &LoadSpec) -> Result<Vec<usize>, StoreError> {
    match &spec.devices {
        None => Ok(vec![spec.device]),
        Some(text) => {
            let choice: DeviceChoice = text
                .parse()
                .map_err(|e| StoreError::BadRequest(field_message(&e, spec)))?;
            match choice {
                DeviceChoice::List(list) => Ok(list),
                DeviceChoice::All => choice.resolve_here().map_err(|e| StoreError::BadDevice {
                    device: spec.device,
                    detail: field_message(&e, spec),
                }),
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
        assert_eq!(req.heap_sync, gpupg_export::HeapSync::Auto);
        spec.heap_sync = gpupg_export::HeapSync::Checkpoint;
        let req = export_request(&spec, &cancel).unwrap();
        assert_eq!(req.heap_sync, gpupg_export::HeapSync::Checkpoint);
        spec.heap_sync = gpupg_export::HeapSync::Auto;
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
        assert!(bad(&spec).contains("manual_optimal_gpus"), "{}", bad(&spec));
        spec.manual_optimal_gpus = None;
        // The export's checks, in the spec's words.
        spec.chunk_mib = Some(2048);
        assert_eq!(
            bad(&spec),
            "bad request: chunk_mib 2048: must be from 1 to 1024"
        );
        spec.chunk_mib = None;
        spec.columns = Some(vec!["a".into(), "a".into()]);
        assert_eq!(
            bad(&spec),
            "bad request: columns: column \"a\" is given twice"
        );
        spec.columns = None;
        spec.parallel = Some(0);
        assert!(
            bad(&spec).starts_with("bad request: parallel 0: "),
            "{}",
            bad(&spec)
        );
        spec.parallel = None;
        spec.devices = Some("0,0".into());
        assert_eq!(bad(&spec), "bad request: devices 0,0: GPU 0 is given twice");
        spec.devices = Some("1".into());
        assert!(export_request(&spec, &cancel).is_ok());
    }
}

//! The `gpupgparser` Python module: PostgreSQL tables and queries as Arrow
//! streams (the Arrow PyCapsule interface) and as Parquet or Arrow IPC
//! files, built on `gpupg_export::stream` and `gpupg_export::export`.
//! Built into a wheel by maturin (see crates/python/build.sh and
//! docs/python.md).

mod device;
mod device_ffi;
mod errors;
mod fragments;
mod options;
mod store;
mod stream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::Poll;

use gpupg_export::{ExportError, ExportReport, ExportRequest, NoProgress, Output, Source, Target};
use pyo3::prelude::*;

use crate::errors::{export_error, Error};
use crate::options::{file_sink, stream_sink, Options, TypeArgs};
use crate::stream::{wait_interruptibly, Stream};

/// `report` as a Python dict with the CLI's JSON report's keys.
fn report_dict(py: Python<'_>, report: &ExportReport) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_string(report)
        .map_err(|e| Error::new_err(format!("cannot write the report: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (json,))?.unbind())
}

/// Starts the export of `target` and returns its stream once its columns
/// are known; connecting and planning run without the GIL, and a Ctrl-C
/// meanwhile cancels the export and raises its `KeyboardInterrupt`.
fn start(
    py: Python<'_>,
    target: Target,
    options: Options,
    batch_rows: Option<usize>,
) -> PyResult<Stream> {
    if batch_rows == Some(0) {
        return Err(errors::InvalidRequest::new_err(
            "batch_rows=0: must be at least 1",
        ));
    }
    let req = options.request(target, Output::Host, stream_sink())?;
    let mut starting = gpupg_export::start_stream(req, NoProgress).map_err(|e| export_error(&e))?;
    let started = match wait_interruptibly(py, |timeout| starting.wait(timeout)) {
        Ok(started) => started,
        Err(interrupted) => {
            // Dropping cancels the export and joins its thread: without the GIL.
            py.detach(move || drop(starting));
            return Err(interrupted);
        }
    };
    let batches = started.map_err(|e| export_error(&e))?;
    Ok(Stream::new(batches, batch_rows))
}

/// A table's rows as a stream of Arrow record batches (see docs/python.md).
#[pyfunction]
#[pyo3(signature = (dsn, table, *, columns=None, r#where=None, parallel=None,
    source="auto".to_string(), engine="auto".to_string(), numeric="text".to_string(),
    batch_rows=None, chunk_mib=None, enums="utf8".to_string(), arrays="list".to_string(),
    cast_unsupported=false, device=None))]
#[allow(clippy::too_many_arguments)]
fn read_table(
    py: Python<'_>,
    dsn: Option<String>,
    table: String,
    columns: Option<Vec<String>>,
    r#where: Option<String>,
    parallel: Option<usize>,
    source: String,
    engine: String,
    numeric: String,
    batch_rows: Option<usize>,
    chunk_mib: Option<usize>,
    enums: String,
    arrays: String,
    cast_unsupported: bool,
    device: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let types = TypeArgs {
        numeric,
        enums,
        arrays,
        cast_unsupported,
    };
    let options = Options {
        columns,
        filter: r#where,
        parallel,
        source,
        chunk_mib,
        ..Options::new(dsn, engine, types)
    };
    read_to(py, Target::Table(table), options, batch_rows, device)
}

/// A `Stream` of `target`, or with `device` a `DeviceTable` on that GPU.
fn read_to(
    py: Python<'_>,
    target: Target,
    options: Options,
    batch_rows: Option<usize>,
    device: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    match device {
        Some(d) if !d.is_none() => device::read(py, target, options, device::parse_device(&d)?),
        _ => Ok(Py::new(py, start(py, target, options, batch_rows)?)?.into_any()),
    }
}

/// A SELECT statement's rows as a stream of Arrow record batches, read on
/// one connection through COPY.
#[pyfunction]
#[pyo3(signature = (dsn, query, *, engine="auto".to_string(), numeric="text".to_string(),
    batch_rows=None, chunk_mib=None, enums="utf8".to_string(), arrays="list".to_string(),
    cast_unsupported=false, parallel=None, source="auto".to_string(), device=None))]
#[allow(clippy::too_many_arguments)]
fn read_sql(
    py: Python<'_>,
    dsn: Option<String>,
    query: String,
    engine: String,
    numeric: String,
    batch_rows: Option<usize>,
    chunk_mib: Option<usize>,
    enums: String,
    arrays: String,
    cast_unsupported: bool,
    parallel: Option<usize>,
    source: String,
    device: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    // Taken so that read_table's keywords can be passed on unchanged where
    // they mean the same; refused where a query cannot honour them.
    let why = "a query is read on one connection through COPY (only a table's pages can be \
               split between connections or read from its files)";
    if let Some(n) = parallel.filter(|&n| n > 1) {
        return Err(errors::InvalidRequest::new_err(format!(
            "parallel={n}: {why}"
        )));
    }
    if matches!(source.parse(), Ok(Source::Heap)) {
        return Err(errors::InvalidRequest::new_err(format!(
            "source={source:?}: {why}"
        )));
    }
    let types = TypeArgs {
        numeric,
        enums,
        arrays,
        cast_unsupported,
    };
    let options = Options {
        parallel,
        source,
        chunk_mib,
        ..Options::new(dsn, engine, types)
    };
    read_to(py, Target::Query(query), options, batch_rows, device)
}

/// Writes a table to a Parquet or Arrow IPC file and returns the report.
#[pyfunction]
#[pyo3(signature = (dsn, table, path, *, format=None, compression=None, columns=None,
    r#where=None, parallel=None, source="auto".to_string(), engine="auto".to_string(),
    numeric="text".to_string(), overwrite=false, chunk_mib=None, enums="utf8".to_string(),
    arrays="list".to_string(), cast_unsupported=false))]
#[allow(clippy::too_many_arguments)]
fn export(
    py: Python<'_>,
    dsn: Option<String>,
    table: String,
    path: PathBuf,
    format: Option<String>,
    compression: Option<String>,
    columns: Option<Vec<String>>,
    r#where: Option<String>,
    parallel: Option<usize>,
    source: String,
    engine: String,
    numeric: String,
    overwrite: bool,
    chunk_mib: Option<usize>,
    enums: String,
    arrays: String,
    cast_unsupported: bool,
) -> PyResult<Py<PyAny>> {
    let types = TypeArgs {
        numeric,
        enums,
        arrays,
        cast_unsupported,
    };
    let options = Options {
        columns,
        filter: r#where,
        parallel,
        source,
        chunk_mib,
        ..Options::new(dsn, engine, types)
    };
    let sink = file_sink(&path, format.as_deref(), compression.as_deref(), overwrite)?;
    let req = options.request(Target::Table(table), Output::File(path), sink)?;
    let report = export_interruptibly(py, req)?;
    report_dict(py, &report)
}

/// Runs `req` on a thread of its own while this one waits without the
/// GIL; a Ctrl-C meanwhile sets the request's cancel flag (the export then
/// leaves no file), waits for the export to stop and raises the
/// `KeyboardInterrupt`.
fn export_interruptibly(py: Python<'_>, req: ExportRequest<'_>) -> PyResult<ExportReport> {
    let cancel = AtomicBool::new(false);
    let req = ExportRequest {
        cancel: Some(&cancel),
        ..req
    };
    std::thread::scope(|scope| {
        let (done, result) = mpsc::channel();
        let req = &req;
        let thread = scope.spawn(move || {
            // The waiter may have gone on a Ctrl-C.
            let _ = done.send(gpupg_export::export(req, &NoProgress));
        });
        let waited = wait_interruptibly(py, move |timeout| match result.recv_timeout(timeout) {
            Ok(ran) => Poll::Ready(ran),
            Err(RecvTimeoutError::Timeout) => Poll::Pending,
            Err(RecvTimeoutError::Disconnected) => {
                Poll::Ready(Err(ExportError::ThreadPanicked("export")))
            }
        });
        if waited.is_err() {
            cancel.store(true, Ordering::SeqCst);
        }
        // The export stops promptly once cancelled; joined without the GIL.
        let _ = py.detach(move || thread.join());
        waited?.map_err(|e| export_error(&e))
    })
}

/// The native module, `gpupgparser._native`; the `gpupgparser` package
/// (python/gpupgparser) re-exports it.
#[pymodule]
#[pyo3(name = "_native")]
fn gpupgparser(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(read_table, m)?)?;
    m.add_function(wrap_pyfunction!(read_sql, m)?)?;
    m.add_function(wrap_pyfunction!(export, m)?)?;
    m.add_class::<Stream>()?;
    m.add_function(wrap_pyfunction!(fragments::plan, m)?)?;
    m.add_function(wrap_pyfunction!(fragments::read_fragment, m)?)?;
    m.add_class::<fragments::Plan>()?;
    m.add_class::<fragments::Fragment>()?;
    m.add("SnapshotGone", py.get_type::<fragments::SnapshotGone>())?;
    m.add_class::<device::DeviceTable>()?;
    m.add_class::<device::DeviceBatch>()?;
    m.add_class::<device::DeviceColumn>()?;
    m.add_class::<store::Store>()?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("ConnectionError", py.get_type::<errors::ConnectionError>())?;
    m.add("NotFound", py.get_type::<errors::NotFound>())?;
    m.add("Unsupported", py.get_type::<errors::Unsupported>())?;
    m.add("Cancelled", py.get_type::<errors::Cancelled>())?;
    m.add("InvalidRequest", py.get_type::<errors::InvalidRequest>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

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

use gpupg_export::{ExportReport, NoProgress, Output, Target};
use pyo3::prelude::*;

use crate::errors::{export_error, Error};
use crate::options::{file_sink, stream_sink, Options};
use crate::stream::Stream;

/// `report` as a Python dict with the CLI's JSON report's keys.
fn report_dict(py: Python<'_>, report: &ExportReport) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_string(report)
        .map_err(|e| Error::new_err(format!("cannot write the report: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (json,))?.unbind())
}

/// Starts the export of `target` and returns its stream once its columns
/// are known; connecting and planning run without the GIL.
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
    let batches = py
        .detach(|| gpupg_export::stream(req, NoProgress))
        .map_err(|e| export_error(&e))?;
    Ok(Stream::new(batches, batch_rows))
}

/// A table's rows as a stream of Arrow record batches (see docs/python.md).
#[pyfunction]
#[pyo3(signature = (dsn, table, *, columns=None, r#where=None, parallel=None,
    source="auto".to_string(), engine="auto".to_string(), numeric="text".to_string(),
    batch_rows=None, chunk_mib=None, device=None))]
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
    device: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let options = Options {
        dsn,
        columns,
        filter: r#where,
        parallel,
        source,
        engine,
        numeric,
        chunk_mib,
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
/// one connection.
#[pyfunction]
#[pyo3(signature = (dsn, query, *, engine="auto".to_string(), numeric="text".to_string(),
    batch_rows=None, device=None))]
fn read_sql(
    py: Python<'_>,
    dsn: Option<String>,
    query: String,
    engine: String,
    numeric: String,
    batch_rows: Option<usize>,
    device: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let options = Options {
        dsn,
        columns: None,
        filter: None,
        parallel: None,
        source: "auto".into(),
        engine,
        numeric,
        chunk_mib: None,
    };
    read_to(py, Target::Query(query), options, batch_rows, device)
}

/// Writes a table to a Parquet or Arrow IPC file and returns the report.
#[pyfunction]
#[pyo3(signature = (dsn, table, path, *, format=None, compression=None, columns=None,
    r#where=None, parallel=None, source="auto".to_string(), engine="auto".to_string(),
    numeric="text".to_string(), overwrite=false))]
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
) -> PyResult<Py<PyAny>> {
    let options = Options {
        dsn,
        columns,
        filter: r#where,
        parallel,
        source,
        engine,
        numeric,
        chunk_mib: None,
    };
    let sink = file_sink(&path, format.as_deref(), compression.as_deref(), overwrite)?;
    let req = options.request(Target::Table(table), Output::File(path), sink)?;
    let report = py
        .detach(|| gpupg_export::export(&req, &NoProgress))
        .map_err(|e| export_error(&e))?;
    report_dict(py, &report)
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

//! `gpupgparser.plan` and `gpupgparser.read_fragment`: one table read by
//! many processes (Dask workers) under one exported snapshot. The `Plan`
//! holds the coordinator's connection and transaction
//! ([`gpupg_export::FragmentPlan`]); its `Fragment`s are small picklable
//! descriptions (snapshot id, page range, table, options, the connection
//! string without its password) that `read_fragment` reads anywhere the
//! server can be reached, as long as the plan is open.

use std::sync::{Mutex, MutexGuard};

use gpupg_export::{ExportError, ExportRequest, FragmentPlan, NoProgress, Output, Target};
use gpupg_source::{ConnectConfig, PageRange};
use pyo3::create_exception;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::errors::{export_error, source_error, Error, InvalidRequest};
use crate::options::{stream_sink, Options, TypeArgs};
use crate::stream::Stream;

create_exception!(
    gpupgparser,
    SnapshotGone,
    Error,
    "A fragment's snapshot is gone: its plan was closed or its connection ended."
);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock leaves no half-written state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Python exception of a failed fragment read: a snapshot the server
/// no longer knows is the plan's, gone.
fn fragment_error(e: &ExportError) -> PyErr {
    match e {
        ExportError::SnapshotGone { message, .. } => SnapshotGone::new_err(format!(
            "the plan's snapshot is gone: the plan was closed or its connection ended \
             (the server says: {message})"
        )),
        e => export_error(e),
    }
}

/// `dsn` resolved as a connection would be, less its password and password
/// file: what a fragment carries to other processes, which take the
/// password from their own environment (`PGPASSWORD`, `~/.pgpass`).
fn dsn_without_password(dsn: Option<&str>) -> PyResult<String> {
    let mut config = ConnectConfig::resolve(dsn).map_err(source_error)?;
    config.password = None;
    config.passfile = None;
    Ok(config.to_connection_string())
}

/// One page range of a planned table: picklable, and read with
/// `gpupgparser.read_fragment` by any process that reaches the server
/// while its plan is open. It holds no password.
#[pyclass(module = "gpupgparser", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct Fragment {
    /// The connection string, without a password.
    #[pyo3(get)]
    dsn: String,
    /// The plan's exported snapshot id.
    #[pyo3(get)]
    snapshot: String,
    /// The table, schema-qualified and quoted.
    #[pyo3(get)]
    table: String,
    /// The first page.
    #[pyo3(get)]
    start: u64,
    /// The page after the last, or None for the end of the table.
    #[pyo3(get)]
    end: Option<u64>,
    /// The fragment's position in its plan, from 0.
    #[pyo3(get)]
    index: usize,
    /// The plan's number of fragments.
    #[pyo3(get)]
    count: usize,
    /// The plan's `columns` (None: every column).
    #[pyo3(get)]
    columns: Option<Vec<String>>,
    /// The plan's `where` condition.
    #[pyo3(get, name = "where")]
    filter: Option<String>,
    /// Connections that read this fragment (None: the default).
    #[pyo3(get)]
    parallel: Option<usize>,
    /// As `read_table`'s `source` (COPY only for fragments).
    #[pyo3(get)]
    source: String,
    /// As `read_table`'s `engine`.
    #[pyo3(get)]
    engine: String,
    /// As `read_table`'s `numeric`.
    #[pyo3(get)]
    numeric: String,
}

#[pymethods]
impl Fragment {
    /// Every field, in the order `__reduce__` gives them (pickle's way
    /// back; plans make fragments).
    #[new]
    #[pyo3(signature = (dsn, snapshot, table, start, end, index, count, columns, filter,
        parallel, source, engine, numeric))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        dsn: String,
        snapshot: String,
        table: String,
        start: u64,
        end: Option<u64>,
        index: usize,
        count: usize,
        columns: Option<Vec<String>>,
        filter: Option<String>,
        parallel: Option<usize>,
        source: String,
        engine: String,
        numeric: String,
    ) -> Fragment {
        Fragment {
            dsn,
            snapshot,
            table,
            start,
            end,
            index,
            count,
            columns,
            filter,
            parallel,
            source,
            engine,
            numeric,
        }
    }

    /// Pickles as the class and its fields.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let f = slf.get().clone();
        // More fields than tuples convert at once: one at a time.
        let args = PyTuple::new(
            py,
            [
                f.dsn.into_pyobject(py)?.into_any(),
                f.snapshot.into_pyobject(py)?.into_any(),
                f.table.into_pyobject(py)?.into_any(),
                f.start.into_pyobject(py)?.into_any(),
                f.end.into_pyobject(py)?.into_any(),
                f.index.into_pyobject(py)?.into_any(),
                f.count.into_pyobject(py)?.into_any(),
                f.columns.into_pyobject(py)?.into_any(),
                f.filter.into_pyobject(py)?.into_any(),
                f.parallel.into_pyobject(py)?.into_any(),
                f.source.into_pyobject(py)?.into_any(),
                f.engine.into_pyobject(py)?.into_any(),
                f.numeric.into_pyobject(py)?.into_any(),
            ],
        )?;
        PyTuple::new(py, [slf.get_type().into_any(), args.into_any()])
    }

    /// Dask's deterministic token: what the fragment reads, under which
    /// snapshot.
    fn __dask_tokenize__(&self) -> String {
        format!(
            "{} {} {} {:?} {:?} {:?} {:?} {} {} {}",
            self.snapshot,
            self.table,
            self.start,
            self.end,
            self.columns,
            self.filter,
            self.parallel,
            self.source,
            self.engine,
            self.numeric
        )
    }

    fn __repr__(&self) -> String {
        let end = self.end.map_or("end".to_string(), |e| e.to_string());
        format!(
            "Fragment({}/{} of {}, pages [{}, {end}), snapshot {})",
            self.index + 1,
            self.count,
            self.table,
            self.start,
            self.snapshot
        )
    }
}

impl Fragment {
    /// The request reading this fragment into `output`, connecting with
    /// `dsn` (`None`: the fragment's) and reading pages `pages` (`None`:
    /// its own), under the plan's snapshot.
    fn request(
        &self,
        dsn: Option<String>,
        pages: Option<PageRange>,
        output: Output,
    ) -> PyResult<ExportRequest<'static>> {
        let types = TypeArgs {
            numeric: self.numeric.clone(),
            enums: "utf8".into(),
            arrays: "list".into(),
            cast_unsupported: false,
        };
        let options = Options {
            columns: self.columns.clone(),
            filter: self.filter.clone(),
            parallel: self.parallel,
            source: self.source.clone(),
            ..Options::new(
                Some(dsn.unwrap_or_else(|| self.dsn.clone())),
                self.engine.clone(),
                types,
            )
        };
        let mut req = options.request(Target::Table(self.table.clone()), output, stream_sink())?;
        req.snapshot = Some(self.snapshot.clone());
        req.pages = Some(pages.unwrap_or(PageRange {
            start: self.start,
            end: self.end,
        }));
        Ok(req)
    }

    /// The stream of this fragment's rows (see [`Fragment::request`]).
    fn stream(
        &self,
        py: Python<'_>,
        dsn: Option<String>,
        pages: Option<PageRange>,
        batch_rows: Option<usize>,
    ) -> PyResult<Stream> {
        if batch_rows == Some(0) {
            return Err(InvalidRequest::new_err("batch_rows=0: must be at least 1"));
        }
        let req = self.request(dsn, pages, Output::Host)?;
        let batches = py
            .detach(|| gpupg_export::stream(req, NoProgress))
            .map_err(|e| fragment_error(&e))?;
        Ok(Stream::new(batches, batch_rows))
    }
}

/// Reads one fragment of a plan: the same `Stream` as `read_table` gives,
/// of the rows of the fragment's pages as of the plan's snapshot. `dsn`
/// replaces the fragment's connection string (e.g. another name for the
/// same server, or one with a password).
#[pyfunction]
#[pyo3(signature = (fragment, *, dsn=None, device=None, batch_rows=None))]
pub fn read_fragment(
    py: Python<'_>,
    fragment: &Fragment,
    dsn: Option<String>,
    device: Option<Bound<'_, PyAny>>,
    batch_rows: Option<usize>,
) -> PyResult<Py<PyAny>> {
    match device {
        Some(d) if !d.is_none() => {
            let device = crate::device::parse_device(&d)?;
            let req = fragment.request(dsn, None, Output::Device)?;
            crate::device::read_request(py, req, device, fragment_error)
        }
        _ => Ok(Py::new(py, fragment.stream(py, dsn, None, batch_rows)?)?.into_any()),
    }
}

/// The coordinator of a table read in fragments: an open transaction on
/// the server holding the snapshot every fragment is read under. A context
/// manager; close it (or leave the `with` block) once the last fragment
/// has been read.
#[pyclass(module = "gpupgparser")]
pub struct Plan {
    /// `None` once closed.
    coordinator: Mutex<Option<FragmentPlan>>,
    fragments: Vec<Fragment>,
    /// An empty read of the table under the snapshot: its schema is the
    /// fragments' (`__arrow_c_schema__`).
    schema_of: Py<Stream>,
}

#[pymethods]
impl Plan {
    /// The fragments, in page order; together they read the whole table.
    #[getter]
    fn fragments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.fragments.iter().cloned())
    }

    /// The exported snapshot's id.
    #[getter]
    fn snapshot(&self) -> Option<String> {
        self.fragments.first().map(|f| f.snapshot.clone())
    }

    /// Whether the plan was closed (its fragments can no longer be read).
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.coordinator).is_none()
    }

    /// The fragments' Arrow schema as a `pyarrow.Schema`.
    #[getter]
    fn schema<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py()
            .import("pyarrow")?
            .call_method1("schema", (slf.borrow().schema_of.clone_ref(slf.py()),))
    }

    /// The Arrow PyCapsule interface: the fragments' schema.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.schema_of.bind(py).call_method0("__arrow_c_schema__")
    }

    fn __len__(&self) -> usize {
        self.fragments.len()
    }

    /// Ends the coordinator's transaction: fragments not started yet then
    /// fail with `SnapshotGone`. Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(coordinator) = lock(&self.coordinator).take() else {
            return Ok(());
        };
        py.detach(|| coordinator.close())
            .map_err(|e| export_error(&e))
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        match self.fragments.first() {
            Some(f) => format!(
                "Plan({} in {} fragments, snapshot {}, {state})",
                f.table, f.count, f.snapshot
            ),
            None => format!("Plan({state})"),
        }
    }
}

/// Plans the read of `table` in `fragments` page ranges under one
/// snapshot (see docs/python.md, "Beyond one machine"). The columns, the
/// filter and the options are checked here, on an empty read.
#[pyfunction]
#[pyo3(signature = (dsn, table, *, fragments, columns=None, r#where=None, parallel=Some(1),
    source="copy".to_string(), engine="auto".to_string(), numeric="text".to_string()))]
#[allow(clippy::too_many_arguments)]
pub fn plan(
    py: Python<'_>,
    dsn: Option<String>,
    table: String,
    fragments: usize,
    columns: Option<Vec<String>>,
    r#where: Option<String>,
    parallel: Option<usize>,
    source: String,
    engine: String,
    numeric: String,
) -> PyResult<Plan> {
    let connect = ConnectConfig::resolve(dsn.as_deref()).map_err(source_error)?;
    let shared_dsn = dsn_without_password(dsn.as_deref())?;
    let coordinator = py
        .detach(|| FragmentPlan::begin(&connect, &table, fragments))
        .map_err(|e| export_error(&e))?;
    let fragments: Vec<Fragment> = coordinator
        .ranges()
        .iter()
        .enumerate()
        .map(|(index, r)| Fragment {
            dsn: shared_dsn.clone(),
            snapshot: coordinator.snapshot().to_string(),
            table: coordinator.table().to_string(),
            start: r.start,
            end: r.end,
            index,
            count: fragments,
            columns: columns.clone(),
            filter: r#where.clone(),
            parallel,
            source: source.clone(),
            engine: engine.clone(),
            numeric: numeric.clone(),
        })
        .collect();
    let first = fragments
        .first()
        .ok_or_else(|| Error::new_err("a plan without fragments"))?;
    // No pages: checks the options and gives the schema, reading nothing.
    // The connection string with its password: the coordinator's own.
    let empty = PageRange {
        start: 0,
        end: Some(0),
    };
    let schema_of = Py::new(py, first.stream(py, dsn, Some(empty), None)?)?;
    schema_of.bind(py).call_method0("close")?;
    Ok(Plan {
        coordinator: Mutex::new(Some(coordinator)),
        fragments,
        schema_of,
    })
}

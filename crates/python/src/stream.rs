//! `gpupgparser.Stream`: the batches of one export, handed to Python
//! through the Arrow PyCapsule interface (the C stream and C data
//! interfaces, without a copy) or one pyarrow RecordBatch at a time.

use std::ffi::CStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use arrow::array::{Array, RecordBatchReader, StructArray};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ffi::{to_ffi, FFI_ArrowSchema};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use arrow::record_batch::RecordBatch;
use gpupg_export::{BatchStream, ExportError, ExportReport};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyCapsule, PyTuple};

use crate::errors::{export_error, one_line, Error};

/// Capsule names the Arrow PyCapsule interface gives each struct.
const STREAM_CAPSULE: &CStr = c"arrow_array_stream";
const SCHEMA_CAPSULE: &CStr = c"arrow_schema";
const ARRAY_CAPSULE: &CStr = c"arrow_array";

/// The report of an export, set once its last batch is taken: shared by a
/// `Stream` and the C stream it handed out, which drains it elsewhere.
type ReportSlot = Arc<Mutex<Option<ExportReport>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves no half-written state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long one wait without the GIL lasts before Python's signal handlers
/// run: the most a Ctrl-C waits to be seen while the export is busy.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);

/// Calls `poll` without the GIL, each call waiting at most
/// [`SIGNAL_SLICE`], until it is ready, running Python's signal handlers
/// between calls: Ctrl-C ends the wait with its `KeyboardInterrupt`, and
/// the caller then drops (so cancels) what it waited for.
pub fn wait_interruptibly<T: Send>(
    py: Python<'_>,
    mut poll: impl FnMut(Duration) -> Poll<T> + Send,
) -> PyResult<T> {
    loop {
        if let Poll::Ready(value) = py.detach(|| poll(SIGNAL_SLICE)) {
            return Ok(value);
        }
        py.check_signals()?;
    }
}

/// The export's batches, at most `batch_rows` rows each.
pub struct Batches {
    stream: BatchStream,
    batch_rows: Option<usize>,
    /// A batch larger than `batch_rows` and the offset of its rows not
    /// handed out yet.
    rest: Option<(RecordBatch, usize)>,
    report: ReportSlot,
}

impl Batches {
    /// The next batch, waiting at most `timeout` for the export to decode
    /// one: `Pending` if none came by then.
    fn next_batch(&mut self, timeout: Duration) -> Poll<Option<Result<RecordBatch, ExportError>>> {
        if let (Some(rows), Some((batch, offset))) = (self.batch_rows, self.rest.take()) {
            let len = rows.min(batch.num_rows() - offset);
            // A slice shares the batch's buffers: no copy.
            let part = batch.slice(offset, len);
            if offset + len < batch.num_rows() {
                self.rest = Some((batch, offset + len));
            }
            return Poll::Ready(Some(Ok(part)));
        }
        let next = match self.stream.next_timeout(timeout) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        Poll::Ready(match next {
            None => {
                *lock(&self.report) = self.stream.report().cloned();
                None
            }
            Some(Ok(batch)) => match self.batch_rows {
                Some(rows) if batch.num_rows() > rows => {
                    self.rest = Some((batch, 0));
                    return self.next_batch(timeout);
                }
                _ => Some(Ok(batch)),
            },
            Some(Err(e)) => Some(Err(e)),
        })
    }
}

/// The batches as an Arrow `RecordBatchReader`, for the C stream interface.
struct Reader {
    schema: SchemaRef,
    batches: Batches,
}

impl Iterator for Reader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The consumer (not Python's thread necessarily) waits as long as
        // it takes: a consumer has no way to be told of a Ctrl-C.
        let next = loop {
            if let Poll::Ready(next) = self.batches.next_batch(Duration::MAX) {
                break next;
            }
        };
        // The consumer sees the library's one-line message.
        next.map(|b| b.map_err(|e| ArrowError::ExternalError(one_line(&e).into())))
    }
}

impl RecordBatchReader for Reader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The record batches of one export, in no particular order. Hand it to
/// any Arrow consumer (`pyarrow.table(s)`, `polars.DataFrame(s)`, DuckDB)
/// or iterate over it for pyarrow RecordBatches; either consumes it.
/// Closing or dropping it before the end cancels the export.
#[pyclass(module = "gpupgparser")]
pub struct Stream {
    schema: SchemaRef,
    /// `None` once handed out, taken in full, or closed; also while one
    /// Python thread waits for a batch, so that no lock is held without
    /// the GIL.
    batches: Mutex<Option<Batches>>,
    report: ReportSlot,
}

impl Stream {
    /// The Python stream of an export's batches.
    pub fn new(stream: BatchStream, batch_rows: Option<usize>) -> Stream {
        let report = ReportSlot::default();
        Stream {
            schema: stream.schema(),
            batches: Mutex::new(Some(Batches {
                stream,
                batch_rows,
                rest: None,
                report: report.clone(),
            })),
            report,
        }
    }

    fn take(&self) -> PyResult<Batches> {
        lock(&self.batches).take().ok_or_else(|| {
            Error::new_err(
                "the stream was already consumed, closed, or is being read by another thread",
            )
        })
    }

    /// The next batch, waited for without the GIL; `None` at the end. A
    /// Ctrl-C while waiting closes the stream (cancelling the export) and
    /// raises its `KeyboardInterrupt`.
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<RecordBatch>> {
        let Some(mut batches) = lock(&self.batches).take() else {
            return Ok(None);
        };
        let next = match wait_interruptibly(py, |timeout| batches.next_batch(timeout)) {
            Ok(next) => next,
            Err(interrupted) => {
                // Dropping joins the export's threads: without the GIL.
                py.detach(move || drop(batches));
                return Err(interrupted);
            }
        };
        match next {
            Some(Ok(batch)) => {
                *lock(&self.batches) = Some(batches);
                Ok(Some(batch))
            }
            // The export ended: the stream is spent.
            None => Ok(None),
            Some(Err(e)) => Err(export_error(&e)),
        }
    }
}

/// A capsule of the schema of `schema`'s batches.
pub(crate) fn schema_capsule<'py>(
    py: Python<'py>,
    schema: &SchemaRef,
) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema.as_ref())
        .map_err(|e| Error::new_err(format!("cannot export the schema: {e}")))?;
    // The capsule owns the struct: its destructor releases it unless the
    // consumer moved it out (and so set its `release` to null).
    PyCapsule::new_with_value(py, ffi, SCHEMA_CAPSULE)
}

pub(crate) fn pyarrow(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("pyarrow").map_err(|e| {
        pyo3::exceptions::PyImportError::new_err(format!(
            "iterating a gpupgparser stream yields pyarrow RecordBatches: install pyarrow ({e}), \
             or hand the stream to another Arrow consumer"
        ))
    })
}

#[pymethods]
impl Stream {
    /// The Arrow PyCapsule interface: a capsule of an `ArrowArrayStream`
    /// over the batches not taken yet. `requested_schema` is ignored (the
    /// interface allows it): the batches have the export's own types.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = Reader {
            schema: self.schema.clone(),
            batches: self.take()?,
        };
        let ffi = FFI_ArrowArrayStream::new(Box::new(reader));
        // As for the schema: released by the capsule unless moved out.
        PyCapsule::new_with_value(py, ffi, STREAM_CAPSULE)
    }

    /// The Arrow PyCapsule interface: a capsule of the batches' schema.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.schema)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next batch as a pyarrow RecordBatch (zero-copy).
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let pa = pyarrow(py)?;
        // Ctrl-C between batches: the caller's KeyboardInterrupt, and the
        // stream, once dropped, cancels the export.
        py.check_signals()?;
        match self.next_batch(py)? {
            None => Ok(None),
            Some(batch) => {
                let batch = Py::new(py, OneBatch(Mutex::new(Some(batch))))?;
                Ok(Some(pa.call_method1("record_batch", (batch,))?.unbind()))
            }
        }
    }

    /// Every remaining batch as one pyarrow Table.
    fn read_all(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let pa = pyarrow(py)?;
        let schema = pa.call_method1("schema", (Py::new(py, SchemaOf(self.schema.clone()))?,))?;
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch(py)? {
            py.check_signals()?;
            let batch = Py::new(py, OneBatch(Mutex::new(Some(batch))))?;
            batches.push(pa.call_method1("record_batch", (batch,))?);
        }
        let table = pa.getattr("Table")?;
        let kwargs = [("schema", schema)].into_py_dict(py)?;
        Ok(table
            .call_method("from_batches", (batches,), Some(&kwargs))?
            .unbind())
    }

    /// The export's report (the CLI's JSON report) once every batch was
    /// taken, else None.
    #[getter]
    fn report(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match lock(&self.report).as_ref() {
            None => Ok(None),
            Some(report) => crate::report_dict(py, report).map(Some),
        }
    }

    /// Stops the export (cancelling the server's statements) unless it
    /// was handed to a consumer; a closed stream yields nothing.
    fn close(&self, py: Python<'_>) {
        let batches = lock(&self.batches).take();
        // Dropping joins the export's threads: without the GIL.
        py.detach(move || drop(batches));
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py);
    }
}

/// One batch for the Arrow PyCapsule interface (`__arrow_c_array__`),
/// which `pyarrow.record_batch` imports without a copy.
#[pyclass(module = "gpupgparser")]
pub(crate) struct OneBatch(pub(crate) Mutex<Option<RecordBatch>>);

#[pymethods]
impl OneBatch {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        let batch = lock(&self.0)
            .take()
            .ok_or_else(|| Error::new_err("the batch was already taken"))?;
        let schema = schema_capsule(py, &batch.schema())?;
        let data = StructArray::from(batch).into_data();
        let (array, _) =
            to_ffi(&data).map_err(|e| Error::new_err(format!("cannot export a batch: {e}")))?;
        let array = PyCapsule::new_with_value(py, array, ARRAY_CAPSULE)?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }
}

/// A schema for `pyarrow.schema()` (`__arrow_c_schema__`).
#[pyclass(module = "gpupgparser")]
pub(crate) struct SchemaOf(pub(crate) SchemaRef);

#[pymethods]
impl SchemaOf {
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.0)
    }
}

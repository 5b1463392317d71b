//! GPU tables in Python: `DeviceTable`, `DeviceBatch` and `DeviceColumn`
//! over device-resident Arrow arrays, from `read_table(..., device=...)`
//! (`gpupg_export::stream_to_device`) or `Store.attach` (CUDA IPC
//! mappings). Batches implement the Arrow C device data interface
//! (`__arrow_c_device_array__`); fixed-width columns DLPack and the CUDA
//! Array Interface (see docs/python.md, "GPU tables").
//!
//! Every buffer is ready to read when Python sees it: a table is built
//! only after its export ended and each device it used was synchronized,
//! so no CUDA event or stream is handed out (`sync_event` NULL, the CUDA
//! Array Interface's `stream` None, DLPack's `stream` argument ignored).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use gpupg_export::{ExportError, ExportReport, ExportRequest, NoProgress, Output, Target};
use pyo3::exceptions::{PyBufferError, PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyCapsule, PyDict, PyTuple};

use crate::device_ffi::{self, CArray, DlDataType, Keep, Tensor, DL_CUDA};
use crate::errors::{export_error, Error, InvalidRequest, Unsupported};
use crate::options::{stream_sink, Options};
use crate::store::Store;
use crate::stream::{pyarrow, schema_capsule, OneBatch, SchemaOf};

/// One array in device memory, in Arrow's layout, by device address.
pub struct DevArray {
    /// Its Arrow type.
    pub data_type: DataType,
    /// Values.
    pub len: usize,
    /// NULLs.
    pub null_count: usize,
    /// Validity bitmap, `None` when there are no NULLs.
    pub validity: Option<u64>,
    /// The type's buffers in `ArrayData` order (no validity).
    pub buffers: Vec<u64>,
    /// Children.
    pub children: Vec<DevArray>,
}

impl DevArray {
    fn from_gpu(c: &gpupg_gpu::DeviceColumn) -> DevArray {
        DevArray {
            data_type: c.data_type.clone(),
            len: c.len,
            null_count: c.null_count,
            validity: c.validity.as_ref().map(|v| v.buffer.ptr()),
            buffers: c.buffers.iter().map(|b| b.buffer.ptr()).collect(),
            children: c.children.iter().map(DevArray::from_gpu).collect(),
        }
    }

    fn c_array(&self) -> CArray {
        let mut buffers = Vec::with_capacity(self.buffers.len() + 1);
        // The C interface's buffer 0 is the validity of every type we make.
        buffers.push(self.validity.unwrap_or(0));
        buffers.extend_from_slice(&self.buffers);
        let mut children: Vec<CArray> = self.children.iter().map(DevArray::c_array).collect();
        // Arrow's `ArrayData` keeps a dictionary's values as its child; the
        // C interface as the `dictionary` pointer.
        let dictionary = match self.data_type {
            DataType::Dictionary(..) if children.len() == 1 => children.pop().map(Box::new),
            _ => None,
        };
        CArray {
            length: self.len,
            null_count: self.null_count,
            buffers,
            children,
            dictionary,
        }
    }
}

/// What owns a batch's device memory (kept alive with it) and copies it
/// to the host.
pub trait Owner: Send + Sync {
    /// The batch as a host record batch.
    fn to_host(&self) -> Result<RecordBatch, String>;
}

impl Owner for gpupg_gpu::DeviceBatch {
    fn to_host(&self) -> Result<RecordBatch, String> {
        gpupg_gpu::DeviceBatch::to_host(self).map_err(|e| crate::errors::one_line(&e))
    }
}

/// One batch: its arrays by address and what keeps them alive.
pub struct BatchData {
    /// The columns' names and types.
    pub schema: SchemaRef,
    /// Rows.
    pub num_rows: usize,
    /// CUDA device ordinal.
    pub device: usize,
    /// One array per schema field.
    pub columns: Vec<DevArray>,
    /// The memory's owner.
    pub owner: Box<dyn Owner>,
}

/// The batches of `stream` as a device table, collected and synchronized
/// (run it without the GIL).
fn collect(
    mut stream: gpupg_export::DeviceBatchStream,
) -> PyResult<(SchemaRef, Vec<BatchData>, Option<ExportReport>)> {
    let schema = stream.schema();
    let batches = (&mut stream)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| export_error(&e))?;
    let report = stream.report().cloned();
    // The export has ended: one synchronization per device it used makes
    // every buffer ready (see the module's docs).
    let mut synced = BTreeSet::new();
    for b in &batches {
        if synced.insert(b.device()) {
            b.synchronize()
                .map_err(|e| Error::new_err(crate::errors::one_line(&e)))?;
        }
    }
    let data = batches
        .into_iter()
        .map(|b| BatchData {
            schema: schema.clone(),
            num_rows: b.num_rows,
            device: b.device(),
            columns: b.columns.iter().map(DevArray::from_gpu).collect(),
            owner: Box::new(b),
        })
        .collect();
    Ok((schema, data, report))
}

/// `device=`: None, an ordinal, "cuda" or "cuda:N".
pub fn parse_device(device: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(n) = device.extract::<usize>() {
        return Ok(n);
    }
    let bad = || {
        InvalidRequest::new_err(format!(
            "device={device}: expected \"cuda\", \"cuda:N\" or a device number"
        ))
    };
    let s: String = device.extract().map_err(|_| bad())?;
    match s.as_str() {
        "cuda" => Ok(0),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad),
    }
}

/// Refuses a device this machine does not have, before connecting.
fn check_device(ordinal: usize) -> PyResult<()> {
    match gpupg_gpu::device_count() {
        Err(e) => Err(InvalidRequest::new_err(format!(
            "device=cuda:{ordinal}: no usable GPU ({})",
            crate::errors::one_line(&e)
        ))),
        Ok(n) if ordinal >= n => Err(InvalidRequest::new_err(format!(
            "device=cuda:{ordinal}: this machine has {n} GPU(s)"
        ))),
        Ok(_) => Ok(()),
    }
}

/// Reads `target` into device memory on GPU `device` and returns the
/// `DeviceTable`; the GIL is released while it runs.
pub fn read(
    py: Python<'_>,
    target: Target,
    options: Options,
    device: usize,
) -> PyResult<Py<PyAny>> {
    check_device(device)?;
    let req = options.request(target, Output::Device, stream_sink())?;
    read_request(py, req, device, export_error)
}

/// Runs `req` (its output the device) on GPU `device` and returns the
/// `DeviceTable`, its errors worded by `error`.
pub fn read_request(
    py: Python<'_>,
    mut req: ExportRequest<'static>,
    device: usize,
    error: fn(&ExportError) -> PyErr,
) -> PyResult<Py<PyAny>> {
    check_device(device)?;
    req.devices = vec![device];
    let (schema, batches, report) = py.detach(|| {
        let stream = gpupg_export::stream_to_device(req, NoProgress).map_err(|e| error(&e))?;
        collect(stream)
    })?;
    let report = match report {
        Some(r) => Some(crate::report_dict(py, &r)?),
        None => None,
    };
    let table = DeviceTable::new(py, schema, device, batches, report)?;
    Ok(Py::new(py, table)?.into_any())
}

/// A table in GPU memory: its batches (`DeviceBatch`), each a set of
/// device-resident Arrow columns. Device memory is freed when the last
/// reference to a batch, column or handed-out capsule goes.
#[pyclass(module = "gpupgparser", frozen)]
pub struct DeviceTable {
    schema: SchemaRef,
    device: usize,
    batches: Vec<Py<DeviceBatch>>,
    report: Option<Py<PyAny>>,
    /// The store, name and revision of an attached table, until released.
    held: Mutex<Option<(Py<Store>, String, u64)>>,
}

impl DeviceTable {
    /// A table of `batches`, on `device` (used when there is no batch).
    pub fn new(
        py: Python<'_>,
        schema: SchemaRef,
        device: usize,
        batches: Vec<BatchData>,
        report: Option<Py<PyAny>>,
    ) -> PyResult<DeviceTable> {
        let batches = batches
            .into_iter()
            .map(|b| Py::new(py, DeviceBatch { data: Arc::new(b) }))
            .collect::<PyResult<_>>()?;
        Ok(DeviceTable {
            schema,
            device,
            batches,
            report,
            held: Mutex::new(None),
        })
    }

    /// Makes the table hold `revision` of `name` in `store` until released.
    pub fn hold(&self, store: Py<Store>, name: String, revision: u64) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((store, name, revision));
    }
}

fn pyarrow_schema<'py>(py: Python<'py>, schema: &SchemaRef) -> PyResult<Bound<'py, PyAny>> {
    pyarrow(py)?.call_method1("schema", (Py::new(py, SchemaOf(schema.clone()))?,))
}

/// Host copies of `batches` (without the GIL) as pyarrow RecordBatches.
fn host_batches<'py>(
    py: Python<'py>,
    batches: &[Arc<BatchData>],
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let pa = pyarrow(py)?;
    let host = py
        .detach(|| {
            batches
                .iter()
                .map(|b| b.owner.to_host())
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(Error::new_err)?;
    host.into_iter()
        .map(|b| {
            let one = Py::new(py, OneBatch(Mutex::new(Some(b))))?;
            pa.call_method1("record_batch", (one,))
        })
        .collect()
}

#[pymethods]
impl DeviceTable {
    /// The columns as a pyarrow Schema.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pyarrow_schema(py, &self.schema)
    }

    /// The Arrow PyCapsule interface: the schema.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.schema)
    }

    /// Rows in all batches.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.get().data.num_rows).sum()
    }

    /// The CUDA device ordinal.
    #[getter]
    fn device(&self) -> usize {
        self.device
    }

    /// The batches (`DeviceBatch`), in the order they were decoded.
    #[getter]
    fn batches(&self, py: Python<'_>) -> Vec<Py<DeviceBatch>> {
        self.batches.iter().map(|b| b.clone_ref(py)).collect()
    }

    /// The column named `key` (or at index `key`) of every batch: a list
    /// of `DeviceColumn`, one per batch.
    fn column(&self, key: &Bound<'_, PyAny>) -> PyResult<Vec<DeviceColumn>> {
        let index = column_index(&self.schema, key)?;
        Ok(self
            .batches
            .iter()
            .map(|b| DeviceColumn::of(&b.get().data, index))
            .collect())
    }

    fn __getitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<Vec<DeviceColumn>> {
        self.column(key)
    }

    /// The export's report (the CLI's), or the store's manifest summary.
    #[getter]
    fn report(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.report.as_ref().map(|r| r.clone_ref(py))
    }

    /// Copies the table to host memory: a pyarrow Table.
    fn to_host<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let data: Vec<Arc<BatchData>> = self.batches.iter().map(|b| b.get().data.clone()).collect();
        let batches = host_batches(py, &data)?;
        let kwargs = [("schema", pyarrow_schema(py, &self.schema)?)].into_py_dict(py)?;
        pyarrow(py)?
            .getattr("Table")?
            .call_method("from_batches", (batches,), Some(&kwargs))
    }

    /// Same as `to_host()`.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_host(py)
    }

    /// Gives back the store revision an attached table holds (nothing for
    /// a table read with `read_table`). The memory stays mapped while
    /// batches are referenced, but the server may reuse it once no client
    /// holds the revision: use the data before releasing.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        match held {
            Some((store, name, revision)) => store.get().release(py, &name, revision),
            None => Ok(()),
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "DeviceTable({} rows in {} batches on cuda:{})",
            self.num_rows(),
            self.batches.len(),
            self.device
        )
    }
}

fn column_index(schema: &SchemaRef, key: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(i) = key.extract::<usize>() {
        return if i < schema.fields().len() {
            Ok(i)
        } else {
            Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "column {i}: there are {}",
                schema.fields().len()
            )))
        };
    }
    let name: String = key
        .extract()
        .map_err(|_| PyTypeError::new_err("a column is named by its name or its index"))?;
    schema
        .index_of(&name)
        .map_err(|_| PyKeyError::new_err(format!("no column {name:?}")))
}

/// One batch of a `DeviceTable`: device-resident Arrow columns.
#[pyclass(module = "gpupgparser", frozen)]
pub struct DeviceBatch {
    data: Arc<BatchData>,
}

#[pymethods]
impl DeviceBatch {
    /// Rows.
    #[getter]
    fn num_rows(&self) -> usize {
        self.data.num_rows
    }

    fn __len__(&self) -> usize {
        self.data.num_rows
    }

    /// The CUDA device ordinal.
    #[getter]
    fn device(&self) -> usize {
        self.data.device
    }

    /// The columns as a pyarrow Schema.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pyarrow_schema(py, &self.data.schema)
    }

    /// The column named `key` (or at index `key`).
    fn column(&self, key: &Bound<'_, PyAny>) -> PyResult<DeviceColumn> {
        Ok(DeviceColumn::of(
            &self.data,
            column_index(&self.data.schema, key)?,
        ))
    }

    fn __getitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<DeviceColumn> {
        self.column(key)
    }

    /// The Arrow PyCapsule interface: the batch's schema (a struct).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.data.schema)
    }

    /// The Arrow C device data interface: (schema capsule, capsule of an
    /// `ArrowDeviceArray` of the batch as a struct array on CUDA, whose
    /// `sync_event` is NULL: the data is ready). `requested_schema` is
    /// ignored, as the interface allows.
    #[pyo3(signature = (requested_schema=None, **kwargs))]
    fn __arrow_c_device_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = (requested_schema, kwargs);
        let schema = schema_capsule(py, &self.data.schema)?;
        let top = CArray {
            length: self.data.num_rows,
            null_count: 0,
            buffers: vec![0],
            children: self.data.columns.iter().map(DevArray::c_array).collect(),
            dictionary: None,
        };
        let keep: Keep = self.data.clone();
        let array = device_ffi::device_array_capsule(py, top, self.data.device, &keep)?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }

    /// Copies the batch to host memory: a pyarrow RecordBatch.
    fn to_host<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut b = host_batches(py, std::slice::from_ref(&self.data))?;
        b.pop().ok_or_else(|| Error::new_err("no batch"))
    }

    fn __repr__(&self) -> String {
        format!(
            "DeviceBatch({} rows, {} columns on cuda:{})",
            self.data.num_rows,
            self.data.columns.len(),
            self.data.device
        )
    }
}

/// A one-dimensional view of one column of one batch (or of its validity
/// bitmap, as uint8 bytes): DLPack and the CUDA Array Interface for
/// fixed-width types.
#[pyclass(module = "gpupgparser", frozen)]
pub struct DeviceColumn {
    data: Arc<BatchData>,
    name: String,
    data_type: DataType,
    len: usize,
    null_count: usize,
    /// Address of the values (0: a type without one values buffer).
    values: u64,
    /// Address of the validity bitmap, if there are NULLs.
    validity: Option<u64>,
}

impl DeviceColumn {
    fn of(data: &Arc<BatchData>, index: usize) -> DeviceColumn {
        let array = &data.columns[index];
        DeviceColumn {
            data: data.clone(),
            name: data.schema.field(index).name().clone(),
            data_type: array.data_type.clone(),
            len: array.len,
            null_count: array.null_count,
            values: array.buffers.first().copied().unwrap_or(0),
            validity: array.validity,
        }
    }

    /// The DLPack type and CUDA Array Interface typestr of the values, or
    /// why they have none.
    fn element(&self) -> PyResult<(DlDataType, &'static str)> {
        let (code, bits, typestr) = match &self.data_type {
            DataType::Int8 => (0, 8, "|i1"),
            DataType::Int16 => (0, 16, "<i2"),
            DataType::Int32 | DataType::Date32 | DataType::Time32(_) => (0, 32, "<i4"),
            DataType::Int64
            | DataType::Date64
            | DataType::Time64(_)
            | DataType::Timestamp(_, _)
            | DataType::Duration(_) => (0, 64, "<i8"),
            DataType::UInt8 => (1, 8, "|u1"),
            DataType::UInt16 => (1, 16, "<u2"),
            DataType::UInt32 => (1, 32, "<u4"),
            DataType::UInt64 => (1, 64, "<u8"),
            DataType::Float16 => (2, 16, "<f2"),
            DataType::Float32 => (2, 32, "<f4"),
            DataType::Float64 => (2, 64, "<f8"),
            other => {
                return Err(Unsupported::new_err(format!(
                    "column {}: {other} is not one fixed-width value per row (no DLPack or \
                     CUDA Array Interface); use the batch's __arrow_c_device_array__",
                    self.name
                )))
            }
        };
        if self.values == 0 {
            return Err(Unsupported::new_err(format!(
                "column {}: no values buffer",
                self.name
            )));
        }
        Ok((
            DlDataType {
                code,
                bits,
                lanes: 1,
            },
            typestr,
        ))
    }
}

#[pymethods]
impl DeviceColumn {
    /// The column's name (`NAME.validity` for a validity view).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The Arrow type, as text (e.g. `Int64`, `Timestamp(µs)`).
    #[getter]
    fn arrow_type(&self) -> String {
        self.data_type.to_string()
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// NULLs among the values.
    #[getter]
    fn null_count(&self) -> usize {
        self.null_count
    }

    /// The CUDA device ordinal.
    #[getter]
    fn device(&self) -> usize {
        self.data.device
    }

    /// The validity bitmap as a uint8 column of ceil(len / 8) bytes (bit i
    /// of the bitmap, LSB first, is set when value i is not NULL), or None
    /// when there is no NULL.
    #[getter]
    fn validity(&self) -> Option<DeviceColumn> {
        self.validity.map(|ptr| DeviceColumn {
            data: self.data.clone(),
            name: format!("{}.validity", self.name),
            data_type: DataType::UInt8,
            len: self.len.div_ceil(8),
            null_count: 0,
            values: ptr,
            validity: None,
        })
    }

    /// DLPack: `(kDLCUDA, device)`.
    fn __dlpack_device__(&self) -> (i32, usize) {
        (DL_CUDA, self.data.device)
    }

    /// DLPack: a capsule of the values as a 1-D tensor, versioned
    /// (DLPack 1.0) when `max_version` allows. The data is ready, so
    /// `stream` needs no wait; no copy is ever made.
    #[pyo3(signature = (stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, usize)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = stream;
        if let Some(d) = dl_device {
            if d != (DL_CUDA, self.data.device) {
                return Err(PyBufferError::new_err(format!(
                    "column {} is on CUDA device {}: no copy to {d:?}",
                    self.name, self.data.device
                )));
            }
        }
        if copy == Some(true) {
            return Err(PyBufferError::new_err(format!(
                "column {}: __dlpack__ does not copy",
                self.name
            )));
        }
        let (dtype, _) = self.element()?;
        let tensor = Tensor {
            ptr: self.values,
            len: self.len,
            dtype,
            device: self.data.device,
        };
        let keep: Keep = self.data.clone();
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        device_ffi::dlpack_capsule(py, &tensor, versioned, &keep)
    }

    /// The CUDA Array Interface (version 3) of the values; `stream` is
    /// None: the data is ready.
    #[getter]
    fn __cuda_array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (_, typestr) = self.element()?;
        let d = PyDict::new(py);
        d.set_item("shape", (self.len,))?;
        d.set_item("typestr", typestr)?;
        d.set_item("data", (self.values, false))?;
        d.set_item("version", 3)?;
        d.set_item("strides", py.None())?;
        d.set_item("stream", py.None())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "DeviceColumn({:?}, {}, {} values, {} NULLs, cuda:{})",
            self.name, self.data_type, self.len, self.null_count, self.data.device
        )
    }
}

//! `gpupgparser.Store`: a client of a table store server
//! (`gpupgparser store serve`, crate `gpupg_store`): load, refresh, drop
//! and list tables, and attach one as a `DeviceTable` mapped through CUDA
//! IPC (no copy).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use gpupg_gpu::{IpcHandle, MappedRegion};
use gpupg_source::ConnectConfig;
use gpupg_store::manifest::ArrayInfo;
use gpupg_store::{default_socket_path, Client, ErrorKind, LoadSpec, Manifest, StoreError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use crate::device::{BatchData, DevArray, DeviceTable, Owner};
use crate::errors::{source_error, ConnectionError, Error, InvalidRequest, NotFound, Unsupported};

/// The Python exception for a store error, with the CLI's one line.
pub fn store_error(e: &StoreError) -> PyErr {
    let msg = e.one_line();
    match e.kind() {
        ErrorKind::UnknownTable => NotFound::new_err(msg),
        ErrorKind::NoServer | ErrorKind::UntrustedSocket => ConnectionError::new_err(msg),
        ErrorKind::BadName
        | ErrorKind::BadDevice
        | ErrorKind::BadRequest
        | ErrorKind::AlreadyLoaded
        | ErrorKind::MemoryLimit => InvalidRequest::new_err(msg),
        _ => Error::new_err(msg),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves no half-written state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `value` (JSON) as a Python object.
fn to_py(py: Python<'_>, value: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_string(value)
        .map_err(|e| Error::new_err(format!("cannot read the store's answer: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (json,))?.unbind())
}

/// A connection to a table store server. Attachments made through it are
/// held until released (leaving `attach`'s `with` block) or until the
/// store object is collected.
#[pyclass(module = "gpupgparser", frozen)]
pub struct Store {
    socket: PathBuf,
    /// Requests are answered in order: one at a time.
    client: Mutex<Client>,
}

impl Store {
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&mut lock(&self.client)))
            .map_err(|e| store_error(&e))
    }

    /// Gives back one attachment to `revision` of `name`.
    pub fn release(&self, py: Python<'_>, name: &str, revision: u64) -> PyResult<()> {
        self.call(py, |c| c.release(name, revision))
    }
}

#[pymethods]
impl Store {
    /// Connects to the server at `socket` (default: the CLI's:
    /// $GPUPGPARSER_STORE_SOCKET, else under $XDG_RUNTIME_DIR or /tmp).
    #[new]
    #[pyo3(signature = (socket=None))]
    fn new(py: Python<'_>, socket: Option<PathBuf>) -> PyResult<Store> {
        let socket = match socket {
            Some(s) => s,
            None => match std::env::var_os("GPUPGPARSER_STORE_SOCKET") {
                Some(s) if !s.is_empty() => PathBuf::from(s),
                _ => default_socket_path().map_err(|e| store_error(&e))?,
            },
        };
        let client = py
            .detach(|| Client::connect(&socket))
            .map_err(|e| store_error(&e))?;
        Ok(Store {
            socket,
            client: Mutex::new(client),
        })
    }

    /// The server's socket.
    #[getter]
    fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// Loads `table` (as `gpupgparser store load`) and returns the
    /// revision's description. `dsn=None`: the environment's, resolved
    /// here and sent whole, as the CLI does. Other keywords are the
    /// store's load options: `device`, `devices`, `source`, `columns`,
    /// `auto_refresh_seconds`, `parallel`, `threads`, `chunk_mib`,
    /// `heap_threshold`, `heap_sync`, `data_dir`, `gpu_selection`,
    /// `manual_optimal_gpus`.
    #[pyo3(signature = (table, name=None, dsn=None, **options))]
    fn load(
        &self,
        py: Python<'_>,
        table: String,
        name: Option<String>,
        dsn: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let connect = ConnectConfig::resolve(dsn.as_deref()).map_err(source_error)?;
        let mut spec = serde_json::json!({});
        if let Some(options) = options {
            let json: String = py
                .import("json")?
                .call_method1("dumps", (options,))?
                .extract()?;
            spec = serde_json::from_str(&json)
                .map_err(|e| InvalidRequest::new_err(format!("load options: {e}")))?;
            // The spec ignores fields it does not know: a misspelt option
            // would be dropped without a word.
            let known = serde_json::to_value(LoadSpec::new("", ""))
                .map_err(|e| Error::new_err(format!("load options: {e}")))?;
            if let (Value::Object(given), Value::Object(known)) = (&spec, &known) {
                if let Some(k) = given.keys().find(|k| !known.contains_key(*k)) {
                    return Err(InvalidRequest::new_err(format!(
                        "load options: {k:?} is not a load option"
                    )));
                }
            }
        }
        if let Value::Object(map) = &mut spec {
            map.insert("table".into(), Value::String(table));
            map.insert("name".into(), name.map_or(Value::Null, Value::String));
            map.insert("dsn".into(), Value::String(connect.to_connection_string()));
        }
        let spec: LoadSpec = serde_json::from_value(spec)
            .map_err(|e| InvalidRequest::new_err(format!("load options: {e}")))?;
        let info = self.call(py, |c| c.load(spec))?;
        to_py(py, &info)
    }

    /// Rebuilds `name` if its table changed: `{"rebuilt": bool, "info":
    /// {...}}`.
    fn refresh(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
        let outcome = self.call(py, |c| c.refresh(&name))?;
        to_py(py, &outcome)
    }

    /// Removes `name` from the store: `{"name", "freed_bytes", "held_bytes"}`.
    fn drop(&self, py: Python<'_>, name: String) -> PyResult<Py<PyAny>> {
        let outcome = self.call(py, |c| c.drop_table(&name))?;
        to_py(py, &outcome)
    }

    /// Every table and held revision, one dict each; `stale=True` checks
    /// each against PostgreSQL.
    #[pyo3(signature = (stale=false))]
    fn list<'py>(&self, py: Python<'py>, stale: bool) -> PyResult<Bound<'py, PyList>> {
        let report = self.call(py, |c| c.list(stale))?;
        let items = report
            .revisions
            .iter()
            .map(|r| to_py(py, r))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// The current revision of `name` as a `DeviceTable` mapped from the
    /// server's device memory through CUDA IPC (no copy), held until the
    /// `with` block ends (or `release()`). Only the gpu backend has device
    /// memory: a host-backend server gives `Unsupported`.
    fn attach(slf: Bound<'_, Self>, name: String) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let manifest = this.call(py, |c| c.attach(&name))?;
        let revision = manifest.revision;
        let mapped = if manifest.backend == "gpu" {
            py.detach(|| map(manifest))
        } else {
            Err(Unsupported::new_err(format!(
                "{name}: the store's backend is {}; attach maps device memory through CUDA IPC, \
                 which only the gpu backend has",
                manifest.backend
            )))
        };
        let (schema, device, batches, info) = match mapped {
            Ok(m) => m,
            Err(e) => {
                // Not held on failure: the server may free the revision.
                let _ = this.release(py, &name, revision);
                return Err(e);
            }
        };
        let report = to_py(py, &info)?;
        let table = DeviceTable::new(py, schema, device, batches, Some(report))?;
        table.hold(slf.unbind(), name, revision);
        Ok(Py::new(py, table)?.into_any())
    }

    fn __repr__(&self) -> String {
        format!("Store({:?})", self.socket.display().to_string())
    }
}

/// An attached revision: its manifest and the mapped allocations, unmapped
/// when the last batch (or capsule) using them goes.
struct Attached {
    manifest: Manifest,
    regions: Vec<MappedRegion>,
}

/// One chunk of an attached revision.
struct StoreChunk {
    attached: Arc<Attached>,
    chunk: usize,
}

impl Owner for StoreChunk {
    fn to_host(&self) -> Result<RecordBatch, String> {
        let mut one = self.attached.manifest.clone();
        for c in &mut one.columns {
            c.chunks = c.chunks.get(self.chunk).cloned().into_iter().collect();
        }
        let regions = &self.attached.regions;
        let mut read = |a: &gpupg_store::manifest::AllocationInfo, offset: u64, dst: &mut [u8]| {
            let region = regions
                .get(a.id)
                .ok_or_else(|| StoreError::Manifest(format!("no allocation {}", a.id)))?;
            region.read(offset, dst).map_err(StoreError::from)
        };
        let mut batches = one.read_batches(&mut read).map_err(|e| e.one_line())?;
        batches.pop().ok_or_else(|| "no chunk".to_string())
    }
}

/// The manifest's revision as the `DeviceTable`'s parts, its allocations
/// mapped (without the GIL).
#[allow(clippy::type_complexity)]
fn map(
    manifest: Manifest,
) -> PyResult<(arrow::datatypes::SchemaRef, usize, Vec<BatchData>, Value)> {
    let gpu = |e: gpupg_gpu::GpuError| Error::new_err(crate::errors::one_line(&e));
    let manifest_error = |e: String| Error::new_err(format!("the store's manifest: {e}"));
    let schema = manifest.arrow_schema().map_err(|e| store_error(&e))?;
    let mut regions = Vec::with_capacity(manifest.allocations.len());
    for a in &manifest.allocations {
        let handle = IpcHandle::from_hex(&a.ipc_handle).map_err(gpu)?;
        regions.push(MappedRegion::open(a.device, &handle).map_err(gpu)?);
    }
    let mut arrays: Vec<Vec<DevArray>> = Vec::new();
    let chunks = manifest.columns.first().map_or(0, |c| c.chunks.len());
    for chunk in 0..chunks {
        let mut columns = Vec::with_capacity(manifest.columns.len());
        for (column, field) in manifest.columns.iter().zip(schema.fields()) {
            let info = column.chunks.get(chunk).ok_or_else(|| {
                manifest_error(format!("column {} lacks chunk {chunk}", column.name))
            })?;
            columns.push(dev_array(field.data_type(), info, &regions).map_err(manifest_error)?);
        }
        arrays.push(columns);
    }
    let info = serde_json::json!({
        "name": manifest.name,
        "table": manifest.table,
        "revision": manifest.revision,
        "rows": manifest.rows,
        "device_bytes": manifest.device_bytes,
        "lsn": manifest.lsn,
    });
    let device = manifest.device;
    let attached = Arc::new(Attached { manifest, regions });
    let batches = arrays
        .into_iter()
        .enumerate()
        .map(|(chunk, columns)| BatchData {
            schema: schema.clone(),
            num_rows: columns.first().map_or(0, |c| c.len),
            device,
            columns,
            owner: Box::new(StoreChunk {
                attached: attached.clone(),
                chunk,
            }),
        })
        .collect();
    Ok((schema, device, batches, info))
}

/// The device addresses of one array of the manifest.
fn dev_array(
    data_type: &DataType,
    info: &ArrayInfo,
    regions: &[MappedRegion],
) -> Result<DevArray, String> {
    let address = |b: &gpupg_store::manifest::BufferInfo| -> Result<u64, String> {
        let region = regions
            .get(b.allocation)
            .ok_or_else(|| format!("no allocation {}", b.allocation))?;
        if b.length == 0 {
            // No bytes: any valid address of the device will do.
            return Ok(region.ptr());
        }
        match b.offset.checked_add(b.length) {
            Some(end) if end <= region.len() as u64 => Ok(region.ptr() + b.offset),
            _ => Err(format!(
                "buffer at {}+{} is outside allocation {} of {} bytes",
                b.offset,
                b.length,
                b.allocation,
                region.len()
            )),
        }
    };
    let mut buffers = &info.buffers[..];
    let validity = match buffers.first() {
        Some(b) if b.kind == "validity" => {
            buffers = &buffers[1..];
            Some(address(b)?)
        }
        _ => None,
    };
    let buffers = buffers.iter().map(address).collect::<Result<Vec<_>, _>>()?;
    let child_types = child_types(data_type);
    if child_types.len() != info.children.len() {
        return Err(format!(
            "{} children for type {data_type}, which has {}",
            info.children.len(),
            child_types.len()
        ));
    }
    let children = child_types
        .iter()
        .zip(&info.children)
        .map(|(t, c)| dev_array(t, c, regions))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DevArray {
        data_type: data_type.clone(),
        len: info.rows,
        null_count: info.null_count,
        validity,
        buffers,
        children,
    })
}

/// Types of an array's children, in `ArrayData` order.
fn child_types(dt: &DataType) -> Vec<DataType> {
    match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            vec![f.data_type().clone()]
        }
        DataType::Struct(fields) => fields.iter().map(|f| f.data_type().clone()).collect(),
        DataType::Dictionary(_, values) => vec![values.as_ref().clone()],
        _ => Vec::new(),
    }
}

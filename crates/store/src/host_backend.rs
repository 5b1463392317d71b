//! Tables in host memory, laid out as the GPU backend lays them out on the
//! device: one slab per chunk holding every buffer, described by handles of
//! the same form. The protocol, manifests, revisions and accounting are
//! the same, so they are tested on machines without a GPU; tests read the
//! bytes behind a manifest with [`HostBackend::read`] where a consumer of
//! the GPU backend maps them with `MappedRegion`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arrow::array::{ArrayData, MutableArrayData, RecordBatch};
use gpupg_export::{export_to_host, BatchSize, Engine, ExportRequest, NoProgress, Output};
use gpupg_gpu::{gather_rows_host, IpcHandle};

use crate::backend::{
    AllocationLayout, Backend, BufferLayout, ChunkLayout, ColumnLayout, LoadedTable,
};
use crate::error::StoreError;

/// Marks a host handle (first 8 of its 64 bytes), so a CUDA IPC handle is
/// never mistaken for one.
const HOST_HANDLE_MAGIC: &[u8; 8] = b"gpupghst";

/// Buffers start at multiples of this in a slab, as on the device.
const ALIGN: usize = 64;

/// Loads tables into host memory with the CPU engine.
#[derive(Debug)]
pub struct HostBackend {
    devices: usize,
    next_id: AtomicU64,
    /// Every slab alive, by id, for [`HostBackend::read`].
    slabs: Mutex<HashMap<u64, Weak<Vec<u8>>>>,
}

impl Default for HostBackend {
    fn default() -> Self {
        HostBackend::new(1)
    }
}

impl HostBackend {
    /// A backend pretending to have `devices` devices (device ordinals are
    /// checked as on a GPU).
    pub fn new(devices: usize) -> HostBackend {
        HostBackend {
            devices,
            next_id: AtomicU64::new(1),
            slabs: Mutex::new(HashMap::new()),
        }
    }

    /// Copies `dst.len()` bytes at `offset` of the slab `handle` names,
    /// as `MappedRegion::read` does for a device allocation.
    pub fn read(&self, handle: &str, offset: u64, dst: &mut [u8]) -> Result<(), StoreError> {
        let h = IpcHandle::from_hex(handle)?;
        if &h.0[..8] != HOST_HANDLE_MAGIC {
            return Err(StoreError::Manifest(format!(
                "{handle} is not a host backend handle"
            )));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.0[8..16]);
        let id = u64::from_le_bytes(id);
        let slab = self
            .slabs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .and_then(Weak::upgrade)
            .ok_or_else(|| StoreError::Manifest(format!("host slab {id} has been freed")))?;
        let start = usize::try_from(offset).ok();
        let range = start.and_then(|s| Some(s..s.checked_add(dst.len())?));
        match range.and_then(|r| slab.get(r)) {
            Some(bytes) => {
                dst.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(gpupg_gpu::GpuError::OutOfRange {
                offset,
                len: dst.len() as u64,
                size: slab.len() as u64,
            }
            .into()),
        }
    }

    fn register(&self, bytes: Vec<u8>, device: usize) -> (Arc<Vec<u8>>, AllocationLayout) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut handle = [0u8; 64];
        handle[..8].copy_from_slice(HOST_HANDLE_MAGIC);
        handle[8..16].copy_from_slice(&id.to_le_bytes());
        let slab = Arc::new(bytes);
        let mut slabs = self.slabs.lock().unwrap_or_else(|p| p.into_inner());
        slabs.retain(|_, s| s.strong_count() > 0);
        slabs.insert(id, Arc::downgrade(&slab));
        let layout = AllocationLayout {
            handle: IpcHandle(handle).to_hex(),
            size: slab.len() as u64,
            device,
        };
        (slab, layout)
    }
}

impl Backend for HostBackend {
    fn kind(&self) -> &'static str {
        "host"
    }

    fn device_count(&self) -> Result<usize, String> {
        Ok(self.devices)
    }

    fn check_device(&self, device: usize) -> Result<(), StoreError> {
        if device < self.devices {
            Ok(())
        } else {
            Err(StoreError::BadDevice {
                device,
                detail: format!("the host backend has {} device(s)", self.devices),
            })
        }
    }

    fn load(
        &self,
        name: &str,
        req: &ExportRequest<'_>,
        prior: Option<&LoadedTable>,
    ) -> Result<LoadedTable, StoreError> {
        let load_error = |source| StoreError::Load {
            name: name.to_string(),
            source: Box::new(source),
        };
        // The CPU engine into record batches: the same types as device
        // columns (the request asks for Arrow's).
        let mut host_req = req.with_output(Output::Host);
        host_req.engine = Engine::Cpu;
        let mut loaded = export_to_host(&host_req, &NoProgress).map_err(load_error)?;
        // A refresh: the rows of unchanged pages are copied out of the
        // previous revision, as the GPU backend does on the device.
        if loaded.carries_rows() {
            let old = LoadedTable::memory_of::<HostTable>(prior)?;
            loaded
                .append_carried(
                    |c| gather_rows_host(&old.batches, &c.runs),
                    |b| BatchSize {
                        rows: b.num_rows(),
                        bytes: b.get_array_memory_size() as u64,
                        device: 0,
                    },
                )
                .map_err(|e| StoreError::Internal(format!("carrying rows over: {e}")))?;
        }
        let mut allocations = Vec::new();
        let mut chunks = Vec::new();
        let mut slabs = Vec::new();
        for batch in &loaded.batches {
            let mut bytes = Vec::new();
            let index = allocations.len();
            let columns = batch
                .columns()
                .iter()
                .map(|c| column_layout(&unsliced(c.to_data())?, index, &mut bytes))
                .collect::<Result<_, _>>()?;
            // As the GPU backend's arena: the limit is checked while the
            // table is built, not after.
            let held: u64 = allocations.iter().map(|a: &AllocationLayout| a.size).sum();
            let needed = held + bytes.len() as u64;
            if let Some(limit) = req.device_limit.filter(|&l| needed > l) {
                return Err(StoreError::MemoryLimit {
                    name: name.to_string(),
                    needed,
                    in_use: 0,
                    limit,
                });
            }
            // Chunks are spread over the devices asked for, as the GPU
            // backend's decoders spread them.
            let device = req.devices[index % req.devices.len().max(1)];
            let (slab, layout) = self.register(bytes, device);
            allocations.push(layout);
            slabs.push(slab);
            chunks.push(ChunkLayout {
                rows: batch.num_rows(),
                columns,
            });
        }
        Ok(LoadedTable {
            schema: loaded.schema,
            device: req.devices.first().copied().unwrap_or(0),
            rows: loaded.batches.iter().map(|b| b.num_rows() as u64).sum(),
            allocations,
            chunks,
            report: loaded.report,
            pages: loaded.pages,
            memory: Box::new(HostTable {
                _slabs: slabs,
                batches: loaded.batches,
            }),
        })
    }
}

/// A table of the host backend: the slabs its manifest describes, and the
/// batches (a refresh copies rows out of them).
struct HostTable {
    _slabs: Vec<Arc<Vec<u8>>>,
    batches: Vec<RecordBatch>,
}

/// `data` with offset 0 at every level (copied when it is a slice, as a
/// batch carried over from one run of rows can be).
fn unsliced(data: ArrayData) -> Result<ArrayData, StoreError> {
    fn sliced(d: &ArrayData) -> bool {
        d.offset() != 0
            || d.nulls().is_some_and(|n| n.offset() != 0)
            || d.child_data().iter().any(sliced)
    }
    if !sliced(&data) {
        return Ok(data);
    }
    let mut copy = MutableArrayData::new(vec![&data], false, data.len());
    copy.try_extend(0, 0, data.len())
        .map_err(|e| StoreError::Internal(format!("copying a sliced array: {e}")))?;
    Ok(copy.freeze())
}

/// Appends `data`'s buffers to `slab` (allocation `index`), each at an
/// aligned offset.
fn column_layout(
    data: &ArrayData,
    index: usize,
    slab: &mut Vec<u8>,
) -> Result<ColumnLayout, StoreError> {
    if data.offset() != 0 || data.nulls().is_some_and(|n| n.offset() != 0) {
        return Err(StoreError::Internal(
            "a read-back array is sliced; the host backend stores whole arrays".into(),
        ));
    }
    let mut push = |bytes: &[u8]| {
        let offset = slab.len().div_ceil(ALIGN) * ALIGN;
        slab.resize(offset, 0);
        slab.extend_from_slice(bytes);
        BufferLayout {
            allocation: index,
            offset: offset as u64,
            length: bytes.len() as u64,
        }
    };
    // As device columns: no bitmap when there are no NULLs.
    let validity = match data.nulls() {
        Some(n) if n.null_count() > 0 => Some(push(n.buffer().as_slice())),
        _ => None,
    };
    let buffers = data.buffers().iter().map(|b| push(b.as_slice())).collect();
    let children = data
        .child_data()
        .iter()
        .map(|c| column_layout(c, index, slab))
        .collect::<Result<_, _>>()?;
    Ok(ColumnLayout {
        data_type: data.data_type().clone(),
        len: data.len(),
        null_count: data.null_count(),
        validity,
        buffers,
        children,
    })
}

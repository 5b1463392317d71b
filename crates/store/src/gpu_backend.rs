//! Tables in device memory: loaded with `export_to_device` into plain
//! `cuMemAlloc` allocations whose CUDA IPC handles other processes open;
//! on a refresh the rows of unchanged pages are gathered from the previous
//! revision on the device.

use std::collections::HashMap;
use std::sync::Mutex;

use gpupg_export::{
    export_to_device, BatchSize, CarriedBatch, ExportError, ExportRequest, NoProgress,
};
use gpupg_gpu::ipc::{allocation_of, export_allocation};
use gpupg_gpu::{
    DeviceBatch, DeviceColumn, DeviceHold, DeviceSlice, DeviceTable, Gatherer, GpuError, RowRun,
};

use crate::backend::{
    AllocationLayout, Backend, BufferLayout, ChunkLayout, ColumnLayout, LoadedTable,
};
use crate::error::StoreError;

/// Loads tables into GPU memory.
#[derive(Debug, Default)]
pub struct GpuBackend {
    /// The context of every device loaded into, held for the server's
    /// life: otherwise the driver would destroy it after each load (its
    /// last user gone) and the next load would pay for making it again.
    held: Mutex<HashMap<usize, DeviceHold>>,
}

impl GpuBackend {
    /// A backend that holds every GPU's context from now on, so that no
    /// load pays for making one (a tenth of a second or more each): what
    /// the server uses. GPUs that cannot be held now are tried again at
    /// their first load.
    pub fn holding_all() -> GpuBackend {
        let backend = GpuBackend::default();
        let count = gpupg_gpu::device_count().unwrap_or(0);
        let mut held = backend.held.lock().unwrap_or_else(|p| p.into_inner());
        for device in 0..count {
            if let Ok(hold) = DeviceHold::new(device) {
                held.insert(device, hold);
            }
        }
        drop(held);
        backend
    }
}

impl Backend for GpuBackend {
    fn kind(&self) -> &'static str {
        "gpu"
    }

    fn device_count(&self) -> Result<usize, String> {
        gpupg_gpu::device_count().map_err(|e| e.to_string())
    }

    fn check_device(&self, device: usize) -> Result<(), StoreError> {
        match gpupg_gpu::device_count() {
            Ok(n) if device < n => {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                if let std::collections::hash_map::Entry::Vacant(slot) = held.entry(device) {
                    // A device that cannot be held fails the load itself,
                    // with the export's error.
                    if let Ok(hold) = DeviceHold::new(device) {
                        slot.insert(hold);
                    }
                }
                Ok(())
            }
            Ok(n) => Err(StoreError::BadDevice {
                device,
                detail: format!("{n} CUDA device(s) present"),
            }),
            Err(e) => Err(StoreError::BadDevice {
                device,
                detail: e.to_string(),
            }),
        }
    }

    fn load(
        &self,
        name: &str,
        req: &ExportRequest<'_>,
        prior: Option<&LoadedTable>,
    ) -> Result<LoadedTable, StoreError> {
        let mut loaded = export_to_device(req, &NoProgress).map_err(|e| load_error(name, e))?;
        // A refresh: the rows of unchanged pages are copied out of the
        // previous revision on the device.
        if loaded.carries_rows() {
            let old = LoadedTable::memory_of::<DeviceTable>(prior)?;
            let mut gatherers = Gatherers::default();
            loaded
                .append_carried(
                    |c| gatherers.gather(old, c),
                    |b| BatchSize {
                        rows: b.num_rows,
                        bytes: b.device_bytes() as u64,
                        device: b.device(),
                    },
                )
                .map_err(|e| load_error(name, ExportError::Gpu(e)))?;
        }
        let table = DeviceTable {
            schema: loaded.schema,
            batches: loaded.batches,
        };
        let (allocations, chunks) = describe(&table)?;
        Ok(LoadedTable {
            schema: table.schema.clone(),
            device: req.devices.first().copied().unwrap_or(0),
            rows: table.num_rows() as u64,
            allocations,
            chunks,
            report: loaded.report,
            pages: loaded.pages,
            memory: Box::new(table),
        })
    }
}

/// One [`Gatherer`] per device rows are carried on, made when first needed.
#[derive(Default)]
struct Gatherers {
    by_device: HashMap<usize, Gatherer>,
}

impl Gatherers {
    /// Copies the rows of `c` out of `old`'s batches on `c.device` (a
    /// gather reads batches of its own device only).
    fn gather(&mut self, old: &DeviceTable, c: &CarriedBatch) -> Result<DeviceBatch, GpuError> {
        let mut index = HashMap::new();
        let mut sources = Vec::new();
        for (i, b) in old.batches.iter().enumerate() {
            if b.device() == c.device {
                index.insert(i, sources.len());
                sources.push(b);
            }
        }
        let runs = c
            .runs
            .iter()
            .map(|r| match index.get(&r.batch) {
                Some(&batch) => Ok(RowRun { batch, ..*r }),
                None => Err(GpuError::Unsupported {
                    device: c.device,
                    what: format!("carrying rows: batch {} is on another device", r.batch),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let gatherer = match self.by_device.entry(c.device) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Gatherer::new(c.device)?),
        };
        gatherer.gather(&sources, &runs)
    }
}

/// A failed load as the store's error: out of device memory and the memory
/// limit have their own kinds.
fn load_error(name: &str, e: ExportError) -> StoreError {
    match e {
        ExportError::Gpu(GpuError::OutOfMemory { device, .. }) => StoreError::OutOfMemory {
            name: name.to_string(),
            device,
        },
        // The registry fills in what is in use and the limit.
        ExportError::Gpu(GpuError::MemoryLimit { bytes, limit, .. }) => StoreError::MemoryLimit {
            name: name.to_string(),
            needed: bytes,
            in_use: 0,
            limit,
        },
        e => StoreError::Load {
            name: name.to_string(),
            source: Box::new(e),
        },
    }
}

/// The allocations (one IPC handle per slab) and every buffer's place.
fn describe(table: &DeviceTable) -> Result<(Vec<AllocationLayout>, Vec<ChunkLayout>), GpuError> {
    let mut slabs = Slabs::default();
    let chunks = table
        .batches
        .iter()
        .map(|b| {
            slabs.device = b.device();
            Ok(ChunkLayout {
                rows: b.num_rows,
                columns: b
                    .columns
                    .iter()
                    .map(|c| column_layout(c, &mut slabs))
                    .collect::<Result<_, GpuError>>()?,
            })
        })
        .collect::<Result<_, GpuError>>()?;
    Ok((slabs.allocations, chunks))
}

/// Allocations seen so far, by base address.
#[derive(Default)]
struct Slabs {
    allocations: Vec<AllocationLayout>,
    by_base: HashMap<u64, usize>,
    /// The device of the batch being described.
    device: usize,
}

impl Slabs {
    fn place(&mut self, slice: &DeviceSlice) -> Result<BufferLayout, GpuError> {
        if slice.len == 0 {
            // An empty view may sit just past the end of its slab, where the
            // driver knows no allocation; it has no bytes to map.
            return Ok(BufferLayout {
                allocation: 0,
                offset: 0,
                length: 0,
            });
        }
        let allocation = allocation_of(&slice.buffer)?;
        let index = match self.by_base.get(&allocation.base) {
            Some(&i) => i,
            None => {
                let (handle, _) = export_allocation(&slice.buffer)?;
                self.allocations.push(AllocationLayout {
                    handle: handle.to_hex(),
                    size: allocation.size as u64,
                    device: self.device,
                });
                self.by_base
                    .insert(allocation.base, self.allocations.len() - 1);
                self.allocations.len() - 1
            }
        };
        Ok(BufferLayout {
            allocation: index,
            offset: allocation.offset_of(&slice.buffer),
            length: slice.len as u64,
        })
    }
}

fn column_layout(c: &DeviceColumn, slabs: &mut Slabs) -> Result<ColumnLayout, GpuError> {
    Ok(ColumnLayout {
        data_type: c.data_type.clone(),
        len: c.len,
        null_count: c.null_count,
        validity: c.validity.as_ref().map(|v| slabs.place(v)).transpose()?,
        buffers: c
            .buffers
            .iter()
            .map(|b| slabs.place(b))
            .collect::<Result<_, _>>()?,
        children: c
            .children
            .iter()
            .map(|ch| column_layout(ch, slabs))
            .collect::<Result<_, _>>()?,
    })
}

//! Tables in device memory: loaded with `export_to_device` into plain
//! `cuMemAlloc` allocations whose CUDA IPC handles other processes open;
//! on a refresh the rows of unchanged pages are gathered from the previous
//! revision on the device.

use std::collections::HashMap;
use std::sync::Mutex;

use gpupg_export::{export_to_device, ExportError, ExportRequest, NoProgress};
use gpupg_gpu::ipc::{allocation_of, export_allocation};
use gpupg_gpu::{
    DeviceBatch, DeviceColumn, DeviceHold, DeviceSlice, DeviceTable, Gatherer, GpuError,
};

use crate::backend::{
    AllocationLayout, Backend, BufferLayout, ChunkLayout, ColumnLayout, Resident,
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

impl Backend for GpuBackend {
    fn kind(&self) -> &'static str {
        "gpu"
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
        prior: Option<&Resident>,
    ) -> Result<Resident, StoreError> {
        let mut loaded = export_to_device(req, &NoProgress).map_err(|e| load_error(name, e))?;
        // A refresh: the rows of unchanged pages are copied out of the
        // previous revision on the device.
        if loaded.carries_rows() {
            let old = Resident::memory_of::<DeviceTable>(prior)?;
            let sources: Vec<&DeviceBatch> = old.batches.iter().collect();
            let mut gatherer =
                Gatherer::new(req.device).map_err(|e| load_error(name, ExportError::Gpu(e)))?;
            loaded
                .append_carried(
                    |runs| gatherer.gather(&sources, runs),
                    |b| (b.num_rows, b.device_bytes() as u64),
                )
                .map_err(|e| load_error(name, ExportError::Gpu(e)))?;
        }
        let table = DeviceTable {
            schema: loaded.schema,
            batches: loaded.batches,
        };
        let (allocations, chunks) = describe(&table)?;
        Ok(Resident {
            schema: table.schema.clone(),
            device: req.device,
            rows: table.num_rows() as u64,
            allocations,
            chunks,
            report: loaded.report,
            pages: loaded.pages,
            memory: Box::new(table),
        })
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

//! The sink of a load kept in memory: host record batches or device
//! columns, in the order they were decoded, with their pages.

use std::sync::{Arc, Mutex};

use gpupg_gpu::DeviceArena;

use super::{BatchSink, SinkEnd};
use crate::carry::{BatchOrigin, PageMap};
use crate::decoder::OutBatch;
use crate::report::Resident;
use crate::ExportError;

/// Keeps every batch with its pages.
pub(crate) struct MemorySink<B> {
    kept: Mutex<Vec<(B, BatchOrigin)>>,
    /// Device batches are carved from each GPU's arena (few large
    /// allocations, each within `req.device_limit`); empty on the host.
    arenas: Vec<Arc<DeviceArena>>,
    devices: Vec<usize>,
}

impl<B: OutBatch> MemorySink<B> {
    /// A sink for batches decoded on `devices` (device batches, each GPU's
    /// arena holding at most `limit` bytes) or on the host.
    pub(crate) fn new(devices: &[usize], limit: Option<u64>) -> MemorySink<B> {
        MemorySink {
            kept: Mutex::new(Vec::new()),
            arenas: if B::DEVICE {
                devices
                    .iter()
                    .map(|&d| DeviceArena::new(d, limit))
                    .collect()
            } else {
                Vec::new()
            },
            devices: devices.to_vec(),
        }
    }
}

impl<B: OutBatch> BatchSink<B> for MemorySink<B> {
    type Kept = Vec<(B, BatchOrigin)>;

    fn arenas(&self) -> &[Arc<DeviceArena>] {
        &self.arenas
    }

    fn write(&self, batch: B, _: u32, origin: BatchOrigin) -> Result<(), ExportError> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.push((batch, origin));
        Ok(())
    }

    fn finish(self, pages: &mut PageMap) -> Result<SinkEnd<Self::Kept>, ExportError> {
        let kept = self.kept.into_inner().unwrap_or_else(|p| p.into_inner());
        pages.sizes.extend(kept.iter().map(|(b, _)| b.size()));
        let resident = B::DEVICE.then(|| Resident {
            devices: self.devices.clone(),
            batches: kept.len(),
            bytes: kept.iter().map(|(b, _)| b.size().bytes).sum(),
            allocations: self.arenas.iter().map(|a| a.blocks()).sum(),
            allocated_bytes: self.arenas.iter().map(|a| a.allocated_bytes()).sum(),
        });
        Ok(SinkEnd {
            resident,
            kept,
            ..SinkEnd::nothing()
        })
    }
}

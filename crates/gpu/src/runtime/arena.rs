//! Device memory for outputs that outlive the export: a table kept on the
//! GPU (the table store, `export_to_device`).
//!
//! Outputs are carved from a few large plain `cuMemAlloc` blocks instead of
//! one allocation per chunk, for three reasons:
//! - another process maps a table through one CUDA IPC handle per
//!   allocation, and each `cuIpcOpenMemHandle` costs about 0.15 ms: lineorder
//!   60M in per-chunk slabs was ~850 allocations (107-205 ms to map), in
//!   blocks of up to 512 MiB it is about 20;
//! - `cuMemAlloc` and `cuMemFree` cost tens of microseconds each and a free
//!   synchronizes the device;
//! - a byte limit can be enforced while the table is being built, so a load
//!   that would not fit fails at once instead of after filling the device.
//!
//! Blocks grow from [`FIRST_BLOCK_BYTES`] by doubling up to the arena's
//! block size, so a small table does not hold a large block. A request that
//! does not fit the current block's rest starts a new block (the rest is
//! left unused); a request of at least half a block gets an allocation of
//! its own. Memory goes back to the driver when the last buffer carved from
//! a block is dropped.
//!
//! ```no_run
//! use gpupg_gpu::DeviceArena;
//! // At most 8 GiB of outputs on GPU 0, in blocks of up to 512 MiB.
//! let arena = DeviceArena::new(0, Some(8 << 30));
//! assert_eq!(arena.allocated_bytes(), 0);
//! ```

use std::sync::{Arc, Mutex};

use crate::runtime::cuda::{AllocKind, Context, DeviceBuffer, Stream};
use crate::runtime::error::GpuError;

/// Largest block, by default.
pub const DEFAULT_BLOCK_BYTES: usize = 512 << 20;

/// The first block's size; each new block doubles the last one.
pub const FIRST_BLOCK_BYTES: usize = 4 << 20;

/// Alignment of every buffer carved from a block (as the decoder's slabs).
const ALIGN: usize = 256;

/// A bump allocator over large plain device allocations, shared by the
/// decoders of one export (they carve from it concurrently).
#[derive(Debug)]
pub struct DeviceArena {
    device: usize,
    max_block: usize,
    limit: Option<u64>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The block being carved and the first free byte in it.
    current: Option<(Arc<DeviceBuffer>, usize)>,
    /// Bytes of every block allocated so far (the limit counts these).
    allocated: u64,
    blocks: usize,
    last_block: usize,
}

impl DeviceArena {
    /// An arena on GPU `device` whose blocks together may not exceed
    /// `limit` bytes; blocks of up to [`DEFAULT_BLOCK_BYTES`].
    pub fn new(device: usize, limit: Option<u64>) -> Arc<DeviceArena> {
        Self::with_block_bytes(device, limit, DEFAULT_BLOCK_BYTES)
    }

    /// As [`DeviceArena::new`], with blocks of up to `max_block` bytes.
    pub fn with_block_bytes(
        device: usize,
        limit: Option<u64>,
        max_block: usize,
    ) -> Arc<DeviceArena> {
        Arc::new(DeviceArena {
            device,
            max_block: max_block.max(ALIGN),
            limit,
            state: Mutex::new(State::default()),
        })
    }

    /// The GPU the arena allocates on.
    pub fn device(&self) -> usize {
        self.device
    }

    /// Bytes of all blocks allocated so far (those still held and those
    /// already freed).
    pub fn allocated_bytes(&self) -> u64 {
        self.lock().allocated
    }

    /// Number of blocks allocated so far.
    pub fn blocks(&self) -> usize {
        self.lock().blocks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every
        // update is a plain assignment after the allocation succeeded).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `bytes` of plain device memory (exportable through CUDA IPC), carved
    /// from the current block or a new one. Fails with
    /// [`GpuError::MemoryLimit`] when a new block would pass the limit.
    pub(crate) fn alloc(
        &self,
        ctx: &Arc<Context>,
        stream: &Stream,
        bytes: usize,
    ) -> Result<DeviceBuffer, GpuError> {
        if ctx.ordinal != self.device {
            return Err(GpuError::Layout {
                column: "(arena)".into(),
                what: format!(
                    "an arena of device {} was asked for memory of device {}",
                    self.device, ctx.ordinal
                ),
            });
        }
        let need = bytes.max(1).div_ceil(ALIGN) * ALIGN;
        let mut st = self.lock();
        if let Some((block, at)) = st.current.as_mut() {
            if block.len() - *at >= need {
                let view = DeviceBuffer::view(block, *at, bytes);
                *at += need;
                return Ok(view);
            }
        }
        let size = block_size(st.last_block, need, self.max_block);
        if let Some(limit) = self.limit {
            if st.allocated.saturating_add(size as u64) > limit {
                // The last block may be smaller than planned if the request
                // still fits under the limit.
                let left = limit.saturating_sub(st.allocated);
                if (need as u64) > left {
                    return Err(GpuError::MemoryLimit {
                        device: self.device,
                        limit,
                        bytes: st.allocated + need as u64,
                    });
                }
                return self.new_block(&mut st, ctx, stream, left as usize, bytes);
            }
        }
        self.new_block(&mut st, ctx, stream, size, bytes)
    }

    fn new_block(
        &self,
        st: &mut State,
        ctx: &Arc<Context>,
        stream: &Stream,
        size: usize,
        bytes: usize,
    ) -> Result<DeviceBuffer, GpuError> {
        let block = Arc::new(DeviceBuffer::alloc(ctx, size, AllocKind::Plain, stream)?);
        st.allocated += size as u64;
        st.blocks += 1;
        st.last_block = size;
        let view = DeviceBuffer::view(&block, 0, bytes);
        let used = bytes.max(1).div_ceil(ALIGN) * ALIGN;
        // A block taken whole by one request is not kept for later ones.
        st.current = (size - used >= ALIGN).then_some((block, used));
        Ok(view)
    }
}

/// The size of the next block: double the last (the first is
/// [`FIRST_BLOCK_BYTES`]) up to `max_block`, or the request alone, rounded
/// to 2 MiB (the driver's granularity), when it is at least half a block.
fn block_size(last: usize, need: usize, max_block: usize) -> usize {
    const GRAIN: usize = 2 << 20;
    let planned = if last == 0 {
        FIRST_BLOCK_BYTES
    } else {
        last.saturating_mul(2)
    }
    .min(max_block);
    if need >= planned / 2 {
        need.div_ceil(GRAIN) * GRAIN
    } else {
        planned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_double_up_to_the_maximum() {
        let mut last = 0;
        let mut sizes = Vec::new();
        for _ in 0..10 {
            last = block_size(last, 1 << 20, 512 << 20);
            sizes.push(last >> 20);
        }
        assert_eq!(sizes, [4, 8, 16, 32, 64, 128, 256, 512, 512, 512]);
    }

    #[test]
    fn large_requests_get_their_own_block() {
        // Half the planned block or more: exactly the request, rounded to
        // the driver's 2 MiB granularity.
        assert_eq!(block_size(0, 2 << 20, 512 << 20), 2 << 20);
        assert_eq!(block_size(0, (2 << 20) + 1, 512 << 20), 4 << 20);
        assert_eq!(block_size(8 << 20, 9 << 20, 512 << 20), 10 << 20);
        assert_eq!(block_size(512 << 20, 300 << 20, 512 << 20), 300 << 20);
        assert_eq!(block_size(512 << 20, 1 << 30, 512 << 20), 1 << 30);
        // Below half: the planned block.
        assert_eq!(block_size(64 << 20, 60 << 20, 512 << 20), 128 << 20);
    }

    #[test]
    fn the_block_size_can_be_small() {
        assert_eq!(block_size(0, 1000, 4096), 4096);
        assert_eq!(block_size(4096, 1000, 4096), 4096);
    }
}

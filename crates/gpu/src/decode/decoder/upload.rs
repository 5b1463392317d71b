//! Step 1 of a piece: its row bytes and offsets staged and copied into an
//! input slot on the copy stream; and the device allocations and small
//! read-backs the kernel steps use.

use std::ffi::c_void;
use std::ops::Range;
use std::time::Instant;

use cudarc::driver::sys;
use gpupg_format::CopyChunk;

use super::{GpuDecoder, Uploaded};
use crate::decode::column_plan::row_span;
use crate::runtime::cuda::{check, AllocKind, DeviceBuffer};
use crate::runtime::error::GpuError;
use crate::runtime::pinned::{is_pinned, PinnedBuffer};

impl GpuDecoder {
    /// Stages rows `rows` of `chunk` and starts their copy into the next
    /// input slot. `None` when the rows do not lie inside the chunk's
    /// buffer (malformed: the CPU decoder reports it).
    pub(super) fn upload(
        &mut self,
        chunk: &CopyChunk,
        rows: Range<usize>,
        always_stage: bool,
    ) -> Result<Option<Uploaded>, GpuError> {
        let Some((lo, hi)) = row_span(chunk, rows.clone()) else {
            return Ok(None);
        };
        let n = rows.len();
        let data_bytes = (hi - lo) as usize;
        let data_pad = data_bytes.div_ceil(16) * 16;
        let total = data_pad + 8 * n;
        let slot_i = self.next_slot;
        self.next_slot ^= 1;
        // A prefetched piece still waiting in this slot is about to be
        // overwritten: forget it (its decode will upload again).
        self.prefetched.retain(|p| p.slot != slot_i);
        let ordinal = self.ctx.ordinal;
        let t = Instant::now();
        let direct = !always_stage && is_pinned(chunk.data.as_ptr());
        let slot = &mut self.slots[slot_i];
        if slot.used {
            // The staging buffer may still be the source of this slot's
            // previous copy.
            slot.h2d_done.sync()?;
        }
        let staged = if direct { 8 * n } else { total };
        if slot.staging.as_ref().is_none_or(|b| b.capacity() < staged) {
            slot.staging = None;
            slot.staging = Some(PinnedBuffer::new(staged + staged / 4)?);
        }
        let Some(st) = slot.staging.as_mut() else {
            return Err(GpuError::Pinned("no staging buffer".into()));
        };
        let buf = st.full_mut();
        let off_at = if direct { 0 } else { data_pad };
        if !direct {
            buf[..data_bytes].copy_from_slice(&chunk.data[lo as usize..hi as usize]);
        }
        // Row offsets as the kernels read them: native-endian u32 arrays.
        for (src, at) in [
            (&chunk.row_starts[rows.clone()], off_at),
            (&chunk.row_ends[rows.clone()], off_at + 4 * n),
        ] {
            for (d, v) in buf[at..at + 4 * n].chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&v.to_ne_bytes());
            }
        }
        if !direct {
            self.stats.stage_s += t.elapsed().as_secs_f64();
        }
        // Device input: grows to the largest piece; freed only with the
        // decoder. Before reusing it the copy stream waits until the kernels
        // of its previous piece are done with it.
        if slot.dev.as_ref().is_none_or(|d| d.len() < total) {
            if slot.used {
                slot.freed.sync()?;
            }
            slot.dev = None;
            slot.dev = Some(DeviceBuffer::alloc(
                &self.ctx,
                total + total / 4,
                AllocKind::Plain,
                &self.copy,
            )?);
        } else if slot.used {
            self.copy.wait(&slot.freed)?;
        }
        let (Some(dev), Some(st)) = (slot.dev.as_ref(), slot.staging.as_ref()) else {
            return Err(GpuError::Pinned("no staging buffer".into()));
        };
        slot.h2d_start.record(&self.copy)?;
        // SAFETY: both ranges are inside their buffers (sizes computed
        // above); the pinned sources stay alive until h2d_done, which is
        // waited on before they are reused or freed (the decoder syncs its
        // streams on drop; a direct source is the caller's chunk, borrowed
        // for the whole decode call that also waits for the copy).
        unsafe {
            if direct {
                check(
                    sys::cuMemcpyHtoDAsync_v2(
                        dev.ptr(),
                        chunk.data.as_ptr().add(lo as usize) as *const c_void,
                        data_bytes,
                        self.copy.raw,
                    ),
                    "cuMemcpyHtoDAsync",
                    ordinal,
                )?;
                check(
                    sys::cuMemcpyHtoDAsync_v2(
                        dev.ptr() + data_pad as u64,
                        st.full_mut_ptr() as *const c_void,
                        8 * n,
                        self.copy.raw,
                    ),
                    "cuMemcpyHtoDAsync",
                    ordinal,
                )?;
            } else {
                check(
                    sys::cuMemcpyHtoDAsync_v2(
                        dev.ptr(),
                        st.full_mut_ptr() as *const c_void,
                        total,
                        self.copy.raw,
                    ),
                    "cuMemcpyHtoDAsync",
                    ordinal,
                )?;
            }
        }
        slot.h2d_done.record(&self.copy)?;
        slot.used = true;
        self.stats.h2d_bytes += total as u64;
        Ok(Some(Uploaded {
            slot: slot_i,
            rows,
            lo,
            hi,
            key: Self::key(chunk),
        }))
    }

    pub(super) fn alloc(
        &mut self,
        bytes: usize,
        kind: AllocKind,
    ) -> Result<DeviceBuffer, GpuError> {
        let t = Instant::now();
        let b = match (&self.arena, kind) {
            (Some(arena), AllocKind::Plain) => arena.alloc(&self.ctx, &self.compute, bytes)?,
            _ => DeviceBuffer::alloc(&self.ctx, bytes, kind, &self.compute)?,
        };
        if kind == AllocKind::Plain {
            // cuMemAlloc is not stream-ordered: worth watching.
            self.stats.plain_alloc_s += t.elapsed().as_secs_f64();
        }
        if let Some(v) = self.poison {
            self.kernels.fill(&self.compute, b.ptr(), bytes as u64, v)?;
        }
        Ok(b)
    }

    pub(super) fn zeroed(&self, bytes: usize) -> Result<DeviceBuffer, GpuError> {
        let b = DeviceBuffer::alloc(&self.ctx, bytes, AllocKind::Pool, &self.compute)?;
        check(
            // SAFETY: b has `bytes` bytes.
            unsafe { sys::cuMemsetD8Async(b.ptr(), 0, bytes.max(1), self.compute.raw) },
            "cuMemsetD8Async",
            self.ctx.ordinal,
        )?;
        Ok(b)
    }

    /// Reads `count` u64 values at device addresses `addrs` (totals of
    /// scans), synchronizing the compute stream.
    pub(super) fn read_u64s(&mut self, addrs: &[u64]) -> Result<Vec<u64>, GpuError> {
        let need = addrs.len() * 8;
        if self.ctrl_host.capacity() < need {
            self.ctrl_host = PinnedBuffer::new(need)?;
        }
        let base = self.ctrl_host.full_mut_ptr();
        for (k, &a) in addrs.iter().enumerate() {
            check(
                // SAFETY: 8 bytes at slot k of the pinned control buffer; the
                // device address is the last element of a scan output.
                unsafe {
                    sys::cuMemcpyDtoHAsync_v2(
                        base.add(8 * k) as *mut c_void,
                        a,
                        8,
                        self.compute.raw,
                    )
                },
                "cuMemcpyDtoHAsync",
                self.ctx.ordinal,
            )?;
        }
        self.compute.sync()?;
        let host = self.ctrl_host.full_mut();
        Ok((0..addrs.len())
            .map(|k| u64::from_ne_bytes(host[8 * k..8 * k + 8].try_into().unwrap_or([0; 8])))
            .collect())
    }
}

//! The device side of a gather: [`Exec`] on CUDA, and the output columns
//! as views of one slab.

use super::*;

/// The output column of node `i`, its buffers views of `slab`.
pub(super) fn device_column(
    nodes: &[OutNode],
    i: usize,
    slab: &Arc<DeviceBuffer>,
    counters: &[u64],
) -> DeviceColumn {
    let n = &nodes[i];
    let view = |(at, len): (usize, usize)| DeviceSlice {
        buffer: DeviceBuffer::view(slab, at, len),
        len,
    };
    let null_count = n.validity.map_or(0, |(_, _, k)| {
        counters.get(k).copied().unwrap_or(0) as usize
    });
    DeviceColumn {
        data_type: n.data_type.clone().unwrap_or(DataType::Null),
        len: n.len,
        null_count,
        // No bitmap when nothing is NULL, as Arrow and the decoder do (its
        // bytes stay unused in the slab).
        validity: n
            .validity
            .filter(|_| null_count > 0)
            .map(|(at, len, _)| view((at, len))),
        buffers: n.buffers.iter().map(|&b| view(b)).collect(),
        children: n
            .children
            .iter()
            .map(|&c| device_column(nodes, c, slab, counters))
            .collect(),
    }
}

/// The output allocation: every buffer of a gathered batch is carved from
/// it. Plain `cuMemAlloc` (exportable through CUDA IPC, outlives any
/// stream); the one place to switch to an arena.
pub(super) fn output_slab(
    ctx: &Arc<Context>,
    stream: &Stream,
    bytes: usize,
) -> Result<DeviceBuffer, GpuError> {
    DeviceBuffer::alloc(ctx, bytes, AllocKind::Plain, stream)
}

/// The device side of [`Exec`]: tables through a pinned staging buffer,
/// one synchronization per call.
pub(super) struct CudaExec<'g> {
    pub(super) ctx: &'g Arc<Context>,
    pub(super) stream: &'g Stream,
    pub(super) kernels: &'g GatherKernels,
    pub(super) staging: &'g mut Option<PinnedBuffer>,
    pub(super) start: &'g Event,
    pub(super) end: &'g Event,
    pub(super) alloc_s: f64,
    pub(super) kernel_s: f64,
    pub(super) fetch_s: f64,
}

impl CudaExec<'_> {
    /// Staging for `up` bytes to upload and `down` bytes to read back
    /// (downloads at `down_at`).
    fn staging(&mut self, up: usize, down: usize) -> Result<(&mut PinnedBuffer, usize), GpuError> {
        let down_at = up.div_ceil(64) * 64;
        let need = down_at + down;
        if self.staging.as_ref().is_none_or(|b| b.capacity() < need) {
            // Half again: slowly growing tables do not reallocate pinned
            // memory every time.
            *self.staging = None;
            *self.staging = Some(PinnedBuffer::new((need + need / 2).max(1 << 20))?);
        }
        match self.staging.as_mut() {
            Some(b) => Ok((b, down_at)),
            None => Err(GpuError::Pinned("no staging buffer".into())),
        }
    }

    /// Uploads the table into a new stream-ordered buffer (freed in stream
    /// order when dropped), reading back `down` bytes later at the
    /// returned staging offset.
    fn upload(&mut self, table: &Table, down: usize) -> Result<(DeviceBuffer, usize), GpuError> {
        let (ctx, stream) = (self.ctx, self.stream);
        let bytes = table.as_bytes();
        let (buf, down_at) = self.staging(bytes.len(), down)?;
        buf.full_mut()[..bytes.len()].copy_from_slice(bytes);
        let src = buf.full_mut_ptr();
        let dev = DeviceBuffer::alloc(ctx, bytes.len(), AllocKind::Pool, stream)?;
        if !bytes.is_empty() {
            check(
                // SAFETY: the device buffer and the staging buffer both hold
                // bytes.len() bytes; the staging buffer is written again only
                // after this call's synchronization (every Exec call ends with
                // one).
                unsafe {
                    sys::cuMemcpyHtoDAsync_v2(
                        dev.ptr(),
                        src as *const c_void,
                        bytes.len(),
                        stream.raw,
                    )
                },
                "cuMemcpyHtoDAsync",
                ctx.ordinal,
            )?;
        }
        Ok((dev, down_at))
    }

    /// Reads `count` u64s at byte `offset` of `dev` back through the staging
    /// buffer at `down_at` into `out` (cleared), synchronizing the stream
    /// (also when `count` is 0: the caller's work is then complete).
    fn download(
        &mut self,
        dev: &DeviceBuffer,
        offset: u64,
        count: usize,
        down_at: usize,
        out: &mut Vec<u64>,
    ) -> Result<(), GpuError> {
        let (ctx, stream) = (self.ctx, self.stream);
        let bytes = count * 8;
        let (buf, _) = self.staging(down_at, bytes)?;
        let dst = buf.full_mut_ptr();
        if bytes > 0 {
            check(
                // SAFETY: the staging buffer has down_at + bytes bytes (sized
                // above), the device buffer offset + bytes (the caller's
                // layout); the stream is synchronized before the bytes are read.
                unsafe {
                    sys::cuMemcpyDtoHAsync_v2(
                        dst.add(down_at) as *mut c_void,
                        dev.ptr() + offset,
                        bytes,
                        stream.raw,
                    )
                },
                "cuMemcpyDtoHAsync",
                ctx.ordinal,
            )?;
        }
        stream.sync()?;
        // Sized by the upload before: the same buffer, nothing reallocated.
        let (buf, _) = self.staging(down_at, bytes)?;
        out.clear();
        out.extend(
            buf.full_mut()[down_at..down_at + bytes]
                .chunks_exact(8)
                .map(|c| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    u64::from_ne_bytes(w)
                }),
        );
        Ok(())
    }
}

impl Exec for CudaExec<'_> {
    type Slab = DeviceBuffer;

    fn fetch(&mut self, table: &Table, l: Launch, vals: &mut Vec<u64>) -> Result<(), GpuError> {
        let t = Instant::now();
        let count = 2 * l.nunits as usize;
        let (tab, down_at) = self.upload(table, count * 8)?;
        let out = DeviceBuffer::alloc(self.ctx, count * 8, AllocKind::Pool, self.stream)?;
        self.kernels.launch(
            l.kernel,
            self.stream,
            tab.ptr(),
            out.ptr(),
            l.tasks_at,
            l.ntasks,
            l.nunits,
        )?;
        self.download(&out, 0, count, down_at, vals)?;
        self.fetch_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn run(
        &mut self,
        table: &Table,
        slab_bytes: usize,
        launches: &[Launch],
        counters_at: u64,
        ncounters: usize,
    ) -> Result<(DeviceBuffer, Vec<u64>), GpuError> {
        let t = Instant::now();
        let slab = output_slab(self.ctx, self.stream, slab_bytes)?;
        self.alloc_s = t.elapsed().as_secs_f64();
        let (tab, down_at) = self.upload(table, ncounters * 8)?;
        self.start.record(self.stream)?;
        for l in launches {
            self.kernels.launch(
                l.kernel,
                self.stream,
                tab.ptr(),
                slab.ptr(),
                l.tasks_at,
                l.ntasks,
                l.nunits,
            )?;
        }
        self.end.record(self.stream)?;
        let mut counters = Vec::with_capacity(ncounters);
        self.download(&tab, counters_at, ncounters, down_at, &mut counters)?;
        self.kernel_s = self.end.since(self.start)? / 1e3;
        Ok((slab, counters))
    }
}

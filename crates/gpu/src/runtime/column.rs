//! Device-resident Arrow columns: the same layout as Arrow's `ArrayData`
//! (values, offsets, validity bitmap, children), with every buffer in
//! device memory; and the copy back to host `RecordBatch`es through pinned
//! memory.

use std::ffi::c_void;
use std::sync::Arc;

use arrow_array::{make_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use arrow_schema::{DataType, SchemaRef};
use cudarc::driver::sys;

use crate::runtime::arena::DeviceArena;
use crate::runtime::cuda::{check, AllocKind, Context, DeviceBuffer, Stream};
use crate::runtime::error::GpuError;
use crate::runtime::pinned::PinnedBuffer;

/// One device buffer and the bytes of it that hold data.
#[derive(Debug)]
pub struct DeviceSlice {
    /// The device allocation (or a view of one).
    pub buffer: DeviceBuffer,
    /// Bytes of the buffer that belong to the array (the allocation may be
    /// rounded up, e.g. validity words).
    pub len: usize,
}

/// One column in Arrow layout on the device.
#[derive(Debug)]
pub struct DeviceColumn {
    /// The Arrow type (as in the batch's schema).
    pub data_type: DataType,
    /// Number of values.
    pub len: usize,
    /// Number of NULLs.
    pub null_count: usize,
    /// Arrow validity bitmap (bit i = value i is valid, LSB first); `None`
    /// when there are no NULLs, as Arrow (and the CPU decoder) leave it.
    pub validity: Option<DeviceSlice>,
    /// The array's buffers in `ArrayData` order: values for primitive and
    /// boolean (bit-packed) types; offsets (i32, len + 1) then bytes for
    /// Utf8/Binary; offsets for List; none for Struct.
    pub buffers: Vec<DeviceSlice>,
    /// Child columns: a List's elements, a Struct's fields.
    pub children: Vec<DeviceColumn>,
}

/// A decoded chunk resident on the device.
#[derive(Debug)]
pub struct DeviceBatch {
    /// The Arrow schema.
    pub schema: SchemaRef,
    /// Rows in the batch.
    pub num_rows: usize,
    /// One column per schema field.
    pub columns: Vec<DeviceColumn>,
    /// Names of the columns this batch's values were decoded on the CPU
    /// (and uploaded), with the reason.
    pub cpu_columns: Vec<(String, String)>,
    pub(crate) ctx: Arc<Context>,
}

/// A whole table resident on one device: the batches of an export in the
/// order they were decoded (the order of rows across batches is that of the
/// parallel reads, like the row groups of a Parquet export).
#[derive(Debug)]
pub struct DeviceTable {
    /// The Arrow schema.
    pub schema: SchemaRef,
    /// The batches, in decode order.
    pub batches: Vec<DeviceBatch>,
}

impl DeviceTable {
    /// Rows in all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows).sum()
    }

    /// Device bytes held by all batches.
    pub fn device_bytes(&self) -> usize {
        self.batches.iter().map(|b| b.device_bytes()).sum()
    }

    /// Copies every batch to the host (for checks and small tables).
    pub fn to_host(&self) -> Result<Vec<RecordBatch>, GpuError> {
        self.batches.iter().map(|b| b.to_host()).collect()
    }
}

impl DeviceColumn {
    /// Device bytes held.
    pub fn device_bytes(&self) -> usize {
        self.validity.iter().map(|v| v.len).sum::<usize>()
            + self.buffers.iter().map(|b| b.len).sum::<usize>()
            + self
                .children
                .iter()
                .map(|c| c.device_bytes())
                .sum::<usize>()
    }

    fn each_slice<'a>(&'a self, f: &mut dyn FnMut(&'a DeviceSlice)) {
        if let Some(v) = &self.validity {
            f(v);
        }
        for b in &self.buffers {
            f(b);
        }
        for c in &self.children {
            c.each_slice(f);
        }
    }
}

impl DeviceBatch {
    /// The ordinal of the device holding the batch.
    pub fn device(&self) -> usize {
        self.ctx.ordinal
    }

    /// Device bytes held by all columns.
    pub fn device_bytes(&self) -> usize {
        self.columns.iter().map(|c| c.device_bytes()).sum()
    }

    /// Waits until every write into the batch's buffers has finished: the
    /// decoder's streams are its own, so the whole context is waited for.
    /// Callers that hand the pointers to other CUDA users (Python's DLPack
    /// and Arrow device interfaces) call it once, after the last batch.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.ctx.synchronize()
    }

    /// Copies the batch to the host (through a pinned buffer allocated for
    /// the call) and builds the `RecordBatch`.
    pub fn to_host(&self) -> Result<RecordBatch, GpuError> {
        self.ctx.bind()?;
        let stream = Stream::new(&self.ctx)?;
        let mut staging = None;
        self.to_host_with(&stream, &mut staging)
    }

    /// As [`Self::to_host`], reusing `staging` (grown when too small) and
    /// copying on `stream`.
    pub(crate) fn to_host_with(
        &self,
        stream: &Stream,
        staging: &mut Option<PinnedBuffer>,
    ) -> Result<RecordBatch, GpuError> {
        let arrays = copy_columns_to_host(&self.columns, stream, staging, self.ctx.ordinal)?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(self.num_rows)),
        )
        .map_err(|e| GpuError::Layout {
            column: "(batch)".into(),
            what: e.to_string(),
        })?;
        Ok(batch)
    }
}

/// Copies columns to the host: every buffer with one asynchronous copy into
/// a pinned staging area (one synchronization for all), then into Arrow
/// buffers.
pub(crate) fn copy_columns_to_host(
    columns: &[DeviceColumn],
    stream: &Stream,
    staging: &mut Option<PinnedBuffer>,
    device: usize,
) -> Result<Vec<ArrayRef>, GpuError> {
    // 64-byte aligned placement of every slice in the staging buffer.
    let mut total = 0usize;
    let mut place = |len: usize| {
        let at = total;
        total += len.div_ceil(64) * 64;
        at
    };
    let mut offsets = Vec::new();
    for c in columns {
        c.each_slice(&mut |s| offsets.push(place(s.len)));
    }
    if staging.as_ref().is_none_or(|b| b.capacity() < total) {
        // Grow by half again so a slowly growing batch size does not
        // reallocate pinned memory every time.
        *staging = None;
        *staging = Some(PinnedBuffer::new((total + total / 2).max(1 << 20))?);
    }
    let buf = match staging.as_mut() {
        Some(b) => b,
        None => return Err(GpuError::Pinned("no staging buffer".into())),
    };
    let base = buf.full_mut().as_mut_ptr();
    let mut k = 0;
    let mut result = Ok(());
    for c in columns {
        c.each_slice(&mut |s| {
            if result.is_ok() && s.len > 0 {
                // SAFETY: offsets[k] + s.len <= total <= capacity; the device
                // slice has s.len bytes; the stream is synchronized below
                // before the staging buffer is read.
                result = check(
                    unsafe {
                        sys::cuMemcpyDtoHAsync_v2(
                            base.add(offsets[k]) as *mut c_void,
                            s.buffer.ptr(),
                            s.len,
                            stream.raw,
                        )
                    },
                    "cuMemcpyDtoHAsync",
                    device,
                );
            }
            k += 1;
        });
    }
    result?;
    stream.sync()?;
    let host = buf.full_mut();
    let mut k = 0;
    columns
        .iter()
        .map(|c| Ok(make_array(build_data(c, host, &offsets, &mut k)?)))
        .collect()
}

fn build_data(
    c: &DeviceColumn,
    host: &[u8],
    offsets: &[usize],
    k: &mut usize,
) -> Result<ArrayData, GpuError> {
    let mut take = |len: usize| {
        let at = offsets[*k];
        *k += 1;
        Buffer::from_slice_ref(&host[at..at + len])
    };
    let validity = c.validity.as_ref().map(|v| take(v.len));
    let buffers: Vec<Buffer> = c.buffers.iter().map(|b| take(b.len)).collect();
    let mut children = Vec::with_capacity(c.children.len());
    for ch in &c.children {
        children.push(build_data(ch, host, offsets, k)?);
    }
    let builder = ArrayData::builder(c.data_type.clone())
        .len(c.len)
        .null_count(c.null_count)
        .null_bit_buffer(validity)
        .buffers(buffers)
        .child_data(children);
    // Validation re-reads every value on the CPU (UTF-8 of every string,
    // every offset), which would put back the CPU cost the GPU removed; the
    // kernels already guarantee it: offsets come from a prefix sum of
    // non-negative lengths starting at 0 and ending at the values' size,
    // UTF-8 was checked per value on the device (a failure diverts the chunk
    // to the CPU decoder), and every buffer has the size its type needs.
    // Tests run `validate_full` on everything this returns.
    // SAFETY: as argued above.
    Ok(unsafe { builder.build_unchecked() })
}

/// Uploads a host array (a column decoded on the CPU) into plain device
/// memory in the same layout.
pub(crate) fn upload_array(
    ctx: &Arc<Context>,
    stream: &Stream,
    arena: Option<&DeviceArena>,
    data: &ArrayData,
) -> Result<DeviceColumn, GpuError> {
    let up = |bytes: &[u8]| -> Result<DeviceSlice, GpuError> {
        let buf = match arena {
            Some(a) => a.alloc(ctx, stream, bytes.len())?,
            None => DeviceBuffer::alloc(ctx, bytes.len(), AllocKind::Plain, stream)?,
        };
        if !bytes.is_empty() {
            check(
                // SAFETY: buf has bytes.len() bytes; synchronous copy from
                // pageable memory.
                unsafe {
                    sys::cuMemcpyHtoD_v2(buf.ptr(), bytes.as_ptr() as *const c_void, bytes.len())
                },
                "cuMemcpyHtoD",
                ctx.ordinal,
            )?;
        }
        Ok(DeviceSlice {
            buffer: buf,
            len: bytes.len(),
        })
    };
    // Arrays from the CPU decoder start at offset 0; a sliced one is
    // re-materialized so the device copy does too.
    let owned;
    let data = if data.offset() != 0 {
        owned = make_array(data.clone()).to_data();
        let arr = arrow_select::concat::concat(&[make_array(owned).as_ref()]).map_err(|e| {
            GpuError::Layout {
                column: "(upload)".into(),
                what: e.to_string(),
            }
        })?;
        arr.to_data()
    } else {
        data.clone()
    };
    let validity = match data.nulls() {
        Some(n) if n.null_count() > 0 => Some(up(n.buffer().as_slice())?),
        _ => None,
    };
    let mut buffers = Vec::new();
    for b in data.buffers() {
        buffers.push(up(b.as_slice())?);
    }
    let mut children = Vec::new();
    for ch in data.child_data() {
        children.push(upload_array(ctx, stream, arena, ch)?);
    }
    Ok(DeviceColumn {
        data_type: data.data_type().clone(),
        len: data.len(),
        null_count: data.null_count(),
        validity,
        buffers,
        children,
    })
}

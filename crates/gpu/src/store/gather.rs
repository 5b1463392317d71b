//! Runs of rows of device-resident batches gathered into a new device
//! batch, device to device: the table store's page-level refresh keeps the
//! rows of unchanged heap pages this way and drops those of changed pages,
//! so only changed pages travel from the host.
//!
//! ```no_run
//! use gpupg_gpu::{DeviceBatch, GpuError, Gatherer, RowRun};
//!
//! fn refresh(old: &[DeviceBatch]) -> Result<DeviceBatch, GpuError> {
//!     let mut g = Gatherer::new(old[0].device())?; // once per device
//!     let sources: Vec<&DeviceBatch> = old.iter().collect();
//!     // Rows 0..100 of batch 0, then rows 7..9 of batch 1.
//!     let runs = [RowRun::new(0, 0, 100), RowRun::new(1, 7, 2)];
//!     g.gather(&sources, &runs)
//! }
//! ```
//!
//! How: the host plans every output buffer as a task over a *run set*
//! (the rows, elements or bytes to copy, sorted by output position, with
//! adjacent runs merged), and three kernels (`kernels/gather.cu`) run all
//! tasks of a kind in one launch each: byte copies (fixed-width values,
//! string bytes), bitmaps (validity with exact NULL counts, booleans) and
//! rebased integers (offsets, dictionary keys). Run tables travel in one
//! upload per launch round, never one copy call per run. Variable-width
//! and list columns need their source offsets at the run boundaries to size
//! the output: one small fetch round trip per nesting level (none for
//! fixed-width columns). The output's buffers are carved from one plain
//! allocation (`exec::output_slab`), 256-byte aligned like the decoder's.
//!
//! [`gather_rows_host`] is the CPU twin (arrow's `slice` + `concat`), the
//! reference of the tests.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{new_empty_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{ArrowError, DataType, SchemaRef};
use cudarc::driver::sys;
use serde::Serialize;

use crate::kernels::{GatherKernel, GatherKernels};
use crate::runtime::column::{upload_array, DeviceBatch, DeviceColumn, DeviceSlice};
use crate::runtime::cuda::{check, AllocKind, Context, DeviceBuffer, Event, Stream};
use crate::runtime::error::GpuError;
use crate::runtime::pinned::PinnedBuffer;

// Work units of the kernels: must match COPY_TILE, REBASE_TILE and
// BITS_UNIT in kernels/gather.cu.
const COPY_TILE: u64 = 16384;
const REBASE_TILE: u64 = 4096;
const BITS_UNIT: u64 = 1024;
/// `GTask.flags`: write `tail` after the last element (FLAG_TAIL).
const FLAG_TAIL: u64 = 1;
/// `GTask.aux` of a bitmap task without a NULL counter (NO_COUNTER).
const NO_COUNTER: u64 = u64::MAX;
/// Alignment of every output buffer in the slab (as the decoder's Carver).
const ALIGN: usize = 256;

/// Rows `start..start + len` of source batch `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowRun {
    /// Index of the source batch.
    pub batch: usize,
    /// First row.
    pub start: usize,
    /// Number of rows.
    pub len: usize,
}

impl RowRun {
    /// Rows `start..start + len` of source batch `batch`.
    pub fn new(batch: usize, start: usize, len: usize) -> RowRun {
        RowRun { batch, start, len }
    }
}

/// What the last [`Gatherer::gather`] did and where its time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatherStats {
    /// Output rows.
    pub rows: u64,
    /// Row runs after merging adjacent ones.
    pub runs: usize,
    /// Round trips for source offsets at run boundaries (one per nesting
    /// level holding variable-width or list columns).
    pub fetch_rounds: usize,
    /// Output buffers written by kernels (tasks).
    pub tasks: usize,
    /// Bytes of run and task tables uploaded for the copy kernels.
    pub table_bytes: u64,
    /// Bytes of the output allocation.
    pub output_bytes: u64,
    /// Validation and planning on the host, fetch round trips included.
    pub plan_s: f64,
    /// Of `plan_s`: the fetch round trips (upload, kernel, read back).
    pub fetch_s: f64,
    /// The output allocation (`cuMemAlloc`).
    pub alloc_s: f64,
    /// Device time of the copy kernels (events).
    pub kernel_s: f64,
    /// The whole call.
    pub total_s: f64,
}

/// Gathers runs of rows of device batches on one device: holds the loaded
/// kernels, a stream and a pinned staging buffer, so create it once per
/// device and reuse it.
#[derive(Debug)]
pub struct Gatherer {
    // Dropped in this order: the stream synchronizes before the module it
    // may still run is unloaded.
    stream: Stream,
    kernels: GatherKernels,
    staging: Option<PinnedBuffer>,
    start: Event,
    end: Event,
    stats: GatherStats,
    scratch: Scratch,
    ctx: Arc<Context>,
}

impl Gatherer {
    /// Loads the gather kernels (compiled by NVRTC on first use, then read
    /// from the kernel cache) for GPU `device`.
    pub fn new(device: usize) -> Result<Gatherer, GpuError> {
        let ctx = Context::new(device)?;
        let kernels = GatherKernels::load(&ctx)?;
        let stream = Stream::new(&ctx)?;
        Ok(Gatherer {
            stream,
            kernels,
            staging: None,
            start: Event::new(&ctx)?,
            end: Event::new(&ctx)?,
            stats: GatherStats::default(),
            scratch: Scratch::default(),
            ctx,
        })
    }

    /// The GPU this gatherer works on.
    pub fn device(&self) -> usize {
        self.ctx.ordinal
    }

    /// How the kernels were obtained (architecture, compile time, cache).
    pub fn kernel_info(&self) -> &crate::kernels::ModuleInfo {
        &self.kernels.info
    }

    /// Statistics of the last [`Self::gather`].
    pub fn stats(&self) -> &GatherStats {
        &self.stats
    }

    /// Copies the rows of `runs`, in that order, out of `sources` (device
    /// batches of one schema on this gatherer's device, complete: as every
    /// batch this crate returns) into one new batch on the same device.
    /// Returns once the device has written it.
    ///
    /// Errors, all before anything is launched: no source
    /// ([`GpuError::Unsupported`]), sources of another device or schema,
    /// a run outside its batch or naming no batch, a column layout the
    /// kernels do not handle (all `Unsupported`, naming the run or the
    /// column); a source whose offsets point outside its values
    /// ([`GpuError::Layout`], found after the offsets fetch, before any
    /// output is written).
    pub fn gather(
        &mut self,
        sources: &[&DeviceBatch],
        runs: &[RowRun],
    ) -> Result<DeviceBatch, GpuError> {
        let t0 = Instant::now();
        self.ctx.bind()?;
        let device = self.ctx.ordinal;
        let first = match sources.first() {
            Some(b) => *b,
            None => return Err(bad(device, "no source batch".into())),
        };
        for (i, b) in sources.iter().enumerate() {
            if b.device() != device {
                return Err(bad(
                    device,
                    format!("source {i} is on device {}", b.device()),
                ));
            }
        }
        let schema = first.schema.clone();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let columns: Vec<Vec<SrcCol<'_>>> = sources
            .iter()
            .map(|b| b.columns.iter().map(SrcCol::of_device).collect())
            .collect();
        let shapes: Vec<(&SchemaRef, usize)> =
            sources.iter().map(|b| (&b.schema, b.num_rows)).collect();
        let num_rows = check_sources(device, &schema, &shapes, &columns, runs)?;

        let mut exec = CudaExec {
            ctx: &self.ctx,
            stream: &self.stream,
            kernels: &self.kernels,
            staging: &mut self.staging,
            start: &self.start,
            end: &self.end,
            alloc_s: 0.0,
            kernel_s: 0.0,
            fetch_s: 0.0,
        };
        let mut plan = plan(device, &columns, &names, runs, &mut exec, &mut self.scratch)?;
        let t_plan = t0.elapsed().as_secs_f64();
        let (slab, counters) = exec.run(
            &plan.table,
            plan.slab_bytes,
            &plan.launches,
            plan.counters_at,
            plan.ncounters,
        )?;
        let (alloc_s, kernel_s, fetch_s) = (exec.alloc_s, exec.kernel_s, exec.fetch_s);
        let slab = Arc::new(slab);
        let columns = plan
            .roots
            .iter()
            .map(|&i| device_column(&plan.nodes, i, &slab, &counters))
            .collect();
        // The gathered values carry the provenance of their sources.
        let mut cpu_columns: Vec<(String, String)> = Vec::new();
        let mut seen = vec![false; sources.len()];
        for r in runs.iter().filter(|r| r.len > 0) {
            if !std::mem::replace(&mut seen[r.batch], true) {
                for c in &sources[r.batch].cpu_columns {
                    if !cpu_columns.contains(c) {
                        cpu_columns.push(c.clone());
                    }
                }
            }
        }
        self.stats = GatherStats {
            rows: num_rows as u64,
            runs: plan.runs,
            fetch_rounds: plan.fetch_rounds,
            tasks: plan.tasks,
            table_bytes: plan.table.bytes() as u64,
            output_bytes: plan.slab_bytes as u64,
            plan_s: t_plan,
            fetch_s,
            alloc_s,
            kernel_s,
            total_s: t0.elapsed().as_secs_f64(),
        };
        self.scratch.table = std::mem::take(&mut plan.table.words);
        Ok(DeviceBatch {
            schema,
            num_rows,
            columns,
            cpu_columns,
            ctx: self.ctx.clone(),
        })
    }

    /// Copies a host batch to this device in the same layout (one plain
    /// allocation per buffer): for tests, and small batches decoded
    /// elsewhere.
    pub fn upload(&mut self, batch: &RecordBatch) -> Result<DeviceBatch, GpuError> {
        self.ctx.bind()?;
        let columns = batch
            .columns()
            .iter()
            .map(|a| upload_array(&self.ctx, &self.stream, None, &a.to_data()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DeviceBatch {
            schema: batch.schema(),
            num_rows: batch.num_rows(),
            columns,
            cpu_columns: Vec::new(),
            ctx: self.ctx.clone(),
        })
    }
}

/// One-shot [`Gatherer::gather`] on the sources' device (loads the kernels
/// for the call: keep a [`Gatherer`] to gather repeatedly).
pub fn gather_rows(sources: &[&DeviceBatch], runs: &[RowRun]) -> Result<DeviceBatch, GpuError> {
    let device = match sources.first() {
        Some(b) => b.device(),
        None => return Err(bad(0, "no source batch".into())),
    };
    Gatherer::new(device)?.gather(sources, runs)
}

/// The CPU twin of [`gather_rows`] on host batches (arrow's `slice` and
/// `concat`): the same rows, the same validation of the runs.
pub fn gather_rows_host(
    sources: &[RecordBatch],
    runs: &[RowRun],
) -> Result<RecordBatch, ArrowError> {
    let invalid = |what: String| ArrowError::InvalidArgumentError(format!("gather: {what}"));
    let first = sources
        .first()
        .ok_or_else(|| invalid("no source batch".into()))?;
    let schema = first.schema();
    for (i, b) in sources.iter().enumerate() {
        if *b.schema() != *schema {
            return Err(invalid(format!(
                "source {i} has another schema than source 0"
            )));
        }
    }
    let rows: Vec<usize> = sources.iter().map(|b| b.num_rows()).collect();
    let total = check_runs(&rows, runs).map_err(invalid)?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (c, f) in schema.fields().iter().enumerate() {
        let pieces: Vec<ArrayRef> = runs
            .iter()
            .filter(|r| r.len > 0)
            .map(|r| sources[r.batch].column(c).slice(r.start, r.len))
            .collect();
        columns.push(if pieces.is_empty() {
            new_empty_array(f.data_type())
        } else {
            let refs: Vec<&dyn arrow_array::Array> = pieces.iter().map(|a| a.as_ref()).collect();
            arrow_select::concat::concat(&refs)?
        });
    }
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(total)),
    )
}

fn bad(device: usize, what: String) -> GpuError {
    GpuError::Unsupported {
        device,
        what: format!("gather: {what}"),
    }
}

/// Checks the sources (one schema; every column's buffers as its type
/// needs) and the runs; returns the output's rows.
fn check_sources(
    device: usize,
    schema: &SchemaRef,
    shapes: &[(&SchemaRef, usize)],
    columns: &[Vec<SrcCol<'_>>],
    runs: &[RowRun],
) -> Result<usize, GpuError> {
    for (i, ((s, rows), cols)) in shapes.iter().zip(columns).enumerate() {
        if **s != *schema {
            return Err(bad(
                device,
                format!("source {i} has another schema than source 0"),
            ));
        }
        if cols.len() != schema.fields().len() {
            return Err(bad(
                device,
                format!(
                    "source {i} has {} columns for {} fields",
                    cols.len(),
                    schema.fields().len()
                ),
            ));
        }
        for (c, f) in cols.iter().zip(schema.fields()) {
            check_col(f.data_type(), c, *rows, f.name())
                .map_err(|e| bad(device, format!("source {i}: {e}")))?;
        }
    }
    let rows: Vec<usize> = shapes.iter().map(|s| s.1).collect();
    check_runs(&rows, runs).map_err(|e| bad(device, e))
}

/// Checks every run against its batch; returns the output's rows.
fn check_runs(rows: &[usize], runs: &[RowRun]) -> Result<usize, String> {
    let mut total = 0usize;
    for (i, r) in runs.iter().enumerate() {
        let n = *rows.get(r.batch).ok_or_else(|| {
            format!(
                "run {i} names batch {} of {} source batches",
                r.batch,
                rows.len()
            )
        })?;
        match r.start.checked_add(r.len) {
            Some(end) if end <= n => {}
            _ => {
                return Err(format!(
                    "run {i}: rows {}..{}+{} are outside batch {} of {n} rows",
                    r.start, r.start, r.len, r.batch
                ))
            }
        }
        total = total
            .checked_add(r.len)
            .ok_or_else(|| "the runs hold more rows than fit a usize".to_string())?;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------
// Source columns as the planner sees them: addresses and lengths only (host
// pointers in the CPU twin's tests).
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Buf {
    addr: u64,
    len: usize,
}

#[derive(Debug)]
struct SrcCol<'a> {
    dt: &'a DataType,
    len: usize,
    validity: Option<Buf>,
    buffers: Vec<Buf>,
    children: Vec<SrcCol<'a>>,
}

impl<'a> SrcCol<'a> {
    fn of_device(c: &'a DeviceColumn) -> SrcCol<'a> {
        let buf = |s: &DeviceSlice| Buf {
            addr: s.buffer.ptr(),
            len: s.len,
        };
        SrcCol {
            dt: &c.data_type,
            len: c.len,
            validity: c.validity.as_ref().map(buf),
            buffers: c.buffers.iter().map(buf).collect(),
            children: c.children.iter().map(SrcCol::of_device).collect(),
        }
    }
}

/// The buffer layout of a type, as the kernels copy it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One buffer of `width`-byte values (0: FixedSizeBinary(0), nothing
    /// to copy).
    Fixed(usize),
    /// Bit-packed booleans.
    Bool,
    /// Offsets of `width` bytes, then the bytes (Utf8, Binary, Large*).
    Bytes(usize),
    /// Offsets of `width` bytes, one child (List, Map, LargeList).
    List(usize),
    /// No buffer, one child of `size` elements per row.
    FixedList(usize),
    /// No buffer, `fields` children of the struct's rows.
    Struct(usize),
    /// Keys of `width` bytes, one child (the dictionary).
    Dict { width: usize, signed: bool },
}

fn shape_of(dt: &DataType) -> Option<Shape> {
    Some(match dt {
        DataType::Boolean => Shape::Bool,
        DataType::FixedSizeBinary(w) => Shape::Fixed(usize::try_from(*w).ok()?),
        DataType::Utf8 | DataType::Binary => Shape::Bytes(4),
        DataType::LargeUtf8 | DataType::LargeBinary => Shape::Bytes(8),
        DataType::List(_) | DataType::Map(_, _) => Shape::List(4),
        DataType::LargeList(_) => Shape::List(8),
        DataType::FixedSizeList(_, n) => Shape::FixedList(usize::try_from(*n).ok()?),
        DataType::Struct(f) => Shape::Struct(f.len()),
        DataType::Dictionary(k, _) if k.is_dictionary_key_type() => Shape::Dict {
            width: k.primitive_width()?,
            signed: k.is_signed_integer(),
        },
        other => Shape::Fixed(other.primitive_width()?),
    })
}

/// The types of a type's child arrays, in `ArrayData` order.
fn child_types(dt: &DataType) -> Vec<&DataType> {
    match dt {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::Map(f, _)
        | DataType::FixedSizeList(f, _) => vec![f.data_type()],
        DataType::Struct(fs) => fs.iter().map(|f| f.data_type()).collect(),
        DataType::Dictionary(_, v) => vec![v.as_ref()],
        _ => Vec::new(),
    }
}

/// Checks that a source column has the buffers and lengths its type needs
/// for `rows` rows (every length the kernels rely on except those read
/// from offsets, checked after the fetch), so no kernel reads outside a
/// source buffer.
fn check_col(dt: &DataType, c: &SrcCol<'_>, rows: usize, name: &str) -> Result<(), String> {
    if c.dt != dt {
        return Err(format!("column {name} has type {} instead of {dt}", c.dt));
    }
    let shape = shape_of(dt).ok_or_else(|| format!("column {name}: type {dt} is not supported"))?;
    if c.len < rows {
        return Err(format!("column {name} has {} rows, {rows} needed", c.len));
    }
    let short = |what: &str, have: usize, need: Option<usize>| -> Result<(), String> {
        match need {
            Some(n) if have >= n => Ok(()),
            _ => Err(format!(
                "column {name}: {what} of {have} bytes is too short for {} rows",
                c.len
            )),
        }
    };
    if let Some(v) = c.validity {
        short("the validity bitmap", v.len, Some(c.len.div_ceil(8)))?;
    }
    let (nbuf, nchild) = match shape {
        Shape::Fixed(_) | Shape::Bool => (1, 0),
        Shape::Bytes(_) => (2, 0),
        Shape::List(_) | Shape::Dict { .. } => (1, 1),
        Shape::FixedList(_) => (0, 1),
        Shape::Struct(n) => (0, n),
    };
    if c.buffers.len() != nbuf || c.children.len() != nchild {
        return Err(format!(
            "column {name}: {} buffers and {} children, {dt} has {nbuf} and {nchild}",
            c.buffers.len(),
            c.children.len()
        ));
    }
    let n = c.len;
    match shape {
        Shape::Fixed(w) | Shape::Dict { width: w, .. } => {
            short("the values buffer", c.buffers[0].len, n.checked_mul(w))?
        }
        Shape::Bool => short("the values bitmap", c.buffers[0].len, Some(n.div_ceil(8)))?,
        Shape::Bytes(w) | Shape::List(w) if n > 0 => short(
            "the offsets buffer",
            c.buffers[0].len,
            n.checked_add(1).and_then(|k| k.checked_mul(w)),
        )?,
        _ => {}
    }
    let types = child_types(dt);
    for (k, (ch, t)) in c.children.iter().zip(types).enumerate() {
        let need = match shape {
            Shape::FixedList(size) => n
                .checked_mul(size)
                .ok_or_else(|| format!("column {name}: too many elements"))?,
            Shape::Struct(_) => n,
            // Lists: checked against the offsets after the fetch;
            // dictionaries: any size.
            _ => 0,
        };
        check_col(t, ch, need, &format!("{name}.{k}"))?;
    }
    Ok(())
}

mod exec;
mod planner;

use exec::{device_column, CudaExec};
use planner::*;

#[cfg(test)]
mod tests;

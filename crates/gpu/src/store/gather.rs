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
//! allocation ([`output_slab`]), 256-byte aligned like the decoder's.
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
    pub batch: usize,
    pub start: usize,
    pub len: usize,
}

impl RowRun {
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

// ---------------------------------------------------------------------------
// Planning: run sets, output layout and kernel tasks.
// ---------------------------------------------------------------------------

/// `struct GRun` in kernels/gather.cu: units `src..src + len` of source
/// `batch` to units `dst..dst + len` of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GRun {
    src: u64,
    dst: u64,
    len: u64,
    batch: u64,
}

/// `struct GTask` in kernels/gather.cu (field for field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GTask {
    runs: u64,
    nruns: u64,
    srcs: u64,
    aux: u64,
    dst: u64,
    total: u64,
    tail: u64,
    start: u64,
    width: u64,
    flags: u64,
}

impl GTask {
    fn words(&self) -> [u64; 10] {
        [
            self.runs, self.nruns, self.srcs, self.aux, self.dst, self.total, self.tail,
            self.start, self.width, self.flags,
        ]
    }
}

/// Runs in output order with empty ones dropped and adjacent ones (same
/// batch, contiguous source) merged; output positions are the prefix sums.
#[cfg(test)]
fn coalesce(parts: impl IntoIterator<Item = (usize, u64, u64)>) -> Vec<GRun> {
    let mut out = Vec::new();
    coalesce_into(parts, &mut out);
    out
}

/// [`coalesce`] into `out` (cleared first; a reused buffer).
fn coalesce_into(parts: impl IntoIterator<Item = (usize, u64, u64)>, out: &mut Vec<GRun>) {
    out.clear();
    let mut dst = 0u64;
    for (batch, src, len) in parts {
        if len == 0 {
            continue;
        }
        let batch = batch as u64;
        match out.last_mut() {
            Some(last) if last.batch == batch && last.src + last.len == src => last.len += len,
            _ => out.push(GRun {
                src,
                dst,
                len,
                batch,
            }),
        }
        dst += len;
    }
}

fn set_total(set: &[GRun]) -> u64 {
    set.last().map_or(0, |r| r.dst + r.len)
}

/// The child runs of an offsets-based column (strings' bytes, lists'
/// elements) in parent order: batch, first offset, length.
fn child_parts<'r>(
    parent: &'r [GRun],
    bounds: &'r [u64],
) -> impl Iterator<Item = (usize, u64, u64)> + 'r {
    parent
        .iter()
        .zip(bounds.chunks_exact(2))
        .map(|(r, b)| (r.batch as usize, b[0], b[1].saturating_sub(b[0])))
}

/// Checks the source offsets at each parent run's boundaries (`bounds`:
/// first and end, two per run) against the size of the batch's values
/// (`limit`), and gives each parent run's rebasing delta and the child
/// total.
fn child_deltas(
    parent: &[GRun],
    bounds: &[u64],
    limit: &dyn Fn(usize) -> u64,
    name: &str,
) -> Result<(Vec<i64>, u64), String> {
    let mut deltas = Vec::with_capacity(parent.len());
    let mut at = 0u64;
    for (r, b) in parent.iter().zip(bounds.chunks_exact(2)) {
        let (lo, hi) = (b[0], b[1]);
        let b = r.batch as usize;
        if lo > hi || hi > limit(b) {
            return Err(format!(
                "column {name}: source {b} rows {}..{} have offsets {lo}..{hi} outside its {} values",
                r.src,
                r.src + r.len,
                limit(b)
            ));
        }
        // out = src - lo + at, in the offset width's wrapping arithmetic.
        deltas.push(at.wrapping_sub(lo) as i64);
        at += hi - lo;
    }
    Ok((deltas, at))
}

/// Where an output node's buffers are in the slab; filled by the planner.
#[derive(Debug, Clone, Default)]
struct OutNode {
    data_type: Option<DataType>,
    len: usize,
    /// (offset, bytes, NULL counter).
    validity: Option<(usize, usize, usize)>,
    /// (offset, bytes) in `ArrayData` order.
    buffers: Vec<(usize, usize)>,
    children: Vec<usize>,
}

#[derive(Debug)]
enum Aux {
    None,
    Counter(usize),
    Deltas(Vec<i64>),
}

/// One output buffer written by one kernel.
#[derive(Debug)]
struct Spec {
    kernel: GatherKernel,
    set: usize,
    /// Per source batch: its buffer's address (0 for a bitmap: all set).
    srcs: Vec<u64>,
    aux: Aux,
    /// Offset in the slab.
    dst: usize,
    total: u64,
    tail: Option<u64>,
    width: u64,
}

impl Spec {
    fn units(&self, nruns: usize) -> u64 {
        match self.kernel {
            GatherKernel::Copy => (self.total * self.width).div_ceil(COPY_TILE),
            GatherKernel::Bits => self.total.div_ceil(BITS_UNIT),
            GatherKernel::Rebase => {
                let n = self.total.div_ceil(REBASE_TILE);
                if self.tail.is_some() {
                    n.max(1)
                } else {
                    n
                }
            }
            GatherKernel::Fetch => nruns as u64,
        }
    }
}

/// The uploaded table: run sets, source addresses, deltas, counters and
/// tasks, as u64 words (every struct of the kernels is made of u64s).
#[derive(Debug, Default, Clone)]
struct Table {
    words: Vec<u64>,
}

impl Table {
    /// Appends words; returns their byte offset.
    fn push(&mut self, w: &[u64]) -> u64 {
        let at = self.bytes() as u64;
        self.words.extend_from_slice(w);
        at
    }

    fn push_iter(&mut self, w: impl IntoIterator<Item = u64>) -> u64 {
        let at = self.bytes() as u64;
        self.words.extend(w);
        at
    }

    fn push_runs(&mut self, runs: &[GRun]) -> u64 {
        let at = self.bytes() as u64;
        for r in runs {
            self.words
                .extend_from_slice(&[r.src, r.dst, r.len, r.batch]);
        }
        at
    }

    fn push_tasks(&mut self, tasks: &[GTask]) -> u64 {
        let at = self.bytes() as u64;
        for t in tasks {
            self.words.extend_from_slice(&t.words());
        }
        at
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn as_bytes(&self) -> &[u8] {
        // SAFETY: u64 has no padding and every bit pattern is a valid u8;
        // the slice covers exactly the vector's initialized elements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.bytes()) }
    }
}

/// One kernel launch over a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Launch {
    kernel: GatherKernel,
    tasks_at: u64,
    ntasks: u32,
    nunits: u64,
}

/// Runs the planned kernels: on the device ([`CudaExec`]) or, in the
/// tests, the kernels' C++ twin on host memory.
trait Exec {
    type Slab;
    /// Runs the fetch kernel over `table`; `out` (cleared) gets two values
    /// per unit.
    fn fetch(&mut self, table: &Table, launch: Launch, out: &mut Vec<u64>) -> Result<(), GpuError>;
    /// Allocates the output slab, runs `launches` over `table` and returns
    /// the slab and the `ncounters` NULL counters at byte `counters_at` of
    /// the table, once everything is written.
    fn run(
        &mut self,
        table: &Table,
        slab_bytes: usize,
        launches: &[Launch],
        counters_at: u64,
        ncounters: usize,
    ) -> Result<(Self::Slab, Vec<u64>), GpuError>;
}

/// A planned gather.
#[derive(Debug)]
struct Plan {
    nodes: Vec<OutNode>,
    roots: Vec<usize>,
    slab_bytes: usize,
    table: Table,
    launches: Vec<Launch>,
    counters_at: u64,
    ncounters: usize,
    runs: usize,
    tasks: usize,
    fetch_rounds: usize,
}

/// A column of the output waiting to be planned: the same column of every
/// source, the run set it is gathered with and its output node.
struct Pending<'s, 'a> {
    cols: Vec<&'s SrcCol<'a>>,
    set: usize,
    node: usize,
    name: String,
}

struct Planner {
    device: usize,
    /// Source batches.
    nsrc: usize,
    sets: Vec<Vec<GRun>>,
    /// Per set: the batches with rows in it, in order of first use.
    users: Vec<Vec<usize>>,
    nodes: Vec<OutNode>,
    specs: Vec<Spec>,
    cursor: usize,
    counters: usize,
    scratch: Scratch,
}

/// Buffers kept from one gather to the next: vectors of a few hundred KB
/// allocated afresh on every call cost more in page faults than the
/// planning itself (10,000 runs).
#[derive(Debug, Default)]
struct Scratch {
    /// Spare run-set buffers.
    sets: Vec<Vec<GRun>>,
    /// The fetch round's table and the values it reads back.
    fetch: Vec<u64>,
    vals: Vec<u64>,
    /// The copy kernels' table.
    table: Vec<u64>,
}

impl Planner {
    /// The slab offset of the next `bytes` (256-byte aligned, at least one
    /// alignment unit each, as the decoder's Carver).
    fn carve(&mut self, bytes: usize) -> usize {
        let at = self.cursor;
        self.cursor += bytes.max(1).div_ceil(ALIGN) * ALIGN;
        at
    }

    /// A run-set buffer to fill (then [`Self::add_set`]).
    fn spare(&mut self) -> Vec<GRun> {
        self.scratch.sets.pop().unwrap_or_default()
    }

    fn add_set(&mut self, set: Vec<GRun>) -> usize {
        let mut seen = vec![false; self.nsrc];
        let mut users = Vec::new();
        for r in &set {
            let b = r.batch as usize;
            if !std::mem::replace(&mut seen[b], true) {
                users.push(b);
            }
        }
        self.users.push(users);
        self.sets.push(set);
        self.sets.len() - 1
    }

    fn add_node(&mut self) -> usize {
        self.nodes.push(OutNode::default());
        self.nodes.len() - 1
    }

    /// Refuses source buffers the kernels would read with misaligned
    /// `width`-byte loads (offsets, keys).
    fn aligned(
        &self,
        p: &Pending<'_, '_>,
        set: usize,
        which: &dyn Fn(&SrcCol<'_>) -> u64,
        width: usize,
    ) -> Result<(), GpuError> {
        for &b in &self.users[set] {
            let addr = which(p.cols[b]);
            if !addr.is_multiple_of(width as u64) {
                return Err(bad(
                    self.device,
                    format!(
                        "column {}: source {b}'s buffer at {addr:#x} is not aligned to its {width}-byte values",
                        p.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Plans a column whose sizes are known from its run set; columns with
    /// offsets wait in `waiting` for the boundaries' fetch.
    fn expand<'s, 'a>(
        &mut self,
        p: Pending<'s, 'a>,
        work: &mut Vec<Pending<'s, 'a>>,
        waiting: &mut Vec<(Pending<'s, 'a>, usize)>,
    ) -> Result<(), GpuError> {
        let dt = p.cols[0].dt;
        let shape = shape_of(dt).ok_or_else(|| {
            bad(
                self.device,
                format!("column {}: type {dt} is not supported", p.name),
            )
        })?;
        let total = set_total(&self.sets[p.set]);
        let n = total as usize;
        let used = self.users[p.set].clone();
        {
            let node = &mut self.nodes[p.node];
            node.data_type = Some(dt.clone());
            node.len = n;
        }
        if used.iter().any(|&b| p.cols[b].validity.is_some()) {
            // Whole 32-bit words: the kernel stores words. A source without
            // a bitmap reads as all valid.
            let at = self.carve(n.div_ceil(32) * 4);
            let counter = self.counters;
            self.counters += 1;
            self.nodes[p.node].validity = Some((at, n.div_ceil(8), counter));
            self.specs.push(Spec {
                kernel: GatherKernel::Bits,
                set: p.set,
                srcs: p
                    .cols
                    .iter()
                    .map(|c| c.validity.map_or(0, |v| v.addr))
                    .collect(),
                aux: Aux::Counter(counter),
                dst: at,
                total,
                tail: None,
                width: 0,
            });
        }
        match shape {
            Shape::Fixed(w) => {
                let at = self.carve(n * w);
                self.nodes[p.node].buffers = vec![(at, n * w)];
                if w > 0 {
                    self.specs.push(Spec {
                        kernel: GatherKernel::Copy,
                        set: p.set,
                        srcs: p.cols.iter().map(|c| c.buffers[0].addr).collect(),
                        aux: Aux::None,
                        dst: at,
                        total,
                        tail: None,
                        width: w as u64,
                    });
                }
            }
            Shape::Bool => {
                let at = self.carve(n.div_ceil(32) * 4);
                self.nodes[p.node].buffers = vec![(at, n.div_ceil(8))];
                self.specs.push(Spec {
                    kernel: GatherKernel::Bits,
                    set: p.set,
                    srcs: p.cols.iter().map(|c| c.buffers[0].addr).collect(),
                    aux: Aux::None,
                    dst: at,
                    total,
                    tail: None,
                    width: 0,
                });
            }
            Shape::Bytes(w) | Shape::List(w) => {
                self.aligned(&p, p.set, &|c| c.buffers[0].addr, w)?;
                waiting.push((p, w));
            }
            Shape::FixedList(size) => {
                let mut child = self.spare();
                coalesce_into(
                    self.sets[p.set]
                        .iter()
                        .map(|r| (r.batch as usize, r.src * size as u64, r.len * size as u64)),
                    &mut child,
                );
                let set = self.add_set(child);
                let node = self.add_node();
                self.nodes[p.node].children = vec![node];
                work.push(Pending {
                    cols: p.cols.iter().map(|c| &c.children[0]).collect(),
                    set,
                    node,
                    name: format!("{}.0", p.name),
                });
            }
            Shape::Struct(k) => {
                let mut children = Vec::with_capacity(k);
                for i in 0..k {
                    let node = self.add_node();
                    children.push(node);
                    work.push(Pending {
                        cols: p.cols.iter().map(|c| &c.children[i]).collect(),
                        set: p.set,
                        node,
                        name: format!("{}.{i}", p.name),
                    });
                }
                self.nodes[p.node].children = children;
            }
            Shape::Dict { width, signed } => {
                // The output dictionary: the dictionaries of the batches
                // used, in order of first use; each batch's keys move by
                // its dictionary's position there.
                let mut base = vec![0u64; p.cols.len()];
                let mut parts = Vec::with_capacity(used.len());
                let mut size = 0u64;
                for &b in &used {
                    base[b] = size;
                    let len = p.cols[b].children[0].len as u64;
                    parts.push((b, 0, len));
                    size += len;
                }
                let room: u128 = if signed {
                    1u128 << (8 * width - 1)
                } else {
                    1u128 << (8 * width)
                };
                if u128::from(size) > room {
                    return Err(bad(
                        self.device,
                        format!(
                            "column {}: the gathered dictionaries hold {size} values, more than its {}-byte keys can index",
                            p.name, width
                        ),
                    ));
                }
                let deltas: Vec<i64> = self.sets[p.set]
                    .iter()
                    .map(|r| base[r.batch as usize] as i64)
                    .collect();
                let at = self.carve(n * width);
                let srcs = p.cols.iter().map(|c| c.buffers[0].addr).collect();
                if deltas.iter().all(|&d| d == 0) {
                    // One dictionary: the keys are copied as they are.
                    self.specs.push(Spec {
                        kernel: GatherKernel::Copy,
                        set: p.set,
                        srcs,
                        aux: Aux::None,
                        dst: at,
                        total,
                        tail: None,
                        width: width as u64,
                    });
                } else {
                    self.aligned(&p, p.set, &|c| c.buffers[0].addr, width)?;
                    self.specs.push(Spec {
                        kernel: GatherKernel::Rebase,
                        set: p.set,
                        srcs,
                        aux: Aux::Deltas(deltas),
                        dst: at,
                        total,
                        tail: None,
                        width: width as u64,
                    });
                }
                self.nodes[p.node].buffers = vec![(at, n * width)];
                let mut dict = self.spare();
                coalesce_into(parts, &mut dict);
                let set = self.add_set(dict);
                let node = self.add_node();
                self.nodes[p.node].children = vec![node];
                work.push(Pending {
                    cols: p.cols.iter().map(|c| &c.children[0]).collect(),
                    set,
                    node,
                    name: format!("{}.0", p.name),
                });
            }
        }
        Ok(())
    }

    /// Plans an offsets-based column once its boundaries are known.
    fn finish_offsets<'s, 'a>(
        &mut self,
        p: Pending<'s, 'a>,
        width: usize,
        bounds: &[u64],
        work: &mut Vec<Pending<'s, 'a>>,
    ) -> Result<(), GpuError> {
        let is_list = p.cols[0].buffers.len() == 1;
        let limit = |b: usize| -> u64 {
            if is_list {
                p.cols[b].children[0].len as u64
            } else {
                p.cols[b].buffers[1].len as u64
            }
        };
        let (deltas, child_total) = child_deltas(&self.sets[p.set], bounds, &limit, &p.name)
            .map_err(|what| GpuError::Layout {
                column: p.name.clone(),
                what,
            })?;
        let max = if width == 4 {
            i32::MAX as u64
        } else {
            i64::MAX as u64
        };
        if child_total > max {
            return Err(bad(
                self.device,
                format!(
                    "column {}: {child_total} gathered values do not fit {width}-byte offsets",
                    p.name
                ),
            ));
        }
        let total = set_total(&self.sets[p.set]);
        let n = total as usize;
        let at = self.carve((n + 1) * width);
        self.specs.push(Spec {
            kernel: GatherKernel::Rebase,
            set: p.set,
            srcs: p.cols.iter().map(|c| c.buffers[0].addr).collect(),
            aux: Aux::Deltas(deltas),
            dst: at,
            total,
            tail: Some(child_total),
            width: width as u64,
        });
        let mut child = self.spare();
        coalesce_into(child_parts(&self.sets[p.set], bounds), &mut child);
        let set = self.add_set(child);
        if is_list {
            self.nodes[p.node].buffers = vec![(at, (n + 1) * width)];
            let node = self.add_node();
            self.nodes[p.node].children = vec![node];
            work.push(Pending {
                cols: p.cols.iter().map(|c| &c.children[0]).collect(),
                set,
                node,
                name: format!("{}.0", p.name),
            });
        } else {
            let vlen = child_total as usize;
            let vat = self.carve(vlen);
            self.nodes[p.node].buffers = vec![(at, (n + 1) * width), (vat, vlen)];
            if vlen > 0 {
                self.specs.push(Spec {
                    kernel: GatherKernel::Copy,
                    set,
                    srcs: p.cols.iter().map(|c| c.buffers[1].addr).collect(),
                    aux: Aux::None,
                    dst: vat,
                    total: child_total,
                    tail: None,
                    width: 1,
                });
            }
        }
        Ok(())
    }

    /// Fetches the source offsets at the boundaries of every run of the
    /// waiting columns in one launch into `scratch.vals`; returns each
    /// column's first run there (its values at `2 * first ..`).
    fn fetch<E: Exec>(
        &mut self,
        waiting: &[(Pending<'_, '_>, usize)],
        exec: &mut E,
    ) -> Result<Vec<usize>, GpuError> {
        let mut table = Table {
            words: std::mem::take(&mut self.scratch.fetch),
        };
        table.words.clear();
        let mut set_at: Vec<Option<u64>> = vec![None; self.sets.len()];
        let mut tasks = Vec::with_capacity(waiting.len());
        let mut units = 0u64;
        for (p, width) in waiting {
            let set = &self.sets[p.set];
            let runs = match set_at[p.set] {
                Some(at) => at,
                None => {
                    let at = table.push_runs(set);
                    set_at[p.set] = Some(at);
                    at
                }
            };
            let srcs: Vec<u64> = p.cols.iter().map(|c| c.buffers[0].addr).collect();
            tasks.push(GTask {
                runs,
                nruns: set.len() as u64,
                srcs: table.push(&srcs),
                aux: units,
                start: units,
                width: *width as u64,
                ..GTask::default()
            });
            units += set.len() as u64;
        }
        let firsts: Vec<usize> = tasks.iter().map(|t| t.aux as usize).collect();
        if units == 0 {
            self.scratch.fetch = table.words;
            return Ok(firsts);
        }
        let tasks_at = table.push_tasks(&tasks);
        let mut vals = std::mem::take(&mut self.scratch.vals);
        exec.fetch(
            &table,
            Launch {
                kernel: GatherKernel::Fetch,
                tasks_at,
                ntasks: tasks.len() as u32,
                nunits: units,
            },
            &mut vals,
        )?;
        self.scratch.fetch = table.words;
        if vals.len() < 2 * units as usize {
            return Err(GpuError::Layout {
                column: "(gather)".into(),
                what: format!(
                    "{} boundary values fetched, {} expected",
                    vals.len(),
                    2 * units
                ),
            });
        }
        self.scratch.vals = vals;
        Ok(firsts)
    }

    /// Lays out the table of the copy kernels: run sets, per-source
    /// addresses, deltas, the zeroed NULL counters, one task array per
    /// kernel.
    fn table(&mut self) -> (Table, Vec<Launch>, u64) {
        let mut table = Table {
            words: std::mem::take(&mut self.scratch.table),
        };
        table.words.clear();
        // Reserved at once: regrowing a large table copies it.
        let sets: usize = self.sets.iter().map(|s| 4 * s.len()).sum();
        let per_spec: usize = self
            .specs
            .iter()
            .map(|s| {
                10 + s.srcs.len()
                    + match &s.aux {
                        Aux::Deltas(d) => d.len(),
                        _ => 0,
                    }
            })
            .sum();
        table.words.reserve(self.counters + sets + per_spec);
        let counters_at = table.push_iter(std::iter::repeat_n(0, self.counters));
        let mut set_at: Vec<Option<u64>> = vec![None; self.sets.len()];
        let mut launches = Vec::new();
        for kernel in [GatherKernel::Copy, GatherKernel::Rebase, GatherKernel::Bits] {
            let mut tasks = Vec::new();
            let mut units = 0u64;
            for s in self.specs.iter().filter(|s| s.kernel == kernel) {
                let set = &self.sets[s.set];
                let n = s.units(set.len());
                if n == 0 {
                    continue;
                }
                let runs = match set_at[s.set] {
                    Some(at) => at,
                    None => {
                        let at = table.push_runs(set);
                        set_at[s.set] = Some(at);
                        at
                    }
                };
                let aux = match &s.aux {
                    Aux::None => NO_COUNTER,
                    Aux::Counter(k) => counters_at + 8 * *k as u64,
                    Aux::Deltas(d) => table.push_iter(d.iter().map(|&x| x as u64)),
                };
                tasks.push(GTask {
                    runs,
                    nruns: set.len() as u64,
                    srcs: table.push(&s.srcs),
                    aux,
                    dst: s.dst as u64,
                    total: s.total,
                    tail: s.tail.unwrap_or(0),
                    start: units,
                    width: s.width,
                    flags: if s.tail.is_some() { FLAG_TAIL } else { 0 },
                });
                units += n;
            }
            if !tasks.is_empty() {
                let tasks_at = table.push_tasks(&tasks);
                launches.push(Launch {
                    kernel,
                    tasks_at,
                    ntasks: tasks.len() as u32,
                    nunits: units,
                });
            }
        }
        (table, launches, counters_at)
    }
}

/// Plans a gather of `runs` out of `columns[batch][column]` (validated by
/// the caller: one schema, every length checked), fetching offsets through
/// `exec` where sizes depend on them.
fn plan<E: Exec>(
    device: usize,
    columns: &[Vec<SrcCol<'_>>],
    names: &[String],
    runs: &[RowRun],
    exec: &mut E,
    scratch: &mut Scratch,
) -> Result<Plan, GpuError> {
    let mut pl = Planner {
        device,
        nsrc: columns.len(),
        sets: Vec::new(),
        users: Vec::new(),
        nodes: Vec::new(),
        specs: Vec::new(),
        cursor: 0,
        counters: 0,
        scratch: std::mem::take(scratch),
    };
    let mut set = pl.spare();
    coalesce_into(
        runs.iter().map(|r| (r.batch, r.start as u64, r.len as u64)),
        &mut set,
    );
    let rows = pl.add_set(set);
    let nruns = pl.sets[rows].len();
    let mut work = Vec::new();
    let mut roots = Vec::with_capacity(names.len());
    for (c, name) in names.iter().enumerate() {
        let node = pl.add_node();
        roots.push(node);
        work.push(Pending {
            cols: columns.iter().map(|b| &b[c]).collect(),
            set: rows,
            node,
            name: name.clone(),
        });
    }
    let mut waiting = Vec::new();
    let mut fetch_rounds = 0;
    loop {
        while let Some(p) = work.pop() {
            pl.expand(p, &mut work, &mut waiting)?;
        }
        if waiting.is_empty() {
            break;
        }
        let firsts = pl.fetch(&waiting, exec)?;
        fetch_rounds += 1;
        let vals = std::mem::take(&mut pl.scratch.vals);
        for ((p, width), first) in std::mem::take(&mut waiting).into_iter().zip(firsts) {
            let n = pl.sets[p.set].len();
            let bounds = vals
                .get(2 * first..2 * (first + n))
                .ok_or_else(|| GpuError::Layout {
                    column: p.name.clone(),
                    what: format!(
                        "{} boundary values fetched, {} needed",
                        vals.len(),
                        2 * (first + n)
                    ),
                })?;
            pl.finish_offsets(p, width, bounds, &mut work)?;
        }
        pl.scratch.vals = vals;
    }
    let (table, launches, counters_at) = pl.table();
    if launches.iter().any(|l| l.ntasks == u32::MAX) {
        return Err(bad(device, "too many output buffers".into()));
    }
    // The buffers go back for the next gather.
    pl.scratch.sets.append(&mut pl.sets);
    *scratch = std::mem::take(&mut pl.scratch);
    Ok(Plan {
        slab_bytes: pl.cursor,
        tasks: launches.iter().map(|l| l.ntasks as usize).sum(),
        nodes: pl.nodes,
        roots,
        table,
        launches,
        counters_at,
        ncounters: pl.counters,
        runs: nruns,
        fetch_rounds,
    })
}

/// The output column of node `i`, its buffers views of `slab`.
fn device_column(
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
fn output_slab(
    ctx: &Arc<Context>,
    stream: &Stream,
    bytes: usize,
) -> Result<DeviceBuffer, GpuError> {
    DeviceBuffer::alloc(ctx, bytes, AllocKind::Plain, stream)
}

/// The device side of [`Exec`]: tables through a pinned staging buffer,
/// one synchronization per call.
struct CudaExec<'g> {
    ctx: &'g Arc<Context>,
    stream: &'g Stream,
    kernels: &'g GatherKernels,
    staging: &'g mut Option<PinnedBuffer>,
    start: &'g Event,
    end: &'g Event,
    alloc_s: f64,
    kernel_s: f64,
    fetch_s: f64,
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
            // SAFETY: the device buffer and the staging buffer both hold
            // bytes.len() bytes; the staging buffer is written again only
            // after this call's synchronization (every Exec call ends with
            // one).
            check(
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
            // SAFETY: the staging buffer has down_at + bytes bytes (sized
            // above), the device buffer offset + bytes (the caller's
            // layout); the stream is synchronized before the bytes are read.
            check(
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

#[cfg(test)]
mod tests;

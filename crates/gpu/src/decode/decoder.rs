//! `GpuDecoder`: binary COPY chunks to Arrow columns on the GPU, either
//! kept on the device ([`GpuDecoder::decode_to_device`]) or copied back as a
//! `RecordBatch` (the [`Decoder`] trait, bit-identical to `CpuDecoder`).
//!
//! Per piece of a chunk (a chunk larger than the device budget is split
//! into pieces of whole rows):
//! 1. upload: the row bytes and row offsets are staged into a pinned buffer
//!    (unless already pinned) and copied asynchronously on the copy stream
//!    into one of two device input slots, so the next piece's copy overlaps
//!    this piece's kernels;
//! 2. framing kernel: per-field offsets and lengths, column-major;
//! 3. decode kernels, one launch per phase for all columns: arrays (counts,
//!    scan, element walk), fixed-width values, variable-width lengths, scan,
//!    copy; scratch comes from the stream-ordered pool;
//! 4. flags: any malformed value sends the chunk to the CPU decoder, whose
//!    error names the column, partition and row; a column the GPU cannot
//!    convert bit-exactly in this chunk is decoded on the CPU for it.
//!
//! Step 1 is in `decoder/upload.rs`, steps 2 to 4 in `decoder/piece.rs`,
//! heap pages (their own kernels writing rows into an input slot) in
//! `decoder/pages.rs`; this file holds the decoder, its public calls and
//! the CPU fallbacks.
//!
//! Columns whose type has no GPU kernel (enum as dictionary, arrays as
//! struct) are decoded by the CPU decoder on a projection of the chunk and
//! reported in [`GpuStats::cpu_columns`].

use std::collections::HashMap;
use std::ffi::c_void;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{Field, Schema};
use cudarc::driver::sys;
use gpupg_decode::{CpuDecoder, DecodeError, DecodeStats, Decoder, OutputSchema};
use gpupg_format::CopyChunk;
use serde::Serialize;

use crate::decode::column_plan::{merged_options, plan_for, project_chunk, split_rows, ColPlan};
use crate::decode::heap::{slot_bases, slot_bases_of_headers, HeapArgs, PageLayout};
use crate::kernels::Kernels;
use crate::runtime::arena::DeviceArena;
use crate::runtime::column::{copy_columns_to_host, upload_array, DeviceBatch, DeviceColumn};
use crate::runtime::cuda::{self, check, AllocKind, Context, DeviceBuffer, Event, Stream};
use crate::runtime::error::GpuError;
use crate::runtime::pinned::{is_pinned, PinnedBuffer};

/// Tunables of a [`GpuDecoder`].
#[derive(Debug, Clone, Copy)]
pub struct GpuOptions {
    /// Most row bytes decoded in one piece: bounds device memory (about 4x
    /// this for input, field table and outputs of a typical table) whatever
    /// the chunk size.
    pub max_piece_bytes: u64,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            max_piece_bytes: 512 << 20,
        }
    }
}

/// A column decoded on the CPU, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CpuColumn {
    /// The column's name.
    pub name: String,
    /// Why it is decoded on the CPU.
    pub reason: String,
}

/// Time per stage and memory, summed over the decoder's life.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GpuStats {
    /// The CUDA ordinal.
    pub device: usize,
    /// Chunks (and page batches) decoded.
    pub chunks: u64,
    /// Pieces the kernels ran over (a chunk over the device budget is several).
    pub pieces: u64,
    /// Rows decoded.
    pub rows: u64,
    /// Bytes copied host -> device (row bytes and offsets).
    pub h2d_bytes: u64,
    /// Bytes copied device -> host.
    pub d2h_bytes: u64,
    /// Host time copying chunks into pinned staging (0 for pinned chunks).
    pub stage_s: f64,
    /// Host-to-device copy time (device events).
    pub h2d_s: f64,
    /// Framing kernel time (device events).
    pub frame_s: f64,
    /// Decode kernels, including the short waits for output sizes.
    pub decode_s: f64,
    /// Device-to-host copies and Arrow assembly (host clock).
    pub d2h_s: f64,
    /// CPU decoding of fallback columns (host clock).
    pub cpu_fallback_s: f64,
    /// Host time inside `cuMemAlloc` for device-resident outputs.
    pub plain_alloc_s: f64,
    /// Heap pages converted by the page kernels, and those they left to the
    /// CPU converter (values stored otherwise than inline and plain).
    pub pages: u64,
    /// Of those, the pages left to the CPU converter.
    pub pages_flagged: u64,
    /// Page kernels, sizes to rows written (device events).
    pub page_convert_s: f64,
    /// Most device memory this decoder held at once (its own allocations).
    pub peak_device_bytes: u64,
    /// Columns always decoded on the CPU.
    pub cpu_columns: Vec<CpuColumn>,
    /// (column, chunk) pairs the GPU handed to the CPU (values without an
    /// exact GPU conversion, e.g. numeric -> float64 outside the fast path).
    pub dynamic_cpu_fallbacks: u64,
    /// Chunks re-decoded on the CPU because the GPU found malformed data.
    pub cpu_rechecks: u64,
    /// Chunks decoded on the CPU after a GPU failure (trait path only).
    pub gpu_failures: u64,
    /// The text of the last of those failures.
    pub last_gpu_failure: Option<String>,
    /// Kernel build: milliseconds of NVRTC (0 when cached) and target.
    pub kernel_compile_ms: f64,
    /// Whether the kernel image came from the disk cache.
    pub kernels_from_cache: bool,
    /// The `sm_XY` the kernels were built for.
    pub arch: String,
}

mod pages;
mod piece;
mod upload;
pub use pages::{GpuPagesDecoded, PagesIn};

static KERNELS: OnceLock<Mutex<HashMap<usize, Arc<Kernels>>>> = OnceLock::new();

/// The kernels of a device, compiled/loaded once per process.
fn kernels_for(ctx: &Arc<Context>) -> Result<Arc<Kernels>, GpuError> {
    let map = KERNELS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = m.get(&ctx.ordinal) {
        return Ok(k.clone());
    }
    let k = Arc::new(Kernels::load(ctx)?);
    m.insert(ctx.ordinal, k.clone());
    Ok(k)
}

/// One of the two input slots (double buffering).
#[derive(Debug)]
struct Slot {
    dev: Option<DeviceBuffer>,
    staging: Option<PinnedBuffer>,
    h2d_start: Event,
    h2d_done: Event,
    /// Recorded on the compute stream once kernels no longer read `dev`.
    freed: Event,
    used: bool,
}

/// A piece whose bytes are on their way to the device.
#[derive(Debug)]
struct Uploaded {
    slot: usize,
    rows: Range<usize>,
    lo: u32,
    hi: u32,
    /// Identity of the chunk (for `prefetch`).
    key: (usize, usize, usize, u64),
}

/// What the kernels made of a piece.
enum Outcome {
    /// Columns (None: decoded on the CPU), columns to redo on the CPU, and
    /// the number of flattened multi-dimensional arrays.
    Done {
        columns: Vec<Option<DeviceColumn>>,
        redo_on_cpu: Vec<usize>,
        flattened: u64,
    },
    /// Malformed data somewhere: the CPU decoder must say where.
    BadData,
}

/// Where the rows of a decoded piece are on the host, for the columns
/// decoded on the CPU: the caller's chunk, or rows the page kernels wrote
/// on the device (copied back only when needed).
enum HostRows<'a> {
    Chunk(&'a CopyChunk),
    Device {
        up: &'a Uploaded,
        copy: Option<CopyChunk>,
    },
}

/// Decodes binary COPY chunks on one GPU.
pub struct GpuDecoder {
    ctx: Arc<Context>,
    kernels: Arc<Kernels>,
    schema: Arc<OutputSchema>,
    plans: Vec<ColPlan>,
    /// Columns decoded on the CPU always, and their projection decoder.
    cpu_cols: Vec<usize>,
    cpu_proj: Option<CpuDecoder>,
    /// Decoders of single columns for per-chunk fallbacks.
    single: HashMap<usize, CpuDecoder>,
    /// The whole-schema CPU decoder for malformed chunks.
    full_cpu: Option<CpuDecoder>,
    copy: Stream,
    compute: Stream,
    slots: [Slot; 2],
    next_slot: usize,
    /// Chunks whose copies are in flight, oldest first (at most one per
    /// input slot).
    prefetched: std::collections::VecDeque<Uploaded>,
    out_staging: Option<PinnedBuffer>,
    ctrl_host: PinnedBuffer,
    /// Heap pages on the device (grows to the largest batch), their
    /// staging when the caller's pages are not page-locked, and the layout
    /// tables uploaded so far (by [`PageLayout::id`]).
    page_dev: Option<DeviceBuffer>,
    page_staging: Option<PinnedBuffer>,
    page_layouts: HashMap<u64, (DeviceBuffer, [usize; 6])>,
    /// Events around the last batch's page kernels, read later.
    page_timing: Option<(Event, Event)>,
    options: GpuOptions,
    stats: GpuStats,
    decode_stats: DecodeStats,
    /// For tests: fill every output with this byte before decoding.
    poison: Option<u8>,
    /// Where device-resident outputs are carved from, when the caller keeps
    /// them (see [`GpuDecoder::set_output_arena`]); else one allocation per
    /// chunk.
    arena: Option<Arc<DeviceArena>>,
}

// SAFETY: every CUDA handle inside is usable from any thread once the
// context is bound, which each public method does first; nothing is shared
// with other threads without synchronization.
unsafe impl Send for GpuDecoder {}

impl std::fmt::Debug for GpuDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDecoder")
            .field("device", &self.ctx.ordinal)
            .field("plans", &self.plans)
            .finish()
    }
}

fn field_of(schema: &Schema, c: usize) -> &Field {
    schema.field(c)
}

impl GpuDecoder {
    /// A decoder for `schema` on device `device` with default options.
    pub fn new(device: usize, schema: Arc<OutputSchema>) -> Result<GpuDecoder, GpuError> {
        Self::with_options(device, schema, GpuOptions::default())
    }

    /// A decoder with explicit options.
    pub fn with_options(
        device: usize,
        schema: Arc<OutputSchema>,
        options: GpuOptions,
    ) -> Result<GpuDecoder, GpuError> {
        let ctx = Context::new(device)?;
        cuda::keep_pool_memory(&ctx)?;
        let kernels = kernels_for(&ctx)?;
        let arrow = schema.arrow_schema();
        let cols = schema.columns();
        let plans: Vec<ColPlan> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| plan_for(&c.pg_type, field_of(&arrow, i).data_type()))
            .collect();
        let cpu_cols: Vec<usize> = (0..plans.len()).filter(|&i| plans[i].is_cpu()).collect();
        let cpu_columns = cpu_cols
            .iter()
            .map(|&i| CpuColumn {
                name: cols[i].name.clone(),
                reason: match &plans[i] {
                    ColPlan::Cpu(r) => (*r).to_string(),
                    _ => String::new(),
                },
            })
            .collect();
        let cpu_proj = if cpu_cols.is_empty() {
            None
        } else {
            Some(CpuDecoder::new(Arc::new(projection_schema(
                &schema, &cpu_cols,
            )?)))
        };
        let mk_slot = || -> Result<Slot, GpuError> {
            Ok(Slot {
                dev: None,
                staging: None,
                h2d_start: Event::new(&ctx)?,
                h2d_done: Event::new(&ctx)?,
                freed: Event::new(&ctx)?,
                used: false,
            })
        };
        let stats = GpuStats {
            device,
            cpu_columns,
            kernel_compile_ms: kernels.info.compile_ms,
            kernels_from_cache: kernels.info.from_cache,
            arch: kernels.info.arch.clone(),
            ..GpuStats::default()
        };
        Ok(GpuDecoder {
            copy: Stream::new(&ctx)?,
            compute: Stream::new(&ctx)?,
            slots: [mk_slot()?, mk_slot()?],
            ctrl_host: PinnedBuffer::new(64 << 10)?,
            ctx,
            kernels,
            schema,
            plans,
            cpu_cols,
            cpu_proj,
            single: HashMap::new(),
            full_cpu: None,
            next_slot: 0,
            prefetched: std::collections::VecDeque::new(),
            out_staging: None,
            page_dev: None,
            page_staging: None,
            page_layouts: HashMap::new(),
            page_timing: None,
            options,
            stats,
            decode_stats: DecodeStats::default(),
            poison: None,
            arena: None,
        })
    }

    /// Time and memory counters.
    pub fn gpu_stats(&self) -> GpuStats {
        let mut s = self.stats.clone();
        // The last batch's page kernels (complete once its decode returned).
        if let Some((a, b)) = &self.page_timing {
            s.page_convert_s += b.since(a).map_or(0.0, |ms| ms / 1e3);
        }
        s.peak_device_bytes = self.ctx.mem.peak();
        s
    }

    /// The decode plan of every column (for reports and tests).
    pub fn plans(&self) -> &[ColPlan] {
        &self.plans
    }

    /// Tests: fill every device output with `byte` before the kernels run,
    /// so an element they fail to write shows.
    pub fn set_poison(&mut self, byte: Option<u8>) {
        self.poison = byte;
    }

    /// Carves the device-resident outputs of `decode_to_device` and
    /// `decode_pages_to_device` from `arena` (shared with other decoders of
    /// the same device), which also enforces its byte limit. Fails when the
    /// arena belongs to another device.
    pub fn set_output_arena(&mut self, arena: Arc<DeviceArena>) -> Result<(), GpuError> {
        if arena.device() != self.ctx.ordinal {
            return Err(GpuError::NoDevice(Some(format!(
                "an output arena of device {} given to the decoder of device {}",
                arena.device(),
                self.ctx.ordinal
            ))));
        }
        self.arena = Some(arena);
        Ok(())
    }

    /// Starts copying `chunk` to the device now (into a free input slot), so
    /// the copy overlaps whatever the GPU is doing; the next
    /// `decode*` call with the same chunk uses it.
    pub fn prefetch(&mut self, chunk: &CopyChunk) -> Result<(), GpuError> {
        self.prefetch_with(chunk, true)
    }

    /// As [`Self::prefetch`], but when the chunk's bytes are page-locked
    /// (a [`crate::runtime::pinned::HostRegistration`] or pinned buffer) they are
    /// copied straight from it, with no staging copy on the CPU.
    ///
    /// # Safety
    /// The copy runs after this returns: `chunk` must stay alive and
    /// unchanged until the next `decode*` call on this decoder returns.
    pub unsafe fn prefetch_direct(&mut self, chunk: &CopyChunk) -> Result<(), GpuError> {
        self.prefetch_with(chunk, false)
    }

    /// `stage`: copy through pinned staging even when the chunk is
    /// page-locked (the safe form, since the copy outlives the call).
    fn prefetch_with(&mut self, chunk: &CopyChunk, stage: bool) -> Result<(), GpuError> {
        self.ctx.bind()?;
        if chunk.num_rows() == 0 || chunk.row_ends.len() != chunk.num_rows() {
            return Ok(());
        }
        let n = chunk.num_rows();
        if let Some(up) = self.upload(chunk, 0..n, stage)? {
            self.push_prefetched(up);
        }
        Ok(())
    }

    fn key(chunk: &CopyChunk) -> (usize, usize, usize, u64) {
        (
            chunk.data.as_ptr() as usize,
            chunk.data.len(),
            chunk.num_rows(),
            chunk.first_row,
        )
    }

    /// Decodes a chunk into device-resident columns (plain `cuMemAlloc`
    /// memory, exportable later through CUDA IPC). The whole chunk is one
    /// piece here, so it must fit the device.
    pub fn decode_to_device(&mut self, chunk: &CopyChunk) -> Result<DeviceBatch, GpuError> {
        self.ctx.bind()?;
        self.stats.chunks += 1;
        let n = chunk.num_rows();
        if n == 0 || chunk.row_ends.len() != n {
            let b = self.cpu_full(chunk)?;
            return self.upload_batch(&b, Vec::new());
        }
        let up = match self.take_prefetched(chunk) {
            Some(u) => Some(u),
            None => self.upload(chunk, 0..n, false)?,
        };
        let Some(up) = up else {
            let b = self.cpu_full(chunk)?;
            return self.upload_batch(&b, Vec::new());
        };
        let outcome = self.run(&up, AllocKind::Plain)?;
        self.device_batch(outcome, n, &mut HostRows::Chunk(chunk))
    }

    /// The device batch of a piece of `n` rows the kernels decoded:
    /// columns decoded on the CPU (always, or redone for this piece) are
    /// uploaded next to the GPU's; malformed data is decoded on the CPU
    /// whole (whose error names the row).
    fn device_batch(
        &mut self,
        outcome: Outcome,
        n: usize,
        rows: &mut HostRows<'_>,
    ) -> Result<DeviceBatch, GpuError> {
        match outcome {
            Outcome::BadData => {
                let chunk = self.host_rows(rows)?;
                let b = self.cpu_full(chunk)?;
                self.upload_batch(&b, Vec::new())
            }
            Outcome::Done {
                columns,
                redo_on_cpu,
                flattened,
            } => {
                let mut cols = columns;
                let mut cpu_names = Vec::new();
                if !self.cpu_cols.is_empty() || !redo_on_cpu.is_empty() {
                    let chunk = self.host_rows(rows)?;
                    let host = self.cpu_columns_for(chunk, 0..n, &redo_on_cpu)?;
                    for (c, arr) in host {
                        cpu_names.push((self.schema.columns()[c].name.clone(), self.cpu_reason(c)));
                        cols[c] = Some(upload_array(
                            &self.ctx,
                            &self.compute,
                            self.arena.as_deref(),
                            &arr.to_data(),
                        )?);
                    }
                }
                self.decode_stats.rows += n as u64;
                self.decode_stats.flattened_arrays += flattened;
                self.stats.rows += n as u64;
                let columns = cols
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        c.ok_or_else(|| GpuError::Layout {
                            column: self.schema.columns()[i].name.clone(),
                            what: "no output".into(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(DeviceBatch {
                    schema: self.schema.arrow_schema(),
                    num_rows: n,
                    columns,
                    cpu_columns: cpu_names,
                    ctx: self.ctx.clone(),
                })
            }
        }
    }

    /// Decodes a chunk to a host `RecordBatch`, returning GPU failures as
    /// errors (the [`Decoder`] impl instead falls back to the CPU on them).
    pub fn decode_batch(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, GpuError> {
        self.ctx.bind()?;
        self.stats.chunks += 1;
        let n = chunk.num_rows();
        if n == 0 || chunk.row_ends.len() != n {
            return self.cpu_full(chunk);
        }
        let pieces = split_rows(
            &chunk.row_starts,
            &chunk.row_ends,
            self.options.max_piece_bytes,
        );
        let mut per_col: Vec<Vec<ArrayRef>> = vec![Vec::new(); self.plans.len()];
        let mut next = match self.take_prefetched(chunk) {
            Some(u) if pieces.len() == 1 => Some(u),
            _ => self.upload(chunk, pieces[0].clone(), false)?,
        };
        let mut flattened_total = 0;
        for k in 0..pieces.len() {
            let Some(cur) = next.take() else {
                return self.cpu_full(chunk);
            };
            if k + 1 < pieces.len() {
                // Issued before this piece's kernels: the copy overlaps them.
                next = self.upload(chunk, pieces[k + 1].clone(), false)?;
            }
            let outcome = self.run(&cur, AllocKind::Pool)?;
            let Some((arrays, flattened)) =
                self.host_arrays(outcome, cur.rows.clone(), &mut HostRows::Chunk(chunk))?
            else {
                return self.cpu_full(chunk);
            };
            flattened_total += flattened;
            for (i, a) in arrays {
                per_col[i].push(a);
            }
        }
        self.record_batch(per_col, n, flattened_total)
    }

    /// The host arrays of one decoded piece (rows `rows` of the chunk):
    /// the GPU's columns copied back and the CPU's; `None` for malformed
    /// data (the caller decodes the chunk on the CPU).
    #[allow(clippy::type_complexity)]
    fn host_arrays(
        &mut self,
        outcome: Outcome,
        rows: Range<usize>,
        host: &mut HostRows<'_>,
    ) -> Result<Option<(Vec<(usize, ArrayRef)>, u64)>, GpuError> {
        let Outcome::Done {
            columns,
            redo_on_cpu,
            flattened,
        } = outcome
        else {
            return Ok(None);
        };
        let t = Instant::now();
        let present: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].is_some())
            .collect();
        let dev: Vec<DeviceColumn> = columns.into_iter().flatten().collect();
        let arrays =
            copy_columns_to_host(&dev, &self.compute, &mut self.out_staging, self.ctx.ordinal)?;
        self.stats.d2h_bytes += dev.iter().map(|c| c.device_bytes() as u64).sum::<u64>();
        drop(dev);
        self.stats.d2h_s += t.elapsed().as_secs_f64();
        let mut out: Vec<(usize, ArrayRef)> = present.into_iter().zip(arrays).collect();
        // Always-CPU and redone columns have no GPU output for this piece.
        if !self.cpu_cols.is_empty() || !redo_on_cpu.is_empty() {
            let chunk = self.host_rows(host)?;
            out.extend(self.cpu_columns_for(chunk, rows, &redo_on_cpu)?);
        }
        Ok(Some((out, flattened)))
    }

    /// One record batch of `n` rows from each column's parts.
    fn record_batch(
        &mut self,
        per_col: Vec<Vec<ArrayRef>>,
        n: usize,
        flattened: u64,
    ) -> Result<RecordBatch, GpuError> {
        let mut arrays = Vec::with_capacity(per_col.len());
        for (i, parts) in per_col.into_iter().enumerate() {
            let a = if parts.len() == 1 {
                parts.into_iter().next().ok_or_else(|| GpuError::Layout {
                    column: self.schema.columns()[i].name.clone(),
                    what: "no output".into(),
                })?
            } else {
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                arrow_select::concat::concat(&refs).map_err(|e| GpuError::Layout {
                    column: self.schema.columns()[i].name.clone(),
                    what: e.to_string(),
                })?
            };
            arrays.push(a);
        }
        let batch = RecordBatch::try_new_with_options(
            self.schema.arrow_schema(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| GpuError::Layout {
            column: "(batch)".into(),
            what: e.to_string(),
        })?;
        self.decode_stats.rows += n as u64;
        self.decode_stats.flattened_arrays += flattened;
        self.stats.rows += n as u64;
        Ok(batch)
    }

    /// The rows of `rows` on the host (copied back from the device the
    /// first time they are needed).
    fn host_rows<'r>(&mut self, rows: &'r mut HostRows<'_>) -> Result<&'r CopyChunk, GpuError> {
        match rows {
            HostRows::Chunk(c) => Ok(c),
            HostRows::Device { up, copy } => {
                if copy.is_none() {
                    *copy = Some(self.download_rows(up)?);
                }
                copy.as_ref().ok_or_else(|| GpuError::Layout {
                    column: "(rows)".into(),
                    what: "rows not copied back".into(),
                })
            }
        }
    }

    fn push_prefetched(&mut self, up: Uploaded) {
        // The new copy took the slot of the oldest entry when both were in
        // use: that entry's data is being overwritten, so forget it.
        self.prefetched.retain(|p| p.slot != up.slot);
        self.prefetched.push_back(up);
    }

    fn take_prefetched(&mut self, chunk: &CopyChunk) -> Option<Uploaded> {
        let key = Self::key(chunk);
        let at = self
            .prefetched
            .iter()
            .position(|u| u.key == key && u.rows == (0..chunk.num_rows()))?;
        // Entries older than the one used are abandoned: their slots are
        // reused in order.
        let up = self.prefetched.remove(at);
        self.prefetched.drain(..at);
        up
    }

    fn cpu_reason(&self, c: usize) -> String {
        match &self.plans[c] {
            ColPlan::Cpu(r) => (*r).to_string(),
            _ => "values without an exact GPU conversion in this chunk".to_string(),
        }
    }

    /// The whole chunk on the CPU: for malformed data (the CPU decoder's
    /// error is the answer), empty chunks and GPU false alarms.
    fn cpu_full(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, GpuError> {
        let t = Instant::now();
        let schema = self.schema.clone();
        let dec = self.full_cpu.get_or_insert_with(|| CpuDecoder::new(schema));
        let before = dec.stats();
        let r = dec.decode(chunk);
        let after = dec.stats();
        self.stats.cpu_fallback_s += t.elapsed().as_secs_f64();
        if chunk.num_rows() > 0 {
            self.stats.cpu_rechecks += 1;
        }
        let b = r?;
        self.decode_stats.rows += after.rows - before.rows;
        self.decode_stats.flattened_arrays += after.flattened_arrays - before.flattened_arrays;
        self.stats.rows += after.rows - before.rows;
        Ok(b)
    }

    /// Uploads a whole host batch (CPU-decoded) as a device batch.
    fn upload_batch(
        &mut self,
        b: &RecordBatch,
        mut cpu_names: Vec<(String, String)>,
    ) -> Result<DeviceBatch, GpuError> {
        let mut columns = Vec::with_capacity(b.num_columns());
        for (i, a) in b.columns().iter().enumerate() {
            columns.push(upload_array(
                &self.ctx,
                &self.compute,
                self.arena.as_deref(),
                &a.to_data(),
            )?);
            cpu_names.push((
                self.schema.columns()[i].name.clone(),
                "whole chunk decoded on the CPU".into(),
            ));
        }
        Ok(DeviceBatch {
            schema: b.schema(),
            num_rows: b.num_rows(),
            columns,
            cpu_columns: cpu_names,
            ctx: self.ctx.clone(),
        })
    }

    /// Decodes, for rows `rows`, the always-CPU columns and the columns in
    /// `redo` on the CPU. A data error there is reported as the whole-chunk
    /// CPU decoder reports it (the first error in its order).
    fn cpu_columns_for(
        &mut self,
        chunk: &CopyChunk,
        rows: Range<usize>,
        redo: &[usize],
    ) -> Result<Vec<(usize, ArrayRef)>, GpuError> {
        match self.cpu_columns_inner(chunk, rows, redo) {
            Err(GpuError::Decode(e)) => match self.cpu_full(chunk) {
                Err(full) => Err(full),
                Ok(_) => Err(GpuError::Decode(e)),
            },
            other => other,
        }
    }

    fn cpu_columns_inner(
        &mut self,
        chunk: &CopyChunk,
        rows: Range<usize>,
        redo: &[usize],
    ) -> Result<Vec<(usize, ArrayRef)>, GpuError> {
        if self.cpu_cols.is_empty() && redo.is_empty() {
            return Ok(Vec::new());
        }
        let t = Instant::now();
        let ncols = self.plans.len();
        let no_proj = || GpuError::Layout {
            column: "(projection)".into(),
            what: "framing failed after the GPU accepted it".into(),
        };
        let mut out = Vec::with_capacity(self.cpu_cols.len() + redo.len());
        if let Some(dec) = self.cpu_proj.as_mut() {
            let proj =
                project_chunk(chunk, rows.clone(), ncols, &self.cpu_cols).ok_or_else(no_proj)?;
            let before = dec.stats().flattened_arrays;
            let b = dec.decode(&proj)?;
            self.decode_stats.flattened_arrays += dec.stats().flattened_arrays - before;
            for (k, &c) in self.cpu_cols.iter().enumerate() {
                out.push((c, b.column(k).clone()));
            }
        }
        for &c in redo {
            if !self.single.contains_key(&c) {
                let s = projection_schema(&self.schema, &[c])?;
                self.single.insert(c, CpuDecoder::new(Arc::new(s)));
            }
            self.stats.dynamic_cpu_fallbacks += 1;
            let proj = project_chunk(chunk, rows.clone(), ncols, &[c]).ok_or_else(no_proj)?;
            let Some(dec) = self.single.get_mut(&c) else {
                continue;
            };
            let b = dec.decode(&proj)?;
            out.push((c, b.column(0).clone()));
        }
        self.stats.cpu_fallback_s += t.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// The output schema of a projection onto `cols`, with the type options
/// that give each column the same Arrow type as in `schema`.
fn projection_schema(schema: &OutputSchema, cols: &[usize]) -> Result<OutputSchema, GpuError> {
    let arrow = schema.arrow_schema();
    let descs: Vec<_> = cols.iter().map(|&c| schema.columns()[c].clone()).collect();
    // One export has one set of type options, so the options each column
    // implies never conflict: merge them.
    let typed: Vec<_> = cols
        .iter()
        .zip(&descs)
        .map(|(&c, d)| (&d.pg_type, arrow.field(c).data_type()))
        .collect();
    let opts = merged_options(&typed);
    let s = OutputSchema::new(&descs, &opts)?;
    let got = s.arrow_schema();
    for (k, &c) in cols.iter().enumerate() {
        if got.field(k).data_type() != arrow.field(c).data_type() {
            return Err(GpuError::Layout {
                column: schema.columns()[c].name.clone(),
                what: format!(
                    "CPU projection gives {} instead of {}",
                    got.field(k).data_type(),
                    arrow.field(c).data_type()
                ),
            });
        }
    }
    Ok(s)
}

impl GpuDecoder {
    /// Counts a GPU failure the caller recovers from on the CPU, and
    /// clears anything of it still in flight.
    pub fn note_failure(&mut self, e: &GpuError) {
        self.stats.gpu_failures += 1;
        self.stats.last_gpu_failure = Some(e.to_string());
        let _ = self.compute.sync();
        let _ = self.copy.sync();
        self.prefetched.clear();
    }
}

impl Decoder for GpuDecoder {
    /// Decodes on the GPU; data errors are the CPU decoder's own errors.
    /// A failure of the GPU itself (out of memory, a CUDA error) is recorded
    /// in [`GpuStats::gpu_failures`] and the chunk is decoded on the CPU, so
    /// an export never stops because of the GPU.
    fn decode(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, DecodeError> {
        match self.decode_batch(chunk) {
            Ok(b) => Ok(b),
            Err(GpuError::Decode(e)) => Err(e),
            Err(other) => {
                // Nothing of this chunk stays in flight.
                self.note_failure(&other);
                match self.cpu_full(chunk) {
                    Ok(b) => Ok(b),
                    Err(GpuError::Decode(e)) => Err(e),
                    Err(e) => Err(DecodeError::BadChunk {
                        partition: chunk.partition,
                        first_row: chunk.first_row,
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }

    fn stats(&self) -> DecodeStats {
        self.decode_stats
    }
}

impl Drop for GpuDecoder {
    fn drop(&mut self) {
        let _ = self.ctx.bind();
        let _ = self.copy.sync();
        let _ = self.compute.sync();
        // Give idle pool memory back to other users of the device.
        cuda::trim_pool(&self.ctx);
    }
}

//! The only place that launches kernels: loads the compiled module and
//! wraps each kernel in a function with typed arguments, plus the launch
//! planning (grid sizes, scan levels) as pure functions.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::sys;
use serde::Serialize;

use crate::runtime::cuda::{check, AllocKind, Context, DeviceBuffer, Stream};
use crate::runtime::error::GpuError;
use crate::runtime::nvrtc;

/// Value kinds understood by the kernels (`K_*` in kernels/decode.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// `bool`, bit-packed.
    Bool = 0,
    /// `int2`.
    Int2 = 1,
    /// `int4`.
    Int4 = 2,
    /// `int8`.
    Int8 = 3,
    /// `float4`.
    Float4 = 4,
    /// `float8`.
    Float8 = 5,
    /// `oid`.
    Oid = 6,
    /// `date` (days since the Unix epoch).
    Date = 7,
    /// `time` (microseconds).
    Time = 8,
    /// `timestamp`/`timestamptz` (microseconds since the Unix epoch).
    Timestamp = 9,
    /// `uuid` (16 bytes).
    Uuid = 10,
    /// `interval` as Arrow MonthDayNano.
    IntervalMdn = 11,
    /// `interval` as a struct of months, days, microseconds.
    IntervalStruct = 12,
    /// `numeric` as Decimal128.
    Decimal = 13,
    /// `numeric` as float64 (exact fast path only).
    NumericF64 = 14,
    /// `text`-like values, UTF-8 checked.
    Text = 20,
    /// `jsonb` (its version byte dropped).
    Jsonb = 21,
    /// `bytea`.
    Bytea = 22,
    /// `numeric` as its text.
    NumericText = 23,
}

impl Kind {
    /// Bytes per output value of a fixed-width kind (Bool: bits, reported
    /// as 0), `None` for variable-width kinds.
    pub fn out_width(self) -> Option<usize> {
        Some(match self {
            Kind::Bool => 0,
            Kind::Int2 => 2,
            Kind::Int4 | Kind::Float4 | Kind::Oid | Kind::Date => 4,
            Kind::Int8 | Kind::Float8 | Kind::Time | Kind::Timestamp | Kind::NumericF64 => 8,
            Kind::Uuid | Kind::IntervalMdn | Kind::Decimal => 16,
            // Three child arrays: months i32, days i32, micros i64.
            Kind::IntervalStruct => 16,
            Kind::Text | Kind::Jsonb | Kind::Bytea | Kind::NumericText => return None,
        })
    }
}

/// Per-column work description, `struct Task` in kernels/decode.cu.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Task {
    /// `const u32*`: field offsets.
    pub off: u64,
    /// `const i32*`: field lengths (-1: NULL).
    pub len: u64,
    /// Values (fixed width) or i32 offsets (variable width).
    pub out0: u64,
    /// Interval struct: days; variable width: value bytes.
    pub out1: u64,
    /// Interval struct: microseconds.
    pub out2: u64,
    /// `u32*`: validity words.
    pub valid: u64,
    /// Variable width: `u32*` lengths.
    pub aux: u64,
    /// Variable width: `u64*` inclusive sums of the lengths.
    pub aux2: u64,
    /// `u32*`: FLAG_* bits the kernel raises.
    pub flag: u64,
    /// `u32*`: NULL count.
    pub nulls: u64,
    /// Values in the task.
    pub n: u32,
    /// A [`Kind`].
    pub kind: u32,
    /// 1 when the column may hold NULLs.
    pub nullable: u32,
    /// Decimal precision.
    pub precision: i32,
    /// Decimal scale.
    pub scale: i32,
    /// 1: round values to the scale, half away from zero.
    pub round: u32,
    /// Padding to the C struct's size.
    pub pad0: u32,
    /// Padding to the C struct's size.
    pub pad1: u32,
}

/// Flag bits a kernel raises for a column (FLAG_* in the source).
pub const FLAG_ERROR: u32 = 1;
/// Decode this column of this chunk on the CPU.
pub const FLAG_CPU: u32 = 2;

/// Threads per block of the per-value kernels (a multiple of 32, for the
/// warp ballots).
pub const BLOCK: u32 = 256;
/// Values per block of the scan kernels (SCAN_TILE in the source).
pub const SCAN_TILE: u64 = 2048;
const SCAN_THREADS: u32 = 256;

/// Blocks for a grid-stride kernel over `n` items: enough to fill the
/// device (`blocks_per_sm` resident blocks on each of `sms`
/// multiprocessors), never more than the items need, at least 1.
pub fn grid_for(n: u64, block: u32, sms: u32, blocks_per_sm: u32) -> u32 {
    let need = n.div_ceil(u64::from(block)).max(1);
    let fill = u64::from(sms.max(1)) * u64::from(blocks_per_sm.max(1));
    need.min(fill).min(u64::from(i32::MAX as u32)) as u32
}

/// Tile counts of each level of the multi-level scan of `n` values: level
/// 0 scans the values, level k+1 the tile sums of level k, until one tile
/// holds everything.
pub fn scan_levels(n: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut m = n.max(1);
    loop {
        let tiles = m.div_ceil(SCAN_TILE);
        v.push(tiles);
        if tiles <= 1 {
            break;
        }
        m = tiles;
    }
    v
}

/// The loaded module and its kernels.
/// The kernels that take a list of column tasks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TaskKernel {
    /// Fixed-width decode.
    Fixed,
    /// Output lengths and validity of variable-width columns.
    VarLengths,
    /// Offsets and bytes of variable-width columns.
    VarCopy,
    /// Element counts and validity of array columns.
    ArrayCount,
    /// List offsets and element (offset, length) of array columns.
    ArrayElems,
}

#[derive(Debug)]
pub(crate) struct Kernels {
    ctx: Arc<Context>,
    module: sys::CUmodule,
    frame: sys::CUfunction,
    fixed: sys::CUfunction,
    var_lengths: sys::CUfunction,
    var_copy: sys::CUfunction,
    scan_reduce_u32: sys::CUfunction,
    scan_reduce_u64: sys::CUfunction,
    scan_tiles_u32: sys::CUfunction,
    scan_tiles_u64: sys::CUfunction,
    array_count: sys::CUfunction,
    array_elems: sys::CUfunction,
    fill: sys::CUfunction,
    heap_sizes: sys::CUfunction,
    heap_write: sys::CUfunction,
    heap_sizes_arrays: sys::CUfunction,
    heap_write_arrays: sys::CUfunction,
    pub sms: u32,
    pub info: ModuleInfo,
}

/// How the module was obtained (for stats and `info`).
#[derive(Debug, Clone, Serialize)]
pub struct ModuleInfo {
    /// The `sm_XY` (or `compute_XY` for PTX) it was built for.
    pub arch: String,
    /// Milliseconds of NVRTC (0 when cached).
    pub compile_ms: f64,
    /// Whether the image came from the disk cache.
    pub from_cache: bool,
    /// Cubin, or PTX for the driver to JIT.
    pub image: nvrtc::ImageKind,
}

// SAFETY: module and function handles are plain driver handles, usable from
// any thread once the context is bound.
unsafe impl Send for Kernels {}
// SAFETY: as above; launching is thread-safe in the driver.
unsafe impl Sync for Kernels {}

impl Kernels {
    /// Compiles (or reads from the cache) and loads the kernels for the
    /// context's device.
    pub(crate) fn load(ctx: &Arc<Context>) -> Result<Kernels, GpuError> {
        let (module, info, sms) = load_module(ctx, nvrtc::KERNEL_SOURCE)?;
        let get = |name: &std::ffi::CStr| -> Result<sys::CUfunction, GpuError> {
            let mut f = std::ptr::null_mut();
            check(
                // SAFETY: module loaded; name is NUL-terminated.
                unsafe { sys::cuModuleGetFunction(&mut f, module, name.as_ptr()) },
                "cuModuleGetFunction",
                ctx.ordinal,
            )?;
            Ok(f)
        };
        Ok(Kernels {
            ctx: ctx.clone(),
            module,
            frame: get(c"frame_rows")?,
            fixed: get(c"decode_fixed")?,
            var_lengths: get(c"var_lengths")?,
            var_copy: get(c"var_copy")?,
            scan_reduce_u32: get(c"scan_reduce_u32")?,
            scan_reduce_u64: get(c"scan_reduce_u64")?,
            scan_tiles_u32: get(c"scan_tiles_u32")?,
            scan_tiles_u64: get(c"scan_tiles_u64")?,
            array_count: get(c"array_count")?,
            array_elems: get(c"array_elems")?,
            fill: get(c"fill_u8")?,
            heap_sizes: get(c"heap_sizes")?,
            heap_write: get(c"heap_write")?,
            heap_sizes_arrays: get(c"heap_sizes_arrays")?,
            heap_write_arrays: get(c"heap_write_arrays")?,
            sms,
            info,
        })
    }

    /// Launches `f` with `args` (pointers to each argument value).
    fn launch(
        &self,
        f: sys::CUfunction,
        grid: (u32, u32),
        block: u32,
        stream: &Stream,
        args: &mut [*mut c_void],
    ) -> Result<(), GpuError> {
        self.launch_shared(f, grid, block, 0, stream, args)
    }

    /// [`Self::launch`] with `shared` bytes of dynamic shared memory.
    fn launch_shared(
        &self,
        f: sys::CUfunction,
        grid: (u32, u32),
        block: u32,
        shared: u32,
        stream: &Stream,
        args: &mut [*mut c_void],
    ) -> Result<(), GpuError> {
        if grid.1 == 0 {
            return Ok(());
        }
        // SAFETY: each kernel's wrapper below passes exactly the parameters
        // its CUDA signature declares, by pointer, in order.
        check(
            unsafe {
                sys::cuLaunchKernel(
                    f,
                    grid.0.max(1),
                    grid.1,
                    1,
                    block,
                    1,
                    1,
                    shared,
                    stream.raw,
                    args.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            },
            "cuLaunchKernel",
            self.ctx.ordinal,
        )
    }

    fn grid(&self, n: u64) -> u32 {
        // 8 resident blocks of 256 threads fill an SM's 2048 threads.
        grid_for(n, BLOCK, self.sms, 8)
    }

    /// Framing of `nrows` rows into column-major field offsets/lengths.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn frame(
        &self,
        s: &Stream,
        data: u64,
        data_len: u64,
        starts: u64,
        ends: u64,
        nrows: u32,
        ncols: u32,
        foff: u64,
        flen: u64,
        flag: u64,
    ) -> Result<(), GpuError> {
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7, mut a8) =
            (data, data_len, starts, ends, nrows, ncols, foff, flen, flag);
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
            &mut a2 as *mut _ as *mut c_void,
            &mut a3 as *mut _ as *mut c_void,
            &mut a4 as *mut _ as *mut c_void,
            &mut a5 as *mut _ as *mut c_void,
            &mut a6 as *mut _ as *mut c_void,
            &mut a7 as *mut _ as *mut c_void,
            &mut a8 as *mut _ as *mut c_void,
        ];
        self.launch(
            self.frame,
            (self.grid(u64::from(nrows)), 1),
            BLOCK,
            s,
            &mut args,
        )
    }

    /// Uploads a task table (small; the copy from pageable memory is staged
    /// by the driver before the call returns, so `tasks` may be dropped).
    pub(crate) fn upload_tasks(
        &self,
        s: &Stream,
        tasks: &[Task],
    ) -> Result<DeviceBuffer, GpuError> {
        // SAFETY: Task is plain old data (#[repr(C)], integers only).
        let bytes =
            unsafe { std::slice::from_raw_parts(tasks.as_ptr() as *const u8, size_of_val(tasks)) };
        self.upload_bytes(s, bytes, AllocKind::Pool)
    }

    /// Uploads small host bytes into a new device buffer (pageable source:
    /// the driver stages it before returning, so `bytes` may be dropped).
    pub(crate) fn upload_bytes(
        &self,
        s: &Stream,
        bytes: &[u8],
        kind: AllocKind,
    ) -> Result<DeviceBuffer, GpuError> {
        let buf = DeviceBuffer::alloc(&self.ctx, bytes.len(), kind, s)?;
        if !bytes.is_empty() {
            check(
                // SAFETY: buf has bytes.len() bytes.
                unsafe {
                    sys::cuMemcpyHtoDAsync_v2(
                        buf.ptr(),
                        bytes.as_ptr() as *const c_void,
                        bytes.len(),
                        s.raw,
                    )
                },
                "cuMemcpyHtoDAsync",
                self.ctx.ordinal,
            )?;
        }
        Ok(buf)
    }

    /// Pass 1 (`sizes`) or pass 2 of the heap page kernels over
    /// `args.npages` pages, one block per page; `arrays`: the variant that
    /// converts arrays (more registers), for tables that output one.
    pub(crate) fn heap_pages(
        &self,
        s: &Stream,
        args: &crate::decode::heap::HeapArgs,
        sizes: bool,
        arrays: bool,
    ) -> Result<(), GpuError> {
        let mut a = *args;
        let mut argv = [&mut a as *mut _ as *mut c_void];
        let f = match (sizes, arrays) {
            (true, false) => self.heap_sizes,
            (false, false) => self.heap_write,
            (true, true) => self.heap_sizes_arrays,
            (false, true) => self.heap_write_arrays,
        };
        // Enough blocks to fill the device several times over; each loops
        // over pages.
        let grid = args.npages.clamp(1, self.sms * 32);
        self.launch_shared(
            f,
            (grid, 1),
            crate::decode::heap::PAGE_THREADS,
            args.block_size,
            s,
            &mut argv,
        )
    }

    fn task_launch(
        &self,
        f: sys::CUfunction,
        s: &Stream,
        data: u64,
        tasks: &[Task],
        keep: &mut Vec<DeviceBuffer>,
    ) -> Result<(), GpuError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let max_n = tasks.iter().map(|t| u64::from(t.n)).max().unwrap_or(1);
        let dev = self.upload_tasks(s, tasks)?;
        let (mut a0, mut a1) = (data, dev.ptr());
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
        ];
        // Task tables beyond the 65535 grid rows are launched in slices.
        let grid_x = self.grid(max_n).div_ceil(tasks.len().min(8) as u32).max(1);
        let r = self.launch(f, (grid_x, tasks.len() as u32), BLOCK, s, &mut args);
        keep.push(dev);
        r
    }

    /// One launch of a per-task kernel over every task (`blockIdx.y` =
    /// task).
    pub(crate) fn tasks(
        &self,
        kernel: TaskKernel,
        s: &Stream,
        data: u64,
        tasks: &[Task],
        keep: &mut Vec<DeviceBuffer>,
    ) -> Result<(), GpuError> {
        let f = match kernel {
            TaskKernel::Fixed => self.fixed,
            TaskKernel::VarLengths => self.var_lengths,
            TaskKernel::VarCopy => self.var_copy,
            TaskKernel::ArrayCount => self.array_count,
            TaskKernel::ArrayElems => self.array_elems,
        };
        self.task_launch(f, s, data, tasks, keep)
    }

    /// Inclusive prefix sums of `nseg` segments of `n` u32 values each
    /// (segment k at `input + 4 * k * seg_stride`) into u64 values at the
    /// same positions of `out`. Scratch for the upper levels comes from the
    /// stream-ordered pool and is freed in stream order.
    pub(crate) fn scan_u32(
        &self,
        s: &Stream,
        input: u64,
        out: u64,
        n: u64,
        nseg: u32,
        seg_stride: u64,
    ) -> Result<(), GpuError> {
        self.scan_level(s, input, true, out, n, nseg, seg_stride)
    }

    #[allow(clippy::too_many_arguments)]
    fn scan_level(
        &self,
        s: &Stream,
        input: u64,
        is_u32: bool,
        out: u64,
        n: u64,
        nseg: u32,
        seg_stride: u64,
    ) -> Result<(), GpuError> {
        if n == 0 || nseg == 0 {
            return Ok(());
        }
        let tiles = n.div_ceil(SCAN_TILE);
        let mut sums_incl: u64 = 0;
        let mut scratch = Vec::new();
        if tiles > 1 {
            let bytes = (tiles * u64::from(nseg) * 8) as usize;
            let sums = DeviceBuffer::alloc(&self.ctx, bytes, AllocKind::Pool, s)?;
            let incl = DeviceBuffer::alloc(&self.ctx, bytes, AllocKind::Pool, s)?;
            let (mut a0, mut a1, mut a2, mut a3, mut a4) =
                (input, n, seg_stride, sums.ptr(), tiles);
            let mut args = [
                &mut a0 as *mut _ as *mut c_void,
                &mut a1 as *mut _ as *mut c_void,
                &mut a2 as *mut _ as *mut c_void,
                &mut a3 as *mut _ as *mut c_void,
                &mut a4 as *mut _ as *mut c_void,
            ];
            let f = if is_u32 {
                self.scan_reduce_u32
            } else {
                self.scan_reduce_u64
            };
            self.launch(f, (tiles as u32, nseg), SCAN_THREADS, s, &mut args)?;
            self.scan_level(s, sums.ptr(), false, incl.ptr(), tiles, nseg, tiles)?;
            sums_incl = incl.ptr();
            scratch.push(sums);
            scratch.push(incl);
        }
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) =
            (input, out, n, seg_stride, sums_incl, tiles);
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
            &mut a2 as *mut _ as *mut c_void,
            &mut a3 as *mut _ as *mut c_void,
            &mut a4 as *mut _ as *mut c_void,
            &mut a5 as *mut _ as *mut c_void,
        ];
        let f = if is_u32 {
            self.scan_tiles_u32
        } else {
            self.scan_tiles_u64
        };
        self.launch(f, (tiles as u32, nseg), SCAN_THREADS, s, &mut args)?;
        // Dropping the scratch frees it in stream order, after the launch.
        drop(scratch);
        Ok(())
    }

    /// Fills `n` bytes at `ptr` with `v` (tests poison outputs with it).
    pub(crate) fn fill(&self, s: &Stream, ptr: u64, n: u64, v: u8) -> Result<(), GpuError> {
        let (mut a0, mut a1, mut a2) = (ptr, n, u32::from(v));
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
            &mut a2 as *mut _ as *mut c_void,
        ];
        self.launch(self.fill, (self.grid(n), 1), BLOCK, s, &mut args)
    }
}

impl Drop for Kernels {
    fn drop(&mut self) {
        // SAFETY: the module is ours and no launch can be pending once its
        // owner (the decoder) has synchronized its streams.
        unsafe {
            let _ = self.ctx.bind();
            let _ = sys::cuModuleUnload(self.module);
        }
    }
}

/// The gather kernels' source (`kernels/gather.cu`): a module of its own,
/// so a [`crate::store::gather::Gatherer`] neither compiles nor loads the decode
/// kernels.
pub(crate) const GATHER_SOURCE: &str = include_str!("../kernels/gather.cu");

/// The kernels of `kernels/gather.cu`; each takes `(tab, out, tasks_at,
/// ntasks, nunits)` (see the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GatherKernel {
    /// Byte runs (fixed-width values, variable-width bytes); a warp per
    /// unit.
    Copy,
    /// Bitmaps (validity with NULL counts, boolean values); a warp per
    /// unit.
    Bits,
    /// Integers plus a per-run delta (offsets, dictionary keys); a warp per
    /// unit.
    Rebase,
    /// Source offsets at run boundaries; a thread per unit.
    Fetch,
}

/// The loaded gather module.
#[derive(Debug)]
pub(crate) struct GatherKernels {
    ctx: Arc<Context>,
    module: sys::CUmodule,
    copy: sys::CUfunction,
    bits: sys::CUfunction,
    rebase: sys::CUfunction,
    fetch: sys::CUfunction,
    /// Blocks of [`BLOCK`] threads resident per multiprocessor, per kernel
    /// (copy, bits, rebase, fetch): the grid of a grid-stride kernel, so
    /// no block waits for a second wave with its share of the work.
    resident: [u32; 4],
    pub sms: u32,
    pub info: ModuleInfo,
}

// SAFETY: module and function handles are plain driver handles, usable from
// any thread once the context is bound.
unsafe impl Send for GatherKernels {}
// SAFETY: as above; launching is thread-safe in the driver.
unsafe impl Sync for GatherKernels {}

/// Compiles `source` for the context's device (or reads it from the disk
/// cache) and loads it: the decode module ([`Kernels::load`]) and the
/// gather module. Also returns the device's multiprocessor count.
fn load_module(
    ctx: &Arc<Context>,
    source: &str,
) -> Result<(sys::CUmodule, ModuleInfo, u32), GpuError> {
    ctx.bind()?;
    let major = ctx.attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = ctx.attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let sms = ctx.attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let driver = crate::runtime::cuda::driver()?;
    let nv = crate::runtime::cuda::nvrtc_version()?;
    // A cubin from a newer NVRTC than the driver may use an ELF ABI the
    // driver cannot load; say so up front instead of failing obscurely.
    if nv.0 * 1000 > driver.version {
        return Err(GpuError::DriverTooOld {
            found: driver.version,
            need: nv.0 * 1000 + nv.1 * 10,
        });
    }
    let cache = nvrtc::cache_dir();
    // Two tries: a cached image the driver rejects is dropped and compiled
    // anew.
    for _ in 0..2 {
        let compiled = nvrtc::compile(source, (major, minor), cache.as_deref())?;
        let mut image = compiled.image.clone();
        if compiled.kind == nvrtc::ImageKind::Ptx {
            image.push(0);
        }
        let mut module = std::ptr::null_mut();
        // SAFETY: image is a complete cubin (or NUL-terminated PTX).
        let r = unsafe { sys::cuModuleLoadData(&mut module, image.as_ptr() as *const c_void) };
        if r != sys::CUresult::CUDA_SUCCESS && compiled.from_cache {
            if let Some(p) = &compiled.cache_path {
                let _ = std::fs::remove_file(p);
            }
            continue;
        }
        check(r, "cuModuleLoadData", ctx.ordinal)?;
        let info = ModuleInfo {
            arch: compiled.arch,
            compile_ms: compiled.compile_ms,
            from_cache: compiled.from_cache,
            image: compiled.kind,
        };
        return Ok((module, info, sms.max(1) as u32));
    }
    Err(GpuError::Cuda {
        call: "cuModuleLoadData",
        code: "the freshly compiled module was rejected".into(),
        device: ctx.ordinal,
    })
}

impl GatherKernels {
    /// Compiles (or reads from the cache) and loads `kernels/gather.cu` for
    /// the context's device.
    pub(crate) fn load(ctx: &Arc<Context>) -> Result<GatherKernels, GpuError> {
        let (module, info, sms) = load_module(ctx, GATHER_SOURCE)?;
        // Owns the module from here on, so an error below unloads it.
        let mut k = GatherKernels {
            ctx: ctx.clone(),
            module,
            copy: std::ptr::null_mut(),
            bits: std::ptr::null_mut(),
            rebase: std::ptr::null_mut(),
            fetch: std::ptr::null_mut(),
            resident: [8; 4],
            sms,
            info,
        };
        let get = |name: &std::ffi::CStr| -> Result<sys::CUfunction, GpuError> {
            let mut f = std::ptr::null_mut();
            check(
                // SAFETY: module loaded; name is NUL-terminated.
                unsafe { sys::cuModuleGetFunction(&mut f, module, name.as_ptr()) },
                "cuModuleGetFunction",
                ctx.ordinal,
            )?;
            Ok(f)
        };
        k.copy = get(c"gather_copy")?;
        k.bits = get(c"gather_bits")?;
        k.rebase = get(c"gather_rebase")?;
        k.fetch = get(c"gather_fetch")?;
        for (i, f) in [k.copy, k.bits, k.rebase, k.fetch].into_iter().enumerate() {
            let mut n = 0i32;
            check(
                // SAFETY: a function of the loaded module; out-pointer; no
                // dynamic shared memory.
                unsafe {
                    sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut n, f, BLOCK as i32, 0)
                },
                "cuOccupancyMaxActiveBlocksPerMultiprocessor",
                ctx.ordinal,
            )?;
            k.resident[i] = n.max(1) as u32;
        }
        Ok(k)
    }

    /// One launch of `kernel` over `nunits` work units of the `ntasks`
    /// tasks at byte `tasks_at` of the table `tab` (device address),
    /// writing into `out` (device address). Nothing is launched for no
    /// units.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &self,
        kernel: GatherKernel,
        s: &Stream,
        tab: u64,
        out: u64,
        tasks_at: u64,
        ntasks: u32,
        nunits: u64,
    ) -> Result<(), GpuError> {
        if nunits == 0 || ntasks == 0 {
            return Ok(());
        }
        let (f, threads, resident) = match kernel {
            GatherKernel::Copy => (self.copy, nunits.saturating_mul(32), self.resident[0]),
            GatherKernel::Bits => (self.bits, nunits.saturating_mul(32), self.resident[1]),
            GatherKernel::Rebase => (self.rebase, nunits.saturating_mul(32), self.resident[2]),
            GatherKernel::Fetch => (self.fetch, nunits, self.resident[3]),
        };
        // Grid-stride kernels: as many blocks as are resident at once.
        let grid = grid_for(threads, BLOCK, self.sms, resident);
        let (mut a0, mut a1, mut a2, mut a3, mut a4) = (tab, out, tasks_at, ntasks, nunits);
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
            &mut a2 as *mut _ as *mut c_void,
            &mut a3 as *mut _ as *mut c_void,
            &mut a4 as *mut _ as *mut c_void,
        ];
        // SAFETY: every gather kernel takes exactly (u8*, u8*, u64, u32,
        // u64), passed by pointer in order; the caller guarantees that the
        // table and output hold what the tasks describe.
        check(
            unsafe {
                sys::cuLaunchKernel(
                    f,
                    grid,
                    1,
                    1,
                    BLOCK,
                    1,
                    1,
                    0,
                    s.raw,
                    args.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            },
            "cuLaunchKernel",
            self.ctx.ordinal,
        )
    }
}

impl Drop for GatherKernels {
    fn drop(&mut self) {
        // SAFETY: the module is ours; its owner (the gatherer) synchronizes
        // its stream before dropping it.
        unsafe {
            let _ = self.ctx.bind();
            let _ = sys::cuModuleUnload(self.module);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_layout_matches_the_cuda_struct() {
        // 10 pointers + 8 32-bit fields, no padding: 112 bytes.
        assert_eq!(size_of::<Task>(), 112);
        assert_eq!(align_of::<Task>(), 8);
    }

    #[test]
    fn grids() {
        assert_eq!(grid_for(0, 256, 132, 8), 1);
        assert_eq!(grid_for(1, 256, 132, 8), 1);
        assert_eq!(grid_for(256, 256, 132, 8), 1);
        assert_eq!(grid_for(257, 256, 132, 8), 2);
        assert_eq!(grid_for(100_000_000, 256, 132, 8), 132 * 8);
        assert_eq!(grid_for(10, 256, 0, 0), 1);
    }

    /// The gather module compiles when an NVRTC library can be found (no
    /// GPU needed); otherwise says why it skipped.
    #[test]
    fn gather_kernels_compile_with_nvrtc_when_available() {
        if let Err(e) = crate::runtime::cuda::nvrtc_lib() {
            eprintln!("skipped: {e}");
            return;
        }
        match nvrtc::compile(GATHER_SOURCE, (9, 0), None) {
            Ok(c) => assert_eq!(c.kind, nvrtc::ImageKind::Cubin),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn scan_level_counts() {
        assert_eq!(scan_levels(0), vec![1]);
        assert_eq!(scan_levels(2048), vec![1]);
        assert_eq!(scan_levels(2049), vec![2, 1]);
        assert_eq!(scan_levels(2048 * 2048), vec![2048, 1]);
        assert_eq!(scan_levels(2048 * 2048 + 1), vec![2049, 2, 1]);
    }
}

//! Finding and loading the CUDA libraries, and thin RAII wrappers over the
//! driver API calls the decoder uses.
//!
//! cudarc is built with `dynamic-loading`: each of its functions resolves its
//! symbol on first use and *panics* when the library cannot be opened. So
//! nothing here calls into cudarc before `driver` (or `nvrtc_lib`) has
//! found the library itself: it opens it by absolute path with
//! `RTLD_GLOBAL` and keeps the handle for the life of the process. cudarc
//! then opens the same library by its soname (`libcuda.so.1`,
//! `libnvrtc.so.13`), which the dynamic loader answers with the object
//! already loaded, whatever `LD_LIBRARY_PATH` says. Users never have to set
//! it.

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys;

use crate::runtime::error::GpuError;

/// Oldest driver this crate works with: stream-ordered allocation
/// (`cuMemAllocAsync`) arrived in CUDA 11.2.
pub const MIN_DRIVER_VERSION: i32 = 11020;

/// A library opened by absolute path and kept open for the process.
#[derive(Debug)]
pub(crate) struct LoadedLib {
    pub path: String,
    // Never dropped: cudarc's symbols point into it.
    _lib: libloading::Library,
}

/// Where the driver was found and its version.
#[derive(Debug, Clone)]
pub(crate) struct DriverInfo {
    pub path: String,
    /// `cuDriverGetVersion`, e.g. 13000.
    pub version: i32,
}

/// Opens `path` with `RTLD_NOW | RTLD_GLOBAL`.
fn open_global(path: &Path) -> Result<libloading::Library, String> {
    // SAFETY: loading a shared library runs its initializers; the CUDA
    // libraries are designed to be loaded this way.
    unsafe {
        libloading::os::unix::Library::open(
            Some(path),
            libloading::os::unix::RTLD_NOW | libc::RTLD_GLOBAL,
        )
    }
    .map(Into::into)
    .map_err(|e| e.to_string())
}

/// Directories named by a `:`-separated environment variable.
fn env_dirs(var: &str) -> Vec<PathBuf> {
    std::env::var_os(var)
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default()
}

/// Sub-directories of `parent` whose name starts with `prefix`, newest
/// (lexically last) first: `/usr/local/cuda-13.0` before `cuda-12.4`.
fn dirs_with_prefix(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v.reverse();
    v
}

/// Where a driver library is looked for, in order, after the dynamic
/// loader's own search.
fn driver_dirs() -> Vec<PathBuf> {
    let mut d = env_dirs("LD_LIBRARY_PATH");
    for s in [
        "/usr/local/nvidia/lib64",
        "/usr/local/nvidia/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/lib/wsl/lib",
        "/run/opengl-driver/lib",
        // Forward-compatibility driver of a toolkit: last, it only works on
        // data-center GPUs.
        "/usr/local/cuda/compat",
    ] {
        d.push(PathBuf::from(s));
    }
    d
}

/// Where NVRTC and cuFile are looked for: CUDA toolkits in the usual places
/// and the pip wheels (`nvidia-cuda-nvrtc`) of Python installations.
fn toolkit_lib_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(v) = std::env::var_os(var) {
            roots.push(PathBuf::from(v));
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    roots.extend(dirs_with_prefix(Path::new("/usr/local"), "cuda-"));
    roots.push(PathBuf::from("/opt/cuda"));
    let mut d = env_dirs("LD_LIBRARY_PATH");
    for r in roots {
        d.push(r.join("lib64"));
        d.push(r.join("targets/x86_64-linux/lib"));
        d.push(r.join("targets/sbsa-linux/lib"));
        d.push(r.join("lib"));
    }
    d.push(PathBuf::from("/usr/lib/x86_64-linux-gnu"));
    d.push(PathBuf::from("/usr/lib64"));
    // Python wheels: site-packages/nvidia/{cu13,cuda_nvrtc,cufile}/lib.
    let mut sites: Vec<PathBuf> = Vec::new();
    for base in ["/usr/local/lib", "/usr/lib", "/opt/conda/lib"] {
        for py in dirs_with_prefix(Path::new(base), "python3") {
            sites.push(py.join("dist-packages"));
            sites.push(py.join("site-packages"));
        }
    }
    for venv_parent in dirs_with_prefix(Path::new("/opt"), "") {
        for venv in [venv_parent.join(".venv"), venv_parent.clone()] {
            for py in dirs_with_prefix(&venv.join("lib"), "python3") {
                sites.push(py.join("site-packages"));
            }
        }
    }
    for s in sites {
        for pkg in ["cu13", "cu12", "cuda_nvrtc", "cufile"] {
            d.push(s.join("nvidia").join(pkg).join("lib"));
        }
    }
    d
}

/// Files in `dir` named `<stem>.so.<version>` (no other dots before
/// `.so`), highest major version first.
fn versioned_libs(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let prefix = format!("{stem}.so.");
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ver = name.strip_prefix(&prefix)?;
            let major: u32 = ver.split('.').next()?.parse().ok()?;
            Some((major, e.path()))
        })
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v.into_iter().map(|(_, p)| p).collect()
}

fn looked_in(dirs: &[PathBuf], by_name: &[&str]) -> String {
    let mut parts: Vec<String> = by_name
        .iter()
        .map(|n| format!("{n} (loader path)"))
        .collect();
    parts.extend(dirs.iter().map(|d| d.display().to_string()));
    parts.join(", ")
}

static DRIVER_LIB: OnceLock<Result<LoadedLib, (String, Option<String>)>> = OnceLock::new();

/// Opens the first candidate that loads (bare names go through the
/// loader's own search; absolute paths that do not exist are skipped), or
/// returns why the last one that existed failed.
fn open_first(cands: Vec<PathBuf>) -> Result<LoadedLib, Option<String>> {
    let mut last_err = None;
    for c in cands {
        if c.is_absolute() && !c.exists() {
            continue;
        }
        match open_global(&c) {
            Ok(lib) => {
                return Ok(LoadedLib {
                    path: c.display().to_string(),
                    _lib: lib,
                })
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err)
}

/// Finds and opens `libcuda.so.1`.
fn load_driver_lib() -> Result<LoadedLib, (String, Option<String>)> {
    let dirs = driver_dirs();
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("GPUPGPARSER_LIBCUDA") {
        cands.push(PathBuf::from(p));
    }
    // The loader's own search (ld.so.cache) first: that is the driver the
    // system is configured with.
    cands.push(PathBuf::from("libcuda.so.1"));
    for d in &dirs {
        cands.push(d.join("libcuda.so.1"));
    }
    open_first(cands).map_err(|last_err| (looked_in(&dirs, &["libcuda.so.1"]), last_err))
}

static DRIVER: OnceLock<Result<DriverInfo, InitFailure>> = OnceLock::new();

/// A failed initialization, kept so that every later call reports it again
/// without retrying.
#[derive(Debug, Clone)]
enum InitFailure {
    NoDriver(String, Option<String>),
    NoDevice(Option<String>),
    TooOld(i32, i32),
    Cuda(&'static str, String),
}

impl InitFailure {
    fn to_error(&self) -> GpuError {
        match self.clone() {
            InitFailure::NoDriver(looked_in, detail) => GpuError::NoDriver { looked_in, detail },
            InitFailure::NoDevice(d) => GpuError::NoDevice(d),
            InitFailure::TooOld(found, need) => GpuError::DriverTooOld { found, need },
            InitFailure::Cuda(call, code) => GpuError::Cuda {
                call,
                code,
                device: 0,
            },
        }
    }
}

/// Loads the driver, checks its version and runs `cuInit`, once per
/// process. Every CUDA call in this crate happens after this succeeded.
pub(crate) fn driver() -> Result<&'static DriverInfo, GpuError> {
    DRIVER
        .get_or_init(init_driver)
        .as_ref()
        .map_err(InitFailure::to_error)
}

fn init_driver() -> Result<DriverInfo, InitFailure> {
    let lib = DRIVER_LIB.get_or_init(load_driver_lib);
    let lib = match lib {
        Ok(l) => l,
        Err((looked, detail)) => return Err(InitFailure::NoDriver(looked.clone(), detail.clone())),
    };
    // SAFETY: the probe only opens libraries by name; ours is loaded, so
    // cudarc finds it through its soname.
    if !unsafe { sys::is_culib_present() } {
        return Err(InitFailure::NoDriver(
            lib.path.clone(),
            Some("loaded, but not visible under the soname libcuda.so.1".into()),
        ));
    }
    let mut version = 0i32;
    // SAFETY: the library is present (checked above); plain out-pointer.
    let r = unsafe { sys::cuDriverGetVersion(&mut version) };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(InitFailure::Cuda("cuDriverGetVersion", describe(r)));
    }
    if version < MIN_DRIVER_VERSION {
        return Err(InitFailure::TooOld(version, MIN_DRIVER_VERSION));
    }
    // SAFETY: cuInit may be called any number of times.
    let r = unsafe { sys::cuInit(0) };
    match r {
        sys::CUresult::CUDA_SUCCESS => {}
        sys::CUresult::CUDA_ERROR_NO_DEVICE => return Err(InitFailure::NoDevice(None)),
        sys::CUresult::CUDA_ERROR_STUB_LIBRARY => {
            return Err(InitFailure::NoDriver(
                lib.path.clone(),
                Some("this libcuda is the toolkit's stub, not a driver".into()),
            ))
        }
        sys::CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
        | sys::CUresult::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE => {
            return Err(InitFailure::NoDriver(
                lib.path.clone(),
                Some(format!("cuInit: {}", describe(r))),
            ))
        }
        other => return Err(InitFailure::Cuda("cuInit", describe(other))),
    }
    Ok(DriverInfo {
        path: lib.path.clone(),
        version,
    })
}

/// The driver's name and text for an error code.
pub(crate) fn describe(r: sys::CUresult) -> String {
    let mut name: *const std::ffi::c_char = std::ptr::null();
    let mut text: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: only called after the driver library is loaded; both calls
    // write a pointer to a static string or leave ours null.
    unsafe {
        let _ = sys::cuGetErrorName(r, &mut name);
        let _ = sys::cuGetErrorString(r, &mut text);
    }
    let s = |p: *const std::ffi::c_char| {
        if p.is_null() {
            None
        } else {
            // SAFETY: the driver returns NUL-terminated static strings.
            Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        }
    };
    match (s(name), s(text)) {
        (Some(n), Some(t)) => format!("{n} ({t})"),
        (Some(n), None) => n,
        _ => format!("CUresult {}", r as i32),
    }
}

/// Turns a driver result into `Result`, naming the call and device. Out of
/// memory gets its own variant so callers can fall back.
pub(crate) fn check(r: sys::CUresult, call: &'static str, device: usize) -> Result<(), GpuError> {
    match r {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Err(GpuError::OutOfMemory { device, bytes: 0 }),
        other => Err(GpuError::Cuda {
            call,
            code: describe(other),
            device,
        }),
    }
}

static NVRTC_LIB: OnceLock<Result<LoadedLib, String>> = OnceLock::new();

/// Finds and opens NVRTC (and its builtins library beside it, which NVRTC
/// itself opens by soname at compile time). Needs no driver: kernels can be
/// compiled to cubin on a machine without a GPU.
pub(crate) fn nvrtc_lib() -> Result<&'static LoadedLib, GpuError> {
    NVRTC_LIB
        .get_or_init(load_nvrtc)
        .as_ref()
        .map_err(|log| GpuError::Nvrtc { log: log.clone() })
}

fn load_nvrtc() -> Result<LoadedLib, String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("GPUPGPARSER_NVRTC") {
        let p = PathBuf::from(p);
        if p.is_dir() {
            dirs.push(p);
        } else {
            files.push(p);
        }
    }
    dirs.extend(toolkit_lib_dirs());
    for d in &dirs {
        files.extend(versioned_libs(d, "libnvrtc"));
    }
    let mut last_err = None;
    for f in files {
        if !f.exists() {
            continue;
        }
        // NVRTC opens libnvrtc-builtins.so.<major>.<minor> by name while
        // compiling; loading it first from the same directory makes that
        // name resolve without LD_LIBRARY_PATH.
        let mut builtins = None;
        if let Some(dir) = f.parent() {
            if let Some(b) = versioned_libs(dir, "libnvrtc-builtins").into_iter().next() {
                builtins = open_global(&b).ok();
            }
        }
        match open_global(&f) {
            Ok(lib) => {
                // Keep the builtins loaded for the process too.
                std::mem::forget(builtins);
                // SAFETY: cudarc probes by soname; ours is loaded.
                if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                    last_err = Some(format!(
                        "{} loaded but its soname is not one cudarc knows",
                        f.display()
                    ));
                    continue;
                }
                return Ok(LoadedLib {
                    path: f.display().to_string(),
                    _lib: lib,
                });
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(format!(
        "no NVRTC library (libnvrtc.so.N) found (looked in: {}){}",
        looked_in(&dirs, &[]),
        last_err.map(|e| format!(": {e}")).unwrap_or_default()
    ))
}

/// NVRTC's version as (major, minor).
pub(crate) fn nvrtc_version() -> Result<(i32, i32), GpuError> {
    nvrtc_lib()?;
    let (mut maj, mut min) = (0, 0);
    // SAFETY: library loaded above; plain out-pointers.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut maj, &mut min) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(GpuError::Nvrtc {
            log: format!("nvrtcVersion failed: {r:?}"),
        });
    }
    Ok((maj, min))
}

/// Opens cuFile (`libcufile.so.0`) for GPUDirect Storage:
/// `GPUPGPARSER_CUFILE=DIR_OR_FILE` first, then the loader's search, then
/// the toolkit and pip-wheel directories.
pub(crate) fn open_cufile() -> Result<LoadedLib, String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("GPUPGPARSER_CUFILE") {
        let p = PathBuf::from(p);
        if p.is_dir() {
            cands.extend(versioned_libs(&p, "libcufile"));
            dirs.push(p);
        } else {
            cands.push(p);
        }
    }
    cands.push(PathBuf::from("libcufile.so.0"));
    dirs.extend(toolkit_lib_dirs());
    for d in &dirs {
        cands.extend(versioned_libs(d, "libcufile"));
    }
    open_first(cands).map_err(|last| {
        format!(
            "libcufile.so.0 not found (looked in: {}){}",
            looked_in(&dirs, &["libcufile.so.0"]),
            last.map(|e| format!(": {e}")).unwrap_or_default()
        )
    })
}

impl LoadedLib {
    /// A symbol of the library.
    ///
    /// # Safety
    /// `T` must be the exact function-pointer type of the symbol.
    pub(crate) unsafe fn sym<T: Copy>(&self, name: &[u8]) -> Result<T, String> {
        // SAFETY: the caller guarantees `T` is the symbol's type; the
        // library outlives the returned pointer (it lives with `self`,
        // which its users hold).
        unsafe { self._lib.get::<T>(name) }
            .map(|s| *s)
            .map_err(|e| e.to_string())
    }
}

/// Device memory held through one [`Context`] (current and peak), so a
/// decoder can report its own peak without the driver's global view.
#[derive(Debug, Default)]
pub(crate) struct MemTracker {
    current: std::sync::atomic::AtomicU64,
    peak: std::sync::atomic::AtomicU64,
}

impl MemTracker {
    fn add(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.current.fetch_add(bytes, Relaxed) + bytes;
        self.peak.fetch_max(now, Relaxed);
    }

    fn sub(&self, bytes: u64) {
        self.current
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Most bytes held at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A device's primary context, retained for as long as this lives.
#[derive(Debug)]
pub(crate) struct Context {
    pub ordinal: usize,
    pub dev: sys::CUdevice,
    ctx: sys::CUcontext,
    pub mem: MemTracker,
}

// SAFETY: a CUcontext handle may be used from any thread once made current
// there (`bind`), which every user of this type does first.
unsafe impl Send for Context {}
// SAFETY: as above; the driver API is thread-safe.
unsafe impl Sync for Context {}

impl Context {
    /// Retains device `ordinal`'s primary context (shared with every other
    /// user of the device in this process, e.g. PyTorch).
    pub(crate) fn new(ordinal: usize) -> Result<Arc<Context>, GpuError> {
        driver()?;
        let mut count = 0;
        check(
            // SAFETY: driver initialized; out-pointer.
            unsafe { sys::cuDeviceGetCount(&mut count) },
            "cuDeviceGetCount",
            ordinal,
        )?;
        if ordinal >= count.max(0) as usize {
            return Err(GpuError::NoDevice(Some(format!(
                "device {ordinal} requested, {count} present"
            ))));
        }
        let mut dev = 0;
        check(
            // SAFETY: ordinal checked above.
            unsafe { sys::cuDeviceGet(&mut dev, ordinal as i32) },
            "cuDeviceGet",
            ordinal,
        )?;
        // Waiting threads sleep instead of spinning: the decoder threads
        // share the host's cores with the PostgreSQL backends producing the
        // data, and a spinning wait per thread would take cores from them.
        // Refused (and harmless) when another user of the device in this
        // process already activated the primary context with its own flags.
        // SAFETY: valid device handle.
        let _ = unsafe {
            sys::cuDevicePrimaryCtxSetFlags_v2(
                dev,
                sys::CUctx_flags_enum::CU_CTX_SCHED_BLOCKING_SYNC as u32,
            )
        };
        let mut ctx = std::ptr::null_mut();
        check(
            // SAFETY: valid device handle.
            unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, dev) },
            "cuDevicePrimaryCtxRetain",
            ordinal,
        )?;
        let c = Context {
            ordinal,
            dev,
            ctx,
            mem: MemTracker::default(),
        };
        c.bind()?;
        Ok(Arc::new(c))
    }

    /// Makes the context current on the calling thread (cheap when it
    /// already is). Every public entry point calls it first because a
    /// decoder may move between threads.
    pub(crate) fn bind(&self) -> Result<(), GpuError> {
        // SAFETY: the context is retained for our lifetime.
        check(
            unsafe { sys::cuCtxSetCurrent(self.ctx) },
            "cuCtxSetCurrent",
            self.ordinal,
        )
    }

    /// Binds the context and waits until all its work (every stream's) has
    /// finished.
    pub(crate) fn synchronize(&self) -> Result<(), GpuError> {
        self.bind()?;
        // SAFETY: the context is bound; no pointers are passed.
        check(
            unsafe { sys::cuCtxSynchronize() },
            "cuCtxSynchronize",
            self.ordinal,
        )
    }

    /// A device attribute.
    pub(crate) fn attr(&self, a: sys::CUdevice_attribute) -> Result<i32, GpuError> {
        device_attr(self.dev, a, self.ordinal)
    }
}

pub(crate) fn device_attr(
    dev: sys::CUdevice,
    a: sys::CUdevice_attribute,
    ordinal: usize,
) -> Result<i32, GpuError> {
    let mut v = 0;
    check(
        // SAFETY: valid device handle, out-pointer.
        unsafe { sys::cuDeviceGetAttribute(&mut v, a, dev) },
        "cuDeviceGetAttribute",
        ordinal,
    )?;
    Ok(v)
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: balances the retain in `new`.
        unsafe {
            let _ = sys::cuDevicePrimaryCtxRelease_v2(self.dev);
        }
    }
}

/// A non-blocking stream.
#[derive(Debug)]
pub(crate) struct Stream {
    pub raw: sys::CUstream,
    ctx: Arc<Context>,
}

// SAFETY: stream handles are usable from any thread with the context bound.
unsafe impl Send for Stream {}

impl Stream {
    pub(crate) fn new(ctx: &Arc<Context>) -> Result<Stream, GpuError> {
        let mut raw = std::ptr::null_mut();
        check(
            // SAFETY: context bound by the caller; out-pointer.
            unsafe {
                sys::cuStreamCreate(&mut raw, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32)
            },
            "cuStreamCreate",
            ctx.ordinal,
        )?;
        Ok(Stream {
            raw,
            ctx: ctx.clone(),
        })
    }

    pub(crate) fn sync(&self) -> Result<(), GpuError> {
        // SAFETY: valid stream.
        check(
            unsafe { sys::cuStreamSynchronize(self.raw) },
            "cuStreamSynchronize",
            self.ctx.ordinal,
        )
    }

    /// Makes later work on this stream wait for `ev`.
    pub(crate) fn wait(&self, ev: &Event) -> Result<(), GpuError> {
        // SAFETY: valid handles.
        check(
            unsafe { sys::cuStreamWaitEvent(self.raw, ev.raw, 0) },
            "cuStreamWaitEvent",
            self.ctx.ordinal,
        )
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: the stream is ours; pending work completes first.
        unsafe {
            let _ = self.ctx.bind();
            let _ = sys::cuStreamSynchronize(self.raw);
            let _ = sys::cuStreamDestroy_v2(self.raw);
        }
    }
}

/// A timing event.
#[derive(Debug)]
pub(crate) struct Event {
    pub raw: sys::CUevent,
    ordinal: usize,
}

// SAFETY: event handles are usable from any thread with the context bound.
unsafe impl Send for Event {}

impl Event {
    pub(crate) fn new(ctx: &Context) -> Result<Event, GpuError> {
        let mut raw = std::ptr::null_mut();
        check(
            // SAFETY: context bound; out-pointer.
            unsafe { sys::cuEventCreate(&mut raw, sys::CUevent_flags::CU_EVENT_DEFAULT as u32) },
            "cuEventCreate",
            ctx.ordinal,
        )?;
        Ok(Event {
            raw,
            ordinal: ctx.ordinal,
        })
    }

    pub(crate) fn record(&self, s: &Stream) -> Result<(), GpuError> {
        // SAFETY: valid handles of the same context.
        check(
            unsafe { sys::cuEventRecord(self.raw, s.raw) },
            "cuEventRecord",
            self.ordinal,
        )
    }

    /// Milliseconds from `start` to `self` (both completed).
    pub(crate) fn since(&self, start: &Event) -> Result<f64, GpuError> {
        let mut ms = 0f32;
        check(
            // SAFETY: valid events.
            unsafe { sys::cuEventElapsedTime_v2(&mut ms, start.raw, self.raw) },
            "cuEventElapsedTime",
            self.ordinal,
        )?;
        Ok(f64::from(ms))
    }

    pub(crate) fn sync(&self) -> Result<(), GpuError> {
        // SAFETY: valid event.
        check(
            unsafe { sys::cuEventSynchronize(self.raw) },
            "cuEventSynchronize",
            self.ordinal,
        )
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: ours.
        unsafe {
            let _ = sys::cuEventDestroy_v2(self.raw);
        }
    }
}

/// How a device buffer was allocated, which decides how it is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocKind {
    /// `cuMemAlloc`: outlives any stream, may later be exported through
    /// CUDA IPC. Used for device-resident output columns.
    Plain,
    /// `cuMemAllocAsync` from the device's default pool, ordered on a
    /// stream: transient scratch and outputs that are copied to the host.
    Pool,
}

/// Device memory, freed on drop.
#[derive(Debug)]
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    kind: AllocKind,
    /// Stream a pool allocation is freed on.
    stream: sys::CUstream,
    ctx: Arc<Context>,
    /// For a view into a larger allocation (a slab): the allocation, which
    /// is freed when its last view goes.
    owner: Option<Arc<DeviceBuffer>>,
}

// SAFETY: a device pointer is plain data; freeing binds the context first.
unsafe impl Send for DeviceBuffer {}
// SAFETY: shared references only expose the pointer value.
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    /// Allocates `bytes` (at least 1, so every buffer has an address).
    pub(crate) fn alloc(
        ctx: &Arc<Context>,
        bytes: usize,
        kind: AllocKind,
        stream: &Stream,
    ) -> Result<DeviceBuffer, GpuError> {
        let n = bytes.max(1);
        let mut ptr: sys::CUdeviceptr = 0;
        // SAFETY: context bound by the caller; out-pointer.
        let (r, call) = unsafe {
            match kind {
                AllocKind::Plain => (sys::cuMemAlloc_v2(&mut ptr, n), "cuMemAlloc"),
                AllocKind::Pool => (
                    sys::cuMemAllocAsync(&mut ptr, n, stream.raw),
                    "cuMemAllocAsync",
                ),
            }
        };
        match check(r, call, ctx.ordinal) {
            Err(GpuError::OutOfMemory { device, .. }) => Err(GpuError::OutOfMemory {
                device,
                bytes: n as u64,
            }),
            Err(e) => Err(e),
            Ok(()) => {
                ctx.mem.add(n as u64);
                Ok(DeviceBuffer {
                    ptr,
                    bytes,
                    kind,
                    stream: stream.raw,
                    ctx: ctx.clone(),
                    owner: None,
                })
            }
        }
    }

    /// `len` bytes at `offset` of `slab`, kept alive by the view: many
    /// outputs of a chunk share one allocation, because each `cuMemAlloc`
    /// and `cuMemFree` costs tens of microseconds (and a free synchronizes
    /// the device).
    pub(crate) fn view(slab: &Arc<DeviceBuffer>, offset: usize, len: usize) -> DeviceBuffer {
        DeviceBuffer {
            ptr: slab.ptr + offset as u64,
            bytes: len,
            kind: slab.kind,
            stream: slab.stream,
            ctx: slab.ctx.clone(),
            owner: Some(slab.clone()),
        }
    }

    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Bytes requested.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// How it was allocated.
    pub fn kind(&self) -> AllocKind {
        self.kind
    }

    /// Device ordinal.
    pub fn device(&self) -> usize {
        self.ctx.ordinal
    }

    /// The context the buffer was allocated in (bound before driver calls
    /// on its address, e.g. exporting it through CUDA IPC).
    pub(crate) fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Copies the buffer into `dst` (at most `dst.len()` bytes),
    /// synchronously. For tests and small reads; the decoder batches its
    /// copies through pinned memory instead.
    pub fn copy_to_host(&self, dst: &mut [u8]) -> Result<(), GpuError> {
        self.ctx.bind()?;
        let n = dst.len().min(self.bytes);
        if n == 0 {
            return Ok(());
        }
        // SAFETY: `dst` has n bytes; the buffer has at least n.
        check(
            unsafe { sys::cuMemcpyDtoH_v2(dst.as_mut_ptr() as *mut c_void, self.ptr, n) },
            "cuMemcpyDtoH",
            self.ctx.ordinal,
        )
    }
}

impl DeviceBuffer {
    /// Copies `rows` runs of `width` bytes, `pitch` bytes apart from byte
    /// `offset` of the buffer on, packed into the first `rows * width`
    /// bytes of `dst`, synchronously (one `cuMemcpy2D`): the headers of
    /// pages read into device memory, say.
    pub fn copy_strided_to_host(
        &self,
        offset: usize,
        pitch: usize,
        width: usize,
        rows: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError> {
        if rows == 0 || width == 0 {
            return Ok(());
        }
        let end = (rows - 1)
            .checked_mul(pitch)
            .and_then(|v| v.checked_add(offset))
            .and_then(|v| v.checked_add(width));
        let fits = width <= pitch
            && end.is_some_and(|e| e <= self.bytes)
            && rows.checked_mul(width).is_some_and(|n| n <= dst.len());
        if !fits {
            return Err(GpuError::Layout {
                column: "(device copy)".into(),
                what: format!(
                    "{rows} runs of {width} bytes every {pitch} from offset {offset} do not fit a buffer of {} bytes or a destination of {}",
                    self.bytes,
                    dst.len()
                ),
            });
        }
        self.ctx.bind()?;
        let copy = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: self.ptr + offset as u64,
            srcArray: std::ptr::null_mut(),
            srcPitch: pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_HOST,
            dstHost: dst.as_mut_ptr() as *mut c_void,
            dstDevice: 0,
            dstArray: std::ptr::null_mut(),
            dstPitch: width,
            WidthInBytes: width,
            Height: rows,
        };
        // SAFETY: source and destination ranges checked above; the copy is
        // synchronous.
        check(
            unsafe { sys::cuMemcpy2D_v2(&copy) },
            "cuMemcpy2D",
            self.ctx.ordinal,
        )
    }

    /// Copies `dst.len()` bytes from byte `offset` of the buffer,
    /// synchronously.
    pub fn copy_range_to_host(&self, offset: usize, dst: &mut [u8]) -> Result<(), GpuError> {
        self.copy_strided_to_host(offset, dst.len(), dst.len(), 1, dst)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.owner.is_some() {
            // A view: the slab is freed when its last view is dropped.
            return;
        }
        self.ctx.mem.sub(self.bytes.max(1) as u64);
        // SAFETY: ours; a pool buffer is freed in order on its stream, which
        // outlives it (the decoder frees scratch before its streams).
        unsafe {
            let _ = self.ctx.bind();
            let _ = match self.kind {
                AllocKind::Plain => sys::cuMemFree_v2(self.ptr),
                AllocKind::Pool => sys::cuMemFreeAsync(self.ptr, self.stream),
            };
        }
    }
}

/// Keeps freed pool memory in the pool instead of returning it to the
/// driver at every synchronization, so steady-state chunks allocate at no
/// cost; the pool still never holds more than the largest chunk needed.
pub(crate) fn keep_pool_memory(ctx: &Context) -> Result<(), GpuError> {
    let mut pool = std::ptr::null_mut();
    check(
        // SAFETY: valid device; out-pointer.
        unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.dev) },
        "cuDeviceGetDefaultMemPool",
        ctx.ordinal,
    )?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: attribute takes a u64 (cuuint64_t).
    check(
        unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut c_void,
            )
        },
        "cuMemPoolSetAttribute",
        ctx.ordinal,
    )
}

/// Trims the default pool back to nothing (used when the decoder is
/// dropped, so idle device memory goes back to other users).
pub(crate) fn trim_pool(ctx: &Context) {
    let mut pool = std::ptr::null_mut();
    // SAFETY: valid device; out-pointer; trim is always safe.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.dev) == sys::CUresult::CUDA_SUCCESS {
            let _ = sys::cuMemPoolTrimTo(pool, 0);
        }
    }
}

/// Free and total device memory of the current context's device.
pub(crate) fn mem_info(ordinal: usize) -> Result<(usize, usize), GpuError> {
    let (mut free, mut total) = (0usize, 0usize);
    check(
        // SAFETY: context bound by the caller; out-pointers.
        unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) },
        "cuMemGetInfo",
        ordinal,
    )?;
    Ok((free, total))
}

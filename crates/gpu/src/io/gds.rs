//! GPUDirect Storage: reading files straight into device memory with
//! cuFile (`libcufile.so.0`), loaded at run time like every other CUDA
//! library of this crate (nothing is needed to build, and a machine without
//! cuFile gets an error value, never a panic).
//!
//! - [`GdsDriver`]: the loaded library and the opened cuFile driver
//!   (`cuFileDriverOpen`), shared by every clone and every file or buffer
//!   made from it; the driver is closed when the last user in the process
//!   goes.
//! - [`GdsFile`]: a file opened with `O_DIRECT` and registered
//!   (`cuFileHandleRegister`); [`GdsFile::read`] reads it into device
//!   memory (`cuFileRead`), looping on short reads.
//! - [`GdsBuffer`]: device memory (`cuMemAlloc`), registered with
//!   `cuFileBufRegister` when cuFile accepts it (faster, optional).
//! - [`gds_open`]: one call that says whether a file can be read through
//!   cuFile: a ready [`GdsFile`], or the reason in one line.
//!
//! Alignment: files are opened with `O_DIRECT`, so every read's file
//! offset, length and device offset must be multiples of [`GDS_ALIGN`]
//! (4096). PostgreSQL heap pages (8 KiB at block-aligned offsets) always
//! are. A read that reaches the end of the file returns the bytes that were
//! there.
//!
//! With `"allow_compat_mode": true` in the cuFile configuration (the file
//! named by `CUFILE_ENV_PATH_JSON`, default `/etc/cufile.json`, read when
//! the driver opens), cuFile reads files its GDS path cannot serve with
//! POSIX reads and a copy; [`GdsFile::mode`] says what can be known about
//! which path a file takes.

use std::ffi::{c_int, c_void};
use std::fmt::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use thiserror::Error;

use crate::runtime::cuda::{self, AllocKind, Context, DeviceBuffer, LoadedLib, Stream};
use crate::runtime::error::GpuError;

/// Alignment, in bytes, of every file offset, length and device offset a
/// [`GdsFile`] read accepts (`O_DIRECT`'s logical block size).
pub const GDS_ALIGN: u64 = 4096;

/// Largest single `cuFileRead` request; longer reads are split.
const MAX_READ_CALL: usize = 1 << 30;

// ---------------------------------------------------------------------------
// FFI: the cufile.h types and functions this crate uses.

/// `CUfileDescr_t` (cufile.h): handle type, a union of fd (Linux) and
/// pointer (Windows), file-system operations (NULL for a plain fd).
#[repr(C)]
pub(crate) struct CuFileDescr {
    pub kind: u32,
    pub handle: CuFileDescrHandle,
    pub fs_ops: *const c_void,
}

/// The union in `CUfileDescr_t`.
#[repr(C)]
pub(crate) union CuFileDescrHandle {
    pub fd: c_int,
    pub handle: *mut c_void,
}

/// `CU_FILE_HANDLE_TYPE_OPAQUE_FD`.
const HANDLE_TYPE_OPAQUE_FD: u32 = 1;

/// `CUfileError_t`: the cuFile error and, for CUDA failures, the CUresult.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CuFileError {
    pub err: i32,
    pub cu_err: i32,
}

type VoidFn = unsafe extern "C" fn() -> CuFileError;
type HandleRegisterFn = unsafe extern "C" fn(*mut *mut c_void, *mut CuFileDescr) -> CuFileError;
type HandleDeregisterFn = unsafe extern "C" fn(*mut c_void);
type BufRegisterFn = unsafe extern "C" fn(*const c_void, usize, c_int) -> CuFileError;
type BufDeregisterFn = unsafe extern "C" fn(*const c_void) -> CuFileError;
type ReadFn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, i64, i64) -> isize;
type GetPropsFn = unsafe extern "C" fn(*mut c_void) -> CuFileError;
type GetVersionFn = unsafe extern "C" fn(*mut c_int) -> CuFileError;

/// The cuFile entry points, resolved once per process.
struct CuFileApi {
    lib: LoadedLib,
    driver_open: VoidFn,
    driver_close: VoidFn,
    handle_register: HandleRegisterFn,
    handle_deregister: HandleDeregisterFn,
    buf_register: BufRegisterFn,
    buf_deregister: BufDeregisterFn,
    read: ReadFn,
    /// `cuFileDriverGetProperties` (all versions have it; optional anyway).
    get_properties: Option<GetPropsFn>,
    /// `cuFileGetVersion` (CUDA 12.3+).
    get_version: Option<GetVersionFn>,
}

static API: OnceLock<Result<CuFileApi, GdsError>> = OnceLock::new();

fn api() -> Result<&'static CuFileApi, GdsError> {
    API.get_or_init(load_api)
        .as_ref()
        .map_err(GdsError::clone_init)
}

/// Where libcufile was loaded from, once it has been.
pub(crate) fn loaded_library_path() -> Option<&'static str> {
    match API.get() {
        Some(Ok(a)) => Some(a.lib.path.as_str()),
        _ => None,
    }
}

fn load_api() -> Result<CuFileApi, GdsError> {
    let lib = cuda::open_cufile().map_err(GdsError::NoLibrary)?;
    let missing = |symbol: &'static str| GdsError::MissingSymbol {
        library: lib.path.clone(),
        symbol,
    };
    // SAFETY: each type is the exact signature of the symbol in cufile.h.
    unsafe {
        let driver_open = lib
            .sym::<VoidFn>(b"cuFileDriverOpen\0")
            .map_err(|_| missing("cuFileDriverOpen"))?;
        let driver_close = lib
            .sym::<VoidFn>(b"cuFileDriverClose_v2\0")
            .or_else(|_| lib.sym::<VoidFn>(b"cuFileDriverClose\0"))
            .map_err(|_| missing("cuFileDriverClose"))?;
        let handle_register = lib
            .sym::<HandleRegisterFn>(b"cuFileHandleRegister\0")
            .map_err(|_| missing("cuFileHandleRegister"))?;
        let handle_deregister = lib
            .sym::<HandleDeregisterFn>(b"cuFileHandleDeregister\0")
            .map_err(|_| missing("cuFileHandleDeregister"))?;
        let buf_register = lib
            .sym::<BufRegisterFn>(b"cuFileBufRegister\0")
            .map_err(|_| missing("cuFileBufRegister"))?;
        let buf_deregister = lib
            .sym::<BufDeregisterFn>(b"cuFileBufDeregister\0")
            .map_err(|_| missing("cuFileBufDeregister"))?;
        let read = lib
            .sym::<ReadFn>(b"cuFileRead\0")
            .map_err(|_| missing("cuFileRead"))?;
        let get_properties = lib.sym::<GetPropsFn>(b"cuFileDriverGetProperties\0").ok();
        let get_version = lib.sym::<GetVersionFn>(b"cuFileGetVersion\0").ok();
        Ok(CuFileApi {
            driver_open,
            driver_close,
            handle_register,
            handle_deregister,
            buf_register,
            buf_deregister,
            read,
            get_properties,
            get_version,
            lib,
        })
    }
}

/// cufile.h's name of a `CUfileOpError` value.
pub fn cufile_error_name(code: i32) -> &'static str {
    match code {
        0 => "CU_FILE_SUCCESS",
        5001 => "CU_FILE_DRIVER_NOT_INITIALIZED",
        5002 => "CU_FILE_DRIVER_INVALID_PROPS",
        5003 => "CU_FILE_DRIVER_UNSUPPORTED_LIMIT",
        5004 => "CU_FILE_DRIVER_VERSION_MISMATCH",
        5005 => "CU_FILE_DRIVER_VERSION_READ_ERROR",
        5006 => "CU_FILE_DRIVER_CLOSING",
        5007 => "CU_FILE_PLATFORM_NOT_SUPPORTED",
        5008 => "CU_FILE_IO_NOT_SUPPORTED",
        5009 => "CU_FILE_DEVICE_NOT_SUPPORTED",
        5010 => "CU_FILE_NVFS_DRIVER_ERROR",
        5011 => "CU_FILE_CUDA_DRIVER_ERROR",
        5012 => "CU_FILE_CUDA_POINTER_INVALID",
        5013 => "CU_FILE_CUDA_MEMORY_TYPE_INVALID",
        5014 => "CU_FILE_CUDA_POINTER_RANGE_ERROR",
        5015 => "CU_FILE_CUDA_CONTEXT_MISMATCH",
        5016 => "CU_FILE_INVALID_MAPPING_SIZE",
        5017 => "CU_FILE_INVALID_MAPPING_RANGE",
        5018 => "CU_FILE_INVALID_FILE_TYPE",
        5019 => "CU_FILE_INVALID_FILE_OPEN_FLAG",
        5020 => "CU_FILE_DIO_NOT_SET",
        5022 => "CU_FILE_INVALID_VALUE",
        5023 => "CU_FILE_MEMORY_ALREADY_REGISTERED",
        5024 => "CU_FILE_MEMORY_NOT_REGISTERED",
        5025 => "CU_FILE_PERMISSION_DENIED",
        5026 => "CU_FILE_DRIVER_ALREADY_OPEN",
        5027 => "CU_FILE_HANDLE_NOT_REGISTERED",
        5028 => "CU_FILE_HANDLE_ALREADY_REGISTERED",
        5029 => "CU_FILE_DEVICE_NOT_FOUND",
        5030 => "CU_FILE_INTERNAL_ERROR",
        5031 => "CU_FILE_GETNEWFD_FAILED",
        5033 => "CU_FILE_NVFS_SETUP_ERROR",
        5034 => "CU_FILE_IO_DISABLED",
        5035 => "CU_FILE_BATCH_SUBMIT_FAILED",
        5036 => "CU_FILE_GPU_MEMORY_PINNING_FAILED",
        5037 => "CU_FILE_BATCH_FULL",
        5038 => "CU_FILE_ASYNC_NOT_SUPPORTED",
        _ => "unknown cuFile error",
    }
}

/// `NAME (code)`, plus the CUDA error when cuFile reports one.
pub(crate) fn describe_cufile(code: i32, cuda_code: i32) -> String {
    let mut s = format!("{} ({code})", cufile_error_name(code));
    if cuda_code != 0 {
        let _ = write!(s, ", CUDA error {cuda_code}");
    }
    s
}

/// `allow_compat_mode` in the text of a cuFile configuration (JSON with
/// `//` comments): the first uncommented occurrence.
pub(crate) fn compat_mode_in(text: &str) -> Option<bool> {
    config_bool_in(text, "allow_compat_mode")
}

/// The boolean `key` in the text of a cuFile configuration: its first
/// uncommented occurrence.
fn config_bool_in(text: &str, key: &str) -> Option<bool> {
    let quoted = format!("\"{key}\"");
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("//") {
            continue;
        }
        if let Some(rest) = l.strip_prefix(quoted.as_str()) {
            let v = rest.trim_start_matches([' ', '\t', ':']).trim();
            return Some(v.starts_with("true"));
        }
    }
    None
}

/// Why cuFile could not read with GPUDirect on this host, as far as can be
/// told without opening its driver (which costs about half a second): DMA
/// from storage into GPU memory needs the nvidia-fs kernel module, or
/// cuFile's PCI P2PDMA mode (`"use_pci_p2pdma": true` in its
/// configuration). `None` when either is there: the driver then decides.
pub fn gpudirect_unavailable() -> Option<String> {
    let nvidia_fs = ["/sys/module/nvidia_fs", "/proc/driver/nvidia-fs"]
        .iter()
        .any(|p| Path::new(p).exists());
    if nvidia_fs {
        return None;
    }
    let config = cufile_config_path();
    let p2pdma = std::fs::read_to_string(&config)
        .ok()
        .and_then(|t| config_bool_in(&t, "use_pci_p2pdma"));
    if p2pdma == Some(true) {
        return None;
    }
    Some(format!(
        "nvidia-fs is not loaded and PCI P2PDMA is not enabled ({}): cuFile could only pread and copy",
        config.display()
    ))
}

/// The cuFile configuration file the driver reads when it opens:
/// `$CUFILE_ENV_PATH_JSON`, else `/etc/cufile.json`.
pub fn cufile_config_path() -> PathBuf {
    std::env::var_os("CUFILE_ENV_PATH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/cufile.json"))
}

/// `properties.allow_compat_mode` of the cuFile configuration, when the
/// file can be read and names it.
pub fn cufile_config_compat_mode() -> Option<bool> {
    let text = std::fs::read_to_string(cufile_config_path()).ok()?;
    compat_mode_in(&text)
}

// ---------------------------------------------------------------------------
// Errors.

/// What went wrong on the GPUDirect Storage path. Every variant's text is
/// one line and names the step that failed.
#[derive(Debug, Error)]
pub enum GdsError {
    /// CUDA itself is unusable (no driver, no device) or a CUDA call failed.
    #[error("CUDA: {0}")]
    Cuda(#[from] GpuError),
    /// `libcufile.so.0` was not found (the text says where it was looked
    /// for).
    #[error("{0}")]
    NoLibrary(String),
    /// The library lacks an entry point this crate needs.
    #[error("{library} lacks {symbol}")]
    MissingSymbol {
        library: String,
        symbol: &'static str,
    },
    /// A cuFile call failed: `step` names the call and its object, e.g.
    /// `cuFileHandleRegister on /data/base/5/16384`.
    #[error("{step}: {}", describe_cufile(*code, *cuda_code))]
    CuFile {
        step: String,
        /// `CUfileOpError` (5001..).
        code: i32,
        /// The CUresult when cuFile reports a CUDA failure, else 0.
        cuda_code: i32,
    },
    /// A system call failed (open, or `cuFileRead` returning -1 with
    /// errno).
    #[error("{step}: {source}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
        hint: Option<&'static str>,
    },
    /// A read request that cannot be served: unaligned, out of the
    /// buffer's bounds, or a buffer of another device.
    #[error("{0}")]
    InvalidArgument(String),
}

impl GdsError {
    /// The same error again, for failures remembered once per process.
    fn clone_init(&self) -> GdsError {
        match self {
            GdsError::NoLibrary(s) => GdsError::NoLibrary(s.clone()),
            GdsError::MissingSymbol { library, symbol } => GdsError::MissingSymbol {
                library: library.clone(),
                symbol,
            },
            other => GdsError::InvalidArgument(other.to_string()),
        }
    }

    fn cufile(step: impl Into<String>, e: CuFileError) -> GdsError {
        GdsError::CuFile {
            step: step.into(),
            code: e.err,
            cuda_code: e.cu_err,
        }
    }

    /// The cuFile error code, for [`GdsError::CuFile`].
    pub fn cufile_code(&self) -> Option<i32> {
        match self {
            GdsError::CuFile { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Checks that a read's file offset, length and device offset are
/// multiples of [`GDS_ALIGN`], as `O_DIRECT` needs.
pub fn check_alignment(file_offset: u64, len: usize, dst_offset: usize) -> Result<(), GdsError> {
    let bad = |what: &str, v: u64| {
        GdsError::InvalidArgument(format!(
            "cuFile read: {what} {v} is not a multiple of {GDS_ALIGN} (O_DIRECT alignment)"
        ))
    };
    if !file_offset.is_multiple_of(GDS_ALIGN) {
        return Err(bad("file offset", file_offset));
    }
    if !(len as u64).is_multiple_of(GDS_ALIGN) {
        return Err(bad("length", len as u64));
    }
    if !(dst_offset as u64).is_multiple_of(GDS_ALIGN) {
        return Err(bad("device offset", dst_offset as u64));
    }
    Ok(())
}

/// What one `cuFileRead` call returned: bytes read, or the error (-1 means
/// errno, other negative values are `-CUfileOpError`).
fn read_result(ret: isize, asked: usize, step: impl FnOnce() -> String) -> Result<usize, GdsError> {
    if ret >= 0 {
        let n = ret as usize;
        if n > asked {
            return Err(GdsError::InvalidArgument(format!(
                "{}: cuFileRead returned {n} bytes, more than the {asked} asked for",
                step()
            )));
        }
        return Ok(n);
    }
    if ret == -1 {
        // errno first: formatting the step may allocate.
        let source = std::io::Error::last_os_error();
        return Err(GdsError::Io {
            step: step(),
            source,
            hint: None,
        });
    }
    Err(GdsError::CuFile {
        step: step(),
        code: i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX),
        cuda_code: 0,
    })
}

// ---------------------------------------------------------------------------
// The driver.

/// How many [`GdsDriver`]s (with their files and buffers) are alive in the
/// process: the driver is opened when this leaves 0 and closed when it
/// returns to 0, so a probe that opens and drops its own driver never
/// closes one a reader is using.
static OPEN_COUNT: Mutex<usize> = Mutex::new(0);

/// What `cuFileDriverGetProperties` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GdsProperties {
    /// nvidia-fs kernel driver version, when it is loaded.
    pub nvfs_version: Option<(u32, u32)>,
    /// Storage the driver can serve with GPUDirect (`dstatusflags`:
    /// "NVMe", "NVMe P2P", "NFS", ...). Empty: every read goes through
    /// compatibility mode, if that is allowed.
    pub supported: Vec<&'static str>,
    /// `dstatusflags` as reported.
    pub status_flags: u32,
    /// `dcontrolflags` as reported.
    pub control_flags: u32,
    /// Compatibility mode (POSIX reads inside cuFile) is allowed.
    pub compat_allowed: bool,
    /// All I/O goes through POSIX reads (`CU_FILE_VANILLA_POSIX_IO_MODE`).
    pub posix_only: bool,
    /// `max_direct_io_size` in bytes.
    pub max_direct_io_size: u64,
}

/// Names of the `CUfileDriverStatusFlags` bits set in `flags`.
pub(crate) fn status_flag_names(flags: u32) -> Vec<&'static str> {
    const NAMES: [(u32, &str); 14] = [
        (0, "Lustre"),
        (1, "WekaFS"),
        (2, "NFS"),
        (3, "GPFS"),
        (4, "NVMe"),
        (5, "NVMeoF"),
        (6, "SCSI"),
        (7, "ScaleFlux CSD"),
        (8, "NVMesh"),
        (9, "BeeGFS"),
        (11, "NVMe P2P"),
        (12, "ScateFS"),
        (13, "VirtioFS"),
        (14, "PanFS"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|&(_, n)| n)
        .collect()
}

/// `CUfileDrvProps_t`'s fields, read from its raw bytes (x86-64 / aarch64
/// layout: two u32, two size_t, two u32, then `fflags`...).
fn parse_properties(raw: &[u8]) -> Option<GdsProperties> {
    let u32_at = |o: usize| Some(u32::from_ne_bytes(raw.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_ne_bytes(raw.get(o..o + 8)?.try_into().ok()?));
    let (major, minor) = (u32_at(0)?, u32_at(4)?);
    let max_direct_io_size = u64_at(16)?;
    let status_flags = u32_at(24)?;
    let control_flags = u32_at(28)?;
    Some(GdsProperties {
        nvfs_version: (major != 0 || minor != 0).then_some((major, minor)),
        supported: status_flag_names(status_flags),
        status_flags,
        control_flags,
        // CU_FILE_ALLOW_COMPAT_MODE = 1, CU_FILE_VANILLA_POSIX_IO_MODE = 2.
        compat_allowed: control_flags & (1 << 1) != 0,
        posix_only: control_flags & (1 << 2) != 0,
        max_direct_io_size,
    })
}

struct DriverInner {
    api: &'static CuFileApi,
    ctx: Arc<Context>,
    /// For allocating [`GdsBuffer`]s (plain allocations do not use it).
    stream: Stream,
    properties: Option<GdsProperties>,
    version: Option<i32>,
}

// SAFETY: the function pointers are plain code addresses; the context is
// Send + Sync; the stream handle is only read (its value is stored in the
// plain allocations made through it, which never use it), and the driver
// API is thread-safe.
unsafe impl Send for DriverInner {}
// SAFETY: as above.
unsafe impl Sync for DriverInner {}

impl Drop for DriverInner {
    fn drop(&mut self) {
        let mut n = OPEN_COUNT.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            let _ = self.ctx.bind();
            // SAFETY: the driver was opened by the first user; no file or
            // buffer is left (each holds a driver).
            let _ = unsafe { (self.api.driver_close)() };
        }
    }
}

/// The cuFile library and its opened driver, for device `device`'s
/// context. Cheap to clone; files and buffers keep it alive, and the
/// driver closes when the last one in the process is dropped.
#[derive(Clone)]
pub struct GdsDriver {
    inner: Arc<DriverInner>,
}

impl std::fmt::Debug for GdsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdsDriver")
            .field("library", &self.inner.api.lib.path)
            .field("device", &self.inner.ctx.ordinal)
            .field("properties", &self.inner.properties)
            .finish()
    }
}

impl GdsDriver {
    /// Initializes CUDA on `device`, loads cuFile and opens its driver
    /// (which reads the cuFile configuration then). Errors say which step
    /// failed: [`GdsError::Cuda`], [`GdsError::NoLibrary`],
    /// [`GdsError::MissingSymbol`] or [`GdsError::CuFile`] with step
    /// `cuFileDriverOpen`.
    pub fn open(device: usize) -> Result<GdsDriver, GdsError> {
        let ctx = Context::new(device)?;
        let api = api()?;
        let mut n = OPEN_COUNT.lock().unwrap_or_else(|e| e.into_inner());
        if *n == 0 {
            // SAFETY: no arguments; a context is current on this thread.
            let r = unsafe { (api.driver_open)() };
            if r.err != 0 {
                return Err(GdsError::cufile("cuFileDriverOpen", r));
            }
        }
        *n += 1;
        drop(n);
        // From here on, dropping `inner` balances the count.
        let stream = match Stream::new(&ctx) {
            Ok(s) => s,
            Err(e) => {
                let mut n = OPEN_COUNT.lock().unwrap_or_else(|e| e.into_inner());
                *n -= 1;
                if *n == 0 {
                    // SAFETY: opened above, nothing uses it.
                    let _ = unsafe { (api.driver_close)() };
                }
                return Err(e.into());
            }
        };
        let properties = api.get_properties.and_then(|get| {
            // Room for the struct (48 bytes today) and later growth.
            let mut raw = [0u64; 32];
            // SAFETY: the buffer is larger and at least as aligned as
            // CUfileDrvProps_t; the driver is open.
            let r = unsafe { get(raw.as_mut_ptr() as *mut c_void) };
            let bytes: Vec<u8> = raw.iter().flat_map(|w| w.to_ne_bytes()).collect();
            (r.err == 0).then(|| parse_properties(&bytes)).flatten()
        });
        let version = api.get_version.and_then(|get| {
            let mut v: c_int = 0;
            // SAFETY: out-pointer.
            let r = unsafe { get(&mut v) };
            (r.err == 0).then_some(v)
        });
        Ok(GdsDriver {
            inner: Arc::new(DriverInner {
                api,
                ctx,
                stream,
                properties,
                version,
            }),
        })
    }

    /// Where libcufile was loaded from.
    pub fn library_path(&self) -> &str {
        &self.inner.api.lib.path
    }

    /// The device whose context the driver's calls run in.
    pub fn device(&self) -> usize {
        self.inner.ctx.ordinal
    }

    /// `cuFileDriverGetProperties`, when the library answered it.
    pub fn properties(&self) -> Option<&GdsProperties> {
        self.inner.properties.as_ref()
    }

    /// `cuFileGetVersion` (e.g. 1150 for 1.15), when the library has it.
    pub fn version(&self) -> Option<i32> {
        self.inner.version
    }

    /// One line: library, version, nvidia-fs, supported storage, modes.
    pub fn describe(&self) -> String {
        let mut s = format!("cuFile {}", self.library_path());
        if let Some(v) = self.version() {
            let _ = write!(s, " (version {v})");
        }
        match self.properties() {
            None => s.push_str(", properties unavailable"),
            Some(p) => {
                match p.nvfs_version {
                    Some((a, b)) => {
                        let _ = write!(s, ", nvidia-fs {a}.{b}");
                    }
                    None => s.push_str(", nvidia-fs not loaded"),
                }
                if p.supported.is_empty() {
                    s.push_str(", no storage supported for GPUDirect");
                } else {
                    let _ = write!(s, ", GPUDirect for {}", p.supported.join("/"));
                }
                let _ = write!(
                    s,
                    ", compatibility mode {}{}",
                    if p.compat_allowed { "allowed" } else { "off" },
                    if p.posix_only { ", POSIX I/O only" } else { "" }
                );
            }
        }
        s
    }

    /// Which path reads of registered files take, as far as the driver's
    /// properties tell (the same for every file of the driver).
    pub fn mode(&self) -> GdsMode {
        GdsMode::of(self.properties())
    }

    /// Why every read would go through compatibility mode, when it would.
    pub fn compat_only_reason(&self) -> Option<String> {
        let p = self.properties()?;
        if self.mode() != GdsMode::Compat {
            return None;
        }
        Some(if p.posix_only {
            "cuFile is configured for POSIX I/O only".to_string()
        } else {
            format!(
                "compatibility mode only ({}, no storage supported for GPUDirect): cuFile would pread and copy",
                match p.nvfs_version {
                    Some((a, b)) => format!("nvidia-fs {a}.{b}"),
                    None => "nvidia-fs not loaded".to_string(),
                }
            )
        })
    }

    fn bind(&self) -> Result<(), GdsError> {
        self.inner.ctx.bind().map_err(GdsError::from)
    }

    /// `bytes` of device memory (`cuMemAlloc`), registered with
    /// `cuFileBufRegister` when `register` is set and cuFile accepts it
    /// ([`GdsBuffer::registered`] says; an unregistered buffer still works,
    /// through cuFile's internal bounce buffers).
    pub fn alloc(&self, bytes: usize, register: bool) -> Result<GdsBuffer, GdsError> {
        self.bind()?;
        let buf =
            DeviceBuffer::alloc(&self.inner.ctx, bytes, AllocKind::Plain, &self.inner.stream)?;
        let mut out = GdsBuffer {
            buf,
            registered: false,
            register_error: None,
            driver: self.clone(),
        };
        if register && bytes > 0 {
            // SAFETY: the allocation is `bytes` long and lives as long as
            // the GdsBuffer, which deregisters it before freeing.
            let r =
                unsafe { (self.inner.api.buf_register)(out.buf.ptr() as *const c_void, bytes, 0) };
            if r.err == 0 {
                out.registered = true;
            } else {
                out.register_error = Some(
                    GdsError::cufile(format!("cuFileBufRegister of {bytes} bytes"), r).to_string(),
                );
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Device buffers.

/// Device memory for cuFile reads, freed (and deregistered) on drop.
#[derive(Debug)]
pub struct GdsBuffer {
    buf: DeviceBuffer,
    registered: bool,
    register_error: Option<String>,
    driver: GdsDriver,
}

impl GdsBuffer {
    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether `cuFileBufRegister` accepted it.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Why registration failed, when it was asked for and failed.
    pub fn register_error(&self) -> Option<&str> {
        self.register_error.as_deref()
    }

    /// The underlying device buffer (for kernels and copies).
    pub fn device_buffer(&self) -> &DeviceBuffer {
        &self.buf
    }

    /// Copies the first `dst.len()` bytes to the host, synchronously.
    pub fn copy_to_host(&self, dst: &mut [u8]) -> Result<(), GdsError> {
        self.buf.copy_to_host(dst).map_err(GdsError::from)
    }
}

impl Drop for GdsBuffer {
    fn drop(&mut self) {
        if self.registered {
            let _ = self.driver.bind();
            // SAFETY: registered in `alloc`; freed only after this (the
            // field drops after `drop`).
            let _ =
                unsafe { (self.driver.inner.api.buf_deregister)(self.buf.ptr() as *const c_void) };
        }
    }
}

// ---------------------------------------------------------------------------
// Files.

/// Which I/O path a registered file's reads take, as far as cuFile lets
/// that be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GdsMode {
    /// Compatibility mode is off, so a registered file is read with
    /// GPUDirect (DMA from storage into device memory).
    Direct,
    /// cuFile reads with POSIX calls and copies to the device: the driver
    /// supports no storage for GPUDirect, or is configured for POSIX I/O.
    Compat,
    /// Compatibility mode is allowed and some storage is supported: cuFile
    /// decided per file and does not say.
    Unknown,
}

impl GdsMode {
    fn of(p: Option<&GdsProperties>) -> GdsMode {
        match p {
            None => GdsMode::Unknown,
            Some(p) if p.posix_only => GdsMode::Compat,
            Some(p) if !p.compat_allowed => GdsMode::Direct,
            Some(p) if p.supported.is_empty() => GdsMode::Compat,
            Some(_) => GdsMode::Unknown,
        }
    }

    /// "GPUDirect", "compatibility mode", "GPUDirect or compatibility mode".
    pub fn as_str(self) -> &'static str {
        match self {
            GdsMode::Direct => "GPUDirect",
            GdsMode::Compat => "compatibility mode",
            GdsMode::Unknown => "GPUDirect or compatibility mode",
        }
    }
}

/// A file opened with `O_RDONLY | O_DIRECT | O_CLOEXEC` and registered with
/// cuFile. Reads may be issued from several threads at once.
pub struct GdsFile {
    driver: GdsDriver,
    /// Kept open while registered (closed after deregistration).
    _file: std::fs::File,
    handle: *mut c_void,
    path: PathBuf,
    len: u64,
}

// SAFETY: a cuFile handle may be used from any thread (cuFile is
// thread-safe); every call binds the context on the calling thread first.
unsafe impl Send for GdsFile {}
// SAFETY: as above; `read` takes `&self` and cuFileRead is thread-safe.
unsafe impl Sync for GdsFile {}

impl std::fmt::Debug for GdsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdsFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl GdsFile {
    /// Opens `path` with `O_RDONLY | O_DIRECT | O_CLOEXEC` and registers it
    /// (`cuFileHandleRegister`). Errors name the step and the path:
    /// `open(/p, O_DIRECT): Invalid argument (os error 22) (the file system
    /// does not support direct I/O)` or `cuFileHandleRegister on /p:
    /// CU_FILE_IO_NOT_SUPPORTED (5008)`.
    pub fn open(driver: &GdsDriver, path: &Path) -> Result<GdsFile, GdsError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                let hint = (e.raw_os_error() == Some(libc::EINVAL))
                    .then_some("the file system does not support direct I/O");
                GdsError::Io {
                    step: format!("open({}, O_DIRECT)", path.display()),
                    source: e,
                    hint,
                }
            })?;
        let len = file
            .metadata()
            .map_err(|e| GdsError::Io {
                step: format!("fstat({})", path.display()),
                source: e,
                hint: None,
            })?
            .len();
        driver.bind()?;
        let mut descr = CuFileDescr {
            kind: HANDLE_TYPE_OPAQUE_FD,
            handle: CuFileDescrHandle {
                fd: std::os::fd::AsRawFd::as_raw_fd(&file),
            },
            fs_ops: std::ptr::null(),
        };
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: descriptor filled as cufile.h documents, for an fd that
        // stays open while registered; out-pointer.
        let r = unsafe { (driver.inner.api.handle_register)(&mut handle, &mut descr) };
        if r.err != 0 {
            return Err(GdsError::cufile(
                format!("cuFileHandleRegister on {}", path.display()),
                r,
            ));
        }
        Ok(GdsFile {
            driver: driver.clone(),
            _file: file,
            handle,
            path: path.to_path_buf(),
            len,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when it was opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The driver the file is registered with.
    pub fn driver(&self) -> &GdsDriver {
        &self.driver
    }

    /// Which path reads take, as far as can be known.
    pub fn mode(&self) -> GdsMode {
        self.driver.mode()
    }

    /// Reads `len` bytes at `file_offset` into `dst` at `dst_offset`.
    /// Returns the bytes read: `len`, or fewer when the file ends first.
    /// Offsets and length must be multiples of [`GDS_ALIGN`] and the range
    /// must lie in `dst`.
    pub fn read(
        &self,
        dst: &mut GdsBuffer,
        dst_offset: usize,
        len: usize,
        file_offset: u64,
    ) -> Result<usize, GdsError> {
        self.check_target(dst.len(), dst.buf.device(), dst_offset, len)?;
        // SAFETY: the range lies in `dst` (checked), which is borrowed
        // mutably for the duration of the synchronous read; a registered
        // buffer is passed by its base, as cuFile requires.
        unsafe { self.read_raw(dst.ptr(), dst_offset, len, file_offset) }
    }

    /// [`Self::read`] into a crate device buffer (not registered with
    /// cuFile).
    pub fn read_device(
        &self,
        dst: &mut DeviceBuffer,
        dst_offset: usize,
        len: usize,
        file_offset: u64,
    ) -> Result<usize, GdsError> {
        self.check_target(dst.len(), dst.device(), dst_offset, len)?;
        // SAFETY: as in `read`.
        unsafe { self.read_raw(dst.ptr(), dst_offset, len, file_offset) }
    }

    fn check_target(
        &self,
        dst_len: usize,
        dst_device: usize,
        dst_offset: usize,
        len: usize,
    ) -> Result<(), GdsError> {
        if dst_device != self.driver.device() {
            return Err(GdsError::InvalidArgument(format!(
                "cuFile read of {}: the buffer is on device {dst_device}, the driver on device {}",
                self.path.display(),
                self.driver.device()
            )));
        }
        match dst_offset.checked_add(len) {
            Some(end) if end <= dst_len => Ok(()),
            _ => Err(GdsError::InvalidArgument(format!(
                "cuFile read of {}: {len} bytes at device offset {dst_offset} do not fit a buffer of {dst_len} bytes",
                self.path.display()
            ))),
        }
    }

    /// Reads `len` bytes at `file_offset` into device memory at
    /// `dst_base + dst_offset`, looping on short reads; returns the bytes
    /// read (fewer than `len` only at the end of the file). Checks
    /// alignment and offset overflow, not the destination.
    ///
    /// # Safety
    /// `dst_base` must be a device allocation of this driver's device
    /// (its base address when it is registered with cuFile) with at least
    /// `dst_offset + len` bytes, not accessed by anything else during the
    /// call.
    pub unsafe fn read_raw(
        &self,
        dst_base: u64,
        dst_offset: usize,
        len: usize,
        file_offset: u64,
    ) -> Result<usize, GdsError> {
        check_alignment(file_offset, len, dst_offset)?;
        let fits_off_t = file_offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= i64::MAX as u64)
            && (dst_offset as u64)
                .checked_add(len as u64)
                .is_some_and(|e| e <= i64::MAX as u64);
        if !fits_off_t {
            return Err(GdsError::InvalidArgument(format!(
                "cuFile read of {}: {len} bytes at offset {file_offset} overflow off_t",
                self.path.display()
            )));
        }
        self.driver.bind()?;
        let mut done = 0usize;
        while done < len {
            let ask = (len - done).min(MAX_READ_CALL);
            let at = file_offset + done as u64;
            // SAFETY: the caller guarantees the destination range; the
            // handle is registered; offsets fit off_t (checked above).
            let ret = unsafe {
                (self.driver.inner.api.read)(
                    self.handle,
                    dst_base as *mut c_void,
                    ask,
                    at as i64,
                    (dst_offset + done) as i64,
                )
            };
            let n = read_result(ret, ask, || {
                format!(
                    "cuFileRead of {ask} bytes at offset {at} of {}",
                    self.path.display()
                )
            })?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

impl Drop for GdsFile {
    fn drop(&mut self) {
        let _ = self.driver.bind();
        // SAFETY: registered in `open`; the fd is closed after this (the
        // `file` field drops after `drop`).
        unsafe { (self.driver.inner.api.handle_deregister)(self.handle) };
    }
}

/// Whether `path` can be read with GPUDirect Storage on `device`: a ready
/// [`GdsFile`], or why not in one line (CUDA, the library, the driver,
/// `O_DIRECT` or the registration), for a reader that then says "via
/// cuFile" or "via pread (cuFile: <reason>)".
///
/// Without `allow_compat`, a driver that can only read through
/// compatibility mode ([`GdsMode::Compat`]: nvidia-fs not loaded and no
/// storage supported, or POSIX I/O configured) is refused with that
/// reason: cuFile would then `pread` into its own bounce buffers and copy,
/// one request at a time, which a reader's own pread pipeline into pinned
/// memory beats.
///
/// The driver stays open while any file from it lives, so opening segment
/// after segment of a table opens the driver once as long as one file is
/// kept (or a [`GdsDriver`] is held and [`GdsFile::open`] used).
pub fn gds_open(device: usize, path: &Path, allow_compat: bool) -> Result<GdsFile, String> {
    let one_line = |e: GdsError| e.to_string().replace('\n', " ");
    let driver = GdsDriver::open(device).map_err(one_line)?;
    if !allow_compat {
        if let Some(why) = driver.compat_only_reason() {
            return Err(why);
        }
    }
    GdsFile::open(&driver, path).map_err(one_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_checked() {
        assert!(check_alignment(0, 0, 0).is_ok());
        assert!(check_alignment(8192 * 5, 8192 * 16, 4096).is_ok());
        let e = check_alignment(100, 4096, 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "cuFile read: file offset 100 is not a multiple of 4096 (O_DIRECT alignment)"
        );
        let e = check_alignment(4096, 4097, 0).unwrap_err().to_string();
        assert!(e.contains("length 4097"), "{e}");
        let e = check_alignment(4096, 4096, 512).unwrap_err().to_string();
        assert!(e.contains("device offset 512"), "{e}");
    }

    #[test]
    fn errors_name_step_and_code() {
        let e = GdsError::cufile(
            "cuFileHandleRegister on /data/16384",
            CuFileError {
                err: 5008,
                cu_err: 0,
            },
        );
        assert_eq!(
            e.to_string(),
            "cuFileHandleRegister on /data/16384: CU_FILE_IO_NOT_SUPPORTED (5008)"
        );
        assert_eq!(e.cufile_code(), Some(5008));
        let e = GdsError::cufile(
            "cuFileDriverOpen",
            CuFileError {
                err: 5011,
                cu_err: 201,
            },
        );
        assert_eq!(
            e.to_string(),
            "cuFileDriverOpen: CU_FILE_CUDA_DRIVER_ERROR (5011), CUDA error 201"
        );
        let e = GdsError::Io {
            step: "open(/x, O_DIRECT)".into(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
            hint: Some("the file system does not support direct I/O"),
        };
        let t = e.to_string();
        assert!(
            t.starts_with("open(/x, O_DIRECT): ")
                && t.ends_with("(the file system does not support direct I/O)"),
            "{t}"
        );
        assert_eq!(cufile_error_name(5020), "CU_FILE_DIO_NOT_SET");
        assert_eq!(cufile_error_name(5025), "CU_FILE_PERMISSION_DENIED");
        assert_eq!(cufile_error_name(42), "unknown cuFile error");
        assert_eq!(describe_cufile(5030, 0), "CU_FILE_INTERNAL_ERROR (5030)");
    }

    #[test]
    fn read_results() {
        let step = || "cuFileRead of 4096 bytes at offset 0 of /f".to_string();
        assert_eq!(read_result(4096, 4096, step).unwrap(), 4096);
        assert_eq!(read_result(0, 4096, step).unwrap(), 0);
        let e = read_result(-5008, 4096, step).unwrap_err();
        assert_eq!(e.cufile_code(), Some(5008));
        assert_eq!(
            e.to_string(),
            "cuFileRead of 4096 bytes at offset 0 of /f: CU_FILE_IO_NOT_SUPPORTED (5008)"
        );
        assert!(matches!(
            read_result(-1, 4096, step).unwrap_err(),
            GdsError::Io { .. }
        ));
        assert!(matches!(
            read_result(8192, 4096, step).unwrap_err(),
            GdsError::InvalidArgument(_)
        ));
        // No overflow on the most negative value.
        assert!(read_result(isize::MIN, 4096, step).is_err());
    }

    #[test]
    fn config_compat_mode() {
        let text = r#"{
            // "allow_compat_mode": false,
            "properties": {
                "max_direct_io_size_kb" : 16384,
                "allow_compat_mode":	true,
            }
        }"#;
        assert_eq!(compat_mode_in(text), Some(true));
        assert_eq!(
            compat_mode_in("\"allow_compat_mode\" : false,"),
            Some(false)
        );
        assert_eq!(compat_mode_in("{}"), None);
        let p2p = "{\n  // \"use_pci_p2pdma\": false,\n  \"use_pci_p2pdma\" : true\n}";
        assert_eq!(config_bool_in(p2p, "use_pci_p2pdma"), Some(true));
        assert_eq!(config_bool_in(p2p, "allow_compat_mode"), None);
    }

    #[test]
    fn properties_parse() {
        let mut raw = vec![0u8; 48];
        raw[0..4].copy_from_slice(&2u32.to_ne_bytes());
        raw[4..8].copy_from_slice(&17u32.to_ne_bytes());
        raw[16..24].copy_from_slice(&(16u64 << 20).to_ne_bytes());
        raw[24..28].copy_from_slice(&((1u32 << 4) | (1 << 11)).to_ne_bytes());
        raw[28..32].copy_from_slice(&(1u32 << 1).to_ne_bytes());
        let p = parse_properties(&raw).unwrap();
        assert_eq!(p.nvfs_version, Some((2, 17)));
        assert_eq!(p.supported, vec!["NVMe", "NVMe P2P"]);
        assert!(p.compat_allowed && !p.posix_only);
        assert_eq!(p.max_direct_io_size, 16 << 20);
        assert_eq!(GdsMode::of(Some(&p)), GdsMode::Unknown);
        let none = parse_properties(&[0u8; 48]).unwrap();
        assert_eq!(none.nvfs_version, None);
        assert!(none.supported.is_empty());
        assert_eq!(GdsMode::of(Some(&none)), GdsMode::Direct);
        let compat = GdsProperties {
            compat_allowed: true,
            ..none.clone()
        };
        assert_eq!(GdsMode::of(Some(&compat)), GdsMode::Compat);
        assert_eq!(GdsMode::of(None), GdsMode::Unknown);
        assert!(parse_properties(&[0u8; 20]).is_none());
        assert_eq!(status_flag_names(1 << 10), Vec::<&str>::new());
    }

    /// Without CUDA (CI), every entry point returns a typed error naming
    /// the step; with a GPU, the same calls either work or say why not.
    #[test]
    fn no_cuda_no_panic() {
        match GdsDriver::open(0) {
            Ok(d) => eprintln!("cuFile here: {}", d.describe()),
            Err(e) => {
                let t = e.to_string();
                assert!(!t.is_empty() && !t.contains('\n'), "{t}");
                assert!(
                    matches!(
                        e,
                        GdsError::Cuda(_)
                            | GdsError::NoLibrary(_)
                            | GdsError::MissingSymbol { .. }
                            | GdsError::CuFile { .. }
                    ),
                    "{e:?}"
                );
                if let GdsError::Cuda(g) = &e {
                    assert!(t.starts_with("CUDA: "), "{t}");
                    eprintln!("no CUDA here ({}): {t}", g.is_unavailable());
                }
                // Twice: failures are remembered, not retried into a panic.
                assert_eq!(GdsDriver::open(0).unwrap_err().to_string(), t);
                let why = gds_open(0, Path::new("/nonexistent/16384"), true).unwrap_err();
                assert_eq!(why, t);
            }
        }
    }

    /// Loading the library alone (no CUDA needed): found, or an error that
    /// says where it was looked for.
    #[test]
    fn library_missing_is_an_error() {
        match api() {
            Ok(a) => eprintln!("libcufile here: {}", a.lib.path),
            Err(e) => {
                let t = e.to_string();
                assert!(t.contains("libcufile.so.0"), "{t}");
                assert!(t.contains("/usr/local/cuda"), "{t}");
                assert!(!t.contains('\n'));
            }
        }
    }
}

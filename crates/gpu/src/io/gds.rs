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
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::runtime::cuda::{AllocKind, Context, DeviceBuffer, Stream};
use crate::runtime::error::GpuError;

/// Alignment, in bytes, of every file offset, length and device offset a
/// [`GdsFile`] read accepts (`O_DIRECT`'s logical block size).
pub const GDS_ALIGN: u64 = 4096;

/// Largest single `cuFileRead` request; longer reads are split.
const MAX_READ_CALL: usize = 1 << 30;

mod ffi;

use ffi::{api, CuFileApi, CuFileDescr, CuFileDescrHandle, CuFileError, HANDLE_TYPE_OPAQUE_FD};
pub use ffi::{
    cufile_config_compat_mode, cufile_config_path, cufile_error_name, gpudirect_unavailable,
};
pub(crate) use ffi::{describe_cufile, loaded_library_path};

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
        /// The library's path.
        library: String,
        /// The missing entry point.
        symbol: &'static str,
    },
    /// A cuFile call failed: `step` names the call and its object, e.g.
    /// `cuFileHandleRegister on /data/base/5/16384`.
    #[error("{step}: {}", describe_cufile(*code, *cuda_code))]
    CuFile {
        /// The call and its object.
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
        /// The call and its object.
        step: String,
        #[source]
        /// The system's error.
        source: std::io::Error,
        /// What the error likely means here, e.g. no `O_DIRECT` support.
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
/// `O_DIRECT` or the registration), for a reader that then says `via
/// cuFile` or `via pread (cuFile: <reason>)`.
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
mod tests;

//! The cuFile ABI this crate uses (cufile.h types and functions), the
//! library loaded at run time, cuFile's error names, and the cuFile
//! configuration file.

use std::ffi::{c_int, c_void};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::GdsError;
use crate::runtime::cuda::{self, LoadedLib};

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
pub(super) const HANDLE_TYPE_OPAQUE_FD: u32 = 1;

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
pub(super) struct CuFileApi {
    pub(super) lib: LoadedLib,
    pub(super) driver_open: VoidFn,
    pub(super) driver_close: VoidFn,
    pub(super) handle_register: HandleRegisterFn,
    pub(super) handle_deregister: HandleDeregisterFn,
    pub(super) buf_register: BufRegisterFn,
    pub(super) buf_deregister: BufDeregisterFn,
    pub(super) read: ReadFn,
    /// `cuFileDriverGetProperties` (all versions have it; optional anyway).
    pub(super) get_properties: Option<GetPropsFn>,
    /// `cuFileGetVersion` (CUDA 12.3+).
    pub(super) get_version: Option<GetVersionFn>,
}

static API: OnceLock<Result<CuFileApi, GdsError>> = OnceLock::new();

pub(super) fn api() -> Result<&'static CuFileApi, GdsError> {
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
pub(super) fn compat_mode_in(text: &str) -> Option<bool> {
    config_bool_in(text, "allow_compat_mode")
}

/// The boolean `key` in the text of a cuFile configuration: its first
/// uncommented occurrence.
pub(super) fn config_bool_in(text: &str, key: &str) -> Option<bool> {
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

//! The one error type of the GPU path.

use thiserror::Error;

/// Everything that can go wrong on the GPU path. Each variant names what a
/// user needs to act on: where a library was looked for, which device, which
/// CUDA call, which column and row.
#[derive(Debug, Error)]
pub enum GpuError {
    /// No usable CUDA driver library (`libcuda.so.1`) was found.
    #[error("no CUDA driver found (looked in: {looked_in}){}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    NoDriver {
        /// The places searched, in order.
        looked_in: String,
        /// Why the last candidate failed, when one existed.
        detail: Option<String>,
    },
    /// The driver loaded but reports no CUDA device (or not this ordinal).
    #[error("no CUDA device{}", .0.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    NoDevice(Option<String>),
    /// The driver is older than this build needs.
    #[error("CUDA driver too old: it supports CUDA {}, gpupgparser needs {}", fmt_ver(*.found), fmt_ver(*.need))]
    DriverTooOld {
        /// The CUDA version the driver supports (1000 * major + 10 * minor).
        found: i32,
        /// The CUDA version this build needs, encoded the same way.
        need: i32,
    },
    /// A CUDA driver call failed.
    #[error("CUDA call {call} failed on device {device}: {code}")]
    Cuda {
        /// The driver API function.
        call: &'static str,
        /// The driver's error name and text, e.g. `CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)`.
        code: String,
        /// The CUDA ordinal.
        device: usize,
    },
    /// NVRTC is missing or failed to compile the kernels.
    #[error("NVRTC: {log}")]
    Nvrtc {
        /// NVRTC's log, or why NVRTC could not be loaded.
        log: String,
    },
    /// A device or pinned allocation did not fit.
    #[error("out of memory on device {device}: {bytes} bytes requested")]
    OutOfMemory {
        /// The CUDA ordinal.
        device: usize,
        /// Bytes requested.
        bytes: u64,
    },
    /// Outputs kept on the device would pass the limit they were given
    /// (the table store's `--memory-limit`).
    #[error("the memory limit of {limit} bytes on device {device} would be exceeded: {bytes} bytes needed")]
    MemoryLimit {
        /// The CUDA ordinal.
        device: usize,
        /// The limit, in bytes.
        limit: u64,
        /// Bytes the outputs would need.
        bytes: u64,
    },
    /// Pinned (page-locked) host memory could not be allocated.
    #[error("pinned host memory: {0}")]
    Pinned(String),
    /// The data itself is bad; the CPU decoder's message (which names the
    /// column, partition and row) is kept as it is.
    #[error(transparent)]
    Decode(#[from] gpupg_decode::DecodeError),
    /// A chunk does not fit the limits of the device path (offsets beyond
    /// u32, too many columns, ...).
    #[error("chunk cannot be decoded on device {device}: {what}")]
    Unsupported {
        /// The CUDA ordinal.
        device: usize,
        /// Which limit, in words.
        what: String,
    },
    /// A CUDA IPC memory handle that is malformed (bad hex, wrong length) or
    /// that the driver refuses to open (foreign, stale, from this process).
    #[error("invalid CUDA IPC handle: {0}")]
    IpcHandle(String),
    /// A read or write past the end of a mapped region.
    #[error("bytes {offset}..{} are outside the mapped region of {size} bytes", *.offset as u128 + *.len as u128)]
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// Bytes in the region.
        size: u64,
    },
    /// A buffer whose allocation CUDA IPC cannot export (stream-ordered pool
    /// memory).
    #[error("device {device}: the buffer cannot be exported through CUDA IPC: {what}")]
    NotExportable {
        /// The CUDA ordinal.
        device: usize,
        /// Why, in words.
        what: String,
    },
    /// Building the Arrow arrays from the decoded buffers failed (a bug: the
    /// kernels produced an inconsistent layout).
    #[error("column {column}: building the Arrow array failed: {what}")]
    Layout {
        /// The column's name, or what was being built in parentheses.
        column: String,
        /// What went wrong.
        what: String,
    },
}

fn fmt_ver(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

impl GpuError {
    /// Whether the error says the GPU is unusable here (as opposed to a
    /// failure while using one), for `--engine auto` to choose the CPU.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            GpuError::NoDriver { .. } | GpuError::NoDevice(_) | GpuError::DriverTooOld { .. }
        )
    }
}

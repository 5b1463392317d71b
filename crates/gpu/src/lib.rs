//! The GPU decode path of gpupgparser: binary COPY chunks to Arrow columns
//! on an NVIDIA GPU, kept on the device or copied back as record batches
//! identical to the CPU decoder's.
//!
//! - [`cuda`]: finding the driver and NVRTC at run time (no CUDA needed to
//!   build), RAII wrappers over the driver API.
//! - [`probe`]: `devices()`, `check_gds()`, `info_report()` for
//!   `gpupgparser info`.
//! - [`nvrtc`]: kernel compilation to a cubin, with a disk cache.
//! - [`pinned`]: page-locked host buffers and a bounded pool of them.
//! - [`kernels`]: the only module launching kernels (`kernels/decode.cu`,
//!   `kernels/heap.cu`).
//! - [`heap`]: a table's tuple layout as the heap page kernels read it.
//! - [`plan`]: host-side planning (per-column kernels or CPU fallback,
//!   chunk splitting, projections).
//! - [`decoder`]: [`GpuDecoder`], implementing `gpupg_decode::Decoder`.
//! - [`column`]: device-resident Arrow columns ([`DeviceBatch`]).

pub mod column;
pub mod cuda;
pub mod decoder;
pub mod error;
pub mod heap;
pub mod kernels;
pub mod nvrtc;
pub mod pinned;
pub mod plan;
pub mod probe;

pub use column::{DeviceBatch, DeviceColumn, DeviceSlice, DeviceTable};
pub use cuda::{AllocKind, DeviceBuffer};
pub use decoder::{CpuColumn, GpuDecoder, GpuOptions, GpuStats};
pub use error::GpuError;
pub use heap::PageLayout;
pub use pinned::{HostRegistration, PinnedBuffer, PinnedPool};
pub use probe::{check_gds, devices, info_report, DeviceInfo, GdsStatus};

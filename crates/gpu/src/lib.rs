//! The GPU decode path of gpupgparser: binary COPY chunks to Arrow columns
//! on an NVIDIA GPU, kept on the device or copied back as record batches
//! identical to the CPU decoder's.
//!
//! - [`cuda`]: finding the driver and NVRTC at run time (no CUDA needed to
//!   build), RAII wrappers over the driver API.
//! - [`probe`]: `devices()`, `check_gds()`, `info_report()` for
//!   `gpupgparser info`.
//! - [`gds`]: GPUDirect Storage (cuFile): files read straight into device
//!   memory ([`GdsDriver`], [`GdsFile`], [`GdsBuffer`], [`gds_open`]).
//! - [`nvrtc`]: kernel compilation to a cubin, with a disk cache.
//! - [`pinned`]: page-locked host buffers and a bounded pool of them.
//! - [`kernels`]: the only module launching kernels (`kernels/decode.cu`,
//!   `kernels/heap.cu`, and `kernels/gather.cu` in a module of its own).
//! - [`heap`]: a table's tuple layout as the heap page kernels read it.
//! - [`plan`]: host-side planning (per-column kernels or CPU fallback,
//!   chunk splitting, projections).
//! - [`decoder`]: [`GpuDecoder`], implementing `gpupg_decode::Decoder`.
//! - [`column`]: device-resident Arrow columns ([`DeviceBatch`]).
//! - [`gather`]: runs of rows of device batches copied device to device
//!   into a new batch ([`Gatherer`], [`gather_rows`]; CPU twin
//!   [`gather_rows_host`]), for the table store's page-level refresh.
//! - [`arena`]: few large allocations for columns kept on the device
//!   ([`DeviceArena`]), with an optional byte limit.
//! - [`ipc`]: CUDA IPC handles of those columns' allocations, and mapping
//!   another process's allocation ([`MappedRegion`]).
//!
//! ## GPUDirect Storage
//!
//! [`gds_open`] says whether a file can be read with cuFile straight into
//! device memory: a ready [`GdsFile`], or the reason in one line. Reads
//! take offsets and lengths that are multiples of [`GDS_ALIGN`] (4096;
//! heap pages, 8 KiB at block-aligned offsets, always are) and loop until
//! the length is read or the file ends.
//!
//! ```no_run
//! use std::path::Path;
//! use gpupg_gpu::{gds_open, GdsError};
//!
//! fn first_pages(segment: &Path) -> Result<(), GdsError> {
//!     // `false`: refuse a driver that could only read in compatibility mode.
//!     match gds_open(0, segment, false) {
//!         Ok(file) => {
//!             // 16 MiB of device memory, registered with cuFile if it can be.
//!             let mut pages = file.driver().alloc(16 << 20, true)?;
//!             let n = file.read(&mut pages, 0, 16 << 20, 0)?;
//!             println!("via cuFile ({}): {n} bytes on the device", file.mode().as_str());
//!         }
//!         Err(reason) => println!("via pread (cuFile: {reason})"),
//!     }
//!     Ok(())
//! }
//! # first_pages(Path::new("/var/lib/postgresql/16/main/base/5/16384")).unwrap();
//! ```

pub mod decode;
pub mod io;
pub mod kernels;
pub mod runtime;
pub mod store;

// Old module paths, kept because other crates import through them
// (`gpupg_gpu::probe::pci_locations`, `gpupg_gpu::ipc::allocation_of`).
pub use runtime::probe;
pub use store::ipc;

pub use decode::decoder::{CpuColumn, GpuDecoder, GpuOptions, GpuPagesDecoded, GpuStats, PagesIn};
pub use decode::heap::PageLayout;
pub use io::gds::{
    gds_open, gpudirect_unavailable, GdsBuffer, GdsDriver, GdsError, GdsFile, GdsMode,
    GdsProperties, GDS_ALIGN,
};
pub use runtime::arena::DeviceArena;
pub use runtime::column::{DeviceBatch, DeviceColumn, DeviceSlice, DeviceTable};
pub use runtime::cuda::{AllocKind, DeviceBuffer};
pub use runtime::error::GpuError;
pub use runtime::pinned::{HostRegistration, PinnedBuffer, PinnedPool};
pub use runtime::probe::{
    check_gds, device_count, devices, info_report, pci_locations, DeviceHold, DeviceInfo, GdsStatus,
};
pub use store::gather::{gather_rows, gather_rows_host, GatherStats, Gatherer, RowRun};
pub use store::ipc::{allocation_of, export_allocation, ExportableBuffer, IpcHandle, MappedRegion};

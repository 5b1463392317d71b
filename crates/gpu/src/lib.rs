//! The GPU decode path of gpupgparser: binary COPY chunks to Arrow columns
//! on an NVIDIA GPU, kept on the device or copied back as record batches
//! identical to the CPU decoder's.
//!
//! The crate is grouped by role; everything a caller needs is re-exported
//! here at the root.
//!
//! - [`runtime`]: the CUDA runtime. [`runtime::cuda`] finds the driver and
//!   NVRTC at run time (no CUDA needed to build) and wraps the driver API
//!   in RAII types; [`runtime::nvrtc`] compiles the kernels to a cubin with
//!   a disk cache; [`runtime::pinned`] page-locked host buffers and a pool;
//!   [`runtime::arena`] few large allocations for columns kept on the
//!   device ([`DeviceArena`]); [`runtime::column`] device-resident Arrow
//!   columns ([`DeviceBatch`]); [`runtime::probe`] `devices()`,
//!   `check_gds()`, `info_report()` for `gpupgparser info`;
//!   [`runtime::error`] the crate's [`GpuError`].
//! - [`decode`]: decoding. [`decode::decoder`] holds [`GpuDecoder`],
//!   implementing `gpupg_decode::Decoder` (COPY chunks, and heap pages
//!   through the page kernels); [`decode::column_plan`] per-column kernels
//!   or CPU fallback, chunk splitting, projections; [`decode::heap`] a
//!   table's tuple layout as the heap page kernels read it.
//! - [`store`]: the table store's side. [`store::gather`] copies runs of
//!   rows of device batches device to device into a new batch
//!   ([`Gatherer`], [`gather_rows`]; CPU twin [`gather_rows_host`]);
//!   [`store::ipc`] CUDA IPC handles of kept columns' allocations, and
//!   mapping another process's allocation ([`MappedRegion`]).
//! - [`io`]: GPUDirect Storage ([`io::gds`]): files read with cuFile
//!   straight into device memory ([`GdsDriver`], [`GdsFile`],
//!   [`GdsBuffer`], [`gds_open`]).
//! - [`kernels`]: the only module that loads kernel modules and launches
//!   kernels (`kernels/decode.cu` and `kernels/heap.cu` in one module,
//!   `kernels/gather.cu` in its own; all include `kernels/common.cuh`).
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

// The module paths before the split by role, kept because other crates
// import through them (`gpupg_gpu::probe::pci_locations`,
// `gpupg_gpu::ipc::allocation_of`); the same items are at the root too.
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

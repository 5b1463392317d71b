//! The CUDA runtime: the driver and NVRTC found at run time, RAII wrappers
//! over the driver API, page-locked host memory, the device arena,
//! device-resident columns, the probe and the crate's error type.

pub mod arena;
pub mod column;
pub mod cuda;
pub mod error;
pub mod nvrtc;
pub mod pinned;
pub mod probe;

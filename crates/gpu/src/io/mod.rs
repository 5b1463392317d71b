//! Reading files straight into device memory with GPUDirect Storage.

pub mod gds;

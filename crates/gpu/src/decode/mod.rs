//! Decoding on the device: binary COPY chunks and heap pages to Arrow
//! columns ([`decoder::GpuDecoder`]), the per-column plan and the tuple
//! layout the heap page kernels read.

pub mod column_plan;
pub mod decoder;
pub mod heap;

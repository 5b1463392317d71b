//! The table store's side: runs of rows of device batches gathered into a
//! new batch, and CUDA IPC handles of device allocations.

pub mod gather;
pub mod ipc;

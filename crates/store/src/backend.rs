//! Where a loaded table lives, behind one interface: [`GpuBackend`]
//! (device memory, shared through CUDA IPC) and [`HostBackend`] (host
//! memory; the same layouts and manifests without a GPU, for tests). The
//! registry, protocol and manifest only see [`LoadedTable`].
//!
//! [`GpuBackend`]: crate::GpuBackend
//! [`HostBackend`]: crate::HostBackend

use std::any::Any;

use arrow::datatypes::{DataType, SchemaRef};
use gpupg_export::{ExportReport, ExportRequest, PageMap};

use crate::error::StoreError;

/// Loads tables into one kind of memory.
pub trait Backend: Send + Sync {
    /// `gpu` or `host`, as listed and written in manifests.
    fn kind(&self) -> &'static str;

    /// Checks that `device` exists before anything is loaded.
    fn check_device(&self, device: usize) -> Result<(), StoreError>;

    /// How many devices there are (what `devices: "all"` means), or why
    /// none is usable.
    fn device_count(&self) -> Result<usize, String>;

    /// Runs the export `req` (a device-resident load of `req.device`) and
    /// keeps its columns. `name` is the store name, for messages. On a
    /// refresh `prior` is the current revision, loaded by this backend, and
    /// `req.prior` its pages: the rows the export carries over are copied
    /// from it.
    fn load(
        &self,
        name: &str,
        req: &ExportRequest<'_>,
        prior: Option<&LoadedTable>,
    ) -> Result<LoadedTable, StoreError>;
}

/// A loaded table: where each buffer lies, and the memory itself.
pub struct LoadedTable {
    /// The columns' Arrow schema.
    pub schema: SchemaRef,
    /// The first of the devices holding the table (each allocation names
    /// its own).
    pub device: usize,
    /// Rows in the table as loaded.
    pub rows: u64,
    /// Every allocation the buffers lie in, with a handle another process
    /// opens it with.
    pub allocations: Vec<AllocationLayout>,
    /// One per decoded chunk, in the order the export produced them.
    pub chunks: Vec<ChunkLayout>,
    /// The export's report (source, heap fence, timings); on a refresh its
    /// rows are those read, not those carried over.
    pub report: ExportReport,
    /// The heap pages each chunk holds, for the next refresh.
    pub pages: PageMap,
    /// Owns the memory; dropping it frees the table.
    pub memory: Box<dyn Any + Send + Sync>,
}

impl LoadedTable {
    /// The memory of `prior` (the revision a refresh copies rows from), as
    /// the backend that loaded it keeps it.
    pub(crate) fn memory_of<T: 'static>(prior: Option<&LoadedTable>) -> Result<&T, StoreError> {
        prior
            .and_then(|p| p.memory.downcast_ref::<T>())
            .ok_or_else(|| {
                StoreError::Internal("a refresh without the previous revision's columns".into())
            })
    }

    /// Bytes of all allocations.
    pub fn bytes(&self) -> u64 {
        self.allocations.iter().map(|a| a.size).sum()
    }
}

/// One allocation: its handle as 128 hex digits (a CUDA IPC handle, or on
/// the host backend an id in the same form) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationLayout {
    /// The handle, 128 hex digits.
    pub handle: String,
    /// Its size in bytes.
    pub size: u64,
    /// The device it is on.
    pub device: usize,
}

/// A chunk of rows: every column's buffers for those rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkLayout {
    /// Rows in the chunk.
    pub rows: usize,
    /// One per schema field, in schema order.
    pub columns: Vec<ColumnLayout>,
}

/// One column of one chunk in Arrow's `ArrayData` layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnLayout {
    /// The array's Arrow type.
    pub data_type: DataType,
    /// Values in the array.
    pub len: usize,
    /// How many of them are NULL.
    pub null_count: usize,
    /// Validity bitmap; absent when there are no NULLs.
    pub validity: Option<BufferLayout>,
    /// The array's buffers in `ArrayData` order.
    pub buffers: Vec<BufferLayout>,
    /// A List's items, a Struct's fields, a Dictionary's values.
    pub children: Vec<ColumnLayout>,
}

/// Where one buffer lies: an allocation (index into
/// [`LoadedTable::allocations`]), the offset from its base and the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLayout {
    /// Index into [`LoadedTable::allocations`].
    pub allocation: usize,
    /// Bytes from the allocation's base.
    pub offset: u64,
    /// Bytes in the buffer.
    pub length: u64,
}

//! The manifest `store export` prints: everything another process needs to
//! map a revision's columns without a copy. The format is documented in
//! docs/store.md; in short:
//!
//! ```json
//! {"format": "gpupgparser-store-manifest", "version": 1,
//!  "name": "lo", "table": "lineorder", "revision": 1, "backend": "gpu", "device": 0,
//!  "rows": 3, "device_bytes": 2097152, "lsn": "0/1A2B3C8",
//!  "schema": [{"name": "lo_orderkey", "type": "Int64", "nullable": true}],
//!  "allocations": [{"id": 0, "device": 0, "ipc_handle": "<128 hex digits>", "size": 2097152}],
//!  "columns": [{"name": "lo_orderkey", "type": "Int64", "chunks": [
//!      {"rows": 3, "null_count": 0, "buffers": [
//!          {"kind": "values", "dtype": "int64", "allocation": 0, "offset": 0, "length": 24}]}]}]}
//! ```
//!
//! A buffer lies at `offset` bytes from the base of allocation
//! `allocation`: open that allocation's handle once (CUDA IPC) and add the
//! offset. [`Manifest::read_batches`] turns a manifest back into Arrow
//! record batches through any reader of those bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{make_array, ArrayData, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::backend::{BufferLayout, ColumnLayout, LoadedTable};
use crate::error::StoreError;
use crate::protocol::RevisionInfo;

/// The value of the manifest's `format` field.
pub const MANIFEST_FORMAT: &str = "gpupgparser-store-manifest";

/// The manifest format's version.
pub const MANIFEST_VERSION: u32 = 1;

/// Fills the buffer with the bytes at an offset of an allocation (from a
/// `MappedRegion`, say).
pub type ReadBytes<'a> = dyn FnMut(&AllocationInfo, u64, &mut [u8]) -> Result<(), StoreError> + 'a;

/// One revision's columns, as `store export` prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`], so a reader knows what it holds.
    pub format: String,
    /// [`MANIFEST_VERSION`] of the writer.
    pub version: u32,
    /// The table's name in the store.
    pub name: String,
    /// The table as given at load.
    pub table: String,
    /// The revision described (see `RevisionInfo::revision`).
    pub revision: u64,
    /// `gpu`: handles are CUDA IPC handles; `host`: ids of host memory (the
    /// test backend), in the same form.
    pub backend: String,
    /// The first of the devices holding the table (each allocation names
    /// its own).
    pub device: usize,
    /// Rows in the revision.
    pub rows: u64,
    /// Bytes of all allocations.
    pub device_bytes: u64,
    /// WAL position of the load (see `RevisionInfo::lsn`).
    pub lsn: String,
    /// The Arrow schema of the columns.
    pub schema: Vec<FieldInfo>,
    /// The allocations the buffers lie in, to be opened by their handles.
    pub allocations: Vec<AllocationInfo>,
    /// One per schema field, in schema order.
    pub columns: Vec<ColumnInfo>,
}

/// A field of the Arrow schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldInfo {
    /// The column's name.
    pub name: String,
    /// Arrow's own spelling of the type (`Int64`, `Utf8`,
    /// `Timestamp(µs, "UTC")`, `List(Int32)`, ...), which
    /// `arrow_schema::DataType::from_str` reads back.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column may hold NULLs.
    pub nullable: bool,
    /// Field metadata, e.g. `ARROW:extension:name` = `arrow.json`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One allocation holding buffers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationInfo {
    /// Its index, which [`BufferInfo`]s refer to.
    pub id: usize,
    /// The CUDA ordinal of the GPU it is on.
    pub device: usize,
    /// 64 bytes as 128 hex digits: `cuIpcOpenMemHandle` /
    /// `cupy.cuda.runtime.ipcOpenMemHandle(bytes.fromhex(...))`.
    pub ipc_handle: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One column: its chunks in order (chunk i of every column holds the same
/// rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// The column's name.
    pub name: String,
    /// Its Arrow type, spelled as in [`FieldInfo`].
    #[serde(rename = "type")]
    pub data_type: String,
    /// Its chunks, in the export's order.
    pub chunks: Vec<ArrayInfo>,
}

/// One array in Arrow's layout: a column's chunk, or a child of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayInfo {
    /// Values in the array: the chunk's rows (a List's child: its items).
    pub rows: usize,
    /// How many of them are NULL.
    pub null_count: usize,
    /// The validity bitmap first when there is one, then the array's
    /// buffers in Arrow order.
    pub buffers: Vec<BufferInfo>,
    /// A List's items, a Struct's fields, a Dictionary's values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ArrayInfo>,
}

/// Where one buffer lies and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferInfo {
    /// `validity`, `values`, `offsets`, `data` (string and binary bytes)
    /// or `keys` (dictionary indices).
    pub kind: String,
    /// Element type: `int8` ... `int64`, `uint8` ... `uint64`, `float32`,
    /// `float64`, `bitmap` (one bit per value, least significant first),
    /// `decimal128`, `interval_month_day_nano` (int32 months, int32 days,
    /// int64 nanoseconds), `fixed_size_binary[N]`.
    pub dtype: String,
    /// Index into `allocations`.
    pub allocation: usize,
    /// Bytes from the allocation's base.
    pub offset: u64,
    /// Bytes of the buffer (may include padding past the last value). A
    /// buffer of length 0 has nothing to map: its allocation and offset
    /// mean nothing.
    pub length: u64,
}

impl Manifest {
    /// Describes `resident`, loaded as revision `info`.
    pub fn describe(info: &RevisionInfo, resident: &LoadedTable) -> Manifest {
        let schema = resident.schema.as_ref();
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| ColumnInfo {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                chunks: resident
                    .chunks
                    .iter()
                    .filter_map(|c| c.columns.get(i))
                    .map(array_info)
                    .collect(),
            })
            .collect();
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            name: info.name.clone(),
            table: info.table.clone(),
            revision: info.revision,
            backend: info.backend.clone(),
            device: resident.device,
            rows: resident.rows,
            device_bytes: resident.bytes(),
            lsn: info.lsn.clone(),
            schema: schema
                .fields()
                .iter()
                .map(|f| FieldInfo {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                    metadata: f
                        .metadata()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                })
                .collect(),
            allocations: resident
                .allocations
                .iter()
                .enumerate()
                .map(|(id, a)| AllocationInfo {
                    id,
                    device: a.device,
                    ipc_handle: a.handle.clone(),
                    size: a.size,
                })
                .collect(),
            columns,
        }
    }

    /// The Arrow schema the manifest describes.
    pub fn arrow_schema(&self) -> Result<SchemaRef, StoreError> {
        let fields: Vec<Field> = self
            .schema
            .iter()
            .map(|f| {
                let dt: DataType = f.data_type.parse().map_err(|e| {
                    StoreError::Manifest(format!("field {}: type {}: {e}", f.name, f.data_type))
                })?;
                Ok(Field::new(&f.name, dt, f.nullable)
                    .with_metadata(f.metadata.clone().into_iter().collect::<HashMap<_, _>>()))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Rebuilds the record batches (one per chunk) from the buffers'
    /// bytes, which `read(allocation, offset, dst)` fills (from a
    /// `MappedRegion`, say). Every array is validated in full, since the
    /// bytes come from another process.
    pub fn read_batches(&self, read: &mut ReadBytes<'_>) -> Result<Vec<RecordBatch>, StoreError> {
        let schema = self.arrow_schema()?;
        if self.columns.len() != schema.fields().len() {
            return Err(StoreError::Manifest(format!(
                "{} columns for {} schema fields",
                self.columns.len(),
                schema.fields().len()
            )));
        }
        let chunks = self.columns.first().map_or(0, |c| c.chunks.len());
        let mut batches = Vec::with_capacity(chunks);
        for chunk in 0..chunks {
            let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
            let mut rows = 0;
            for (column, field) in self.columns.iter().zip(schema.fields()) {
                let info = column.chunks.get(chunk).ok_or_else(|| {
                    StoreError::Manifest(format!("column {} lacks chunk {chunk}", column.name))
                })?;
                rows = info.rows;
                let data = self
                    .array_data(field.data_type(), info, read)
                    .map_err(|e| {
                        StoreError::Manifest(format!("column {} chunk {chunk}: {e}", column.name))
                    })?;
                arrays.push(make_array(data));
            }
            let batch = RecordBatch::try_new_with_options(
                schema.clone(),
                arrays,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )
            .map_err(|e| StoreError::Manifest(format!("chunk {chunk}: {e}")))?;
            batches.push(batch);
        }
        Ok(batches)
    }

    fn array_data(
        &self,
        data_type: &DataType,
        info: &ArrayInfo,
        read: &mut ReadBytes<'_>,
    ) -> Result<ArrayData, StoreError> {
        let mut fetch = |b: &BufferInfo| -> Result<Buffer, StoreError> {
            if b.length == 0 {
                // No bytes: its allocation and offset mean nothing.
                return Ok(MutableBuffer::new(0).into());
            }
            let allocation = self
                .allocations
                .get(b.allocation)
                .ok_or_else(|| StoreError::Manifest(format!("no allocation {}", b.allocation)))?;
            let end = b.offset.checked_add(b.length);
            if end.is_none_or(|end| end > allocation.size) {
                return Err(StoreError::Manifest(format!(
                    "buffer at {}+{} is outside allocation {} of {} bytes",
                    b.offset, b.length, b.allocation, allocation.size
                )));
            }
            let len = usize::try_from(b.length)
                .map_err(|_| StoreError::Manifest(format!("buffer of {} bytes", b.length)))?;
            // 64-byte aligned, as Arrow's typed views of the bytes need.
            let mut bytes = MutableBuffer::from_len_zeroed(len);
            read(allocation, b.offset, bytes.as_slice_mut())?;
            Ok(bytes.into())
        };
        let mut buffers = info.buffers.iter();
        let validity = match info.buffers.first() {
            Some(b) if b.kind == "validity" => {
                buffers.next();
                Some(fetch(b)?)
            }
            _ => None,
        };
        let buffers = buffers.map(&mut fetch).collect::<Result<Vec<_>, _>>()?;
        let child_types = child_types(data_type);
        if child_types.len() != info.children.len() {
            return Err(StoreError::Manifest(format!(
                "{} children for type {data_type}, which has {}",
                info.children.len(),
                child_types.len()
            )));
        }
        let children = child_types
            .iter()
            .zip(&info.children)
            .map(|(t, c)| self.array_data(t, c, read))
            .collect::<Result<Vec<_>, _>>()?;
        let data = ArrayData::builder(data_type.clone())
            .len(info.rows)
            .null_count(info.null_count)
            .null_bit_buffer(validity)
            .buffers(buffers)
            .child_data(children)
            .build()
            .map_err(|e| StoreError::Manifest(e.to_string()))?;
        data.validate_full()
            .map_err(|e| StoreError::Manifest(e.to_string()))?;
        Ok(data)
    }
}

/// Types of an array's children, in `ArrayData` order.
fn child_types(dt: &DataType) -> Vec<DataType> {
    match dt {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => vec![f.data_type().clone()],
        DataType::Struct(fields) => fields_types(fields),
        DataType::Dictionary(_, values) => vec![values.as_ref().clone()],
        _ => Vec::new(),
    }
}

fn fields_types(fields: &Fields) -> Vec<DataType> {
    fields.iter().map(|f| f.data_type().clone()).collect()
}

fn array_info(c: &ColumnLayout) -> ArrayInfo {
    let place = |kind: &str, dtype: String, b: &BufferLayout| BufferInfo {
        kind: kind.into(),
        dtype,
        allocation: b.allocation,
        offset: b.offset,
        length: b.length,
    };
    let mut buffers = Vec::with_capacity(c.buffers.len() + 1);
    if let Some(v) = &c.validity {
        buffers.push(place("validity", "bitmap".into(), v));
    }
    let kinds = buffer_kinds(&c.data_type);
    for (i, b) in c.buffers.iter().enumerate() {
        let (kind, dtype) = kinds
            .get(i)
            .cloned()
            .unwrap_or_else(|| ("buffer", "uint8".into()));
        buffers.push(place(kind, dtype, b));
    }
    ArrayInfo {
        rows: c.len,
        null_count: c.null_count,
        buffers,
        children: c.children.iter().map(array_info).collect(),
    }
}

/// Kind and element type of each buffer of an array of type `dt`, in
/// `ArrayData` order.
fn buffer_kinds(dt: &DataType) -> Vec<(&'static str, String)> {
    match dt {
        DataType::Null | DataType::Struct(_) | DataType::FixedSizeList(..) => Vec::new(),
        DataType::Boolean => vec![("values", "bitmap".into())],
        DataType::Utf8 | DataType::Binary => {
            vec![("offsets", "int32".into()), ("data", "uint8".into())]
        }
        DataType::LargeUtf8 | DataType::LargeBinary => {
            vec![("offsets", "int64".into()), ("data", "uint8".into())]
        }
        DataType::List(_) | DataType::Map(..) => vec![("offsets", "int32".into())],
        DataType::LargeList(_) => vec![("offsets", "int64".into())],
        DataType::Dictionary(keys, _) => vec![("keys", element_dtype(keys))],
        other => vec![("values", element_dtype(other))],
    }
}

/// The element type of a fixed-width type's values buffer.
fn element_dtype(dt: &DataType) -> String {
    match dt {
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 | DataType::Date32 | DataType::Time32(_) => "int32".into(),
        DataType::Interval(IntervalUnit::YearMonth) => "int32".into(),
        DataType::Int64
        | DataType::Date64
        | DataType::Time64(_)
        | DataType::Timestamp(..)
        | DataType::Duration(_) => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float16 => "float16".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Decimal128(..) => "decimal128".into(),
        DataType::Decimal256(..) => "decimal256".into(),
        DataType::Interval(IntervalUnit::MonthDayNano) => "interval_month_day_nano".into(),
        DataType::Interval(IntervalUnit::DayTime) => "interval_day_time".into(),
        DataType::FixedSizeBinary(n) => format!("fixed_size_binary[{n}]"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    #[test]
    fn element_types() {
        assert_eq!(
            buffer_kinds(&DataType::Utf8),
            vec![("offsets", "int32".into()), ("data", "uint8".into())]
        );
        assert_eq!(
            buffer_kinds(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            vec![("values", "int64".into())]
        );
        assert_eq!(
            buffer_kinds(&DataType::FixedSizeBinary(16)),
            vec![("values", "fixed_size_binary[16]".into())]
        );
        assert_eq!(
            buffer_kinds(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            vec![("keys", "int32".into())]
        );
        assert!(buffer_kinds(&DataType::Struct(Fields::empty())).is_empty());
    }
}

//! Arrow IPC file sink. IPC encoding is a copy of the Arrow buffers (plus optional body
//! compression), so one writer behind a mutex keeps up; the IPC file format also needs a
//! single dictionary per column, which the sink maintains across all writers (below).

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::ipc::writer::{DictionaryHandling, FileWriter, IpcWriteOptions};
use arrow::ipc::CompressionType;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, SchemaRef};

use crate::target::{take_io_error, ErrorTap, IoErrorSlot, OutputTarget};
use crate::{check_batch_schema, Compression, OutputStats, Sink, SinkError, SinkOptions};

/// Large enough that the many small header/padding writes of IPC messages coalesce.
const BUFFER_BYTES: usize = 1 << 20;

pub(crate) fn ipc_compression(c: Compression) -> Result<Option<CompressionType>, SinkError> {
    match c {
        Compression::Zstd(_) => Ok(Some(CompressionType::ZSTD)),
        Compression::Lz4 => Ok(Some(CompressionType::LZ4_FRAME)),
        Compression::None => Ok(None),
        other => Err(SinkError::Unsupported {
            what: format!(
                "{other} compression in Arrow IPC files (Arrow IPC supports zstd, lz4 and none)"
            ),
        }),
    }
}

type IpcWriter<W> = FileWriter<BufWriter<ErrorTap<W>>>;

struct IpcState<W: Write + Send> {
    /// `None` once finished or failed.
    writer: Option<IpcWriter<W>>,
    /// Per column: the file-wide dictionary of a `Dictionary(Int32, Utf8)` column.
    dictionaries: Vec<Option<UnifiedDictionary>>,
}

pub(crate) struct IpcSink<W: Write + Send> {
    path: PathBuf,
    schema: SchemaRef,
    state: Mutex<IpcState<W>>,
    io_error: IoErrorSlot,
    failed: AtomicBool,
    rows: AtomicU64,
    write_nanos: AtomicU64,
    /// Declared last: dropped after the file handle, it removes the temporary file unless
    /// `finish` committed it.
    target: OutputTarget,
}

impl IpcSink<std::fs::File> {
    pub(crate) fn new(
        target: OutputTarget,
        file: std::fs::File,
        schema: SchemaRef,
        opts: &SinkOptions,
    ) -> Result<Self, SinkError> {
        Self::with_writer(target, file, schema, opts)
    }
}

impl<W: Write + Send> IpcSink<W> {
    pub(crate) fn with_writer(
        target: OutputTarget,
        writer: W,
        schema: SchemaRef,
        opts: &SinkOptions,
    ) -> Result<Self, SinkError> {
        let path = target.final_path().to_path_buf();
        let arrow_err = |during, source| SinkError::Arrow {
            path: path.clone(),
            during,
            source,
        };
        let compression = ipc_compression(opts.compression)?;
        let mut options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .map_err(|e| arrow_err("configuring compression", e))?
            // Batches carry only the dictionary entries new to the file, which the IPC file
            // format allows (a replaced dictionary it does not).
            .with_dictionary_handling(DictionaryHandling::Delta);
        if let Compression::Zstd(level) = opts.compression {
            options = options
                .try_with_compression_level(Some(level))
                .map_err(|e| arrow_err("configuring compression", e))?;
        }
        let io_error = IoErrorSlot::default();
        let sink = BufWriter::with_capacity(BUFFER_BYTES, ErrorTap::new(writer, io_error.clone()));
        let writer = FileWriter::try_new_with_options(sink, &schema, options)
            .map_err(|e| ipc_error(&path, &io_error, "writing the file header", e))?;
        let dictionaries = schema
            .fields()
            .iter()
            .map(|f| unifiable(f.data_type()).then(UnifiedDictionary::default))
            .collect();
        Ok(Self {
            path,
            schema,
            state: Mutex::new(IpcState {
                writer: Some(writer),
                dictionaries,
            }),
            io_error,
            failed: AtomicBool::new(false),
            rows: AtomicU64::new(0),
            write_nanos: AtomicU64::new(0),
            target,
        })
    }

    fn failed(&self) -> SinkError {
        SinkError::Failed {
            path: self.path.clone(),
        }
    }

    fn write_inner(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let mut state = self.state.lock().map_err(|_| self.failed())?;
        let start = Instant::now();
        let IpcState {
            writer,
            dictionaries,
        } = &mut *state;
        let batch = if dictionaries.iter().any(Option::is_some) {
            let columns = batch
                .columns()
                .iter()
                .zip(dictionaries.iter_mut())
                .map(|(column, dict)| match dict {
                    Some(d) => d.remap(column),
                    None => column.clone(),
                })
                .collect();
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| SinkError::Arrow {
                path: self.path.clone(),
                during: "rebuilding a batch with file-wide dictionaries",
                source: e,
            })?
        } else {
            batch.clone()
        };
        let writer = writer.as_mut().ok_or_else(|| self.failed())?;
        writer
            .write(&batch)
            .map_err(|e| ipc_error(&self.path, &self.io_error, "writing a record batch", e))?;
        drop(state);
        self.write_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn finish_inner(self) -> Result<OutputStats, SinkError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed());
        }
        let start = Instant::now();
        let writer = self
            .state
            .lock()
            .map_err(|_| self.failed())?
            .writer
            .take()
            .ok_or_else(|| self.failed())?;
        let buffered = writer
            .into_inner()
            .map_err(|e| ipc_error(&self.path, &self.io_error, "writing the footer", e))?;
        let mut file = buffered
            .into_inner()
            .map_err(|e| SinkError::Io {
                path: self.path.clone(),
                during: "flushing the file",
                source: take_io_error(&self.io_error).unwrap_or_else(|| e.into_error()),
            })?
            .into_inner();
        file.flush().map_err(|source| SinkError::Io {
            path: self.path.clone(),
            during: "flushing the file",
            source,
        })?;
        drop(file);
        let write_seconds = (self.write_nanos.load(Ordering::Relaxed) as f64
            + start.elapsed().as_nanos() as f64)
            / 1e9;
        let rows = self.rows.load(Ordering::Relaxed);
        let path = self.path.clone();
        let bytes = self.target.commit()?;
        Ok(OutputStats {
            files: vec![(path, bytes)],
            rows,
            encode_seconds: 0.0,
            write_seconds,
        })
    }
}

impl<W: Write + Send> Sink for IpcSink<W> {
    fn write(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed());
        }
        check_batch_schema(&self.path, &self.schema, batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let result = self.write_inner(batch);
        if result.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn finish(self: Box<Self>) -> Result<OutputStats, SinkError> {
        (*self).finish_inner()
    }
}

fn ipc_error(
    path: &std::path::Path,
    slot: &IoErrorSlot,
    during: &'static str,
    e: ArrowError,
) -> SinkError {
    match take_io_error(slot) {
        Some(source) => SinkError::Io {
            path: path.to_path_buf(),
            during,
            source,
        },
        None => SinkError::Arrow {
            path: path.to_path_buf(),
            during,
            source: e,
        },
    }
}

/// Top-level `Dictionary(Int32, Utf8)` columns (what the decoder emits) get a file-wide
/// dictionary. Other dictionary types are passed through; the IPC writer rejects them with a
/// clear error if their dictionaries differ between batches.
fn unifiable(dt: &DataType) -> bool {
    matches!(dt, DataType::Dictionary(k, v)
        if **k == DataType::Int32 && **v == DataType::Utf8)
}

/// Each decoder thread builds its own dictionary per batch, but an IPC file may only extend a
/// column's dictionary (delta), never replace it. This keeps the union of all values seen, in
/// first-seen order, and rewrites each batch's keys into it; the dictionary array only grows,
/// so the writer emits just the new entries as a delta.
#[derive(Default)]
struct UnifiedDictionary {
    ids: HashMap<Box<str>, i32>,
    values: Vec<Box<str>>,
    /// The current dictionary; reused (same buffers) while it does not grow, which lets the
    /// writer skip comparing it with what it already wrote.
    array: Option<ArrayRef>,
}

impl UnifiedDictionary {
    fn remap(&mut self, column: &ArrayRef) -> ArrayRef {
        let dict: &DictionaryArray<Int32Type> = column.as_dictionary();
        let local = dict.values().as_string::<i32>();
        let mut grew = self.array.is_none();
        let mapping: Vec<Option<i32>> = (0..local.len())
            .map(|i| {
                if local.is_null(i) {
                    return None;
                }
                let value = local.value(i);
                if let Some(&id) = self.ids.get(value) {
                    return Some(id);
                }
                let id = self.values.len() as i32;
                self.values.push(value.into());
                self.ids.insert(value.into(), id);
                grew = true;
                Some(id)
            })
            .collect();
        let keys: Int32Array = dict
            .keys()
            .iter()
            .map(|k| k.and_then(|k| mapping.get(k as usize).copied().flatten()))
            .collect();
        if grew {
            let values: StringArray = self.values.iter().map(|v| Some(&**v)).collect();
            self.array = Some(Arc::new(values));
        }
        let values = self
            .array
            .clone()
            .unwrap_or_else(|| Arc::new(StringArray::new_null(0)));
        // Keys index into `values` by construction; `new_unchecked` would avoid the bounds
        // check but is not worth unsafe code here.
        Arc::new(DictionaryArray::new(keys, values))
    }
}

//! Parquet sink on arrow-rs's low-level parallel writer API.
//!
//! Each `write` call encodes its batch, in the calling thread, into column writers of a row
//! group that thread owns for the moment. A row group that reached `row_group_rows` is closed
//! (final pages and dictionary compressed, still in the calling thread) and its finished column
//! chunks are appended to the file under a short mutex: appending is a memcpy into the
//! `BufWriter`/file, so N threads encode in parallel and the lock is never the bottleneck.
//! Partial row groups are parked in a pool for the next writer, so small batches still make
//! full-size row groups, and are closed in parallel in `finish`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arrow::compute::cast;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
    ArrowWriterOptions,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{BrotliLevel, Compression as PqCompression, GzipLevel, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;

use crate::target::{take_io_error, ErrorTap, IoErrorSlot, OutputTarget};
use crate::{
    check_batch_schema, Compression, OutputStats, Sink, SinkError, SinkOptions,
    DEFAULT_ROW_GROUP_ROWS,
};

/// Dictionary pages are capped at 128 KiB: a column whose distinct values outgrow this falls
/// back to plain encoding early (high-cardinality keys gain nothing from a dictionary, and a
/// large dictionary costs hashing time and reader memory). Measured on a lineorder-like batch
/// (examples/parquet_speed, zstd:1, one thread): 1 MiB took 1.18 s of encoding for 4M rows and
/// gave a 131.8 MB file; 128 KiB took 0.84 s and gave 118.4 MB.
const DICTIONARY_PAGE_SIZE_LIMIT: usize = 1 << 17;

pub(crate) fn parquet_compression(c: Compression) -> Result<PqCompression, SinkError> {
    let invalid = |e: ParquetError| SinkError::InvalidCompression {
        spec: c.to_string(),
        reason: e.to_string(),
    };
    Ok(match c {
        Compression::Zstd(level) => {
            PqCompression::ZSTD(ZstdLevel::try_new(level).map_err(invalid)?)
        }
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::Gzip => PqCompression::GZIP(GzipLevel::default()),
        Compression::Brotli => PqCompression::BROTLI(BrotliLevel::default()),
        Compression::None => PqCompression::UNCOMPRESSED,
    })
}

fn writer_properties(opts: &SinkOptions) -> Result<WriterProperties, SinkError> {
    Ok(WriterProperties::builder()
        .set_compression(parquet_compression(opts.compression)?)
        .set_dictionary_enabled(true)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_SIZE_LIMIT)
        // Chunk-level min/max is enough for row-group pruning; page-level statistics and the
        // column index they feed cost encode time on every page.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("gpupgparser {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// A row group being filled: one column writer per Parquet leaf column.
struct OpenGroup {
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
}

struct FileState<W: Write + Send> {
    /// `None` once the footer was written (or writing it failed).
    writer: Option<SerializedFileWriter<ErrorTap<W>>>,
}

pub(crate) struct ParquetSink<W: Write + Send> {
    path: PathBuf,
    /// Schema of incoming batches.
    input_schema: SchemaRef,
    /// Schema actually written: `input_schema` with types Parquet cannot store rewritten
    /// (negative-scale decimals), embedded in the file as ARROW:schema.
    storage_schema: SchemaRef,
    /// Per column, the type to cast incoming arrays to, where it differs.
    casts: Vec<Option<DataType>>,
    /// Parquet column path of each leaf writer, for error messages.
    leaf_names: Vec<String>,
    factory: ArrowRowGroupWriterFactory,
    row_group_rows: usize,
    open_groups: Mutex<Vec<OpenGroup>>,
    file: Mutex<FileState<W>>,
    io_error: IoErrorSlot,
    failed: AtomicBool,
    rows: AtomicU64,
    encode_nanos: AtomicU64,
    write_nanos: AtomicU64,
    /// Declared last: dropped after the file handle, it removes the temporary file unless
    /// `finish` committed it.
    target: OutputTarget,
}

impl ParquetSink<std::fs::File> {
    pub(crate) fn new(
        target: OutputTarget,
        file: std::fs::File,
        schema: SchemaRef,
        opts: &SinkOptions,
    ) -> Result<Self, SinkError> {
        Self::with_writer(target, file, schema, opts)
    }
}

impl<W: Write + Send> ParquetSink<W> {
    /// Builds the sink over any writer (tests inject failing ones).
    pub(crate) fn with_writer(
        target: OutputTarget,
        writer: W,
        schema: SchemaRef,
        opts: &SinkOptions,
    ) -> Result<Self, SinkError> {
        let path = target.final_path().to_path_buf();
        let mut casts = Vec::with_capacity(schema.fields().len());
        let mut storage_fields = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let storage =
                storage_type(field.data_type()).map_err(|why| SinkError::Unsupported {
                    what: format!("column {:?} in {}: {why}", field.name(), path.display()),
                })?;
            storage_fields.push(match &storage {
                Some(t) => Arc::new(field.as_ref().clone().with_data_type(t.clone())),
                None => field.clone(),
            });
            casts.push(storage);
        }
        let storage_schema = Arc::new(Schema::new_with_metadata(
            storage_fields,
            schema.metadata().clone(),
        ));

        let io_error = IoErrorSlot::default();
        let tap = ErrorTap::new(writer, io_error.clone());
        // ArrowWriter does the Arrow → Parquet schema conversion and embeds the Arrow schema
        // (ARROW:schema, restoring Decimal/timestamp tz/field metadata on read) exactly as
        // readers expect; we then drive its file writer with the parallel column API.
        let options = ArrowWriterOptions::new().with_properties(writer_properties(opts)?);
        let (file_writer, factory) =
            ArrowWriter::try_new_with_options(tap, storage_schema.clone(), options)
                .and_then(ArrowWriter::into_serialized_writer)
                .map_err(|e| parquet_error(&path, &io_error, "writing the file header", e))?;
        let leaf_names = file_writer
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect();
        Ok(Self {
            path,
            input_schema: schema,
            storage_schema,
            casts,
            leaf_names,
            factory,
            row_group_rows: if opts.row_group_rows == 0 {
                DEFAULT_ROW_GROUP_ROWS
            } else {
                opts.row_group_rows
            },
            open_groups: Mutex::new(Vec::new()),
            file: Mutex::new(FileState {
                writer: Some(file_writer),
            }),
            io_error,
            failed: AtomicBool::new(false),
            rows: AtomicU64::new(0),
            encode_nanos: AtomicU64::new(0),
            write_nanos: AtomicU64::new(0),
            target,
        })
    }

    fn failed(&self) -> SinkError {
        SinkError::Failed {
            path: self.path.clone(),
        }
    }

    /// A poisoned lock means a writer thread panicked mid-append: the file is unusable.
    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> Result<MutexGuard<'a, T>, SinkError> {
        m.lock().map_err(|_| self.failed())
    }

    fn new_group(&self) -> Result<OpenGroup, SinkError> {
        let writers = self
            .factory
            .create_column_writers(0)
            .map_err(|e| parquet_error(&self.path, &self.io_error, "creating column writers", e))?;
        Ok(OpenGroup { writers, rows: 0 })
    }

    /// Encodes `columns[offset..offset+len]` into `group`, in the calling thread.
    fn encode_into(
        &self,
        group: &mut OpenGroup,
        columns: &[ArrayRef],
        offset: usize,
        len: usize,
    ) -> Result<(), SinkError> {
        let mut leaf_writers = group.writers.iter_mut();
        for (field, column) in self.storage_schema.fields().iter().zip(columns) {
            let encode_err = |source| SinkError::Encode {
                path: self.path.clone(),
                column: field.name().clone(),
                source,
            };
            let sliced;
            let column = if offset == 0 && len == column.len() {
                column
            } else {
                sliced = column.slice(offset, len);
                &sliced
            };
            for leaf in compute_leaves(field, column).map_err(encode_err)? {
                let writer = leaf_writers.next().ok_or_else(|| {
                    encode_err(ParquetError::General(
                        "more leaf columns than column writers".into(),
                    ))
                })?;
                writer.write(&leaf).map_err(encode_err)?;
            }
        }
        group.rows += len;
        Ok(())
    }

    /// Flushes the group's last pages and dictionaries (the compression of the tail happens
    /// here, outside the file lock).
    fn close_group(&self, group: OpenGroup) -> Result<Vec<ArrowColumnChunk>, SinkError> {
        group
            .writers
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                w.close().map_err(|source| SinkError::Encode {
                    path: self.path.clone(),
                    column: self.leaf_names.get(i).cloned().unwrap_or_default(),
                    source,
                })
            })
            .collect()
    }

    /// Appends finished chunks as one row group: the only serialized step.
    fn append(&self, chunks: Vec<ArrowColumnChunk>, rows: usize) -> Result<(), SinkError> {
        let mut state = self.lock(&self.file)?;
        let start = Instant::now();
        let writer = state.writer.as_mut().ok_or_else(|| self.failed())?;
        let result = (|| {
            let mut row_group = writer.next_row_group()?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut row_group)?;
            }
            row_group.close().map(|_| ())
        })();
        result
            .map_err(|e| parquet_error(&self.path, &self.io_error, "appending a row group", e))?;
        drop(state);
        add_nanos(&self.write_nanos, start);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_inner(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let cast_start = Instant::now();
        let columns = self.to_storage(batch)?;
        add_nanos(&self.encode_nanos, cast_start);
        let total = batch.num_rows();
        let mut offset = 0;
        while offset < total {
            let parked = self.lock(&self.open_groups)?.pop();
            let mut group = match parked {
                Some(g) => g,
                None => self.new_group()?,
            };
            let len = (total - offset).min(self.row_group_rows - group.rows);
            let encode_start = Instant::now();
            self.encode_into(&mut group, &columns, offset, len)?;
            offset += len;
            if group.rows >= self.row_group_rows {
                let rows = group.rows;
                let chunks = self.close_group(group)?;
                add_nanos(&self.encode_nanos, encode_start);
                self.append(chunks, rows)?;
            } else {
                add_nanos(&self.encode_nanos, encode_start);
                self.lock(&self.open_groups)?.push(group);
            }
        }
        Ok(())
    }

    /// Casts columns Parquet cannot store as they are (see [`storage_type`]).
    fn to_storage(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, SinkError> {
        batch
            .columns()
            .iter()
            .zip(&self.casts)
            .zip(self.input_schema.fields())
            .map(|((column, to), field)| match to {
                None => Ok(column.clone()),
                Some(to) => cast(column, to).map_err(|e| SinkError::Encode {
                    path: self.path.clone(),
                    column: field.name().clone(),
                    source: ParquetError::General(format!(
                        "rescaling negative-scale decimals to {to}: {e}"
                    )),
                }),
            })
            .collect()
    }

    fn finish_inner(self) -> Result<OutputStats, SinkError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed());
        }
        let groups = std::mem::take(&mut *self.lock(&self.open_groups)?);
        // Up to one partial group per writer thread: close them in parallel so `finish` does
        // not compress all the tails on one core.
        let encode_start = Instant::now();
        let this = &self;
        let closed: Vec<Result<(Vec<ArrowColumnChunk>, usize), SinkError>> =
            std::thread::scope(|s| {
                let handles: Vec<_> = groups
                    .into_iter()
                    .filter(|g| g.rows > 0)
                    .map(|g| {
                        s.spawn(move || {
                            let rows = g.rows;
                            this.close_group(g).map(|c| (c, rows))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(this.failed())))
                    .collect()
            });
        add_nanos(&self.encode_nanos, encode_start);
        for group in closed {
            let (chunks, rows) = group?;
            self.append(chunks, rows)?;
        }

        let footer_start = Instant::now();
        let writer = self
            .lock(&self.file)?
            .writer
            .take()
            .ok_or_else(|| self.failed())?;
        let tap = writer
            .into_inner()
            .map_err(|e| parquet_error(&self.path, &self.io_error, "writing the footer", e))?;
        let mut file = tap.into_inner();
        file.flush().map_err(|source| SinkError::Io {
            path: self.path.clone(),
            during: "flushing the file",
            source,
        })?;
        drop(file);
        add_nanos(&self.write_nanos, footer_start);

        let stats = OutputStats {
            files: Vec::new(),
            rows: self.rows.load(Ordering::Relaxed),
            encode_seconds: nanos_to_secs(&self.encode_nanos),
            write_seconds: nanos_to_secs(&self.write_nanos),
        };
        let path = self.path.clone();
        let bytes = self.target.commit()?;
        Ok(OutputStats {
            files: vec![(path, bytes)],
            ..stats
        })
    }
}

impl<W: Write + Send> Sink for ParquetSink<W> {
    fn write(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed());
        }
        check_batch_schema(&self.path, &self.input_schema, batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let result = self.write_inner(batch);
        if result.is_err() {
            // A row group may be half-encoded or half-appended: the file cannot be completed.
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn finish(self: Box<Self>) -> Result<OutputStats, SinkError> {
        (*self).finish_inner()
    }
}

/// Parquet cannot store some Arrow types the decoder emits as they are; this returns the
/// type to write instead (recursively), or `None` if `dt` is stored as is.
///
/// Negative-scale decimals (PostgreSQL `numeric(p,-s)`): Parquet requires scale >= 0, so
/// `Decimal128(p, -s)` becomes `Decimal128(p + s, 0)` holding the same numbers.
pub(crate) fn storage_type(dt: &DataType) -> Result<Option<DataType>, String> {
    let field_with = |f: &Field, t: DataType| Arc::new(f.clone().with_data_type(t));
    Ok(match dt {
        DataType::Decimal128(p, s) if *s < 0 => {
            let precision = i32::from(*p) - i32::from(*s);
            if precision > 38 {
                return Err(format!(
                    "{dt} needs precision {precision} at scale 0, more than Parquet's Decimal128 maximum of 38"
                ));
            }
            Some(DataType::Decimal128(precision as u8, 0))
        }
        DataType::Decimal256(p, s) if *s < 0 => {
            let precision = i32::from(*p) - i32::from(*s);
            if precision > 76 {
                return Err(format!(
                    "{dt} needs precision {precision} at scale 0, more than the Decimal256 maximum of 76"
                ));
            }
            Some(DataType::Decimal256(precision as u8, 0))
        }
        DataType::List(f) => storage_type(f.data_type())?.map(|t| DataType::List(field_with(f, t))),
        DataType::LargeList(f) => {
            storage_type(f.data_type())?.map(|t| DataType::LargeList(field_with(f, t)))
        }
        DataType::FixedSizeList(f, n) => {
            storage_type(f.data_type())?.map(|t| DataType::FixedSizeList(field_with(f, t), *n))
        }
        DataType::Struct(fields) => {
            let mut changed = false;
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                match storage_type(f.data_type())? {
                    Some(t) => {
                        changed = true;
                        out.push(field_with(f, t));
                    }
                    None => out.push(f.clone()),
                }
            }
            changed.then(|| DataType::Struct(out.into()))
        }
        DataType::Dictionary(k, v) => {
            storage_type(v)?.map(|t| DataType::Dictionary(k.clone(), Box::new(t)))
        }
        _ => None,
    })
}

/// Maps a Parquet error to `SinkError::Io` when it came from the file (the tap kept the
/// original `io::Error`, e.g. ENOSPC), otherwise to `SinkError::Parquet`.
fn parquet_error(
    path: &Path,
    slot: &IoErrorSlot,
    during: &'static str,
    e: ParquetError,
) -> SinkError {
    match take_io_error(slot) {
        Some(source) => SinkError::Io {
            path: path.to_path_buf(),
            during,
            source,
        },
        None => SinkError::Parquet {
            path: path.to_path_buf(),
            during,
            source: e,
        },
    }
}

fn add_nanos(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

fn nanos_to_secs(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64 / 1e9
}

//! Arrow IPC file sink, encoding in the calling threads.
//!
//! Encoding a batch (zstd or lz4 compression of its buffers, or their copy into the message
//! body) is the expensive part of writing Arrow IPC, and arrow's `FileWriter` does it inside
//! `write`, which would have to be serialized. So each writer encodes its batch itself with
//! arrow's `StreamEncoder` (one message, the batch's own buffers where uncompressed: nothing is
//! copied before the write to the file), and only the append of the finished message to the
//! file and the record of its block for the footer happen under the file lock. Uncompressed
//! output gains least: its serialized append is as many bytes as the batch (a copy into the
//! page cache), as before. The file framing around
//! the messages (magic, schema message, end-of-stream marker, footer) is written here, laid out
//! exactly as `FileWriter` lays it out: one writer gets a byte-identical file (tested).
//!
//! Dictionaries: an IPC file has one dictionary per column that may only be extended (delta
//! dictionary batches), never replaced, while each decoder thread builds its own dictionary per
//! batch. Top-level `Dictionary(Int32, Utf8)` columns (what the decoder emits) therefore get a
//! file-wide dictionary that grows in first-seen order. Under a small dictionary lock, a writer
//! maps its batch's dictionary entries to file-wide ids and, if it added entries, encodes and
//! appends them as a dictionary batch before releasing that lock; every other writer that could
//! use those ids takes the lock afterwards, so no record batch reaches the file before the
//! dictionary entries it references. Rewriting the keys and encoding the batch happen outside
//! both locks; batches of a table without dictionary columns never take the dictionary lock.
//! A record batch message carries dictionary keys exactly like a plain Int32 column (the values
//! live in the dictionary batches), so those batches are encoded as their keys.
//!
//! Any other dictionary (nested in a list or struct, or another key or value type) keeps its
//! per-batch dictionary, which the file format accepts only if it stays the same or only grows;
//! tables with one are encoded and written entirely under the dictionary lock, with arrow's
//! dictionary tracker rejecting a replaced dictionary, as `FileWriter` would.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arrow::buffer::Buffer;
use arrow::ipc::convert::IpcSchemaEncoder;
use arrow::ipc::writer::{
    write_message, DictionaryHandling, DictionaryTracker, EncodedData, IpcDataGenerator,
    IpcWriteContext, IpcWriteOptions, StreamEncoder,
};
use arrow::ipc::{Block, CompressionType, FooterBuilder, MetadataVersion};
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{
    new_empty_array, Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::target::{take_io_error, ErrorTap, IoErrorSlot, OutputTarget};
use crate::{check_batch_schema, Compression, OutputStats, Sink, SinkError, SinkOptions};

/// Large enough that the small header and padding writes of IPC messages coalesce.
const BUFFER_BYTES: usize = 1 << 20;

/// Alignment of messages and body buffers, `FileWriter`'s default: body buffers start on
/// 64-byte boundaries of the file, which suits readers that map it.
const ALIGNMENT: usize = 64;

const MAGIC: &[u8; 6] = b"ARROW1";

/// An IPC message prefix: continuation marker then the metadata length (0: end of stream).
const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

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

/// Metadata V5 (the current version, required for body compression) with continuation
/// markers, as `FileWriter` writes by default.
fn write_options(
    compression: Option<CompressionType>,
    c: Compression,
) -> Result<IpcWriteOptions, ArrowError> {
    let options = IpcWriteOptions::try_new(ALIGNMENT, false, MetadataVersion::V5)?
        .try_with_compression(compression)?
        // Dictionary batches after the first carry only entries new to the file.
        .with_dictionary_handling(DictionaryHandling::Delta);
    match c {
        Compression::Zstd(level) => options.try_with_compression_level(Some(level)),
        _ => Ok(options),
    }
}

/// The file and what its footer will list. Locked only to append finished messages.
struct FileState<W: Write> {
    /// `None` once finished.
    out: Option<BufWriter<ErrorTap<W>>>,
    /// Bytes written so far: where the next message starts.
    offset: usize,
    dictionary_blocks: Vec<Block>,
    record_blocks: Vec<Block>,
}

/// An encoded message, ready to be appended.
enum Message {
    /// Metadata and a contiguous body (`IpcDataGenerator::encode`), framed when written.
    Data(EncodedData),
    /// A framed record batch message from a [`StreamEncoder`]: prefix, metadata and the body
    /// buffers, which are the batch's own buffers where uncompressed (nothing is copied before
    /// the write to the file).
    Framed {
        buffers: Vec<Buffer>,
        /// Prefix and padded metadata, as the footer's block records it.
        metadata_len: usize,
        body_len: usize,
    },
}

impl<W: Write> FileState<W> {
    /// Appends one message and returns its block (offset, padded metadata length, body length)
    /// for the footer, and its buffers, to be freed after the lock is released.
    fn append(
        &mut self,
        message: Message,
        options: &IpcWriteOptions,
    ) -> Result<(Block, Vec<Buffer>), ArrowError> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| ArrowError::IpcError("the file is already finished".into()))?;
        let (metadata_len, body_len, buffers) = match message {
            Message::Data(data) => {
                let (metadata_len, body_len) = write_message(out, data, options)?;
                (metadata_len, body_len, Vec::new())
            }
            Message::Framed {
                buffers,
                metadata_len,
                body_len,
            } => {
                for buffer in &buffers {
                    out.write_all(buffer)?;
                }
                (metadata_len, body_len, buffers)
            }
        };
        let block = Block::new(self.offset as i64, metadata_len as i32, body_len as i64);
        self.offset += metadata_len + body_len;
        Ok((block, buffers))
    }
}

struct DictState {
    /// Per column: the file-wide dictionary of a top-level `Dictionary(Int32, Utf8)` column.
    unified: Vec<Option<UnifiedDictionary>>,
    /// What the file has of every dictionary; used only by [`IpcSink::write_serialized`].
    tracker: DictionaryTracker,
}

pub(crate) struct IpcSink<W: Write + Send> {
    path: PathBuf,
    schema: SchemaRef,
    /// `schema` with the file-wide dictionary columns as their Int32 keys: how batches are
    /// encoded (a record batch message holds only the keys of a dictionary column).
    keys_schema: SchemaRef,
    options: IpcWriteOptions,
    /// Some column has a file-wide dictionary.
    unifies: bool,
    /// Some dictionary is not file-wide: batches are encoded under the dictionary lock.
    serialized: bool,
    dicts: Mutex<DictState>,
    file: Mutex<FileState<W>>,
    /// Encoders of `keys_schema` batches, each past its schema message; reused across batches
    /// (with their flatbuffer builder and zstd context).
    encoders: Mutex<Vec<StreamEncoder>>,
    /// Scratch state (flatbuffer builder, zstd context) of `IpcDataGenerator`, which encodes
    /// dictionary batches and the batches of `write_serialized`.
    contexts: Mutex<Vec<IpcWriteContext>>,
    io_error: IoErrorSlot,
    failed: AtomicBool,
    rows: AtomicU64,
    encode_nanos: AtomicU64,
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
    /// Builds the sink over any writer (tests inject failing ones) and writes the file header:
    /// magic padded to the alignment, then the schema message.
    pub(crate) fn with_writer(
        target: OutputTarget,
        writer: W,
        schema: SchemaRef,
        opts: &SinkOptions,
    ) -> Result<Self, SinkError> {
        let path = target.final_path().to_path_buf();
        let compression = ipc_compression(opts.compression)?;
        let options =
            write_options(compression, opts.compression).map_err(|e| SinkError::Arrow {
                path: path.clone(),
                during: "configuring compression",
                source: e,
            })?;
        if let Some(field) = schema.fields().iter().find(|f| {
            crate::contains_type(f.data_type(), &|t| {
                matches!(t, DataType::Dictionary(_, v) if matches!(**v, DataType::Dictionary(..)))
            })
        }) {
            return Err(SinkError::Arrow {
                path,
                during: "writing the file header",
                source: ArrowError::InvalidArgumentError(format!(
                    "Arrow IPC cannot encode dictionary-of-dictionary values (column {:?})",
                    field.name()
                )),
            });
        }

        // The tracker numbers the dictionaries in schema order, as every encoder will.
        let mut tracker = DictionaryTracker::new(true);
        let schema_message = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            &schema,
            &mut tracker,
            &options,
        );
        let unified: Vec<Option<UnifiedDictionary>> = schema
            .fields()
            .iter()
            .map(|f| unifiable(f.data_type()).then(UnifiedDictionary::default))
            .collect();
        let unified_count = unified.iter().flatten().count();
        // Every dictionary file-wide means one dictionary id per such column, in column order.
        let serialized = tracker.dict_id().len() != unified_count;
        let keys_schema = Arc::new(Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .map(|f| {
                    if unifiable(f.data_type()) {
                        Arc::new(Field::clone(f).with_data_type(DataType::Int32))
                    } else {
                        f.clone()
                    }
                })
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ));

        let io_error = IoErrorSlot::default();
        let mut out =
            BufWriter::with_capacity(BUFFER_BYTES, ErrorTap::new(writer, io_error.clone()));
        let header = (|| {
            out.write_all(MAGIC)?;
            out.write_all(&[0; ALIGNMENT - MAGIC.len()])?;
            write_message(&mut out, schema_message, &options)
        })()
        .map_err(|e| ipc_error(&path, &io_error, "writing the file header", e))?;
        Ok(Self {
            path,
            schema,
            keys_schema,
            options,
            unifies: unified_count > 0,
            serialized,
            dicts: Mutex::new(DictState { unified, tracker }),
            file: Mutex::new(FileState {
                out: Some(out),
                offset: ALIGNMENT + header.0 + header.1,
                dictionary_blocks: Vec::new(),
                record_blocks: Vec::new(),
            }),
            encoders: Mutex::new(Vec::new()),
            contexts: Mutex::new(Vec::new()),
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

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> Result<MutexGuard<'a, T>, SinkError> {
        m.lock().map_err(|_| self.failed())
    }

    fn arrow_error(&self, during: &'static str, e: ArrowError) -> SinkError {
        SinkError::Arrow {
            path: self.path.clone(),
            during,
            source: e,
        }
    }

    fn write_inner(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        if self.serialized {
            return self.write_serialized(batch);
        }
        let batch = if self.unifies {
            self.to_file_keys(batch)?
        } else {
            batch.clone()
        };
        let start = Instant::now();
        let message = self
            .encode_framed(&batch)
            .map_err(|e| self.arrow_error("encoding a record batch", e))?;
        add_nanos(&self.encode_nanos, start);
        self.append(Vec::new(), Some(message))?;
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Maps the batch's dictionary columns to the file-wide dictionaries and returns the batch
    /// with those columns as file-wide keys (see `keys_schema`). Entries new to the file are
    /// appended as dictionary batches before the dictionary lock is released.
    fn to_file_keys(&self, batch: &RecordBatch) -> Result<RecordBatch, SinkError> {
        let mappings: Vec<Option<Vec<Option<i32>>>> = {
            let mut dicts = self.lock(&self.dicts)?;
            let start = Instant::now();
            let mappings = batch
                .columns()
                .iter()
                .zip(dicts.unified.iter_mut())
                .map(|(column, dict)| dict.as_mut().map(|d| d.map_values(column)))
                .collect();
            if dicts
                .unified
                .iter()
                .flatten()
                .any(UnifiedDictionary::has_unwritten)
            {
                let messages = self.encode_dictionary_deltas(&dicts.unified)?;
                add_nanos(&self.encode_nanos, start);
                // Still under the dictionary lock: see the module comment.
                self.append(messages.into_iter().map(Message::Data).collect(), None)?;
                for d in dicts.unified.iter_mut().flatten() {
                    d.mark_written();
                }
            } else {
                add_nanos(&self.encode_nanos, start);
            }
            mappings
        };
        let start = Instant::now();
        let columns = batch
            .columns()
            .iter()
            .zip(mappings)
            .map(|(column, mapping)| match mapping {
                Some(m) => Arc::new(remap_keys(column.as_dictionary::<Int32Type>().keys(), &m)),
                None => column.clone(),
            })
            .collect();
        let batch = RecordBatch::try_new(self.keys_schema.clone(), columns)
            .map_err(|e| self.arrow_error("rebuilding a batch with file-wide dictionaries", e))?;
        add_nanos(&self.encode_nanos, start);
        Ok(batch)
    }

    /// Encodes the entries each file-wide dictionary does not have in the file yet: the whole
    /// dictionary the first time (even empty, so that readers find one for every batch), a
    /// delta after that. arrow encodes dictionary batches only as part of a batch, so they are
    /// the dictionaries of an empty batch of the sink's schema (which gives them the file's
    /// dictionary ids), holding just the unwritten entries, with a fresh tracker primed per
    /// column: with an empty dictionary where the file has one (the entries become a delta),
    /// with the very column it will see where nothing is new (no message).
    fn encode_dictionary_deltas(
        &self,
        unified: &[Option<UnifiedDictionary>],
    ) -> Result<Vec<EncodedData>, SinkError> {
        let err = |e| self.arrow_error("encoding dictionary batches", e);
        let mut tracker = DictionaryTracker::new(true);
        IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            &self.schema,
            &mut tracker,
            &self.options,
        );
        let mut ids = tracker.dict_id().to_vec().into_iter();
        let no_keys = Int32Array::from(Vec::<i32>::new());
        let no_values = new_empty_array(&DataType::Utf8);
        let empty =
            || -> ArrayRef { Arc::new(DictionaryArray::new(no_keys.clone(), no_values.clone())) };
        let mut columns = Vec::with_capacity(unified.len());
        for (field, dict) in self.schema.fields().iter().zip(unified) {
            let Some(dict) = dict else {
                columns.push(new_empty_array(field.data_type()));
                continue;
            };
            let id = ids.next().ok_or_else(|| {
                err(ArrowError::IpcError(format!(
                    "internal: no dictionary id for column {:?}",
                    field.name()
                )))
            })?;
            let column = match dict.unwritten() {
                None => {
                    let column = empty();
                    tracker
                        .insert_column(id, &column, DictionaryHandling::Delta)
                        .map_err(err)?;
                    column
                }
                Some((values, is_delta)) => {
                    if is_delta {
                        tracker
                            .insert_column(id, &empty(), DictionaryHandling::Delta)
                            .map_err(err)?;
                    }
                    Arc::new(DictionaryArray::new(no_keys.clone(), values))
                }
            };
            columns.push(column);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(err)?;
        let (dictionaries, _empty_batch) = self.encode(&batch, &mut tracker).map_err(err)?;
        Ok(dictionaries)
    }

    /// Tables with a dictionary that is not file-wide: remap, encode and append under the
    /// dictionary lock, with the shared tracker deciding each dictionary's batch.
    fn write_serialized(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        let mut dicts = self.lock(&self.dicts)?;
        let start = Instant::now();
        let DictState { unified, tracker } = &mut *dicts;
        let columns = batch
            .columns()
            .iter()
            .zip(unified.iter_mut())
            .map(|(column, dict)| match dict {
                Some(d) => {
                    let mapping = d.map_values(column);
                    let keys = remap_keys(column.as_dictionary::<Int32Type>().keys(), &mapping);
                    Arc::new(DictionaryArray::new(keys, d.array())) as ArrayRef
                }
                None => column.clone(),
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| self.arrow_error("rebuilding a batch with file-wide dictionaries", e))?;
        let (dictionaries, message) = self
            .encode(&batch, tracker)
            .map_err(|e| self.arrow_error("encoding a record batch", e))?;
        add_nanos(&self.encode_nanos, start);
        self.append(
            dictionaries.into_iter().map(Message::Data).collect(),
            Some(Message::Data(message)),
        )?;
        drop(dicts);
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Encodes a batch of `keys_schema` (no dictionaries) as one framed record batch message.
    fn encode_framed(&self, batch: &RecordBatch) -> Result<Message, ArrowError> {
        let pooled = self.encoders.lock().ok().and_then(|mut e| e.pop());
        let mut encoder = match pooled {
            Some(e) => e,
            None => {
                let mut e =
                    StreamEncoder::try_new_with_options(&self.keys_schema, self.options.clone())?;
                // The first call also emits the stream's schema message, which the file has.
                e.encode(&RecordBatch::new_empty(self.keys_schema.clone()))?;
                e
            }
        };
        let buffers = encoder.encode(batch)?;
        if let Ok(mut encoders) = self.encoders.lock() {
            encoders.push(encoder);
        }
        // The message starts with the continuation marker and its padded metadata length.
        let mut prefix = Vec::with_capacity(8);
        for b in &buffers {
            prefix.extend(b.iter().take(8 - prefix.len()));
            if prefix.len() == 8 {
                break;
            }
        }
        if prefix.len() != 8 || prefix[..4] != [0xff; 4] {
            return Err(ArrowError::IpcError(
                "internal: unexpected record batch message framing".into(),
            ));
        }
        let metadata_len =
            8 + i32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
        let total: usize = buffers.iter().map(Buffer::len).sum();
        let body_len = total.checked_sub(metadata_len).ok_or_else(|| {
            ArrowError::IpcError("internal: record batch message shorter than its metadata".into())
        })?;
        Ok(Message::Framed {
            buffers,
            metadata_len,
            body_len,
        })
    }

    fn encode(
        &self,
        batch: &RecordBatch,
        tracker: &mut DictionaryTracker,
    ) -> Result<(Vec<EncodedData>, EncodedData), ArrowError> {
        let mut context = self
            .contexts
            .lock()
            .ok()
            .and_then(|mut c| c.pop())
            .unwrap_or_default();
        let result =
            IpcDataGenerator::default().encode(batch, tracker, &self.options, &mut context);
        if let Ok(mut contexts) = self.contexts.lock() {
            contexts.push(context);
        }
        result
    }

    /// The serialized step: appends encoded messages to the file, dictionaries first.
    fn append(&self, dictionaries: Vec<Message>, batch: Option<Message>) -> Result<(), SinkError> {
        let batch_written = batch.is_some();
        let mut file = self.lock(&self.file)?;
        let start = Instant::now();
        let mut written = Vec::new();
        let result = (|| {
            for message in dictionaries {
                let (block, buffers) = file.append(message, &self.options)?;
                file.dictionary_blocks.push(block);
                written.push(buffers);
            }
            if let Some(message) = batch {
                let (block, buffers) = file.append(message, &self.options)?;
                file.record_blocks.push(block);
                written.push(buffers);
            }
            Ok(())
        })();
        drop(file);
        add_nanos(&self.write_nanos, start);
        drop(written);
        let during = if batch_written {
            "writing a record batch"
        } else {
            "writing dictionary batches"
        };
        result.map_err(|e| ipc_error(&self.path, &self.io_error, during, e))
    }

    fn finish_inner(self) -> Result<OutputStats, SinkError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed());
        }
        let mut file = self.lock(&self.file)?;
        let start = Instant::now();
        let mut out = file.out.take().ok_or_else(|| self.failed())?;
        let footer = footer(&self.schema, &file.dictionary_blocks, &file.record_blocks);
        drop(file);
        let io = |during, e: std::io::Error| SinkError::Io {
            path: self.path.clone(),
            during,
            source: take_io_error(&self.io_error).unwrap_or(e),
        };
        (|| {
            out.write_all(&END_OF_STREAM)?;
            out.write_all(&footer)?;
            out.write_all(&(footer.len() as i32).to_le_bytes())?;
            out.write_all(MAGIC)
        })()
        .map_err(|e| io("writing the footer", e))?;
        let mut file = out
            .into_inner()
            .map_err(|e| io("flushing the file", e.into_error()))?
            .into_inner();
        file.flush().map_err(|e| io("flushing the file", e))?;
        drop(file);
        add_nanos(&self.write_nanos, start);
        let rows = self.rows.load(Ordering::Relaxed);
        let encode_seconds = nanos_to_secs(&self.encode_nanos);
        let write_seconds = nanos_to_secs(&self.write_nanos);
        let path = self.path.clone();
        let bytes = self.target.commit()?;
        Ok(OutputStats {
            files: vec![(path, bytes)],
            rows,
            encode_seconds,
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

/// The footer flatbuffer: schema (with the same dictionary ids as the schema message) and the
/// blocks of all dictionary and record batches, in file order, as `FileWriter` builds it.
fn footer(schema: &Schema, dictionaries: &[Block], record_batches: &[Block]) -> Vec<u8> {
    // arrow does not re-export the flatbuffers crate; a finished builder, reset, is a new one.
    let mut fbb = IpcSchemaEncoder::new().schema_to_fb(&Schema::empty());
    fbb.reset();
    let dictionaries = fbb.create_vector(dictionaries);
    let record_batches = fbb.create_vector(record_batches);
    let mut tracker = DictionaryTracker::new(true);
    let schema = IpcSchemaEncoder::new()
        .with_dictionary_tracker(&mut tracker)
        .schema_to_fb_offset(&mut fbb, schema);
    let mut footer = FooterBuilder::new(&mut fbb);
    footer.add_version(MetadataVersion::V5);
    footer.add_schema(schema);
    footer.add_dictionaries(dictionaries);
    footer.add_recordBatches(record_batches);
    let root = footer.finish();
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
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

fn add_nanos(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

fn nanos_to_secs(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64 / 1e9
}

/// Top-level `Dictionary(Int32, Utf8)` columns (what the decoder emits) get a file-wide
/// dictionary.
fn unifiable(dt: &DataType) -> bool {
    matches!(dt, DataType::Dictionary(k, v)
        if **k == DataType::Int32 && **v == DataType::Utf8)
}

/// Rewrites a batch's dictionary keys through `mapping` (batch dictionary index to file-wide
/// id; `None` for a null entry, whose rows become null). Keys are reused when the batch's
/// dictionary is already in file order, as for one writer with a stable dictionary.
fn remap_keys(keys: &Int32Array, mapping: &[Option<i32>]) -> Int32Array {
    if mapping
        .iter()
        .enumerate()
        .all(|(i, id)| *id == Some(i as i32))
    {
        return keys.clone();
    }
    keys.unary_opt(|k| {
        usize::try_from(k)
            .ok()
            .and_then(|k| mapping.get(k).copied().flatten())
    })
}

/// The union of all values seen in a column's batch dictionaries, in first-seen order, and how
/// much of it the file already has.
#[derive(Default)]
struct UnifiedDictionary {
    ids: HashMap<Box<str>, i32>,
    values: Vec<Box<str>>,
    /// Entries already in the file; `None` before its first dictionary batch.
    written: Option<usize>,
    /// For `write_serialized`: the whole dictionary, reused (same buffers) while it does not
    /// grow, which spares the tracker comparing it with what it already wrote.
    array: Option<ArrayRef>,
}

impl UnifiedDictionary {
    /// The file-wide id of each entry of `column`'s dictionary (`None` for null entries),
    /// adding the values not seen before.
    fn map_values(&mut self, column: &ArrayRef) -> Vec<Option<i32>> {
        let local = column
            .as_dictionary::<Int32Type>()
            .values()
            .as_string::<i32>();
        (0..local.len())
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
                self.array = None;
                Some(id)
            })
            .collect()
    }

    fn has_unwritten(&self) -> bool {
        self.written != Some(self.values.len())
    }

    /// The entries the file does not have yet, and whether they extend a dictionary it has.
    fn unwritten(&self) -> Option<(ArrayRef, bool)> {
        let from = match self.written {
            None => 0,
            Some(n) if n < self.values.len() => n,
            Some(_) => return None,
        };
        let values: StringArray = self.values[from..].iter().map(|v| Some(&**v)).collect();
        Some((Arc::new(values), self.written.is_some()))
    }

    fn mark_written(&mut self) {
        self.written = Some(self.values.len());
    }

    fn array(&mut self) -> ArrayRef {
        self.array
            .get_or_insert_with(|| {
                let values: StringArray = self.values.iter().map(|v| Some(&**v)).collect();
                Arc::new(values)
            })
            .clone()
    }
}

//! Tests that need the sinks' internals: I/O failures injected below the encoders (a writer
//! that runs out of space), and the Arrow IPC file layout compared byte for byte with arrow's
//! own `FileWriter`.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use arrow::ipc::writer::{DictionaryHandling, FileWriter, IpcWriteOptions};
use arrow_array::builder::{Int32Builder, ListBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BooleanArray, Decimal128Array, DictionaryArray, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray, StructArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};

use crate::ipc::IpcSink;
use crate::parquet_sink::ParquetSink;
use crate::target::OutputTarget;
use crate::{Compression, Format, Sink, SinkError, SinkOptions};

const ENOSPC: i32 = 28;

/// Accepts `room` bytes, then fails every write with ENOSPC, like a full disk.
struct FullDisk {
    room: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn batch(rows: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("value {i}")),
            )),
        ],
    )
    .unwrap()
}

fn sink_over(format: Format, dir: &std::path::Path, room: usize) -> Box<dyn Sink> {
    let path = dir.join(format!("full.{}", format.extension()));
    let (target, _file) = OutputTarget::create(&path, false).unwrap();
    let opts = SinkOptions {
        format,
        compression: Compression::None,
        overwrite: false,
        row_group_rows: 1000,
    };
    match format {
        Format::Parquet => {
            Box::new(ParquetSink::with_writer(target, FullDisk { room }, schema(), &opts).unwrap())
        }
        Format::Arrow => {
            Box::new(IpcSink::with_writer(target, FullDisk { room }, schema(), &opts).unwrap())
        }
    }
}

fn assert_enospc(err: &SinkError, dir: &std::path::Path) {
    match err {
        SinkError::Io { path, source, .. } => {
            assert_eq!(source.raw_os_error(), Some(ENOSPC), "{err}");
            assert!(path.starts_with(dir), "{err}");
        }
        other => panic!("expected SinkError::Io, got {other}"),
    }
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("full."), "{line}");
    assert!(line.contains("No space left on device"), "{line}");
}

#[test]
fn disk_full_while_writing_parquet_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_over(Format::Parquet, dir.path(), 4096);
    // 1000-row groups of ~20 KB each: the first append to hit the limit must fail.
    let err = (0..10)
        .find_map(|_| sink.write(&batch(1000)).err())
        .expect("writes beyond the room succeeded");
    assert_enospc(&err, dir.path());
    assert!(err.to_string().contains("appending a row group"), "{err}");
    // The sink refuses further use, and dropping it removes the temporary file.
    assert!(matches!(
        sink.write(&batch(10)),
        Err(SinkError::Failed { .. })
    ));
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disk_full_while_writing_parquet_footer() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the header and a small row group, not for the footer.
    let sink = sink_over(Format::Parquet, dir.path(), 200);
    sink.write(&batch(3)).unwrap();
    let err = sink.finish().unwrap_err();
    assert_enospc(&err, dir.path());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disk_full_while_writing_arrow_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_over(Format::Arrow, dir.path(), 64 * 1024);
    // The 1 MiB write buffer delays the error until it spills or the file is finished.
    let err = (0..200)
        .find_map(|_| sink.write(&batch(1000)).err())
        .expect("writes beyond the room succeeded");
    assert_enospc(&err, dir.path());
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let sink = sink_over(Format::Arrow, dir.path(), 64);
    sink.write(&batch(10)).unwrap();
    let err = sink.finish().unwrap_err();
    assert_enospc(&err, dir.path());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A writer whose bytes the test reads back after the sink is finished.
#[derive(Clone, Default)]
struct SharedVec(Arc<Mutex<Vec<u8>>>);

impl Write for SharedVec {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Columns of many layouts; `e` and `f` are file-wide dictionaries, `nested` (with
/// `serialized`) a list of dictionaries, which makes the sink encode under its lock.
fn layout_schema(serialized: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
        Field::new_list("l", Field::new_list_field(DataType::Int32, true), true),
        Field::new_struct(
            "st",
            vec![
                Field::new("a", DataType::Int32, true),
                Field::new("b", DataType::Utf8, false),
            ],
            true,
        ),
        Field::new("d", DataType::Decimal128(15, 2), true),
        Field::new("b", DataType::Boolean, true),
        Field::new("e", dict_type(), true),
        Field::new("f", dict_type(), true),
    ];
    if serialized {
        fields.push(Field::new_list(
            "nested",
            Field::new_list_field(dict_type(), true),
            true,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// Batches whose dictionaries only grow (the builders keep their values), which arrow's
/// `FileWriter` accepts as delta dictionaries; `f` is all null (empty dictionary) at first.
fn layout_batches(schema: &SchemaRef) -> Vec<RecordBatch> {
    let serialized = schema.fields().len() > 8;
    let mut e = StringDictionaryBuilder::<Int32Type>::new();
    let mut f = StringDictionaryBuilder::<Int32Type>::new();
    let mut batches = Vec::new();
    let mut next_id = 0i64;
    for (b, rows) in [40usize, 0, 25, 60, 33].into_iter().enumerate() {
        let ids: Vec<i64> = (next_id..next_id + rows as i64).collect();
        next_id += rows as i64;
        let valid = |i: i64| i % 5 != 2;
        let mut list = ListBuilder::new(Int32Builder::new());
        for &i in &ids {
            if i % 7 == 3 {
                list.append_null();
            } else {
                list.append_value((0..i % 4).map(|k| valid(i + k).then_some((i * k) as i32)));
            }
        }
        for &i in &ids {
            // Batch 3 adds no new entries to `e`; `f` stays null in the first batch.
            match (b, i % 6) {
                (_, 5) => e.append_null(),
                (3, k) => e.append_value(format!("e{}", k % 2)),
                (_, k) => e.append_value(format!("e{}", k + i / 20)),
            }
            if b == 0 || i % 4 == 1 {
                f.append_null();
            } else {
                f.append_value(format!("f{}", i % (3 * b as i64 + 1)));
            }
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter(
                ids.iter().map(|&i| valid(i).then(|| format!("s{i}"))),
            )),
            Arc::new(list.finish()),
            Arc::new(StructArray::new(
                Fields::from(vec![
                    Field::new("a", DataType::Int32, true),
                    Field::new("b", DataType::Utf8, false),
                ]),
                vec![
                    Arc::new(Int32Array::from_iter(
                        ids.iter().map(|&i| valid(i + 1).then_some(i as i32)),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("b{i}")),
                    )),
                ],
                Some(ids.iter().map(|&i| i % 9 != 4).collect()),
            )),
            Arc::new(
                Decimal128Array::from_iter(
                    ids.iter().map(|&i| valid(i).then_some(i as i128 * 101)),
                )
                .with_precision_and_scale(15, 2)
                .unwrap(),
            ),
            Arc::new(BooleanArray::from_iter(
                ids.iter().map(|&i| valid(i).then_some(i % 3 == 0)),
            )),
            Arc::new(e.finish_preserve_values()),
            Arc::new(f.finish_preserve_values()),
        ];
        if serialized {
            // The same nested dictionary in every batch.
            let values: ArrayRef = Arc::new(StringArray::from(vec!["red", "green", "blue"]));
            let keys = Int32Array::from_iter(
                (0..rows * 2).map(|k| (k % 5 != 4).then_some((k % 3) as i32)),
            );
            let dict = DictionaryArray::new(keys, values);
            let item = Arc::new(Field::new_list_field(dict_type(), true));
            let offsets = arrow_buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(2, rows));
            columns.push(Arc::new(ListArray::new(
                item,
                offsets,
                Arc::new(dict),
                None,
            )));
        }
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        // Sliced batches: buffers that start at an offset and run past the rows written.
        batches.push(if b == 4 { batch.slice(3, 20) } else { batch });
    }
    batches
}

fn file_writer_bytes(schema: &SchemaRef, batches: &[RecordBatch], c: Compression) -> Vec<u8> {
    let mut options = IpcWriteOptions::default()
        .try_with_compression(crate::ipc::ipc_compression(c).unwrap())
        .unwrap()
        .with_dictionary_handling(DictionaryHandling::Delta);
    if let Compression::Zstd(level) = c {
        options = options.try_with_compression_level(Some(level)).unwrap();
    }
    let mut writer = FileWriter::try_new_with_options(Vec::new(), schema, options).unwrap();
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        writer.write(b).unwrap();
    }
    writer.into_inner().unwrap()
}

fn sink_bytes(
    dir: &std::path::Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    c: Compression,
) -> Vec<u8> {
    let (target, _file) = OutputTarget::create(&dir.join("layout.arrow"), true).unwrap();
    let out = SharedVec::default();
    let opts = SinkOptions {
        format: Format::Arrow,
        compression: c,
        overwrite: true,
        row_group_rows: 0,
    };
    let sink = IpcSink::with_writer(target, out.clone(), schema.clone(), &opts).unwrap();
    for b in batches {
        sink.write(b).unwrap();
    }
    let stats = Box::new(sink).finish().unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(stats.rows, rows as u64);
    let bytes = out.0.lock().unwrap().clone();
    bytes
}

/// One writer gets exactly the file arrow's `FileWriter` writes: same framing, alignment,
/// block offsets, footer, delta dictionaries and compressed bodies.
#[test]
fn arrow_ipc_file_is_byte_identical_to_arrow_file_writer() {
    let dir = tempfile::tempdir().unwrap();
    for serialized in [false, true] {
        let schema = layout_schema(serialized);
        let batches = layout_batches(&schema);
        for c in [
            Compression::None,
            Compression::Zstd(1),
            Compression::Zstd(7),
            Compression::Lz4,
        ] {
            let expected = file_writer_bytes(&schema, &batches, c);
            let got = sink_bytes(dir.path(), &schema, &batches, c);
            // The batches exercise first dictionaries (one empty) and deltas.
            let footer_len =
                i32::from_le_bytes(got[got.len() - 10..got.len() - 6].try_into().unwrap());
            let footer_start = got.len() - 10 - footer_len as usize;
            let footer = arrow::ipc::root_as_footer(&got[footer_start..got.len() - 10]).unwrap();
            assert_eq!(footer.recordBatches().unwrap().len(), 4);
            let dictionaries = footer.dictionaries().unwrap().len();
            assert!(
                dictionaries >= 5 + usize::from(serialized),
                "{dictionaries} dictionary batches"
            );
            assert!(
                got == expected,
                "serialized={serialized} {c}: {} bytes, FileWriter {} bytes, first difference at {:?}",
                got.len(),
                expected.len(),
                got.iter().zip(&expected).position(|(a, b)| a != b)
            );
        }
    }
}

#[test]
fn arrow_ipc_refuses_dictionary_of_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let (target, _file) = OutputTarget::create(&dir.path().join("dd.arrow"), false).unwrap();
    let inner = dict_type();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "dd",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(inner)),
        true,
    )]));
    let opts = SinkOptions {
        format: Format::Arrow,
        ..SinkOptions::default()
    };
    let err = match IpcSink::with_writer(target, SharedVec::default(), schema, &opts) {
        Err(e) => e,
        Ok(_) => panic!("dictionary-of-dictionary accepted"),
    };
    assert!(matches!(err, SinkError::Arrow { .. }), "{err}");
    assert!(err.to_string().contains("\"dd\""), "{err}");
}

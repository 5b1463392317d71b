//! End-to-end tests through the public API: every Arrow type the decoder emits, both formats,
//! every compression, concurrent writers, atomic output and partitioned directories.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::compute::{cast, concat_batches};
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow_array::builder::{Int32Builder, StringDictionaryBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type};
use arrow_array::*;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::LogicalType;
use parquet::file::reader::{FileReader as _, SerializedFileReader};

use gpupg_sink::{create_dir_sinks, create_file_sink, Compression, Format, SinkError, SinkOptions};

const UUID_META: (&str, &str) = ("ARROW:extension:name", "arrow.uuid");

fn opts(format: Format, compression: Compression) -> SinkOptions {
    SinkOptions {
        format,
        compression,
        overwrite: false,
        row_group_rows: 1 << 20,
    }
}

/// A base column of `len` values of one of the decoder's scalar types, every 5th null.
fn base(kind: &str, len: usize, seed: i64) -> (Field, ArrayRef) {
    let valid = |i: usize| i % 5 != 3;
    let v = |i: usize| seed * 1000 + i as i64;
    let arr: ArrayRef = match kind {
        "bool" => Arc::new(BooleanArray::from_iter(
            (0..len).map(|i| valid(i).then_some(v(i) % 3 == 0)),
        )),
        "i16" => Arc::new(Int16Array::from_iter(
            (0..len).map(|i| valid(i).then_some((v(i) % 30000) as i16 - 15000)),
        )),
        "i32" => Arc::new(Int32Array::from_iter(
            (0..len).map(|i| valid(i).then_some(v(i) as i32 * -7)),
        )),
        "i64" => Arc::new(Int64Array::from_iter(
            (0..len).map(|i| valid(i).then_some(v(i) * 1_000_000_007)),
        )),
        "u32" => Arc::new(UInt32Array::from_iter(
            (0..len).map(|i| valid(i).then_some(u32::MAX - v(i) as u32)),
        )),
        "f32" => Arc::new(Float32Array::from_iter(
            (0..len).map(|i| valid(i).then_some(v(i) as f32 / 3.0)),
        )),
        "f64" => Arc::new(Float64Array::from_iter(
            (0..len).map(|i| valid(i).then_some(-(v(i) as f64) / 7.0)),
        )),
        "dec" => Arc::new(
            Decimal128Array::from_iter((0..len).map(|i| valid(i).then_some(v(i) as i128 * 12345)))
                .with_precision_and_scale(15, 2)
                .unwrap(),
        ),
        "decneg" => Arc::new(
            Decimal128Array::from_iter((0..len).map(|i| valid(i).then_some(v(i) as i128 % 99999)))
                .with_precision_and_scale(5, -2)
                .unwrap(),
        ),
        "utf8" => Arc::new(StringArray::from_iter(
            (0..len).map(|i| valid(i).then(|| format!("text-{}-ü", v(i)))),
        )),
        "bin" => Arc::new(BinaryArray::from_iter(
            (0..len).map(|i| valid(i).then(|| v(i).to_le_bytes().to_vec())),
        )),
        "date" => Arc::new(Date32Array::from_iter(
            (0..len).map(|i| valid(i).then_some(v(i) as i32 - 500)),
        )),
        "time" => Arc::new(Time64MicrosecondArray::from_iter(
            (0..len).map(|i| valid(i).then_some(v(i) * 1_000_003 % 86_400_000_000)),
        )),
        "ts" => Arc::new(TimestampMicrosecondArray::from_iter(
            (0..len).map(|i| valid(i).then_some(v(i) * 3_600_000_001)),
        )),
        "tstz" => Arc::new(
            TimestampMicrosecondArray::from_iter(
                (0..len).map(|i| valid(i).then_some(v(i) * -3_600_000_001)),
            )
            .with_timezone("UTC"),
        ),
        "uuid" => Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                (0..len).map(|i| valid(i).then(|| (v(i) as u128 * 0x9E37_79B9).to_be_bytes())),
                16,
            )
            .unwrap(),
        ),
        "struct" => {
            let fields = Fields::from(vec![
                Field::new("a", DataType::Int32, true),
                Field::new("b", DataType::Int32, false),
                Field::new("c", DataType::Int64, true),
            ]);
            let a = Int32Array::from_iter((0..len).map(|i| (i % 4 != 1).then_some(v(i) as i32)));
            let b = Int32Array::from_iter_values((0..len).map(|i| -(v(i) as i32)));
            let c = Int64Array::from_iter_values((0..len).map(|i| v(i) << 20));
            let nulls = arrow_buffer::NullBuffer::from_iter((0..len).map(valid));
            Arc::new(StructArray::new(
                fields,
                vec![Arc::new(a), Arc::new(b), Arc::new(c)],
                Some(nulls),
            ))
        }
        other => panic!("unknown kind {other}"),
    };
    let mut field = Field::new(kind, arr.data_type().clone(), true);
    if kind == "uuid" {
        field = field.with_metadata(HashMap::from([(
            UUID_META.0.to_string(),
            UUID_META.1.to_string(),
        )]));
    }
    (field, arr)
}

const KINDS: [&str; 18] = [
    "bool", "i16", "i32", "i64", "u32", "f32", "f64", "dec", "decneg", "utf8", "bin", "date",
    "time", "ts", "tstz", "uuid", "struct", "bool",
];

/// A batch with every type the decoder emits: each scalar type, a list of each, and a
/// Dictionary(Int32, Utf8) column; `seed` varies the values (and the dictionary).
fn all_types_batch(rows: usize, seed: i64) -> RecordBatch {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for kind in &KINDS[..17] {
        let (f, a) = base(kind, rows, seed);
        fields.push(f);
        columns.push(a);
    }
    // Lists of each: lengths cycle 0,1,2,3 and every 7th list is null.
    let lengths: Vec<usize> = (0..rows).map(|i| i % 4).collect();
    let offsets = arrow_buffer::OffsetBuffer::from_lengths(lengths.iter().copied());
    let total: usize = lengths.iter().sum();
    let list_nulls = arrow_buffer::NullBuffer::from_iter((0..rows).map(|i| i % 7 != 6));
    for kind in &KINDS[..17] {
        let (item, values) = base(kind, total, seed + 7);
        let item = Arc::new(item.with_name("item"));
        let list = ListArray::new(item, offsets.clone(), values, Some(list_nulls.clone()));
        fields.push(Field::new(
            format!("list_{kind}"),
            list.data_type().clone(),
            true,
        ));
        columns.push(Arc::new(list));
    }
    let mut dict = StringDictionaryBuilder::<Int32Type>::new();
    for i in 0..rows {
        if i % 6 == 5 {
            dict.append_null();
        } else {
            dict.append_value(format!("cat-{}", (i as i64 + seed) % 9));
        }
    }
    let dict = dict.finish();
    fields.push(Field::new("dict", dict.data_type().clone(), true));
    columns.push(Arc::new(dict));
    // A non-nullable column, to check nullability survives.
    fields.push(Field::new("id", DataType::Int64, false));
    columns.push(Arc::new(Int64Array::from_iter_values(
        (0..rows as i64).map(|i| seed * 1_000_000 + i),
    )));
    let schema = Schema::new(fields)
        .with_metadata(HashMap::from([("source".to_string(), "test".to_string())]));
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

fn read_parquet(path: &Path) -> RecordBatch {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<_> = builder
        .with_batch_size(4096)
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    concat_batches(&schema, &batches).unwrap()
}

fn read_ipc(path: &Path) -> RecordBatch {
    let reader = FileReader::try_new(File::open(path).unwrap(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&schema, &batches).unwrap()
}

fn read(format: Format, path: &Path) -> RecordBatch {
    match format {
        Format::Parquet => read_parquet(path),
        Format::Arrow => read_ipc(path),
    }
}

/// What Parquet gives back for `batch`: negative-scale decimals come back rescaled to scale 0
/// (Parquet has no negative scale), everything else unchanged.
fn parquet_expected(batch: &RecordBatch) -> RecordBatch {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let to = match f.data_type() {
            DataType::Decimal128(5, -2) => Some(DataType::Decimal128(7, 0)),
            DataType::List(item) if item.data_type() == &DataType::Decimal128(5, -2) => {
                Some(DataType::List(Arc::new(
                    item.as_ref()
                        .clone()
                        .with_data_type(DataType::Decimal128(7, 0)),
                )))
            }
            _ => None,
        };
        match to {
            Some(t) => {
                columns.push(cast(c, &t).unwrap());
                fields.push(f.as_ref().clone().with_data_type(t));
            }
            None => {
                columns.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    let schema = Schema::new(fields).with_metadata(batch.schema().metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// Same fields (name, type incl. decimal precision/scale and timestamp tz, nullability, field
/// metadata) and equal columns.
fn assert_same(expected: &RecordBatch, got: &RecordBatch, what: &str) {
    assert_eq!(expected.num_rows(), got.num_rows(), "{what}: row count");
    assert_eq!(
        expected.num_columns(),
        got.num_columns(),
        "{what}: column count"
    );
    for (i, (ef, gf)) in expected
        .schema()
        .fields()
        .iter()
        .zip(got.schema().fields())
        .enumerate()
    {
        assert_eq!(ef, gf, "{what}: field {i}");
        assert_eq!(
            expected.column(i).as_ref(),
            got.column(i).as_ref(),
            "{what}: column {}",
            ef.name()
        );
    }
    assert_eq!(
        expected.schema().metadata().get("source"),
        got.schema().metadata().get("source"),
        "{what}: schema metadata"
    );
}

fn write_one(
    path: &Path,
    batches: &[RecordBatch],
    o: &SinkOptions,
) -> Result<gpupg_sink::OutputStats, SinkError> {
    let sink = create_file_sink(path, batches[0].schema(), o)?;
    for b in batches {
        sink.write(b)?;
    }
    sink.finish()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn parquet_round_trip_every_type_and_compression() {
    let dir = tempfile::tempdir().unwrap();
    let batches = [all_types_batch(1000, 1), all_types_batch(777, 2)];
    let expected = parquet_expected(&concat_batches(&batches[0].schema(), &batches).unwrap());
    for (i, c) in [
        Compression::Zstd(1),
        Compression::Zstd(9),
        Compression::Snappy,
        Compression::Lz4,
        Compression::Gzip,
        Compression::Brotli,
        Compression::None,
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("t{i}.parquet"));
        let stats = write_one(&path, &batches, &opts(Format::Parquet, c)).unwrap();
        assert_eq!(stats.rows, 1777);
        assert_eq!(
            stats.files,
            vec![(path.clone(), path.metadata().unwrap().len())]
        );
        assert_same(&expected, &read_parquet(&path), &format!("parquet {c}"));
    }
    // Nothing but the outputs: no temp files left behind.
    assert_eq!(dir_entries(dir.path()).len(), 7);
}

#[test]
fn parquet_file_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.parquet");
    let batch = all_types_batch(100, 3);
    write_one(
        &path,
        &[batch],
        &opts(Format::Parquet, Compression::Zstd(1)),
    )
    .unwrap();
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    let meta = reader.metadata();
    let file_meta = meta.file_metadata();
    assert_eq!(
        file_meta.created_by(),
        Some(format!("gpupgparser {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let kv = file_meta.key_value_metadata().unwrap();
    assert!(kv.iter().any(|kv| kv.key == "ARROW:schema"));
    let schema = file_meta.schema_descr();
    let uuid = schema
        .columns()
        .iter()
        .find(|c| c.name() == "uuid")
        .unwrap();
    assert_eq!(uuid.logical_type_ref(), Some(&LogicalType::Uuid));
    let rg = meta.row_group(0);
    let codec = rg.column(0).compression();
    assert_eq!(codec.to_string(), "ZSTD(ZstdLevel(1))");
    // Chunk statistics are written, page-level column indexes are not.
    assert!(rg.columns().iter().all(|c| c.statistics().is_some()));
    assert!(rg
        .columns()
        .iter()
        .all(|c| c.column_index_offset().is_none()));
}

#[test]
fn arrow_ipc_round_trip_and_unsupported_codecs() {
    let dir = tempfile::tempdir().unwrap();
    // Different seeds give the dictionary column different per-batch dictionaries.
    let batches = [all_types_batch(500, 1), all_types_batch(300, 5)];
    let expected = concat_batches(&batches[0].schema(), &batches).unwrap();
    for (i, c) in [
        Compression::Zstd(1),
        Compression::Zstd(5),
        Compression::Lz4,
        Compression::None,
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("t{i}.arrow"));
        let stats = write_one(&path, &batches, &opts(Format::Arrow, c)).unwrap();
        assert_eq!(stats.rows, 800);
        assert_same(&expected, &read_ipc(&path), &format!("arrow {c}"));
    }
    for c in [Compression::Snappy, Compression::Gzip, Compression::Brotli] {
        let path = dir.path().join("bad.arrow");
        let err = write_one(&path, &batches, &opts(Format::Arrow, c)).unwrap_err();
        assert!(matches!(err, SinkError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains(&c.to_string()), "{err}");
    }
    assert_eq!(dir_entries(dir.path()).len(), 4);
}

fn concurrent_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "cat",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("n", DataType::Int32, true),
    ]))
}

fn concurrent_batch(schema: &SchemaRef, thread: i64, batch: i64, rows: i64) -> RecordBatch {
    let ids: Vec<i64> = (0..rows)
        .map(|r| (thread * 1000 + batch) * 10_000 + r)
        .collect();
    let mut cat = StringDictionaryBuilder::<Int32Type>::new();
    let mut n = Int32Builder::new();
    for &id in &ids {
        // Each thread's dictionaries contain different values in a different order.
        cat.append_value(format!("t{thread}-c{}", id % 13));
        n.append_option((id % 3 != 0).then_some(id as i32));
    }
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("row {i}")),
            )),
            Arc::new(cat.finish()),
            Arc::new(n.finish()),
        ],
    )
    .unwrap()
}

#[test]
fn many_threads_write_one_file() {
    const THREADS: i64 = 8;
    const BATCHES: i64 = 12;
    const ROWS: i64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let schema = concurrent_schema();
    for format in [Format::Parquet, Format::Arrow] {
        let path = dir.path().join(format!("conc.{}", format.extension()));
        let o = SinkOptions {
            // Not a multiple of the batch size: forces both splitting and gathering.
            row_group_rows: 2500,
            ..opts(format, Compression::Zstd(1))
        };
        let sink = create_file_sink(&path, schema.clone(), &o).unwrap();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (sink, schema) = (&sink, &schema);
                s.spawn(move || {
                    for b in 0..BATCHES {
                        sink.write(&concurrent_batch(schema, t, b, ROWS)).unwrap();
                    }
                });
            }
        });
        let stats = sink.finish().unwrap();
        assert_eq!(stats.rows, (THREADS * BATCHES * ROWS) as u64);

        let got = read(format, &path);
        assert_eq!(got.num_rows() as i64, THREADS * BATCHES * ROWS);
        let ids = got.column(0).as_primitive::<Int64Type>();
        let texts = got.column(1).as_string::<i32>();
        let cats = got.column(2).as_dictionary::<Int32Type>();
        let cat_values = cats.values().as_string::<i32>();
        let ns = got.column(3).as_primitive::<Int32Type>();
        let mut seen: Vec<i64> = Vec::with_capacity(got.num_rows());
        for r in 0..got.num_rows() {
            let id = ids.value(r);
            let thread = id / 10_000 / 1000;
            // Each row stayed intact: its other columns are the ones derived from its id.
            assert_eq!(texts.value(r), format!("row {id}"));
            let key = cats.keys().value(r) as usize;
            assert_eq!(cat_values.value(key), format!("t{thread}-c{}", id % 13));
            assert_eq!(ns.is_null(r), id % 3 == 0);
            seen.push(id);
        }
        seen.sort_unstable();
        let mut expected: Vec<i64> = (0..THREADS)
            .flat_map(|t| {
                (0..BATCHES).flat_map(move |b| (0..ROWS).map(move |r| (t * 1000 + b) * 10_000 + r))
            })
            .collect();
        expected.sort_unstable();
        assert_eq!(seen, expected, "{format}: multiset of ids");

        if format == Format::Parquet {
            let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
            let sizes: Vec<i64> = reader
                .metadata()
                .row_groups()
                .iter()
                .map(|rg| rg.num_rows())
                .collect();
            // Full groups except at most one partial group per writer thread.
            assert!(sizes.iter().all(|&n| n > 0 && n <= 2500), "{sizes:?}");
            let partial = sizes.iter().filter(|&&n| n != 2500).count();
            assert!(partial <= THREADS as usize, "{sizes:?}");
        }
    }
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Dictionary columns as plain strings: what a reader sees, whatever the keys.
fn logical(batch: &RecordBatch) -> RecordBatch {
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) => f.as_ref().clone().with_data_type(v.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let columns = batch
        .columns()
        .iter()
        .zip(&fields)
        .map(|(c, f)| cast(c, f.data_type()).unwrap())
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Rows ordered by the Int64 column 0 (unique ids).
fn sorted_by_id(batch: &RecordBatch) -> RecordBatch {
    let order = arrow::compute::sort_to_indices(batch.column(0), None, None).unwrap();
    let columns = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c, &order, None).unwrap())
        .collect();
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// The file minus its 64-byte header and its footer is an IPC stream, which a stream reader
/// decodes in file order: it fails if a record batch uses a dictionary entry that comes later.
fn read_ipc_in_file_order(path: &Path) -> RecordBatch {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"ARROW1");
    assert!(bytes[6..64].iter().all(|&b| b == 0));
    let reader = StreamReader::try_new(std::io::Cursor::new(&bytes[64..]), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// Reads an IPC file both ways (footer and file order) and checks the file-wide dictionaries
/// hold each value once; returns the rows with dictionaries decoded, sorted by id.
fn read_ipc_checked(path: &Path, schema: &SchemaRef) -> RecordBatch {
    let got = read_ipc(path);
    assert_eq!(got.schema(), *schema, "{}: schema", path.display());
    for (f, c) in schema.fields().iter().zip(got.columns()) {
        if f.data_type() == &dict_type() {
            let values = c.as_dictionary::<Int32Type>().values().as_string::<i32>();
            let mut seen: Vec<&str> = values.iter().map(|v| v.unwrap()).collect();
            seen.sort_unstable();
            let n = seen.len();
            seen.dedup();
            assert_eq!(
                seen.len(),
                n,
                "{}: duplicate entries in {}",
                path.display(),
                f.name()
            );
        }
    }
    let streamed = read_ipc_in_file_order(path);
    let got = sorted_by_id(&logical(&got));
    assert_eq!(
        got,
        sorted_by_id(&logical(&streamed)),
        "{}: stream order",
        path.display()
    );
    got
}

/// xorshift64*: a deterministic stand-in for a property-test generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn dict_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        // Values private to each writer thread.
        Field::new("own", dict_type(), true),
        // Values shared by all threads, in a different order in each batch.
        Field::new("shared", dict_type(), true),
        // Mostly null: many batches bring an empty dictionary.
        Field::new("rare", dict_type(), true),
        Field::new("n", DataType::Float64, true),
    ]))
}

/// A batch of `rows` rows with ids from `first`. Batch dictionaries are built directly (not
/// with a builder): they may hold entries no row uses, entries in any order and a null entry.
fn dict_batch(
    schema: &SchemaRef,
    rng: &mut Rng,
    thread: u64,
    first: i64,
    rows: usize,
) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    let dict = |rng: &mut Rng, pool: Vec<String>, null_rows: u64| -> ArrayRef {
        // A random subset of the pool in random order, plus a null entry.
        let mut values: Vec<Option<String>> = pool
            .into_iter()
            .filter(|_| rng.below(3) != 0)
            .map(Some)
            .collect();
        values.push(None);
        for i in (1..values.len()).rev() {
            values.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let keys =
            Int32Array::from_iter((0..rows).map(|_| {
                (rng.below(100) >= null_rows).then(|| rng.below(values.len() as u64) as i32)
            }));
        Arc::new(DictionaryArray::new(
            keys,
            Arc::new(StringArray::from(values)),
        ))
    };
    let own_pool = (0..rng.below(40))
        .map(|k| format!("t{thread}-{k}"))
        .collect();
    let shared_pool = (0..12).map(|k| format!("s{k}")).collect();
    let rare_pool = (0..rng.below(3))
        .map(|k| format!("r{}", k + rng.below(1000)))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter(
            ids.iter()
                .map(|&i| (i % 7 != 3).then(|| format!("row {i} ü"))),
        )),
        dict(rng, own_pool, 10),
        dict(rng, shared_pool, 0),
        dict(rng, rare_pool, 95),
        Arc::new(Float64Array::from_iter(
            ids.iter().map(|&i| (i % 5 != 0).then_some(i as f64 / 3.0)),
        )),
    ];
    RecordBatch::try_new(schema.clone(), columns).unwrap()
}

/// Many threads with per-thread dictionaries write one IPC file: every row comes back exactly
/// once with its values, each dictionary holds each value once, and no batch precedes the
/// dictionary entries it uses.
#[test]
fn arrow_ipc_concurrent_writers_with_dictionaries() {
    const THREADS: u64 = 8;
    const BATCHES: i64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let schema = dict_schema();
    for c in [Compression::None, Compression::Zstd(1), Compression::Lz4] {
        let path = dir
            .path()
            .join(format!("dicts-{}.arrow", c.to_string().replace(':', "")));
        let sink = create_file_sink(&path, schema.clone(), &opts(Format::Arrow, c)).unwrap();
        let written: Vec<Vec<RecordBatch>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (sink, schema) = (&sink, &schema);
                    s.spawn(move || {
                        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t + 1) * 0x1234_5678));
                        (0..BATCHES)
                            .map(|b| {
                                let first = (t as i64 * BATCHES + b) * 1000;
                                let rows = rng.below(300) as usize;
                                let batch = dict_batch(schema, &mut rng, t, first, rows);
                                sink.write(&batch).unwrap();
                                batch
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stats = sink.finish().unwrap();
        let written: Vec<RecordBatch> = written.into_iter().flatten().collect();
        let expected = concat_batches(&schema, &written).unwrap();
        assert_eq!(stats.rows, expected.num_rows() as u64);
        assert!(
            stats.encode_seconds > 0.0 && stats.write_seconds > 0.0,
            "{stats:?}"
        );
        let got = read_ipc_checked(&path, &schema);
        assert_eq!(got, sorted_by_id(&logical(&expected)), "{c}");
    }
}

/// Sequential writes of random batches (sizes, slices, empty batches, dictionaries with unused
/// and null entries) with every codec round-trip exactly.
#[test]
fn arrow_ipc_random_batches_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dict_schema();
    let codecs = [Compression::None, Compression::Zstd(3), Compression::Lz4];
    for seed in 0..24u64 {
        let mut rng = Rng(0xDEAD_BEEF ^ ((seed + 1) * 0x9E37_79B9));
        let c = codecs[seed as usize % codecs.len()];
        let path = dir.path().join(format!("random-{seed}.arrow"));
        let sink = create_file_sink(&path, schema.clone(), &opts(Format::Arrow, c)).unwrap();
        let mut written = Vec::new();
        for b in 0..rng.below(12) as i64 {
            let rows = [0, 1, 7, 64, 500][rng.below(5) as usize];
            let batch = dict_batch(&schema, &mut rng, seed % 3, b * 1000, rows);
            let offset = rng.below(rows as u64 / 2 + 1) as usize;
            let batch = batch.slice(offset, rng.below((rows - offset) as u64 + 1) as usize);
            sink.write(&batch).unwrap();
            written.push(batch);
        }
        let stats = sink.finish().unwrap();
        let expected = concat_batches(&schema, &written).unwrap();
        assert_eq!(stats.rows, expected.num_rows() as u64, "seed {seed}");
        let got = read_ipc_checked(&path, &schema);
        assert_eq!(got, sorted_by_id(&logical(&expected)), "seed {seed} {c}");
    }
}

/// A dictionary the sink cannot make file-wide (nested in a list, or Int16 keys) keeps arrow's
/// rule: the same or a growing dictionary is fine, concurrently too; a replaced one is an
/// error, as with arrow's `FileWriter`.
#[test]
fn arrow_ipc_nested_dictionaries_are_written_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let short = DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("own", dict_type(), true),
        Field::new_list("tags", Field::new_list_field(dict_type(), true), true),
        Field::new("short", short, true),
    ]));
    let colours: ArrayRef = Arc::new(StringArray::from(vec!["red", "green", "blue"]));
    let batch = |t: i64, b: i64, tag_values: &ArrayRef| {
        let ids: Vec<i64> = (0..20).map(|r| (t * 100 + b) * 100 + r).collect();
        let own_values: Vec<String> = ids.iter().map(|i| format!("t{t}-{}", i % 3)).collect();
        let own: DictionaryArray<Int32Type> = own_values.iter().map(String::as_str).collect();
        let keys = Int32Array::from_iter((0..40).map(|k| Some(k % tag_values.len() as i32)));
        let item = Arc::new(Field::new_list_field(dict_type(), true));
        let offsets = arrow_buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(2, 20));
        let tags = ListArray::new(
            item,
            offsets,
            Arc::new(DictionaryArray::new(keys, tag_values.clone())),
            None,
        );
        let short = DictionaryArray::<Int16Type>::new(
            Int16Array::from_iter_values((0..20).map(|r| r % 2)),
            Arc::new(StringArray::from(vec!["no", "yes"])),
        );
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(own),
                Arc::new(tags),
                Arc::new(short),
            ],
        )
        .unwrap()
    };
    let path = dir.path().join("nested.arrow");
    let sink = create_file_sink(
        &path,
        schema.clone(),
        &opts(Format::Arrow, Compression::Zstd(1)),
    )
    .unwrap();
    let written: Vec<RecordBatch> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (sink, batch, colours) = (&sink, &batch, &colours);
                s.spawn(move || {
                    (0..20)
                        .map(|b| {
                            let batch = batch(t, b, colours);
                            sink.write(&batch).unwrap();
                            batch
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(sink.finish().unwrap().rows, 4 * 20 * 20);
    let got = read_ipc_checked(&path, &schema);
    let expected = concat_batches(&schema, &written).unwrap();
    assert_eq!(got, sorted_by_id(&logical(&expected)));

    // A nested dictionary that changes (not only grows) cannot be written to an IPC file.
    let path = dir.path().join("replaced.arrow");
    let sink = create_file_sink(
        &path,
        schema.clone(),
        &opts(Format::Arrow, Compression::None),
    )
    .unwrap();
    sink.write(&batch(0, 0, &colours)).unwrap();
    let other: ArrayRef = Arc::new(StringArray::from(vec!["cyan", "magenta"]));
    let err = sink.write(&batch(0, 1, &other)).unwrap_err();
    assert!(matches!(err, SinkError::Arrow { .. }), "{err}");
    assert!(err.to_string().contains("replacement"), "{err}");
    assert!(matches!(
        sink.write(&batch(0, 2, &colours)),
        Err(SinkError::Failed { .. })
    ));
    drop(sink);
    assert_eq!(dir_entries(dir.path()), vec!["nested.arrow"]);
}

#[test]
fn existing_output_is_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Parquet, Format::Arrow] {
        let path = dir.path().join(format!("out.{}", format.extension()));
        std::fs::write(&path, b"precious").unwrap();
        let batch = all_types_batch(10, 1);
        let err = write_one(
            &path,
            std::slice::from_ref(&batch),
            &opts(format, Compression::Zstd(1)),
        )
        .unwrap_err();
        match &err {
            SinkError::Exists { path: p } => assert_eq!(p, &path),
            other => panic!("expected Exists, got {other}"),
        }
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");

        let o = SinkOptions {
            overwrite: true,
            ..opts(format, Compression::Zstd(1))
        };
        write_one(&path, std::slice::from_ref(&batch), &o).unwrap();
        assert_eq!(read(format, &path).num_rows(), 10);
    }
    assert_eq!(dir_entries(dir.path()), vec!["out.arrow", "out.parquet"]);
}

#[test]
fn file_appearing_during_the_export_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.parquet");
    let batch = all_types_batch(10, 1);
    let sink = create_file_sink(
        &path,
        batch.schema(),
        &opts(Format::Parquet, Compression::Zstd(1)),
    )
    .unwrap();
    sink.write(&batch).unwrap();
    std::fs::write(&path, b"someone else").unwrap();
    let err = sink.finish().unwrap_err();
    assert!(matches!(err, SinkError::Exists { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else");
    assert_eq!(dir_entries(dir.path()), vec!["late.parquet"]);
}

#[test]
fn dropped_sink_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Parquet, Format::Arrow] {
        let path = dir.path().join(format!("x.{}", format.extension()));
        let batch = all_types_batch(50, 1);
        let sink =
            create_file_sink(&path, batch.schema(), &opts(format, Compression::Lz4)).unwrap();
        sink.write(&batch).unwrap();
        // The temporary file exists while writing, hidden, next to the destination.
        let entries = dir_entries(dir.path());
        assert_eq!(entries.len(), 1, "{entries:?}");
        let name = &entries[0];
        assert!(name.starts_with(&format!(".x.{}.gpupg-", format.extension())));
        assert!(
            name.contains(&format!("-{}-", std::process::id())) && name.ends_with(".tmp"),
            "{name}"
        );
        drop(sink);
        assert!(dir_entries(dir.path()).is_empty());
    }
}

#[test]
fn dir_sinks_create_exactly_n_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("new/sub");
    let batch = all_types_batch(20, 1);
    let o = opts(Format::Parquet, Compression::Zstd(1));
    let sinks = create_dir_sinks(&dir, "lineorder", 3, batch.schema(), &o).unwrap();
    assert_eq!(sinks.len(), 3);
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    for (i, sink) in sinks.into_iter().enumerate() {
        for _ in 0..=i {
            sink.write(&batch).unwrap();
        }
        let stats = sink.finish().unwrap();
        assert_eq!(stats.rows, 20 * (i as u64 + 1));
        files.extend(stats.files);
    }
    assert_eq!(
        dir_entries(&dir),
        vec![
            "lineorder-00000.parquet",
            "lineorder-00001.parquet",
            "lineorder-00002.parquet"
        ]
    );
    for (i, (path, bytes)) in files.iter().enumerate() {
        assert_eq!(path.metadata().unwrap().len(), *bytes);
        assert_eq!(read_parquet(path).num_rows(), 20 * (i + 1));
    }

    // One existing name refuses the whole set and creates nothing.
    std::fs::remove_file(dir.join("lineorder-00000.parquet")).unwrap();
    std::fs::remove_file(dir.join("lineorder-00002.parquet")).unwrap();
    let err = match create_dir_sinks(&dir, "lineorder", 3, batch.schema(), &o) {
        Err(e) => e,
        Ok(_) => panic!("existing partition file accepted"),
    };
    assert!(
        matches!(&err, SinkError::Exists { path } if path.ends_with("lineorder-00001.parquet")),
        "{err}"
    );
    assert_eq!(dir_entries(&dir), vec!["lineorder-00001.parquet"]);

    let arrow = SinkOptions {
        overwrite: true,
        ..opts(Format::Arrow, Compression::None)
    };
    let sinks = create_dir_sinks(&dir, "lineorder", 2, batch.schema(), &arrow).unwrap();
    for sink in sinks {
        sink.finish().unwrap();
    }
    assert_eq!(
        dir_entries(&dir),
        vec![
            "lineorder-00000.arrow",
            "lineorder-00001.arrow",
            "lineorder-00001.parquet"
        ]
    );
    assert!(matches!(
        create_dir_sinks(&dir, "../x", 1, batch.schema(), &o),
        Err(SinkError::InvalidArgument { .. })
    ));
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/out.parquet");
    let err = match create_file_sink(&path, concurrent_schema(), &SinkOptions::default()) {
        Err(e) => e,
        Ok(_) => panic!("sink created in a missing directory"),
    };
    match &err {
        SinkError::Io { during, source, .. } => {
            assert_eq!(*during, "creating the temporary output file");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other}"),
    }
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn mismatched_batch_is_rejected_and_sink_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.parquet");
    let schema = concurrent_schema();
    let sink = create_file_sink(&path, schema.clone(), &SinkOptions::default()).unwrap();
    let wrong = all_types_batch(5, 1);
    let err = sink.write(&wrong).unwrap_err();
    assert!(matches!(err, SinkError::SchemaMismatch { .. }), "{err}");
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("text", DataType::Utf8, true),
            schema.field(2).clone(),
            Field::new("n", DataType::Int32, true),
        ])),
        vec![
            Arc::new(Int32Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["a"])),
            Arc::new(DictionaryArray::<Int32Type>::from_iter(["x"])),
            Arc::new(Int32Array::from(vec![1])),
        ],
    )
    .unwrap();
    let err = sink.write(&other).unwrap_err();
    assert!(err.to_string().contains("\"id\""), "{err}");
    // Rejection happens before any encoding, so the sink can still be used.
    sink.write(&concurrent_batch(&schema, 0, 0, 10)).unwrap();
    assert_eq!(sink.finish().unwrap().rows, 10);
}

#[test]
fn compression_parsing() {
    assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd(1));
    assert_eq!(
        "ZSTD:3".parse::<Compression>().unwrap(),
        Compression::Zstd(3)
    );
    assert_eq!(
        "snappy".parse::<Compression>().unwrap(),
        Compression::Snappy
    );
    assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
    assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::Gzip);
    assert_eq!(
        "brotli".parse::<Compression>().unwrap(),
        Compression::Brotli
    );
    assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
    // zstd's fast negative levels are levels too; 0 (zstd's "default") is not.
    assert_eq!(
        "zstd:-3".parse::<Compression>().unwrap(),
        Compression::Zstd(-3)
    );
    for bad in [
        "zstd:0",
        "zstd:23",
        "zstd:-131073",
        "zstd:x",
        "gzip:6",
        "lzo",
        "",
    ] {
        let err = bad.parse::<Compression>().unwrap_err();
        assert!(
            matches!(err, SinkError::InvalidCompression { .. }),
            "{bad}: {err}"
        );
    }
    for c in [
        Compression::Zstd(7),
        Compression::Zstd(-1),
        Compression::Lz4,
        Compression::None,
    ] {
        assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
    }
}

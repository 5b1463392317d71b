//! Shared by the export integration tests: a server, requests, reading back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use gpupg_decode::{IntervalRepr, TypeOptions};
use gpupg_export::{export, ExportReport, ExportRequest, NoProgress, Output, Source, Target};
use gpupg_sink::{Compression, Format, SinkOptions};
use gpupg_source::{ConnectConfig, Connection};

/// The connection settings of a test server's DSN.
pub fn config(dsn: &str) -> ConnectConfig {
    ConnectConfig::resolve(Some(dsn)).expect("test DSN parses")
}

/// A request with small chunks and several connections, so that even small
/// tables go through many ranges, chunks and threads.
pub fn request(
    dsn: &str,
    target: Target,
    output: Output,
    format: Format,
) -> ExportRequest<'static> {
    ExportRequest {
        parallel: 4,
        workers: 3,
        chunk_bytes: 64 * 1024,
        heap_chunk_bytes: 64 * 1024,
        engine: gpupg_export::Engine::Cpu,
        types: TypeOptions {
            interval: match format {
                Format::Parquet => IntervalRepr::Struct,
                Format::Arrow => IntervalRepr::MonthDayNano,
            },
            ..TypeOptions::default()
        },
        sink: SinkOptions {
            format,
            compression: Compression::Zstd(1),
            overwrite: false,
            row_group_rows: 1 << 20,
        },
        source: Source::Copy,
        ..ExportRequest::new(config(dsn), target, output)
    }
}

/// An uncompressed Arrow export of table `name` into files under `dir`
/// (see [`request`]).
pub fn arrow_request(dsn: &str, name: &str, dir: &Path) -> ExportRequest<'static> {
    let mut r = request(dsn, table(name), Output::Dir(dir.into()), Format::Arrow);
    r.sink.compression = Compression::None;
    r
}

/// A table target.
pub fn table(name: &str) -> Target {
    Target::Table(name.to_string())
}

/// A file in `dir` and the output writing it.
pub fn file(dir: &Path, name: &str) -> (PathBuf, Output) {
    let p = dir.join(name);
    (p.clone(), Output::File(p))
}

/// All batches of a Parquet or Arrow IPC file.
pub fn read_back(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).expect("output exists");
    if path.extension().is_some_and(|e| e == "parquet") {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .expect("parquet opens")
            .build()
            .expect("reader builds")
            .map(|b| b.expect("batch reads"))
            .collect()
    } else {
        arrow::ipc::reader::FileReader::try_new(f, None)
            .expect("arrow opens")
            .map(|b| b.expect("batch reads"))
            .collect()
    }
}

/// The rows of `sql`, as text.
pub fn query(dsn: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut c = Connection::connect(&config(dsn)).expect("connect");
    c.simple_query(sql).expect("query")
}

/// Runs `sql`.
pub fn exec(dsn: &str, sql: &str) {
    let mut c = Connection::connect(&config(dsn)).expect("connect");
    c.execute(sql).expect("execute");
}

/// Files left in a directory (to check that failures leave nothing).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// All batches as one, rows ordered by the columns `keys` (exports of the
/// same table by different paths come out in different orders).
pub fn sorted_by(batches: &[RecordBatch], keys: &[&str]) -> RecordBatch {
    use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
    let all = concat_batches(&batches[0].schema(), batches).expect("concat");
    let cols: Vec<SortColumn> = keys
        .iter()
        .map(|k| SortColumn {
            values: all.column_by_name(k).expect("key column").clone(),
            options: None,
        })
        .collect();
    let idx = lexsort_to_indices(&cols, None).expect("sort");
    take_record_batch(&all, &idx).expect("take")
}

/// Tables the heap path must read exactly like COPY: `toasty` (inline
/// pglz-compressed values and TOAST pointers), `evolved` (a dropped column,
/// added columns with and without a default), `parted` (leaves laying out
/// their columns differently, one empty).
#[allow(dead_code)]
pub fn create_heap_cases(dsn: &str) {
    exec(
        dsn,
        "CREATE TABLE toasty (id int, small text, squeezed text, big text);
         INSERT INTO toasty SELECT g, 'v' || g, repeat('abc', 300 + g % 50),
                CASE WHEN g % 10 = 0 THEN (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 400) x) END
         FROM generate_series(1, 2000) g;
         CREATE TABLE evolved (id int, gone text, keep int8);
         INSERT INTO evolved SELECT g, 'x' || g, g * 10 FROM generate_series(1, 3000) g;
         ALTER TABLE evolved DROP COLUMN gone;
         ALTER TABLE evolved ADD COLUMN added int DEFAULT 42;
         ALTER TABLE evolved ADD COLUMN added_null text;
         INSERT INTO evolved SELECT g, g * 10, g, 't' || g FROM generate_series(3001, 4000) g;
         CREATE TABLE parted (id int, region text, v numeric(10,2)) PARTITION BY RANGE (id);
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10000);
         CREATE TABLE parted_2 (region text, v numeric(10,2), extra int, id int);
         ALTER TABLE parted_2 DROP COLUMN extra;
         ALTER TABLE parted ATTACH PARTITION parted_2 FOR VALUES FROM (10000) TO (30000);
         CREATE TABLE parted_3 PARTITION OF parted FOR VALUES FROM (30000) TO (40000);
         INSERT INTO parted SELECT g, 'r' || (g % 7), g / 4.0 FROM generate_series(0, 29999) g;",
    );
}

/// VACUUM so that every page is all-visible (after a CHECKPOINT: the test
/// servers commit asynchronously).
#[allow(dead_code)]
pub fn vacuum_all_visible(dsn: &str, tables: &[&str]) {
    // One table per VACUUM: in one multi-table VACUUM with ANALYZE the
    // leaves of a partitioned table were left not all-visible.
    for t in tables {
        exec(dsn, &format!("VACUUM (FREEZE) {t}"));
    }
    exec(dsn, &format!("ANALYZE {}", tables.join(", ")));
}

/// Asserts two tables have one schema and equal columns, naming the first
/// column that differs.
pub fn assert_same_table(a: &RecordBatch, b: &RecordBatch) {
    assert_eq!(a.schema(), b.schema());
    for (i, f) in a.schema().fields().iter().enumerate() {
        assert_eq!(
            a.column(i).to_data(),
            b.column(i).to_data(),
            "column {}",
            f.name()
        );
    }
}

/// Exports `req` through COPY and through the files, asserts the results
/// are identical (rows sorted by `id`), and returns the heap export's report.
pub fn heap_equals_copy_by_id(mut req: ExportRequest<'static>, dir: &Path) -> ExportReport {
    let copy_path = dir.join("copy.arrow");
    let heap_path = dir.join("heap.arrow");
    for p in [&copy_path, &heap_path] {
        std::fs::remove_file(p).ok();
    }
    req.source = Source::Copy;
    req.output = Output::File(copy_path.clone());
    let copy_report = export(&req, &NoProgress).expect("COPY export");
    req.source = Source::Heap;
    req.output = Output::File(heap_path.clone());
    let report = export(&req, &NoProgress).expect("heap export");
    assert_eq!(report.source, "heap");
    assert_eq!(report.rows, copy_report.rows);
    let a = sorted_by(&read_back(&copy_path), &["id"]);
    let b = sorted_by(&read_back(&heap_path), &["id"]);
    assert_same_table(&a, &b);
    report
}

/// After new values were stored out of line in `table`: VACUUM it but not
/// its TOAST relation, so the new chunks are on pages not all-visible;
/// exporting `req` then sends those rows' pages to COPY, reads the rest
/// from the files, and gives COPY's result.
pub fn assert_unvisible_chunks_go_to_copy(
    dsn: &str,
    table: &str,
    req: ExportRequest<'static>,
    dir: &Path,
) {
    exec(dsn, "CHECKPOINT");
    exec(
        dsn,
        &format!("VACUUM (FREEZE, PROCESS_TOAST FALSE) {table}"),
    );
    let r = heap_equals_copy_by_id(req, dir);
    let h = r.heap.as_ref().expect("heap report");
    assert!(h.pages_direct > 0 && h.pages_fallback > 0, "{h:?}");
    assert!(
        h.fallback_reasons.keys().any(|k| k.contains("TOAST")),
        "{h:?}"
    );
}

/// Sets its flag when dropped, unwinding included: a test's writer threads
/// loop until the flag is set, so a failed assertion in the scope that runs
/// them would otherwise leave the scope waiting on them forever (and the
/// failure unprinted).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

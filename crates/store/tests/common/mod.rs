//! Shared by the store's tests: a server in this process on a temporary
//! socket, tables, and comparisons with the CPU export.
#![allow(dead_code)]

pub mod impostor;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use gpupg_export::{export_to_host, Engine, ExportRequest, NoProgress, Output, Source, Target};
use gpupg_source::{ConnectConfig, Connection};
use gpupg_store::{
    Backend, Client, ListReport, LoadSpec, Registry, RevisionInfo, Server, StoreError,
};

pub fn config(dsn: &str) -> ConnectConfig {
    ConnectConfig::resolve(Some(dsn)).expect("test DSN parses")
}

pub fn exec(dsn: &str, sql: &str) {
    Connection::connect(&config(dsn))
        .expect("connect")
        .execute(sql)
        .expect("execute");
}

pub fn scalar(dsn: &str, sql: &str) -> String {
    let rows = Connection::connect(&config(dsn))
        .expect("connect")
        .simple_query(sql)
        .expect("query");
    rows[0][0].clone().expect("a value")
}

/// A store server running in a thread of this process.
pub struct TestStore {
    pub socket: PathBuf,
    pub registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    _dir: tempfile::TempDir,
}

impl TestStore {
    pub fn start(backend: Arc<dyn Backend>, memory_limit: Option<u64>) -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("store.sock");
        let server = Server::bind(&socket, Registry::new(backend, memory_limit))
            .expect("bind")
            .with_log(Arc::new(|line: &str| eprintln!("[server] {line}")));
        let registry = server.registry().clone();
        let stop = server.stop_flag();
        let thread = Some(std::thread::spawn(move || server.run()));
        TestStore {
            socket,
            registry,
            stop,
            thread,
            _dir: dir,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to the store")
    }

    /// Stops the server and waits for it; returns what `run` returned.
    pub fn stop(&mut self) -> Result<(), StoreError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().expect("server thread"),
            None => Ok(()),
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A load of `table` as `name` with small chunks over several connections,
/// so that even small tables make several chunks.
pub fn spec(dsn: &str, table: &str, name: &str) -> LoadSpec {
    let mut s = LoadSpec::new(table, dsn);
    s.name = Some(name.to_string());
    s.parallel = Some(3);
    s.chunk_mib = Some(1);
    s.source = Source::Copy;
    s
}

pub fn find<'a>(list: &'a ListReport, name: &str, current: bool) -> Option<&'a RevisionInfo> {
    list.revisions
        .iter()
        .find(|r| r.name == name && r.current == current)
}

/// Polls until `cond` holds (the row-change counters reach the catalog
/// within about a second; a client's disconnect is seen by its thread).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The table as the CPU engine reads it through COPY, in memory.
pub fn cpu_export(dsn: &str, table: &str) -> Vec<RecordBatch> {
    let req = ExportRequest {
        parallel: 2,
        workers: 2,
        engine: Engine::Cpu,
        source: Source::Copy,
        ..ExportRequest::new(config(dsn), Target::Table(table.to_string()), Output::Host)
    };
    export_to_host(&req, &NoProgress)
        .expect("CPU export")
        .batches
}

pub fn read_arrow(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).expect("arrow file");
    arrow::ipc::reader::FileReader::try_new(f, None)
        .expect("arrow opens")
        .map(|b| b.expect("batch"))
        .collect()
}

/// All batches as one, rows ordered by `keys` (loads read in parallel come
/// out in different orders).
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

/// Asserts two tables hold the same rows, column by column.
pub fn assert_same_rows(what: &str, expected: &[RecordBatch], got: &[RecordBatch], keys: &[&str]) {
    let e = sorted_by(expected, keys);
    let g = sorted_by(got, keys);
    assert_eq!(e.schema(), g.schema(), "{what}: schema");
    assert_eq!(e.num_rows(), g.num_rows(), "{what}: rows");
    for (i, f) in e.schema().fields().iter().enumerate() {
        assert_eq!(
            e.column(i).to_data(),
            g.column(i).to_data(),
            "{what}: column {} differs",
            f.name()
        );
    }
}

/// The condition on a row's page number, for tests that change some pages.
pub const PAGE: &str = "(ctid::text::point)[0]::int";

/// Pages of `table` holding rows that satisfy `cond`.
pub fn pages_where(dsn: &str, table: &str, cond: &str) -> u64 {
    scalar(
        dsn,
        &format!("SELECT count(DISTINCT (ctid::text::point)[0]) FROM {table} WHERE {cond}"),
    )
    .parse()
    .expect("a count")
}

/// Blocks of `table`'s main fork: pages read from the files lie between
/// [`pages_where`]`("true")` (pages with rows) and this (parallel inserts
/// may leave pages without rows).
pub fn relation_blocks(dsn: &str, table: &str) -> u64 {
    scalar(dsn, &format!("SELECT pg_relation_size('{table}') / 8192"))
        .parse()
        .expect("a count")
}

/// Refreshes `name` once the store sees its table changed (the counters it
/// reads are published up to a second late), and returns the new revision.
pub fn refresh_changed(c: &mut Client, name: &str) -> RevisionInfo {
    wait_for(&format!("{name} to look stale"), || {
        find(&c.list(true).unwrap(), name, true).unwrap().stale == Some(true)
    });
    let r = c.refresh(name).expect("refresh");
    assert!(r.rebuilt, "{name} rebuilt: {r:?}");
    r.info
}

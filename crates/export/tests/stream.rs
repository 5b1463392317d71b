//! The streaming API against real PostgreSQL: a stream yields exactly the
//! rows of `export_to_host` (COPY and heap sources, the heap path's
//! fallback included), knows its schema before the first batch and its
//! report at the end, and dropping it early stops the export at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use std::task::Poll;

use gpupg_export::{
    export_to_host, start_stream, stream, ExportRequest, NoProgress, Output, Source, Target,
};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

/// The tests of this file one at a time: one counts the streams' threads.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn host_request(dsn: &str, table: &str, source: Source) -> ExportRequest<'static> {
    ExportRequest {
        source,
        ..request(dsn, common::table(table), Output::Host, Format::Arrow)
    }
}

/// Streams `req` and loads it with `export_to_host`; asserts the same
/// schema, rows and values, and the same heap counters.
fn stream_equals_host(req: ExportRequest<'static>, keys: &[&str]) {
    let loaded = export_to_host(&req, &NoProgress).expect("export_to_host");
    let mut s = stream(req, NoProgress).expect("stream starts");
    assert_eq!(s.schema(), loaded.schema, "the schema is known up front");
    assert!(s.report().is_none(), "no report before the end");
    let batches: Vec<_> = s.by_ref().map(|b| b.expect("batch")).collect();
    let report = s.report().expect("a report at the end").clone();
    assert_eq!(report.rows, loaded.report.rows);
    assert_eq!(report.source, loaded.report.source);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows as u64, report.rows);
    if let (Some(a), Some(b)) = (&report.heap, &loaded.report.heap) {
        // The same pages from the files and through COPY; not always for
        // the same reason: reading a page through COPY may set hint bits,
        // which (with checksums, or evicted) makes the page listed as
        // changed for the next export ("dirty in shared buffers") where
        // the first found it "not all-visible".
        let total = |h: &gpupg_export::HeapReport| h.fallback_reasons.values().sum::<u64>();
        assert_eq!(
            (a.pages_direct, a.pages_fallback, a.rows_direct, total(a)),
            (b.pages_direct, b.pages_fallback, b.rows_direct, total(b)),
            "the heap path counts the same: {:?} against {:?}",
            a.fallback_reasons,
            b.fallback_reasons
        );
    }
    if rows == 0 {
        return;
    }
    let a = sorted_by(&loaded.batches, keys);
    let b = sorted_by(&batches, keys);
    assert_same_table(&a, &b);
}

#[test]
fn a_stream_yields_what_export_to_host_loads() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 30_000, 2).expect("lineorder");
    create_heap_cases(&dsn);
    vacuum_all_visible(&dsn, &["lineorder", "toasty", "evolved", "parted"]);
    // Pages no longer all-visible: the heap path reads them through COPY.
    exec(
        &dsn,
        "UPDATE lineorder SET lo_tax = lo_tax + 1 WHERE lo_orderkey % 97 = 0",
    );
    let keys = ["lo_orderkey", "lo_linenumber"];
    for source in [Source::Copy, Source::Heap] {
        stream_equals_host(host_request(&dsn, "lineorder", source), &keys);
    }
    // TOASTed values: pages the page decoder flags come back to the heap
    // source, which converts them or reads them through COPY.
    for t in ["toasty", "evolved", "parted"] {
        stream_equals_host(host_request(&dsn, t, Source::Heap), &["id"]);
    }
    // Errors before the columns are known come from `stream` itself.
    let missing = host_request(&dsn, "no_such_table", Source::Copy);
    assert!(stream(missing, NoProgress).is_err());
}

/// Threads of this process named as a stream's: its own thread is, and the
/// threads it starts inherit the name (Linux gives a new thread its
/// creator's name unless it is named).
fn stream_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim() == "gpupg-stream")
        })
        .count()
}

/// Backends whose statement is or was a COPY: the export's connections
/// (running a COPY, or idle in their transaction between statements while
/// the export waits for its consumer).
fn copy_backends(dsn: &str) -> usize {
    query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity
         WHERE query ILIKE 'COPY%' AND pid <> pg_backend_pid()",
    )[0][0]
        .as_deref()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Drops a stream of `lineorder` from `source` after its first batch: the
/// drop returns promptly, leaving no thread, and no COPY or connection on
/// the server.
fn drop_after_first_batch(dsn: &str, source: Source) {
    assert_eq!(stream_threads(), 0);
    let mut s = stream(host_request(dsn, "lineorder", source), NoProgress).expect("stream starts");
    let first = s.next().expect("a first batch").expect("batch");
    assert!(first.num_rows() > 0);
    assert!(s.report().is_none(), "the export is still running");
    assert!(
        stream_threads() > 1,
        "the export runs on threads of its own"
    );
    assert!(copy_backends(dsn) > 0, "the export's connections are open");
    let t = Instant::now();
    drop(s);
    println!("RESULT {source:?} stream dropped in {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "drop took {:?}",
        t.elapsed()
    );
    // A joined thread may still be listed for a moment while it exits.
    let deadline = Instant::now() + Duration::from_secs(2);
    while stream_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(stream_threads(), 0, "threads left behind");
    // The server ends the backend of a closed connection on its own time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while copy_backends(dsn) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(copy_backends(dsn), 0, "a COPY is still on the server");
}

#[test]
fn dropping_a_stream_stops_its_export() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 300_000, 4).expect("lineorder");
    drop_after_first_batch(&dsn, Source::Copy);
    // On the heap path the readers, the fallback side and the COPY of the
    // pages not all-visible stop too.
    exec(
        &dsn,
        "UPDATE lineorder SET lo_tax = lo_tax + 1 WHERE lo_orderkey % 50 = 0",
    );
    drop_after_first_batch(&dsn, Source::Heap);
}

/// Backends running a statement of `pattern` other than this check's.
fn running(dsn: &str, pattern: &str) -> usize {
    query(
        dsn,
        &format!(
            "SELECT count(*) FROM pg_stat_activity
             WHERE query ILIKE '{pattern}' AND state <> 'idle' AND pid <> pg_backend_pid()"
        ),
    )[0][0]
        .as_deref()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

#[test]
fn waiting_in_slices_can_give_up_at_any_time() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let sleepy = || ExportRequest {
        target: Target::Query("SELECT 1 AS s FROM pg_sleep(60)".into()),
        ..host_request(&dsn, "unused", Source::Auto)
    };
    // A stream given up while it may still be connecting stops at once.
    let t = Instant::now();
    drop(start_stream(sleepy(), NoProgress).expect("the export starts"));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // Waiting for the columns, then for a batch, in slices: the server is
    // sleeping, so each slice ends with nothing.
    let mut starting = start_stream(sleepy(), NoProgress).expect("the export starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = loop {
        match starting.wait(Duration::from_millis(50)) {
            Poll::Ready(s) => break s.expect("the columns"),
            Poll::Pending => assert!(Instant::now() < deadline, "no columns"),
        }
    };
    assert_eq!(s.schema().fields().len(), 1);
    let t = Instant::now();
    assert!(s.next_timeout(Duration::from_millis(100)).is_pending());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a slice took {:?}",
        t.elapsed()
    );
    while running(&dsn, "%pg_sleep%") == 0 {
        assert!(Instant::now() < deadline, "the query never ran");
        assert!(s.next_timeout(Duration::from_millis(50)).is_pending());
    }
    // Giving up: the server's statement is cancelled and the threads joined.
    let t = Instant::now();
    drop(s);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        t.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&dsn, "%pg_sleep%") > 0 {
        assert!(
            Instant::now() < deadline,
            "pg_sleep still runs on the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    while stream_threads() > 0 {
        assert!(Instant::now() < deadline, "threads left behind");
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! `--heap-sync wal` when the WAL cannot be read: the pages dirty in shared
//! buffers are listed instead and the report says why. Its own test binary:
//! it points the WAL reader elsewhere through an environment variable (a
//! debug-build test hook), which would reach every test of a shared binary.

mod common;

use common::*;
use gpupg_export::{export, HeapSync, NoProgress, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

#[test]
fn unreadable_wal_falls_back_to_the_buffer_cache() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(&dsn, "CREATE EXTENSION pg_buffercache");
    exec(
        &dsn,
        "CREATE TABLE t (a int, b int); INSERT INTO t SELECT g, g FROM generate_series(1, 20000) g;",
    );
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["t"]);
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "UPDATE t SET b = -b WHERE a % 500 = 0");
    let dir = tempfile::tempdir().expect("tempdir");
    // An empty directory: the segment holding the checkpoint's REDO is
    // "gone", as after a checkpoint recycled it.
    let empty = dir.path().join("no_wal");
    std::fs::create_dir(&empty).expect("mkdir");
    std::env::set_var("GPUPG_TEST_WAL_DIR", &empty);
    let (path, out) = file(dir.path(), "heap.arrow");
    let mut req = request(&dsn, table("t"), out, Format::Arrow);
    req.heap_threshold = 0;
    req.source = Source::Heap;
    req.heap_sync = HeapSync::Wal;
    let r = export(&req, &NoProgress).expect("heap export");
    std::env::remove_var("GPUPG_TEST_WAL_DIR");
    let h = r.heap.as_ref().expect("heap report");
    assert!(
        h.sync.starts_with("dirty pages from pg_buffercache: ")
            && h.sync.contains("not from the WAL: ")
            && h.sync.contains("cannot open"),
        "{}",
        h.sync
    );
    assert!(h.pages_dirty > 0, "{h:?}");
    // The same rows as COPY.
    let (copy_path, copy_out) = file(dir.path(), "copy.arrow");
    req.source = Source::Copy;
    req.output = copy_out;
    let copy = export(&req, &NoProgress).expect("COPY export");
    assert_eq!(r.rows, copy.rows);
    assert_eq!(
        sorted_by(&read_back(&path), &["a"]),
        sorted_by(&read_back(&copy_path), &["a"])
    );
    // Readable again: the WAL's list.
    let (_, out) = file(dir.path(), "again.arrow");
    req.source = Source::Heap;
    req.output = out;
    let r = export(&req, &NoProgress).expect("heap export");
    let h = r.heap.as_ref().expect("heap report");
    assert!(
        h.sync.starts_with("pages changed since the checkpoint at "),
        "{}",
        h.sync
    );
}

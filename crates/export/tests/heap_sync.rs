//! The heap path without a CHECKPOINT of its own: the table's pages dirty
//! in shared buffers (`pg_buffercache`) are read through COPY, the result
//! equals COPY's; without the extension (or the right to read it) `auto`
//! runs CHECKPOINT as before; and copies of the data directory are still
//! refused when no checkpoint tells them apart.

mod common;

use common::*;
use gpupg_export::{export, ExportReport, ExportRequest, HeapSync, NoProgress, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

/// Exports `req` through COPY and through the heap files and asserts the
/// results are identical; returns the heap export's report.
fn heap_equals_copy(mut req: ExportRequest<'static>, dir: &std::path::Path) -> ExportReport {
    let (copy_path, copy_out) = file(dir, "copy.arrow");
    let (heap_path, heap_out) = file(dir, "heap.arrow");
    for p in [&copy_path, &heap_path] {
        std::fs::remove_file(p).ok();
    }
    req.source = Source::Copy;
    req.output = copy_out;
    let copy = export(&req, &NoProgress).expect("COPY export");
    req.source = Source::Heap;
    req.output = heap_out;
    let report = export(&req, &NoProgress).expect("heap export");
    assert_eq!(report.source, "heap");
    assert_eq!(report.rows, copy.rows);
    let a = sorted_by(&read_back(&copy_path), &["a"]);
    let b = sorted_by(&read_back(&heap_path), &["a"]);
    assert_eq!(a, b, "heap rows differ from COPY's");
    report
}

fn heap(report: &ExportReport) -> &gpupg_export::HeapReport {
    report.heap.as_ref().expect("heap report")
}

/// The server's latest checkpoint, to see that an export ran none.
fn latest_checkpoint(dsn: &str) -> String {
    query(
        dsn,
        "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()",
    )[0][0]
        .clone()
        .unwrap_or_default()
}

/// Table `t` (a int, b int) of all-visible pages written to the files; then
/// rows on a few pages changed without a checkpoint, so those pages are
/// dirty in shared buffers while the files still hold them all-visible,
/// with an LSN older than any fence: only the dirty-page list keeps their
/// old rows out.
fn create_dirty_table(dsn: &str) {
    exec(
        dsn,
        "CREATE TABLE t (a int, b int) WITH (fillfactor = 60);
         INSERT INTO t SELECT g, g FROM generate_series(1, 30000) g;",
    );
    exec(dsn, "CHECKPOINT");
    vacuum_all_visible(dsn, &["t"]);
    exec(dsn, "CHECKPOINT");
    exec(
        dsn,
        "UPDATE t SET b = -b WHERE a BETWEEN 1000 AND 1100 OR a BETWEEN 20000 AND 20040;
         DELETE FROM t WHERE a BETWEEN 25000 AND 25010;",
    );
}

/// Moves the WAL insert position two segments past the latest checkpoint
/// (two WAL switches), so that `auto` finds the WAL since it too long to
/// read and takes the buffer cache's list or a CHECKPOINT.
fn far_from_checkpoint(dsn: &str) {
    exec(dsn, "CREATE TABLE IF NOT EXISTS wal_step (a int)");
    for _ in 0..2 {
        exec(dsn, "INSERT INTO wal_step VALUES (1)");
        exec(dsn, "SELECT pg_switch_wal()");
    }
    exec(dsn, "INSERT INTO wal_step VALUES (1)");
}

fn base(dsn: &str, dir: &std::path::Path, sync: HeapSync) -> ExportRequest<'static> {
    base_of("t", dsn, dir, sync)
}

fn base_of(name: &str, dsn: &str, dir: &std::path::Path, sync: HeapSync) -> ExportRequest<'static> {
    let mut r = request(dsn, table(name), file(dir, "x.arrow").1, Format::Arrow);
    r.heap_threshold = 0;
    r.heap_sync = sync;
    r
}

#[test]
fn dirty_pages_are_read_through_copy_without_a_checkpoint() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(&dsn, "CREATE EXTENSION pg_buffercache");
    create_dirty_table(&dsn);
    let dir = tempfile::tempdir().expect("tempdir");
    // auto takes the WAL on this quiet server, whose latest checkpoint is
    // just before the changes.
    for sync in [HeapSync::BufferCache, HeapSync::Auto, HeapSync::Wal] {
        let before = latest_checkpoint(&dsn);
        let r = heap_equals_copy(base(&dsn, dir.path(), sync), dir.path());
        let h = heap(&r);
        assert_eq!(latest_checkpoint(&dsn), before, "{sync}: no CHECKPOINT");
        assert_eq!(h.checkpoint_seconds, 0.0, "{h:?}");
        let way = if sync == HeapSync::BufferCache {
            "dirty pages from pg_buffercache: "
        } else {
            "pages changed since the checkpoint at "
        };
        assert!(
            h.sync.starts_with(way) && h.sync.ends_with("no CHECKPOINT"),
            "{sync}: {}",
            h.sync
        );
        assert!(h.pages_dirty > 0 && h.pages_direct > 150, "{h:?}");
        assert!(
            h.fallback_reasons
                .get("dirty in shared buffers")
                .copied()
                .unwrap_or(0)
                > 0,
            "{h:?}"
        );
        assert!(
            h.files_proof.contains("its data directory"),
            "{}",
            h.files_proof
        );
        assert!(r.summary().contains("no CHECKPOINT"), "{}", r.summary());
    }
    // A partitioned table: each leaf's dirty pages are listed.
    exec(
        &dsn,
        "CREATE TABLE p (a int, b int) PARTITION BY RANGE (a);
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10000) WITH (fillfactor = 60);
         CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10000) TO (MAXVALUE) WITH (fillfactor = 60);
         INSERT INTO p SELECT g, g FROM generate_series(1, 20000) g;",
    );
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["p1", "p2"]);
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "UPDATE p SET b = -b WHERE a % 400 = 3");
    for sync in [HeapSync::BufferCache, HeapSync::Wal] {
        let r = heap_equals_copy(base_of("p", &dsn, dir.path(), sync), dir.path());
        let h = heap(&r);
        assert!(h.pages_dirty >= 2 && h.pages_direct > 0, "{sync}: {h:?}");
    }
    // CHECKPOINT as asked still works: the pages are written, none listed.
    let r = heap_equals_copy(base(&dsn, dir.path(), HeapSync::Checkpoint), dir.path());
    let h = heap(&r);
    assert!(h.sync.starts_with("CHECKPOINT "), "{}", h.sync);
    assert!(h.sync.ends_with("as asked"), "{}", h.sync);
    assert_eq!(h.pages_dirty, 0, "{h:?}");
    assert!(
        h.files_proof.contains("current (latest checkpoint"),
        "{}",
        h.files_proof
    );
    // After it the list is short (COPY's reads may set hint bits again).
    let r = heap_equals_copy(base(&dsn, dir.path(), HeapSync::BufferCache), dir.path());
    assert!(
        heap(&r).sync.ends_with("no CHECKPOINT"),
        "{}",
        heap(&r).sync
    );
}

#[test]
fn without_pg_buffercache_auto_runs_checkpoint() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    create_dirty_table(&dsn);
    far_from_checkpoint(&dsn);
    let dir = tempfile::tempdir().expect("tempdir");
    let r = heap_equals_copy(base(&dsn, dir.path(), HeapSync::Auto), dir.path());
    let h = heap(&r);
    assert!(
        h.sync.starts_with("CHECKPOINT ")
            && h.sync.contains("pg_buffercache extension is not installed")
            && h.sync
                .contains("not from the WAL: the WAL since the checkpoint"),
        "{}",
        h.sync
    );
    assert_eq!(h.pages_dirty, 0, "{h:?}");
    // Asked for the list: --source heap fails saying why, auto reads
    // through COPY.
    let mut req = base(&dsn, dir.path(), HeapSync::BufferCache);
    req.source = Source::Heap;
    req.output = file(dir.path(), "refused.arrow").1;
    let e = export(&req, &NoProgress).expect_err("no pg_buffercache");
    assert!(
        e.to_string()
            .contains("the pages dirty in shared buffers cannot be listed: the pg_buffercache extension is not installed"),
        "{e}"
    );
    req.source = Source::Auto;
    req.output = file(dir.path(), "auto.arrow").1;
    let auto = export(&req, &NoProgress).expect("auto export");
    assert_eq!(auto.source, "copy", "{}", auto.source_detail);
    assert!(
        auto.source_detail.contains("cannot be listed"),
        "{}",
        auto.source_detail
    );
}

/// Who may do what: pg_monitor reads pg_buffercache, so needs no
/// pg_checkpoint; without pg_monitor auto falls back to CHECKPOINT; with
/// neither the heap path is refused, saying both.
#[test]
fn privileges_choose_the_way() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(&dsn, "CREATE EXTENSION pg_buffercache");
    create_dirty_table(&dsn);
    far_from_checkpoint(&dsn);
    exec(
        &dsn,
        "CREATE ROLE mon LOGIN IN ROLE pg_monitor; CREATE ROLE ckpt LOGIN IN ROLE pg_checkpoint;
         CREATE ROLE nobody LOGIN; GRANT SELECT ON t TO mon, ckpt, nobody;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let as_user = |user: &str, sync: HeapSync| {
        let mut r = base(&format!("{dsn} user={user}"), dir.path(), sync);
        r.data_dir = Some(server.data_dir().to_path_buf());
        r
    };
    let r = heap_equals_copy(as_user("mon", HeapSync::Auto), dir.path());
    assert!(heap(&r).sync.contains("no CHECKPOINT"), "{}", heap(&r).sync);
    assert!(heap(&r).pages_dirty > 0, "{:?}", heap(&r));
    let r = heap_equals_copy(as_user("ckpt", HeapSync::Auto), dir.path());
    let s = &heap(&r).sync;
    assert!(
        s.starts_with("CHECKPOINT ") && s.contains("not readable by this user"),
        "{s}"
    );
    // The CHECKPOINT just run made the WAL since it short again.
    far_from_checkpoint(&dsn);
    let mut req = as_user("nobody", HeapSync::Auto);
    req.source = Source::Heap;
    let e = export(&req, &NoProgress).expect_err("neither privilege");
    let msg = e.to_string();
    assert!(
        msg.contains("CHECKPOINT was refused") && msg.contains("not readable by this user"),
        "{msg}"
    );
}

/// A copy of a directory tree (a data directory copied while its server
/// runs), readable by this process.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            // Sockets and lock files vanish or are unreadable: skip those.
            std::fs::copy(entry.path(), &target).ok();
        }
    }
}

/// `--source heap` (without a checkpoint) on `data_dir` fails naming one
/// of `mismatch`; `auto` reads through COPY saying the same.
fn refused_without_checkpoint(dsn: &str, data_dir: &std::path::Path, mismatch: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = base(dsn, dir.path(), HeapSync::BufferCache);
    req.data_dir = Some(data_dir.to_path_buf());
    req.source = Source::Heap;
    let e = export(&req, &NoProgress).expect_err("files that are not the server's");
    let msg = e.to_string();
    eprintln!("refused: {msg}");
    assert!(
        msg.contains("are not proven this server's own and current")
            && mismatch.iter().any(|m| msg.contains(m)),
        "{msg}"
    );
    req.source = Source::Auto;
    req.heap_sync = HeapSync::Auto;
    let auto = export(&req, &NoProgress).expect("auto export");
    assert_eq!(auto.source, "copy", "{}", auto.source_detail);
    assert!(
        mismatch.iter().any(|m| auto.source_detail.contains(m)),
        "{}",
        auto.source_detail
    );
}

/// A copy taken after the latest checkpoint has the server's pg_control,
/// postmaster.pid and file sizes: only the postmaster's working directory
/// tells it apart. After an UPDATE and a checkpoint, its pg_control is
/// older; with the live pg_control and postmaster.pid linked in, its
/// table's files may be too short, and its directory is still a copy.
#[test]
fn copies_of_the_data_directory_are_refused_without_a_checkpoint() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(&dsn, "CREATE EXTENSION pg_buffercache");
    create_dirty_table(&dsn);
    exec(&dsn, "CHECKPOINT");
    let copies = tempfile::tempdir().expect("tempdir");
    let stale = copies.path().join("stale");
    copy_tree(server.data_dir(), &stale);
    // A checkpoint may end while copying: then pg_control tells.
    refused_without_checkpoint(&dsn, &stale, &["data directory", "latest checkpoint"]);
    exec(&dsn, "UPDATE t SET b = b + 1 WHERE a % 2 = 0");
    exec(&dsn, "CHECKPOINT");
    refused_without_checkpoint(&dsn, &stale, &["latest checkpoint"]);
    for f in ["global/pg_control", "postmaster.pid"] {
        std::fs::remove_file(stale.join(f)).expect("rm");
        std::os::unix::fs::symlink(server.data_dir().join(f), stale.join(f)).expect("link");
    }
    // The updated rows fit their pages (fillfactor 60), so the sizes may
    // match too: the postmaster's directory refuses it then.
    refused_without_checkpoint(&dsn, &stale, &["segment files", "data directory"]);
    // With a CHECKPOINT the linked pg_control is current and the sizes may
    // match: the postmaster's directory refuses the copy there too.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = base(&dsn, dir.path(), HeapSync::Checkpoint);
    req.data_dir = Some(stale.clone());
    req.source = Source::Heap;
    let msg = export(&req, &NoProgress)
        .expect_err("a copy read after a CHECKPOINT")
        .to_string();
    assert!(
        msg.contains("not the postmaster's data directory") || msg.contains("segment files"),
        "{msg}"
    );
    // The server's own directory, given through a symbolic link, is its own.
    let link = copies.path().join("link");
    std::os::unix::fs::symlink(server.data_dir(), &link).expect("link");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = base(&dsn, dir.path(), HeapSync::BufferCache);
    req.data_dir = Some(link);
    let r = heap_equals_copy(req, dir.path());
    assert!(
        heap(&r).files_proof.contains("its data directory"),
        "{}",
        heap(&r).files_proof
    );
}

/// A refresh without a checkpoint: pages changed since the previous load
/// but still dirty in shared buffers hold, in their files, the LSN the
/// previous load saw; they must be read again, not kept.
#[test]
fn a_refresh_never_keeps_a_dirty_page() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(&dsn, "CREATE EXTENSION pg_buffercache");
    create_dirty_table(&dsn);
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["t"]);
    exec(&dsn, "CHECKPOINT");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = base(&dsn, dir.path(), HeapSync::BufferCache);
    req.source = Source::Heap;
    let first = gpupg_export::export_to_host(&req, &NoProgress).expect("load");
    assert!(
        heap(&first.report).pages_direct > 0,
        "{:?}",
        first.report.heap
    );
    // Changed in place (HOT, fillfactor 60) without a checkpoint.
    exec(&dsn, "UPDATE t SET b = b + 1000000 WHERE a % 300 = 1");
    req.prior = Some(&first.pages);
    let second = gpupg_export::export_to_host(&req, &NoProgress).expect("refresh");
    let h = heap(&second.report);
    assert!(h.pages_kept > 0 && h.pages_dirty > 0, "{h:?}");
    let mut batches = second.batches.clone();
    for c in &second.carried {
        batches.push(gpupg_gpu::gather_rows_host(&first.batches, &c.runs).expect("gather"));
    }
    let (copy_path, out) = file(dir.path(), "copy.arrow");
    let mut copy = base(&dsn, dir.path(), HeapSync::Auto);
    copy.output = out;
    export(&copy, &NoProgress).expect("COPY export");
    assert_eq!(
        sorted_by(&batches, &["a"]),
        sorted_by(&read_back(&copy_path), &["a"]),
        "the refresh's rows differ from COPY's"
    );
}

/// Right after a load most of the table is dirty in shared buffers: `auto`
/// lists it (from the WAL: the checkpoint is recent), finds more than a
/// tenth changed and runs a CHECKPOINT instead,
/// so every page comes from the files (and the report says why);
/// `buffercache` keeps the list and reads the dirty pages through COPY.
#[test]
fn auto_checkpoints_when_most_pages_are_dirty() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(&dsn, "CREATE EXTENSION pg_buffercache");
    exec(
        &dsn,
        "CREATE TABLE t (a int, b int) WITH (fillfactor = 60);
         INSERT INTO t SELECT g, g FROM generate_series(1, 30000) g;",
    );
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["t"]);
    // VACUUM set every page's PD_ALL_VISIBLE: all of them are dirty now.
    let dir = tempfile::tempdir().expect("tempdir");
    let listed = heap_equals_copy(base(&dsn, dir.path(), HeapSync::BufferCache), dir.path());
    let h = heap(&listed);
    assert!(h.sync.contains("no CHECKPOINT"), "{}", h.sync);
    assert!(h.pages_fallback > 0, "{h:?}");
    exec(&dsn, "UPDATE t SET b = -b");
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["t"]);
    let auto = heap_equals_copy(base(&dsn, dir.path(), HeapSync::Auto), dir.path());
    let h = heap(&auto);
    assert!(
        h.sync
            .contains("changed since the checkpoint: a CHECKPOINT costs less"),
        "{}",
        h.sync
    );
    assert_eq!(h.pages_fallback, 0, "{h:?}");
    assert!(
        h.files_proof.contains("its data directory"),
        "{}",
        h.files_proof
    );
}

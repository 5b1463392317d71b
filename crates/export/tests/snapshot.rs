//! While other sessions move money between accounts, delete and re-insert rows
//! (which moves them to other pages, i.e. other ctid ranges), every export
//! must hold exactly the rows of one snapshot: same count, same sum, no id
//! twice, none missing.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use common::*;
use gpupg_export::{HeapSync, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;
use gpupg_source::Connection;

const ACCOUNTS: i64 = 20_000;
const TOTAL: i64 = ACCOUNTS * 100;

#[test]
fn exports_see_one_snapshot_under_concurrent_writes() {
    exports_under_concurrent_writes(Source::Copy, HeapSync::Auto);
}

/// The heap path under the same writers, with VACUUM running too (so pages
/// keep turning all-visible and back): pages it trusts and pages it reads
/// through COPY must still add up to one snapshot.
#[test]
fn heap_exports_see_one_snapshot_under_concurrent_writes_and_vacuum() {
    exports_under_concurrent_writes(Source::Heap, HeapSync::Checkpoint);
}

/// The same without a CHECKPOINT of the export's: the pages dirty in
/// shared buffers (pg_buffercache) go through COPY; another session runs
/// CHECKPOINT now and then, so that pages are written while the export
/// lists and reads them.
#[test]
fn heap_exports_without_checkpoint_see_one_snapshot_under_concurrent_writes_and_vacuum() {
    exports_under_concurrent_writes(Source::Heap, HeapSync::BufferCache);
}

/// The same with the pages changed since the latest checkpoint listed
/// from the WAL (the checkpoints every 150 ms move its REDO pointer while
/// the export reads it).
#[test]
fn heap_exports_from_the_wal_see_one_snapshot_under_concurrent_writes_and_vacuum() {
    exports_under_concurrent_writes(Source::Heap, HeapSync::Wal);
}

fn exports_under_concurrent_writes(source: Source, sync: HeapSync) {
    let listed = matches!(sync, HeapSync::BufferCache | HeapSync::Wal);
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    if listed {
        exec(&dsn, "CREATE EXTENSION pg_buffercache");
    }
    exec(
        &dsn,
        "CREATE TABLE accounts (id bigint NOT NULL, balance bigint NOT NULL, pad text);
         INSERT INTO accounts SELECT g, 100, repeat('x', 200) FROM generate_series(1, 20000) g;",
    );
    let stop = AtomicBool::new(false);
    let dir = tempfile::tempdir().expect("tempdir");
    std::thread::scope(|s| {
        for w in 0..3i64 {
            let (dsn, stop) = (&dsn, &stop);
            s.spawn(move || {
                let mut c = Connection::connect(&config(dsn)).expect("writer connects");
                let mut k = w;
                while !stop.load(Ordering::Relaxed) {
                    k += 7919;
                    let (a, b) = (k % ACCOUNTS + 1, (k * 31) % ACCOUNTS + 1);
                    // A transfer, plus a delete and re-insert of one row: the
                    // row's new version lands in another page range.
                    c.execute(&format!(
                        "BEGIN; UPDATE accounts SET balance = balance - 5 WHERE id = {a};
                         UPDATE accounts SET balance = balance + 5 WHERE id = {b};
                         WITH d AS (DELETE FROM accounts WHERE id = {b} RETURNING *)
                         INSERT INTO accounts SELECT * FROM d; COMMIT;"
                    ))
                    .expect("writer transaction");
                }
            });
        }
        if source == Source::Heap {
            let (dsn, stop) = (&dsn, &stop);
            s.spawn(move || {
                let mut c = Connection::connect(&config(dsn)).expect("vacuum connects");
                while !stop.load(Ordering::Relaxed) {
                    c.execute("VACUUM accounts").expect("vacuum");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            });
        }
        if listed {
            let (dsn, stop) = (&dsn, &stop);
            s.spawn(move || {
                let mut c = Connection::connect(&config(dsn)).expect("checkpointer connects");
                while !stop.load(Ordering::Relaxed) {
                    c.execute("CHECKPOINT").expect("checkpoint");
                    std::thread::sleep(std::time::Duration::from_millis(150));
                }
            });
        }
        // A failed assertion below must stop the writers too, or the scope
        // waits for them forever and the failure is never printed.
        let _stop_on_exit = StopOnDrop(&stop);
        let mut dirty = 0;
        let (mut direct, mut fallback) = (0, 0);
        // Exports whose list came from the WAL (a checkpoint ending while
        // it is read may send one to the buffer cache instead).
        let mut from_wal = 0;
        for run in 0..4 {
            let (path, out) = file(dir.path(), &format!("run{run}.arrow"));
            let mut req = request(&dsn, table("accounts"), out, Format::Arrow);
            req.parallel = 4;
            req.chunk_bytes = 64 * 1024;
            req.heap_chunk_bytes = 64 * 1024;
            req.columns = Some(vec!["id".into(), "balance".into()]);
            req.source = source;
            req.heap_sync = sync;
            let report = gpupg_export::export(&req, &gpupg_export::NoProgress).expect("export");
            if let Some(h) = &report.heap {
                direct += h.pages_direct;
                fallback += h.pages_fallback;
                dirty += h.pages_dirty;
                if sync == HeapSync::Wal && h.sync.starts_with("pages changed since") {
                    from_wal += 1;
                }
                if listed {
                    assert!(h.sync.contains("no CHECKPOINT"), "{}", h.sync);
                    assert_eq!(h.checkpoint_seconds, 0.0);
                }
            }
            assert!(
                report.statements > 4,
                "the table is split into several ranges"
            );
            let mut ids = HashSet::new();
            let mut sum = 0i64;
            for b in read_back(&path) {
                let id = b.column(0).as_primitive::<Int64Type>();
                let bal = b.column(1).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    assert!(
                        ids.insert(id.value(i)),
                        "run {run}: id {} twice",
                        id.value(i)
                    );
                    sum += bal.value(i);
                }
            }
            assert_eq!(ids.len() as i64, ACCOUNTS, "run {run}: rows missing");
            assert_eq!(sum, TOTAL, "run {run}: balances of different snapshots");
        }
        stop.store(true, Ordering::Relaxed);
        if source == Source::Heap {
            println!(
                "heap pages over 4 runs: {direct} direct, {fallback} through COPY ({dirty} dirty)"
            );
            assert!(direct > 0, "some pages are read from the files");
            assert!(fallback > 0, "pages changed by the writers go through COPY");
        }
        if sync == HeapSync::Wal {
            println!("lists from the WAL: {from_wal} of 4");
            assert!(from_wal > 0, "the WAL gave the list at least once");
        }
    });
}

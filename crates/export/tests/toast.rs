//! Values stored out of line, read from the TOAST relation's own files:
//! uncompressed (STORAGE EXTERNAL), pglz and lz4 (where the server has it),
//! text and bytea, after updates and deletes; chunks on pages that are not
//! all-visible send their rows' pages to COPY. Heap equals COPY throughout.

mod common;

use common::*;
use gpupg_export::{export, NoProgress, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

fn one(dsn: &str, sql: &str) -> String {
    query(dsn, sql)[0][0].clone().unwrap_or_default()
}

#[test]
fn toasted_values_are_read_from_the_files() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let lz4 = one(
        &dsn,
        "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' \
         AND 'lz4' = ANY(enumvals)",
    ) == "1";
    // ext: uncompressed out of line; pg: pglz, compressed then out of
    // line; by: bytea out of line; lz: lz4 out of line (text otherwise).
    exec(
        &dsn,
        &format!(
            "CREATE TABLE big (id int, ext text, pg text, by bytea, lz text {});
             ALTER TABLE big ALTER COLUMN ext SET STORAGE EXTERNAL;
             ALTER TABLE big ALTER COLUMN by SET STORAGE EXTERNAL;
             INSERT INTO big SELECT g,
                 CASE WHEN g % 3 <> 0 THEN repeat(md5(g::text), 100 + g % 400) END,
                 CASE WHEN g % 4 <> 1 THEN repeat(md5(g::text), 300) ||
                     (SELECT string_agg(md5((g * x)::text), '')
                     FROM generate_series(1, 100 + g % 200) x) END,
                 CASE WHEN g % 5 = 0 THEN decode(repeat(md5(g::text), 150), 'hex') END,
                 CASE WHEN g % 2 = 0 THEN repeat(md5(g::text) || 'lz', 3000) ||
                     (SELECT string_agg(md5((g + x)::text), '') FROM generate_series(1, 100) x) END
               FROM generate_series(1, 1500) g;
             UPDATE big SET ext = repeat('updated ' || id, 900) WHERE id % 7 = 0;
             UPDATE big SET pg = NULL, lz = 'short now' WHERE id % 11 = 0;
             DELETE FROM big WHERE id % 13 = 0",
            if lz4 { "COMPRESSION lz4" } else { "" }
        ),
    );
    if !lz4 {
        eprintln!("lz4 values not made: this server is built without lz4 (PostgreSQL 18 wheel)");
    }
    assert_eq!(
        one(
            &dsn,
            "SELECT count(*) FILTER (WHERE pg_column_compression(pg) = 'pglz' \
                 AND pg_column_size(pg) > 2000) > 0 \
             AND count(*) FILTER (WHERE pg_column_compression(ext) IS NULL \
                 AND octet_length(ext) > 2000) > 0 FROM big"
        ),
        "t",
        "pglz and uncompressed values out of line"
    );
    if lz4 {
        assert_eq!(
            one(
                &dsn,
                "SELECT count(*) FILTER (WHERE pg_column_compression(lz) = 'lz4' \
                 AND pg_column_size(lz) > 2100) > 0 FROM big"
            ),
            "t",
            "lz4 values out of line"
        );
    }
    // The CHECKPOINT, outside the writing transaction, flushes its commit
    // record (the test server commits asynchronously) so that VACUUM can
    // mark the pages all-visible. INDEX_CLEANUP ON: VACUUM may otherwise leave the dead chunks'
    // line pointers (few pages have them), and their pages not all-visible.
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE, INDEX_CLEANUP ON) big");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = || arrow_request(&dsn, "big", dir.path());
    let r = heap_equals_copy_by_id(base(), dir.path());
    let h = r.heap.as_ref().expect("heap report");
    assert!(h.pages_direct > 0 && h.pages_fallback == 0, "{h:?}");
    assert!(
        h.toast.iter().any(|t| t.contains("chunks indexed")),
        "{h:?}"
    );

    // Only columns that cannot be out of line: the TOAST relation is not read.
    let mut req = base();
    req.columns = Some(vec!["id".into()]);
    let r = heap_equals_copy_by_id(req, dir.path());
    let h = r.heap.as_ref().expect("heap report");
    assert!(h.toast.is_empty(), "{h:?}");

    // New values whose chunks are on pages not yet all-visible (the table
    // vacuumed, its TOAST relation not): those rows' pages go to COPY, the
    // rest is still read from the files, and the result is the same.
    exec(
        &dsn,
        "INSERT INTO big SELECT g, repeat(md5(g::text), 300), NULL, NULL, NULL
           FROM generate_series(2001, 2100) g",
    );
    assert_unvisible_chunks_go_to_copy(&dsn, "big", base(), dir.path());
}

/// Writers update values stored out of line (each update writes a new
/// TOAST value) and delete and re-insert rows while VACUUM runs, so TOAST
/// pages keep turning all-visible and back and chunks are removed: every
/// export must hold one snapshot, each row with the value its version
/// says.
#[test]
fn toasted_values_hold_one_snapshot_under_concurrent_writes_and_vacuum() {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    const ROWS: i64 = 10_000;
    let body = |id: i64, ver: i64| format!("{id}:{ver};").repeat(300);
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE docs (id bigint NOT NULL, ver bigint NOT NULL, body text);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO docs SELECT g, 0, repeat(g || ':0;', 300) FROM generate_series(1, 10000) g",
    );
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE, INDEX_CLEANUP ON) docs");
    let stop = AtomicBool::new(false);
    let dir = tempfile::tempdir().expect("tempdir");
    std::thread::scope(|s| {
        for w in 0..2i64 {
            let (dsn, stop) = (&dsn, &stop);
            s.spawn(move || {
                let mut c = gpupg_source::Connection::connect(&config(dsn)).expect("writer");
                let mut k = w;
                while !stop.load(Ordering::Relaxed) {
                    k += 7919;
                    let (a, b) = (k % ROWS + 1, (k * 31) % ROWS + 1);
                    if a == b {
                        continue;
                    }
                    // Versions move between two rows (their sum stays 0),
                    // locked in id order (no deadlock between writers);
                    // each new version has a new value; one row moves.
                    let (lo, hi, d) = if a < b { (a, b, 1) } else { (b, a, -1) };
                    // The row locks an UPDATE waits on do not survive a
                    // move: under READ COMMITTED, an UPDATE that waited for
                    // another writer which deleted and re-inserted the row
                    // skips it (the new tuple is not in the old one's update
                    // chain), so one of the pair would change and the sum
                    // drift (the database's own sum, not the export's).
                    // Advisory locks taken in id order first make every
                    // UPDATE start after the other writer committed; a row
                    // still not found aborts the writer loudly. The DO
                    // block is one statement, so one transaction.
                    c.execute(&format!(
                        "DO $$BEGIN
                         PERFORM pg_advisory_xact_lock({lo});
                         PERFORM pg_advisory_xact_lock({hi});
                         UPDATE docs SET ver = ver + {d}, body = repeat(id || ':' || (ver + {d}) || ';', 300) WHERE id = {lo};
                         IF NOT FOUND THEN RAISE 'writer skipped row {lo}'; END IF;
                         UPDATE docs SET ver = ver - {d}, body = repeat(id || ':' || (ver - {d}) || ';', 300) WHERE id = {hi};
                         IF NOT FOUND THEN RAISE 'writer skipped row {hi}'; END IF;
                         WITH m AS (DELETE FROM docs WHERE id = {b} RETURNING *)
                         INSERT INTO docs SELECT * FROM m;
                         END$$"
                    ))
                    .expect("writer transaction");
                }
            });
        }
        {
            let (dsn, stop) = (&dsn, &stop);
            s.spawn(move || {
                let mut c = gpupg_source::Connection::connect(&config(dsn)).expect("vacuum");
                while !stop.load(Ordering::Relaxed) {
                    c.execute("VACUUM docs").expect("vacuum");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            });
        }
        // Stops the writers however this thread leaves the scope.
        let _stop_writers = StopOnDrop(&stop);
        let (mut direct, mut fallback) = (0, 0);
        for run in 0..4 {
            let (path, out) = file(dir.path(), &format!("run{run}.arrow"));
            let mut req = request(&dsn, table("docs"), out, Format::Arrow);
            req.source = Source::Heap;
            let report = export(&req, &NoProgress).expect("export");
            if let Some(h) = report.heap.as_ref() {
                println!("run {run}: {h:?}");
                direct += h.pages_direct;
                fallback += h.pages_fallback;
            }
            let (mut ids, mut sum) = (HashSet::new(), 0i64);
            for b in read_back(&path) {
                let id = b.column(0).as_primitive::<Int64Type>();
                let ver = b.column(1).as_primitive::<Int64Type>();
                let text = b.column(2).as_string::<i32>();
                for i in 0..b.num_rows() {
                    let (id, ver) = (id.value(i), ver.value(i));
                    assert!(ids.insert(id), "run {run}: id {id} twice");
                    assert!(
                        text.value(i) == body(id, ver),
                        "run {run}: id {id} version {ver} has another version's value"
                    );
                    sum += ver;
                }
            }
            assert_eq!(ids.len() as i64, ROWS, "run {run}: rows missing");
            assert_eq!(sum, 0, "run {run}: versions of different snapshots");
        }
        println!("docs over 4 runs: {direct} pages from the files, {fallback} through COPY");
        assert!(direct > 0, "some pages are read from the files");
    });
}

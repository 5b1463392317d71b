//! A TOAST relation larger than the in-memory budget (forced to 0 bytes
//! here through `GPUPGPARSER_TOAST_MEMORY`) is indexed by location and its
//! pages read again when a row needs a value: heap equals COPY, pglz and
//! uncompressed values, several ranges of pages read by several threads;
//! chunks on pages that are not all-visible send their rows' pages to COPY.

mod common;

use std::sync::Once;

use common::*;
use gpupg_localpg::LocalServer;

/// Every TOAST relation of this test binary is indexed by location. Set
/// once, before any export reads it (the test binary holds this one test).
fn index_by_location() {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var("GPUPGPARSER_TOAST_MEMORY", "0"));
}

#[test]
fn toast_indexed_by_location_reads_the_same_values() {
    index_by_location();
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    // ext: about 10 kB uncompressed out of line per row (about 25 MB of
    // TOAST pages: several ranges for the index threads); pg: pglz
    // compressed, then out of line.
    exec(
        &dsn,
        "CREATE TABLE big (id int, ext text, pg text);
         ALTER TABLE big ALTER COLUMN ext SET STORAGE EXTERNAL;
         INSERT INTO big SELECT g,
             CASE WHEN g % 3 <> 0 THEN repeat(md5(g::text), 200 + g % 200) END,
             CASE WHEN g % 4 <> 1 THEN repeat(md5(g::text), 300) ||
                 (SELECT string_agg(md5((g * x)::text), '')
                 FROM generate_series(1, 100 + g % 200) x) END
           FROM generate_series(1, 3000) g;
         UPDATE big SET ext = repeat('updated ' || id, 900) WHERE id % 7 = 0;
         UPDATE big SET pg = NULL WHERE id % 11 = 0;
         DELETE FROM big WHERE id % 13 = 0",
    );
    // See toast.rs: the CHECKPOINT flushes the asynchronous commits so that
    // VACUUM can mark the pages all-visible.
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE, INDEX_CLEANUP ON) big");
    let toast_pages: u64 = query(
        &dsn,
        "SELECT pg_relation_size(reltoastrelid) / 8192 FROM pg_class WHERE relname = 'big'",
    )[0][0]
        .as_deref()
        .and_then(|s| s.parse().ok())
        .expect("TOAST relation size");
    assert!(
        toast_pages > 2048,
        "{toast_pages} TOAST pages: fewer than 3 ranges"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let base = || arrow_request(&dsn, "big", dir.path());
    let r = heap_equals_copy_by_id(base(), dir.path());
    let h = r.heap.as_ref().expect("heap report");
    assert!(h.pages_direct > 0 && h.pages_fallback == 0, "{h:?}");
    assert!(h.toast.iter().any(|t| t.contains("by location")), "{h:?}");

    // New values whose chunks are on pages not yet all-visible: those rows'
    // pages go to COPY, the rest is read from the files, the same result.
    exec(
        &dsn,
        "INSERT INTO big SELECT g, repeat(md5(g::text), 300), NULL
           FROM generate_series(5001, 5100) g",
    );
    assert_unvisible_chunks_go_to_copy(&dsn, "big", base(), dir.path());
}

//! `--source auto` and `--engine auto` choose the faster way before the
//! export starts, and say why: COPY when most of the table's pages would
//! fall back to COPY anyway, the heap files otherwise; host output from the
//! heap files of a table with TOAST on the CPU.

mod common;

use common::*;
use gpupg_export::{export, Engine, ExportReport, NoProgress, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

/// Exports `t` with `source` (any engine: `engine`), heap threshold 0.
fn run(dsn: &str, dir: &std::path::Path, t: &str, source: Source, engine: Engine) -> ExportReport {
    let name = format!("{t}-{source:?}-{engine:?}.arrow");
    let (_, output) = file(dir, &name);
    let mut req = request(dsn, table(t), output, Format::Arrow);
    req.source = source;
    req.engine = engine;
    req.heap_threshold = 0;
    req.sink.overwrite = true;
    export(&req, &NoProgress).unwrap_or_else(|e| panic!("{t} {source:?}: {e}"))
}

/// Whether the heap path reads more than 15% of the pages of `t` through
/// COPY (`COPY_ABOVE_SHARE` in source/heap/estimate.rs).
fn mostly_falls_back(dsn: &str, dir: &std::path::Path, t: &str) -> bool {
    let r = run(dsn, dir, t, Source::Heap, Engine::Cpu);
    let h = r.heap.as_ref().expect("heap report");
    let all = h.pages_direct + h.pages_fallback;
    assert!(all > 0, "{t}: {h:?}");
    100 * h.pages_fallback > 15 * all
}

#[test]
fn auto_reads_through_copy_when_most_pages_would_fall_back() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    // A jsonb document in every row; in one row of 500; notes long enough to
    // be stored out of line in every row; plain integers.
    exec(
        &dsn,
        "CREATE TABLE docs (id int PRIMARY KEY, doc jsonb);
         INSERT INTO docs SELECT g, jsonb_build_object('g', g) FROM generate_series(1, 20000) g;
         CREATE TABLE rare (id int PRIMARY KEY, doc jsonb);
         INSERT INTO rare SELECT g, CASE WHEN g % 500 = 0 THEN jsonb_build_object('g', g) END
           FROM generate_series(1, 20000) g;
         CREATE TABLE notes (id int PRIMARY KEY, note text);
         INSERT INTO notes SELECT g, (SELECT string_agg(md5((g * 100 + i)::text), '')
           FROM generate_series(1, 80) i) FROM generate_series(1, 3000) g;
         CREATE TABLE plain (id int PRIMARY KEY, v bigint);
         INSERT INTO plain SELECT g, g * 7 FROM generate_series(1, 20000) g",
    );
    // The checkpoint flushes the commit records (the test server commits
    // asynchronously) so that VACUUM can mark the pages all-visible.
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["docs", "rare", "notes", "plain"]);
    let dir = tempfile::tempdir().expect("tempdir");
    for t in ["docs", "rare", "notes", "plain"] {
        let falls_back = mostly_falls_back(&dsn, dir.path(), t);
        let auto = run(&dsn, dir.path(), t, Source::Auto, Engine::Cpu);
        if falls_back {
            assert_eq!(auto.source, "copy", "{t}: {}", auto.source_detail);
            assert!(
                auto.source_detail.contains("would fall back to COPY"),
                "{t}: {}",
                auto.source_detail
            );
        } else {
            assert_eq!(auto.source, "heap", "{t}: {}", auto.source_detail);
        }
    }
    // Whatever the converter supports when this runs, integers never fall
    // back and rare jsonb values leave most pages to the files.
    for t in ["rare", "plain"] {
        assert!(!mostly_falls_back(&dsn, dir.path(), t), "{t}");
    }
}

#[test]
fn auto_engine_decodes_heap_pages_of_a_toasted_table_on_the_cpu() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE plain (id int PRIMARY KEY, v bigint);
         INSERT INTO plain SELECT g, g * 7 FROM generate_series(1, 20000) g;
         CREATE TABLE toasted (id int PRIMARY KEY, t text);
         ALTER TABLE toasted ALTER COLUMN t SET STORAGE EXTERNAL;
         INSERT INTO toasted SELECT g, repeat(g::text, 1000) FROM generate_series(1, 2000) g",
    );
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["plain", "toasted"]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Every page holds TOAST pointers: the CPU, saying why.
    let toasted = run(&dsn, dir.path(), "toasted", Source::Heap, Engine::Auto);
    assert_eq!(toasted.engine, "cpu");
    assert!(
        toasted.engine_detail.contains("TOAST is"),
        "{}",
        toasted.engine_detail
    );
    // No TOAST: `auto` takes a GPU where there is one (none here), from the
    // heap files as from COPY.
    for source in [Source::Heap, Source::Copy] {
        let plain = run(&dsn, dir.path(), "plain", source, Engine::Auto);
        assert!(
            !plain.engine_detail.contains("TOAST"),
            "{source:?}: {}",
            plain.engine_detail
        );
    }
}

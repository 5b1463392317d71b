//! Fragments ([`FragmentPlan`]): page ranges of one table read apart under
//! the plan's exported snapshot. While another session inserts, updates and
//! deletes rows between the fragment reads, the union of the fragments must
//! be exactly the full read under the same snapshot (same rows, each once),
//! and a snapshot that is gone must be said so.

mod common;

use std::collections::HashSet;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use common::*;
use gpupg_export::{stream, ExportError, ExportRequest, FragmentPlan, NoProgress, Output, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;
use gpupg_source::PageRange;

const ROWS: i64 = 20_000;

/// A request for `table` under `snapshot`, reading `pages`.
fn fragment_request(
    dsn: &str,
    table: &str,
    snapshot: &str,
    pages: Option<PageRange>,
) -> ExportRequest<'static> {
    ExportRequest {
        snapshot: Some(snapshot.to_string()),
        pages,
        ..request(dsn, common::table(table), Output::Host, Format::Arrow)
    }
}

/// Every batch of `req`, or the export's error.
fn read(req: ExportRequest<'static>) -> Result<Vec<RecordBatch>, ExportError> {
    let mut s = stream(req, NoProgress)?;
    let batches = s.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok(batches)
}

/// The `(id, val)` pairs of `batches`, sorted.
fn pairs(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
    let mut v = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name("id")
            .expect("id")
            .as_primitive::<Int64Type>();
        let vals = b
            .column_by_name("val")
            .expect("val")
            .as_primitive::<Int64Type>();
        v.extend(
            ids.values()
                .iter()
                .copied()
                .zip(vals.values().iter().copied()),
        );
    }
    v.sort_unstable();
    v
}

#[test]
fn fragments_add_up_to_the_snapshot_under_concurrent_writes() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        &format!(
            "CREATE TABLE items (id bigint NOT NULL, val bigint NOT NULL, pad text);
             INSERT INTO items SELECT g, g % 97, repeat('x', 100) FROM generate_series(1, {ROWS}) g;"
        ),
    );
    let plan = FragmentPlan::begin(&config(&dsn), "items", 5).expect("plan");
    assert_eq!(plan.table(), "\"public\".\"items\"");
    let ranges = plan.ranges().to_vec();
    assert_eq!(ranges.len(), 5);
    assert_eq!(ranges[0].start, 0);
    assert!(ranges.windows(2).all(|w| w[0].end == Some(w[1].start)));
    assert_eq!(ranges[4].end, None);
    assert!(plan.relpages() > 5, "{} pages", plan.relpages());

    let full = pairs(&read(fragment_request(&dsn, "items", plan.snapshot(), None)).expect("full"));
    assert_eq!(full.len(), ROWS as usize);
    let mut union = Vec::new();
    for (i, range) in ranges.iter().enumerate() {
        // Another session's committed changes before each fragment: rows
        // updated (their new versions land in other pages), deleted, and
        // inserted past the end of the table.
        exec(
            &dsn,
            &format!(
                "UPDATE items SET val = val + 1000 WHERE id % 5 = {i};
                 DELETE FROM items WHERE id % 11 = {i};
                 INSERT INTO items SELECT {ROWS} + g, 1, 'new' FROM generate_series(1, 500) g;"
            ),
        );
        let req = fragment_request(&dsn, "items", plan.snapshot(), Some(*range));
        union.extend(pairs(&read(req).expect("fragment")));
    }
    union.sort_unstable();
    assert_eq!(union, full, "the fragments' union is not the snapshot");
    let ids: HashSet<i64> = union.iter().map(|p| p.0).collect();
    assert_eq!(ids.len(), union.len(), "a row was read twice");
    assert_eq!(
        union.iter().map(|p| p.0).sum::<i64>(),
        ROWS * (ROWS + 1) / 2
    );
    // The writers did change the table: a read of today's rows differs.
    let now =
        pairs(&read(request(&dsn, table("items"), Output::Host, Format::Arrow)).expect("now"));
    assert_ne!(now, full);

    let snapshot = plan.snapshot().to_string();
    plan.close().expect("close");
    let gone = read(fragment_request(&dsn, "items", &snapshot, Some(ranges[0])));
    assert!(
        matches!(gone, Err(ExportError::SnapshotGone { .. })),
        "{gone:?}"
    );
}

#[test]
fn closed_plans_unknown_snapshots_and_other_relations_are_refused() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE t (id bigint, val bigint);
         INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g;
         CREATE VIEW v AS SELECT * FROM t;
         CREATE TABLE p (id bigint, val bigint) PARTITION BY RANGE (id);
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);",
    );
    let plan = FragmentPlan::begin(&config(&dsn), "t", 3).expect("plan");
    let snapshot = plan.snapshot().to_string();
    // The heap path is not for fragments.
    let mut heap = fragment_request(&dsn, "t", &snapshot, None);
    heap.source = Source::Heap;
    let e = read(heap).expect_err("heap refused");
    assert!(matches!(e, ExportError::HeapRefused(_)), "{e}");
    // Page ranges are for tables with pages.
    let e = read(fragment_request(
        &dsn,
        "v",
        &snapshot,
        Some(PageRange {
            start: 0,
            end: None,
        }),
    ))
    .expect_err("view refused");
    assert!(
        e.to_string().contains("\"public\".\"v\" is not a table"),
        "{e}"
    );
    let e = read(fragment_request(
        &dsn,
        "p",
        &snapshot,
        Some(PageRange {
            start: 0,
            end: None,
        }),
    ))
    .expect_err("partitioned refused");
    assert!(e.to_string().contains("partitioned"), "{e}");
    for name in ["v", "p"] {
        let e = FragmentPlan::begin(&config(&dsn), name, 2)
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("fragments split a plain table"),
            "{e}"
        );
    }
    // An empty range reads nothing but still has the columns.
    let empty = read(fragment_request(
        &dsn,
        "t",
        &snapshot,
        Some(PageRange {
            start: 0,
            end: Some(0),
        }),
    ))
    .expect("empty range");
    assert_eq!(empty.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);

    plan.close().expect("close");
    for id in [snapshot.as_str(), "00000003-0000FFFF-1", "not a snapshot"] {
        let e = read(fragment_request(&dsn, "t", id, None)).expect_err("snapshot gone");
        assert!(matches!(e, ExportError::SnapshotGone { .. }), "{id}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("cannot be imported") && msg.contains("has ended"),
            "{msg}"
        );
    }
}

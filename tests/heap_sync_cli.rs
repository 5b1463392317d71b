//! `gpupgparser export --heap-sync buffercache|checkpoint|auto`: each way
//! gives the rows COPY gives, and the report line says which way was taken
//! (pages dirty in shared buffers listed by pg_buffercache and no
//! CHECKPOINT, or a CHECKPOINT).

mod common;

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use common::*;
use gpupg_localpg::LocalServer;

/// Runs `export` of table `t` into `out` with `extra` arguments; its
/// stderr and its JSON report.
fn export(dsn: &str, out: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let report = out.with_extension("json");
    let o = bin()
        .args(["export", "--dsn", dsn, "--table", "t", "--parallel", "2"])
        .args(extra)
        .arg("--output")
        .arg(out)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{extra:?}: {stderr}");
    let json = serde_json::from_str(&std::fs::read_to_string(&report).expect("report"))
        .expect("report is JSON");
    (stderr, json)
}

/// The rows of an Arrow IPC file as one batch, ordered by column `a`.
fn rows_by_a(path: &Path) -> RecordBatch {
    let f = std::fs::File::open(path).expect("output exists");
    let batches: Vec<RecordBatch> = arrow::ipc::reader::FileReader::try_new(f, None)
        .expect("arrow opens")
        .map(|b| b.expect("batch reads"))
        .collect();
    let all = concat_batches(&batches[0].schema(), &batches).expect("concat");
    let a = all.column_by_name("a").expect("column a");
    let idx = sort_to_indices(a, None, None).expect("sort");
    take_record_batch(&all, &idx).expect("take")
}

#[test]
fn heap_sync_ways_from_the_command_line() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let sql = |s: &str| {
        server.psql(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    };
    sql("CREATE EXTENSION pg_buffercache");
    // All-visible pages in the files, some values out of line; then rows
    // on a few pages changed without a checkpoint, so those pages are dirty
    // in shared buffers while the files still hold their old rows.
    sql(
        "CREATE TABLE t (a int, b int, c text) WITH (fillfactor = 60);
         INSERT INTO t SELECT g, g, CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 200) END
           FROM generate_series(1, 30000) g;",
    );
    sql("CHECKPOINT");
    sql("VACUUM (FREEZE) t");
    sql("CHECKPOINT");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy.arrow");
    let (_, json) = export(&dsn, &copy, &["--source", "copy"]);
    assert_eq!(json["source"], "copy");
    for (i, way) in ["buffercache", "checkpoint", "auto", "wal"]
        .into_iter()
        .enumerate()
    {
        // New changes before each export, so each has dirty pages to list.
        sql(&format!(
            "UPDATE t SET b = -b - {i} WHERE a BETWEEN 1000 AND 1100 OR a BETWEEN 20000 AND 20040;
             DELETE FROM t WHERE a = 25000 + {i};"
        ));
        let copy = dir.path().join(format!("copy-{way}.arrow"));
        export(&dsn, &copy, &["--source", "copy"]);
        let heap = dir.path().join(format!("{way}.arrow"));
        let (stderr, json) = export(&dsn, &heap, &["--source", "heap", "--heap-sync", way]);
        assert_eq!(json["source"], "heap", "{way}");
        assert!(
            json["heap"]["pages_direct"].as_u64().expect("pages") > 0,
            "{way}: {json}"
        );
        assert_eq!(
            rows_by_a(&heap),
            rows_by_a(&copy),
            "{way}: heap rows differ from COPY's"
        );
        let said = json["heap"]["sync"]
            .as_str()
            .expect("sync line")
            .to_string();
        assert!(stderr.contains(&said), "{way}: {stderr}");
        match way {
            "checkpoint" => assert!(
                said.starts_with("CHECKPOINT ") && said.contains("as asked"),
                "{said}"
            ),
            "buffercache" => assert!(
                said.starts_with("dirty pages from pg_buffercache: ")
                    && said.ends_with("no CHECKPOINT"),
                "{way}: {said}"
            ),
            // auto: the WAL since the latest checkpoint is short.
            _ => assert!(
                said.starts_with("pages changed since the checkpoint at ")
                    && said.ends_with("no CHECKPOINT"),
                "{way}: {said}"
            ),
        }
    }
    // A way it does not know is a usage error.
    let o = bin()
        .args([
            "export",
            "--table",
            "t",
            "--output",
            "x.arrow",
            "--heap-sync",
            "later",
        ])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("later"));
}

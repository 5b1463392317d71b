//! COPY through the chunk reader against a real server.

mod common;

use std::collections::HashSet;

use common::{be_i32, connect, copy_rows, fields};
use gpupg_localpg::LocalServer;
use gpupg_source::{
    begin_exported_snapshot, begin_with_snapshot, copy_query_sql, copy_sql, plan_table_reads,
    resolve_table, table_columns, BufferPool, ReadSpec, SourceError, UnsupportedTypes,
};

fn sorted(mut rows: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    rows.sort();
    rows
}

#[test]
fn ranges_over_partitions_equal_one_whole_copy() {
    let server = LocalServer::start().unwrap();
    server
        .psql(
            "CREATE TABLE p (id int, payload text, n numeric) PARTITION BY RANGE (id);
             CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (20000);
             CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (20000) TO (45000);
             CREATE TABLE p3 PARTITION OF p FOR VALUES FROM (45000) TO (100000);
             INSERT INTO p SELECT g, repeat(md5(g::text), g % 5), g / 7.0 FROM generate_series(0, 59999) g;
             DELETE FROM p WHERE id % 97 = 0;",
        )
        .unwrap();
    let mut c = connect(&server);
    let snapshot = begin_exported_snapshot(&mut c).unwrap();
    let t = resolve_table(&mut c, "p").unwrap();
    let cols: Vec<String> = table_columns(&mut c, &t, None, UnsupportedTypes::Error)
        .unwrap()
        .into_iter()
        .map(|c| c.select_expr)
        .collect();
    let tasks = plan_table_reads(&t, &cols, None, 3, 1, c.server_version_num());
    assert!(
        tasks.len() > 6,
        "expected several ranges per partition, got {}",
        tasks.len()
    );
    assert!(tasks.iter().any(|t| t.sql().contains("ctid <")));

    // Three workers on their own connections with the shared snapshot.
    // The workers take tasks from one shared list, as the export does.
    let queue = std::sync::Mutex::new(tasks.into_iter());
    let pool = BufferPool::new(8, 32 * 1024);
    let parts: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (queue, pool, dsn, snapshot) = (&queue, &pool, server.dsn(), snapshot.clone());
                s.spawn(move || {
                    let mut w = common::connect_dsn(&dsn);
                    begin_with_snapshot(&mut w, &snapshot).unwrap();
                    let mut rows = Vec::new();
                    loop {
                        let Some(task) = queue.lock().unwrap().next() else {
                            break;
                        };
                        rows.extend(copy_rows(&mut w, &task.sql(), pool).unwrap().0);
                    }
                    rows
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ranged: Vec<Vec<u8>> = parts.into_iter().flatten().collect();

    let whole_sql = copy_query_sql(&format!("SELECT {} FROM p", cols.join(", ")));
    let (whole, stats) = copy_rows(&mut c, &whole_sql, &BufferPool::new(2, 1 << 20)).unwrap();
    assert_eq!(whole.len(), 60000 - 619);
    assert!(stats.wire_bytes > stats.row_bytes);
    assert_eq!(sorted(ranged), sorted(whole.clone()));
    // And the rows are the table's: ids are distinct and complete.
    let ids: HashSet<i32> = whole
        .iter()
        .map(|r| be_i32(fields(r)[0].as_ref().unwrap()))
        .collect();
    assert_eq!(ids.len(), whole.len());
    assert!(!ids.contains(&97) && ids.contains(&98));
}

#[test]
fn empty_table_and_empty_result() {
    let server = LocalServer::start().unwrap();
    server.psql("CREATE TABLE e (a int)").unwrap();
    let mut c = connect(&server);
    let pool = BufferPool::new(1, 4096);
    let (rows, stats) = copy_rows(&mut c, "COPY e TO STDOUT (FORMAT binary)", &pool).unwrap();
    assert!(rows.is_empty());
    assert_eq!(stats.rows, 0);
    // Zero columns, zero rows and the session is still in step.
    let (rows, _) = copy_rows(&mut c, &copy_query_sql("SELECT FROM e"), &pool).unwrap();
    assert!(rows.is_empty());
    assert_eq!(c.simple_query("SELECT 1").unwrap().len(), 1);
}

#[test]
fn rows_larger_than_the_buffer() {
    let server = LocalServer::start().unwrap();
    server
        .psql("CREATE TABLE big AS SELECT g AS id, repeat(chr(65 + g % 26), 100000 + g) AS t FROM generate_series(0, 49) g")
        .unwrap();
    let mut c = connect(&server);
    // Small buffers: most rows do not fit one, and a single buffer forces
    // the reader to wait for each chunk to come back.
    let pool = BufferPool::new(1, 4096);
    let (rows, _) = copy_rows(
        &mut c,
        "COPY (SELECT id, t FROM big ORDER BY id) TO STDOUT (FORMAT binary)",
        &pool,
    )
    .unwrap();
    assert_eq!(rows.len(), 50);
    for (g, row) in rows.iter().enumerate() {
        let f = fields(row);
        assert_eq!(be_i32(f[0].as_ref().unwrap()), g as i32);
        let t = f[1].as_ref().unwrap();
        assert_eq!(t.len(), 100000 + g);
        assert!(t.iter().all(|&b| b == 65 + (g % 26) as u8));
    }
    // Mixed small and large rows with medium buffers.
    let pool = BufferPool::new(2, 150_000);
    let (rows, _) = copy_rows(&mut c, "COPY (SELECT g, CASE WHEN g % 10 = 0 THEN repeat('x', 300000) ELSE 'y' END FROM generate_series(1, 1000) g) TO STDOUT (FORMAT binary)", &pool).unwrap();
    assert_eq!(rows.len(), 1000);
    for (i, row) in rows.iter().enumerate() {
        let f = fields(row);
        let g = i + 1;
        assert_eq!(be_i32(f[0].as_ref().unwrap()), g as i32);
        assert_eq!(
            f[1].as_ref().unwrap().len(),
            if g % 10 == 0 { 300000 } else { 1 }
        );
    }
}

#[test]
fn permission_denied_and_errors_mid_copy() {
    let server = LocalServer::start().unwrap();
    server
        .psql(
            "CREATE TABLE secret (a int); INSERT INTO secret VALUES (1); CREATE ROLE reader LOGIN;",
        )
        .unwrap();
    let mut c = common::connect_dsn(&format!(
        "host=127.0.0.1 port={} user=reader dbname=postgres",
        server.port()
    ));
    let t = resolve_table(&mut c, "secret").unwrap();
    let pool = BufferPool::new(2, 4096);
    let e = copy_rows(
        &mut c,
        &copy_query_sql(&format!("SELECT a FROM {}", t.qualified())),
        &pool,
    )
    .unwrap_err();
    assert_eq!(e.sqlstate(), Some("42501"), "{e}");
    assert!(
        e.to_string().contains("permission denied")
            && e.to_string().contains("COPY of partition 7"),
        "{e}"
    );
    assert_eq!(c.simple_query("SELECT 1").unwrap().len(), 1);

    // An error after rows were streamed (division by zero at row 30000).
    let mut c = connect(&server);
    let e = copy_rows(
        &mut c,
        "COPY (SELECT 1 / (30000 - g) FROM generate_series(1, 40000) g) TO STDOUT (FORMAT binary)",
        &pool,
    )
    .unwrap_err();
    assert_eq!(e.sqlstate(), Some("22012"), "{e}");
    assert_eq!(c.simple_query("SELECT 1").unwrap().len(), 1);

    // Not a COPY, and a text COPY.
    let e = copy_rows(&mut c, "SELECT 1", &pool).unwrap_err();
    assert!(e.to_string().contains("not a COPY"), "{e}");
    assert_eq!(c.simple_query("SELECT 1").unwrap().len(), 1);
    let e = copy_rows(&mut c, "COPY (SELECT 1) TO STDOUT", &pool).unwrap_err();
    assert!(e.to_string().contains("FORMAT binary"), "{e}");
    assert!(matches!(
        c.simple_query("SELECT 1"),
        Err(SourceError::Broken { .. })
    ));
}

#[test]
fn consumer_error_stops_the_copy() {
    let server = LocalServer::start().unwrap();
    let mut c = connect(&server);
    let pool = BufferPool::new(2, 4096);
    let e = c
        .copy_out(
            &copy_query_sql("SELECT generate_series(1, 100000)"),
            &pool,
            0,
            &mut |chunk| {
                pool.give(chunk.data);
                Err(SourceError::Downstream("decoder failed".into()))
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("decoder failed"), "{e}");
    assert!(matches!(
        c.execute("SELECT 1"),
        Err(SourceError::Broken { .. })
    ));
}

#[test]
fn snapshot_is_shared_while_others_write() {
    let server = LocalServer::start().unwrap();
    server
        .psql("CREATE TABLE s (id int PRIMARY KEY, v int); INSERT INTO s SELECT g, 0 FROM generate_series(1, 1000) g;")
        .unwrap();
    let mut a = connect(&server);
    let id = begin_exported_snapshot(&mut a).unwrap();
    // A third session changes the table after the export...
    server
        .psql("INSERT INTO s SELECT g, 0 FROM generate_series(1001, 1500) g; UPDATE s SET v = v + 1; DELETE FROM s WHERE id <= 100;")
        .unwrap();
    // ...before the second connection imports the snapshot.
    let mut b = connect(&server);
    begin_with_snapshot(&mut b, &id).unwrap();
    let pool = BufferPool::new(2, 1 << 16);
    let sql = "COPY s TO STDOUT (FORMAT binary)";
    let (ra, _) = copy_rows(&mut a, sql, &pool).unwrap();
    let (rb, _) = copy_rows(&mut b, sql, &pool).unwrap();
    assert_eq!(ra.len(), 1000);
    assert_eq!(sorted(ra.clone()), sorted(rb));
    assert!(ra
        .iter()
        .all(|r| be_i32(fields(r)[1].as_ref().unwrap()) == 0));
    // A fresh session sees the new state.
    let mut fresh = connect(&server);
    let (rf, _) = copy_rows(&mut fresh, sql, &pool).unwrap();
    assert_eq!(rf.len(), 1400);
    // A bad snapshot id is a clear server error and leaves no transaction.
    let e = begin_with_snapshot(&mut fresh, "nope'; DROP TABLE s; --").unwrap_err();
    assert_eq!(e.sqlstate(), Some("22023"), "{e}");
    assert_eq!(
        fresh.simple_query("SELECT count(*) FROM s").unwrap()[0][0].as_deref(),
        Some("1400")
    );
}

#[test]
fn terminated_backend_mid_copy_is_an_error_not_a_panic() {
    let server = LocalServer::start().unwrap();
    let mut c = connect(&server);
    let pid = c.backend_pid();
    let pool = BufferPool::new(2, 64 * 1024);
    let mut killed = false;
    let r = c.copy_out(
        &copy_query_sql("SELECT g, repeat('z', 100) FROM generate_series(1, 50000000) g"),
        &pool,
        3,
        &mut |chunk| {
            pool.give(chunk.data);
            if !killed {
                server
                    .psql(&format!("SELECT pg_terminate_backend({pid})"))
                    .unwrap();
                killed = true;
            }
            Ok(())
        },
    );
    let e = r.unwrap_err();
    match &e {
        SourceError::Server { code, .. } => assert_eq!(code, "57P01", "{e}"),
        SourceError::ConnectionLost { during, .. } => {
            assert!(during.contains("partition 3"), "{e}")
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(c.execute("SELECT 1").is_err());
}

/// Issue 15: a --where that closed the COPY, committed the snapshot's
/// transaction and created a table. A COPY goes through Parse, which takes
/// one statement: the server refuses the whole text and nothing runs.
#[test]
fn a_copy_is_one_statement_whatever_its_filter_says() {
    let server = LocalServer::start().unwrap();
    server
        .psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);")
        .unwrap();
    let mut c = connect(&server);
    begin_exported_snapshot(&mut c).unwrap();
    let spec = ReadSpec {
        relation: "\"public\".\"t\"".into(),
        columns: vec!["\"id\"".into()],
        // As the export wraps a --where.
        filter: Some("(true))) TO STDOUT (FORMAT binary); COMMIT; create table pwned(i int); COMMIT; BEGIN; COPY (SELECT 1 WHERE ((true)".into()),
    };
    let pool = BufferPool::new(2, 1 << 16);
    let e = copy_rows(&mut c, &copy_sql(&spec, None), &pool).unwrap_err();
    assert_eq!(e.sqlstate(), Some("42601"), "{e}");
    assert!(e.to_string().contains("multiple commands"), "{e}");
    // The session is usable, still in its (now failed) transaction block.
    c.execute("ROLLBACK").unwrap();
    let mut fresh = connect(&server);
    assert_eq!(
        fresh
            .simple_query("SELECT to_regclass('pwned') IS NULL")
            .unwrap()[0][0]
            .as_deref(),
        Some("t"),
        "the filter ran a statement"
    );
    // A well-formed filter reads through the same path.
    let spec = ReadSpec {
        filter: Some("(id > 3)".into()),
        ..spec
    };
    assert_eq!(
        copy_rows(&mut c, &copy_sql(&spec, None), &pool)
            .unwrap()
            .0
            .len(),
        7
    );
}

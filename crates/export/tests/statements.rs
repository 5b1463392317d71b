//! What the user gives (--where, --query, --columns, table names) can never
//! add a statement, and errors say what the user gave, never the program's
//! own SQL; an error about a value names its row by key or ctid.

mod common;

use common::*;
use gpupg_decode::UnconstrainedNumeric;
use gpupg_export::{ExportRequest, Output, Target};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

fn fails(req: &ExportRequest<'_>) -> String {
    let e = gpupg_export::export(req, &gpupg_export::NoProgress).expect_err("must fail");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

/// No trace of the program's catalog SQL in a message (a hint may say
/// GRANT SELECT).
fn no_internal_sql(msg: &str) {
    let msg = msg.replace("GRANT SELECT", "");
    for word in [
        "SELECT",
        "pg_catalog",
        "pg_partition_tree",
        "pg_class",
        "COPY (",
    ] {
        assert!(!msg.contains(word), "{word:?} in: {msg}");
    }
}

fn exists(dsn: &str, table: &str) -> bool {
    // A fresh session: whatever ran, committed or not, in the export's.
    query(dsn, &format!("SELECT to_regclass('{table}') IS NOT NULL"))[0][0].as_deref() == Some("t")
}

/// The filter from issue 15: it closed the COPY, committed the snapshot
/// transaction, created a table and opened a new COPY.
const EVIL_WHERE: &str = "true))) TO STDOUT (FORMAT binary); COMMIT; create table pwned(i int); COMMIT; BEGIN; COPY (SELECT 1 WHERE ((true";

#[test]
fn user_text_cannot_add_a_statement() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = || Output::File(dir.path().join("out.parquet"));

    // The same with one parenthesis less (the export wraps a --where once).
    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.filter = Some(EVIL_WHERE.replacen(')', "", 1).replace("pwned", "pwned2"));
    fails(&req);
    assert!(!exists(&dsn, "pwned2"), "the --where ran a statement");
    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.filter = Some(EVIL_WHERE.into());
    let msg = fails(&req);
    assert!(
        msg.contains(&format!(
            "the row filter {EVIL_WHERE:?} is not one condition"
        )),
        "{msg}"
    );
    no_internal_sql(&msg.replace(EVIL_WHERE, ""));
    assert!(!exists(&dsn, "pwned"), "the --where ran a statement");

    // A --query that tries to end the statement it is wrapped in.
    for (sql, made) in [
        ("SELECT 1 AS x; CREATE TABLE pwned_q1(i int)", "pwned_q1"),
        (
            "SELECT 1 AS x) AS q) TO STDOUT (FORMAT binary); CREATE TABLE pwned_q2(i int); COPY (SELECT 1 FROM (SELECT 1 AS x",
            "pwned_q2",
        ),
    ] {
        let msg = fails(&request(
            &dsn,
            Target::Query(sql.into()),
            out(),
            Format::Parquet,
        ));
        assert!(!exists(&dsn, made), "the --query ran a statement: {msg}");
    }

    // --columns and table names are names, matched or looked up, never SQL.
    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.columns = Some(vec![
        "id\") TO STDOUT (FORMAT binary); CREATE TABLE pwned_c(i int); COPY (SELECT (\"id".into(),
    ]);
    let msg = fails(&req);
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(!exists(&dsn, "pwned_c"));
    let msg = fails(&request(
        &dsn,
        table("t; CREATE TABLE pwned_t(i int)"),
        out(),
        Format::Parquet,
    ));
    assert!(msg.contains("t; CREATE TABLE pwned_t(i int)"), "{msg}");
    assert!(!exists(&dsn, "pwned_t"));
    assert!(files_in(dir.path()).is_empty());

    // A plain filter still works, and one that is not a condition says so.
    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.filter = Some("id <= 100 -- a comment".into());
    let report = gpupg_export::export(&req, &gpupg_export::NoProgress).expect("filtered");
    assert_eq!(report.rows, 100);
    std::fs::remove_file(dir.path().join("out.parquet")).expect("rm");
    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.filter = Some("nope > 1".into());
    let msg = fails(&req);
    assert!(
        msg.contains("row filter") && msg.contains("\"nope\""),
        "{msg}"
    );
    no_internal_sql(&msg);
}

#[test]
fn messages_name_what_the_user_gave() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'a');
         CREATE TABLE \"My Table\" (x int);
         CREATE ROLE nobody LOGIN; CREATE TABLE secret (x int, y int);
         GRANT SELECT (x) ON secret TO nobody;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = || Output::File(dir.path().join("out.parquet"));

    for name in [
        "public.orderz",
        "\"My Table",
        "a.b.c.d",
        "My Table",
        "nosuchschema.t",
    ] {
        let msg = fails(&request(&dsn, table(name), out(), Format::Parquet));
        assert!(msg.contains(name), "{msg}");
        assert!(
            msg.contains("schema.name") && msg.contains("quote"),
            "{msg}"
        );
        no_internal_sql(&msg);
    }

    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.columns = Some(vec!["id".into(), "nope".into()]);
    let msg = fails(&req);
    assert!(
        msg.contains("\"nope\"") && msg.contains("\"id\", \"v\""),
        "{msg}"
    );
    no_internal_sql(&msg);

    // Privileges are checked per column before any COPY.
    let nobody = format!("{dsn} user=nobody");
    let msg = fails(&request(&nobody, table("secret"), out(), Format::Parquet));
    assert!(
        msg.contains("permission denied") && msg.contains("\"y\"") && !msg.contains("\"x\","),
        "{msg}"
    );
    no_internal_sql(&msg);
    let mut req = request(&nobody, table("secret"), out(), Format::Parquet);
    req.columns = Some(vec!["x".into()]);
    gpupg_export::export(&req, &gpupg_export::NoProgress).expect("the granted column");
}

fn decimal_request(dsn: &str, name: &str, out: Output) -> ExportRequest<'static> {
    let mut req = request(dsn, table(name), out, Format::Parquet);
    req.types.numeric = UnconstrainedNumeric::Decimal128 { scale: 2 };
    req
}

#[test]
fn a_bad_value_names_its_row_by_key_or_ctid() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    // Several partitions, each read in several ranges (small chunks, four
    // connections); one NaN deep in the second partition.
    exec(
        &dsn,
        "CREATE TABLE p (id int, pad text, n numeric, PRIMARY KEY (id)) PARTITION BY RANGE (id);
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (30000);
         CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (30000) TO (60000);
         INSERT INTO p SELECT g, repeat('x', 40), g / 4.0 FROM generate_series(0, 59999) g;
         UPDATE p SET n = 'NaN' WHERE id = 43210;
         CREATE TABLE nokey (a int, n numeric);
         INSERT INTO nokey SELECT g, g FROM generate_series(1, 30000) g;
         UPDATE nokey SET n = 'NaN' WHERE a = 25000;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = || Output::File(dir.path().join("out.parquet"));

    let msg = fails(&decimal_request(&dsn, "p", out()));
    assert!(msg.contains("id=43210") && msg.contains("NaN"), "{msg}");
    assert!(
        !msg.contains("partition") && !msg.contains(", row "),
        "{msg}"
    );

    // Without the key among the columns, and without a key: the ctid.
    let expected = |t: &str, k: &str, v: i32| {
        query(
            &dsn,
            &format!("SELECT ctid::text, tableoid::regclass::text FROM {t} WHERE {k} = {v}"),
        )[0]
        .clone()
    };
    let mut req = decimal_request(&dsn, "p", out());
    req.columns = Some(vec!["n".into(), "pad".into()]);
    let msg = fails(&req);
    let want = expected("p", "id", 43210);
    let (ctid, leaf) = (
        want[0].clone().expect("ctid"),
        want[1].clone().expect("leaf"),
    );
    assert!(
        msg.contains(&format!("ctid {ctid} of partition {leaf}")),
        "{msg}"
    );

    let msg = fails(&decimal_request(&dsn, "nokey", out()));
    let ctid = expected("nokey", "a", 25000)[0].clone().expect("ctid");
    assert!(msg.contains(&format!("ctid {ctid}")), "{msg}");
    assert!(!msg.contains("partition"), "{msg}");
    assert!(files_in(dir.path()).is_empty());
}

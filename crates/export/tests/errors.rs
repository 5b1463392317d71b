//! Each bad input gives one clear error and leaves no output behind.

mod common;

use common::*;
use gpupg_export::{Output, Target};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

fn fails(req: &gpupg_export::ExportRequest<'_>) -> String {
    let e = gpupg_export::export(req, &gpupg_export::NoProgress).expect_err("must fail");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn bad_inputs_are_clear_errors_and_leave_nothing() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE t (a int, p point); INSERT INTO t SELECT g, point(g, g) FROM generate_series(1, 100) g;
         CREATE TABLE \"odd \"\"name\" (x int); INSERT INTO \"odd \"\"name\" VALUES (1), (2);
         CREATE ROLE nobody LOGIN; CREATE TABLE secret (x int);",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = || Output::File(dir.path().join("out.parquet"));

    // Device-resident output needs the GPU engine, and a GPU.
    let mut req = request(&dsn, table("t"), Output::Device, Format::Arrow);
    let msg = fails(&req);
    assert!(msg.contains("GPU engine"), "{msg}");
    let no_gpu = gpupg_gpu::devices().map_or(true, |d| d.is_empty());
    if no_gpu {
        req.engine = gpupg_export::Engine::Auto;
        let msg = fails(&req);
        assert!(msg.contains("needs a usable GPU"), "{msg}");
    }
    assert!(files_in(dir.path()).is_empty());

    let msg = fails(&request(
        &dsn,
        table("no_such_table"),
        out(),
        Format::Parquet,
    ));
    assert!(msg.contains("no_such_table"), "{msg}");

    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.columns = Some(vec!["a".into(), "nope".into()]);
    let msg = fails(&req);
    assert!(msg.contains("nope"), "{msg}");

    // An unsupported type names the column and its type ...
    let msg = fails(&request(&dsn, table("t"), out(), Format::Parquet));
    assert!(msg.contains("\"p\"") && msg.contains("point"), "{msg}");
    // ... and is exported as text when asked.
    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.unsupported = gpupg_source::UnsupportedTypes::CastToText;
    let report = gpupg_export::export(&req, &gpupg_export::NoProgress).expect("cast to text");
    assert_eq!(report.rows, 100);
    let batches = read_back(&dir.path().join("out.parquet"));
    assert_eq!(
        batches[0].schema().field(1).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    std::fs::remove_file(dir.path().join("out.parquet")).expect("rm");

    // Quoted names are found and never pasted unquoted.
    let report = gpupg_export::export(
        &request(&dsn, table("\"odd \"\"name\""), out(), Format::Parquet),
        &gpupg_export::NoProgress,
    )
    .expect("quoted name");
    assert_eq!(report.rows, 2);
    // The output exists now: a second export is refused without overwrite.
    let msg = fails(&request(
        &dsn,
        table("\"odd \"\"name\""),
        out(),
        Format::Parquet,
    ));
    assert!(msg.contains("out.parquet"), "{msg}");
    std::fs::remove_file(dir.path().join("out.parquet")).expect("rm");

    // Permission denied.
    let nobody = format!("{dsn} user=nobody");
    let msg = fails(&request(&nobody, table("secret"), out(), Format::Parquet));
    assert!(msg.contains("permission denied"), "{msg}");

    // A refused connection names where it tried.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let msg = fails(&request(
        &format!("host=127.0.0.1 port={port} user=postgres"),
        table("t"),
        out(),
        Format::Parquet,
    ));
    assert!(msg.contains(&port.to_string()), "{msg}");

    // A bad query is the server's error, with context.
    let msg = fails(&request(
        &dsn,
        Target::Query("SELEC 1".into()),
        out(),
        Format::Parquet,
    ));
    assert!(msg.contains("syntax error"), "{msg}");

    // Bad options.
    let mut req = request(&dsn, table("t"), out(), Format::Parquet);
    req.filter = Some("a > 1".into());
    req.target = Target::Query("SELECT 1".into());
    fails(&req);

    assert!(
        files_in(dir.path()).is_empty(),
        "failed exports left {:?}",
        files_in(dir.path())
    );
}

#[test]
fn a_connection_lost_mid_stream_fails_cleanly() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, out) = file(dir.path(), "lost.parquet");
    // 2000 rows at once, then one row per 10 ms: the COPY is surely running,
    // with data already received, when the backend is killed.
    let sql =
        "SELECT g + CASE WHEN g > 2000 THEN (SELECT 0 FROM pg_sleep(0.01)) ELSE 0 END AS id, \
               repeat('y', 500) AS pad FROM generate_series(1, 100000) g";
    let req = request(&dsn, Target::Query(sql.into()), out, Format::Parquet);
    let killer_dsn = dsn.clone();
    let killer = std::thread::spawn(move || {
        for _ in 0..500 {
            let rows = query(
                &killer_dsn,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE query LIKE 'COPY%pg_sleep%' AND pid <> pg_backend_pid()",
            );
            if rows[0][0].as_deref() != Some("0") {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    });
    let result = gpupg_export::export(&req, &gpupg_export::NoProgress);
    assert!(
        killer.join().expect("killer thread"),
        "the COPY backend was found and killed"
    );
    let msg = result
        .expect_err("the export must fail when its connection is killed")
        .to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.contains("terminat") || msg.contains("lost") || msg.contains("closed"),
        "{msg}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

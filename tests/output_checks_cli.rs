//! Output options checked before anything is read, through the real binary
//! against a real server: each mistake is one line, a nonzero exit, and no
//! file written or replaced.

use std::path::Path;
use std::process::Output;

use gpupg_localpg::LocalServer;

mod common;
use common::{bin, entries, one_line_error};

fn export(server: &LocalServer, args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = bin();
    cmd.args(["export", "--dsn", &server.dsn(), "--quiet"])
        .args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    cmd.output().expect("runs")
}

/// Exit 1, one line saying `says`.
fn refused(o: &Output, says: &str) {
    let error = one_line_error(o);
    assert!(error.contains(says), "wanted {says:?}: {error}");
}

fn server_with_tables() -> LocalServer {
    let server = LocalServer::start().expect("server");
    server
        .psql(
            "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 100) g;
             CREATE SCHEMA app; CREATE TABLE app.orders AS SELECT g AS id FROM generate_series(1, 7) g;",
        )
        .expect("setup");
    server
}

#[test]
fn report_paths_are_checked_before_the_export() {
    let server = server_with_tables();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = d.join("o.parquet");
    let table = ["--table", "orders"];

    // The report is the output, spelled another way, the file not there yet.
    let other = d.join(".").join("o.parquet");
    let o = export(&server, &table, &[("--output", &out), ("--report", &other)]);
    refused(&o, "is the --output file");
    // ... or with --overwrite and an existing output.
    std::fs::write(&out, b"kept").expect("write");
    let o = export(
        &server,
        &["--table", "orders", "--overwrite"],
        &[("--output", &out), ("--report", &out)],
    );
    refused(&o, "is the --output file");
    assert_eq!(std::fs::read(&out).expect("read"), b"kept");
    std::fs::remove_file(&out).expect("rm");

    // An existing report without --overwrite: refused, untouched.
    let report = d.join("r.json");
    std::fs::write(&report, b"old").expect("write");
    let o = export(
        &server,
        &table,
        &[("--output", &out), ("--report", &report)],
    );
    refused(&o, "already exists (use --overwrite");
    assert_eq!(std::fs::read(&report).expect("read"), b"old");

    // A report in a missing directory: refused before the output is written.
    let missing = d.join("no/such/r.json");
    let o = export(
        &server,
        &table,
        &[("--output", &out), ("--report", &missing)],
    );
    refused(&o, "does not exist");

    // A report named like an --output-dir data file in that directory.
    let parts = d.join("parts");
    std::fs::create_dir(&parts).expect("mkdir");
    let clash = parts.join("public.orders-00000.parquet");
    let o = export(
        &server,
        &table,
        &[("--output-dir", &parts), ("--report", &clash)],
    );
    refused(&o, "could be one of the --output-dir files");
    assert!(entries(&parts).is_empty());
    std::fs::remove_dir(&parts).expect("rmdir");
    assert_eq!(entries(d), ["r.json"]);

    // With --overwrite the report is replaced, after the output.
    let o = export(
        &server,
        &["--table", "orders", "--overwrite"],
        &[("--output", &out), ("--report", &report)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(json["rows"], 100);
    assert_eq!(entries(d), ["o.parquet", "r.json"]);
}

#[test]
fn names_columns_and_formats_are_checked() {
    let server = server_with_tables();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // Two columns of one name: from --columns, or from a query.
    let out = d.join("c.parquet");
    let o = export(
        &server,
        &["--table", "orders", "--columns", "id,id"],
        &[("--output", &out)],
    );
    refused(&o, "column \"id\" is given twice");
    let o = export(
        &server,
        &["--query", "SELECT 1 AS a, 2 AS a"],
        &[("--output", &out)],
    );
    refused(&o, "two columns are named \"a\"");

    // An extension that names no format, or the other format.
    let csv = d.join("c.csv");
    let o = export(&server, &["--table", "orders"], &[("--output", &csv)]);
    refused(&o, ".csv is not an output format");
    let o = export(
        &server,
        &["--table", "orders", "--format", "arrow"],
        &[("--output", &out)],
    );
    refused(&o, "the name says parquet but --format says arrow");
    assert!(entries(d).is_empty(), "{:?}", entries(d));
    // --format makes any name deliberate.
    let o = export(
        &server,
        &["--table", "orders", "--format", "arrow"],
        &[("--output", &d.join("c.bin"))],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Counts of zero are usage errors.
    for flag in ["--row-group-rows", "--parallel", "--threads", "--chunk-mib"] {
        let o = export(
            &server,
            &["--table", "orders", flag, "0"],
            &[("--output", &out)],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
    assert_eq!(entries(d), ["c.bin"]);
}

#[test]
fn output_dir_names_carry_the_schema() {
    let server = server_with_tables();
    let dir = tempfile::tempdir().expect("tempdir");
    for table in ["orders", "app.orders"] {
        let o = export(
            &server,
            &["--table", table, "--parallel", "1"],
            &[("--output-dir", dir.path())],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(
        entries(dir.path()),
        ["app.orders-00000.parquet", "public.orders-00000.parquet"]
    );
}

/// Files of an earlier `--output-dir` export over more connections would be
/// read with the new ones as one table: refused without `--overwrite`,
/// removed with it once the new export succeeded.
#[test]
fn output_dir_holds_only_this_exports_files() {
    let server = LocalServer::start().expect("server");
    // Enough pages (planned from relpages, hence the ANALYZE) for three
    // connections, each writing its own file.
    server
        .psql("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 30000) g; ANALYZE orders;")
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");
    let table = ["--table", "orders"];
    let d = [("--output-dir", dir.path())];
    let o = export(&server, &[&table[..], &["--parallel", "3"]].concat(), &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let three = entries(dir.path());
    assert_eq!(three.len(), 3, "{three:?}");

    // The first two removed by hand, the third left: a new export over two
    // connections would leave it beside its own.
    std::fs::remove_file(dir.path().join("public.orders-00000.parquet")).expect("rm");
    std::fs::remove_file(dir.path().join("public.orders-00001.parquet")).expect("rm");
    let o = export(&server, &[&table[..], &["--parallel", "2"]].concat(), &d);
    refused(&o, "public.orders-00002.parquet");
    assert_eq!(entries(dir.path()), ["public.orders-00002.parquet"]);

    let two = [&table[..], &["--parallel", "2", "--overwrite"]].concat();
    let o = export(&server, &two, &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        entries(dir.path()),
        ["public.orders-00000.parquet", "public.orders-00001.parquet"]
    );
}

/// Zero where a count or size must be positive, on the other commands:
/// usage errors (exit 2) naming the flag, before anything runs.
#[test]
fn zero_rows_and_zero_memory_limit_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("s.sock");
    for args in [
        vec!["bench", "--rows", "0"],
        vec!["serve", "--memory-limit", "0", "--socket"],
    ] {
        let mut cmd = bin();
        cmd.args(&args);
        if args[0] == "serve" {
            cmd.arg(&socket);
        }
        let o = cmd.output().expect("runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(args[1]), "{stderr}");
    }
    assert!(!socket.exists(), "serve must not have started");
}

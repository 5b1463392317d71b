//! The real binary, run as a user would run it.

use gpupg_localpg::LocalServer;

mod common;
use common::bin;

#[test]
fn export_writes_the_file_and_the_report() {
    let server = LocalServer::start().expect("server");
    server
        .psql("CREATE SCHEMA s; CREATE TABLE s.\"Mixed Case\" (a int, b text); INSERT INTO s.\"Mixed Case\" SELECT g, 'r' || g FROM generate_series(1, 5000) g;")
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.parquet");
    let report = dir.path().join("report.json");
    let o = bin()
        .args([
            "export",
            "--dsn",
            &server.dsn(),
            "--table",
            "s.\"Mixed Case\"",
            "--parallel",
            "3",
        ])
        .arg("--output")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("exported 5000 rows"), "{stderr}");
    assert!(
        stderr.contains("decode"),
        "the breakdown is printed: {stderr}"
    );
    assert!(out.exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(json["rows"], 5000);
    assert_eq!(json["engine"], "cpu");
    assert_eq!(json["source"], "copy");
    for phase in ["metadata", "copy_receive", "decode", "write"] {
        assert!(json["phases"][phase].is_number(), "phase {phase}");
    }
    assert!(json["bytes_received"].as_u64().expect("bytes") > 5000 * 10);

    // Arrow IPC to a directory: one file per connection, nothing else.
    let d = dir.path().join("parts");
    let o = bin()
        .args([
            "export",
            "--dsn",
            &server.dsn(),
            "--table",
            "s.\"Mixed Case\"",
            "--parallel",
            "2",
            "--format",
            "arrow",
            "--quiet",
        ])
        .arg("--output-dir")
        .arg(&d)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<_> = std::fs::read_dir(&d)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["s.Mixed%20Case-00000.arrow", "s.Mixed%20Case-00001.arrow"]
    );
}

#[test]
fn errors_are_one_line_with_a_nonzero_exit_and_no_output() {
    let server = LocalServer::start().expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("never.parquet");
    let cases: Vec<Vec<String>> = vec![
        vec![
            "--table".into(),
            "missing_table".into(),
            "--dsn".into(),
            server.dsn(),
        ],
        vec![
            "--table".into(),
            "pg_class".into(),
            "--dsn".into(),
            "host=127.0.0.1 port=1 user=x".into(),
        ],
        vec![
            "--table".into(),
            "pg_class".into(),
            "--dsn".into(),
            "not a dsn ===".into(),
        ],
        vec![
            "--table".into(),
            "pg_class".into(),
            "--dsn".into(),
            server.dsn(),
            "--compression".into(),
            "lzma".into(),
        ],
    ];
    for args in cases {
        let o = bin()
            .arg("export")
            .args(&args)
            .arg("--output")
            .arg(&out)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists());
    }
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "nothing left behind"
    );
}

/// Issue 15: this --where closed the COPY, committed the snapshot's
/// transaction and created a table. Now it is one clear error, and nothing
/// ran.
#[test]
fn a_where_cannot_run_a_statement() {
    let server = LocalServer::start().expect("server");
    server
        .psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);")
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("never.parquet");
    let filter = "true))) TO STDOUT (FORMAT binary); COMMIT; create table pwned(i int); COMMIT; BEGIN; COPY (SELECT 1 WHERE ((true";
    let o = bin()
        .args([
            "export",
            "--dsn",
            &server.dsn(),
            "--table",
            "t",
            "--where",
            filter,
        ])
        .arg("--output")
        .arg(&out)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--where") && stderr.contains(filter),
        "{stderr}"
    );
    assert!(!out.exists());
    let made = server
        .psql("SELECT to_regclass('pwned') IS NOT NULL")
        .expect("psql");
    assert_eq!(made.trim(), "f", "the --where ran a statement");
}

#[test]
fn usage_errors_and_help() {
    let o = bin()
        .args(["export", "--table", "t"])
        .output()
        .expect("runs");
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing --output is a usage error"
    );
    // --devices: parsed before anything runs; one of --device and --devices.
    for (args, says) in [
        (&["--devices", "0,0"][..], "GPU 0 is given twice"),
        (&["--devices", "one"], "\"one\" is not a GPU ordinal"),
        (
            &["--device", "1", "--devices", "0,1"],
            "cannot be used with",
        ),
    ] {
        let o = bin()
            .args(["export", "--table", "t", "--output", "/nonexistent/t.arrow"])
            .args(args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let o = bin().arg("--help").output().expect("runs");
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in ["export", "demo", "bench"] {
        assert!(out.contains(cmd), "{out}");
    }
}

/// This test machine has no GPU: `info` says so and succeeds, `--engine gpu`
/// fails at once with a clear line and no output, `--engine auto` runs on the
/// CPU and says why. (On a GPU machine, gpu/run-tests.sh covers the GPU side.)
#[test]
fn engine_choice_without_a_gpu() {
    if gpupg_gpu::devices().is_ok() {
        eprintln!("a GPU is present: the no-GPU behaviour is not what this machine shows");
        return;
    }
    let o = bin().arg("info").output().expect("runs");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("GPU: none usable"));

    let server = LocalServer::start().expect("server");
    server
        .psql("CREATE TABLE g AS SELECT g AS id FROM generate_series(1, 100) g;")
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("g.parquet");
    let o = bin()
        .args([
            "export",
            "--dsn",
            &server.dsn(),
            "--table",
            "g",
            "--engine",
            "gpu",
        ])
        .arg("--output")
        .arg(&out)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: --engine gpu: "), "{stderr}");
    assert!(stderr.contains("CUDA driver"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!out.exists());

    // Every GPU of a machine without one: a clear line, no output.
    let o = bin()
        .args(["export", "--dsn", &server.dsn(), "--table", "g"])
        .args(["--devices", "all", "--output"])
        .arg(&out)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: --devices all: no usable GPU ("),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!out.exists());

    let report = dir.path().join("r.json");
    let o = bin()
        .args([
            "export",
            "--dsn",
            &server.dsn(),
            "--table",
            "g",
            "--engine",
            "auto",
        ])
        .arg("--output")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("engine: cpu (CPU decoder: no usable GPU"),
        "{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(json["engine"], "cpu");
    assert!(json["gpu"].is_null());
}

#[test]
fn heap_source_from_the_command_line() {
    let server = LocalServer::start().expect("server");
    server
        .psql("CREATE TABLE h (a int, b text); INSERT INTO h SELECT g, 'r' || g FROM generate_series(1, 20000) g; CHECKPOINT;")
        .expect("setup");
    server.psql("VACUUM h").expect("vacuum");
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    // auto with the threshold lowered to 1 kB takes the heap files.
    let o = bin()
        .args(["export", "--dsn", &server.dsn(), "--table", "h"])
        .args(["--heap-threshold", "1kB"])
        .arg("--output")
        .arg(dir.path().join("h.parquet"))
        .arg("--report")
        .arg(&report)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("exported 20000 rows"), "{stderr}");
    assert!(stderr.contains("heap pages:"), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(json["source"], "heap");
    assert!(json["heap"]["pages_direct"].as_u64().expect("pages") > 0);
    assert_eq!(json["heap"]["rows_direct"], 20000);

    // --source heap with --where: one line, nonzero exit, no output.
    let out = dir.path().join("w.parquet");
    let o = bin()
        .args([
            "export",
            "--dsn",
            &server.dsn(),
            "--table",
            "h",
            "--source",
            "heap",
        ])
        .args(["--where", "a > 5"])
        .arg("--output")
        .arg(&out)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("--source heap") && stderr.contains("a row filter needs the server"),
        "{stderr}"
    );
    assert!(!out.exists());
    // A bad size is a usage error.
    let o = bin()
        .args([
            "export",
            "--table",
            "h",
            "--output",
            "x.parquet",
            "--heap-threshold",
            "12XB",
        ])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown unit"));
}

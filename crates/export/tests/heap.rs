//! The direct heap path against COPY on the same server: every type, TOASTed
//! and compressed values, dropped and added columns, pages that are not
//! all-visible; and the inputs it refuses, each with a clear message.

mod common;

use common::*;
use gpupg_export::{export, ExportReport, ExportRequest, NoProgress, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

/// Exports `req` through COPY and through the heap files and asserts the
/// results are identical; returns the heap export's report.
fn heap_equals_copy(
    mut req: ExportRequest<'static>,
    dir: &std::path::Path,
    keys: &[&str],
) -> ExportReport {
    let copy_path = dir.join("copy.arrow");
    let heap_path = dir.join("heap.arrow");
    for p in [&copy_path, &heap_path] {
        std::fs::remove_file(p).ok();
    }
    req.source = Source::Copy;
    req.output = gpupg_export::Output::File(copy_path.clone());
    let copy_report = export(&req, &NoProgress).expect("COPY export");
    assert_eq!(copy_report.source, "copy");
    req.source = Source::Heap;
    req.output = gpupg_export::Output::File(heap_path.clone());
    let report = export(&req, &NoProgress).expect("heap export");
    assert_eq!(report.source, "heap");
    assert_eq!(report.rows, copy_report.rows);
    let a = sorted_by(&read_back(&copy_path), keys);
    let b = sorted_by(&read_back(&heap_path), keys);
    assert_same_table(&a, &b);
    report
}

/// Makes every page of `tables` that can be all-visible so (pages the
/// relation was extended by but never written stay new; the heap path reads
/// those as empty).
fn heap(report: &ExportReport) -> &gpupg_export::HeapReport {
    report.heap.as_ref().expect("heap report")
}

#[test]
fn heap_files_give_exactly_what_copy_gives() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let cfg = config(&dsn);
    gpupg_datagen::create_all_types(&cfg, 3000).expect("all_types");
    gpupg_datagen::create_lineorder(&cfg, "lineorder", 40_000, 2).expect("lineorder");
    create_heap_cases(&dsn);
    // The checkpoint flushes the commit records (the test server commits
    // asynchronously) so that VACUUM can mark the pages all-visible.
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(
        &dsn,
        &["toasty", "evolved", "all_types", "lineorder", "parted"],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let base = |t: &str| {
        let mut r = request(
            &dsn,
            table(t),
            gpupg_export::Output::Dir(dir.path().into()),
            Format::Arrow,
        );
        r.sink.compression = gpupg_sink::Compression::None;
        r
    };

    // lineorder: every page is trusted.
    let r = heap_equals_copy(
        base("lineorder"),
        dir.path(),
        &["lo_orderkey", "lo_linenumber"],
    );
    let h = heap(&r);
    assert!(h.pages_direct > 100 && h.pages_fallback == 0, "{h:?}");
    assert_eq!(h.rows_direct, 40_000);
    // The CPU engine decodes the pages into columns, without COPY rows.
    assert!(
        r.source_detail
            .contains("pages decoded into columns on the CPU"),
        "{}",
        r.source_detail
    );

    // Every type, jsonb included, from the files: every page.
    let r = heap_equals_copy(base("all_types"), dir.path(), &["id"]);
    let h = heap(&r);
    assert!(h.pages_direct > 0 && h.pages_fallback == 0, "{h:?}");
    assert_eq!(h.rows_direct, 3000);

    // Compressed values are decompressed, and values stored out of line
    // read from the TOAST relation's files (VACUUM made its pages
    // all-visible too).
    let r = heap_equals_copy(base("toasty"), dir.path(), &["id"]);
    let h = heap(&r);
    assert!(h.pages_direct > 0 && h.pages_fallback == 0, "{h:?}");
    assert!(
        h.toast.iter().any(|t| t.contains("chunks indexed")),
        "{h:?}"
    );

    // A dropped column is stepped over; added columns read their default
    // (or NULL) in rows written before they existed.
    let r = heap_equals_copy(base("evolved"), dir.path(), &["id"]);
    assert_eq!(heap(&r).pages_fallback, 0);

    // A partitioned table, leaf by leaf: one leaf lays its columns out in
    // another order with a dropped one, one is empty.
    let r = heap_equals_copy(base("parted"), dir.path(), &["id"]);
    let h = heap(&r);
    assert!(h.pages_direct > 0 && h.pages_fallback == 0, "{h:?}");
    assert_eq!(h.rows_direct, 30_000);
    assert!(
        r.source_detail.contains("3 partitions"),
        "{}",
        r.source_detail
    );

    // Pages changed since the last VACUUM are not all-visible: read through COPY.
    exec(&dsn, "UPDATE lineorder SET lo_quantity = lo_quantity + 1 WHERE lo_orderkey % 97 = 0; DELETE FROM lineorder WHERE lo_orderkey % 89 = 0;");
    let r = heap_equals_copy(
        base("lineorder"),
        dir.path(),
        &["lo_orderkey", "lo_linenumber"],
    );
    let h = heap(&r);
    assert!(h.pages_direct > 0 && h.pages_fallback > 0, "{h:?}");
    assert!(h.fallback_reasons.contains_key("not all-visible"), "{h:?}");
    // Scattered as they are, the trusted pages in short gaps between them
    // go through COPY too, in the same ranges.
    assert!(
        h.fallback_reasons.contains_key("between untrusted pages"),
        "{h:?}"
    );

    // auto: below the threshold COPY runs and says why; above it, the heap.
    let mut req = base("lineorder");
    req.source = Source::Auto;
    req.output = gpupg_export::Output::File(dir.path().join("auto.arrow"));
    let r = export(&req, &NoProgress).expect("auto");
    assert_eq!(r.source, "copy");
    assert!(
        r.source_detail.contains("the heap threshold"),
        "{}",
        r.source_detail
    );
    std::fs::remove_file(dir.path().join("auto.arrow")).expect("rm");
    req.heap_threshold = 0;
    let r = export(&req, &NoProgress).expect("auto");
    assert_eq!(r.source, "heap", "{}", r.source_detail);
}

#[test]
fn heap_path_refusals_are_clear() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 1000);
         CREATE VIEW v AS SELECT a FROM t;
         CREATE UNLOGGED TABLE u (a int); INSERT INTO u VALUES (1);
         CREATE ROLE plain LOGIN; GRANT SELECT ON t TO plain;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let fails = |req: &ExportRequest<'_>| -> String {
        let e = export(req, &NoProgress).expect_err("must fail");
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "one line: {msg}");
        assert!(
            msg.starts_with("invalid request: reading the heap files: "),
            "{msg}"
        );
        msg
    };
    let heap_req = |t: &str| {
        let mut r = request(
            &dsn,
            table(t),
            gpupg_export::Output::File(dir.path().join("x.arrow")),
            Format::Arrow,
        );
        r.source = Source::Heap;
        r
    };
    let msg = fails(&heap_req("v"));
    assert!(msg.contains("no heap files"), "{msg}");
    let msg = fails(&heap_req("u"));
    assert!(msg.contains("unlogged"), "{msg}");
    let mut req = heap_req("t");
    req.filter = Some("a > 3".into());
    let msg = fails(&req);
    assert!(msg.contains("a row filter needs the server"), "{msg}");
    let mut req = heap_req("t");
    req.data_dir = Some(dir.path().join("not-the-data-dir"));
    let msg = fails(&req);
    assert!(msg.contains("cannot be read by this process"), "{msg}");
    // A user without the privileges: the data directory is hidden from it,
    // and with it given, CHECKPOINT is refused.
    let plain = format!("{dsn} user=plain");
    let mut req = heap_req("t");
    req.connect = config(&plain);
    let msg = fails(&req);
    assert!(msg.contains("data_directory"), "{msg}");
    req.data_dir = Some(server.data_dir().to_path_buf());
    let msg = fails(&req);
    assert!(msg.contains("pg_checkpoint"), "{msg}");
    // cuFile reads pages for the GPU page kernels only.
    let mut req = heap_req("t");
    req.engine = gpupg_export::Engine::Cpu;
    req.heap_io = gpupg_export::HeapIo::CuFile;
    let msg = export(&req, &NoProgress)
        .expect_err("must fail")
        .to_string();
    assert!(
        msg.contains("reading the heap files with cuFile") && msg.contains("GPU engine"),
        "{msg}"
    );
    // Nothing was left behind by any of them.
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn checksums_are_verified_and_a_corrupt_page_goes_through_copy() {
    let server = LocalServer::start_with(gpupg_localpg::LocalServerOptions {
        data_checksums: true,
        ..Default::default()
    })
    .expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        "CREATE TABLE c (a int, b text); INSERT INTO c SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["c"]);
    let dir = tempfile::tempdir().expect("tempdir");
    // heap_equals_copy sets the source and the output of each export.
    let req = || {
        request(
            &dsn,
            table("c"),
            gpupg_export::Output::Dir(dir.path().into()),
            Format::Arrow,
        )
    };
    let r = heap_equals_copy(req(), dir.path(), &["a"]);
    let h = heap(&r);
    assert!(h.checksums, "{h:?}");
    assert_eq!(h.pages_fallback, 0, "{h:?}");

    // Flip a byte of block 3 in the file: the server still holds the page
    // intact in its buffers (COPY reads those), the heap path sees a
    // checksum failure and reads that page through COPY.
    exec(&dsn, "CHECKPOINT");
    let rel = query(&dsn, "SELECT pg_relation_filepath('c')");
    let path = server
        .data_dir()
        .join(rel[0][0].as_deref().expect("relation path"));
    let mut bytes = std::fs::read(&path).expect("heap file");
    bytes[3 * 8192 + 8000] ^= 0x55;
    std::fs::write(&path, &bytes).expect("corrupt the file");
    let r = heap_equals_copy(req(), dir.path(), &["a"]);
    let h = heap(&r);
    assert_eq!(h.pages_fallback, 1, "{h:?}");
    assert_eq!(
        h.fallback_reasons.get("checksum failure"),
        Some(&1),
        "{h:?}"
    );
}

/// A copy of a directory tree (a data directory copied while its server
/// runs, as a stale backup would be), readable by this process.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            // Sockets and lock files vanish or are unreadable: skip those.
            std::fs::copy(entry.path(), &target).ok();
        }
    }
}

/// Exports `t` through COPY; then `--source heap` with `data_dir` must fail
/// naming the mismatch (one of `mismatch`), and `--source auto` must read
/// through COPY saying why, with the same rows.
fn foreign_files_are_refused(dsn: &str, data_dir: &std::path::Path, mismatch: &[&str]) {
    let names = |text: &str| mismatch.iter().any(|m| text.contains(m));
    let dir = tempfile::tempdir().expect("tempdir");
    let req = |source: Source, name: &str| {
        let mut r = request(
            dsn,
            table("t"),
            gpupg_export::Output::File(dir.path().join(name)),
            Format::Arrow,
        );
        r.source = source;
        r.heap_threshold = 0;
        r.data_dir = Some(data_dir.to_path_buf());
        r
    };
    let copy = export(&req(Source::Copy, "copy.arrow"), &NoProgress).expect("COPY export");
    let e = export(&req(Source::Heap, "heap.arrow"), &NoProgress)
        .expect_err("--source heap must refuse files that are not the server's");
    let msg = e.to_string();
    eprintln!("refused: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.starts_with("invalid request: reading the heap files: the files in ")
            && msg.contains("are not proven this server's own and current")
            && names(&msg),
        "{msg}"
    );
    let auto = export(&req(Source::Auto, "auto.arrow"), &NoProgress).expect("auto export");
    assert_eq!(auto.source, "copy", "{}", auto.source_detail);
    assert!(names(&auto.source_detail), "{}", auto.source_detail);
    assert_eq!(auto.rows, copy.rows);
    let a = sorted_by(&read_back(&dir.path().join("copy.arrow")), &["a"]);
    let b = sorted_by(&read_back(&dir.path().join("auto.arrow")), &["a"]);
    assert_eq!(a, b);
    assert!(!dir.path().join("heap.arrow").exists());
}

/// A table of all-visible pages: what a stale copy or another cluster's
/// files hold and every page check passes.
fn create_table_t(dsn: &str, rows: u32, b: &str) {
    exec(
        dsn,
        &format!(
            "CREATE TABLE t (a int, b int); INSERT INTO t SELECT g, {b} FROM generate_series(1, {rows}) g;"
        ),
    );
    exec(dsn, "CHECKPOINT");
    vacuum_all_visible(dsn, &["t"]);
    exec(dsn, "CHECKPOINT");
}

#[test]
fn a_stale_copy_of_the_files_is_refused() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    create_table_t(&dsn, 20_000, "g");
    let copies = tempfile::tempdir().expect("tempdir");
    let stale = copies.path().join("stale");
    copy_tree(server.data_dir(), &stale);
    // Changed since the copy: the copy's pages of t still look all-visible
    // and older than any fence, and the new row versions lie past its end.
    exec(&dsn, "UPDATE t SET b = -b WHERE a % 2 = 0");
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["t"]);
    foreign_files_are_refused(&dsn, &stale, &["latest checkpoint"]);
    // With the live pg_control and postmaster.pid linked into the copy,
    // only the table's own files are stale: their size gives them away.
    for f in ["global/pg_control", "postmaster.pid"] {
        std::fs::remove_file(stale.join(f)).expect("rm");
        std::os::unix::fs::symlink(server.data_dir().join(f), stale.join(f)).expect("link");
    }
    foreign_files_are_refused(&dsn, &stale, &["segment files"]);
}

#[test]
fn another_clusters_files_are_refused() {
    let server = LocalServer::start().expect("server");
    let other = LocalServer::start().expect("second server");
    let dsn = server.dsn();
    // The same table in both: in fresh clusters it gets the same file path.
    create_table_t(&dsn, 20_000, "g");
    create_table_t(&other.dsn(), 5_000, "-g");
    let path = |d: &str| query(d, "SELECT pg_relation_filepath('t')")[0][0].clone();
    assert_eq!(path(&dsn), path(&other.dsn()));
    foreign_files_are_refused(&dsn, other.data_dir(), &["system identifier"]);
}

/// A server in a container: the same files (same cluster, current), but the
/// postmaster runs in another PID namespace, so this host cannot be proven.
/// The server is started again as PID 1 of a new PID namespace (`unshare`,
/// which needs root: skipped otherwise).
#[test]
fn a_server_in_another_pid_namespace_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: starting a server in a new PID namespace needs root");
        return;
    }
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    create_table_t(&dsn, 20_000, "g");
    let data = server.data_dir();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(data).expect("data dir"));
    let as_owner = |program: &str| {
        let mut c = std::process::Command::new("setpriv");
        c.arg(format!("--reuid={owner}"))
            .arg(format!("--regid={owner}"))
            .arg("--clear-groups")
            .arg(server.bin_dir().join(program));
        c
    };
    let stopped = as_owner("pg_ctl")
        .arg("-D")
        .arg(data)
        .args(["-m", "fast", "-w", "stop"])
        .output()
        .expect("pg_ctl stop");
    assert!(stopped.status.success(), "{stopped:?}");
    let mut postmaster = as_owner("postgres");
    postmaster
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(server.port().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut contained = std::process::Command::new("unshare");
    contained
        .args(["--pid", "--fork", "--kill-child", "--"])
        .arg(postmaster.get_program())
        .args(postmaster.get_args())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = contained.spawn().expect("unshare");
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        gpupg_source::Connection::connect(&config(&dsn)).is_ok()
    });
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
    if up {
        // Our backend's PID in this namespace is no process, or one whose
        // parent is not PID 1, or PID 1 here is not the postmaster.
        foreign_files_are_refused(&dsn, data, &["our backend", "another PID namespace"]);
    }
    child.kill().ok();
    child.wait().ok();
    assert!(up, "the server did not start in a new PID namespace");
    assert!(pid_file.starts_with("1\n"), "postmaster.pid: {pid_file}");
}

#[test]
fn the_servers_own_files_are_proven_and_read() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    create_table_t(&dsn, 20_000, "g");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = request(
        &dsn,
        table("t"),
        gpupg_export::Output::Dir(dir.path().into()),
        Format::Arrow,
    );
    // Given explicitly, the server's own directory proves the same.
    req.data_dir = Some(server.data_dir().to_path_buf());
    let r = heap_equals_copy(req, dir.path(), &["a"]);
    let h = heap(&r);
    assert!(h.pages_direct > 0 && h.pages_fallback == 0, "{h:?}");
    for proof in [
        "same cluster",
        "current (latest checkpoint",
        "this host",
        "file nodes and sizes of 1 relation",
    ] {
        assert!(h.files_proof.contains(proof), "{}", h.files_proof);
    }
    assert!(!h.files_proof.contains("not proven"), "{}", h.files_proof);
    assert!(
        r.summary().contains("heap files: proven: "),
        "{}",
        r.summary()
    );

    // A user not granted pg_control_system(): the cluster is not proven
    // by its identifier, the host and the checkpoint still prove the files.
    exec(
        &dsn,
        "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC;
         CREATE ROLE ckpt LOGIN IN ROLE pg_checkpoint; GRANT SELECT ON t TO ckpt;",
    );
    let mut req = request(
        &format!("{dsn} user=ckpt"),
        table("t"),
        gpupg_export::Output::Dir(dir.path().into()),
        Format::Arrow,
    );
    req.data_dir = Some(server.data_dir().to_path_buf());
    let r = heap_equals_copy(req, dir.path(), &["a"]);
    let h = heap(&r);
    assert!(h.pages_direct > 0, "{h:?}");
    assert!(
        h.files_proof
            .contains("not proven: same cluster (pg_control_system() is not granted"),
        "{}",
        h.files_proof
    );
    assert!(h.files_proof.contains("this host"), "{}", h.files_proof);
}

/// PostgreSQL 18's virtual generated columns have no storage: the heap
/// path refuses them (auto reads through COPY and says why) and steps over
/// them when they are not exported.
#[test]
fn virtual_generated_columns_are_read_through_copy() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let version: u32 = query(&dsn, "SHOW server_version_num")[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("server_version_num");
    if version < 180_000 {
        eprintln!("skipped: virtual generated columns need PostgreSQL 18 (server {version})");
        return;
    }
    exec(
        &dsn,
        "CREATE TABLE g (a int, v int GENERATED ALWAYS AS (a * 2) VIRTUAL, s text GENERATED ALWAYS AS ('s' || a) STORED, b text);
         INSERT INTO g (a, b) SELECT x, 'b' || x FROM generate_series(1, 5000) x;",
    );
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["g"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let req = |source: Source, name: &str| {
        let mut r = request(
            &dsn,
            table("g"),
            gpupg_export::Output::File(dir.path().join(name)),
            Format::Arrow,
        );
        r.source = source;
        r.heap_threshold = 0;
        r
    };
    let msg = export(&req(Source::Heap, "heap.arrow"), &NoProgress)
        .expect_err("a virtual column cannot be read from the files")
        .to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.contains("column \"v\" of \"public\".\"g\" is a virtual generated column"),
        "{msg}"
    );
    let copy = export(&req(Source::Copy, "copy.arrow"), &NoProgress).expect("COPY");
    let auto = export(&req(Source::Auto, "auto.arrow"), &NoProgress).expect("auto");
    assert_eq!(auto.source, "copy");
    assert!(
        auto.source_detail.contains("virtual generated column"),
        "{}",
        auto.source_detail
    );
    assert_eq!(auto.rows, copy.rows);
    let a = sorted_by(&read_back(&dir.path().join("copy.arrow")), &["a"]);
    let b = sorted_by(&read_back(&dir.path().join("auto.arrow")), &["a"]);
    assert_eq!(a, b);
    // Not exported, the virtual column is stepped over (a NULL in the
    // tuple); the stored one is read like any other.
    let mut r = req(Source::Heap, "unused.arrow");
    r.columns = Some(vec!["a".into(), "s".into(), "b".into()]);
    let report = heap_equals_copy(r, dir.path(), &["a"]);
    assert!(heap(&report).pages_direct > 0, "{:?}", heap(&report));
}

//! Signals during an export, through the real binary against a real server:
//! the statements stop on the server at once, the process exits with 128 +
//! the signal's number, and nothing is left in the output directory; stale
//! temporary files of dead processes are removed by the next export.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpupg_localpg::LocalServer;
use gpupg_source::{ConnectConfig, Connection};

mod common;
use common::{bin, entries};

fn connect(dsn: &str) -> Connection {
    Connection::connect(&ConnectConfig::resolve(Some(dsn)).expect("dsn")).expect("connect")
}

fn scalar(conn: &mut Connection, sql: &str) -> String {
    conn.simple_query(sql).expect("query")[0][0]
        .clone()
        .unwrap_or_default()
}

/// Waits up to 20 s for `sql` to give "t".
fn wait_for(conn: &mut Connection, sql: &str, what: &str) {
    let t = Instant::now();
    while scalar(conn, sql) != "t" {
        assert!(t.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` to `child` and returns its exit code and stderr, failing
/// when it takes more than 3 s to exit.
fn interrupt(mut child: Child, signal: libc::c_int) -> (Option<i32>, String) {
    // SAFETY: kill with a PID of our own child and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let t = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(3) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running 3 s after signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(dsn: &str, args: &[&str], output: &Path) -> Child {
    bin()
        .args([
            "export",
            "--dsn",
            dsn,
            "--source",
            "copy",
            "--parallel",
            "2",
        ])
        .args(args)
        .arg("--output")
        .arg(output)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns")
}

/// Whether any statement of application `app` is still running.
fn active(app: &str) -> String {
    format!("SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = '{app}' AND state = 'active'")
}

#[test]
fn sigint_stops_an_export_blocked_on_a_lock() {
    let server = LocalServer::start().expect("server");
    server
        .psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;")
        .expect("setup");
    let mut holder = connect(&server.dsn());
    holder
        .execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let mut watcher = connect(&server.dsn());
    let dir = tempfile::tempdir().expect("tempdir");
    let dsn = format!("{} application_name=locked", server.dsn());
    let child = export(&dsn, &["--table", "t"], &dir.path().join("t.parquet"));
    wait_for(
        &mut watcher,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'locked' AND wait_event_type = 'Lock'",
        "the export waits for the lock",
    );
    let (code, stderr) = interrupt(child, libc::SIGINT);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    wait_for(&mut watcher, &active("locked"), "no statement left running");
    holder.execute("COMMIT").expect("unlock");
}

/// SIGTERM and SIGHUP (over the Unix socket) while a COPY runs and the
/// temporary file exists; and `timeout`, which sends SIGTERM.
#[test]
fn sigterm_sighup_and_timeout_leave_nothing() {
    let server = LocalServer::start().expect("server");
    let mut watcher = connect(&server.dsn());
    let slow = "SELECT g FROM generate_series(1, 3) g, LATERAL (SELECT pg_sleep(60)) s";
    let unix = format!(
        "host={} port={} user=postgres dbname=postgres",
        server.socket_dir().display(),
        server.port()
    );
    for (signal, code, dsn) in [
        (libc::SIGTERM, 143, server.dsn()),
        (libc::SIGHUP, 129, unix),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = format!("slow{signal}");
        let dsn = format!("{dsn} application_name={app}");
        let child = export(&dsn, &["--query", slow], &dir.path().join("q.parquet"));
        wait_for(
            &mut watcher,
            &format!("SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = '{app}' AND query LIKE 'COPY%'"),
            "the COPY runs",
        );
        assert_eq!(entries(dir.path()).len(), 1, "the temporary file is there");
        let (got, stderr) = interrupt(child, signal);
        assert_eq!(got, Some(code), "{stderr}");
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
        wait_for(&mut watcher, &active(&app), "no statement left running");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new("timeout")
        .arg("2")
        .arg(env!("CARGO_BIN_EXE_gpupgparser"))
        .args([
            "export",
            "--dsn",
            &server.dsn(),
            "--query",
            slow,
            "--output",
        ])
        .arg(dir.path().join("q.parquet"))
        .output()
        .expect("timeout runs");
    assert_eq!(o.status.code(), Some(124));
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

/// This machine's host name as temporary file names spell it.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    assert_eq!(
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
        0
    );
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf[..len]
        .iter()
        .take(64)
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

#[test]
fn the_next_export_removes_temporary_files_of_dead_processes_only() {
    let server = LocalServer::start().expect("server");
    server
        .psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g;")
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc");
    let start = stat[stat.rfind(')').expect("stat") + 1..]
        .split_whitespace()
        .nth(19)
        .expect("starttime")
        .to_string();
    let (host, me) = (host(), std::process::id());
    // A killed export's file (no such PID), and this live process's.
    let dead = format!(".t.parquet.gpupg-{host}-99999999-{start}-0.tmp");
    let live = format!(".u.parquet.gpupg-{host}-{me}-{start}-0.tmp");
    for name in [&dead, &live] {
        std::fs::write(dir.path().join(name), b"half a file").expect("write");
    }
    let o = bin()
        .args(["export", "--dsn", &server.dsn(), "--table", "t", "--quiet"])
        .arg("--output")
        .arg(dir.path().join("t.parquet"))
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(entries(dir.path()), [live.clone(), "t.parquet".to_string()]);
}

//! `gpupgparser serve` and `gpupgparser store ...` as a user runs them (the
//! host backend, so no GPU is needed).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gpupg_localpg::LocalServer;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpupgparser"))
}

fn store(socket: &Path, args: &[&str]) -> Output {
    bin()
        .arg("store")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("runs")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn serve(socket: &Path) -> Child {
    let child = bin()
        .args([
            "serve",
            "--backend",
            "host",
            "--memory-limit",
            "64MB",
            "--socket",
        ])
        .arg(socket)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn serve_and_store_commands_then_sigterm() {
    let pg = LocalServer::start().expect("server");
    pg.psql("CREATE TABLE t AS SELECT g AS id, 'v' || g AS s, CASE WHEN g % 7 = 0 THEN NULL ELSE g * 1.5 END::float8 AS f FROM generate_series(1, 3000) g;")
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("s.sock");
    let server = serve(&socket);

    let out = ok(&store(
        &socket,
        &[
            "load",
            "--dsn",
            &pg.dsn(),
            "--table",
            "t",
            "--name",
            "tt",
            "--source",
            "copy",
            "--columns",
            "id,f",
        ],
    ));
    assert!(out.starts_with("loaded tt: revision 1, 3000 rows"), "{out}");
    let list = ok(&store(&socket, &["list"]));
    assert!(list.starts_with("NAME"), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with("tt "))
        .expect("tt listed");
    assert!(row.contains(" 3000 ") && row.ends_with(" no"), "{row}");
    assert!(list.contains("of a limit of 64.0 MiB"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&store(&socket, &["list", "--json"]))).expect("list json");
    assert_eq!(json["revisions"][0]["name"], "tt");
    assert_eq!(json["revisions"][0]["stale"], false);
    let manifest: serde_json::Value =
        serde_json::from_str(&ok(&store(&socket, &["export", "tt"]))).expect("manifest json");
    assert_eq!(manifest["rows"], 3000);
    let names: Vec<&str> = manifest["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "f"]);
    assert_eq!(manifest["columns"][1]["type"], "Float64");
    assert_eq!(
        manifest["allocations"][0]["ipc_handle"]
            .as_str()
            .unwrap()
            .len(),
        128
    );
    assert_eq!(
        ok(&store(&socket, &["refresh", "tt"])),
        "tt: unchanged, revision 1\n"
    );
    pg.psql("TRUNCATE t").expect("truncate");
    let out = ok(&store(&socket, &["refresh", "tt"]));
    assert!(
        out.starts_with("tt: rebuilt as revision 2, 0 rows"),
        "{out}"
    );

    // Errors: one line, exit status 1, the server goes on.
    let o = store(&socket, &["drop", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "error: no table named \"nope\" in the store\n"
    );
    let o = bin()
        .args(["serve", "--backend", "host", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("in use by a running store server"), "{e}");
    let o = store(&dir.path().join("none.sock"), &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no store server at"),
        "{o:?}"
    );
    assert!(ok(&store(&socket, &["drop", "tt"])).starts_with("dropped tt: freed"));

    // SIGTERM: a clean exit that removes the socket.
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
    let out = server.wait_with_output().expect("server exits");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!socket.exists());
}

//! `gpupgparser serve` and `gpupgparser store ...` as a user runs them (the
//! host backend, so no GPU is needed).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gpupg_localpg::{LocalServer, TEST_PASSWORD};

mod common;
use common::{bin, ok, one_line_error};

#[path = "../crates/store/tests/common/impostor.rs"]
mod impostor;

fn store(socket: &Path, args: &[&str]) -> Output {
    bin()
        .arg("store")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("runs")
}

fn serve(socket: &Path) -> Child {
    let mut cmd = bin();
    cmd.args(["serve", "--memory-limit", "64MB", "--socket"])
        .arg(socket);
    serve_with(cmd, socket)
}

/// Starts `cmd` (a `serve` command) on the host backend and waits for its
/// socket at `socket`.
fn serve_with(mut cmd: Command, socket: &Path) -> Child {
    let child = cmd
        .args(["--backend", "host"])
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

/// A server with password authentication and a table the password role
/// `gpu_pw` may read.
fn password_server() -> LocalServer {
    common::password_server(
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g; GRANT SELECT ON t TO gpu_pw;",
    )
}

/// The connection as `gpu_pw` without its password (PGPASSWORD gives it).
fn password_dsn(pg: &LocalServer) -> String {
    format!(
        "host=127.0.0.1 port={} user=gpu_pw dbname=postgres",
        pg.port()
    )
}

/// What `cmd` printed, killing it when it runs longer than `secs` (a
/// server that should have refused to start).
fn output_within(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// `store` commands, and the Python example's client, check who listens
/// on the socket before they send anything: an impostor of another user
/// gets no byte, and the password given in PGPASSWORD never leaves.
#[test]
fn store_commands_send_nothing_to_a_socket_of_another_user() {
    let Some(nobody) = impostor::nobody_uid() else {
        return;
    };
    let pg = password_server();
    let dir = impostor::shared_dir();
    let socket = dir.path().join("store.sock");
    let imp = impostor::Impostor::start(&socket);
    let load = bin()
        .env("PGPASSWORD", TEST_PASSWORD)
        .arg("store")
        .arg("--socket")
        .arg(&socket)
        .args(["load", "--dsn", &password_dsn(&pg), "--table", "t"])
        .output()
        .expect("runs");
    let list = store(&socket, &["list"]);
    assert_eq!(String::from_utf8_lossy(&imp.received()), "");
    for o in [load, list] {
        let e = one_line_error(&o);
        assert!(
            e.contains(&socket.display().to_string()) && e.contains(&format!("uid {nobody}")),
            "{e}"
        );
    }

    // examples/store_protocol_cupy_torch.py speaks the protocol itself.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let o = Command::new("python3")
        .arg("-c")
        .arg("import sys; sys.path.insert(0, sys.argv[1]); import store_protocol_cupy_torch as m; m.Store(sys.argv[2]).call('list')")
        .arg(&examples)
        .arg(&socket)
        .output()
        .expect("python3 runs");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{o:?}");
    assert!(e.contains(&format!("uid {nobody}")), "{e}");
    assert_eq!(String::from_utf8_lossy(&imp.received()), "");
}

/// The default socket lives in a directory of its own that only this user
/// can write ($XDG_RUNTIME_DIR/gpupgparser here): server and client refuse
/// one owned by another user, writable by others or a symbolic link, and
/// create it with mode 0700 when missing. A load through it with the
/// password in PGPASSWORD works, and the password is never printed back.
#[test]
fn the_default_socket_directory_is_private() {
    let Some(nobody) = impostor::nobody_uid() else {
        return;
    };
    let pg = password_server();
    let run = tempfile::tempdir().expect("tempdir");
    // Others may pass through, as through /run/user/UID's parents.
    std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = run.path().join("gpupgparser");
    let default = |args: &[&str]| {
        let mut c = bin();
        c.env("XDG_RUNTIME_DIR", run.path())
            .env_remove("GPUPGPARSER_STORE_SOCKET")
            .env("PGPASSWORD", TEST_PASSWORD)
            .args(args);
        c
    };
    let refused = |why: &str| {
        for args in [&["store", "list"][..], &["serve", "--backend", "host"]] {
            let e = one_line_error(&output_within(default(args), 20));
            assert!(
                e.contains(&private.display().to_string()) && e.contains(why),
                "{args:?}: {e}"
            );
        }
    };

    // Another user's directory, with that user listening in it.
    std::fs::create_dir(&private).unwrap();
    std::os::unix::fs::chown(&private, Some(nobody), None).unwrap();
    let imp = impostor::Impostor::start(&private.join("store.sock"));
    refused(&format!("owned by uid {nobody}"));
    assert_eq!(String::from_utf8_lossy(&imp.received()), "");
    drop(imp);
    std::fs::remove_dir_all(&private).unwrap();
    // Ours, but others may write in it.
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused("writable by");
    std::fs::remove_dir(&private).unwrap();
    // A symbolic link, even to a private directory.
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &private).unwrap();
    refused("symbolic link");
    std::fs::remove_file(&private).unwrap();

    // Missing: the server creates it, private, and listens in it.
    let socket = private.join("store.sock");
    // Without the password: the client sends it.
    let mut cmd = default(&["serve"]);
    cmd.env_remove("PGPASSWORD");
    let server = serve_with(cmd, &socket);
    let meta = std::fs::symlink_metadata(&private).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700);
    let out = ok(&default(&[
        "store",
        "load",
        "--dsn",
        &password_dsn(&pg),
        "--table",
        "t",
        "--source",
        "copy",
    ])
    .output()
    .unwrap());
    assert!(out.starts_with("loaded t: revision 1, 500 rows"), "{out}");
    let mut printed = ok(&default(&["store", "list", "--json"]).output().unwrap());
    printed += &ok(&default(&["store", "list"]).output().unwrap());
    printed += &one_line_error(
        &default(&[
            "store",
            "load",
            "--dsn",
            &password_dsn(&pg),
            "--table",
            "no_such_table",
        ])
        .output()
        .unwrap(),
    );
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
    let out = server.wait_with_output().expect("server exits");
    assert!(out.status.success());
    printed += &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("500"), "{printed}");
    assert!(!printed.contains(TEST_PASSWORD), "{printed}");
}

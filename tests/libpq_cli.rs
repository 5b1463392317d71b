//! The real binary with libpq's files and variables, next to psql with the
//! same settings: a user who connects with psql connects with gpupgparser.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use gpupg_localpg::{LocalServer, LocalServerOptions, TEST_PASSWORD};

mod common;

/// `program` with none of the caller's connection settings and `home` as
/// its home directory.
fn clean(program: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    for k in ["GPUPGPARSER_PG_DSN", "GPUPASER_PG_DSN", "DATABASE_URL"] {
        cmd.env_remove(k);
    }
    cmd.env("HOME", home);
    cmd
}

/// `gpupgparser export` of table `t` without `--dsn`.
fn export(home: &Path, env: &[(&str, &str)]) -> Output {
    let out = home.join("t.parquet");
    // Each run writes afresh; an existing output would be refused.
    let _ = std::fs::remove_file(&out);
    clean(Path::new(env!("CARGO_BIN_EXE_gpupgparser")), home)
        .envs(env.iter().copied())
        .args(["export", "--table", "t", "--source", "copy", "--quiet"])
        .arg("--output")
        .arg(&out)
        .output()
        .expect("runs gpupgparser")
}

/// psql's `SELECT current_user` with the same settings.
fn psql(server: &LocalServer, home: &Path, env: &[(&str, &str)]) -> Output {
    clean(&server.bin_dir().join("psql"), home)
        .envs(env.iter().copied())
        .args(["-X", "-A", "-t", "-w", "-c", "SELECT current_user"])
        .output()
        .expect("runs psql")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A server with password authentication and a table `t` that `gpu_pw`
/// may read.
fn password_server() -> LocalServer {
    common::password_server(
        "CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 10) g; GRANT SELECT ON t TO gpu_pw;",
    )
}

#[test]
fn service_file_and_pgpass_in_home_as_psql_reads_them() {
    let server = password_server();
    let port = server.port();
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    write(
        &home.join(".pgpass"),
        &format!("127.0.0.1:{port}:postgres:gpu_pw:{TEST_PASSWORD}\n"),
        0o600,
    );
    write(
        &home.join(".pg_service.conf"),
        &format!(
            "[gp]\nhost=127.0.0.1\nport={port}\nuser=gpu_pw\ndbname=postgres\nsslmode=disable\n"
        ),
        0o644,
    );
    let env = [("PGSERVICE", "gp")];
    let p = psql(&server, home, &env);
    assert_eq!(
        text(&p.stdout).trim(),
        "gpu_pw",
        "psql: {}",
        text(&p.stderr)
    );
    let o = export(home, &env);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(home.join("t.parquet").exists());

    // An unknown service is an error naming it, for both.
    let env = [("PGSERVICE", "nope")];
    let p = psql(&server, home, &env);
    assert!(text(&p.stderr).contains("\"nope\""), "{}", text(&p.stderr));
    let o = export(home, &env);
    let stderr = text(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("service \"nope\""), "{stderr}");
}

#[test]
fn pgpassfile_as_psql_reads_it() {
    let server = password_server();
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let file = home.join("elsewhere");
    write(
        &file,
        &format!(
            "127.0.0.1:{}:postgres:gpu_pw:{TEST_PASSWORD}\n",
            server.port()
        ),
        0o600,
    );
    let port = server.port().to_string();
    let env = [
        ("PGPASSFILE", file.to_str().expect("path")),
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "gpu_pw"),
        ("PGDATABASE", "postgres"),
    ];
    assert!(psql(&server, home, &env).status.success());
    let o = export(home, &env);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // A file others can read is ignored by both, and said so.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let p = psql(&server, home, &env);
    assert!(!p.status.success());
    assert!(
        text(&p.stderr).contains("group or world access"),
        "{}",
        text(&p.stderr)
    );
    let o = export(home, &env);
    let stderr = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("group or world access") && stderr.contains("elsewhere"),
        "{stderr}"
    );
}

#[test]
fn default_host_is_the_socket_in_tmp() {
    let server = LocalServer::start_with(LocalServerOptions {
        extra_conf: vec![("unix_socket_directories".into(), "/tmp".into())],
        ..Default::default()
    })
    .expect("server");
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let port = server.port().to_string();
    let env = [
        ("PGPORT", port.as_str()),
        ("PGUSER", "postgres"),
        ("PGDATABASE", "postgres"),
    ];
    let setup = clean(&server.bin_dir().join("psql"), home)
        .envs(env)
        .args(["-X", "-h", "/tmp", "-c", "CREATE TABLE t AS SELECT 1 AS a"])
        .output()
        .expect("runs psql");
    assert!(setup.status.success(), "{}", text(&setup.stderr));
    let o = export(home, &env);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn connect_timeout_says_it_timed_out() {
    // Accepted by the kernel, never answered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port().to_string();
    let home = tempfile::tempdir().expect("tempdir");
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGCONNECT_TIMEOUT", "2"),
    ];
    let o = export(home.path(), &env);
    let stderr = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} timed out after 2 s")),
        "{stderr}"
    );
}

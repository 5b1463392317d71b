//! Helpers shared by the binary's tests: running it, reading what it left,
//! and checking the shape of its output.
// Each test binary uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use gpupg_localpg::{LocalServer, LocalServerOptions};

/// The gpupgparser binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpupgparser"))
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The stdout of a run that must have succeeded.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit status 1, nothing on stdout, one `error: ...` line on stderr and
/// no panic; returns the line without the `error: ` prefix.
pub fn one_line_error(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
        .trim_end()
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("{stderr}"))
        .to_string()
}

/// A server with password authentication, set up by `setup` (SQL run as
/// the superuser; it grants the password role `gpu_pw` what it reads).
pub fn password_server(setup: &str) -> LocalServer {
    let server = LocalServer::start_with(LocalServerOptions {
        password_auth: true,
        ..Default::default()
    })
    .expect("server");
    server.psql(setup).expect("setup");
    server
}

//! A process of another user (`nobody`) listening where a store client
//! looks for its server, recording whatever it is sent (impostor.py). Used
//! by the store's tests and, through `#[path]`, by tests/store_cli.rs.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The impostor's script (built in: this file is compiled into tests of
/// two crates, whose directories differ).
const SCRIPT: &str = include_str!("../impostor.py");

/// The uid of `nobody`, when this process may start processes as it
/// (root only), else `None`: the caller skips, saying why.
pub fn nobody_uid() -> Option<u32> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: impostor tests need root to run a process as nobody");
        return None;
    }
    let out = Command::new("id").args(["-u", "nobody"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A temporary directory anyone may create files in (sticky, as /tmp).
pub fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod 1777");
    dir
}

/// The impostor process; killed when dropped.
pub struct Impostor {
    child: Child,
    record: PathBuf,
}

impl Impostor {
    /// Starts one as `nobody` listening on `socket` (its directory must be
    /// writable by nobody) and waits until it listens.
    pub fn start(socket: &Path) -> Impostor {
        let record = socket.with_extension("received");
        let mut child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", SCRIPT])
            .arg(socket)
            .arg(&record)
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv and python3 run");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .expect("impostor output");
        }
        assert_eq!(line.trim(), "ready", "the impostor did not start");
        Impostor { child, record }
    }

    /// Every byte clients sent it so far.
    pub fn received(&self) -> Vec<u8> {
        std::fs::read(&self.record).expect("the impostor's record")
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

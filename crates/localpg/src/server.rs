//! Creating, starting and stopping one throwaway server.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bin::find_bin_dir;
use crate::error::{one_line_tail, LocalPgError};
use crate::tls::self_signed_localhost;
use crate::user::RunAs;

/// Password of the roles `gpu_pw` (SCRAM-SHA-256) and `gpu_md5` (md5) that
/// [`LocalServerOptions::password_auth`] creates.
pub const TEST_PASSWORD: &str = "secret pw";

/// How many different ports one start tries before giving up: another
/// process can take the port between our probe and the server's bind.
const START_ATTEMPTS: usize = 8;

/// Ports handed to servers of this process that are still running, so two
/// threads never probe the same free port for two servers.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// How to set a server up.
#[derive(Debug, Clone, Default)]
pub struct LocalServerOptions {
    /// Host (TCP) connections authenticate: role `gpu_pw` with SCRAM-SHA-256,
    /// role `gpu_md5` with md5 (both with password `secret pw`), any other
    /// role but `postgres` with SCRAM-SHA-256. `postgres` stays trusted so
    /// [`LocalServer::dsn`] keeps working; Unix-socket connections are
    /// trusted.
    pub password_auth: bool,
    /// `ssl = on` with a self-signed certificate for CN=localhost generated at
    /// start (see [`LocalServer::tls_root_cert`]).
    pub tls: bool,
    /// Extra `postgresql.conf` settings; values are written quoted.
    pub extra_conf: Vec<(String, String)>,
    /// `initdb --data-checksums`: every page carries a checksum.
    pub data_checksums: bool,
}

/// A running throwaway server; dropping it stops the server
/// (`pg_ctl stop -m immediate`) and removes its directory.
#[derive(Debug)]
pub struct LocalServer {
    root: PathBuf,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    run_as: RunAs,
    tls_cert: Option<PathBuf>,
}

impl LocalServer {
    /// A server with trust authentication and no TLS.
    pub fn start() -> Result<LocalServer, LocalPgError> {
        Self::start_with(LocalServerOptions::default())
    }

    /// A server set up as `opts` asks (password roles, TLS); its directory
    /// is removed again if it fails to start.
    pub fn start_with(opts: LocalServerOptions) -> Result<LocalServer, LocalPgError> {
        let bin_dir = find_bin_dir()?;
        let run_as = RunAs::detect()?;
        let root = make_root_dir(run_as)?;
        let data_dir = root.join("data");
        // From here on the directory is removed on any error (drop of the
        // half-built server); port 0 means "no server to stop yet".
        let mut server = LocalServer {
            root,
            data_dir,
            bin_dir,
            port: 0,
            run_as,
            tls_cert: None,
        };
        server.init(&opts)?;
        server.start_server()?;
        if opts.password_auth {
            server.psql(&format!(
                "SET password_encryption = 'scram-sha-256';\n\
                 CREATE ROLE gpu_pw LOGIN PASSWORD '{TEST_PASSWORD}';\n\
                 SET password_encryption = 'md5';\n\
                 CREATE ROLE gpu_md5 LOGIN PASSWORD '{TEST_PASSWORD}';\n"
            ))?;
        }
        Ok(server)
    }

    /// libpq keyword/value connection string for user `postgres` over TCP.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The TCP port it listens on (on 127.0.0.1), picked when it started.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory, for tests that read the table files.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The PostgreSQL installation's `bin` directory (`psql` and the server).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The directory holding the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The self-signed certificate of a TLS server, to use as
    /// `sslrootcert` in verify-ca/verify-full tests.
    pub fn tls_root_cert(&self) -> Option<&Path> {
        self.tls_cert.as_deref()
    }

    /// Runs `sql` with `psql -X -q -A -t -v ON_ERROR_STOP=1` as user
    /// `postgres` over the Unix socket and returns its standard output.
    pub fn psql(&self, sql: &str) -> Result<String, LocalPgError> {
        let psql = self.bin_dir.join("psql");
        let program = if psql.is_file() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let mut cmd = Command::new(&program);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres"]);
        // The caller's libpq settings must not redirect or alter the session.
        for var in [
            "PGOPTIONS",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGPASSWORD",
            "PGSSLMODE",
            "PGTZ",
            "PGDATESTYLE",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let summary = sql_summary(sql);
        let psql_err = |stderr: String| LocalPgError::Psql {
            port: self.port,
            sql: summary.clone(),
            stderr,
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| psql_err(format!("cannot run {}: {e}", program.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means psql exited early; its stderr says why.
            let _ = stdin.write_all(sql.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| psql_err(format!("waiting for psql: {e}")))?;
        if !out.status.success() {
            return Err(psql_err(one_line_tail(
                &String::from_utf8_lossy(&out.stderr),
                5,
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn init(&mut self, opts: &LocalServerOptions) -> Result<(), LocalPgError> {
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .args(opts.data_checksums.then_some("--data-checksums"))
            .output()
            .map_err(|source| self.io("running initdb", &self.bin_dir.join("initdb"), source))?;
        check_output("initdb", &out)?;

        // autovacuum off: tests and demos vacuum when they mean to, and a
        // worker's snapshot would otherwise decide at random which pages a
        // VACUUM can mark all-visible.
        let mut conf = format!(
            "\n# gpupg-localpg\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             autovacuum = off\n\
             max_connections = 64\nshared_buffers = '256MB'\n",
            conf_escape(&self.root.to_string_lossy())
        );
        if opts.tls {
            let (cert, key) = self_signed_localhost()?;
            let cert_path = self.data_dir.join("server.crt");
            let key_path = self.data_dir.join("server.key");
            self.write_file(&cert_path, cert.as_bytes(), 0o644)?;
            // PostgreSQL refuses a key file readable by others.
            self.write_file(&key_path, key.as_bytes(), 0o600)?;
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            self.tls_cert = Some(cert_path);
        }
        for (k, v) in &opts.extra_conf {
            conf.push_str(&format!("{k} = '{}'\n", conf_escape(v)));
        }
        self.append_file(&self.data_dir.join("postgresql.conf"), &conf)?;

        if opts.password_auth {
            // pg_hba.conf is read top-down, first match wins.
            let hba = "local all all trust\n\
                       host all postgres 127.0.0.1/32 trust\n\
                       host all gpu_md5 127.0.0.1/32 md5\n\
                       host all all 127.0.0.1/32 scram-sha-256\n";
            let hba_path = self.data_dir.join("pg_hba.conf");
            std::fs::write(&hba_path, hba)
                .map_err(|source| self.io("writing pg_hba.conf", &hba_path, source))?;
        }
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), LocalPgError> {
        let log = self.root.join("server.log");
        let mut last_tail = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = reserve_port(&self.data_dir)?;
            let out = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "120", "-o"])
                .arg(format!("-p {port}"))
                .arg("start")
                .output()
                .map_err(|source| self.io("running pg_ctl start", &self.bin_dir, source))?;
            if out.status.success() {
                self.port = port;
                return Ok(());
            }
            release_port(port);
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            last_tail = one_line_tail(
                &format!("{}\n{log_text}", String::from_utf8_lossy(&out.stderr)),
                8,
            );
            // A postmaster that came up too slowly may still be running.
            self.stop_quietly();
            let clash = log_text.contains("could not bind")
                || log_text.contains("Address already in use")
                || log_text.contains("could not create any TCP/IP sockets");
            if !clash {
                return Err(LocalPgError::Start {
                    data_dir: self.data_dir.clone(),
                    port,
                    log_tail: last_tail,
                });
            }
            // The log is rewritten by the next attempt's pg_ctl.
            let _ = std::fs::remove_file(&log);
        }
        Err(LocalPgError::Start {
            data_dir: self.data_dir.clone(),
            port: 0,
            log_tail: format!("no free port after {START_ATTEMPTS} attempts: {last_tail}"),
        })
    }

    fn stop_quietly(&self) {
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// A command for one of the server programs, run as the server's user
    /// from the server's directory (the caller's working directory may not
    /// be readable by that user).
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(&self.root)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        self.run_as.apply(&mut cmd);
        cmd
    }

    fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> Result<(), LocalPgError> {
        std::fs::write(path, data).map_err(|source| self.io("writing", path, source))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|source| self.io("setting permissions of", path, source))?;
        self.run_as.chown(path)
    }

    fn append_file(&self, path: &Path, text: &str) -> Result<(), LocalPgError> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| self.io("opening", path, source))?;
        f.write_all(text.as_bytes())
            .map_err(|source| self.io("appending to", path, source))
    }

    fn io(&self, what: &'static str, path: &Path, source: std::io::Error) -> LocalPgError {
        LocalPgError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if self.port != 0 {
            self.stop_quietly();
            release_port(self.port);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A fresh private directory for one server, owned by the server's user.
fn make_root_dir(run_as: RunAs) -> Result<PathBuf, LocalPgError> {
    // The server's user must be able to reach the directory; a root-only
    // TMPDIR would not do, so root always uses /tmp.
    let base = match run_as {
        RunAs::Current => std::env::temp_dir(),
        RunAs::User { .. } => PathBuf::from("/tmp"),
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "gpupg-pg-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    );
    let root = base.join(name);
    std::fs::create_dir(&root).map_err(|source| LocalPgError::Io {
        what: "creating the server's temporary directory",
        path: root.clone(),
        source,
    })?;
    let cleanup_on_err = |e: LocalPgError| {
        let _ = std::fs::remove_dir_all(&root);
        e
    };
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
        .map_err(|source| LocalPgError::Io {
            what: "restricting the server's temporary directory",
            path: root.clone(),
            source,
        })
        .map_err(cleanup_on_err)?;
    run_as.chown(&root).map_err(cleanup_on_err)?;
    Ok(root)
}

/// A port that was free a moment ago and that no other server of this
/// process is using.
fn reserve_port(data_dir: &Path) -> Result<u16, LocalPgError> {
    for _ in 0..64 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|source| LocalPgError::Io {
            what: "finding a free TCP port on 127.0.0.1",
            path: data_dir.to_path_buf(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| LocalPgError::Io {
                what: "finding a free TCP port on 127.0.0.1",
                path: data_dir.to_path_buf(),
                source,
            })?
            .port();
        let mut guard = PORTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(LocalPgError::Start {
        data_dir: data_dir.to_path_buf(),
        port: 0,
        log_tail: "the kernel kept handing out ports already used by other servers".to_string(),
    })
}

fn release_port(port: u16) {
    let mut guard = PORTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(set) = guard.as_mut() {
        set.remove(&port);
    }
}

fn check_output(program: &str, out: &Output) -> Result<(), LocalPgError> {
    if out.status.success() {
        return Ok(());
    }
    Err(LocalPgError::Command {
        program: program.to_string(),
        status: out.status.to_string(),
        output: one_line_tail(
            &format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            8,
        ),
    })
}

/// A value inside single quotes in postgresql.conf.
fn conf_escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\'', "''")
}

/// The start of a SQL script, on one line, for error messages.
fn sql_summary(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}...", one.chars().take(120).collect::<String>())
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_are_escaped() {
        assert_eq!(conf_escape("it's"), "it''s");
        assert_eq!(conf_escape("a\\b"), "a\\\\b");
    }

    #[test]
    fn sql_summary_is_one_short_line() {
        assert_eq!(sql_summary("SELECT 1;\n  SELECT 2;"), "SELECT 1; SELECT 2;");
        assert!(sql_summary(&"x ".repeat(200)).ends_with("..."));
    }

    #[test]
    fn reserved_ports_are_distinct_until_released() {
        let dir = PathBuf::from("/nonexistent");
        let a = reserve_port(&dir).unwrap();
        let b = reserve_port(&dir).unwrap();
        assert_ne!(a, b);
        release_port(a);
        release_port(b);
    }
}

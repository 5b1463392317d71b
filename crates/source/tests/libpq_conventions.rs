//! libpq's conventions against real servers: password files, connection
//! services, the default host and connect_timeout. The environment is
//! injected (`ConnectConfig::resolve_in_env`), so these tests run in
//! parallel without touching the process's.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpupg_localpg::{LocalServer, LocalServerOptions, TEST_PASSWORD};
use gpupg_source::{ConnectConfig, Connection, Host, SourceError};

fn password_server() -> LocalServer {
    LocalServer::start_with(LocalServerOptions {
        password_auth: true,
        ..Default::default()
    })
    .unwrap()
}

/// Connects with `dsn` and exactly the variables `env`, nothing of this
/// process's environment.
fn connect_in(dsn: Option<&str>, env: &[(&str, &str)]) -> Result<Connection, SourceError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Connection::connect(&ConnectConfig::resolve_in_env(dsn, &|k| {
        env.get(k).cloned()
    })?)
}

fn one_value(c: &mut Connection, sql: &str) -> Option<String> {
    c.simple_query(sql).unwrap()[0][0].clone()
}

/// Writes `text` to `path` with `mode`.
fn write(path: &Path, text: &str, mode: u32) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn password_from_pgpass_in_home_scram_and_md5() {
    let server = password_server();
    let port = server.port();
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join(".pgpass"),
        &format!(
            "# host:port:db:user:password\n\
             127.0.0.1:{port}:other_db:gpu_pw:wrong\n\
             127.0.0.1:{port}:postgres:gpu_pw:{TEST_PASSWORD}\n\
             *:*:*:gpu_md5:{TEST_PASSWORD}\n"
        ),
        0o600,
    );
    for user in ["gpu_pw", "gpu_md5"] {
        let dsn = format!("host=127.0.0.1 port={port} user={user} dbname=postgres sslmode=disable");
        let mut c = connect_in(Some(&dsn), &[("HOME", s(home.path()))])
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(
            one_value(&mut c, "SELECT current_user").as_deref(),
            Some(user)
        );
        // Without the file there is no password.
        let e = connect_in(Some(&dsn), &[]).unwrap_err().to_string();
        assert!(e.contains("none was given"), "{e}");
    }
}

#[test]
fn pgpassfile_and_passfile_with_escapes() {
    let server = password_server();
    let port = server.port();
    // A password with the characters the file must escape.
    server
        .psql("CREATE ROLE esc LOGIN PASSWORD 'a:b\\c'")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = format!("localhost:*:*:esc:nope\n127.0.0.1:{port}:*:esc:a\\:b\\\\c\n");
    let bad = "*:*:*:esc:wrong\n";
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    write(&home.join(".pgpass"), bad, 0o600);
    let good_file = write(&dir.path().join("my pass"), &good, 0o600);
    let bad_file = write(&dir.path().join("bad"), bad, 0o400);
    let dsn = format!("host=127.0.0.1 port={port} user=esc dbname=postgres sslmode=disable");

    // PGPASSFILE beats ~/.pgpass.
    let env = [("HOME", s(&home)), ("PGPASSFILE", s(&good_file))];
    let mut c = connect_in(Some(&dsn), &env).unwrap();
    assert_eq!(
        one_value(&mut c, "SELECT current_user").as_deref(),
        Some("esc")
    );
    // passfile beats PGPASSFILE.
    let with_keyword = format!("{dsn} passfile='{}'", s(&good_file));
    let env = [("HOME", s(&home)), ("PGPASSFILE", s(&bad_file))];
    connect_in(Some(&with_keyword), &env).unwrap();

    // A password the file gave and the server rejected: libpq's hint.
    let e = connect_in(Some(&dsn), &[("PGPASSFILE", s(&bad_file))]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SourceError::Auth { .. }), "{msg}");
    assert!(
        msg.contains("28P01")
            && msg.contains(&format!(
                "password retrieved from file \"{}\"",
                s(&bad_file)
            )),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "shows the password: {msg}");
    // A given password is used as it is, the file not at all.
    let e = connect_in(
        Some(&format!("{dsn} password=wrong")),
        &[("PGPASSFILE", s(&good_file))],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("28P01") && !e.contains("retrieved from file"),
        "{e}"
    );
}

#[test]
fn group_readable_pgpass_is_ignored_with_libpq_warning() {
    let server = password_server();
    let port = server.port();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(".pgpass");
    let dsn = format!("host=127.0.0.1 port={port} user=gpu_pw dbname=postgres sslmode=disable");
    for mode in [0o640, 0o604] {
        write(&file, &format!("*:*:*:*:{TEST_PASSWORD}\n"), mode);
        let e = connect_in(Some(&dsn), &[("HOME", s(home.path()))]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, SourceError::Auth { .. }), "{msg}");
        assert!(
            msg.contains(&format!(
                "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                file.display()
            )),
            "{msg}"
        );
        assert!(!msg.contains(TEST_PASSWORD), "shows the password: {msg}");
    }
    // The same file, private, works.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    connect_in(Some(&dsn), &[("HOME", s(home.path()))]).unwrap();
}

#[test]
fn service_files() {
    let server = password_server();
    let port = server.port();
    let dir = tempfile::tempdir().unwrap();
    let user_file = write(
        &dir.path().join("services"),
        &format!(
            "# mine\n[other]\nhost=nowhere.invalid\n\n[gp]\nhost=127.0.0.1\nport={port}\nuser=gpu_pw\n\
             dbname=postgres\nsslmode=disable\npassword={TEST_PASSWORD}\n"
        ),
        0o644,
    );
    let sysconf = dir.path().join("etc");
    std::fs::create_dir(&sysconf).unwrap();
    write(
        &sysconf.join("pg_service.conf"),
        &format!("[sys]\nhost=127.0.0.1\nport={port}\nuser=postgres\ndbname=template1\n"),
        0o644,
    );
    let files = [
        ("PGSERVICEFILE", s(&user_file)),
        ("PGSYSCONFDIR", s(&sysconf)),
    ];

    // service= names it; PGPORT does not override the service's port.
    let mut env = files.to_vec();
    env.push(("PGPORT", "1"));
    let mut c = connect_in(Some("service=gp"), &env).unwrap();
    assert_eq!(
        one_value(&mut c, "SELECT current_user").as_deref(),
        Some("gpu_pw")
    );
    // PGSERVICE names it; an explicit key beats the service's.
    let mut env = files.to_vec();
    env.push(("PGSERVICE", "gp"));
    let mut c = connect_in(Some("dbname=template1"), &env).unwrap();
    assert_eq!(
        one_value(&mut c, "SELECT current_database()").as_deref(),
        Some("template1")
    );
    let mut c = connect_in(None, &env).unwrap();
    assert_eq!(
        one_value(&mut c, "SELECT current_database()").as_deref(),
        Some("postgres")
    );
    // A service only the system file has; ~/.pg_service.conf is the user
    // file when PGSERVICEFILE is not set.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    write(
        &home.join(".pg_service.conf"),
        "[gp]\nhost=nowhere.invalid\n",
        0o644,
    );
    let env = [("HOME", s(&home)), ("PGSYSCONFDIR", s(&sysconf))];
    let mut c = connect_in(Some("service=sys"), &env).unwrap();
    assert_eq!(
        one_value(&mut c, "SELECT current_user").as_deref(),
        Some("postgres")
    );

    // An unknown service names itself and the files looked in.
    let e = connect_in(Some("service=nope"), &files).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SourceError::Service { .. }), "{msg}");
    assert!(
        msg.starts_with("service \"nope\": no [nope] section in ")
            && msg.contains(s(&user_file))
            && msg.contains(&sysconf.join("pg_service.conf").display().to_string()),
        "{msg}"
    );
}

/// A trusted server whose only socket directory is /tmp.
fn tmp_socket_server() -> LocalServer {
    LocalServer::start_with(LocalServerOptions {
        extra_conf: vec![("unix_socket_directories".into(), "/tmp".into())],
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn default_host_is_the_socket_in_tmp_and_pgpass_calls_it_localhost() {
    let server = tmp_socket_server();
    let port = server.port();
    let dsn = format!("port={port} user=postgres dbname=postgres");
    let cfg = ConnectConfig::resolve_in_env(Some(&dsn), &|_| None).unwrap();
    assert_eq!(cfg.host, Host::Unix("/tmp".into()));
    let mut c = connect_in(Some(&dsn), &[]).unwrap();
    assert_eq!(one_value(&mut c, "SELECT inet_server_addr()::text"), None);
    // A lone hostaddr means TCP to it, as in libpq, not the socket.
    let mut tcp = connect_in(Some(&format!("hostaddr=127.0.0.1 {dsn}")), &[]).unwrap();
    assert_eq!(
        one_value(&mut tcp, "SELECT host(inet_server_addr())").as_deref(),
        Some("127.0.0.1")
    );

    // Socket connections of other roles now need a password.
    c.execute("CREATE ROLE sock LOGIN PASSWORD 'sock pw'")
        .unwrap();
    let hba = "local all postgres trust\nlocal all all scram-sha-256\n";
    std::fs::write(server.data_dir().join("pg_hba.conf"), hba).unwrap();
    c.execute("SELECT pg_reload_conf()").unwrap();
    let dsn = format!("port={port} user=sock dbname=postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    while connect_in(Some(&dsn), &[]).is_ok() {
        assert!(Instant::now() < deadline, "pg_hba.conf not reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let home = tempfile::tempdir().unwrap();
    write(
        &home.path().join(".pgpass"),
        &format!("127.0.0.1:{port}:*:sock:wrong\nlocalhost:{port}:*:sock:sock pw\n"),
        0o600,
    );
    let mut c = connect_in(Some(&dsn), &[("HOME", s(home.path()))]).unwrap();
    assert_eq!(
        one_value(&mut c, "SELECT current_user").as_deref(),
        Some("sock")
    );
}

/// Asserts that connecting with `dsn` fails after about 2 s with an error
/// that says it timed out and where.
fn assert_times_out(dsn: &str, env: &[(&str, &str)], endpoint: &str) {
    let start = Instant::now();
    let e = connect_in(Some(dsn), env).unwrap_err();
    let took = start.elapsed();
    let msg = e.to_string();
    assert!(matches!(e, SourceError::ConnectTimeout { .. }), "{msg}");
    assert!(
        msg.contains("timed out after 2 s") && msg.contains(endpoint),
        "{msg}"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "{took:?}: {msg}"
    );
}

#[test]
fn connect_timeout_that_expires_says_so() {
    // The kernel completes the handshakes of a listener that never accepts;
    // nothing ever answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    for sslmode in ["prefer", "disable"] {
        assert_times_out(
            &format!("host=127.0.0.1 port={port} user=x sslmode={sslmode} connect_timeout=2"),
            &[],
            &endpoint,
        );
    }
    // PGCONNECT_TIMEOUT, and 1 s is raised to 2 as libpq does.
    assert_times_out(
        &format!("host=127.0.0.1 port={port} user=x"),
        &[("PGCONNECT_TIMEOUT", "1")],
        &endpoint,
    );
    // A Unix socket nobody answers on.
    let dir = tempfile::tempdir().unwrap();
    let _unix = std::os::unix::net::UnixListener::bind(dir.path().join(".s.PGSQL.5999")).unwrap();
    assert_times_out(
        &format!("host={} port=5999 user=x connect_timeout=2", s(dir.path())),
        &[],
        ".s.PGSQL.5999",
    );
}

#[test]
fn connect_timeout_while_the_tcp_handshake_hangs() {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Listening again shrinks the accept queue to one connection; once it
    // is full the kernel drops further handshakes, so a connect hangs.
    // SAFETY: listen(2) on a socket this test owns, no memory involved.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        queued.push(s);
        assert!(queued.len() < 20, "the accept queue never fills");
    }
    let dsn = format!("host=127.0.0.1 port={port} user=x connect_timeout=2");
    let e = connect_in(Some(&dsn), &[]).unwrap_err().to_string();
    assert!(e.contains("while opening the connection"), "{e}");
    assert_times_out(&dsn, &[], &format!("127.0.0.1:{port}"));
}

#[test]
fn connect_timeout_while_a_unix_socket_queue_is_full() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".s.PGSQL.5998");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // A queue of length zero is full with one connection waiting.
    // SAFETY: listen(2) on a socket this test owns, no memory involved.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let _queued = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let dsn = format!("host={} port=5998 user=x connect_timeout=2", s(dir.path()));
    // Without the timeout the connect would wait for room forever.
    let (tx, rx) = std::sync::mpsc::channel();
    let attempt = dsn.clone();
    std::thread::spawn(move || tx.send(connect_in(Some(&attempt), &[]).map(|_| ())));
    let e = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("connect returns")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("timed out after 2 s") && e.contains("while opening the connection"),
        "{e}"
    );
    assert_times_out(&dsn, &[], ".s.PGSQL.5998");
}

#[test]
fn connect_timeout_leaves_a_normal_session_alone() {
    let server = password_server();
    // Authentication and startup finish well within the limit, and the
    // session outlives it.
    let mut c = connect_in(
        Some(&format!(
            "host=127.0.0.1 port={} user=gpu_pw password='{TEST_PASSWORD}' dbname=postgres connect_timeout=2",
            server.port()
        )),
        &[],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(one_value(&mut c, "SELECT 1").as_deref(), Some("1"));
}

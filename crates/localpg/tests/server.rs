//! Starting real servers: plain, with password auth and TLS, many at once.

use gpupg_localpg::{LocalServer, LocalServerOptions};

#[test]
fn starts_answers_psql_and_cleans_up() {
    let server = LocalServer::start().unwrap();
    assert!(server.dsn().contains(&format!("port={}", server.port())));
    assert_eq!(server.psql("SELECT 40 + 2;").unwrap().trim(), "42");
    // The requested settings are in force.
    assert_eq!(server.psql("SHOW max_connections").unwrap().trim(), "64");
    assert_eq!(server.psql("SHOW fsync").unwrap().trim(), "off");
    let data_dir = server.data_dir().to_path_buf();
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(server);
    assert!(
        !data_dir.exists(),
        "data dir left behind: {}",
        data_dir.display()
    );
}

#[test]
fn psql_error_names_the_statement() {
    let server = LocalServer::start().unwrap();
    let err = server
        .psql("SELECT * FROM no_such_table")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_table"), "{err}");
    assert!(err.contains(&server.port().to_string()), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn password_roles_and_tls() {
    let server = LocalServer::start_with(LocalServerOptions {
        password_auth: true,
        tls: true,
        extra_conf: vec![("work_mem".into(), "8MB".into())],
        data_checksums: true,
    })
    .unwrap();
    let roles = server
        .psql("SELECT rolname, left(rolpassword, 6) FROM pg_authid WHERE rolname LIKE 'gpu%' ORDER BY 1")
        .unwrap();
    assert!(
        roles.lines().next().unwrap().starts_with("gpu_md5|md5"),
        "{roles}"
    );
    assert!(
        roles.lines().nth(1).unwrap().starts_with("gpu_pw|SCRAM-"),
        "{roles}"
    );
    assert_eq!(server.psql("SHOW ssl").unwrap().trim(), "on");
    assert_eq!(server.psql("SHOW work_mem").unwrap().trim(), "8MB");
    assert_eq!(server.psql("SHOW data_checksums").unwrap().trim(), "on");
    let cert = std::fs::read_to_string(server.tls_root_cert().unwrap()).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn many_servers_in_parallel() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| LocalServer::start().map(|s| (s.port(), s))))
        .collect();
    let servers: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    let mut ports: Vec<u16> = servers.iter().map(|(p, _)| *p).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for (_, s) in &servers {
        assert_eq!(s.psql("SELECT 1").unwrap().trim(), "1");
    }
}

//! Connecting: authentication methods, TLS modes, sockets and the errors a
//! user sees when something is wrong.

mod common;

use common::{connect, connect_dsn};
use gpupg_localpg::{LocalServer, LocalServerOptions, TEST_PASSWORD};
use gpupg_source::{ConnectConfig, Connection, SourceError};

fn try_connect(dsn: &str) -> Result<Connection, SourceError> {
    Connection::connect(&ConnectConfig::resolve(Some(dsn))?)
}

fn secure_server() -> LocalServer {
    LocalServer::start_with(LocalServerOptions {
        password_auth: true,
        tls: true,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn trust_queries_and_describe() {
    let server = LocalServer::start().unwrap();
    let mut c = connect(&server);
    assert!(
        c.server_version_num() >= 100000,
        "{}",
        c.server_version_num()
    );
    let expected: u32 = server
        .psql("SHOW server_version_num")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(c.server_version_num(), expected);
    assert!(!c.is_tls());
    assert_eq!(c.parameter("integer_datetimes"), Some("on"));
    assert_eq!(c.parameter("client_encoding"), Some("UTF8"));
    let rows = c
        .simple_query("SELECT 1; SELECT 'a b', NULL::text, current_setting('application_name'), current_setting('extra_float_digits')")
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Some("a b".to_string()),
            None,
            Some("gpupgparser".to_string()),
            Some("3".to_string())
        ]]
    );
    c.execute("CREATE TABLE t (id int8 NOT NULL, name varchar(20))")
        .unwrap();
    let d = c
        .describe("SELECT id, name, 1.5::numeric(10,2) AS n FROM t")
        .unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!((d[0].0.as_str(), d[0].1, d[0].4), ("id", 20, 1));
    assert_eq!((d[1].0.as_str(), d[1].1, d[1].2), ("name", 1043, 24));
    assert_eq!(d[2].1, 1700);
    assert_ne!(d[0].3, 0, "table oid of a plain column");
    // A server error leaves the session usable and names the statement.
    let e = c.simple_query("SELECT * FROM nope").unwrap_err();
    assert_eq!(e.sqlstate(), Some("42P01"));
    let msg = e.to_string();
    assert!(
        msg.contains("SELECT * FROM nope") && msg.contains(&server.port().to_string()),
        "{msg}"
    );
    let e = c.describe("SELECT nope FROM t").unwrap_err();
    assert_eq!(e.sqlstate(), Some("42703"));
    assert_eq!(
        c.simple_query("SELECT 2").unwrap(),
        vec![vec![Some("2".to_string())]]
    );
}

#[test]
fn unix_socket() {
    let server = LocalServer::start().unwrap();
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres",
        server.socket_dir().display(),
        server.port()
    );
    let mut c = connect_dsn(&dsn);
    assert!(c
        .endpoint()
        .ends_with(&format!(".s.PGSQL.{}", server.port())));
    assert_eq!(
        c.simple_query("SELECT 3").unwrap(),
        vec![vec![Some("3".to_string())]]
    );
}

#[test]
fn scram_md5_and_tls_modes() {
    let server = secure_server();
    let port = server.port();
    let cert = server.tls_root_cert().unwrap().display().to_string();
    let pw = TEST_PASSWORD.replace('\'', "\\'");

    for (user, sslmode) in [
        ("gpu_pw", "disable"),
        ("gpu_md5", "disable"),
        ("gpu_pw", "require"),
    ] {
        let mut c = connect_dsn(&format!(
            "host=127.0.0.1 port={port} user={user} password='{pw}' dbname=postgres sslmode={sslmode}"
        ));
        let rows = c.simple_query("SELECT current_user").unwrap();
        assert_eq!(rows[0][0].as_deref(), Some(user));
        assert_eq!(c.is_tls(), sslmode == "require");
    }
    // The server really used TLS for the session.
    let mut c = connect_dsn(&format!("{} sslmode=require", server.dsn()));
    let rows = c
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("t"));
    // URL form with percent-encoded password.
    let mut c = connect_dsn(&format!(
        "postgresql://gpu_pw:secret%20pw@127.0.0.1:{port}/postgres?sslmode=prefer"
    ));
    assert!(c.is_tls(), "prefer uses TLS when offered");
    c.execute("SELECT 1").unwrap();

    // verify-full against the generated root, by name and by IP.
    for host in ["localhost", "127.0.0.1"] {
        let c = connect_dsn(&format!(
            "host={host} port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{cert}'"
        ));
        assert!(c.is_tls());
    }
    // verify-ca checks the chain only.
    let c = connect_dsn(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-ca sslrootcert='{cert}'"
    ));
    assert!(c.is_tls());
    // verify-full with system roots rejects the self-signed certificate.
    let e = try_connect(&format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full"
    ))
    .unwrap_err();
    assert!(matches!(e, SourceError::Tls { .. }), "{e}");
    assert!(e.to_string().contains(&format!("localhost:{port}")), "{e}");
}

#[test]
fn auth_failures_are_clear() {
    let server = secure_server();
    let port = server.port();
    let e = try_connect(&format!(
        "host=127.0.0.1 port={port} user=gpu_pw password=wrong dbname=postgres sslmode=disable"
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SourceError::Auth { .. }), "{msg}");
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(
        msg.contains("gpu_pw") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "error shows the password: {msg}");

    let e = try_connect(&format!(
        "host=127.0.0.1 port={port} user=gpu_md5 password=wrong dbname=postgres sslmode=disable"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("28P01"), "{e}");

    let e = try_connect(&format!(
        "host=127.0.0.1 port={port} user=gpu_pw dbname=postgres"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("none was given"), "{e}");
}

#[test]
fn tls_required_but_not_offered() {
    let server = LocalServer::start().unwrap();
    let e = try_connect(&format!("{} sslmode=require", server.dsn())).unwrap_err();
    assert!(matches!(e, SourceError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("does not accept TLS"), "{e}");
    // prefer falls back to plaintext.
    let c = connect_dsn(&format!("{} sslmode=prefer", server.dsn()));
    assert!(!c.is_tls());
}

#[test]
fn refused_connection_names_host_and_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = try_connect(&format!(
        "host=127.0.0.1 port={port} user=x sslmode=disable"
    ))
    .unwrap_err();
    assert!(matches!(e, SourceError::Connect { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

#[test]
fn bad_dsn_and_missing_database() {
    let e = try_connect("host=127.0.0.1 prot=5432").unwrap_err();
    assert!(matches!(e, SourceError::Dsn(_)), "{e}");
    assert!(e.to_string().contains("prot"), "{e}");

    let server = LocalServer::start().unwrap();
    let e = try_connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=no_such_db",
        server.port()
    ))
    .unwrap_err();
    assert_eq!(e.sqlstate(), Some("3D000"), "{e}");
    assert!(e.to_string().contains("no_such_db"), "{e}");
}

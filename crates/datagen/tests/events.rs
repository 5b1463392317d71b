//! The events table has the shape the benchmark promises: the row count,
//! a note in every fifth row, notes stored out of line in TOAST, a jsonb
//! document of a few hundred bytes, 0-5 tags, and lz4 where the server has it.

use gpupg_localpg::LocalServer;
use gpupg_source::{ConnectConfig, Connection};

fn one(conn: &mut Connection, sql: &str) -> String {
    conn.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

#[test]
fn events_has_its_shape() {
    let server = LocalServer::start().expect("server");
    let config = ConnectConfig::resolve(Some(&server.dsn())).expect("dsn");
    let lz4 = gpupg_datagen::create_events(&config, "events", 3000, 2).expect("events");
    let mut conn = Connection::connect(&config).expect("connect");
    assert_eq!(one(&mut conn, "SELECT count(*) FROM events"), "3000");
    assert_eq!(
        one(&mut conn, "SELECT min(id) || ',' || max(id) FROM events"),
        "1,3000"
    );
    assert_eq!(
        one(&mut conn, "SELECT count(note) FROM events"),
        "600",
        "a note in a fifth of the rows"
    );
    assert_eq!(
        one(
            &mut conn,
            "SELECT min(length(note)) >= 300 AND max(length(note)) <= 3000 \
             AND max(length(note)) > 2500 FROM events"
        ),
        "t"
    );
    let toast_pages: u64 = one(
        &mut conn,
        "SELECT pg_relation_size(reltoastrelid) / 8192 FROM pg_class WHERE oid = 'events'::regclass",
    )
    .parse()
    .expect("number");
    assert!(toast_pages > 0, "some notes are stored out of line");
    assert_eq!(
        one(
            &mut conn,
            "SELECT min(octet_length(payload::text)) >= 200 AND avg(octet_length(payload::text)) < 600 \
             AND bool_and(jsonb_typeof(payload) = 'object') FROM events"
        ),
        "t",
        "a jsonb document of a few hundred bytes"
    );
    assert_eq!(
        one(
            &mut conn,
            "SELECT min(coalesce(array_length(tags, 1), 0)) || ',' || max(array_length(tags, 1)) FROM events"
        ),
        "0,5"
    );
    assert_eq!(
        one(
            &mut conn,
            "SELECT min(length(kind)) || ',' || max(length(kind)) FROM events"
        ),
        "10,30"
    );
    let compressed = one(
        &mut conn,
        "SELECT string_agg(DISTINCT pg_column_compression(summary), ',') FROM events",
    );
    let want = if lz4 { "lz4" } else { "pglz" };
    assert_eq!(compressed, want, "long summaries are compressed inline");
    // The same rows whatever the connections that generate them.
    gpupg_datagen::create_events(&config, "events_again", 3000, 3).expect("events again");
    let digest = |conn: &mut Connection, t: &str| {
        one(
            conn,
            &format!("SELECT md5(string_agg(e::text, '|' ORDER BY id)) FROM {t} e"),
        )
    };
    assert_eq!(
        digest(&mut conn, "events"),
        digest(&mut conn, "events_again")
    );
}

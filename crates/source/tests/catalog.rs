//! Resolving tables and columns against a real catalog.

mod common;

use common::{connect, copy_rows};
use gpupg_format::PgType;
use gpupg_localpg::LocalServer;
use gpupg_source::{
    copy_sql, copy_sql_blocks, query_columns, resolve_table, table_columns, BufferPool, PageRange,
    ReadSpec, SourceError, UnsupportedTypes,
};

#[test]
fn quoted_schema_and_table_names() {
    let server = LocalServer::start().unwrap();
    server
        .psql(
            r#"CREATE SCHEMA "My Schema";
               CREATE TABLE "My Schema"."we""ird tab" ("Col 1" int NOT NULL, "x""y" text);
               INSERT INTO "My Schema"."we""ird tab" VALUES (1, 'a'), (2, NULL);"#,
        )
        .unwrap();
    let mut c = connect(&server);
    let t = resolve_table(&mut c, r#""My Schema"."we""ird tab""#).unwrap();
    assert_eq!(t.schema, "My Schema");
    assert_eq!(t.name, "we\"ird tab");
    assert_eq!(t.relkind, 'r');
    assert_eq!(t.block_size, 8192);
    assert_eq!(t.relpages, 1);
    assert_eq!(t.bytes, 8192);
    assert_eq!(t.qualified(), r#""My Schema"."we""ird tab""#);
    // The qualified name resolves to the same table.
    assert_eq!(resolve_table(&mut c, &t.qualified()).unwrap().oid, t.oid);

    let cols = table_columns(&mut c, &t, None, UnsupportedTypes::Error).unwrap();
    assert_eq!(cols.len(), 2);
    assert_eq!(cols[0].desc.name, "Col 1");
    assert!(!cols[0].desc.nullable);
    assert_eq!(cols[1].select_expr, r#""x""y""#);
    let spec = ReadSpec {
        relation: t.qualified(),
        columns: cols.iter().map(|c| c.select_expr.clone()).collect(),
        filter: Some(r#""Col 1" > 1"#.to_string()),
    };
    let pool = BufferPool::new(2, 1 << 16);
    let (rows, _) = copy_rows(
        &mut c,
        &copy_sql(
            &spec,
            Some(PageRange {
                start: 0,
                end: None,
            }),
        ),
        &pool,
    )
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        common::fields(&rows[0]),
        vec![Some(2i32.to_be_bytes().to_vec()), None]
    );
}

/// A list of scattered blocks reads exactly the rows of those blocks, with
/// a TID Scan (not a sequential scan of the table).
#[test]
fn block_lists_read_exactly_their_blocks() {
    let server = LocalServer::start().unwrap();
    server
        .psql(
            "CREATE TABLE t (a int, b text);
             INSERT INTO t SELECT g, repeat('x', g % 50) FROM generate_series(1, 20000) g;
             DELETE FROM t WHERE a % 7 = 0;",
        )
        .unwrap();
    let mut c = connect(&server);
    let t = resolve_table(&mut c, "t").unwrap();
    let cols = table_columns(&mut c, &t, None, UnsupportedTypes::Error).unwrap();
    let spec = ReadSpec {
        relation: t.qualified(),
        columns: cols.iter().map(|c| c.select_expr.clone()).collect(),
        filter: None,
    };
    let pool = BufferPool::new(2, 1 << 16);
    // Out of order, a repeat, and a block past the end.
    let blocks = [40u64, 3, 17, 3, 1_000_000];
    let (listed, _) = copy_rows(&mut c, &copy_sql_blocks(&spec, &blocks, 291), &pool).unwrap();
    let mut expected = Vec::new();
    for b in [3u64, 17, 40] {
        let range = PageRange {
            start: b,
            end: Some(b + 1),
        };
        expected.extend(
            copy_rows(&mut c, &copy_sql(&spec, Some(range)), &pool)
                .unwrap()
                .0,
        );
    }
    let sorted = |mut rows: Vec<Vec<u8>>| {
        rows.sort();
        rows
    };
    assert!(expected.len() > 100, "{} rows", expected.len());
    assert_eq!(sorted(listed), sorted(expected));
    let select = copy_sql_blocks(&spec, &[1, 2], 291);
    let select = select
        .strip_prefix("COPY (")
        .and_then(|s| s.strip_suffix(") TO STDOUT (FORMAT binary)"))
        .unwrap();
    let plan = server.psql(&format!("EXPLAIN {select}")).unwrap();
    assert!(plan.contains("Tid Scan"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

#[test]
fn missing_tables_and_columns() {
    let server = LocalServer::start().unwrap();
    server
        .psql("CREATE TABLE t (a int, b int); ALTER TABLE t DROP COLUMN a;")
        .unwrap();
    let mut c = connect(&server);
    let e = resolve_table(&mut c, "public.nope").unwrap_err();
    assert!(matches!(e, SourceError::NoSuchTable { .. }), "{e}");
    assert!(e.to_string().contains("public.nope"), "{e}");
    // An injection attempt is only ever a name.
    let r = resolve_table(&mut c, "t'); DROP TABLE t; --");
    assert!(r.is_err());
    let t = resolve_table(&mut c, "t").unwrap();
    // The dropped column is skipped.
    let cols = table_columns(&mut c, &t, None, UnsupportedTypes::Error).unwrap();
    assert_eq!(
        cols.iter()
            .map(|c| c.desc.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    let e = table_columns(
        &mut c,
        &t,
        Some(&["b".into(), "a".into()]),
        UnsupportedTypes::Error,
    )
    .unwrap_err();
    assert!(matches!(e, SourceError::NoSuchColumn { .. }), "{e}");
    assert!(
        e.to_string().contains("\"a\"") && e.to_string().contains("\"public\".\"t\""),
        "{e}"
    );
}

#[test]
fn type_resolution() {
    let server = LocalServer::start().unwrap();
    server
        .psql(
            "CREATE TYPE mood AS ENUM ('sad', 'ok');
             CREATE DOMAIN money2 AS numeric(12,2);
             CREATE DOMAIN money3 AS money2 CHECK (VALUE > 0);
             CREATE DOMAIN ints AS int4[];
             CREATE TABLE t (
               id int8, m mood, ms mood[], d money3, da money2[], n numeric(10,3)[],
               i ints, v varchar(5), tz timestamptz, p point, pa point[], j jsonb);",
        )
        .unwrap();
    let mut c = connect(&server);
    let t = resolve_table(&mut c, "t").unwrap();
    let e = table_columns(&mut c, &t, None, UnsupportedTypes::Error).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SourceError::UnsupportedType { .. }), "{msg}");
    assert!(
        msg.contains("\"p\"") && msg.contains("point") && msg.contains("text"),
        "{msg}"
    );

    let cols = table_columns(&mut c, &t, None, UnsupportedTypes::CastToText).unwrap();
    let types: Vec<PgType> = cols.iter().map(|c| c.desc.pg_type.clone()).collect();
    let num = |p, s| {
        PgType::Numeric(Some(gpupg_format::types::NumericTypmod {
            precision: p,
            scale: s,
        }))
    };
    assert_eq!(
        types,
        vec![
            PgType::Int8,
            PgType::Enum,
            PgType::Array(Box::new(PgType::Enum)),
            num(12, 2),
            PgType::Array(Box::new(num(12, 2))),
            PgType::Array(Box::new(num(10, 3))),
            PgType::Array(Box::new(PgType::Int4)),
            PgType::Text,
            PgType::Timestamptz,
            PgType::Text,
            PgType::Text,
            PgType::Jsonb,
        ]
    );
    assert_eq!(cols[3].desc.type_name, "money3");
    assert_eq!(cols[9].select_expr, "\"p\"::text");
    assert_eq!(cols[9].desc.type_name, "point");
    // Only some columns, in the given order.
    let cols = table_columns(
        &mut c,
        &t,
        Some(&["v".into(), "id".into()]),
        UnsupportedTypes::Error,
    )
    .unwrap();
    assert_eq!(
        cols.iter()
            .map(|c| c.desc.name.as_str())
            .collect::<Vec<_>>(),
        ["v", "id"]
    );

    let q = query_columns(
        &mut c,
        "SELECT id AS x, m, 1::int2 AS s, p FROM t",
        UnsupportedTypes::CastToText,
    )
    .unwrap();
    assert_eq!(
        q.iter().map(|c| c.desc.pg_type.clone()).collect::<Vec<_>>(),
        vec![PgType::Int8, PgType::Enum, PgType::Int2, PgType::Text]
    );
    assert!(q.iter().all(|c| c.desc.nullable));
    assert_eq!(q[3].desc.type_name, "point");
}

#[test]
fn partitioned_table_lists_leaves() {
    let server = LocalServer::start().unwrap();
    server
        .psql(
            "CREATE TABLE p (id int) PARTITION BY RANGE (id);
             CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
             CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (id);
             CREATE TABLE p2a PARTITION OF p2 FOR VALUES FROM (100) TO (150);
             CREATE TABLE p2b PARTITION OF p2 FOR VALUES FROM (150) TO (200);
             INSERT INTO p SELECT generate_series(0, 199);
             CREATE VIEW v AS SELECT * FROM p;",
        )
        .unwrap();
    let mut c = connect(&server);
    let t = resolve_table(&mut c, "p").unwrap();
    assert_eq!(t.relkind, 'p');
    let mut names: Vec<&str> = t.partitions.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["p1", "p2a", "p2b"]);
    assert!(t.partitions.iter().all(|p| p.relpages == 1));
    assert_eq!(t.bytes, 3 * 8192);
    let v = resolve_table(&mut c, "v").unwrap();
    assert_eq!(v.relkind, 'v');
    assert!(!v.has_ctid());
}

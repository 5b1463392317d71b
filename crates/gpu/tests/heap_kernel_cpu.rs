//! The heap page kernels (kernels/heap.cu) compiled as C++ and run on the
//! CPU, one thread per block (tests/cpu_twin/harness.cpp), against the CPU
//! converter `transcode_page`: on every page the kernels do not flag, the
//! rows must be byte for byte the converter's; clean pages of the common
//! forms must not be flagged; pages with values the kernels leave to the
//! CPU must be. Needs a C++ compiler (`c++`, or `$CXX`).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::compressed::{compressed_pages, compressed_table};
use common::pages::{check_against_cpu, layouts, mutate, pages};
use gpupg_format::heap::{set_page_checksum, Align, AttributeDesc, TupleLayout};
use gpupg_format::{CopyChunk, PgType};
use gpupg_gpu::decode::heap::slot_bases;
use gpupg_gpu::PageLayout;

fn harness() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gpupg-heap-twin-{}", std::process::id()));
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
    // enum values: flagged for the TOAST pointers and enum values (the
    // kernels decompress the text values; the sample pages with those have
    // a TOAST pointer or an unknown enum value too); the CPU refuses the
    // pages with TOAST pointers and unknown enum values.
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
    let server = gpupg_localpg::LocalServer::start().expect("start PostgreSQL");
    let psql = |sql: &str| server.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let lz4 = psql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    )
    .trim()
        == "t";
    psql(&format!(
        "CREATE TABLE ev (id int, note text, summary text{}, kind text);
         INSERT INTO ev SELECT g,
           CASE WHEN g % 5 = 0 THEN repeat('note ' || g || ' ' || md5(g::text) || '; ', 8 + g % 70)
                WHEN g % 97 = 0 THEN (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 400) x)
           END,
           CASE WHEN g % 10 = 3 THEN repeat('status ' || g % 7 || ' ok; ', 150 + g % 150)
                ELSE 'status ' || g % 7 END,
           'event.' || g % 5
         FROM generate_series(1, 4000) g;
         CHECKPOINT;",
        if lz4 { " COMPRESSION lz4" } else { "" }
    ));
    let inline = |col: &str, method: &str| -> u64 {
        psql(&format!(
            "SELECT count(*) FROM ev WHERE pg_column_compression({col}) = '{method}' \
             AND pg_column_size({col}) < 2000"
        ))
        .trim()
        .parse()
        .expect("a count")
    };
    let pglz_notes = inline("note", "pglz");
    let lz4_summaries = inline("summary", "lz4");
    eprintln!("inline compressed: {pglz_notes} pglz notes, {lz4_summaries} lz4 summaries (server lz4: {lz4})");
    assert!(pglz_notes > 100);
    assert!(!lz4 || lz4_summaries > 100);
    let rel = psql("SELECT pg_relation_filepath('ev')");
    let data = std::fs::read(server.data_dir().join(rel.trim())).expect("the table's file");
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

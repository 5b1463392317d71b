//! Throughput of the heap → binary COPY converter on lineorder-like pages
//! (SSB lineorder: 14 int4 columns, char(15), char(1), char(10), as in
//! `gpupg_datagen::lineorder_ddl`), built with the test page builder.
//!
//! `cargo run --release -p gpupg-format --example heap_speed [MB] [runs]
//! [distinct pages] [variant]` (default 200 MB of heap, best of 5 runs,
//! 4096 distinct pages (32 MiB, more than the caches hold) repeated, one
//! thread). Variants: `all` (every column in attnum order, as a plain
//! export: the default), `nulls` (a NULL in one row of three), `subset`
//! (6 of the 17 columns), `reversed` (every column, last first).

use std::collections::HashMap;
use std::time::Instant;

use gpupg_format::heap::build::{heap_fill_tuple, varlena_4b, FillAttr, PageBuilder};
use gpupg_format::heap::{transcode_page, Align, AttributeDesc, TupleLayout};
use gpupg_format::{CopyChunk, PgType};

/// Column `k` of the table: `None` for int4, else the bpchar length.
const COLUMNS: [Option<usize>; 17] = [
    None,
    None,
    None,
    None,
    None,
    None,
    Some(15),
    Some(1),
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    Some(10),
];

const PRIORITIES: [&str; 5] = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
const MODES: [&str; 7] = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];

/// The datagen's per-column pseudo-random numbers.
fn h(g: u64, k: u64) -> u64 {
    (g * (2_654_435_761 + 2 * k)) % 2_147_483_647
}

fn bpchar(s: &str, n: usize) -> Vec<u8> {
    varlena_4b(format!("{s:<n$}").as_bytes())
}

/// On-disk datums of lineorder row `g`, like `lineorder_insert` makes.
fn row(g: u64) -> Vec<Vec<u8>> {
    let d = h(g, 4);
    let r = h(g, 8);
    let q = h(g, 6);
    let e = h(g, 7);
    let date = |x: u64| (19920101 + (x % 7) * 10000 + (x % 12) * 100 + x % 28) as i32;
    let ints = [
        (g / 4 + 1) as i32,
        (g % 7 + 1) as i32,
        (h(g, 1) % 30000 + 1) as i32,
        (h(g, 2) % 200000 + 1) as i32,
        (h(g, 3) % 2000 + 1) as i32,
        date(d),
        (q % 50 + 1) as i32,
        (e % 10_000_000 + 90000) as i32,
        (e % 40_000_000) as i32,
        (q % 11) as i32,
        (r % 10_000_000) as i32,
        (e % 100_000) as i32,
        (q % 9) as i32,
        date(r),
    ];
    let mut ints = ints.iter().map(|v| v.to_le_bytes().to_vec());
    COLUMNS
        .iter()
        .enumerate()
        .map(|(k, c)| match (k, c) {
            (_, None) => ints.next().unwrap(),
            (6, Some(n)) => bpchar(PRIORITIES[(h(g, 5) % 5) as usize], *n),
            (7, Some(n)) => bpchar("0", *n),
            (_, Some(n)) => bpchar(MODES[(h(g, 9) % 7) as usize], *n),
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);

    let attributes: Vec<AttributeDesc> = COLUMNS
        .iter()
        .map(|c| match c {
            None => AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
            Some(_) => AttributeDesc::column(PgType::Text, -1, Align::Int, false),
        })
        .collect();
    let fill: Vec<FillAttr> = attributes
        .iter()
        .map(|a| FillAttr::new(a.attlen, a.align))
        .collect();
    let variant = args.get(4).map_or("all", String::as_str);
    let output: Vec<usize> = match variant {
        "all" | "nulls" => (0..COLUMNS.len()).collect(),
        "subset" => vec![0, 3, 6, 9, 12, 16],
        "reversed" => (0..COLUMNS.len()).rev().collect(),
        v => panic!("unknown variant {v}: all, nulls, subset or reversed"),
    };
    let layout = TupleLayout::new(attributes, output, HashMap::new()).unwrap();

    // Build distinct pages, then repeat them up to the size.
    let distinct: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let distinct = distinct.min(mb * 1_000_000 / 8192).max(1);
    let mut pages: Vec<Vec<u8>> = Vec::with_capacity(distinct);
    let mut b = PageBuilder::new(8192, 0);
    let mut g = 0u64;
    while pages.len() < distinct {
        let datums = row(g);
        g += 1;
        let mut vals: Vec<Option<&[u8]>> = datums.iter().map(|d| Some(&d[..])).collect();
        if variant == "nulls" && g.is_multiple_of(3) {
            vals[(g % 17) as usize] = None;
        }
        let t = heap_fill_tuple(&fill, &vals);
        if b.add_tuple(&t).is_none() {
            b.set_flags(gpupg_format::heap::page::PD_ALL_VISIBLE);
            let blk = pages.len() as u32 + 1;
            pages.push(std::mem::replace(&mut b, PageBuilder::new(8192, blk)).finish());
            b.add_tuple(&t).unwrap();
        }
    }
    let npages = (mb * 1_000_000 / 8192).max(1);
    let heap_bytes = (npages * 8192) as f64;

    // Chunks of about 64 MiB of rows, as the heap source makes them.
    let mut chunk = CopyChunk::default();
    let mut best = f64::INFINITY;
    let mut rows = 0usize;
    let mut out_bytes = 0usize;
    for _ in 0..runs {
        rows = 0;
        out_bytes = 0;
        let start = Instant::now();
        for i in 0..npages {
            if chunk.data.len() > 64 << 20 {
                out_bytes += chunk.data.len();
                chunk.data.clear();
                chunk.row_starts.clear();
                chunk.row_ends.clear();
            }
            let s = transcode_page(&pages[i % distinct], i as u32, &layout, &mut chunk).unwrap();
            rows += s.rows;
        }
        out_bytes += chunk.data.len();
        chunk.data.clear();
        chunk.row_starts.clear();
        chunk.row_ends.clear();
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{variant}: {npages} pages ({:.0} MB of heap, {distinct} distinct), {rows} rows, \
         best of {runs}: {:.3} s",
        heap_bytes / 1e6,
        best
    );
    println!(
        "{:.2} GB/s of heap per core, {:.1} M rows/s, {:.2} GB/s of COPY rows",
        heap_bytes / best / 1e9,
        rows as f64 / best / 1e6,
        out_bytes as f64 / best / 1e9
    );
}

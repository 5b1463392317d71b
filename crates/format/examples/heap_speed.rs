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

use gpupg_format::heap::sample::{lineorder_attributes, lineorder_pages};
use gpupg_format::heap::{transcode_page, TupleLayout};
use gpupg_format::CopyChunk;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);

    let attributes = lineorder_attributes();
    let variant = args.get(4).map_or("all", String::as_str);
    let output: Vec<usize> = match variant {
        "all" | "nulls" => (0..attributes.len()).collect(),
        "subset" => vec![0, 3, 6, 9, 12, 16],
        "reversed" => (0..attributes.len()).rev().collect(),
        v => panic!("unknown variant {v}: all, nulls, subset or reversed"),
    };
    let layout = TupleLayout::new(attributes, output, HashMap::new()).unwrap();

    // Build distinct pages, then repeat them up to the size.
    let distinct: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let distinct = distinct.min(mb * 1_000_000 / 8192).max(1);
    let pages = lineorder_pages(distinct, variant == "nulls");
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

//! Heap pages to Arrow columns on one core, both CPU ways: the heap
//! converter's binary COPY rows (`transcode_page`) decoded by the COPY
//! decoder, against `CpuDecoder::decode_pages`, which reads the values in
//! the pages. Lineorder-like pages (`gpupg_format::heap::sample`), 16 MiB
//! batches as the heap readers send them.
//!
//! `cargo run --release -p gpupg-decode --example heap_decode_speed [MB] [runs] [nulls|-] [both|rows|direct]`
//! (default 400 MB of heap, best of 3 runs).
//!
//! With mimalloc, as the `gpupgparser` binary runs (its fresh column
//! buffers per batch cost page faults and zeroing with glibc's allocator).
//! Measured here (2-core development VM shared with other builds, one
//! thread, 386 MB, 2026-11-24), best of 3 in GB/s of heap:
//!
//! | allocator | rows then decode | pages decoded directly |
//! | --- | --- | --- |
//! | glibc | 0.47-0.49 | 0.53-0.55 |
//! | mimalloc | 0.67-0.74 | 0.85-1.04 |

use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use gpupg_decode::{CpuDecoder, Decoder, OutputSchema, TypeOptions};
use gpupg_format::heap::sample::{lineorder_attributes, lineorder_pages, output_columns};
use gpupg_format::heap::{transcode_page, TupleLayout};
use gpupg_format::CopyChunk;

const BATCH_PAGES: usize = 2048;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(400);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let nulls = args.get(3).is_some_and(|s| s == "nulls");
    // `direct` or `rows` runs one way only (for profiles).
    let only = args.get(4).map_or("both", String::as_str);

    let attributes = lineorder_attributes();
    let layout = TupleLayout::all_columns(attributes, Default::default()).expect("layout");
    let cols = output_columns(&layout);
    let schema = Arc::new(OutputSchema::new(&cols, &TypeOptions::default()).expect("schema"));

    // One batch of distinct pages, decoded again and again up to the size.
    let batch: Vec<u8> = lineorder_pages(BATCH_PAGES, nulls).concat();
    let pages: Vec<u32> = (0..BATCH_PAGES as u32).collect();
    let batches = (mb * 1_000_000 / (BATCH_PAGES * 8192)).max(1);
    let heap_bytes = (batches * BATCH_PAGES * 8192) as f64;

    let mut decoder = CpuDecoder::new(schema);
    let mut rows_path = f64::INFINITY;
    let mut direct = f64::INFINITY;
    let mut rows = 0;
    let mut chunk = CopyChunk::default();
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..batches * usize::from(only != "direct") {
            chunk.data.clear();
            chunk.row_starts.clear();
            chunk.row_ends.clear();
            for &p in &pages {
                let page = &batch[p as usize * 8192..(p as usize + 1) * 8192];
                transcode_page(page, p, &layout, &mut chunk).expect("converts");
            }
            rows = decoder.decode(&chunk).expect("decodes").num_rows();
        }
        rows_path = rows_path.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        for _ in 0..batches * usize::from(only != "rows") {
            let got = decoder
                .decode_pages(&batch, &pages, &pages, &layout)
                .expect("decodes");
            assert!(got.flagged.is_empty());
        }
        direct = direct.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{batches} batches of {BATCH_PAGES} pages ({rows} rows each, {:.0} MB of heap), best of {runs}",
        heap_bytes / 1e6
    );
    println!(
        "rows then decode: {:.3} s, {:.2} GB/s of heap",
        rows_path,
        heap_bytes / rows_path / 1e9
    );
    println!(
        "pages decoded directly: {:.3} s, {:.2} GB/s of heap ({:.1}x)",
        direct,
        heap_bytes / direct / 1e9,
        rows_path / direct
    );
}

//! The heap page kernels' pglz and LZ4 decompression on the device
//! (kernels/inflate.cuh): pages of compressed text (tests/common/compressed.rs)
//! converted byte for byte as the CPU converter does, decoded into the CPU
//! decoder's columns, damaged pages flagged or exact, and the throughput
//! of such pages into device columns. Run on a GPU machine by
//! gpu/run-tests.sh; prints `RESULT <name> <value>` lines.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::compressed::{compressed_pages, compressed_table};
use common::pages::{check_against_cpu, cpu_rows, mutate};
use gpupg_decode::{CpuDecoder, Decoder, OutputSchema, TypeOptions};
use gpupg_format::heap::sample::output_columns;
use gpupg_gpu::{GpuDecoder, PageLayout, PagesIn};

fn result(name: &str, value: impl std::fmt::Display) {
    println!("RESULT {name} {value}");
}

#[test]
#[ignore = "needs a GPU"]
fn compressed_pages_on_the_device() {
    let layout = compressed_table();
    let schema = Arc::new(
        OutputSchema::new(&output_columns(&layout), &TypeOptions::default()).expect("schema"),
    );
    let mut g = GpuDecoder::new(0, schema.clone()).expect("GPU decoder");
    let mut cpu = CpuDecoder::new(schema);
    let gl = PageLayout::new(&layout).expect("GPU layout");

    // Rows: only the pages with a TOAST pointer or a compressed numeric
    // are flagged; the others are the CPU converter's bytes.
    let data = compressed_pages(3, 200, true);
    let all: Vec<u32> = (0..200).collect();
    let (rows, flagged) = g
        .convert_pages_to_host(PagesIn::Host(&data), &all, &all, &gl)
        .expect("convert");
    check_against_cpu(&data, &all, &layout, &rows, &flagged);
    let special: Vec<u32> = (0..200).filter(|p| p % 4 >= 2).collect();
    assert_eq!(flagged, special, "flagged pages");

    // Columns, from device memory, against the CPU decoder.
    let (want_rows, _) = cpu_rows(&data, &all, &layout, &special);
    let want = cpu.decode(&want_rows).expect("CPU decode");
    let dev = g
        .decode_pages_to_device(PagesIn::Host(&data), &all, &all, &gl)
        .expect("device");
    assert_eq!(dev.flagged, special);
    let back = dev.batch.expect("rows").to_host().expect("to_host");
    assert!(back == want, "columns differ from the CPU decoder's");

    // Damaged pages: flagged, or exactly the CPU's rows.
    for seed in 0..20u64 {
        let mut m = compressed_pages(100 + seed, 8, true);
        mutate(&mut m, seed, 1 + seed as usize % 5);
        let all: Vec<u32> = (0..8).collect();
        let (rows, flagged) = g
            .convert_pages_to_host(PagesIn::Host(&m), &all, &all, &gl)
            .expect("convert");
        check_against_cpu(&m, &all, &layout, &rows, &flagged);
    }
    result(
        "heap_pages_compressed_exact",
        "ok (200 pages of pglz and lz4 text, 20 x 8 damaged)",
    );

    // Throughput: 16 MiB batches (the heap path's default chunk) of
    // compressed pages, none flagged, from page-locked memory into device
    // columns.
    let data = compressed_pages(5, 2048, false);
    // SAFETY: `data` outlives the registration.
    let reg = unsafe { gpupg_gpu::HostRegistration::new(&data) }.expect("register");
    let all: Vec<u32> = (0..2048).collect();
    let first = g
        .decode_pages_to_device(PagesIn::Host(&data), &all, &all, &gl)
        .expect("warm-up");
    assert!(first.flagged.is_empty());
    let before = g.gpu_stats();
    let rounds = 16;
    let t = Instant::now();
    for _ in 0..rounds {
        g.decode_pages_to_device(PagesIn::Host(&data), &all, &all, &gl)
            .expect("decode");
    }
    let wall = t.elapsed().as_secs_f64();
    let s = g.gpu_stats();
    let bytes = (rounds * data.len()) as f64;
    result(
        "heap_pages_compressed_to_device",
        format!(
            "{:.1} GB/s of compressed-text pages wall, one thread ({:.1} GB/s page kernels)",
            bytes / wall / 1e9,
            bytes / (s.page_convert_s - before.page_convert_s) / 1e9
        ),
    );
    drop(reg);
}

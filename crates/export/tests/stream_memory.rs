//! A stream's memory does not grow with the table: the peak resident memory
//! of streaming a table of over 200 MB of COPY data is about that of one a
//! quarter its size (the logic of `examples/stream_rss.rs`, in-process).

mod common;

use common::*;
use gpupg_export::{stream, ExportRequest, NoProgress, Output, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

/// VmHWM of /proc/self/status, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

/// Streams `table`, dropping each batch; returns its COPY bytes and the
/// peak resident memory while streaming.
fn stream_peak(dsn: &str, table: &str) -> (u64, u64) {
    // "5" resets the peak to the current resident memory.
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let req = ExportRequest {
        source: Source::Copy,
        chunk_bytes: 1 << 20,
        ..request(dsn, common::table(table), Output::Host, Format::Arrow)
    };
    let mut s = stream(req, NoProgress).expect("stream");
    for b in &mut s {
        drop(b.expect("batch"));
    }
    let report = s.finish().expect("report");
    (report.copy_bytes, peak_rss())
}

#[test]
fn streaming_memory_stays_flat_as_the_table_grows() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let cfg = config(&dsn);
    gpupg_datagen::create_lineorder(&cfg, "small", 350_000, 4).expect("small");
    gpupg_datagen::create_lineorder(&cfg, "large", 1_400_000, 4).expect("large");
    // Once first, so the allocator's and the decoder's steady state is in
    // both measurements.
    stream_peak(&dsn, "small");
    let (small_bytes, small_peak) = stream_peak(&dsn, "small");
    let (large_bytes, large_peak) = stream_peak(&dsn, "large");
    println!(
        "RESULT stream peak RSS: {:.1} MB for {:.1} MB of COPY data, {:.1} MB for {:.1} MB",
        small_peak as f64 / 1e6,
        small_bytes as f64 / 1e6,
        large_peak as f64 / 1e6,
        large_bytes as f64 / 1e6
    );
    assert!(
        large_bytes >= 200_000_000,
        "{large_bytes} bytes of COPY data"
    );
    assert!(large_bytes >= 3 * small_bytes);
    // 4 connections, 3 decoders, 1 MiB chunks: well under 64 MB in flight,
    // against the 150 MB and more the larger table adds.
    assert!(
        large_peak < small_peak + (64 << 20),
        "peak RSS grew from {small_peak} to {large_peak} bytes with the table"
    );
}

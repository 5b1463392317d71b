//! Streams a table through `gpupg_export::stream` and prints its rows,
//! COPY bytes and this process's peak resident memory (VmHWM): memory
//! stays bounded by the parallelism and the chunk size, not the table.
//!
//! ```text
//! cargo run --release -p gpupg-export --example stream_rss -- 'host=/tmp dbname=postgres' lineorder
//! ```

use std::error::Error;

use gpupg_export::{stream, ExportRequest, NoProgress, Output, Target};
use gpupg_source::ConnectConfig;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dsn), Some(table)) = (args.next(), args.next()) else {
        return Err("usage: stream_rss DSN TABLE".into());
    };
    let req = ExportRequest::new(
        ConnectConfig::resolve(Some(&dsn))?,
        Target::Table(table),
        Output::Host,
    );
    let mut batches = stream(req, NoProgress)?;
    let mut rows = 0usize;
    for batch in &mut batches {
        rows += batch?.num_rows();
    }
    let report = batches.finish()?;
    println!(
        "{rows} rows, {:.1} MB of COPY data, peak resident memory {:.1} MB",
        report.copy_bytes as f64 / 1e6,
        peak_rss_bytes().unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}

/// VmHWM of /proc/self/status: the most resident memory this process had.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

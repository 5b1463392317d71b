use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

/// Where the time went. `metadata`, `copy_receive` and `finish` are
/// wall-clock seconds; `decode` and `write` are summed over the decoder
/// threads (they run in parallel with receiving, so they overlap it).
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    /// Connecting, snapshot, catalog, opening outputs.
    pub metadata: f64,
    /// From the first COPY statement to the end of the last one.
    pub copy_receive: f64,
    /// Binary COPY -> Arrow, thread-seconds.
    pub decode: f64,
    /// Encoding and writing the output, thread-seconds.
    pub write: f64,
    /// Part of `write` spent encoding (Parquet), thread-seconds.
    pub encode_in_write: f64,
    /// Footers and renames after the last row.
    pub finish: f64,
    /// Time the connections waited for a free decoder (back-pressure),
    /// thread-seconds: large when decoding or writing is the bottleneck.
    pub reader_wait: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    pub path: PathBuf,
    pub bytes: u64,
}

/// The result of one export: what `--report` writes as JSON and what the
/// summary prints.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub target: String,
    pub rows: u64,
    /// Protocol bytes received from the server.
    pub bytes_received: u64,
    /// Bytes of binary COPY rows (what the decoders read).
    pub copy_bytes: u64,
    /// Wall-clock seconds of the whole export.
    pub seconds: f64,
    /// "cpu" or "gpu".
    pub engine: String,
    /// "copy" (later also "heap").
    pub source: String,
    pub connections: usize,
    pub workers: usize,
    /// COPY statements (page ranges) the table was split into.
    pub statements: usize,
    /// Why the export ran on one connection, when it did.
    pub serial_reason: Option<String>,
    /// Multi-dimensional array values flattened (see `--arrays`).
    pub flattened_arrays: u64,
    pub phases: Phases,
    pub files: Vec<OutputFile>,
}

impl ExportReport {
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }

    pub fn copy_gb_per_second(&self) -> f64 {
        self.bytes_received as f64 / 1e9 / self.seconds.max(1e-9)
    }

    /// The human summary printed at the end of an export.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let out_bytes: u64 = self.files.iter().map(|f| f.bytes).sum();
        let _ = writeln!(
            s,
            "exported {} rows of {} in {:.2} s ({:.0} rows/s, {:.2} GB/s of COPY data)",
            self.rows,
            self.target,
            self.seconds,
            self.rows_per_second(),
            self.copy_gb_per_second()
        );
        let _ = writeln!(
            s,
            "engine: {}, source: {} over {} connection(s) ({} range(s)), {} decoder thread(s)",
            self.engine, self.source, self.connections, self.statements, self.workers
        );
        if let Some(why) = &self.serial_reason {
            let _ = writeln!(s, "serial: {why}");
        }
        let p = &self.phases;
        let w = self.workers.max(1) as f64;
        let _ = writeln!(s, "  metadata        {:8.3} s", p.metadata);
        let _ = writeln!(s, "  COPY receive    {:8.3} s", p.copy_receive);
        let _ = writeln!(
            s,
            "  decode          {:8.3} s  ({:.3} s per thread, overlapped)",
            p.decode,
            p.decode / w
        );
        let _ = writeln!(
            s,
            "  write           {:8.3} s  ({:.3} s per thread, overlapped)",
            p.write,
            p.write / w
        );
        let _ = writeln!(s, "  finish          {:8.3} s", p.finish);
        let _ = writeln!(s, "  total           {:8.3} s", self.seconds);
        let _ = write!(
            s,
            "received {:.1} MB, wrote {:.1} MB in {} file(s)",
            self.bytes_received as f64 / 1e6,
            out_bytes as f64 / 1e6,
            self.files.len()
        );
        if self.flattened_arrays > 0 {
            let _ = write!(
                s,
                "\nwarning: {} multi-dimensional array value(s) were flattened; --arrays struct keeps their dimensions",
                self.flattened_arrays
            );
        }
        s
    }
}

use std::fmt::Write as _;
use std::path::PathBuf;

use gpupg_gpu::GpuStats;
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
    /// Making the chunk buffers (allocation, and page-locking them for the
    /// GPU engine), thread-seconds.
    pub buffer_setup: f64,
    /// CPU seconds the decoder threads used inside `decode` (on the GPU
    /// engine, what is left of `decode` is waiting for the device).
    pub decode_cpu: f64,
    /// The GPU engine's stages, summed over the decoder threads (part of
    /// `decode`); absent on the CPU engine.
    pub gpu: Option<GpuPhases>,
    /// The same per GPU (`--devices`): each GPU's stage throughput is its
    /// `h2d_bytes` over its device time.
    pub gpu_devices: Vec<GpuPhases>,
}

/// The GPU decode broken down like the original tool's timing: staging into
/// pinned memory, host-to-device copy, parse (framing kernel), decode
/// kernels, device-to-host copy with Arrow assembly, CPU fallback columns.
#[derive(Debug, Clone, Serialize)]
pub struct GpuPhases {
    /// The GPU (in a sum over several GPUs: the last one's).
    pub device: usize,
    /// Host time staging chunks into pinned memory.
    pub stage: f64,
    /// Copies to the device.
    pub h2d: f64,
    /// Finding rows and fields (framing), device time.
    pub parse: f64,
    /// Heap page kernels (pages to rows), device time.
    pub pages: f64,
    /// Decode kernels, device time.
    pub decode: f64,
    /// Copies back to the host.
    pub d2h: f64,
    /// Host time decoding what the GPU left to the CPU.
    pub cpu_fallback: f64,
    /// Host time in `cuMemAlloc` for device-resident columns.
    pub device_alloc: f64,
    /// Bytes copied to the device.
    pub h2d_bytes: u64,
    /// Bytes copied back to the host.
    pub d2h_bytes: u64,
    /// Sum of each decoder thread's peak: an upper bound of device memory in use.
    pub device_memory_peak: u64,
}

impl From<&GpuStats> for GpuPhases {
    fn from(g: &GpuStats) -> Self {
        GpuPhases {
            device: g.device,
            stage: g.stage_s,
            h2d: g.h2d_s,
            parse: g.frame_s,
            pages: g.page_convert_s,
            decode: g.decode_s,
            d2h: g.d2h_s,
            cpu_fallback: g.cpu_fallback_s,
            device_alloc: g.plain_alloc_s,
            h2d_bytes: g.h2d_bytes,
            d2h_bytes: g.d2h_bytes,
            device_memory_peak: g.peak_device_bytes,
        }
    }
}

/// Columns kept in device memory ([`crate::Output::Device`]).
#[derive(Debug, Clone, Serialize)]
pub struct Resident {
    /// The GPUs holding the columns.
    pub devices: Vec<usize>,
    /// Batches kept.
    pub batches: usize,
    /// Device bytes held by the columns.
    pub bytes: u64,
    /// Device allocations the columns were carved from, and their bytes
    /// (what the device reports in use; at most the last block's rest more
    /// than `bytes`).
    pub allocations: usize,
    /// Bytes of those allocations.
    pub allocated_bytes: u64,
}

/// A file an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// The result of one export: what `--report` writes as JSON and what the
/// summary prints.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The table or query, as messages name it.
    pub target: String,
    /// Rows exported.
    pub rows: u64,
    /// Protocol bytes received from the server.
    pub bytes_received: u64,
    /// Bytes the decoders read: binary COPY rows, and on the heap path with
    /// pages converted on the GPU, those pages (8 kB each).
    pub copy_bytes: u64,
    /// Wall-clock seconds of the whole export.
    pub seconds: f64,
    /// "cpu" or "gpu".
    pub engine: String,
    /// Which device, or why the CPU ran.
    pub engine_detail: String,
    /// Fallbacks worth knowing: GPU failures, columns decoded on the CPU.
    pub engine_notes: Vec<String>,
    /// "copy" or "heap".
    pub source: String,
    /// How the rows were read, or why COPY was used.
    pub source_detail: String,
    /// The heap path's pages and times (`source` "heap").
    pub heap: Option<crate::HeapReport>,
    /// Connections that ran COPY statements.
    pub connections: usize,
    /// Decoder threads.
    pub workers: usize,
    /// COPY statements (page ranges) the table was split into.
    pub statements: usize,
    /// Why the export ran on one connection, when it did.
    pub serial_reason: Option<String>,
    /// Multi-dimensional array values flattened (see `--arrays`).
    pub flattened_arrays: u64,
    /// Where the time went.
    pub phases: Phases,
    /// CPU seconds (user + system) the whole process used during the
    /// export, all threads together.
    pub cpu_seconds: f64,
    /// Full GPU decoder statistics (GPU engine only).
    pub gpu: Option<GpuStats>,
    /// The files written (none for output kept in memory).
    pub files: Vec<OutputFile>,
    /// Device-resident output, when the export kept its columns on a GPU.
    pub resident: Option<Resident>,
}

impl ExportReport {
    /// Rows a second over the whole export.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }

    /// GB per second of COPY data: received from the server, or on the heap
    /// path made from the pages (the same rows in the same format).
    pub fn copy_gb_per_second(&self) -> f64 {
        self.bytes_received.max(self.copy_bytes) as f64 / 1e9 / self.seconds.max(1e-9)
    }

    /// What `copy_bytes` counts, in words.
    pub fn data_kind(&self) -> &'static str {
        match &self.heap {
            Some(h) if h.pages_gpu > 0 => "heap pages and COPY rows",
            _ => "COPY data",
        }
    }

    /// The human summary printed at the end of an export.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let out_bytes: u64 = self.files.iter().map(|f| f.bytes).sum();
        let _ = writeln!(
            s,
            "exported {} rows of {} in {:.2} s ({:.0} rows/s, {:.2} GB/s of {})",
            self.rows,
            self.target,
            self.seconds,
            self.rows_per_second(),
            self.copy_gb_per_second(),
            self.data_kind()
        );
        let _ = writeln!(
            s,
            "engine: {} ({}), source: {} over {} connection(s) ({} range(s)), {} decoder thread(s)",
            self.engine,
            self.engine_detail,
            self.source,
            self.connections,
            self.statements,
            self.workers
        );
        let _ = writeln!(s, "source: {}", self.source_detail);
        if let Some(h) = &self.heap {
            write_heap(&mut s, h);
        }
        for note in &self.engine_notes {
            let _ = writeln!(s, "note: {note}");
        }
        if let Some(why) = &self.serial_reason {
            let _ = writeln!(s, "serial: {why}");
        }
        let p = &self.phases;
        let w = self.workers.max(1) as f64;
        let _ = writeln!(s, "  metadata        {:8.3} s", p.metadata);
        let _ = writeln!(s, "  COPY receive    {:8.3} s", p.copy_receive);
        let _ = writeln!(
            s,
            "  decode          {:8.3} s  ({:.3} s per thread, overlapped; {:.3} s of it on the CPU)",
            p.decode,
            p.decode / w,
            p.decode_cpu
        );
        let _ = writeln!(
            s,
            "  write           {:8.3} s  ({:.3} s per thread, overlapped)",
            p.write,
            p.write / w
        );
        if let Some(g) = &p.gpu {
            let _ = writeln!(
                s,
                "    GPU stages (thread-seconds): staging {:.3}, host->device {:.3} ({:.2} GB), heap pages {:.3}, parse {:.3}, decode {:.3}, device->host {:.3}, CPU fallback {:.3}, cuMemAlloc {:.3}; device memory peak <= {:.0} MB",
                g.stage,
                g.h2d,
                g.h2d_bytes as f64 / 1e9,
                g.pages,
                g.parse,
                g.decode,
                g.d2h,
                g.cpu_fallback,
                g.device_alloc,
                g.device_memory_peak as f64 / 1e6
            );
        }
        if p.gpu_devices.len() > 1 {
            for g in &p.gpu_devices {
                let busy = g.h2d + g.pages + g.parse + g.decode;
                let _ = writeln!(
                    s,
                    "    GPU {}: {:.2} GB host->device, device time {:.3} s (copy {:.3}, pages {:.3}, parse {:.3}, decode {:.3}): {:.1} GB/s",
                    g.device,
                    g.h2d_bytes as f64 / 1e9,
                    busy,
                    g.h2d,
                    g.pages,
                    g.parse,
                    g.decode,
                    g.h2d_bytes as f64 / busy.max(1e-9) / 1e9
                );
            }
        }
        let _ = writeln!(
            s,
            "  buffers         {:8.3} s  (making and page-locking chunk buffers, thread-seconds)",
            p.buffer_setup
        );
        let _ = writeln!(s, "  finish          {:8.3} s", p.finish);
        let _ = writeln!(s, "  total           {:8.3} s", self.seconds);
        let _ = writeln!(
            s,
            "process CPU time {:.2} s ({:.1} cores on average)",
            self.cpu_seconds,
            self.cpu_seconds / self.seconds.max(1e-9)
        );
        let _ = write!(s, "received {:.1} MB, ", self.bytes_received as f64 / 1e6);
        let _ = match &self.resident {
            Some(r) => write!(
                s,
                "kept {:.1} MB on GPU {} in {} batch(es), {} allocation(s) of {:.1} MB",
                r.bytes as f64 / 1e6,
                r.devices
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                r.batches,
                r.allocations,
                r.allocated_bytes as f64 / 1e6
            ),
            None => write!(
                s,
                "wrote {:.1} MB in {} file(s)",
                out_bytes as f64 / 1e6,
                self.files.len()
            ),
        };
        if self.flattened_arrays > 0 {
            let _ = write!(
                s,
                "\nwarning: {} multi-dimensional array value(s) were flattened; arrays written as structs keep their dimensions",
                self.flattened_arrays
            );
        }
        s
    }
}

/// The heap section of [`ExportReport::summary`]: where the pages came
/// from and why, and how the files were proven.
fn write_heap(s: &mut String, h: &crate::HeapReport) {
    let _ = writeln!(
        s,
        "  heap pages: {} direct ({} rows; {} converted on the GPU), {} via COPY{}; {}; thread-seconds: read {:.3}, convert {:.3}, hand-off {:.3}",
        h.pages_direct,
        h.rows_direct,
        h.pages_gpu,
        h.pages_fallback,
        if h.fallback_reasons.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                h.fallback_reasons
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        h.sync,
        h.read_seconds,
        h.convert_seconds,
        h.handoff_seconds
    );
    let _ = writeln!(s, "  heap files: {}", h.files_proof);
}

//! The report of a finished export, assembled from what its threads
//! counted: the summary lines the CLI prints come from its fields.

use std::collections::BTreeMap;
use std::time::Instant;

use gpupg_gpu::GpuStats;

use crate::cputime::process_cpu_seconds;
use crate::decoder::{merge_gpu_stats, EngineChoice};
use crate::plan::ExportPlan;
use crate::report::{ExportReport, GpuPhases, Phases};
use crate::sink::SinkEnd;
use crate::source::heap::HeapCounters;
use crate::source::SourceChoice;
use crate::state::Counts;
use crate::ExportRequest;

/// When the export's phases ended.
pub(crate) struct Clock {
    pub started: Instant,
    pub cpu_at_start: f64,
    pub metadata_seconds: f64,
    pub finish_seconds: f64,
}

/// What the decoder threads leave for the report.
pub(crate) struct DecoderNotes {
    /// Why parts of the export ran on the CPU.
    pub notes: Vec<String>,
    /// Per GPU, its decoder threads' statistics summed.
    pub gpu_stats: BTreeMap<usize, GpuStats>,
}

/// Everything the report is made of.
pub(crate) struct Finished<'a> {
    pub req: &'a ExportRequest<'a>,
    pub plan: ExportPlan,
    pub engine: &'a EngineChoice,
    pub source: &'a SourceChoice,
    pub heap_counters: &'a HeapCounters,
    pub counts: Counts,
    /// Seconds spent making the buffer pool (page-locking included).
    pub buffer_setup: f64,
    pub decoders: DecoderNotes,
    pub connections: usize,
    pub clock: Clock,
}

impl Finished<'_> {
    /// The report, and what the sink kept; `end` is what the sink left.
    pub(crate) fn report<K>(self, end: SinkEnd<K>) -> (ExportReport, K) {
        let Finished {
            req,
            plan,
            engine,
            source,
            heap_counters,
            counts,
            buffer_setup,
            decoders,
            connections,
            clock,
        } = self;
        let primary = req.devices.first().copied().unwrap_or(0);
        let heap_readers = source.heap_readers(req);
        let copy_wall = counts
            .copy_wall
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let gpu_devices = decoders.gpu_stats;
        let gpu = gpu_devices.values().cloned().reduce(|mut a, b| {
            merge_gpu_stats(&mut a, &b);
            a
        });
        let (engine_detail, notes) = engine_summary(engine, gpu.as_ref(), decoders.notes);
        let report = ExportReport {
            target: plan.label,
            rows: counts.rows.into_inner(),
            bytes_received: counts.wire_bytes.into_inner(),
            copy_bytes: counts.copy_bytes.into_inner(),
            seconds: clock.started.elapsed().as_secs_f64(),
            engine: engine.name().into(),
            engine_detail,
            engine_notes: notes,
            source: match source {
                SourceChoice::Heap(_) => "heap".into(),
                SourceChoice::Copy { .. } => "copy".into(),
            },
            source_detail: source_detail(source, req, primary, heap_readers),
            heap: match source {
                SourceChoice::Heap(heap) => Some(heap_counters.report(heap, heap_readers, primary)),
                SourceChoice::Copy { .. } => None,
            },
            connections,
            workers: req.workers,
            statements: plan.statements.len(),
            serial_reason: plan.serial_reason,
            flattened_arrays: counts.flattened.into_inner(),
            phases: Phases {
                metadata: clock.metadata_seconds,
                copy_receive: copy_wall.as_secs_f64(),
                decode: counts.decode.seconds(),
                write: counts.write.seconds(),
                encode_in_write: end.encode_seconds,
                finish: clock.finish_seconds,
                reader_wait: counts.send_wait.seconds(),
                decode_cpu: counts.decode_cpu.seconds(),
                buffer_setup,
                gpu: gpu.as_ref().map(GpuPhases::from),
                gpu_devices: gpu_devices.values().map(GpuPhases::from).collect(),
            },
            cpu_seconds: process_cpu_seconds() - clock.cpu_at_start,
            gpu,
            files: end.files,
            resident: end.resident,
        };
        (report, end.kept)
    }
}

/// The report's `source_detail`: which files and I/O, where the pages are
/// converted, or why COPY.
fn source_detail(
    source: &SourceChoice,
    req: &ExportRequest<'_>,
    primary: usize,
    heap_readers: usize,
) -> String {
    match source {
        SourceChoice::Heap(heap) => format!(
            "heap files of {} via {}, {}; pages that cannot be trusted via COPY{}",
            heap.describe_files(),
            heap.io_description(primary, heap_readers),
            if heap.gpu_pages() {
                format!(
                    "pages converted to rows on {} (pages they leave, on the CPU)",
                    gpu_list(&req.devices)
                )
            } else if heap.cpu_pages() {
                "pages decoded into columns on the CPU".to_string()
            } else {
                "pages converted to rows on the CPU".to_string()
            },
            if req.source == crate::Source::Auto {
                " (source auto: the data directory is readable and the table is over the heap threshold)"
            } else {
                ""
            }
        ),
        SourceChoice::Copy { why: Some(why) } => format!("COPY: {why}"),
        SourceChoice::Copy { why: None } => "COPY".into(),
    }
}

/// The report's `engine_detail`, and its notes with the GPU's fallbacks
/// (chunks after a failure, columns it left to the CPU) added.
fn engine_summary(
    chosen: &EngineChoice,
    gpu: Option<&GpuStats>,
    mut notes: Vec<String>,
) -> (String, Vec<String>) {
    let engine_detail = match chosen {
        EngineChoice::Cpu { why: None } => "CPU decoder".to_string(),
        EngineChoice::Cpu { why: Some(why) } => format!("CPU decoder: {why}"),
        EngineChoice::Gpu { gpus, .. } => EngineChoice::gpus_text(gpus),
    };
    if let Some(g) = gpu {
        if g.gpu_failures > 0 {
            notes.push(format!(
                "{} chunk(s) decoded on the CPU after GPU failures (last: {})",
                g.gpu_failures,
                g.last_gpu_failure.as_deref().unwrap_or("unknown")
            ));
        }
        for c in &g.cpu_columns {
            notes.push(format!(
                "column {} decoded on the CPU: {}",
                c.name, c.reason
            ));
        }
    }
    (engine_detail, notes)
}

/// "GPU 0", "GPUs 0, 1".
fn gpu_list(devices: &[usize]) -> String {
    let ids: Vec<String> = devices.iter().map(usize::to_string).collect();
    format!(
        "GPU{} {}",
        if devices.len() > 1 { "s" } else { "" },
        ids.join(", ")
    )
}

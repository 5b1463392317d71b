//! One export: the source's threads yield [`Work`] (chunks of COPY rows,
//! batches of heap pages) into a bounded channel; decoder threads decode it
//! with a [`BatchDecoder`] into batches of one kind ([`OutBatch`]: host or
//! device) and hand them to a [`BatchSink`]; heap page batches go back to
//! the source ([`Back`]), which owns its fallback. Memory is bounded by the
//! buffer pool and the channels, whatever the table size.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, unbounded};
use gpupg_decode::OutputSchema;

use crate::carry::{carry, CarriedBatch, PageMap};
use crate::cputime::process_cpu_seconds;
use crate::decoder::{choose_engine, engine_before_source, Decoding, OutBatch};
use crate::interrupt::{cancellable, Interrupts};
use crate::plan::ExportPlan;
use crate::report::ExportReport;
use crate::row_name::with_row_named;
use crate::sink::{BatchSink, SinkSetup};
use crate::source::copy::Session;
use crate::source::heap::fallback::Back;
use crate::source::heap::HeapCounters;
use crate::source::{choose_source, SourceChoice, SourceLinks, Work};
use crate::state::{Abort, Counts, Shared};
use crate::summary::{Clock, DecoderNotes, Finished};
use crate::{ExportError, ExportRequest, Progress};

/// What a finished run leaves besides its report.
pub(crate) struct Ran<K> {
    pub report: ExportReport,
    /// What the sink kept.
    pub kept: K,
    /// The pages of each kept batch (sizes filled by the sink).
    pub pages: PageMap,
    /// On a refresh, the rows of the previous load to carry over.
    pub carried: Vec<CarriedBatch>,
    pub schema: SchemaRef,
}

/// Checks the request, then runs it into the sink `make_sink` makes, with
/// its connections cancelled when `req.cancel` or `stop` is set.
pub(crate) fn run<B: OutBatch, S: BatchSink<B>>(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
    stop: Option<&AtomicBool>,
    make_sink: impl FnOnce(&SinkSetup) -> Result<S, ExportError>,
) -> Result<Ran<S::Kept>, ExportError> {
    req.validate()?;
    let cancels = [req.cancel, stop];
    cancellable(cancels, |interrupts| {
        run_checked(req, progress, cancels, interrupts, make_sink)
    })
}

fn run_checked<'a, B: OutBatch, S: BatchSink<B>>(
    req: &'a ExportRequest<'a>,
    progress: &'a dyn Progress,
    cancels: [Option<&'a AtomicBool>; 2],
    interrupts: &Interrupts,
    make_sink: impl FnOnce(&SinkSetup) -> Result<S, ExportError>,
) -> Result<Ran<S::Kept>, ExportError> {
    let started = Instant::now();
    let cpu_at_start = process_cpu_seconds();
    // Before anything is opened: `--engine gpu` without a usable GPU fails
    // here, leaving nothing behind.
    let early = engine_before_source(req, B::DEVICE)
        .then(|| choose_engine(req, B::DEVICE, None))
        .transpose()?;
    // Metadata: the first connection exports the snapshot every other
    // connection imports, so all of them see exactly the same rows.
    let session = Session::begin(req, interrupts)?;
    // With the snapshot held: heap files or COPY (the heap path's
    // checkpoint and fence must come after the snapshot).
    let mut source = choose_source(req, &session.plan, interrupts)?;
    let engine = match early {
        Some(engine) => engine,
        None => choose_engine(req, B::DEVICE, Some(&source))?,
    };
    let mut notes = source.configure(req, &engine)?;
    let schema = output_schema(&session.plan, req)?;
    let mut pages = source.page_map(req, &schema, &mut notes);
    let connections = session.connections(req);
    // The output before the other connections: an existing file is refused
    // without opening them.
    let sink = make_sink(&SinkSetup {
        schema: schema.arrow_schema(),
        stem: file_stem(&session.plan),
        connections,
    })?;
    let (plan, conns) = session.open(req, interrupts)?;
    let metadata_seconds = started.elapsed().as_secs_f64();
    progress.start(plan.estimated_rows);

    let shared = Shared {
        abort: Abort::new(cancels),
        pool: source.buffer_pool(req, &engine, connections),
        counts: Counts::default(),
        progress,
        copy_started: Instant::now(),
    };
    let heap_counters = HeapCounters::default();
    let decoding = Decoding {
        engine: &engine,
        schema: &schema,
        sink: &sink,
        formats: match &source {
            SourceChoice::Heap(heap) => heap.page_formats(),
            SourceChoice::Copy { .. } => Vec::new(),
        },
        notes: Mutex::new(notes),
        gpu_stats: Mutex::new(BTreeMap::new()),
    };
    std::thread::scope(|s| {
        let (work_tx, work_rx) = bounded::<Work>(req.workers);
        let back = unbounded::<Back>();
        let back_tx = back.0.clone();
        let links = SourceLinks {
            work: work_tx,
            statements: unbounded(),
            back,
        };
        let source_threads = source.spawn(s, req, (&plan, conns), links, (&shared, &heap_counters));
        let decoders: Vec<_> = (0..req.workers)
            .map(|thread| {
                let (rx, back, decoding, shared) =
                    (work_rx.clone(), back_tx.clone(), &decoding, &shared);
                s.spawn(move || decoding.run(thread, &rx, &back, shared))
            })
            .collect();
        // Only the decoders hold these now: a sender sees when they are gone.
        drop((back_tx, work_rx));
        match source_threads {
            Ok(threads) => join(threads, "reader", &shared.abort),
            Err(e) => shared.abort.fail(e),
        }
        join(decoders, "decoder", &shared.abort);
    });
    progress.finish();
    // A cancel that came after the last chunk still leaves no output.
    shared.abort.stopped();
    let Shared {
        abort,
        pool,
        counts,
        ..
    } = shared;
    let Decoding {
        notes, gpu_stats, ..
    } = decoding;
    if let Some((e, row)) = abort.into_first() {
        // Dropping the sink removes its temporary files or frees its
        // batches.
        drop(sink);
        return Err(with_row_named(e, row, &req.connect, &plan));
    }

    let finishing = Instant::now();
    let end = sink.finish(&mut pages)?;
    // The rows a refresh keeps, as runs of the previous load's batches.
    let carried = match req.prior {
        Some(prior) => carry(heap_counters.take_kept(), &prior.sizes),
        None => Vec::new(),
    };
    let finished = Finished {
        req,
        plan,
        engine: &engine,
        source: &source,
        heap_counters: &heap_counters,
        counts,
        buffer_setup: pool.setup_seconds(),
        decoders: DecoderNotes {
            notes: notes.into_inner().unwrap_or_else(|p| p.into_inner()),
            gpu_stats: gpu_stats.into_inner().unwrap_or_else(|p| p.into_inner()),
        },
        connections,
        clock: Clock {
            started,
            cpu_at_start,
            metadata_seconds,
            finish_seconds: finishing.elapsed().as_secs_f64(),
        },
    };
    let (report, kept) = finished.report(end);
    Ok(Ran {
        report,
        kept,
        pages,
        carried,
        schema: schema.arrow_schema(),
    })
}

/// Joins `threads`, a panic failing the export.
fn join(
    threads: Vec<std::thread::ScopedJoinHandle<'_, ()>>,
    kind: &'static str,
    abort: &Abort<'_>,
) {
    for t in threads {
        if t.join().is_err() {
            abort.fail(ExportError::ThreadPanicked(kind));
        }
    }
}

fn output_schema(
    plan: &ExportPlan,
    req: &ExportRequest<'_>,
) -> Result<Arc<OutputSchema>, ExportError> {
    let descs: Vec<_> = plan.columns.iter().map(|c| c.desc.clone()).collect();
    Ok(Arc::new(OutputSchema::new(&descs, &req.types)?))
}

/// The stem of `--output-dir` file names: `SCHEMA.TABLE` for a table (two
/// tables of one name in different schemas must not share files), `query`
/// for a query. Characters other than letters, digits, `_` and `-` are
/// written as `%XX` (UTF-8 bytes), `.` and `%` included, so no two tables
/// get one stem and no stem starts with `.`.
fn file_stem(plan: &ExportPlan) -> String {
    match &plan.table {
        Some((table, _)) => format!("{}.{}", escape(&table.schema), escape(&table.name)),
        None => "query".into(),
    }
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
        } else {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn stems() {
        assert_eq!(escape("lineorder"), "lineorder");
        assert_eq!(escape("Mixed Case"), "Mixed%20Case");
        assert_eq!(escape("a.b/c%"), "a%2Eb%2Fc%25");
        assert_eq!(escape("ünï-_"), "ünï-_");
    }
}

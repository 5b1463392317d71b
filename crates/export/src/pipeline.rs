//! One export: the source's threads yield [`Work`] (chunks of COPY rows,
//! batches of heap pages) into a bounded channel; decoder threads decode it
//! with a [`BatchDecoder`] into batches of one kind ([`OutBatch`]: host or
//! device) and hand them to a [`BatchSink`]; heap page batches go back to
//! the source ([`Back`]), which owns its fallback. Memory is bounded by the
//! buffer pool and the channels, whatever the table size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use gpupg_decode::OutputSchema;
use gpupg_gpu::GpuStats;
use gpupg_source::pool::BufferPool;

use crate::carry::{carry, BatchOrigin, CarriedBatch, PageMap};
use crate::cputime::{process_cpu_seconds, thread_cpu_seconds};
use crate::decoder::{
    choose, merge_gpu_stats, new_decoder, BatchDecoder, EngineChoice, OutBatch, PagesToDecode,
};
use crate::interrupt::{cancellable, Interrupts};
use crate::plan::ExportPlan;
use crate::report::ExportReport;
use crate::row_name::{failing_row, value_error_row, with_row_named};
use crate::sink::{BatchSink, SinkSetup};
use crate::source::copy::Session;
use crate::source::heap::fallback::Back;
use crate::source::heap::{HeapCounters, PageBatch, PageFormat};
use crate::source::{choose_source, SourceChoice, SourceLinks, Work};
use crate::state::{Abort, Counts, Shared};
use crate::summary::{Clock, DecoderNotes, Finished};
use crate::{Engine, ExportError, ExportRequest, Progress};

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
    let engine = choose_engine(req, B::DEVICE)?;
    // Metadata: the first connection exports the snapshot every other
    // connection imports, so all of them see exactly the same rows.
    let session = Session::begin(req, interrupts)?;
    // With the snapshot held: heap files or COPY (the heap path's
    // checkpoint and fence must come after the snapshot).
    let mut source = choose_source(req, &session.plan, interrupts)?;
    let mut notes = configure_heap(req, &mut source, &engine)?;
    let schema = output_schema(&session.plan, req)?;
    let mut pages = page_map(req, &mut source, &schema, &mut notes);
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
        pool: buffer_pool(req, &engine, &source, connections),
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
        drop(back_tx);
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

/// The engine: device output has no CPU path, it needs the GPU as
/// `--engine gpu` does.
fn choose_engine(req: &ExportRequest<'_>, device: bool) -> Result<EngineChoice, ExportError> {
    let engine = match (device, req.engine) {
        (true, Engine::Cpu) => {
            return Err(ExportError::Invalid(
                "device-resident output needs the GPU engine, not --engine cpu".into(),
            ))
        }
        (true, _) => Engine::Gpu,
        (false, e) => e,
    };
    choose(engine, &req.devices).map_err(|e| match (device, e) {
        (true, ExportError::Gpu(g)) => {
            ExportError::Invalid(format!("device-resident output needs a usable GPU: {g}"))
        }
        (_, e) => e,
    })
}

/// Who converts trusted heap pages: with the GPU engine the GPU page
/// kernels (whole pages, read by cuFile when `req.heap_io` says and it can,
/// into device buffers for every reader's batch, every batch queued and
/// every decoder's); with the CPU engine the decoders, into columns without
/// binary COPY rows in between. Returns why some pages are not the GPU's.
fn configure_heap(
    req: &ExportRequest<'_>,
    source: &mut SourceChoice,
    engine: &EngineChoice,
) -> Result<Vec<String>, ExportError> {
    let SourceChoice::Heap(heap) = source else {
        return Ok(Vec::new());
    };
    let notes = match engine {
        EngineChoice::Gpu { .. } => heap.use_gpu_pages(),
        EngineChoice::Cpu { .. } => {
            heap.use_cpu_pages();
            Vec::new()
        }
    };
    heap.use_gds(
        req.heap_io,
        (&req.devices, &req.gpu_selection),
        req.parallel + 2 * req.workers,
        req.heap_chunk_bytes,
    )?;
    Ok(notes)
}

fn output_schema(
    plan: &ExportPlan,
    req: &ExportRequest<'_>,
) -> Result<Arc<OutputSchema>, ExportError> {
    let descs: Vec<_> = plan.columns.iter().map(|c| c.desc.clone()).collect();
    Ok(Arc::new(OutputSchema::new(&descs, &req.types)?))
}

/// The page map the export fills; on a refresh the heap source keeps the
/// pages of the previous load that did not change (or `notes` says why
/// not).
fn page_map(
    req: &ExportRequest<'_>,
    source: &mut SourceChoice,
    schema: &OutputSchema,
    notes: &mut Vec<String>,
) -> PageMap {
    let mut map = PageMap {
        schema: Some(schema.arrow_schema()),
        ..PageMap::default()
    };
    if let SourceChoice::Heap(heap) = source {
        map.rels = heap.rel_paths();
        if let Some(why) = req
            .prior
            .and_then(|p| heap.keep_from(p, &schema.arrow_schema()))
        {
            notes.push(why);
        }
    }
    map
}

/// Enough buffers for every connection to fill one while every decoder
/// holds one, plus one in the channel each: memory is bounded by this,
/// whatever the table size. On the heap path each connection may also hold
/// a chunk it packs small COPY results into (`source::heap::pack`).
fn buffer_pool(
    req: &ExportRequest<'_>,
    engine: &EngineChoice,
    source: &SourceChoice,
    connections: usize,
) -> BufferPool {
    let (packing, chunk_bytes) = match source {
        SourceChoice::Heap(_) => (1, req.heap_chunk_bytes),
        SourceChoice::Copy { .. } => (0, req.chunk_bytes),
    };
    let buffers = connections * (1 + packing) + 2 * req.workers;
    match engine {
        // The connections then read straight into page-locked memory, and
        // the GPU copies chunks from it with no staging copy.
        EngineChoice::Gpu { .. } => BufferPool::with_registrar(
            buffers,
            chunk_bytes,
            Box::new(|buf: &[u8]| {
                // SAFETY: the pool never frees or reallocates a buffer it
                // made while it lives (a huge row gets a separate buffer)
                // and drops this registration before its buffers. On an
                // error path a chunk may be dropped instead of returned;
                // its pages then stay registered until the pool drops,
                // which wastes page-locked memory but reads nothing freed.
                let r = unsafe { gpupg_gpu::HostRegistration::new(buf) };
                // Without the registration the decoder stages the chunk.
                r.ok().map(|r| Box::new(r) as Box<dyn std::any::Any + Send>)
            }),
        ),
        EngineChoice::Cpu { .. } => BufferPool::new(buffers, chunk_bytes),
    }
}

/// The decoder threads' side of one export.
struct Decoding<'a, S> {
    engine: &'a EngineChoice,
    schema: &'a Arc<OutputSchema>,
    sink: &'a S,
    /// Per heap relation, how its pages are decoded.
    formats: Vec<PageFormat<'a>>,
    notes: Mutex<Vec<String>>,
    gpu_stats: Mutex<BTreeMap<usize, GpuStats>>,
}

/// A decoded part of a chunk or page batch: the batch, its rows' bytes
/// (COPY or heap), its partition and its pages.
type Part<B> = (B, u64, u32, BatchOrigin);

impl<S> Decoding<'_, S> {
    /// One decoder thread: decodes work until the sources are done. After a
    /// failure it keeps draining, so that readers blocked on the channel or
    /// the pool can finish and see the abort.
    fn run<B: OutBatch>(
        &self,
        thread: usize,
        work: &Receiver<Work>,
        back: &Sender<Back>,
        shared: &Shared<'_>,
    ) where
        S: BatchSink<B>,
    {
        let mut decoder = match new_decoder(self.engine, thread, self.schema, self.sink.arenas()) {
            Ok((d, note)) => {
                if let Some(n) = note {
                    let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
                    if !notes.contains(&n) {
                        notes.push(n);
                    }
                }
                Some(d)
            }
            Err(e) => {
                shared.abort.fail(e);
                None
            }
        };
        for w in work.iter() {
            match decoder.as_deref_mut() {
                Some(d) if !shared.abort.stopped() => self.decode(d, w, back, shared),
                _ => match w {
                    Work::Rows(chunk) => shared.pool.give(chunk.data),
                    Work::Converted { .. } => {}
                    Work::Pages(batch) => drop(Lent::new(batch, back)),
                },
            }
        }
        let Some(d) = decoder else { return };
        shared
            .counts
            .flattened
            .fetch_add(d.stats().flattened_arrays, Ordering::Relaxed);
        if let Some(g) = d.gpu_stats() {
            let mut by_device = self.gpu_stats.lock().unwrap_or_else(|p| p.into_inner());
            match by_device.get_mut(&g.device) {
                Some(t) => merge_gpu_stats(t, &g),
                None => {
                    by_device.insert(g.device, g);
                }
            }
        }
    }

    /// Decodes one piece of work and hands its batches to the sink.
    fn decode<B: OutBatch>(
        &self,
        d: &mut dyn BatchDecoder,
        work: Work,
        back: &Sender<Back>,
        shared: &Shared<'_>,
    ) where
        S: BatchSink<B>,
    {
        let (abort, counts) = (&shared.abort, &shared.counts);
        let (t, cpu) = (Instant::now(), thread_cpu_seconds());
        let mut parts: Vec<Part<B>> = Vec::with_capacity(1);
        let mut bad_row = None;
        let result = match work {
            Work::Rows(chunk) => {
                let r = B::decode_rows(d, &chunk);
                // The row's bytes go back to the pool next.
                bad_row = r
                    .as_ref()
                    .err()
                    .and_then(value_error_row)
                    .and_then(|row| failing_row(&chunk, row));
                let (bytes, partition) = (chunk.row_bytes(), chunk.partition);
                shared.pool.give(chunk.data);
                r.map(|b| parts.push((b, bytes, partition, BatchOrigin::Untracked)))
            }
            Work::Converted { chunk, origin } => B::decode_rows(d, &chunk)
                .map(|b| parts.push((b, chunk.row_bytes(), chunk.partition, origin))),
            Work::Pages(batch) => self.decode_pages(d, Lent::new(batch, back), &mut parts),
        };
        counts.decode.add(t.elapsed());
        counts.decode_cpu.add_seconds(thread_cpu_seconds() - cpu);
        if let Err(e) = result {
            abort.fail_in_row(e, bad_row);
            return;
        }
        let t = Instant::now();
        for (batch, bytes, partition, origin) in parts {
            let n = batch.num_rows() as u64;
            if let Err(e) = self.sink.write(batch, partition, origin) {
                abort.fail(e);
                break;
            }
            counts.rows.fetch_add(n, Ordering::Relaxed);
            counts.copy_bytes.fetch_add(bytes, Ordering::Relaxed);
            shared.progress.advance(n, bytes);
        }
        counts.write.add(t.elapsed());
    }

    /// Decodes a batch of trusted heap pages (the GPU page kernels, or the
    /// CPU page decoder); the batch goes back to the source with the pages
    /// the decoder flagged, which the source converts or reads again.
    fn decode_pages<B: OutBatch>(
        &self,
        d: &mut dyn BatchDecoder,
        mut lent: Lent<'_>,
        parts: &mut Vec<Part<B>>,
    ) -> Result<(), ExportError> {
        let Some(batch) = lent.batch.as_ref() else {
            return Err(ExportError::Internal("a page batch lent twice".into()));
        };
        let Some(format) = self.formats.get(batch.rel) else {
            return Err(ExportError::Internal("heap pages of no relation".into()));
        };
        let pages = PagesToDecode {
            input: batch.input(),
            pages: &batch.pages,
            blocks: &batch.blocks,
            layout: format.layout,
            gpu_layout: format.gpu_layout,
        };
        let (decoded, flagged) = B::decode_pages(d, &pages)?;
        if let Some(b) = decoded {
            let rows = b.num_rows();
            let heap_bytes =
                ((batch.pages.len() - flagged.len()) * format.layout.block_size()) as u64;
            let origin = BatchOrigin::of(batch.rel, batch.pages_except(&flagged), rows);
            parts.push((b, heap_bytes, batch.partition, origin));
            lent.decoded_rows = rows as u64;
        }
        lent.flagged = flagged;
        Ok(())
    }
}

/// A page batch a decoder holds; it goes back to the source when dropped,
/// whichever way the decoding ended (with no flagged pages unless set).
struct Lent<'a> {
    batch: Option<PageBatch>,
    flagged: Vec<u32>,
    decoded_rows: u64,
    back: &'a Sender<Back>,
}

impl<'a> Lent<'a> {
    fn new(batch: PageBatch, back: &'a Sender<Back>) -> Lent<'a> {
        Lent {
            batch: Some(batch),
            flagged: Vec::new(),
            decoded_rows: 0,
            back,
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        // The source's side ends only after every batch came back, so it
        // is still there.
        let _ = self.back.send(Back::Pages {
            batch,
            flagged: std::mem::take(&mut self.flagged),
            decoded_rows: self.decoded_rows,
        });
    }
}

/// The stem of `--output-dir` file names: `SCHEMA.TABLE` for a table (two
/// tables of one name in different schemas must not share files), `query`
/// for a query. Characters other than letters, digits, `_` and `-` are
/// written as `%XX` (UTF-8 bytes), `.` and `%` included, so no two tables
/// get one stem and no stem starts with `.`.
fn file_stem(plan: &crate::plan::ExportPlan) -> String {
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

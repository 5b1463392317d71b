use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, unbounded};
use gpupg_decode::OutputSchema;
use gpupg_format::CopyChunk;
use gpupg_gpu::{DeviceArena, DeviceBatch};
use gpupg_sink::{create_dir_sinks, create_file_sink, remove_other_parts, Sink};
use gpupg_source::{pool::BufferPool, SourceError};

use crate::carry::{carry, BatchOrigin, BatchSize, CarriedBatch, PageMap, PageRows};
use crate::connections::Session;
use crate::cputime::{process_cpu_seconds, thread_cpu_seconds};
use crate::engine::{choose, merge_gpu_stats, Chosen, Decoded, ThreadDecoder};
use crate::heap_source::{
    choose_source, run_reader, Chosen as HeapChosen, HeapCounters, StatementFeed, Work,
};
use crate::interrupt::{cancellable, Interrupts};
use crate::pack::ChunkPacker;
use crate::report::{ExportReport, GpuPhases, Phases, Resident};
use crate::row_name::{failing_row, value_error_row, with_row_named, RowFields};
use crate::{Engine, ExportError, ExportRequest, Output, Progress};

/// The first error of any thread wins; the others stop as soon as they see it.
struct Abort<'a> {
    flag: AtomicBool,
    /// The error, and for an error about a value the fields of its row
    /// (to name the row once the export has stopped).
    first: Mutex<Option<(ExportError, Option<RowFields>)>>,
    user_cancel: Option<&'a AtomicBool>,
}

impl Abort<'_> {
    fn fail(&self, e: ExportError) {
        self.fail_in_row(e, None);
    }

    fn fail_in_row(&self, e: ExportError, row: Option<RowFields>) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some((e, row));
        }
        self.flag.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        if self.user_cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            self.fail(ExportError::Cancelled);
        }
        self.flag.load(Ordering::Relaxed)
    }
}

/// Time spent by the threads of one kind, summed.
#[derive(Default)]
struct Busy {
    nanos: std::sync::atomic::AtomicU64,
}

impl Busy {
    fn add(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    fn add_seconds(&self, s: f64) {
        self.nanos
            .fetch_add((s.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
    fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Where the decoded batches go.
enum Destination {
    Files(Vec<Box<dyn Sink>>),
    /// Kept on the devices, in the order they were decoded, with their
    /// pages, carved from each GPU's arena (few large allocations, each
    /// within `req.device_limit`).
    Device(
        Mutex<Vec<(DeviceBatch, BatchOrigin)>>,
        Vec<Arc<DeviceArena>>,
    ),
    /// Kept in host memory, with their pages.
    Host(Mutex<Vec<(RecordBatch, BatchOrigin)>>),
}

/// A load kept in memory ([`export_to_device`], [`export_to_host`]).
pub struct Loaded<B> {
    pub schema: SchemaRef,
    /// The batches read, in the order they were decoded.
    pub batches: Vec<B>,
    pub report: ExportReport,
    /// The pages each batch of `batches` holds.
    pub pages: PageMap,
    /// On a refresh ([`ExportRequest::prior`]): the rows of the previous
    /// load to copy into new batches (with
    /// [`gpupg_gpu::gather_rows`] or [`gpupg_gpu::gather_rows_host`]) and
    /// append, with their origins, to `batches` and `pages`. Together with
    /// `batches` they are the table under this load's snapshot.
    pub carried: Vec<CarriedBatch>,
}

impl<B> Loaded<B> {
    /// Appends the rows [`Self::carried`] lists: `gather` copies one carried
    /// batch's runs out of the previous load's batches, `size` gives a
    /// batch's rows and bytes. Carried batches without rows are left out.
    pub fn append_carried<E>(
        &mut self,
        mut gather: impl FnMut(&CarriedBatch) -> Result<B, E>,
        size: impl Fn(&B) -> BatchSize,
    ) -> Result<(), E> {
        for c in std::mem::take(&mut self.carried) {
            if c.rows == 0 {
                continue;
            }
            let batch = gather(&c)?;
            self.pages.push(c.origin, size(&batch));
            self.batches.push(batch);
        }
        Ok(())
    }

    /// Whether a refresh left rows to carry over.
    pub fn carries_rows(&self) -> bool {
        self.carried.iter().any(|c| c.rows > 0)
    }
}

/// What a device or host export keeps.
enum Kept {
    Device(Vec<(DeviceBatch, BatchOrigin)>),
    Host(Vec<(RecordBatch, BatchOrigin)>),
}

/// Runs one export. Output appears only if everything succeeded: on any
/// error (or cancellation) the temporary files are removed. With
/// [`Output::Device`] the columns are decoded into device memory, held until
/// the end and then freed (a measure of the load; [`export_to_device`] keeps
/// them).
pub fn export(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
) -> Result<ExportReport, ExportError> {
    run(req, progress).map(|(report, _)| report)
}

/// Reads the table or query of `req` into device-resident Arrow columns on
/// the GPUs `req.devices`, whatever `req.output` says. Needs a usable GPU: the
/// engine is the GPU's, and a GPU failure fails the load.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use gpupg_export::{export_to_device, ExportRequest, NoProgress};
/// # let req: ExportRequest<'static> = unimplemented!();
/// let loaded = export_to_device(&req, &NoProgress)?;
/// let bytes: usize = loaded.batches.iter().map(|b| b.device_bytes()).sum();
/// println!("{} rows, {bytes} bytes on GPUs {:?}", loaded.report.rows, req.devices);
/// # Ok(()) }
/// ```
pub fn export_to_device(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
) -> Result<Loaded<DeviceBatch>, ExportError> {
    match run(&req.with_output(Output::Device), progress)? {
        (report, Some((Kept::Device(batches), pages, carried, schema))) => {
            Ok(loaded(report, batches, pages, carried, schema))
        }
        _ => Err(ExportError::Internal(
            "a device export returned no table".into(),
        )),
    }
}

/// Reads the table or query of `req` into Arrow record batches in memory,
/// whatever `req.output` says, with `req.engine`.
pub fn export_to_host(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
) -> Result<Loaded<RecordBatch>, ExportError> {
    match run(&req.with_output(Output::Host), progress)? {
        (report, Some((Kept::Host(batches), pages, carried, schema))) => {
            Ok(loaded(report, batches, pages, carried, schema))
        }
        _ => Err(ExportError::Internal(
            "a host export returned no batches".into(),
        )),
    }
}

fn loaded<B>(
    report: ExportReport,
    batches: Vec<(B, BatchOrigin)>,
    mut pages: PageMap,
    carried: Vec<CarriedBatch>,
    schema: SchemaRef,
) -> Loaded<B> {
    let batches = batches
        .into_iter()
        .map(|(b, origin)| {
            pages.batches.push(origin);
            b
        })
        .collect();
    Loaded {
        schema,
        batches,
        report,
        pages,
        carried,
    }
}

/// What `run` keeps in memory: the batches, their pages (sizes filled,
/// origins still with the batches), what a refresh carries, the schema.
type KeptLoad = (Kept, PageMap, Vec<CarriedBatch>, SchemaRef);

/// Checks the request, then runs it with its connections cancelled when
/// `req.cancel` is set.
fn run(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
) -> Result<(ExportReport, Option<KeptLoad>), ExportError> {
    req.validate()?;
    cancellable(req.cancel, |interrupts| {
        run_checked(req, progress, interrupts)
    })
}

fn run_checked(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
    interrupts: &Interrupts,
) -> Result<(ExportReport, Option<KeptLoad>), ExportError> {
    let started = Instant::now();
    let cpu_at_start = process_cpu_seconds();
    // Device output has no CPU path: it needs the GPU as `--engine gpu` does.
    let engine = match (&req.output, req.engine) {
        (Output::Device, Engine::Cpu) => {
            return Err(ExportError::Invalid(
                "device-resident output needs the GPU engine, not --engine cpu".into(),
            ))
        }
        (Output::Device, _) => Engine::Gpu,
        (_, e) => e,
    };
    // Before anything is opened: `--engine gpu` without a usable GPU fails
    // here, leaving nothing behind.
    let chosen = choose(engine, &req.devices).map_err(|e| match (&req.output, e) {
        (Output::Device, ExportError::Gpu(g)) => {
            ExportError::Invalid(format!("device-resident output needs a usable GPU: {g}"))
        }
        (_, e) => e,
    })?;

    // Metadata: the first connection exports the snapshot every other
    // connection imports, so all of them see exactly the same rows.
    let session = Session::begin(req, interrupts)?;
    // With the snapshot held: heap files or COPY (the heap path's
    // checkpoint and fence must come after the snapshot).
    let mut source = choose_source(req, &session.plan, interrupts)?;
    // With the GPU engine, trusted heap pages go to the GPU whole and are
    // converted to rows there.
    let mut page_notes = Vec::new();
    // With the CPU engine, they go to the decoders whole, which decode them
    // into columns without binary COPY rows in between.
    // The GPU's pages are read by cuFile when `req.heap_io` says and it
    // can, into device buffers for every reader's batch, every batch
    // queued and every decoder's.
    if let HeapChosen::Heap(heap) = &mut source {
        match &chosen {
            Chosen::Gpu { .. } => page_notes = heap.use_gpu_pages(),
            Chosen::Cpu { .. } => heap.use_cpu_pages(),
        }
        heap.use_gds(
            req.heap_io,
            (&req.devices, &req.gpu_selection),
            req.parallel + 2 * req.workers,
            req.heap_chunk_bytes,
        )?;
    }
    let descs: Vec<_> = session
        .plan
        .columns
        .iter()
        .map(|c| c.desc.clone())
        .collect();
    let schema = Arc::new(OutputSchema::new(&descs, &req.types)?);
    let connections = session.connections(req);
    // A refresh keeps the pages of the previous load that did not change.
    let mut page_map = PageMap {
        schema: Some(schema.arrow_schema()),
        ..PageMap::default()
    };
    if let HeapChosen::Heap(heap) = &mut source {
        page_map.rels = heap.rel_paths();
        if let Some(why) = req
            .prior
            .and_then(|p| heap.keep_from(p, &schema.arrow_schema()))
        {
            page_notes.push(why);
        }
    }

    // Outputs before the other connections: an existing file is refused
    // without opening them.
    let destination = match &req.output {
        Output::File(path) => Destination::Files(vec![create_file_sink(
            path,
            schema.arrow_schema(),
            &req.sink,
        )?]),
        Output::Dir(dir) => {
            let stem = file_stem(&session.plan);
            Destination::Files(create_dir_sinks(
                dir,
                &stem,
                connections,
                schema.arrow_schema(),
                &req.sink,
            )?)
        }
        Output::Device => Destination::Device(
            Mutex::new(Vec::new()),
            req.devices
                .iter()
                .map(|&d| DeviceArena::new(d, req.device_limit))
                .collect(),
        ),
        Output::Host => Destination::Host(Mutex::new(Vec::new())),
    };
    let (plan, conns) = session.open(req, interrupts)?;
    let metadata_seconds = started.elapsed().as_secs_f64();
    progress.start(plan.estimated_rows);

    // Enough buffers for every connection to fill one while every decoder
    // holds one, plus one in the channel each: memory is bounded by this,
    // whatever the table size.
    let workers = req.workers;
    // On the heap path each connection may also hold a chunk it packs
    // small COPY results into (crate::pack).
    let packing = matches!(source, HeapChosen::Heap(_));
    let buffers = connections * (1 + usize::from(packing)) + 2 * workers;
    let chunk_bytes = match &source {
        HeapChosen::Heap(_) => req.heap_chunk_bytes,
        HeapChosen::Copy { .. } => req.chunk_bytes,
    };
    let pool = match &chosen {
        // The connections then read straight into page-locked memory, and
        // the GPU copies chunks from it with no staging copy.
        Chosen::Gpu { .. } => BufferPool::with_registrar(
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
        Chosen::Cpu { .. } => BufferPool::new(buffers, chunk_bytes),
    };
    let (tx, rx) = bounded::<Work>(workers);
    // COPY statements for the connections: the plan's page ranges, or on the
    // heap path the ranges the heap readers could not trust (sent as they
    // are found) and the blocks past the end of the files.
    let (stmt_tx, stmt_rx) = unbounded::<String>();
    let heap_counters = HeapCounters::default();
    let heap_readers = match &source {
        HeapChosen::Heap(heap) => {
            for sql in heap.tail_statements() {
                stmt_tx
                    .send(sql)
                    .map_err(|_| ExportError::ThreadPanicked("planner"))?;
            }
            req.parallel
        }
        HeapChosen::Copy { .. } => {
            for sql in &plan.statements {
                stmt_tx
                    .send(sql.clone())
                    .map_err(|_| ExportError::ThreadPanicked("planner"))?;
            }
            0
        }
    };
    // The connections stop when the last heap reader has sent its ranges
    // and the decoders have converted every page batch (pages the GPU
    // leaves to the CPU may need COPY too); at once on the COPY path.
    let feed = StatementFeed::new(stmt_tx, heap_readers);
    let abort = Abort {
        flag: AtomicBool::new(false),
        first: Mutex::new(None),
        user_cancel: req.cancel,
    };
    let (decode_busy, write_busy, send_wait) = (Busy::default(), Busy::default(), Busy::default());
    let decode_cpu = Busy::default();
    let wire_bytes = std::sync::atomic::AtomicU64::new(0);
    let copy_bytes = std::sync::atomic::AtomicU64::new(0);
    let rows = std::sync::atomic::AtomicU64::new(0);
    let flattened = std::sync::atomic::AtomicU64::new(0);
    // Per GPU, its decoder threads' statistics summed.
    let gpu_stats = Mutex::new(std::collections::BTreeMap::<usize, gpupg_gpu::GpuStats>::new());
    let engine_notes = Mutex::new(page_notes);
    let copy_started = Instant::now();
    let copy_wall = Mutex::new(Duration::ZERO);

    std::thread::scope(|s| {
        let mut readers = Vec::new();
        for (reader, mut conn) in conns.into_iter().enumerate() {
            let tx = tx.clone();
            let (pool, abort, stmt_rx) = (&pool, &abort, stmt_rx.clone());
            let (send_wait, wire_bytes, copy_wall) = (&send_wait, &wire_bytes, &copy_wall);
            readers.push(s.spawn(move || {
                let mut run = || -> Result<(), ExportError> {
                    let mut packer = ChunkPacker::new(pool.capacity());
                    let send = |chunk: CopyChunk| -> Result<(), SourceError> {
                        if abort.stopped() {
                            return Err(SourceError::Downstream(
                                "another export thread failed".into(),
                            ));
                        }
                        let t = Instant::now();
                        let sent = tx.send(Work::Rows(chunk));
                        send_wait.add(t.elapsed());
                        sent.map_err(|_| {
                            SourceError::Downstream("another export thread failed".into())
                        })
                    };
                    for sql in stmt_rx.iter() {
                        if abort.stopped() {
                            break;
                        }
                        let mut on_chunk = |chunk: CopyChunk| -> Result<(), SourceError> {
                            if !packing {
                                return send(chunk);
                            }
                            packer.push(chunk, pool).into_iter().try_for_each(send)
                        };
                        let stats = conn.copy_out(&sql, pool, reader as u32, &mut on_chunk)?;
                        wire_bytes.fetch_add(stats.wire_bytes, Ordering::Relaxed);
                    }
                    if let Some(chunk) = packer.finish() {
                        send(chunk)?;
                    }
                    if !abort.stopped() {
                        conn.execute("COMMIT")?;
                    }
                    let mut wall = copy_wall.lock().unwrap_or_else(|p| p.into_inner());
                    *wall = (*wall).max(copy_started.elapsed());
                    Ok(())
                };
                if let Err(e) = run() {
                    // A reader stopped because another thread failed reports
                    // nothing of its own.
                    if !matches!(e, ExportError::Source(SourceError::Downstream(_))) {
                        abort.fail(e);
                    }
                }
            }));
        }
        if let HeapChosen::Heap(heap) = &source {
            for reader in 0..heap_readers {
                let tx = tx.clone();
                let (pool, abort, counters, feed) = (&pool, &abort, &heap_counters, &feed);
                readers.push(s.spawn(move || {
                    let stopped = || abort.stopped();
                    let r = run_reader(heap, counters, reader as u32, pool, &tx, feed, &stopped);
                    feed.release();
                    if let Err(e) = r {
                        if !matches!(e, ExportError::Source(SourceError::Downstream(_))) {
                            abort.fail(e);
                        }
                    }
                }));
            }
        }
        drop(tx);

        let mut decoders = Vec::new();
        for thread in 0..workers {
            let rx = rx.clone();
            let (pool, abort, destination, schema) = (&pool, &abort, &destination, &schema);
            let (decode_busy, write_busy, decode_cpu) = (&decode_busy, &write_busy, &decode_cpu);
            let (rows, copy_bytes, flattened) = (&rows, &copy_bytes, &flattened);
            let (chosen, gpu_stats, engine_notes) = (&chosen, &gpu_stats, &engine_notes);
            let (source, heap_counters, feed) = (&source, &heap_counters, &feed);
            decoders.push(s.spawn(move || {
                let arenas = match destination {
                    Destination::Device(_, arenas) => Some(arenas.as_slice()),
                    Destination::Files(_) | Destination::Host(_) => None,
                };
                let mut decoder = match ThreadDecoder::new(chosen, thread, schema, arenas) {
                    Ok((d, note)) => {
                        if let Some(n) = note {
                            let mut notes = engine_notes.lock().unwrap_or_else(|p| p.into_inner());
                            if !notes.contains(&n) {
                                notes.push(n);
                            }
                        }
                        Some(d)
                    }
                    Err(e) => {
                        abort.fail(e);
                        None
                    }
                };
                let to_device = arenas.is_some();
                for work in rx.iter() {
                    // After a failure keep draining, so readers blocked on
                    // the channel or the pool can finish and see the abort.
                    let decoder = match decoder.as_mut() {
                        Some(d) if !abort.stopped() => d,
                        _ => {
                            match work {
                                Work::Rows(chunk) => pool.give(chunk.data),
                                Work::Pages(batch) => {
                                    batch.recycle(pool);
                                    feed.release();
                                }
                            }
                            continue;
                        }
                    };
                    let (t, cpu) = (Instant::now(), thread_cpu_seconds());
                    // Each decoded part with its rows' bytes, partition and
                    // pages.
                    let mut parts: Vec<Part> = Vec::new();
                    let mut bad_row = None;
                    let result = match work {
                        Work::Rows(chunk) => {
                            let r = decoder.decode_to(&chunk, to_device);
                            // The row's bytes go back to the pool next.
                            bad_row = r
                                .as_ref()
                                .err()
                                .and_then(value_error_row)
                                .and_then(|row| failing_row(&chunk, row));
                            let (bytes, partition) = (chunk.row_bytes(), chunk.partition);
                            pool.give(chunk.data);
                            r.map(|d| parts.push((d, bytes, partition, BatchOrigin::Untracked)))
                        }
                        Work::Pages(batch) => {
                            let r = decode_page_batch(
                                decoder,
                                source,
                                &batch,
                                to_device,
                                heap_counters,
                                feed,
                                &mut parts,
                            );
                            batch.recycle(pool);
                            feed.release();
                            r
                        }
                    };
                    decode_busy.add(t.elapsed());
                    decode_cpu.add_seconds(thread_cpu_seconds() - cpu);
                    if let Err(e) = result {
                        abort.fail_in_row(e, bad_row);
                        continue;
                    }
                    let t = Instant::now();
                    for (decoded, bytes, partition, origin) in parts {
                        let n = decoded.num_rows() as u64;
                        match (decoded, destination) {
                            (Decoded::Host(batch), Destination::Files(sinks)) => {
                                let sink = &sinks[(partition as usize).min(sinks.len() - 1)];
                                if let Err(e) = sink.write(&batch) {
                                    abort.fail(e.into());
                                    break;
                                }
                            }
                            (Decoded::Device(batch), Destination::Device(kept, _)) => {
                                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                                kept.push((batch, origin));
                            }
                            (Decoded::Host(batch), Destination::Host(kept)) => {
                                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                                kept.push((batch, origin));
                            }
                            _ => unreachable!("the decode above follows the destination"),
                        }
                        rows.fetch_add(n, Ordering::Relaxed);
                        copy_bytes.fetch_add(bytes, Ordering::Relaxed);
                        progress.advance(n, bytes);
                    }
                    write_busy.add(t.elapsed());
                }
                let Some(decoder) = decoder else { return };
                flattened.fetch_add(decoder.stats().flattened_arrays, Ordering::Relaxed);
                if let Some(g) = decoder.gpu_stats() {
                    let mut by_device = gpu_stats.lock().unwrap_or_else(|p| p.into_inner());
                    match by_device.get_mut(&g.device) {
                        Some(t) => merge_gpu_stats(t, &g),
                        None => {
                            by_device.insert(g.device, g);
                        }
                    }
                }
            }));
        }
        for r in readers {
            if r.join().is_err() {
                abort.fail(ExportError::ThreadPanicked("reader"));
            }
        }
        for w in decoders {
            if w.join().is_err() {
                abort.fail(ExportError::ThreadPanicked("decoder"));
            }
        }
    });
    progress.finish();
    // A cancel that came after the last chunk still leaves no output.
    abort.stopped();
    if let Some((e, row)) = abort.first.into_inner().unwrap_or_else(|p| p.into_inner()) {
        // Dropping the sinks removes their temporary files; dropping device
        // batches frees their memory.
        drop(destination);
        return Err(with_row_named(e, row, &req.connect, &plan));
    }

    let finishing = Instant::now();
    let Finished {
        files,
        encode_seconds,
        held,
        arena_blocks,
    } = finish_destination(destination, req, &plan, connections, &mut page_map)?;
    // The rows a refresh keeps, as runs of the previous load's batches.
    let carried = match req.prior {
        Some(prior) => carry(
            std::mem::take(&mut *heap_counters.kept.lock().unwrap_or_else(|p| p.into_inner())),
            &prior.sizes,
        ),
        None => Vec::new(),
    };
    let finish_seconds = finishing.elapsed().as_secs_f64();
    let primary = req.devices.first().copied().unwrap_or(0);
    let resident = match &held {
        Some(Kept::Device(kept)) => Some(Resident {
            devices: req.devices.clone(),
            batches: kept.len(),
            bytes: kept.iter().map(|(b, _)| b.device_bytes() as u64).sum(),
            allocations: arena_blocks.0,
            allocated_bytes: arena_blocks.1,
        }),
        _ => None,
    };
    let copy_wall = copy_wall.into_inner().unwrap_or_else(|p| p.into_inner());
    let gpu_devices = gpu_stats.into_inner().unwrap_or_else(|p| p.into_inner());
    let gpu = gpu_devices.values().cloned().reduce(|mut a, b| {
        merge_gpu_stats(&mut a, &b);
        a
    });
    let notes = engine_notes.into_inner().unwrap_or_else(|p| p.into_inner());
    let (engine_detail, notes) = engine_summary(&chosen, gpu.as_ref(), notes);

    let report = ExportReport {
        target: plan.label,
        rows: rows.into_inner(),
        bytes_received: wire_bytes.into_inner(),
        copy_bytes: copy_bytes.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
        engine: chosen.name().into(),
        engine_detail,
        engine_notes: notes,
        source: match &source {
            HeapChosen::Heap(_) => "heap".into(),
            HeapChosen::Copy { .. } => "copy".into(),
        },
        source_detail: source_detail(&source, req, primary, heap_readers),
        heap: match &source {
            HeapChosen::Heap(heap) => Some(heap_counters.report(heap, heap_readers, primary)),
            HeapChosen::Copy { .. } => None,
        },
        connections,
        workers,
        statements: plan.statements.len(),
        serial_reason: plan.serial_reason,
        flattened_arrays: flattened.into_inner(),
        phases: Phases {
            metadata: metadata_seconds,
            copy_receive: copy_wall.as_secs_f64(),
            decode: decode_busy.seconds(),
            write: write_busy.seconds(),
            encode_in_write: encode_seconds,
            finish: finish_seconds,
            reader_wait: send_wait.seconds(),
            decode_cpu: decode_cpu.seconds(),
            buffer_setup: pool.setup_seconds(),
            gpu: gpu.as_ref().map(GpuPhases::from),
            gpu_devices: gpu_devices.values().map(GpuPhases::from).collect(),
        },
        cpu_seconds: process_cpu_seconds() - cpu_at_start,
        gpu,
        files,
        resident,
    };
    Ok((
        report,
        held.map(|h| (h, page_map, carried, schema.arrow_schema())),
    ))
}

/// A decoded part of a chunk or page batch: the batch, its rows' bytes
/// (COPY or heap), its partition and its pages.
type Part = (Decoded, u64, u32, BatchOrigin);

/// Converts and decodes a batch of trusted heap pages: the GPU page kernels
/// convert what they can, the CPU converter the pages they flag (pages it
/// refuses go to COPY). Pushes the decoded parts with their bytes (heap
/// bytes for the GPU's part, COPY bytes for the CPU's) and partition.
/// The report's `source_detail`: which files and I/O, where the pages are
/// converted, or why COPY.
fn source_detail(
    source: &HeapChosen,
    req: &ExportRequest<'_>,
    primary: usize,
    heap_readers: usize,
) -> String {
    match source {
        HeapChosen::Heap(heap) => format!(
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
                " (--source auto: the data directory is readable and the table is over --heap-threshold)"
            } else {
                ""
            }
        ),
        HeapChosen::Copy { why: Some(why) } => format!("COPY: {why}"),
        HeapChosen::Copy { why: None } => "COPY".into(),
    }
}

/// The report's `engine_detail`, and its notes with the GPU's fallbacks
/// (chunks after a failure, columns it left to the CPU) added.
fn engine_summary(
    chosen: &Chosen,
    gpu: Option<&gpupg_gpu::GpuStats>,
    mut notes: Vec<String>,
) -> (String, Vec<String>) {
    let engine_detail = match chosen {
        Chosen::Cpu { why: None } => "CPU decoder".to_string(),
        Chosen::Cpu { why: Some(why) } => format!("CPU decoder: {why}"),
        Chosen::Gpu { gpus, .. } => Chosen::gpus_text(gpus),
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

/// What the destination holds once every batch is in: the files written
/// (and their encoding thread-seconds), or the batches kept in memory.
struct Finished {
    files: Vec<crate::OutputFile>,
    encode_seconds: f64,
    held: Option<Kept>,
    /// Arena blocks and their bytes, for device output.
    arena_blocks: (usize, u64),
}

/// Closes the sinks (each file renamed into place) or takes the kept
/// batches, recording each batch's size in `page_map`.
fn finish_destination(
    destination: Destination,
    req: &ExportRequest<'_>,
    plan: &crate::plan::ExportPlan,
    connections: usize,
    page_map: &mut PageMap,
) -> Result<Finished, ExportError> {
    let mut files = Vec::new();
    let mut encode_seconds = 0.0;
    let mut held = None;
    let mut arena_blocks = (0, 0);
    match destination {
        Destination::Files(sinks) => {
            for sink in sinks {
                let stats = sink.finish()?;
                encode_seconds += stats.encode_seconds;
                files.extend(
                    stats
                        .files
                        .into_iter()
                        .map(|(path, bytes)| crate::OutputFile { path, bytes }),
                );
            }
            if let (Output::Dir(dir), true) = (&req.output, req.sink.overwrite) {
                remove_other_parts(dir, &file_stem(plan), req.sink.format, connections)?;
            }
        }
        Destination::Device(kept, arenas) => {
            arena_blocks = arenas.iter().fold((0, 0), |(n, b), a| {
                (n + a.blocks(), b + a.allocated_bytes())
            });
            let kept = kept.into_inner().unwrap_or_else(|p| p.into_inner());
            for (b, _) in &kept {
                page_map.sizes.push(BatchSize {
                    rows: b.num_rows,
                    bytes: b.device_bytes() as u64,
                    device: b.device(),
                });
            }
            held = Some(Kept::Device(kept));
        }
        Destination::Host(kept) => {
            let kept = kept.into_inner().unwrap_or_else(|p| p.into_inner());
            for (b, _) in &kept {
                page_map.sizes.push(BatchSize {
                    rows: b.num_rows(),
                    bytes: b.get_array_memory_size() as u64,
                    device: 0,
                });
            }
            held = Some(Kept::Host(kept));
        }
    }
    Ok(Finished {
        files,
        encode_seconds,
        held,
        arena_blocks,
    })
}

fn decode_page_batch(
    decoder: &mut ThreadDecoder,
    source: &HeapChosen,
    batch: &crate::heap_source::PageBatch,
    to_device: bool,
    counters: &HeapCounters,
    feed: &StatementFeed,
    parts: &mut Vec<Part>,
) -> Result<(), ExportError> {
    let HeapChosen::Heap(heap) = source else {
        return Err(ExportError::Internal("heap pages on the COPY path".into()));
    };
    let (Some(layout), reader) = (heap.layout(batch.rel), heap.page_reader(batch.rel)) else {
        return Err(ExportError::Internal("heap pages of no relation".into()));
    };
    let (decoded, flagged) = decoder.decode_pages(
        batch.input(),
        (&batch.pages, &batch.blocks),
        layout,
        reader,
        to_device,
    )?;
    if let Some(d) = decoded {
        counters
            .rows_direct
            .fetch_add(d.num_rows() as u64, Ordering::Relaxed);
        let heap_bytes = ((batch.pages.len() - flagged.len()) * layout.block_size()) as u64;
        let origin = origin_of(batch.rel, batch.pages_except(&flagged), d.num_rows());
        parts.push((d, heap_bytes, batch.partition, origin));
    }
    let mut rows = CopyChunk {
        partition: batch.partition,
        ..CopyChunk::default()
    };
    let converted = heap.convert_flagged(batch, &flagged, counters, feed, &mut rows)?;
    if rows.num_rows() > 0 {
        let d = decoder.decode_to(&rows, to_device)?;
        let origin = origin_of(batch.rel, Some(converted), d.num_rows());
        parts.push((d, rows.row_bytes(), batch.partition, origin));
    }
    Ok(())
}

/// The pages of a batch of `rows` rows decoded from `pages` of relation
/// `rel`: untracked when they are not known or their rows do not add up
/// (then a refresh reads them again rather than trust a wrong map).
fn origin_of(rel: usize, pages: Option<Vec<PageRows>>, rows: usize) -> BatchOrigin {
    match pages {
        Some(pages) if pages.iter().map(|p| p.rows as usize).sum::<usize>() == rows => {
            BatchOrigin::Pages { rel, pages }
        }
        _ => BatchOrigin::Untracked,
    }
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

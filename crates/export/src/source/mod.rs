//! The sources of an export and the work they yield to the decoders.
//! Every export reads through COPY over the connections of one snapshot
//! ([`copy`]); a table may also be read from its heap files ([`heap`]),
//! whose pages no decoder converts come back to the heap source, which
//! converts them or reads them again through COPY.

pub(crate) mod copy;
pub mod heap;

use crossbeam_channel::{Receiver, Sender};
use gpupg_format::CopyChunk;

use gpupg_decode::OutputSchema;
use gpupg_source::BufferPool;

use crate::carry::{BatchOrigin, PageMap};
use crate::decoder::EngineChoice;
use crate::interrupt::Interrupts;
use crate::plan::ExportPlan;
use crate::state::Shared;
use crate::{ExportError, ExportRequest, Source};
use heap::fallback::{Back, Fallback, Tally};
use heap::{HeapCounters, HeapPlan, PageBatch, Unavailable};

/// What the sources send the decoders.
pub(crate) enum Work {
    /// Whole binary COPY rows in a pool buffer (from a connection, or
    /// converted by a heap reader).
    Rows(CopyChunk),
    /// Rows converted on the CPU from heap pages a decoder flagged, with
    /// those pages; not a pool buffer.
    Converted {
        chunk: CopyChunk,
        origin: BatchOrigin,
    },
    /// Trusted heap pages, for the page decoders; handed back to the
    /// source when decoded ([`Back`]).
    Pages(PageBatch),
}

/// The source an export runs with.
pub(crate) enum SourceChoice {
    Copy { why: Option<String> },
    Heap(Box<HeapPlan>),
}

/// Decides between the heap files and COPY (`req.source`), and prepares the
/// heap path: catalog, fence, checkpoint, files, visibility map. Called
/// after the snapshot is taken and before any data is read.
pub(crate) fn choose_source(
    req: &ExportRequest<'_>,
    plan: &ExportPlan,
    interrupts: &Interrupts,
) -> Result<SourceChoice, ExportError> {
    if req.source == Source::Copy {
        return Ok(SourceChoice::Copy { why: None });
    }
    let strict = req.source == Source::Heap;
    if req.snapshot.is_some() || req.pages.is_some() {
        // The heap path's proof rests on the export's own snapshot and its
        // fence taken right after it; an imported snapshot may be older.
        let why = "a fragment (an imported snapshot or a page range) is read through COPY only";
        return if strict {
            Err(ExportError::HeapRefused(why.into()))
        } else {
            Ok(SourceChoice::Copy {
                why: Some(why.into()),
            })
        };
    }
    match heap::prepare(req, plan, interrupts) {
        Ok(p) => Ok(SourceChoice::Heap(Box::new(p))),
        Err(Unavailable::Reason(why)) if !strict => Ok(SourceChoice::Copy { why: Some(why) }),
        Err(Unavailable::Reason(why)) => Err(ExportError::HeapRefused(why)),
        Err(Unavailable::Error(e)) => Err(e),
    }
}

/// The channels between the source threads and the decoders.
pub(crate) struct SourceLinks {
    pub work: Sender<Work>,
    /// The COPY statements the connections run; the plan's, or on the heap
    /// path those of the pages not read from the files.
    pub statements: (Sender<String>, Receiver<String>),
    /// Page batches coming back from the decoders.
    pub back: (Sender<Back>, Receiver<Back>),
}

impl SourceChoice {
    /// Who converts trusted heap pages: with the GPU engine the GPU page
    /// kernels (whole pages, read by cuFile when `req.heap_io` says and it can,
    /// into device buffers for every reader's batch, every batch queued and
    /// every decoder's); with the CPU engine the decoders, into columns without
    /// binary COPY rows in between. Returns why some pages are not the GPU's.
    pub(crate) fn configure(
        &mut self,
        req: &ExportRequest<'_>,
        engine: &EngineChoice,
    ) -> Result<Vec<String>, ExportError> {
        let SourceChoice::Heap(heap) = self else {
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

    /// The page map the export fills; on a refresh the heap source keeps the
    /// pages of the previous load that did not change (or `notes` says why
    /// not).
    pub(crate) fn page_map(
        &mut self,
        req: &ExportRequest<'_>,
        schema: &OutputSchema,
        notes: &mut Vec<String>,
    ) -> PageMap {
        let mut map = PageMap {
            schema: Some(schema.arrow_schema()),
            ..PageMap::default()
        };
        if let SourceChoice::Heap(heap) = self {
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
    pub(crate) fn buffer_pool(
        &self,
        req: &ExportRequest<'_>,
        engine: &EngineChoice,
        connections: usize,
    ) -> BufferPool {
        let (packing, chunk_bytes) = match self {
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

    /// Heap reader threads (none on the COPY path).
    pub(crate) fn heap_readers(&self, req: &ExportRequest<'_>) -> usize {
        match self {
            SourceChoice::Heap(_) => req.parallel,
            SourceChoice::Copy { .. } => 0,
        }
    }

    /// Starts the source's threads in `s`: one per connection, and on the
    /// heap path the heap readers and the fallback side. Each records its
    /// error in `shared.abort`. The links are consumed: the channels close
    /// as the threads end.
    pub(crate) fn spawn<'s>(
        &'s self,
        s: &'s std::thread::Scope<'s, '_>,
        req: &ExportRequest<'_>,
        (plan, conns): (&ExportPlan, Vec<gpupg_source::Connection>),
        links: SourceLinks,
        (shared, counters): (&'s Shared<'_>, &'s HeapCounters),
    ) -> Result<Vec<std::thread::ScopedJoinHandle<'s, ()>>, ExportError> {
        let SourceLinks {
            work,
            statements: (stmt_tx, stmt_rx),
            back: (back_tx, back_rx),
        } = links;
        let queued = match self {
            SourceChoice::Heap(heap) => heap.tail_statements(),
            SourceChoice::Copy { .. } => plan.statements.clone(),
        };
        for sql in queued {
            stmt_tx
                .send(sql)
                .map_err(|_| ExportError::ThreadPanicked("planner"))?;
        }
        let pack = matches!(self, SourceChoice::Heap(_));
        let mut threads = Vec::new();
        for (i, conn) in conns.into_iter().enumerate() {
            let (work, stmt_rx) = (work.clone(), stmt_rx.clone());
            threads.push(s.spawn(move || {
                if let Err(e) = copy::read_copy(conn, i as u32, stmt_rx, work, pack, shared) {
                    // A reader stopped because another thread failed
                    // reports nothing of its own.
                    shared.abort.fail_unless_downstream(e);
                }
            }));
        }
        let SourceChoice::Heap(heap) = self else {
            // The plan's statements are all queued: the queue closes as
            // this sender drops.
            return Ok(threads);
        };
        let readers = self.heap_readers(req);
        for reader in 0..readers {
            let (work, stmt_tx, back_tx) = (work.clone(), stmt_tx.clone(), back_tx.clone());
            threads.push(s.spawn(move || {
                let stopped = || shared.abort.stopped();
                let pool = &shared.pool;
                let links = (&stmt_tx, back_tx);
                if let Err(e) =
                    heap::run_reader(heap, counters, reader as u32, pool, &work, links, &stopped)
                {
                    shared.abort.fail_unless_downstream(e);
                }
            }));
        }
        // One fallback worker per reader: converting the pages a GPU decoder
        // flagged is CPU work as large as the reading when most are flagged.
        let tally = std::sync::Arc::new(Tally::new(readers));
        for _ in 0..readers.max(1) {
            let fallback = Fallback {
                heap,
                counters,
                pool: &shared.pool,
                work: work.clone(),
                statements: stmt_tx.clone(),
                readers,
                tally: tally.clone(),
            };
            let back_rx = back_rx.clone();
            threads.push(s.spawn(move || fallback.run(&back_rx, &shared.abort)));
        }
        Ok(threads)
    }
}

//! The heap source's fallback side. Pages no decoder converts come back
//! here: the decoders hand every page batch back ([`Back::Pages`], with the
//! pages they flagged, possibly none); this side converts flagged pages
//! into binary COPY rows on the CPU ([`Work::Converted`]), queues COPY
//! statements for the pages the CPU refuses too, and recycles the batch's
//! buffer. Several workers share the return channel, as converting the
//! flagged pages is CPU work that one thread made the bottleneck when most
//! pages are flagged (events 10M on the H100 host: every page held a value
//! the GPU kernels left to the CPU). They know together ([`Tally`]) when
//! the heap path is done (every reader finished and every batch it sent came
//! back) and then end, which closes the COPY statement queue by dropping its
//! senders. Nothing here is called by a decoder.
//!
//! The return channel is unbounded so that a decoder never waits on it;
//! its length is bounded by the buffers of the pool (and the device
//! buffers of cuFile) that the batches hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use gpupg_format::heap::transcode_page;
use gpupg_format::CopyChunk;
use gpupg_source::{copy_sql, copy_sql_blocks, BufferPool, PageRange};

use super::judge::reason_name;
use super::{HeapCounters, HeapPlan, HeapRel, PageBatch, PageReader};
use crate::carry::{BatchOrigin, PageRows};
use crate::source::Work;
use crate::state::{downstream, Abort};
use crate::ExportError;

/// What comes back to the fallback side.
// One message per page batch of megabytes and per reader: the size of the
// small variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Back {
    /// A page batch a decoder is done with: the pages it `flagged`
    /// (indexes into `batch.pages`) and the rows it decoded from the others.
    Pages {
        batch: PageBatch,
        flagged: Vec<u32>,
        decoded_rows: u64,
    },
    /// A heap reader finished, having sent `sent` page batches.
    ReaderDone { sent: u64 },
}

/// Sends [`Back::ReaderDone`] when dropped, so the fallback side learns of
/// a reader's end whichever way it ends (an error, a panic).
pub(super) struct ReaderDone {
    pub back: Sender<Back>,
    pub sent: u64,
}

impl Drop for ReaderDone {
    fn drop(&mut self) {
        // The fallback side is gone only after the export ended.
        let _ = self.back.send(Back::ReaderDone { sent: self.sent });
    }
}

/// How far the heap path is, shared by the fallback workers.
pub(crate) struct Tally {
    /// Readers finished, page batches they sent, batches returned.
    counts: Mutex<(usize, u64, u64)>,
    /// Every reader finished and every batch came back: the workers end.
    finished: AtomicBool,
}

impl Tally {
    /// Nothing returned yet from `readers` readers (none: already done).
    pub(crate) fn new(readers: usize) -> Tally {
        Tally {
            counts: Mutex::new((0, 0, 0)),
            finished: AtomicBool::new(readers == 0),
        }
    }

    /// Applies `change` to the counts and marks the end when `readers`
    /// readers finished and every batch they sent came back.
    fn record(&self, readers: usize, change: impl FnOnce(&mut (usize, u64, u64))) {
        // A worker that panicked holding the lock left whole counts.
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut c);
        if c.0 >= readers && c.2 >= c.1 {
            self.finished.store(true, Ordering::Release);
        }
    }
}

/// How often a waiting worker looks whether another one saw the end.
const END_POLL: Duration = Duration::from_millis(2);

/// One worker of the fallback side of one heap export.
pub(crate) struct Fallback<'a> {
    pub heap: &'a HeapPlan,
    pub counters: &'a HeapCounters,
    pub pool: &'a BufferPool,
    /// Converted rows go to the decoders here.
    pub work: Sender<Work>,
    /// Refused pages go to the COPY connections here; dropped at the end.
    pub statements: Sender<String>,
    /// Heap readers that will send [`Back::ReaderDone`].
    pub readers: usize,
    /// Shared with the other workers.
    pub tally: Arc<Tally>,
}

impl Fallback<'_> {
    /// Takes batches back until every reader finished and every batch it
    /// sent came back (seen by this worker or another). After a failure
    /// (its own or another thread's) it only recycles what comes back.
    pub(crate) fn run(self, back: &Receiver<Back>, abort: &Abort<'_>) {
        while !self.tally.finished.load(Ordering::Acquire) {
            let msg = match back.recv_timeout(END_POLL) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => continue,
                // Every sender gone (cannot happen while a reader or
                // decoder lives): nothing more can come back.
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match msg {
                Back::ReaderDone { sent } => self.tally.record(self.readers, |c| {
                    c.0 += 1;
                    c.1 += sent;
                }),
                Back::Pages {
                    batch,
                    flagged,
                    decoded_rows,
                } => {
                    if !abort.stopped() {
                        if let Err(e) = self.take_back(&batch, &flagged, decoded_rows) {
                            abort.fail_unless_downstream(e);
                        }
                    }
                    batch.recycle(self.pool);
                    self.tally.record(self.readers, |c| c.2 += 1);
                }
            }
        }
    }

    /// Counts a returned batch and converts the pages it flagged, sending
    /// their rows to the decoders.
    fn take_back(
        &self,
        batch: &PageBatch,
        flagged: &[u32],
        decoded_rows: u64,
    ) -> Result<(), ExportError> {
        self.counters
            .rows_direct
            .fetch_add(decoded_rows, Ordering::Relaxed);
        let mut rows = CopyChunk {
            partition: batch.partition,
            ..CopyChunk::default()
        };
        let converted = self.convert_flagged(batch, flagged, &mut rows)?;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let origin = BatchOrigin::of(batch.rel, Some(converted), rows.num_rows());
        self.work
            .send(Work::Converted {
                chunk: rows,
                origin,
            })
            .map_err(|_| downstream().into())
    }

    /// Converts the pages of `batch` its decoder `flagged` (indexes into
    /// `batch.pages`) with `transcode_page` into `rows`, sends the ranges
    /// of the ones the CPU refuses too to COPY, and counts the batch's
    /// pages. Returns the pages converted, in the order of their rows.
    fn convert_flagged(
        &self,
        batch: &PageBatch,
        flagged: &[u32],
        rows: &mut CopyChunk,
    ) -> Result<Vec<PageRows>, ExportError> {
        let (heap, counters) = (self.heap, self.counters);
        let Some(rel) = heap.rels.get(batch.rel) else {
            return Err(ExportError::Internal("a page batch of no relation".into()));
        };
        let bs = rel.rel.block_size;
        let mut runs = FallbackRuns::new(rel, &self.statements);
        let mut refused = 0u64;
        let mut converted = Vec::new();
        for &k in flagged {
            let (Some(&index), Some(&block), Some(&lsn)) = (
                batch.pages.get(k as usize),
                batch.blocks.get(k as usize),
                batch.lsns.get(k as usize),
            ) else {
                return Err(ExportError::Internal("a flagged page out of range".into()));
            };
            let page = batch.page(index as usize, bs)?;
            match transcode_page(&page, block, &rel.rel.layout, rows) {
                Ok(summary) => {
                    counters
                        .rows_direct
                        .fetch_add(summary.rows as u64, Ordering::Relaxed);
                    converted.push(PageRows {
                        block,
                        lsn,
                        rows: summary.rows as u32,
                    });
                }
                Err(fb) => {
                    refused += 1;
                    counters.count_fallback(reason_name(&fb.reason));
                    runs.add(u64::from(block))?;
                }
            }
        }
        runs.finish()?;
        counters
            .pages_direct
            .fetch_add(batch.pages.len() as u64 - refused, Ordering::Relaxed);
        if let PageReader::Gpu(_) = heap.page_reader(batch.rel) {
            counters.pages_gpu.fetch_add(
                (batch.pages.len() - flagged.len()) as u64,
                Ordering::Relaxed,
            );
        }
        Ok(converted)
    }
}

/// Runs of at most this many untrusted blocks are read through a block
/// list rather than a range of their own.
const LIST_RUN_BLOCKS: u64 = 4;

/// Blocks per block-list statement: a TID Scan of up to 291 line pointers a
/// block (8 KiB blocks) costs about 0.3 µs a line pointer, so 128 blocks
/// take about 10 ms, against about 3 ms of fixed cost per statement.
const LIST_BLOCKS: usize = 128;

/// Untrusted blocks of one relation, sent to COPY one range per run of
/// adjacent blocks, short runs gathered into block lists
/// ([`copy_sql_blocks`]): scattered changed pages (a refresh after an
/// UPDATE of a few rows here and there) cost one statement per list, not
/// one per page.
pub(super) struct FallbackRuns<'a> {
    rel: &'a HeapRel,
    statements: &'a Sender<String>,
    run: Option<(u64, u64)>,
    listed: Vec<u64>,
}

impl<'a> FallbackRuns<'a> {
    pub(super) fn new(rel: &'a HeapRel, statements: &'a Sender<String>) -> FallbackRuns<'a> {
        FallbackRuns {
            rel,
            statements,
            run: None,
            listed: Vec::new(),
        }
    }

    /// Adds `block`; a block not adjacent to the current run sends it.
    pub(super) fn add(&mut self, block: u64) -> Result<(), ExportError> {
        match self.run {
            Some((a, b)) if b == block => self.run = Some((a, block + 1)),
            _ => {
                self.flush()?;
                self.run = Some((block, block + 1));
            }
        }
        Ok(())
    }

    /// Ends the current run, if any: sent as a range, or added to the
    /// block list (sent once full).
    pub(super) fn flush(&mut self) -> Result<(), ExportError> {
        let Some((a, b)) = self.run.take() else {
            return Ok(());
        };
        if b - a > LIST_RUN_BLOCKS {
            return send_statement(
                self.statements,
                copy_sql(
                    &self.rel.spec,
                    Some(PageRange {
                        start: a,
                        end: Some(b),
                    }),
                ),
            );
        }
        self.listed.extend(a..b);
        if self.listed.len() >= LIST_BLOCKS {
            self.send_list()?;
        }
        Ok(())
    }

    /// Sends everything still held.
    pub(super) fn finish(&mut self) -> Result<(), ExportError> {
        self.flush()?;
        self.send_list()
    }

    fn send_list(&mut self) -> Result<(), ExportError> {
        if self.listed.is_empty() {
            return Ok(());
        }
        let r = &self.rel.rel;
        let sql = copy_sql_blocks(&self.rel.spec, &self.listed, max_items(r.block_size));
        self.listed.clear();
        send_statement(self.statements, sql)
    }
}

/// PostgreSQL's `MaxHeapTuplesPerPage`: line pointers a heap page of
/// `block_size` bytes can hold (a 24-byte page header; a 4-byte line
/// pointer and a MAXALIGNed 24-byte tuple header each).
fn max_items(block_size: usize) -> u32 {
    (block_size.saturating_sub(24) / 28) as u32
}

/// Queues a COPY statement for the connections.
fn send_statement(statements: &Sender<String>, sql: String) -> Result<(), ExportError> {
    statements.send(sql).map_err(|_| downstream().into())
}

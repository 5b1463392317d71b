//! The heap reader threads: each takes ranges of blocks, reads them with
//! `pread` (or cuFile into device memory), judges every page
//! ([`super::judge`]) and sends trusted pages on, whole or converted to
//! COPY rows here, and the ranges of the others to the COPY connections.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Sender;
use gpupg_format::heap::{transcode_page, VisibilityMap};
use gpupg_format::CopyChunk;
use gpupg_source::BufferPool;

use super::batch::{PageBatch, PageData};
use super::fallback::{Back, FallbackRuns, ReaderDone};
use super::judge::{bridge_gaps, reason_name, trust, MERGE_GAP};
use super::{HeapCounters, HeapPlan, HeapRel, PageReader, RANGE_BLOCKS};
use crate::carry::KeptPage;
use crate::source::Work;
use crate::state::downstream;
use crate::ExportError;

/// Where trusted pages go.
struct ReaderOut<'a> {
    work: &'a Sender<Work>,
    /// Counts the page batches sent, for the fallback side.
    done: ReaderDone,
}

impl ReaderOut<'_> {
    fn send_pages(&mut self, batch: PageBatch, pool: &BufferPool) -> Result<(), ExportError> {
        if batch.pages.is_empty() {
            batch.recycle(pool);
            return Ok(());
        }
        self.work
            .send(Work::Pages(batch))
            .map_err(|_| ExportError::from(downstream()))?;
        self.done.sent += 1;
        Ok(())
    }
}

/// One heap reader thread: takes block ranges until none are left.
/// Trusted pages become COPY rows (converted here on the CPU) or page
/// batches (for relations whose pages the GPU converts) sent to the
/// decoders on `work`; the ranges of other pages go to the COPY
/// connections through `statements`. Every page batch sent comes back to
/// the fallback side, which `back` tells how many were sent once the
/// reader ends. On a refresh, pages unchanged since
/// the previous load are not read at all ([`Reader::keep`]).
pub(crate) fn run_reader(
    heap: &HeapPlan,
    counters: &HeapCounters,
    reader: u32,
    pool: &BufferPool,
    work: &Sender<Work>,
    (statements, back): (&Sender<String>, Sender<Back>),
    stopped: &dyn Fn() -> bool,
) -> Result<(), ExportError> {
    let bs = heap.block_size();
    let total = *heap.starts.last().unwrap_or(&0);
    let mut r = Reader {
        heap,
        counters,
        reader,
        pool,
        out: ReaderOut {
            work,
            done: ReaderDone { back, sent: 0 },
        },
        stopped,
        bs,
        buf: Vec::new(),
        lsns: Vec::with_capacity(RANGE_BLOCKS as usize),
        local: CopyChunk::default(),
        batch: None,
        first_row: 0,
        // Flush before a page could push the rows past the pool's buffer
        // size.
        flush_at: pool.capacity().saturating_sub(4 * bs).max(bs),
        kept: Vec::new(),
    };
    loop {
        let global = counters
            .next_block
            .fetch_add(RANGE_BLOCKS, Ordering::Relaxed);
        if global >= total || stopped() {
            break;
        }
        let Some((rel_index, rel, start, n)) = heap.locate(global) else {
            break;
        };
        if n == 0 {
            // The padding after a relation's last block.
            continue;
        }
        let vm = VisibilityMap::new(&rel.vm, bs).map_err(|e| {
            ExportError::Invalid(format!("visibility map of {}: {e}", rel.rel.label))
        })?;
        let mut runs = FallbackRuns::new(rel, statements);
        let keep = r.keep(rel_index, rel, &vm, start, n)?;
        let mut i = 0u64;
        while i < n {
            if keep[i as usize] {
                i += 1;
                continue;
            }
            let len = keep[i as usize..]
                .iter()
                .position(|&k| k)
                .map_or(n - i, |l| l as u64);
            if !r.read_range(rel_index, rel, &vm, (start + i, len), &mut runs)? {
                break;
            }
            i += len;
        }
        runs.finish()?;
    }
    r.finish()
}

/// The state of one heap reader thread.
struct Reader<'a> {
    heap: &'a HeapPlan,
    counters: &'a HeapCounters,
    reader: u32,
    pool: &'a BufferPool,
    out: ReaderOut<'a>,
    stopped: &'a dyn Fn() -> bool,
    bs: usize,
    /// Pages converted here (relations whose pages the GPU does not take).
    buf: Vec<u8>,
    /// Each page's LSN read again after the read.
    lsns: Vec<u64>,
    /// Rows converted here, not yet sent.
    local: CopyChunk,
    /// Whole pages being gathered for the decoders.
    batch: Option<PageBatch>,
    first_row: u64,
    flush_at: usize,
    /// Pages kept from the previous load.
    kept: Vec<KeptPage>,
}

impl Reader<'_> {
    /// Which of blocks `start..start + n` of relation `rel_index` the
    /// previous load holds unchanged: tracked there, all-visible, and with
    /// the LSN they had then (read from the files, 24 bytes a block). Those
    /// are not read again.
    fn keep(
        &mut self,
        rel_index: usize,
        rel: &HeapRel,
        vm: &VisibilityMap<'_>,
        start: u64,
        n: u64,
    ) -> Result<Vec<bool>, ExportError> {
        let mut keep = vec![false; n as usize];
        let Some(prior) = self.heap.prior.get(rel_index).and_then(Option::as_ref) else {
            return Ok(keep);
        };
        let t = Instant::now();
        let (mut pages, mut rows) = (0u64, 0u64);
        for (i, k) in keep.iter_mut().enumerate() {
            let block = start + i as u64;
            let Some(p) = prior.get(block).filter(|p| p.lsn != 0) else {
                continue;
            };
            // A page dirty in shared buffers may hold changes its file lacks
            // under the LSN it had.
            if !vm.get(block as u32).all_visible || self.heap.sync.dirty(rel_index, block) {
                continue;
            }
            let lsn = rel.files.read_lsn(block).map_err(|e| {
                ExportError::Invalid(format!("reading the files of {}: {e}", rel.rel.label))
            })?;
            if lsn == p.lsn {
                *k = true;
                pages += 1;
                rows += p.rows as u64;
                self.kept.push(KeptPage {
                    rel: rel_index,
                    block: block as u32,
                    prior: p,
                });
            }
        }
        self.counters.add(&self.counters.read_nanos, t.elapsed());
        self.counters.pages_kept.fetch_add(pages, Ordering::Relaxed);
        self.counters.rows_kept.fetch_add(rows, Ordering::Relaxed);
        Ok(keep)
    }

    /// Reads blocks `start..start + n` of relation `rel_index` and sends
    /// their trusted pages on (whole, or as rows converted here) and the
    /// others to `runs`. Returns false when the export stopped.
    fn read_range(
        &mut self,
        rel_index: usize,
        rel: &HeapRel,
        vm: &VisibilityMap<'_>,
        (start, n): (u64, u64),
        runs: &mut FallbackRuns<'_>,
    ) -> Result<bool, ExportError> {
        let (heap, counters, bs) = (self.heap, self.counters, self.bs);
        // Pages that go to the decoders whole (the GPU page kernels or the
        // CPU page decoder, which check each page's line pointers and
        // checksum themselves), read into host memory or, through cuFile,
        // into device memory.
        let whole = !matches!(heap.page_reader(rel_index), PageReader::Rows);
        let Some(at) = self.make_room(rel_index, whole, n)? else {
            return Ok(false);
        };
        self.read_pages(rel_index, rel, (start, n), at, whole)?;

        let t = Instant::now();
        // Each page judged once from its header; trusted pages in a short
        // gap between untrusted ones go through COPY with them (MERGE_GAP).
        let verdicts: Vec<Result<bool, String>> = (0..n)
            .map(|i| {
                let header = match self.batch.as_ref().filter(|_| whole) {
                    Some(b) => b.header(at / bs + i as usize, bs),
                    None => self.buf.get(i as usize * bs..).unwrap_or(&[]),
                };
                let dirty = heap.sync.dirty(rel_index, start + i);
                trust(
                    (heap.fence, dirty),
                    vm,
                    start + i,
                    header,
                    self.lsns[i as usize],
                    bs,
                )
            })
            .collect();
        let untrusted: Vec<bool> = verdicts.iter().map(Result::is_err).collect();
        let bridged = bridge_gaps(&untrusted, MERGE_GAP);
        let mut flushing = std::time::Duration::ZERO;
        for (i, trusted) in (0..n).zip(verdicts) {
            let block = start + i;
            if bridged[i as usize] {
                counters.count_fallback("between untrusted pages".into());
                runs.add(block)?;
                continue;
            }
            // Ok(Some(rows)): converted here; Ok(None): sent whole (counted
            // as direct once converted); Err: why it goes through COPY.
            let verdict = match self.batch.as_mut().filter(|_| whole) {
                Some(b) => trusted.map(|trusted| {
                    if trusted {
                        let index = at / bs + i as usize;
                        b.push_page(index, block as u32, self.lsns[i as usize], bs);
                        None
                    } else {
                        Some(0)
                    }
                }),
                None => trusted.and_then(|trusted| {
                    let page = &self.buf[i as usize * bs..(i as usize + 1) * bs];
                    convert_trusted(rel, block, page, trusted, &mut self.local).map(Some)
                }),
            };
            match verdict {
                Ok(direct) => {
                    runs.flush()?;
                    if let Some(rows) = direct {
                        counters.pages_direct.fetch_add(1, Ordering::Relaxed);
                        counters
                            .rows_direct
                            .fetch_add(rows as u64, Ordering::Relaxed);
                    }
                }
                Err(why) => {
                    counters.count_fallback(why);
                    runs.add(block)?;
                }
            }
            if self.local.data.len() >= self.flush_at {
                let f = Instant::now();
                self.flush_rows()?;
                flushing += f.elapsed();
            }
        }
        runs.flush()?;
        if let Some(b) = self.batch.as_mut().filter(|_| whole) {
            b.filled = at + n as usize * bs;
        }
        counters.add(
            &counters.convert_nanos,
            t.elapsed().saturating_sub(flushing),
        );
        counters.add(&counters.flush_nanos, flushing);
        Ok(true)
    }

    /// Makes room for `n` blocks of relation `rel_index`: in the page batch
    /// being gathered (sent on first when full or of another relation, a
    /// new one taken from the pool or the cuFile buffers), or in `buf` for
    /// pages converted here. Returns where in the batch they go (`None`:
    /// the export stopped while waiting for a buffer).
    fn make_room(
        &mut self,
        rel_index: usize,
        whole: bool,
        n: u64,
    ) -> Result<Option<usize>, ExportError> {
        let (heap, counters, bs) = (self.heap, self.counters, self.bs);
        let gds = heap.gds.as_ref().filter(|g| whole && g.reads(rel_index));
        let bytes_n = n as usize * bs;
        let range_bytes = RANGE_BLOCKS as usize * bs;
        if whole {
            if let Some(b) = self.batch.take() {
                if b.rel == rel_index && b.filled + bytes_n <= b.capacity() {
                    self.batch = Some(b);
                } else {
                    let f = Instant::now();
                    self.out.send_pages(b, self.pool)?;
                    counters.add(&counters.flush_nanos, f.elapsed());
                }
            }
            if self.batch.is_none() {
                let f = Instant::now();
                let data = match gds {
                    Some(g) => match g.take(self.stopped) {
                        Some(chunk) => PageData::Device(chunk),
                        None => return Ok(None),
                    },
                    None => {
                        let mut data = self.pool.take();
                        self.pool.ensure_len(&mut data, range_bytes, 0);
                        PageData::Host(data)
                    }
                };
                counters.add(&counters.flush_nanos, f.elapsed());
                self.batch = Some(PageBatch {
                    data,
                    pages: Vec::new(),
                    blocks: Vec::new(),
                    lsns: Vec::new(),
                    rows: Vec::new(),
                    rel: rel_index,
                    partition: self.reader,
                    filled: 0,
                });
            }
        } else if self.buf.len() < range_bytes {
            self.buf.resize(range_bytes, 0);
        }
        Ok(Some(
            self.batch
                .as_ref()
                .filter(|_| whole)
                .map_or(0, |b| b.filled),
        ))
    }

    /// Reads blocks `start..start + n` of relation `rel_index` into the
    /// batch at `at` (or into `buf`), then each page's LSN again.
    fn read_pages(
        &mut self,
        rel_index: usize,
        rel: &HeapRel,
        (start, n): (u64, u64),
        at: usize,
        whole: bool,
    ) -> Result<(), ExportError> {
        let (heap, counters, bs) = (self.heap, self.counters, self.bs);
        let gds = heap.gds.as_ref().filter(|g| whole && g.reads(rel_index));
        let bytes_n = n as usize * bs;
        let t = Instant::now();
        let read_error = |e: String| {
            ExportError::Invalid(format!("reading the files of {}: {e}", rel.rel.label))
        };
        match self.batch.as_mut().filter(|_| whole).map(|b| &mut b.data) {
            Some(PageData::Host(data)) => rel
                .files
                .read_blocks(start, &mut data[at..at + bytes_n])
                .map_err(|e| read_error(e.to_string()))?,
            Some(PageData::Device(chunk)) => match gds {
                Some(g) => g
                    .read(rel_index, &rel.files, (start, n), chunk, at)
                    .map_err(read_error)?,
                None => return Err(read_error("internal: device pages without cuFile".into())),
            },
            None => rel
                .files
                .read_blocks(start, &mut self.buf[..bytes_n])
                .map_err(|e| read_error(e.to_string()))?,
        }
        // Read each page's LSN again now that the whole range is in: a page
        // being written during the read shows a newer LSN here.
        self.lsns.clear();
        for b in start..start + n {
            self.lsns.push(
                rel.files
                    .read_lsn(b)
                    .map_err(|e| read_error(e.to_string()))?,
            );
        }
        counters.add(&counters.read_nanos, t.elapsed());
        Ok(())
    }

    /// Sends the rows converted here as one chunk in a pool buffer.
    fn flush_rows(&mut self) -> Result<(), ExportError> {
        flush(
            &mut self.local,
            self.pool,
            self.out.work,
            self.reader,
            &mut self.first_row,
        )
    }

    /// Sends what is still held, and hands the kept pages to the counters.
    fn finish(mut self) -> Result<(), ExportError> {
        if let Some(b) = self.batch.take() {
            self.out.send_pages(b, self.pool)?;
        }
        if !self.local.row_starts.is_empty() {
            self.flush_rows()?;
        }
        self.counters
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(&mut self.kept);
        Ok(())
    }
}

/// Converts `page` (block `block`), judged by [`trust`], into rows of
/// `out`: none for a new page (`trusted` false), else its rows, or why the
/// CPU converter refuses it.
fn convert_trusted(
    heap: &HeapRel,
    block: u64,
    page: &[u8],
    trusted: bool,
    out: &mut CopyChunk,
) -> Result<usize, String> {
    if !trusted {
        return Ok(0);
    }
    match transcode_page(page, block as u32, &heap.rel.layout, out) {
        Ok(summary) => Ok(summary.rows),
        Err(fb) => Err(reason_name(&fb.reason)),
    }
}

/// Sends the rows of `local` as one chunk in a pool buffer.
fn flush(
    local: &mut CopyChunk,
    pool: &BufferPool,
    chunks: &Sender<Work>,
    reader: u32,
    first_row: &mut u64,
) -> Result<(), ExportError> {
    let need = local.data.len();
    let mut data = pool.take();
    // A pool buffer is never reallocated: more rows than it holds get a
    // buffer of their own.
    pool.ensure_len(&mut data, need, 0);
    data[..need].copy_from_slice(&local.data);
    data.truncate(need);
    let rows = local.row_starts.len() as u64;
    let chunk = CopyChunk {
        data,
        row_starts: std::mem::take(&mut local.row_starts),
        row_ends: std::mem::take(&mut local.row_ends),
        partition: reader,
        first_row: *first_row,
    };
    local.data.clear();
    *first_row += rows;
    chunks
        .send(Work::Rows(chunk))
        .map_err(|_| downstream().into())
}

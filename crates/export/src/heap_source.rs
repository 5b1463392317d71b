//! The direct heap path's reading side: decides whether a table is read from
//! its files, and runs the reader threads that turn trusted pages into COPY
//! rows and send every other page's range to the COPY connections.
//!
//! Why a page read from the files holds exactly the snapshot's rows: the
//! export's transaction holds the snapshot S for its whole run, so VACUUM
//! cannot mark a page all-visible while it holds a row S does not see (such
//! a row's inserter or deleter is not older than S's xmin, which holds back
//! the horizon). After S is taken, the WAL insert position F (the fence) is
//! read and a CHECKPOINT writes every page dirtied before it, so the files
//! hold every change made before F. A page is trusted when the visibility
//! map and the page's own header say all-visible, the page LSN is at most F
//! (it has not changed since), the LSN read again after the page still
//! matches (it was not being written while read), its checksum verifies
//! (when the cluster has checksums) and every value converts. Anything else
//! is read with COPY `WHERE ctid >= '(a,0)' AND ctid < '(b,0)'` under S, and
//! blocks past the end of the files with one open-ended range.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::Sender;
use gpupg_format::heap::{transcode_page, FallbackReason, PageHeader, VisibilityMap};
use gpupg_format::CopyChunk;
use gpupg_source::heap::{checkpoint, heap_relation, wal_insert_lsn, HeapRelation, RelationFiles};
use gpupg_source::{copy_sql, BufferPool, Connection, PageRange, ReadSpec, SourceError};
use serde::Serialize;

use crate::plan::ExportPlan;
use crate::{ExportError, ExportRequest, Source, Target};

/// Blocks read by one positioned read (8 MiB at 8 KiB blocks).
const RANGE_BLOCKS: u64 = 1024;

/// A table the export reads from its files: the table itself, or the leaf
/// partitions of a partitioned one.
pub(crate) struct HeapPlan {
    pub rels: Vec<HeapRel>,
    /// Where each relation's blocks start in the readers' shared block
    /// space: each starts at a multiple of the range size, so a range never
    /// spans two relations.
    starts: Vec<u64>,
    /// WAL insert position taken after the snapshot, before the checkpoint.
    fence: u64,
    pub checkpoint_seconds: f64,
}

/// One heap relation of the plan.
pub(crate) struct HeapRel {
    pub rel: HeapRelation,
    pub files: RelationFiles,
    vm: Vec<u8>,
    /// What COPY selects from this relation for its untrusted pages.
    spec: ReadSpec,
}

/// The source an export runs with.
pub(crate) enum Chosen {
    Copy { why: Option<String> },
    Heap(Box<HeapPlan>),
}

/// Decides between the heap files and COPY (`req.source`), and prepares the
/// heap path: catalog, fence, checkpoint, files, visibility map. Called
/// after the snapshot is taken and before any data is read.
pub(crate) fn choose_source(
    req: &ExportRequest<'_>,
    plan: &ExportPlan,
) -> Result<Chosen, ExportError> {
    if req.source == Source::Copy {
        return Ok(Chosen::Copy { why: None });
    }
    let strict = req.source == Source::Heap;
    match prepare(req, plan) {
        Ok(p) => Ok(Chosen::Heap(Box::new(p))),
        Err(Unavailable::Reason(why)) if !strict => Ok(Chosen::Copy { why: Some(why) }),
        Err(Unavailable::Reason(why)) => Err(ExportError::Invalid(format!("--source heap: {why}"))),
        Err(Unavailable::Error(e)) => Err(e),
    }
}

enum Unavailable {
    /// Why the heap path does not apply (auto mode reads through COPY).
    Reason(String),
    /// A failure that stops the export whatever the mode.
    Error(ExportError),
}

impl From<SourceError> for Unavailable {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::HeapUnavailable { reason, .. } => Unavailable::Reason(reason),
            e => Unavailable::Error(e.into()),
        }
    }
}

fn prepare(req: &ExportRequest<'_>, plan: &ExportPlan) -> Result<HeapPlan, Unavailable> {
    let reason = |s: &str| Unavailable::Reason(s.to_string());
    if matches!(req.target, Target::Query(_)) {
        return Err(reason("a query is read through COPY"));
    }
    if req.filter.is_some() {
        return Err(reason("--where needs the server to evaluate it (COPY)"));
    }
    let Some((table, spec)) = &plan.table else {
        return Err(reason("a query is read through COPY"));
    };
    if req.source == Source::Auto && table.bytes < req.heap_threshold {
        return Err(Unavailable::Reason(format!(
            "the table ({:.1} MB) is smaller than --heap-threshold ({:.1} MB)",
            table.bytes as f64 / 1e6,
            req.heap_threshold as f64 / 1e6
        )));
    }
    // A partitioned table is read leaf by leaf; each leaf may lay its
    // columns out differently (dropped or reordered attributes).
    let leaves: Vec<&gpupg_source::TableInfo> = if table.is_partitioned() {
        table.partitions.iter().collect()
    } else {
        vec![table]
    };
    if leaves.is_empty() {
        return Err(reason("the partitioned table has no partitions"));
    }
    // Catalog and checkpoint on a connection of their own: a refused query
    // there must not abort the export's transaction.
    let mut probe = Connection::connect(&req.connect)?;
    let mut found = Vec::with_capacity(leaves.len());
    for leaf in &leaves {
        let rel = heap_relation(&mut probe, leaf, &plan.columns, req.data_dir.as_deref())?;
        let spec = ReadSpec {
            relation: leaf.qualified(),
            ..spec.clone()
        };
        found.push((rel, spec));
    }
    let fence = wal_insert_lsn(&mut probe).map_err(|e| {
        Unavailable::Reason(format!("cannot read the WAL position (a standby?): {e}"))
    })?;
    let t = Instant::now();
    checkpoint(&mut probe)?;
    let checkpoint_seconds = t.elapsed().as_secs_f64();
    let mut rels = Vec::with_capacity(found.len());
    let mut starts = Vec::with_capacity(found.len() + 1);
    let mut next = 0u64;
    for (rel, spec) in found {
        // The files are measured after the checkpoint.
        let files = RelationFiles::open(&rel.base_path, rel.block_size, rel.segment_blocks)
            .map_err(|e| {
                Unavailable::Reason(format!("cannot open the files of {}: {e}", rel.label))
            })?;
        let vm = files.read_visibility_map().map_err(|e| {
            Unavailable::Reason(format!(
                "cannot read the visibility map of {}: {e}",
                rel.label
            ))
        })?;
        starts.push(next);
        next += files.nblocks().next_multiple_of(RANGE_BLOCKS);
        rels.push(HeapRel {
            rel,
            files,
            vm,
            spec,
        });
    }
    starts.push(next);
    Ok(HeapPlan {
        rels,
        starts,
        fence,
        checkpoint_seconds,
    })
}

impl HeapPlan {
    /// The COPY statements for the blocks past the end of each relation's
    /// files (rows the snapshot sees cannot be there, but the ranges cost
    /// nothing and keep the result exact if they were).
    pub(crate) fn tail_statements(&self) -> Vec<String> {
        self.rels
            .iter()
            .map(|r| {
                copy_sql(
                    &r.spec,
                    Some(PageRange {
                        start: r.files.nblocks(),
                        end: None,
                    }),
                )
            })
            .collect()
    }

    /// Blocks of all relations.
    pub(crate) fn blocks(&self) -> u64 {
        self.rels.iter().map(|r| r.files.nblocks()).sum()
    }

    /// Where the files are, for the summary.
    pub(crate) fn describe_files(&self) -> String {
        match self.rels.as_slice() {
            [one] => one.rel.base_path.display().to_string(),
            many => format!("{} partitions", many.len()),
        }
    }

    /// The relation and its local block range for a range of the shared
    /// block space starting at `start`; `None` past the end.
    fn locate(&self, start: u64) -> Option<(&HeapRel, u64, u64)> {
        let i = self
            .starts
            .partition_point(|&s| s <= start)
            .checked_sub(1)?;
        let rel = self.rels.get(i)?;
        let local = start - self.starts[i];
        let n = RANGE_BLOCKS.min(rel.files.nblocks().saturating_sub(local));
        Some((rel, local, n))
    }
}

/// What the heap readers did, summed over threads.
#[derive(Default)]
pub(crate) struct HeapCounters {
    next_block: AtomicU64,
    pages_direct: AtomicU64,
    pages_fallback: AtomicU64,
    rows_direct: AtomicU64,
    read_nanos: AtomicU64,
    convert_nanos: AtomicU64,
    flush_nanos: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
}

/// The heap path in the report.
#[derive(Debug, Clone, Serialize)]
pub struct HeapReport {
    /// Pages decoded from the files.
    pub pages_direct: u64,
    /// Pages read through COPY instead, by reason.
    pub pages_fallback: u64,
    pub fallback_reasons: BTreeMap<String, u64>,
    /// Rows taken from the files (the rest came through COPY).
    pub rows_direct: u64,
    /// Blocks in the files after the checkpoint.
    pub blocks: u64,
    pub block_size: usize,
    pub checksums: bool,
    /// How the files were read.
    pub io: String,
    pub checkpoint_seconds: f64,
    /// Thread-seconds reading files, converting pages to COPY rows, and
    /// handing chunks to the decoders (waiting for a free buffer and a free
    /// decoder included: large when decoding or writing is the bottleneck).
    pub read_seconds: f64,
    pub convert_seconds: f64,
    pub handoff_seconds: f64,
    /// The WAL position no trusted page is newer than.
    pub fence_lsn: String,
}

impl HeapCounters {
    pub(crate) fn report(&self, heap: &HeapPlan, readers: usize) -> HeapReport {
        HeapReport {
            pages_direct: self.pages_direct.load(Ordering::Relaxed),
            pages_fallback: self.pages_fallback.load(Ordering::Relaxed),
            fallback_reasons: self
                .reasons
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            rows_direct: self.rows_direct.load(Ordering::Relaxed),
            blocks: heap.blocks(),
            block_size: heap.rels.first().map_or(0, |r| r.rel.block_size),
            checksums: heap.rels.iter().any(|r| r.rel.checksums),
            io: format!("pread, {readers} threads"),
            checkpoint_seconds: heap.checkpoint_seconds,
            read_seconds: self.read_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            convert_seconds: self.convert_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            handoff_seconds: self.flush_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            fence_lsn: format!("{:X}/{:X}", heap.fence >> 32, heap.fence & 0xffff_ffff),
        }
    }
}

/// Why a page is read through COPY, as counted in the report.
fn reason_name(r: &FallbackReason) -> String {
    match r {
        FallbackReason::ExternalToast => "values stored out of line (TOAST)".into(),
        FallbackReason::Lz4Compressed => "lz4-compressed values".into(),
        FallbackReason::UnsupportedType(t) => format!("type {t} is not converted from the heap"),
        FallbackReason::UnknownEnumValue(_) => "enum value unknown to the catalog read".into(),
        FallbackReason::ChunkFull => "chunk full".into(),
        FallbackReason::Corrupt(c) => match c {
            gpupg_format::heap::Corruption::Checksum(_) => "checksum failure".into(),
            _ => "page not understood".into(),
        },
    }
}

/// One heap reader thread: takes block ranges until none are left.
/// Trusted pages become COPY rows sent to the decoders on `chunks`; the
/// ranges of other pages go to the COPY connections on `statements`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_reader(
    heap: &HeapPlan,
    counters: &HeapCounters,
    reader: u32,
    pool: &BufferPool,
    chunks: &Sender<CopyChunk>,
    statements: &Sender<String>,
    stopped: &dyn Fn() -> bool,
) -> Result<(), ExportError> {
    let bs = heap.rels.first().map_or(0, |r| r.rel.block_size);
    let total = *heap.starts.last().unwrap_or(&0);
    let mut buf = vec![0u8; RANGE_BLOCKS as usize * bs];
    let mut lsns = Vec::with_capacity(RANGE_BLOCKS as usize);
    let mut local = CopyChunk::default();
    let mut first_row = 0u64;
    // Flush before a page could push the rows past the pool's buffer size.
    let flush_at = pool.capacity().saturating_sub(4 * bs).max(bs);
    let send_failed = || SourceError::Downstream("another export thread failed".into());
    loop {
        let global = counters
            .next_block
            .fetch_add(RANGE_BLOCKS, Ordering::Relaxed);
        if global >= total || stopped() {
            break;
        }
        let Some((rel, start, n)) = heap.locate(global) else {
            break;
        };
        if n == 0 {
            // The padding after a relation's last block.
            continue;
        }
        let vm = VisibilityMap::new(&rel.vm, bs).map_err(|e| {
            ExportError::Invalid(format!("visibility map of {}: {e}", rel.rel.label))
        })?;
        let t = Instant::now();
        let bytes = &mut buf[..n as usize * bs];
        rel.files.read_blocks(start, bytes).map_err(|e| {
            ExportError::Invalid(format!("reading the files of {}: {e}", rel.rel.label))
        })?;
        // Read each page's LSN again now that the whole range is in: a page
        // being written during the read shows a newer LSN here.
        lsns.clear();
        for b in start..start + n {
            lsns.push(rel.files.read_lsn(b).map_err(|e| {
                ExportError::Invalid(format!("reading the files of {}: {e}", rel.rel.label))
            })?);
        }
        counters
            .read_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);

        let t = Instant::now();
        let mut flushing = std::time::Duration::ZERO;
        let mut run: Option<(u64, u64)> = None;
        let fallback = |run: &mut Option<(u64, u64)>| -> Result<(), ExportError> {
            if let Some((a, b)) = run.take() {
                let sql = copy_sql(
                    &rel.spec,
                    Some(PageRange {
                        start: a,
                        end: Some(b),
                    }),
                );
                statements.send(sql).map_err(|_| send_failed())?;
            }
            Ok(())
        };
        for i in 0..n {
            let block = start + i;
            let page = &bytes[i as usize * bs..(i as usize + 1) * bs];
            let verdict = judge(
                rel,
                heap.fence,
                &vm,
                block,
                page,
                lsns[i as usize],
                &mut local,
            );
            match verdict {
                Ok(rows) => {
                    fallback(&mut run)?;
                    counters.pages_direct.fetch_add(1, Ordering::Relaxed);
                    counters
                        .rows_direct
                        .fetch_add(rows as u64, Ordering::Relaxed);
                }
                Err(why) => {
                    counters.pages_fallback.fetch_add(1, Ordering::Relaxed);
                    *counters
                        .reasons
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(why)
                        .or_insert(0) += 1;
                    run = match run {
                        Some((a, b)) if b == block => Some((a, block + 1)),
                        r => {
                            let mut r = r;
                            fallback(&mut r)?;
                            Some((block, block + 1))
                        }
                    };
                }
            }
            if local.data.len() >= flush_at {
                let f = Instant::now();
                flush(&mut local, pool, chunks, reader, &mut first_row)?;
                flushing += f.elapsed();
            }
        }
        fallback(&mut run)?;
        counters.convert_nanos.fetch_add(
            t.elapsed().saturating_sub(flushing).as_nanos() as u64,
            Ordering::Relaxed,
        );
        counters
            .flush_nanos
            .fetch_add(flushing.as_nanos() as u64, Ordering::Relaxed);
    }
    if !local.row_starts.is_empty() {
        flush(&mut local, pool, chunks, reader, &mut first_row)?;
    }
    Ok(())
}

/// Converts `page` (block `block`) into rows of `out` if it can be trusted;
/// otherwise says why not.
fn judge(
    heap: &HeapRel,
    fence: u64,
    vm: &VisibilityMap<'_>,
    block: u64,
    page: &[u8],
    lsn_after: u64,
    out: &mut CopyChunk,
) -> Result<usize, String> {
    let Some(header) = PageHeader::read(page) else {
        return Err("page not understood".into());
    };
    if header.is_new() {
        // Never initialized: no rows (and no LSN to check).
        return Ok(0);
    }
    if !vm.get(block as u32).all_visible || !header.all_visible() {
        return Err("not all-visible".into());
    }
    if header.lsn > fence {
        return Err("changed after the snapshot".into());
    }
    if lsn_after != header.lsn {
        return Err("written while being read".into());
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
    chunks: &Sender<CopyChunk>,
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
        .send(chunk)
        .map_err(|_| SourceError::Downstream("another export thread failed".into()).into())
}

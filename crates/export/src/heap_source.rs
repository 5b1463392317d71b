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
//! (when the cluster has checksums) and every value converts; and before
//! any of that, the files are proven the server's own and current
//! (`gpupg_source::heap::prove_files`). Anything else
//! is read with COPY `WHERE ctid >= '(a,0)' AND ctid < '(b,0)'` under S, and
//! blocks past the end of the files with one open-ended range.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use arrow_schema::SchemaRef;
use crossbeam_channel::Sender;
use gpupg_format::heap::page::{LpFlags, Page};
use gpupg_format::heap::{transcode_page, FallbackReason, PageHeader, TupleLayout, VisibilityMap};
use gpupg_format::CopyChunk;
use gpupg_gpu::{PageLayout, PagesIn};
use gpupg_source::heap::{
    checkpoint, heap_relation, prove_files, wal_insert_lsn, FilesProof, HeapRelation, RelationFiles,
};
use gpupg_source::{
    copy_sql, copy_sql_blocks, BufferPool, Connection, PageRange, ReadSpec, SourceError,
};
use serde::Serialize;

use crate::carry::{KeptPage, PageMap, PageRows, PriorPages};
use crate::heap_io::{gpudirect_choice, DeviceChunk, GdsReads};
use crate::interrupt::Interrupts;
use crate::plan::ExportPlan;
use crate::{ExportError, ExportRequest, GpuSelection, HeapIo, Source, Target};

/// Blocks read by one positioned read (8 MiB at 8 KiB blocks).
const RANGE_BLOCKS: u64 = 1024;

/// Trusted pages in a gap of fewer blocks than this between two untrusted
/// ones are read through COPY with them, in one range. One COPY statement
/// (parse, plan, a TID range scan's start-up, the binary header) costs
/// about as much as 50 pages sent through COPY; without this, an UPDATE of
/// 1% of lineorder's rows (about 16% of its pages left not all-visible,
/// scattered) made one statement per run of such pages: 22 s into device
/// memory, slower than COPY of the whole table.
const MERGE_GAP: usize = 32;

/// Which trusted pages (`!untrusted[i]`) lie in a gap of fewer than `gap`
/// pages between two untrusted ones.
fn bridge_gaps(untrusted: &[bool], gap: usize) -> Vec<bool> {
    let mut bridged = vec![false; untrusted.len()];
    let mut last_untrusted: Option<usize> = None;
    for (i, &u) in untrusted.iter().enumerate() {
        if !u {
            continue;
        }
        if let Some(prev) = last_untrusted {
            if i - prev - 1 < gap {
                bridged[prev + 1..i].iter_mut().for_each(|b| *b = true);
            }
        }
        last_untrusted = Some(i);
    }
    bridged
}

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
    /// What proved the files the server's own and current.
    proof: FilesProof,
    /// Per relation, who reads its trusted pages.
    page_readers: Vec<PageReader>,
    /// The files read through cuFile, when they are ([`HeapPlan::use_gds`]).
    gds: Option<GdsReads>,
    /// Why the files are read with `pread` although the GPU converts pages.
    pread_why: Option<String>,
    /// Per relation, the pages a previous load holds ([`Self::keep_from`]).
    prior: Vec<Option<PriorPages>>,
}

/// Who reads a relation's trusted pages.
pub(crate) enum PageReader {
    /// The heap readers convert them into binary COPY rows for the
    /// decoders (`transcode_page`).
    Rows,
    /// The readers send them whole to the decoders, whose GPU page kernels
    /// convert them ([`HeapPlan::use_gpu_pages`]).
    Gpu(PageLayout),
    /// The readers send them whole to the decoders, which decode them into
    /// columns on the CPU ([`HeapPlan::use_cpu_pages`]).
    Cpu,
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
    interrupts: &Interrupts,
) -> Result<Chosen, ExportError> {
    if req.source == Source::Copy {
        return Ok(Chosen::Copy { why: None });
    }
    let strict = req.source == Source::Heap;
    match prepare(req, plan, interrupts) {
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

fn prepare(
    req: &ExportRequest<'_>,
    plan: &ExportPlan,
    interrupts: &Interrupts,
) -> Result<HeapPlan, Unavailable> {
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
    interrupts.watch(&probe);
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
    // Before any page is trusted: the files must be the server's own and
    // current (a stale copy or another cluster's files pass every page check).
    let pairs: Vec<_> = rels.iter().map(|r| (&r.rel, &r.files)).collect();
    let proof = prove_files(&mut probe, fence, &pairs)?;
    Ok(HeapPlan {
        page_readers: rels.iter().map(|_| PageReader::Rows).collect(),
        rels,
        starts,
        fence,
        checkpoint_seconds,
        proof,
        gds: None,
        pread_why: None,
        prior: Vec::new(),
    })
}

impl HeapPlan {
    /// Makes the readers hand trusted pages to the decoders whole, to be
    /// converted by the GPU page kernels, for every relation whose layout
    /// they convert. Returns why the others are converted on the CPU.
    pub(crate) fn use_gpu_pages(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for (i, r) in self.rels.iter().enumerate() {
            match PageLayout::new(&r.rel.layout) {
                Ok(l) => self.page_readers[i] = PageReader::Gpu(l),
                Err(why) => notes.push(format!(
                    "heap pages of {} converted on the CPU: {why}",
                    r.rel.label
                )),
            }
        }
        notes
    }

    /// Makes the readers hand trusted pages to the decoders whole, to be
    /// decoded straight into columns on the CPU (the CPU engine).
    pub(crate) fn use_cpu_pages(&mut self) {
        for r in &mut self.page_readers {
            *r = PageReader::Cpu;
        }
    }

    /// Reads the files of the relations whose pages the GPU converts
    /// through cuFile, as `policy` says: `Auto` when GPU `device` is among
    /// those `selection` chooses for the files and cuFile registers every
    /// segment file and reads them other than in compatibility mode (else
    /// `pread`, and the report says why), `CuFile` whenever it registers
    /// them (else the export fails). `buffers` device buffers of
    /// `buffer_bytes` are allocated for the reads.
    pub(crate) fn use_gds(
        &mut self,
        policy: HeapIo,
        (devices, selection): (&[usize], &GpuSelection),
        buffers: usize,
        buffer_bytes: usize,
    ) -> Result<(), ExportError> {
        if policy == HeapIo::CuFile && !self.gpu_pages() {
            return Err(ExportError::Invalid(
                "--heap-io cufile reads pages for the GPU page kernels: it needs the GPU engine and a table whose pages they convert".into(),
            ));
        }
        if policy == HeapIo::Pread || !self.gpu_pages() {
            return Ok(());
        }
        // cuFile reads into one GPU's memory; pages for several GPUs go
        // through host memory, which every GPU copies from.
        let device = match devices {
            [one] => *one,
            _ if policy == HeapIo::CuFile => {
                return Err(ExportError::Invalid(
                    "--heap-io cufile reads into one GPU's memory: give one GPU, not --devices with several".into(),
                ))
            }
            _ => {
                self.pread_why = Some(format!(
                    "the pages go to {} GPUs; cuFile reads into one",
                    devices.len()
                ));
                return Ok(());
            }
        };
        // Auto: GPU-Direct only where it can be (the driver), and from the
        // GPUs chosen for the files (PCIe distance, --gpu-selection).
        if policy == HeapIo::Auto {
            let paths: Vec<&std::path::Path> = self
                .rels
                .iter()
                .map(|r| r.rel.base_path.as_path())
                .collect();
            let why = gpupg_gpu::gpudirect_unavailable()
                .or_else(|| gpudirect_choice(device, &paths, selection).err());
            if let Some(why) = why {
                self.pread_why = Some(why);
                return Ok(());
            }
        }
        let rels: Vec<_> = self
            .rels
            .iter()
            .zip(&self.page_readers)
            .map(|(r, reader)| matches!(reader, PageReader::Gpu(_)).then_some(&r.files))
            .collect();
        let bs = self.block_size().max(1);
        let buffer_bytes = buffer_bytes
            .max(RANGE_BLOCKS as usize * bs)
            .next_multiple_of(bs);
        match GdsReads::open(
            device,
            policy == HeapIo::CuFile,
            &rels,
            buffers,
            buffer_bytes,
        ) {
            Ok(g) => self.gds = Some(g),
            Err(why) if policy == HeapIo::Auto => self.pread_why = Some(why),
            Err(why) => return Err(ExportError::Invalid(format!("--heap-io cufile: {why}"))),
        }
        Ok(())
    }

    /// How the files are read, for the summary and the report:
    /// "cuFile into GPU 0 (compatibility mode), 16 threads" or
    /// "pread, 16 threads (cuFile: why not)".
    pub(crate) fn io_description(&self, device: usize, readers: usize) -> String {
        match (&self.gds, &self.pread_why) {
            (Some(g), _) => format!("cuFile into GPU {device} ({}), {readers} threads", g.mode),
            (None, Some(why)) => format!("pread, {readers} threads (cuFile: {why})"),
            (None, None) => format!("pread, {readers} threads"),
        }
    }

    fn block_size(&self) -> usize {
        self.rels.first().map_or(0, |r| r.rel.block_size)
    }

    /// A refresh: pages that `prior` (the previous load, decoded with
    /// `schema`) holds and that have not changed since are kept, not read.
    /// Returns why nothing can be kept, when so.
    pub(crate) fn keep_from(&mut self, prior: &PageMap, schema: &SchemaRef) -> Option<String> {
        if prior.schema.as_ref() != Some(schema) {
            return Some("every page read again: the columns changed since the last load".into());
        }
        self.prior = self
            .rels
            .iter()
            .map(|r| prior.index(&r.rel.base_path))
            .collect();
        if self.prior.iter().all(Option::is_none) {
            return Some(
                "every page read again: the table's files changed since the last load (TRUNCATE, VACUUM FULL, CLUSTER or a rewrite)"
                    .into(),
            );
        }
        None
    }

    /// The files of each relation, as [`PageMap::rels`] names them.
    pub(crate) fn rel_paths(&self) -> Vec<std::path::PathBuf> {
        self.rels.iter().map(|r| r.rel.base_path.clone()).collect()
    }

    /// Whether any relation's pages go to the GPU page kernels.
    pub(crate) fn gpu_pages(&self) -> bool {
        self.page_readers
            .iter()
            .any(|r| matches!(r, PageReader::Gpu(_)))
    }

    /// Whether any relation's pages are decoded on the CPU without rows.
    pub(crate) fn cpu_pages(&self) -> bool {
        self.page_readers
            .iter()
            .any(|r| matches!(r, PageReader::Cpu))
    }

    /// Who reads relation `rel`'s pages.
    pub(crate) fn page_reader(&self, rel: usize) -> &PageReader {
        self.page_readers.get(rel).unwrap_or(&PageReader::Rows)
    }

    /// The heap layout of relation `rel`.
    pub(crate) fn layout(&self, rel: usize) -> Option<&TupleLayout> {
        self.rels.get(rel).map(|r| &r.rel.layout)
    }

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

    /// The relation (and its index) and its local block range for a range
    /// of the shared block space starting at `start`; `None` past the end.
    fn locate(&self, start: u64) -> Option<(usize, &HeapRel, u64, u64)> {
        let i = self
            .starts
            .partition_point(|&s| s <= start)
            .checked_sub(1)?;
        let rel = self.rels.get(i)?;
        let local = start - self.starts[i];
        let n = RANGE_BLOCKS.min(rel.files.nblocks().saturating_sub(local));
        Some((i, rel, local, n))
    }
}

/// What the heap readers did, summed over threads.
#[derive(Default)]
pub(crate) struct HeapCounters {
    next_block: AtomicU64,
    pages_direct: AtomicU64,
    pages_fallback: AtomicU64,
    /// Pages converted by the GPU page kernels (part of pages_direct).
    pages_gpu: AtomicU64,
    pub(crate) rows_direct: AtomicU64,
    /// Pages (and their rows) kept from the previous load.
    pages_kept: AtomicU64,
    rows_kept: AtomicU64,
    pub(crate) kept: Mutex<Vec<KeptPage>>,
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
    /// Of the direct pages, those converted to rows by the GPU page
    /// kernels (the rest on the CPU).
    pub pages_gpu: u64,
    pub fallback_reasons: BTreeMap<String, u64>,
    /// Rows taken from the files (the rest came through COPY).
    pub rows_direct: u64,
    /// On a refresh: pages unchanged since the previous load, not read
    /// again (their rows are copied from it), and their rows.
    pub pages_kept: u64,
    pub rows_kept: u64,
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
    /// What proved the files the server's own and current, and what could
    /// not be proven ("proven: same cluster (...); current (...); ...").
    pub files_proof: String,
}

impl HeapCounters {
    fn add(&self, counter: &AtomicU64, d: std::time::Duration) {
        counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn count_fallback(&self, why: String) {
        self.pages_fallback.fetch_add(1, Ordering::Relaxed);
        *self
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(why)
            .or_insert(0) += 1;
    }

    pub(crate) fn report(&self, heap: &HeapPlan, readers: usize, device: usize) -> HeapReport {
        HeapReport {
            pages_direct: self.pages_direct.load(Ordering::Relaxed),
            pages_fallback: self.pages_fallback.load(Ordering::Relaxed),
            pages_gpu: self.pages_gpu.load(Ordering::Relaxed),
            fallback_reasons: self
                .reasons
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            rows_direct: self.rows_direct.load(Ordering::Relaxed),
            pages_kept: self.pages_kept.load(Ordering::Relaxed),
            rows_kept: self.rows_kept.load(Ordering::Relaxed),
            blocks: heap.blocks(),
            block_size: heap.rels.first().map_or(0, |r| r.rel.block_size),
            checksums: heap.rels.iter().any(|r| r.rel.checksums),
            io: heap.io_description(device, readers),
            checkpoint_seconds: heap.checkpoint_seconds,
            read_seconds: self.read_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            convert_seconds: self.convert_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            handoff_seconds: self.flush_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            fence_lsn: format!("{:X}/{:X}", heap.fence >> 32, heap.fence & 0xffff_ffff),
            files_proof: heap.proof.describe(),
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

/// What the readers send the decoders.
pub(crate) enum Work {
    /// Binary COPY rows (from a connection, or converted by a heap reader).
    Rows(CopyChunk),
    /// Trusted heap pages for the GPU page kernels.
    Pages(PageBatch),
}

/// Heap pages of one relation that the readers trust (all-visible, not
/// changed since the fence, header sound), read into a pool buffer or, by
/// cuFile, into device memory: the decoder converts them on the GPU (or
/// decodes them on the CPU), and the pages it flags with [`transcode_page`]
/// ([`HeapPlan::convert_flagged`]).
pub(crate) struct PageBatch {
    pub data: PageData,
    /// The trusted pages: their index in `data`, block number and LSN.
    pub pages: Vec<u32>,
    pub blocks: Vec<u32>,
    pub lsns: Vec<u64>,
    /// The rows of each page (its normal line pointers), counted by the
    /// reader when the pages are in host memory; empty when they are not.
    pub rows: Vec<u32>,
    /// The relation (index into the plan's relations).
    pub rel: usize,
    pub partition: u32,
    /// Bytes of `data` holding pages.
    filled: usize,
}

/// Where a batch's pages are.
pub(crate) enum PageData {
    /// A (page-locked, with the GPU engine) pool buffer.
    Host(Vec<u8>),
    /// Device memory filled by cuFile, with the pages' headers.
    Device(DeviceChunk),
}

impl PageBatch {
    /// The pages, for the decoders.
    pub(crate) fn input(&self) -> PagesIn<'_> {
        match &self.data {
            PageData::Host(d) => PagesIn::Host(d),
            PageData::Device(c) => c.input(),
        }
    }

    /// Gives a host buffer back to the pool (a device buffer goes back to
    /// its own pool when dropped).
    pub(crate) fn recycle(self, pool: &BufferPool) {
        if let PageData::Host(d) = self.data {
            pool.give(d);
        }
    }

    /// Adds the trusted page at `index` of the buffer (block `block`, LSN
    /// `lsn`), counting its rows when it is in host memory.
    fn push_page(&mut self, index: usize, block: u32, lsn: u64, block_size: usize) {
        self.pages.push(index as u32);
        self.blocks.push(block);
        self.lsns.push(lsn);
        if let PageData::Host(d) = &self.data {
            let at = index * block_size;
            let rows = d
                .get(at..at + block_size)
                .and_then(|p| Page::parse(p, block_size).ok())
                .map_or(0, |p| {
                    p.item_ids()
                        .filter(|i| i.flags == LpFlags::Normal && i.has_storage())
                        .count()
                });
            self.rows.push(rows as u32);
        }
    }

    /// The pages of the batch other than `flagged` (indexes into `pages`),
    /// with their rows, in page order; `None` when the rows were not
    /// counted (pages in device memory).
    pub(crate) fn pages_except(&self, flagged: &[u32]) -> Option<Vec<PageRows>> {
        if self.rows.len() != self.pages.len() {
            return None;
        }
        let mut skip = vec![false; self.pages.len()];
        for &f in flagged {
            if let Some(s) = skip.get_mut(f as usize) {
                *s = true;
            }
        }
        Some(
            (0..self.pages.len())
                .filter(|&k| !skip[k])
                .map(|k| PageRows {
                    block: self.blocks[k],
                    lsn: self.lsns[k],
                    rows: self.rows[k],
                })
                .collect(),
        )
    }

    /// Bytes the batch can hold.
    fn capacity(&self) -> usize {
        match &self.data {
            PageData::Host(d) => d.len(),
            PageData::Device(c) => c.len(),
        }
    }

    /// The header of page `index` of the buffer.
    fn header(&self, index: usize, block_size: usize) -> &[u8] {
        match &self.data {
            PageData::Host(d) => d.get(index * block_size..).unwrap_or(&[]),
            PageData::Device(c) => c.header(index),
        }
    }

    /// Page `index` of the buffer on the host (copied back from the GPU
    /// when it is there).
    fn page(
        &self,
        index: usize,
        block_size: usize,
    ) -> Result<std::borrow::Cow<'_, [u8]>, ExportError> {
        let at = index * block_size;
        match &self.data {
            PageData::Host(d) => d
                .get(at..at + block_size)
                .map(std::borrow::Cow::Borrowed)
                .ok_or_else(|| ExportError::Internal("a page past its batch".into())),
            PageData::Device(c) => {
                let mut page = vec![0u8; block_size];
                c.copy_page(index, &mut page).map_err(|e| {
                    ExportError::Invalid(format!("copying a page back from the GPU: {e}"))
                })?;
                Ok(std::borrow::Cow::Owned(page))
            }
        }
    }
}

/// The COPY statements channel, closed once nothing can add to it: every
/// heap reader has finished and every page batch it sent has been
/// converted (its flagged pages may still need COPY). Until then the
/// connections wait for more statements.
pub(crate) struct StatementFeed {
    tx: Mutex<Option<Sender<String>>>,
    pending: std::sync::atomic::AtomicUsize,
}

impl StatementFeed {
    /// A feed that stays open until `holders` releases.
    pub(crate) fn new(tx: Sender<String>, holders: usize) -> StatementFeed {
        let feed = StatementFeed {
            tx: Mutex::new(Some(tx)),
            pending: std::sync::atomic::AtomicUsize::new(holders + 1),
        };
        // The creator's own hold ends here: with no holders it closes now.
        feed.release();
        feed
    }

    pub(crate) fn send(&self, sql: String) -> Result<(), ExportError> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx
                .send(sql)
                .map_err(|_| SourceError::Downstream("another export thread failed".into()).into()),
            None => Err(ExportError::Internal(
                "a COPY range after the statements were closed".into(),
            )),
        }
    }

    /// One more holder (a page batch on its way).
    pub(crate) fn hold(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// A holder is done; the last one closes the channel.
    pub(crate) fn release(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
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
struct FallbackRuns<'a> {
    rel: &'a HeapRel,
    statements: &'a StatementFeed,
    run: Option<(u64, u64)>,
    listed: Vec<u64>,
}

impl<'a> FallbackRuns<'a> {
    fn new(rel: &'a HeapRel, statements: &'a StatementFeed) -> FallbackRuns<'a> {
        FallbackRuns {
            rel,
            statements,
            run: None,
            listed: Vec::new(),
        }
    }

    /// Adds `block`; a block not adjacent to the current run sends it.
    fn add(&mut self, block: u64) -> Result<(), ExportError> {
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
    fn flush(&mut self) -> Result<(), ExportError> {
        let Some((a, b)) = self.run.take() else {
            return Ok(());
        };
        if b - a > LIST_RUN_BLOCKS {
            return self.statements.send(copy_sql(
                &self.rel.spec,
                Some(PageRange {
                    start: a,
                    end: Some(b),
                }),
            ));
        }
        self.listed.extend(a..b);
        if self.listed.len() >= LIST_BLOCKS {
            self.send_list()?;
        }
        Ok(())
    }

    /// Sends everything still held.
    fn finish(&mut self) -> Result<(), ExportError> {
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
        self.statements.send(sql)
    }
}

/// PostgreSQL's `MaxHeapTuplesPerPage`: line pointers a heap page of
/// `block_size` bytes can hold (a 24-byte page header; a 4-byte line
/// pointer and a MAXALIGNed 24-byte tuple header each).
fn max_items(block_size: usize) -> u32 {
    (block_size.saturating_sub(24) / 28) as u32
}

/// Where trusted pages go.
struct ReaderOut<'a> {
    work: &'a Sender<Work>,
    statements: &'a StatementFeed,
}

impl ReaderOut<'_> {
    fn send_pages(&self, batch: PageBatch, pool: &BufferPool) -> Result<(), ExportError> {
        if batch.pages.is_empty() {
            batch.recycle(pool);
            return Ok(());
        }
        self.statements.hold();
        self.work.send(Work::Pages(batch)).map_err(|_| {
            self.statements.release();
            SourceError::Downstream("another export thread failed".into()).into()
        })
    }
}

/// One heap reader thread: takes block ranges until none are left.
/// Trusted pages become COPY rows (converted here on the CPU) or page
/// batches (for relations whose pages the GPU converts) sent to the
/// decoders on `work`; the ranges of other pages go to the COPY
/// connections through `statements`. On a refresh, pages unchanged since
/// the previous load are not read at all ([`Reader::keep`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_reader(
    heap: &HeapPlan,
    counters: &HeapCounters,
    reader: u32,
    pool: &BufferPool,
    work: &Sender<Work>,
    statements: &StatementFeed,
    stopped: &dyn Fn() -> bool,
) -> Result<(), ExportError> {
    let bs = heap.block_size();
    let total = *heap.starts.last().unwrap_or(&0);
    let mut r = Reader {
        heap,
        counters,
        reader,
        pool,
        out: ReaderOut { work, statements },
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
            if !vm.get(block as u32).all_visible {
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
                        None => return Ok(false),
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
        let at = self
            .batch
            .as_ref()
            .filter(|_| whole)
            .map_or(0, |b| b.filled);
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

        let t = Instant::now();
        // Each page judged once from its header; trusted pages in a short
        // gap between untrusted ones go through COPY with them (MERGE_GAP).
        let verdicts: Vec<Result<bool, String>> = (0..n)
            .map(|i| {
                let header = match self.batch.as_ref().filter(|_| whole) {
                    Some(b) => b.header(at / bs + i as usize, bs),
                    None => self.buf.get(i as usize * bs..).unwrap_or(&[]),
                };
                trust(heap.fence, vm, start + i, header, self.lsns[i as usize], bs)
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
            b.filled = at + bytes_n;
        }
        counters.add(
            &counters.convert_nanos,
            t.elapsed().saturating_sub(flushing),
        );
        counters.add(&counters.flush_nanos, flushing);
        Ok(true)
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

/// Whether the page of block `block` whose header is `header` can be
/// trusted: `Ok(true)` trusted, `Ok(false)` a new page (no rows), else why
/// not. Judged from the header alone (the page may be in GPU memory): the
/// visibility map and the header say all-visible, the LSN is at most the
/// fence and unchanged after the read, and the header's bounds make
/// sense. Whoever reads the page checks its line pointers, tuples and
/// checksum.
fn trust(
    fence: u64,
    vm: &VisibilityMap<'_>,
    block: u64,
    header: &[u8],
    lsn_after: u64,
    block_size: usize,
) -> Result<bool, String> {
    let Some(header) = PageHeader::read(header) else {
        return Err("page not understood".into());
    };
    if header.is_new() {
        // Never initialized: no rows (and no LSN to check).
        return Ok(false);
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
    if header.check(block_size).is_err() {
        return Err("page not understood".into());
    }
    Ok(true)
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

impl HeapPlan {
    /// After the decoder converted `batch` except the pages it `flagged`
    /// (indexes into `batch.pages`): converts those with `transcode_page` into
    /// `rows`, sends the ranges of the ones the CPU refuses too to COPY,
    /// and counts the batch's pages (the caller counts the GPU's rows).
    /// Returns the pages converted, in the order of their rows.
    pub(crate) fn convert_flagged(
        &self,
        batch: &PageBatch,
        flagged: &[u32],
        counters: &HeapCounters,
        statements: &StatementFeed,
        rows: &mut CopyChunk,
    ) -> Result<Vec<PageRows>, ExportError> {
        let Some(rel) = self.rels.get(batch.rel) else {
            return Err(ExportError::Internal("a page batch of no relation".into()));
        };
        let bs = rel.rel.block_size;
        let mut runs = FallbackRuns::new(rel, statements);
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
        if let PageReader::Gpu(_) = self.page_reader(batch.rel) {
            counters.pages_gpu.fetch_add(
                (batch.pages.len() - flagged.len()) as u64,
                Ordering::Relaxed,
            );
        }
        Ok(converted)
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
        .map_err(|_| SourceError::Downstream("another export thread failed".into()).into())
}

#[cfg(test)]
mod tests {
    use super::bridge_gaps;

    #[test]
    fn short_gaps_between_untrusted_pages_are_bridged() {
        let u = |s: &str| s.chars().map(|c| c == 'x').collect::<Vec<bool>>();
        let b = |v: Vec<bool>| {
            v.iter()
                .map(|&x| if x { 'b' } else { '.' })
                .collect::<String>()
        };
        assert_eq!(b(bridge_gaps(&u("..x..x....x.."), 3)), "...bb........");
        assert_eq!(b(bridge_gaps(&u("..x..x....x.."), 4)), "...bb........");
        assert_eq!(b(bridge_gaps(&u("..x..x....x.."), 5)), "...bb.bbbb...");
        assert_eq!(b(bridge_gaps(&u("xx.x"), 32)), "..b.");
        assert_eq!(b(bridge_gaps(&u("...."), 32)), "....");
        assert_eq!(b(bridge_gaps(&u("x...."), 32)), ".....");
    }
}

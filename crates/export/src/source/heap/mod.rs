//! The direct heap path, in one home: whether a table is read from its
//! files ([`prepare`], the [`HeapPlan`]), where they are and how their
//! tuples are laid out ([`catalog`], [`files`]), the server calls and the
//! proof that make reading them safe ([`server`], [`proof`]), the reader
//! threads ([`reader`]) reading with `pread` or cuFile ([`io`]) and judging
//! each page ([`judge`]), the page batches they send ([`batch`]), what
//! comes back from the decoders ([`fallback`]: flagged pages converted on
//! the CPU, or read again through COPY, whose small results are packed:
//! [`pack`]) and what the report counts ([`counters`]). The page format
//! itself is `gpupg_format::heap`.
//!
//! Why a page read from the files holds exactly the snapshot's rows: the
//! export's transaction holds the snapshot S for its whole run, so VACUUM
//! cannot mark a page all-visible while it holds a row S does not see (such
//! a row's inserter or deleter is not older than S's xmin, which holds back
//! the horizon). After S is taken, the WAL insert position F (the fence) is
//! read and every page dirtied before it is either written to the files by
//! a CHECKPOINT or listed as dirty in shared buffers (`pg_buffercache`) and
//! read through COPY ([`sync`]; docs/heap.md says why the list is exact).
//! A page is trusted when it was not listed dirty, the visibility
//! map and the page's own header say all-visible, the page LSN is at most F
//! (it has not changed since), the LSN read again after the page still
//! matches (it was not being written while read), its checksum verifies
//! (when the cluster has checksums) and every value converts; and before
//! any of that, the files are proven the server's own and current
//! ([`proof`]). Anything else is read with COPY `WHERE ctid >= '(a,0)' AND ctid < '(b,0)'` under S, and
//! blocks past the end of the files with one open-ended range.

mod batch;
mod catalog;
mod counters;
mod estimate;
pub(crate) mod fallback;
mod files;
mod io;
mod judge;
pub(crate) mod pack;
mod proof;
mod reader;
mod server;
mod sync;
mod toast;
mod wal;

use std::time::Instant;

use arrow_schema::SchemaRef;
use gpupg_format::heap::TupleLayout;
use gpupg_gpu::PageLayout;
use gpupg_source::{copy_sql, Connection, PageRange, ReadSpec, SourceError};

pub(crate) use batch::PageBatch;
use catalog::{heap_relation, HeapRelation};
pub(crate) use counters::HeapCounters;
pub use counters::HeapReport;
use files::RelationFiles;
use io::{gpudirect_choice, GdsReads};
use proof::{prove_files, FilesProof};
pub(crate) use reader::run_reader;
use server::{relations_bytes, wal_insert_lsn};
use sync::{sync_files, FilesSync};
use toast::{toast_relation, ToastIndex};

use crate::carry::{PageMap, PriorPages};
use crate::interrupt::Interrupts;
use crate::plan::ExportPlan;
use crate::{ExportError, ExportRequest, GpuSelection, HeapIo, Source, Target};

/// Blocks read by one positioned read (8 MiB at 8 KiB blocks).
pub(super) const RANGE_BLOCKS: u64 = 1024;

/// A table the export reads from its files: the table itself, or the leaf
/// partitions of a partitioned one.
pub(crate) struct HeapPlan {
    pub rels: Vec<HeapRel>,
    /// Where each relation's blocks start in the readers' shared block
    /// space: each starts at a multiple of the range size, so a range never
    /// spans two relations.
    pub(super) starts: Vec<u64>,
    /// WAL insert position taken after the snapshot, before the checkpoint
    /// or the listing of dirty pages.
    pub(super) fence: u64,
    /// How the files were made to hold every change made before the fence.
    pub(crate) sync: FilesSync,
    /// What proved the files the server's own and current.
    pub(super) proof: FilesProof,
    /// Per relation, who reads its trusted pages.
    pub(super) page_readers: Vec<PageReader>,
    /// The files read through cuFile, when they are ([`HeapPlan::use_gds`]).
    pub(super) gds: Option<GdsReads>,
    /// Why the files are read with `pread` although the GPU converts pages.
    pub(super) pread_why: Option<String>,
    /// Per relation, the pages a previous load holds ([`Self::keep_from`]).
    pub(super) prior: Vec<Option<PriorPages>>,
    /// What was read of each TOAST relation, or why it was not.
    pub(super) toast: Vec<String>,
    /// The TOAST relations' pages over the tables' (0 without TOAST): the
    /// GPU engine converts on the CPU every page holding a TOAST pointer.
    pub(crate) toast_share: f64,
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

/// How a relation's pages are decoded.
pub(crate) struct PageFormat<'a> {
    pub layout: &'a TupleLayout,
    /// The layout for the GPU page kernels, when they convert the pages.
    pub gpu_layout: Option<&'a PageLayout>,
}

/// One heap relation of the plan.
pub(crate) struct HeapRel {
    pub rel: HeapRelation,
    pub files: RelationFiles,
    pub(super) vm: Vec<u8>,
    /// What COPY selects from this relation for its untrusted pages.
    pub(super) spec: ReadSpec,
}

pub(crate) enum Unavailable {
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

/// The table's leaves (itself when not partitioned) and its read spec, or
/// why the heap path is not for this export (before any connection).
fn heap_leaves<'p>(
    req: &ExportRequest<'_>,
    plan: &'p ExportPlan,
) -> Result<(Vec<&'p gpupg_source::TableInfo>, &'p ReadSpec), Unavailable> {
    let reason = |s: &str| Unavailable::Reason(s.to_string());
    if matches!(req.target, Target::Query(_)) {
        return Err(reason("a query is read through COPY"));
    }
    if req.filter.is_some() {
        return Err(reason(
            "a row filter needs the server to evaluate it (COPY)",
        ));
    }
    let Some((table, spec)) = &plan.table else {
        return Err(reason("a query is read through COPY"));
    };
    if req.source == Source::Auto && table.bytes < req.heap_threshold {
        return Err(Unavailable::Reason(format!(
            "the table ({:.1} MB) is smaller than the heap threshold ({:.1} MB)",
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
    Ok((leaves, spec))
}

/// Pages of the tables and their TOAST relations together (what the share
/// of dirty pages is of: both are in the list), and the TOAST relations'
/// pages over the tables'.
fn page_counts(
    probe: &mut Connection,
    leaves: &[&gpupg_source::TableInfo],
    toast_oids: &[u32],
    block_size: u64,
) -> Result<(u64, f64), Unavailable> {
    let toast_pages = relations_bytes(probe, toast_oids)? / block_size.max(1);
    let tables_pages = leaves.iter().map(|t| t.relpages).sum::<u64>();
    let toast_share = toast_pages as f64 / tables_pages.max(1) as f64;
    Ok((tables_pages + toast_pages, toast_share))
}

/// The heap read of the export's table: its relations and TOAST, the
/// files made current and proven the server's, their visibility maps.
pub(crate) fn prepare(
    req: &ExportRequest<'_>,
    plan: &ExportPlan,
    interrupts: &Interrupts,
) -> Result<HeapPlan, Unavailable> {
    let (leaves, spec) = heap_leaves(req, plan)?;
    // Catalog, checkpoint or dirty pages on a connection of their own: a
    // refused query there must not abort the export's transaction.
    let mut probe = Connection::connect(&req.connect)?;
    interrupts.watch(&probe);
    let mut found = Vec::with_capacity(leaves.len());
    let mut toast_rels = Vec::new();
    for leaf in &leaves {
        let rel = heap_relation(&mut probe, leaf, &plan.columns, req.data_dir.as_deref())?;
        let spec = ReadSpec {
            relation: leaf.qualified(),
            ..spec.clone()
        };
        toast_rels.push(toast_relation(&mut probe, &rel)?);
        found.push((rel, spec));
    }
    if req.source == Source::Auto {
        if let Some(why) = fallback_estimate(&mut probe, &leaves, &found, &toast_rels, plan) {
            return Err(Unavailable::Reason(why));
        }
    }
    let fence = wal_insert_lsn(&mut probe).map_err(|e| {
        Unavailable::Reason(format!("cannot read the WAL position (a standby?): {e}"))
    })?;
    // The tables' dirty pages, then their TOAST relations' (in the order of
    // `toast_rels`, skipping tables without one).
    let toast_oids: Vec<u32> = toast_rels.iter().flatten().map(|t| t.oid).collect();
    let mut oids: Vec<u32> = found.iter().map(|(rel, _)| rel.oid).collect();
    oids.extend(&toast_oids);
    let block_size = found.first().map_or(8192, |(rel, _)| rel.block_size as u64);
    let (table_pages, toast_share) = page_counts(&mut probe, &leaves, &toast_oids, block_size)?;
    let data_dir = found
        .first()
        .map(|(rel, _)| rel.data_dir.clone())
        .unwrap_or_default();
    let sync = sync_files(
        &mut probe,
        req.heap_sync,
        &oids,
        table_pages,
        (&data_dir, fence),
    )?;
    let mut rels = Vec::with_capacity(found.len());
    let mut starts = Vec::with_capacity(found.len() + 1);
    let mut next = 0u64;
    for (rel, spec) in found {
        // The files are measured after the checkpoint (or the listing).
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
    // TOAST relations are opened after the checkpoint too; one that cannot
    // be opened is not read (its values go through COPY).
    let mut notes = Vec::new();
    // (index of the table in `rels`, of its TOAST relation in the OIDs
    // given to `sync_files`, the TOAST relation, its files)
    let synced_as = rels.len()..;
    let toast_files: Vec<_> = toast_rels
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| Some((i, t?)))
        .zip(synced_as)
        .filter_map(|((i, t), synced_as)| {
            match RelationFiles::open(&t.base_path, t.block_size, t.segment_blocks) {
                Ok(f) => Some((i, synced_as, t, f)),
                Err(e) => {
                    notes.push(format!("{} not read: {e}", t.label));
                    None
                }
            }
        })
        .collect();
    // Before any page is trusted: the files must be the server's own and
    // current (a stale copy or another cluster's files pass every page check).
    let pairs: Vec<_> = rels
        .iter()
        .map(|r| (&r.rel, &r.files))
        .chain(toast_files.iter().map(|(_, _, t, f)| (t, f)))
        .collect();
    let proof = prove_files(&mut probe, fence, &pairs, sync.synced)?;
    // The TOAST files proven here move into the index (read again there
    // when the chunks are indexed by location).
    drop(pairs);
    read_toast(
        &mut rels,
        toast_files,
        (fence, &sync),
        req.parallel,
        &mut notes,
    );
    Ok(HeapPlan {
        page_readers: rels.iter().map(|_| PageReader::Rows).collect(),
        rels,
        starts,
        fence,
        sync,
        proof,
        gds: None,
        pread_why: None,
        prior: Vec::new(),
        toast: notes,
        toast_share,
    })
}

/// Why `--source auto` reads through COPY although the files are
/// readable: most pages would fall back ([`estimate`]). Asked before the
/// checkpoint, which would then be spent for nothing.
fn fallback_estimate(
    probe: &mut Connection,
    leaves: &[&gpupg_source::TableInfo],
    found: &[(HeapRelation, ReadSpec)],
    toast_rels: &[Option<HeapRelation>],
    plan: &ExportPlan,
) -> Option<String> {
    let sampled: Vec<estimate::Sampled<'_>> = leaves
        .iter()
        .zip(found)
        .zip(toast_rels)
        .map(|((table, (rel, _)), toast)| estimate::Sampled {
            table,
            layout: &rel.layout,
            toast_read: toast.as_ref().is_none_or(toast::can_read),
        })
        .collect();
    let block_size = found.first().map_or(8192, |(rel, _)| rel.block_size);
    estimate::copy_is_faster(probe, &sampled, &plan.columns, block_size)
}

/// Indexes the trusted chunks of each TOAST relation, its pages read by
/// `threads` threads, and hands them to its table's layout, so every
/// converter reads the values stored out of line; `notes` say what was
/// read, or why not.
fn read_toast(
    rels: &mut [HeapRel],
    toast_files: Vec<(usize, usize, HeapRelation, RelationFiles)>,
    (fence, sync): (u64, &FilesSync),
    threads: usize,
    notes: &mut Vec<String>,
) {
    for (i, synced_as, t, files) in toast_files {
        let Some(main) = rels.get_mut(i) else {
            continue;
        };
        let start = Instant::now();
        let dirty = |block: u64| sync.dirty(synced_as, block);
        match ToastIndex::build(&t, files, fence, &dirty, threads) {
            Ok(index) => {
                notes.push(format!(
                    "{}: {} of {} pages trusted, {} chunks indexed ({}) in {:.2} s",
                    t.label,
                    index.stats.trusted,
                    index.stats.pages,
                    index.stats.chunks,
                    if index.in_memory {
                        "bytes held in memory"
                    } else {
                        "by location, read again when needed"
                    },
                    start.elapsed().as_secs_f64()
                ));
                main.rel.layout.set_toast(index.lookup);
            }
            Err(why) => notes.push(format!("{} not read: {why}", t.label)),
        }
    }
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
                "reading the heap files with cuFile is for the GPU page kernels: it needs the GPU engine and a table whose pages they convert".into(),
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
                    "reading the heap files with cuFile reads into one GPU's memory: give one GPU, not several".into(),
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
            Err(why) => {
                return Err(ExportError::Invalid(format!(
                    "reading the heap files with cuFile: {why}"
                )))
            }
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

    pub(super) fn block_size(&self) -> usize {
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

    /// How each relation's pages are decoded, for the decoders.
    pub(crate) fn page_formats(&self) -> Vec<PageFormat<'_>> {
        self.rels
            .iter()
            .zip(&self.page_readers)
            .map(|(r, reader)| PageFormat {
                layout: &r.rel.layout,
                gpu_layout: match reader {
                    PageReader::Gpu(l) => Some(l),
                    PageReader::Rows | PageReader::Cpu => None,
                },
            })
            .collect()
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
    pub(super) fn locate(&self, start: u64) -> Option<(usize, &HeapRel, u64, u64)> {
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

//! The table's TOAST relation read from its own files, under the same
//! trust rules as the table: its file node and size are proven with the
//! table's ([`super::proof`]), and a chunk is used only from a page that
//! [`trust`] accepts (visibility map and header all-visible, LSN not past
//! the fence and unchanged while read) and whose checksum verifies. Why
//! that is exact: `docs/heap.md`, "Values stored out of line".
//!
//! The trusted chunks are indexed by value id before the table's pages
//! are read ([`ToastIndex::build`], its pages spread over the reader
//! threads); the converters ask the index through the layout's
//! [`ToastLookup`]. A value whose chunks are not all there sends its row's
//! page to COPY, with a
//! [`FallbackReason::Toast`](gpupg_format::heap::FallbackReason::Toast).
//!
//! A TOAST relation of at most [`MEMORY_BYTES`] keeps its chunks' bytes in
//! memory (a [`ChunkMap`]); a larger one keeps only where each chunk is
//! ([`ChunkPlaces`]) and reads its page again when a row needs the value,
//! judging it again as the main read judges a table's page.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gpupg_format::heap::toast::{admit, expand, parse_chunk, reassemble, Chunk};
use gpupg_format::heap::varlena::ToastPointer;
use gpupg_format::heap::{
    verify_page, Align, AttributeDesc, ChunkMap, Page, ToastError, ToastLookup, TupleLayout,
    VisibilityMap,
};
use gpupg_format::PgType;
use gpupg_source::{Connection, SourceError};

use super::catalog::HeapRelation;
use super::files::RelationFiles;
use super::judge::trust;
use super::RANGE_BLOCKS;

/// The smallest budget for TOAST relations (bytes of their files) whose
/// trusted chunks are held in memory. Keeping the bytes makes each lookup a
/// copy with no second read, right while the TOAST relation is small next
/// to the memory an export may use; a larger one is indexed by location
/// ([`ChunkPlaces`], 16 bytes a chunk, about 0.8% of the files).
const MEMORY_BYTES: u64 = 256 << 20;

/// The share of the machine's available memory the chunks may take when
/// that is more than [`MEMORY_BYTES`]: an eighth leaves room for the
/// export's own buffers (about (connections + 2 x threads) x chunk size)
/// and the output. Measured on the H100 host (events 10M rows, 1.5 GB of
/// TOAST files): by location, every row's value is read again from the
/// files; in memory, once.
const MEMORY_SHARE: u64 = 8;

/// Overrides the budget (a number of bytes): for a machine with more or
/// less memory to spare, and for tests of the location index.
const MEMORY_ENV: &str = "GPUPGPARSER_TOAST_MEMORY";

/// [`MEMORY_ENV`] when set to a number, else the larger of [`MEMORY_BYTES`]
/// and an eighth of the memory available now (Linux's `MemAvailable`).
fn memory_budget() -> u64 {
    if let Some(n) = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return n;
    }
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_available(&m))
        .unwrap_or(0);
    MEMORY_BYTES.max(available / MEMORY_SHARE)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Whether the TOAST relation `rel` would be read (its files open; any
/// size is indexed, in memory or by location); asked by the source
/// estimate before the export.
pub(super) fn can_read(rel: &HeapRelation) -> bool {
    RelationFiles::open(&rel.base_path, rel.block_size, rel.segment_blocks).is_ok()
}

/// The TOAST relation of `main`, when an output column can hold values
/// stored out of line (a varlena: `attlen` -1) and the table has one.
/// Its layout is `(chunk_id oid, chunk_seq int4, chunk_data bytea)`.
pub(super) fn toast_relation(
    conn: &mut Connection,
    main: &HeapRelation,
) -> Result<Option<HeapRelation>, SourceError> {
    let attrs = main.layout.attributes();
    let toastable = main
        .layout
        .output()
        .iter()
        .any(|&i| attrs.get(i).is_some_and(|a| a.attlen == -1));
    if !toastable {
        return Ok(None);
    }
    let rows = conn.query(
        &format!("reading the TOAST relation of {}", main.label),
        &format!(
            "SELECT c.reltoastrelid, pg_catalog.pg_relation_filepath(c.reltoastrelid), \
             t.oid::pg_catalog.regclass::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid \
             WHERE c.oid = {}",
            main.oid
        ),
        &[],
    )?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let get = |i: usize| row.get(i).cloned().flatten();
    let (Some(oid), Some(path)) = (get(0).and_then(|s| s.parse::<u32>().ok()), get(1)) else {
        return Ok(None);
    };
    let unexpected = |what: &str| SourceError::HeapUnavailable {
        table: main.label.clone(),
        reason: format!("the TOAST relation's layout: {what}"),
    };
    let attributes = vec![
        AttributeDesc::column(PgType::Oid, 4, Align::Int, true),
        AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
        AttributeDesc::column(PgType::Bytea, -1, Align::Int, false),
    ];
    let layout = TupleLayout::all_columns(attributes, Default::default())
        .and_then(|l| l.with_block_size(main.block_size))
        .map_err(|e| unexpected(&e.to_string()))?;
    Ok(Some(HeapRelation {
        label: format!(
            "{} (TOAST of {})",
            get(2).unwrap_or_else(|| oid.to_string()),
            main.label
        ),
        oid,
        data_dir: main.data_dir.clone(),
        base_path: PathBuf::from(&main.data_dir).join(path),
        block_size: main.block_size,
        segment_blocks: main.segment_blocks,
        checksums: main.checksums,
        layout: layout.with_checksums(main.checksums),
    }))
}

/// What was read of a TOAST relation, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ToastStats {
    /// Pages of the TOAST relation.
    pub pages: u64,
    /// Pages whose chunks are used.
    pub trusted: u64,
    /// Chunks indexed.
    pub chunks: u64,
}

impl ToastStats {
    fn add(&mut self, other: ToastStats) {
        self.pages += other.pages;
        self.trusted += other.trusted;
        self.chunks += other.chunks;
    }
}

/// The trusted chunks of a TOAST relation, by value id.
pub(super) struct ToastIndex {
    pub lookup: Arc<dyn ToastLookup>,
    pub stats: ToastStats,
    /// Whether the chunks' bytes are held (else their places).
    pub in_memory: bool,
}

/// What one index thread gathered from the pages it read.
enum Part {
    Bytes(ChunkMap),
    Places {
        chunks: Vec<ChunkAt>,
        untrusted: Vec<u32>,
    },
}

impl Part {
    /// Adds a chunk read from `item` (0-based) of `block`; on an untrusted
    /// page, marks its value untrusted.
    fn add(&mut self, chunk: Chunk<'_>, block: u64, item: usize, trusted: bool) {
        match (self, trusted) {
            (Part::Bytes(map), true) => map.add(chunk),
            (Part::Bytes(map), false) => map.add_untrusted(chunk.value_id),
            (Part::Places { chunks, .. }, true) => chunks.push(ChunkAt {
                value_id: chunk.value_id,
                seq: chunk.seq,
                block: block as u32,
                item: item as u16,
            }),
            (Part::Places { untrusted, .. }, false) => untrusted.push(chunk.value_id),
        }
    }
}

impl ToastIndex {
    /// Reads every page of `files` (the TOAST relation `rel`, proven) on
    /// up to `threads` threads and indexes the chunks of the trusted ones;
    /// chunks on the others mark their values untrusted. `Err`: why the
    /// TOAST relation is not read.
    pub(super) fn build(
        rel: &HeapRelation,
        files: RelationFiles,
        fence: u64,
        dirty: &(dyn Fn(u64) -> bool + Sync),
        threads: usize,
    ) -> Result<ToastIndex, String> {
        let in_memory = files.nblocks() * rel.block_size as u64 <= memory_budget();
        Self::build_as(rel, files, (fence, dirty), threads, in_memory)
    }

    /// [`Self::build`], the chunks' bytes held (`in_memory`) or their
    /// places.
    fn build_as(
        rel: &HeapRelation,
        files: RelationFiles,
        (fence, dirty): (u64, &(dyn Fn(u64) -> bool + Sync)),
        threads: usize,
        in_memory: bool,
    ) -> Result<ToastIndex, String> {
        let bs = rel.block_size;
        let vm = files
            .read_visibility_map()
            .map_err(|e| format!("reading the visibility map of {}: {e}", rel.label))?;
        if u32::try_from(files.nblocks()).is_err() {
            return Err(format!(
                "{} has more blocks than a block number holds",
                rel.label
            ));
        }
        let scan = Scan {
            rel,
            files: &files,
            vm: VisibilityMap::new(&vm, bs)
                .map_err(|e| format!("the visibility map of {}: {e}", rel.label))?,
            fence,
            dirty,
            next: AtomicU64::new(0),
        };
        let ranges = files.nblocks().div_ceil(RANGE_BLOCKS) as usize;
        let parts = scan.run(threads.clamp(1, ranges.max(1)), in_memory)?;
        let mut stats = ToastStats::default();
        let lookup: Arc<dyn ToastLookup> = if in_memory {
            // The first part's map takes the others' chunks.
            let mut map: Option<ChunkMap> = None;
            for (part, s) in parts {
                stats.add(s);
                if let Part::Bytes(m) = part {
                    match &mut map {
                        Some(all) => all.absorb(m),
                        None => map = Some(m),
                    }
                }
            }
            let mut map = map.unwrap_or_else(|| ChunkMap::new(rel.oid, bs));
            map.finish();
            Arc::new(map)
        } else {
            let mut all = Vec::new();
            let mut bad = HashSet::new();
            for (part, s) in parts {
                stats.add(s);
                if let Part::Places { chunks, untrusted } = part {
                    all.extend(chunks);
                    bad.extend(untrusted);
                }
            }
            all.sort_unstable_by_key(|c| (c.value_id, c.seq));
            Arc::new(ChunkPlaces {
                instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                toast_relid: rel.oid,
                label: rel.label.clone(),
                checksums: rel.checksums,
                fence,
                chunks: all,
                untrusted: bad,
                files,
                vm,
            })
        };
        Ok(ToastIndex {
            lookup,
            stats,
            in_memory,
        })
    }
}

/// The shared state of the threads reading a TOAST relation's pages.
struct Scan<'a> {
    rel: &'a HeapRelation,
    files: &'a RelationFiles,
    vm: VisibilityMap<'a>,
    fence: u64,
    dirty: &'a (dyn Fn(u64) -> bool + Sync),
    /// The first block of the next range to read.
    next: AtomicU64,
}

impl Scan<'_> {
    /// Runs `threads` threads taking ranges of blocks until none are left;
    /// what each gathered.
    fn run(&self, threads: usize, in_memory: bool) -> Result<Vec<(Part, ToastStats)>, String> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| self.read_ranges(in_memory)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(format!("a thread reading {} panicked", self.rel.label))
                    })
                })
                .collect()
        })
    }

    /// One thread: reads ranges of [`RANGE_BLOCKS`] blocks and indexes
    /// their pages.
    fn read_ranges(&self, in_memory: bool) -> Result<(Part, ToastStats), String> {
        let bs = self.rel.block_size;
        let nblocks = self.files.nblocks();
        let mut part = if in_memory {
            Part::Bytes(ChunkMap::new(self.rel.oid, bs))
        } else {
            Part::Places {
                chunks: Vec::new(),
                untrusted: Vec::new(),
            }
        };
        let mut stats = ToastStats::default();
        let mut buf = vec![0u8; RANGE_BLOCKS as usize * bs];
        loop {
            let first = self.next.fetch_add(RANGE_BLOCKS, Ordering::Relaxed);
            if first >= nblocks {
                break;
            }
            let n = RANGE_BLOCKS.min(nblocks - first);
            let buf = &mut buf[..n as usize * bs];
            let read_err = |e| format!("reading {}: {e}", self.rel.label);
            self.files.read_blocks(first, buf).map_err(read_err)?;
            for (i, page) in buf.chunks_exact(bs).enumerate() {
                let block = first + i as u64;
                let lsn_after = self.files.read_lsn(block).map_err(read_err)?;
                let trusted = matches!(
                    trust(
                        (self.fence, (self.dirty)(block)),
                        &self.vm,
                        block,
                        page,
                        lsn_after,
                        bs
                    ),
                    Ok(true)
                ) && (!self.rel.checksums || verify_page(page, block as u32).is_ok());
                stats.pages += 1;
                stats.trusted += u64::from(trusted);
                index_page(&mut part, page, block, bs, trusted, &mut stats);
            }
        }
        Ok((part, stats))
    }
}

/// Adds the chunks of `page` (block `block`); on an untrusted page, marks
/// the values of the chunks it can read as untrusted (a chunk it cannot
/// read leaves a gap that makes its value's reassembly fail, so nothing is
/// lost).
fn index_page(
    part: &mut Part,
    page: &[u8],
    block: u64,
    bs: usize,
    trusted: bool,
    stats: &mut ToastStats,
) {
    let Ok(p) = Page::parse(page, bs) else {
        return;
    };
    for (index, id) in p.item_ids().enumerate() {
        if !id.has_storage() {
            continue;
        }
        let Ok(chunk) = p
            .tuple(index)
            .map_err(|_| ())
            .and_then(|t| parse_chunk(t).map_err(|_| ()))
        else {
            continue;
        };
        stats.chunks += u64::from(trusted);
        part.add(chunk, block, index, trusted);
    }
}

/// Where a chunk on a trusted page is: its value, number, block and line
/// pointer (0-based).
#[derive(Debug, Clone, Copy)]
struct ChunkAt {
    value_id: u32,
    seq: i32,
    block: u32,
    item: u16,
}

/// Tells each [`ChunkPlaces`] apart in the threads' page caches (two
/// exports in one process may index the same TOAST relation).
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A [`ToastLookup`] for a TOAST relation too large to hold: where each
/// trusted chunk is, its pages read again when a value is asked for. The
/// page read again is judged as when it was indexed ([`trust`] against the
/// same fence and visibility map, and its checksum): a page trusted then
/// and now has not changed since the fence, so its chunks are the same.
/// One that changed since makes the value [`ToastError::Untrusted`] and its
/// row's page goes to COPY.
struct ChunkPlaces {
    instance: u64,
    toast_relid: u32,
    label: String,
    checksums: bool,
    fence: u64,
    /// Sorted by value id, then chunk number.
    chunks: Vec<ChunkAt>,
    /// Value ids with a chunk on an untrusted page.
    untrusted: HashSet<u32>,
    files: RelationFiles,
    /// The visibility map as read when indexing.
    vm: Vec<u8>,
}

impl std::fmt::Debug for ChunkPlaces {
    /// Its relation and size, not its (many) chunks.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkPlaces")
            .field("toast", &self.label)
            .field("chunks", &self.chunks.len())
            .field("untrusted", &self.untrusted.len())
            .finish_non_exhaustive()
    }
}

/// Above this capacity, a thread's gathering buffers are given back after
/// each value (one huge value must not stay held by every thread).
const KEEP_SCRATCH_BYTES: usize = 16 << 20;

/// One thread's buffers for [`ChunkPlaces`]: the last page read (a value's
/// chunks are usually on one or two pages, the next value's on the same)
/// and a value's chunks gathered before they are joined.
#[derive(Default)]
struct PlacesScratch {
    /// `(instance, block)` of `page`, when it holds a trusted page.
    cached: Option<(u64, u64)>,
    page: Vec<u8>,
    gathered: Vec<u8>,
    /// Per chunk gathered: its number and where its bytes end in `gathered`.
    spans: Vec<(i32, usize)>,
    stored: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<PlacesScratch> = RefCell::default();
}

impl ChunkPlaces {
    /// Reads `block` into the scratch page unless it holds it; `Err` when
    /// it cannot be read or is not trusted now.
    fn load(&self, s: &mut PlacesScratch, block: u64, value_id: u32) -> Result<(), ToastError> {
        if s.cached == Some((self.instance, block)) {
            return Ok(());
        }
        s.cached = None;
        let bs = self.files.block_size();
        s.page.resize(bs, 0);
        let read = |e: std::io::Error| ToastError::Read {
            value_id,
            reason: format!("block {block} of {}: {e}", self.label),
        };
        self.files.read_blocks(block, &mut s.page).map_err(read)?;
        let lsn_after = self.files.read_lsn(block).map_err(read)?;
        let vm = VisibilityMap::new(&self.vm, bs).map_err(|e| ToastError::Read {
            value_id,
            reason: e.to_string(),
        })?;
        // Not dirty: only blocks trusted (so not listed dirty) were indexed.
        let trusted = matches!(
            trust((self.fence, false), &vm, block, &s.page, lsn_after, bs),
            Ok(true)
        ) && (!self.checksums || verify_page(&s.page, block as u32).is_ok());
        if !trusted {
            return Err(ToastError::Untrusted(value_id));
        }
        s.cached = Some((self.instance, block));
        Ok(())
    }

    /// Gathers the chunks of `ptr`'s value into the scratch buffers, then
    /// joins and expands them into `out`.
    fn fetch(
        &self,
        ptr: &ToastPointer,
        places: &[ChunkAt],
        s: &mut PlacesScratch,
        out: &mut Vec<u8>,
    ) -> Result<(), ToastError> {
        let bs = self.files.block_size();
        s.gathered.clear();
        s.spans.clear();
        for at in places {
            self.load(s, u64::from(at.block), ptr.value_id)?;
            let page = Page::parse(&s.page, bs).map_err(|_| ToastError::Untrusted(ptr.value_id))?;
            let tuple = page
                .tuple(usize::from(at.item))
                .map_err(|_| ToastError::ChunkTuple("no tuple where the chunk was indexed"))?;
            let chunk = parse_chunk(tuple)?;
            if chunk.value_id != at.value_id || chunk.seq != at.seq {
                return Err(ToastError::ChunkTuple(
                    "another chunk where one was indexed",
                ));
            }
            s.gathered.extend_from_slice(chunk.data);
            s.spans.push((chunk.seq, s.gathered.len()));
        }
        let gathered = &s.gathered;
        let chunks = s.spans.iter().scan(0, |from, &(seq, end)| {
            let data = &gathered[*from..end];
            *from = end;
            Some((seq, data))
        });
        if ptr.compression().is_none() {
            let start = out.len();
            return reassemble(ptr, bs, chunks, out).inspect_err(|_| out.truncate(start));
        }
        s.stored.clear();
        reassemble(ptr, bs, chunks, &mut s.stored)?;
        expand(ptr, &s.stored, out)
    }
}

impl ToastLookup for ChunkPlaces {
    fn detoast(&self, ptr: &ToastPointer, out: &mut Vec<u8>) -> Result<(), ToastError> {
        admit(ptr, self.toast_relid, &self.untrusted)?;
        let from = self.chunks.partition_point(|c| c.value_id < ptr.value_id);
        let n = self.chunks[from..].partition_point(|c| c.value_id == ptr.value_id);
        if n == 0 {
            return Err(ToastError::Missing(ptr.value_id));
        }
        let places = &self.chunks[from..from + n];
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => {
                let s = &mut *s;
                let r = self.fetch(ptr, places, s, out);
                for buf in [&mut s.gathered, &mut s.stored] {
                    if buf.capacity() > KEEP_SCRATCH_BYTES {
                        *buf = Vec::new();
                    }
                }
                r
            }
            // Not expected (a lookup does not call another), but safe.
            Err(_) => self.fetch(ptr, places, &mut PlacesScratch::default(), out),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpupg_format::heap::build::{toast_chunk_tuple, PageBuilder};
    use gpupg_format::heap::page::PD_ALL_VISIBLE;

    const BS: usize = 8192;
    const RELID: u32 = 16390;
    const FENCE: u64 = 1000;

    #[test]
    fn mem_available_reads_meminfo() {
        let m = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   16000000 kB\n";
        assert_eq!(mem_available(m), Some(16_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
    }

    /// An all-visible TOAST page of block `blkno`, last changed at `lsn`,
    /// holding `chunks` (value id, number, bytes).
    fn page(blkno: u32, lsn: u64, chunks: &[(u32, i32, &[u8])]) -> Vec<u8> {
        let mut b = PageBuilder::new(BS, blkno);
        for &(id, seq, data) in chunks {
            b.add_tuple(&toast_chunk_tuple(id, seq, data))
                .expect("chunk fits");
        }
        b.set_flags(PD_ALL_VISIBLE);
        b.set_lsn(lsn);
        b.finish()
    }

    fn relation(dir: &std::path::Path) -> HeapRelation {
        let attributes = vec![
            AttributeDesc::column(PgType::Oid, 4, Align::Int, true),
            AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
            AttributeDesc::column(PgType::Bytea, -1, Align::Int, false),
        ];
        HeapRelation {
            label: "toast".into(),
            oid: RELID,
            data_dir: dir.into(),
            base_path: dir.join(RELID.to_string()),
            block_size: BS,
            segment_blocks: 131072,
            checksums: false,
            layout: TupleLayout::all_columns(attributes, Default::default()).expect("layout"),
        }
    }

    /// A value of 5000 bytes (chunks of 1996, 1996, 1008) across blocks 0
    /// and 1, and one of 100 bytes on block 1, both blocks all-visible.
    fn write_relation(rel: &HeapRelation, block1_lsn: u64) -> Vec<u8> {
        let raw: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut file = page(0, 500, &[(1, 0, &raw[..1996]), (1, 1, &raw[1996..3992])]);
        file.extend(page(
            1,
            block1_lsn,
            &[(1, 2, &raw[3992..]), (2, 0, &raw[..100])],
        ));
        std::fs::write(&rel.base_path, &file).expect("TOAST file");
        // The visibility map: one page, blocks 0 and 1 all-visible.
        let mut vm = vec![0u8; BS];
        vm[24] = 0b0101;
        let mut vm_path = rel.base_path.clone().into_os_string();
        vm_path.push("_vm");
        std::fs::write(vm_path, vm).expect("VM file");
        raw
    }

    fn pointer(len: usize, value_id: u32) -> ToastPointer {
        ToastPointer {
            rawsize: len as i32 + 4,
            extinfo: len as u32,
            value_id,
            toast_relid: RELID,
        }
    }

    fn build_index(rel: &HeapRelation, in_memory: bool) -> ToastIndex {
        let files =
            RelationFiles::open(&rel.base_path, BS, rel.segment_blocks).expect("open files");
        ToastIndex::build_as(rel, files, (FENCE, &|_| false), 2, in_memory).expect("index")
    }

    /// On another thread: without this thread's cached page.
    fn detoast(index: &ToastIndex, ptr: ToastPointer) -> Result<Vec<u8>, ToastError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut out = Vec::new();
                index.lookup.detoast(&ptr, &mut out).map(|_| out)
            })
            .join()
            .expect("lookup thread")
        })
    }

    /// Both values (ids 1 and 2) have a chunk on block 1, changed after
    /// the fence: neither is read from it.
    fn assert_both_untrusted(index: &ToastIndex) {
        assert_eq!(
            detoast(index, pointer(100, 2)),
            Err(ToastError::Untrusted(2))
        );
        assert_eq!(
            detoast(index, pointer(5000, 1)),
            Err(ToastError::Untrusted(1))
        );
    }

    #[test]
    fn values_by_location_are_read_again_and_judged_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rel = relation(dir.path());
        let raw = write_relation(&rel, 600);
        for in_memory in [true, false] {
            let index = build_index(&rel, in_memory);
            assert_eq!(index.in_memory, in_memory);
            assert_eq!((index.stats.pages, index.stats.trusted), (2, 2));
            assert_eq!(index.stats.chunks, 4);
            assert_eq!(detoast(&index, pointer(5000, 1)), Ok(raw.clone()));
            assert_eq!(detoast(&index, pointer(100, 2)), Ok(raw[..100].to_vec()));
            assert_eq!(
                detoast(&index, pointer(100, 3)),
                Err(ToastError::Missing(3))
            );
        }
        // Block 1 changed after the fence once indexed by location: its
        // values are not read from it; block 0 still is.
        let index = build_index(&rel, false);
        let one = |index: &ToastIndex| {
            let mut out = Vec::new();
            index
                .lookup
                .detoast(&pointer(100, 2), &mut out)
                .map(|_| out)
        };
        // This thread caches block 1 as it was trusted: still the value.
        assert_eq!(one(&index), Ok(raw[..100].to_vec()));
        write_relation(&rel, FENCE + 1);
        assert_eq!(one(&index), Ok(raw[..100].to_vec()));
        assert_both_untrusted(&index);
        // Indexed after the change: block 1's values are marked untrusted.
        for in_memory in [true, false] {
            let index = build_index(&rel, in_memory);
            assert_eq!(index.stats.trusted, 1);
            assert_both_untrusted(&index);
        }
        // A file cut short after indexing: the value cannot be read again.
        write_relation(&rel, 600);
        let index = build_index(&rel, false);
        std::fs::write(&rel.base_path, vec![0u8; BS]).expect("truncate");
        assert!(matches!(
            detoast(&index, pointer(100, 2)),
            Err(ToastError::Read { value_id: 2, .. })
        ));
    }
}

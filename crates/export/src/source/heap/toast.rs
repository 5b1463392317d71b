//! The table's TOAST relation read from its own files, under the same
//! trust rules as the table: its file node and size are proven with the
//! table's ([`super::proof`]), and a chunk is used only from a page that
//! [`trust`] accepts (visibility map and header all-visible, LSN not past
//! the fence and unchanged while read) and whose checksum verifies. Why
//! that is exact: `docs/heap.md`, "Values stored out of line".
//!
//! The trusted chunks are indexed by value id before the table's pages
//! are read ([`ToastIndex::build`]); the converters ask the index through
//! the layout's [`ToastLookup`](gpupg_format::heap::ToastLookup). A value
//! whose chunks are not all there sends its row's page to COPY, with a
//! [`FallbackReason::Toast`](gpupg_format::heap::FallbackReason::Toast).

use std::path::PathBuf;

use gpupg_format::heap::toast::parse_chunk;
use gpupg_format::heap::{
    verify_page, Align, AttributeDesc, ChunkMap, Page, TupleLayout, VisibilityMap,
};
use gpupg_format::PgType;
use gpupg_source::{Connection, SourceError};

use super::catalog::HeapRelation;
use super::files::RelationFiles;
use super::judge::trust;
use super::RANGE_BLOCKS;

/// The largest TOAST relation whose trusted chunks are held in memory
/// (their bytes, about the files' size). Keeping the bytes makes each
/// lookup a copy and needs no second read, which is right while the TOAST
/// relation is small next to the memory an export may use; a larger one
/// is not read and its values go through COPY, as before.
// TODO(issue 17): past this size, index locations (block, offset) and read
// the chunks of each value when asked, to keep memory small.
const MAX_TOAST_BYTES: u64 = 256 << 20;

/// The TOAST relation of `main`, when an output column can hold values
/// stored out of line (a varlena: `attlen` -1) and the table has one.
/// Whether the trusted chunks of TOAST relation `rel` would be indexed
/// (its files are at most [`MAX_TOAST_BYTES`]); asked by the source
/// estimate before the export, so a file that cannot be opened counts as
/// not read.
pub(super) fn fits_in_memory(rel: &HeapRelation) -> bool {
    RelationFiles::open(&rel.base_path, rel.block_size, rel.segment_blocks)
        .is_ok_and(|f| f.nblocks() * rel.block_size as u64 <= MAX_TOAST_BYTES)
}

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

/// The trusted chunks of a TOAST relation, by value id.
pub(super) struct ToastIndex {
    pub map: ChunkMap,
    pub stats: ToastStats,
}

impl ToastIndex {
    /// Reads every page of `files` (the TOAST relation `rel`, proven) and
    /// indexes the chunks of the trusted ones; chunks on the others mark
    /// their values untrusted. `Err`: why the TOAST relation is not read.
    pub(super) fn build(
        rel: &HeapRelation,
        files: &RelationFiles,
        fence: u64,
        dirty: &dyn Fn(u64) -> bool,
    ) -> Result<ToastIndex, String> {
        let bs = rel.block_size;
        let bytes = files.nblocks() * bs as u64;
        if bytes > MAX_TOAST_BYTES {
            return Err(format!(
                "{} holds {:.0} MB, more than the {} MB read into memory",
                rel.label,
                bytes as f64 / 1e6,
                MAX_TOAST_BYTES >> 20
            ));
        }
        let vm_bytes = files
            .read_visibility_map()
            .map_err(|e| format!("reading the visibility map of {}: {e}", rel.label))?;
        let vm = VisibilityMap::new(&vm_bytes, bs)
            .map_err(|e| format!("the visibility map of {}: {e}", rel.label))?;
        let mut map = ChunkMap::new(rel.oid, bs);
        let mut stats = ToastStats {
            pages: files.nblocks(),
            ..ToastStats::default()
        };
        let mut buf = vec![0u8; RANGE_BLOCKS as usize * bs];
        let mut first = 0u64;
        while first < files.nblocks() {
            let n = RANGE_BLOCKS.min(files.nblocks() - first);
            let buf = &mut buf[..n as usize * bs];
            files
                .read_blocks(first, buf)
                .map_err(|e| format!("reading {}: {e}", rel.label))?;
            for (i, page) in buf.chunks_exact(bs).enumerate() {
                let block = first + i as u64;
                let lsn_after = files
                    .read_lsn(block)
                    .map_err(|e| format!("reading {}: {e}", rel.label))?;
                let trusted = matches!(
                    trust((fence, dirty(block)), &vm, block, page, lsn_after, bs),
                    Ok(true)
                ) && (!rel.checksums || verify_page(page, block as u32).is_ok());
                stats.trusted += u64::from(trusted);
                index_page(&mut map, page, bs, trusted, &mut stats);
            }
            first += n;
        }
        map.finish();
        Ok(ToastIndex { map, stats })
    }
}

/// Adds the chunks of `page`; on an untrusted page, marks the values of
/// the chunks it can read as untrusted (a chunk it cannot read leaves a
/// gap that makes its value's reassembly fail, so nothing is lost).
fn index_page(map: &mut ChunkMap, page: &[u8], bs: usize, trusted: bool, stats: &mut ToastStats) {
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
        if trusted {
            map.add(chunk);
            stats.chunks += 1;
        } else {
            map.add_untrusted(chunk.value_id);
        }
    }
}

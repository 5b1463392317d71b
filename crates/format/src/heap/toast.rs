//! Values stored out of line in a table's TOAST relation
//! (`access/detoast.c`, `access/heaptoast.c`), without I/O.
//!
//! A TOAST pointer (`varatt_external`) names a value id in the TOAST
//! relation, whose rows are `(chunk_id oid, chunk_seq int4, chunk_data
//! bytea)`: the stored bytes cut into chunks of [`max_chunk_size`] bytes,
//! numbered from 0. The stored bytes are the value's payload, or, when the
//! pointer says compressed, `va_tcinfo` and the pglz or lz4 data.
//!
//! Here: reading a chunk tuple ([`parse_chunk`]), checking and joining a
//! value's chunks exactly as `heap_fetch_toast_slice` does ([`reassemble`])
//! and turning the stored bytes into the payload ([`expand`]). Where the
//! chunks come from is the caller's: a [`ToastLookup`] handed to the page
//! converters through [`TupleLayout::set_toast`](super::TupleLayout::set_toast);
//! [`ChunkMap`] is one that holds the chunks' bytes in memory.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use thiserror::Error;

use super::tuple::{HeapTuple, TupleError};
use super::varlena::{
    self, CompressionMethod, DecompressError, ToastPointer, Varlena, VarlenaError, VARHDRSZ,
    VARLENA_MAX,
};

/// `EXTERN_TUPLES_PER_PAGE`: TOAST chunks are sized so four fit a page.
const CHUNKS_PER_PAGE: usize = 4;
/// `SizeOfPageHeaderData`.
const PAGE_HEADER: usize = 24;
/// `sizeof(ItemIdData)`.
const ITEM_ID: usize = 4;
/// `MAXALIGN(SizeofHeapTupleHeader)`.
const TUPLE_HEADER: usize = 24;

/// `TOAST_MAX_CHUNK_SIZE` for pages of `block_size` bytes (1996 at 8 KiB):
/// the data of a chunk tuple sized so that [`CHUNKS_PER_PAGE`] fit a page,
/// less the tuple header, `chunk_id`, `chunk_seq` and the bytea header.
pub fn max_chunk_size(block_size: usize) -> usize {
    let maxalign = |n: usize| n.next_multiple_of(8);
    let tuple_max =
        (block_size - maxalign(PAGE_HEADER + CHUNKS_PER_PAGE * ITEM_ID)) / CHUNKS_PER_PAGE / 8 * 8;
    tuple_max - TUPLE_HEADER - 4 - 4 - VARHDRSZ
}

/// Why a value stored out of line could not be read from the TOAST
/// relation's pages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ToastError {
    /// The pointer names another TOAST relation than the table's.
    #[error("the TOAST pointer names relation {pointer}, the table's TOAST relation is {toast}")]
    WrongRelation {
        /// `va_toastrelid`.
        pointer: u32,
        /// The table's `reltoastrelid`.
        toast: u32,
    },
    /// The table has no TOAST relation, or it is not read.
    #[error("the TOAST relation is not read")]
    NoToastRelation,
    /// No chunk of the value is on a trusted page.
    #[error("TOAST value {0} has no chunk on a trusted page")]
    Missing(u32),
    /// A chunk of the value is on a page that cannot be trusted.
    #[error("TOAST value {0} has a chunk on an untrusted page")]
    Untrusted(u32),
    /// The chunks are not numbered 0, 1, … as the value's size needs.
    #[error("TOAST value {value_id}: chunk {found} where chunk {expected} was due")]
    ChunkOrder {
        /// The value id.
        value_id: u32,
        /// The chunk number due.
        expected: i64,
        /// The chunk number found (-1: none left).
        found: i64,
    },
    /// A chunk's size is not the one its place in the value gives.
    #[error("TOAST value {value_id}: chunk {seq} has {size} bytes, {expected} expected")]
    ChunkSize {
        /// The value id.
        value_id: u32,
        /// The chunk number.
        seq: i32,
        /// Its bytes.
        size: usize,
        /// The bytes due.
        expected: usize,
    },
    /// Raw and stored sizes no value can have.
    #[error("TOAST pointer of value {value_id} has raw size {rawsize} and stored size {extsize}")]
    BadPointer {
        /// The value id.
        value_id: u32,
        /// `va_rawsize`.
        rawsize: i32,
        /// The stored size.
        extsize: u32,
    },
    /// A compressed value's header disagrees with its pointer.
    #[error("compressed TOAST value {value_id}: its header says {header}, its pointer {pointer}")]
    CompressedHeader {
        /// The value id.
        value_id: u32,
        /// Method and raw size per `va_tcinfo`.
        header: String,
        /// Method and raw size per the pointer.
        pointer: String,
    },
    /// A chunk's page could not be read again from the TOAST relation's
    /// files (when chunks are indexed by location and read when needed).
    #[error("TOAST value {value_id}: reading its chunks: {reason}")]
    Read {
        /// The value id.
        value_id: u32,
        /// The I/O error.
        reason: String,
    },
    /// A chunk tuple that is not `(oid, int4, bytea)` with no NULLs.
    #[error("malformed TOAST chunk tuple: {0}")]
    ChunkTuple(&'static str),
    /// A chunk tuple's header.
    #[error(transparent)]
    Tuple(#[from] TupleError),
    /// A chunk's bytea header.
    #[error(transparent)]
    Varlena(#[from] VarlenaError),
    /// The joined chunks do not decompress to the raw size.
    #[error(transparent)]
    Decompress(#[from] DecompressError),
}

/// One chunk of a TOAST value, as stored in a TOAST relation's tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// `chunk_id`: the value id.
    pub value_id: u32,
    /// `chunk_seq`: the chunk's number, from 0.
    pub seq: i32,
    /// `chunk_data`'s payload.
    pub data: &'a [u8],
}

/// Reads the chunk tuple `tuple` (a TOAST relation's heap tuple, header
/// included): `chunk_id` and `chunk_seq` at data offsets 0 and 4, then
/// `chunk_data`, a bytea never compressed or out of line (storage plain).
pub fn parse_chunk(tuple: &[u8]) -> Result<Chunk<'_>, ToastError> {
    let t = HeapTuple::parse(tuple)?;
    if t.natts() != 3 || (0..3).any(|i| t.is_null(i)) {
        return Err(ToastError::ChunkTuple("not three non-NULL attributes"));
    }
    let d = t.data();
    let word = |at: usize| {
        d.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(ToastError::ChunkTuple("truncated"))
    };
    let value_id = word(0)?;
    let seq = word(4)? as i32;
    // A 1-byte header is stored unaligned; a 4-byte one at the int
    // alignment, which offset 8 already has.
    let rest = d.get(8..).ok_or(ToastError::ChunkTuple("truncated"))?;
    let size = varlena::datum_size(rest)?;
    let data = match varlena::parse(&rest[..size])? {
        Varlena::Short(p) | Varlena::Plain(p) => p,
        _ => {
            return Err(ToastError::ChunkTuple(
                "chunk_data compressed or out of line",
            ))
        }
    };
    Ok(Chunk {
        value_id,
        seq,
        data,
    })
}

/// Checks the pointer's sizes; the stored size.
fn stored_size(ptr: &ToastPointer) -> Result<usize, ToastError> {
    let bad = || ToastError::BadPointer {
        value_id: ptr.value_id,
        rawsize: ptr.rawsize,
        extsize: ptr.extsize(),
    };
    let raw = usize::try_from(ptr.rawsize)
        .ok()
        .and_then(|r| r.checked_sub(VARHDRSZ))
        .filter(|&r| r <= VARLENA_MAX)
        .ok_or_else(bad)?;
    let ext = ptr.extsize() as usize;
    if ext > raw {
        return Err(bad());
    }
    Ok(ext)
}

/// Joins the chunks of the value `ptr` points to, given in `chunk_seq`
/// order, appending the stored bytes to `stored`: chunks 0 to n-1, each
/// [`max_chunk_size`] bytes but the last, which holds the rest, as
/// `heap_fetch_toast_slice` requires. On error `stored` may hold part of
/// the value.
pub fn reassemble<'c>(
    ptr: &ToastPointer,
    block_size: usize,
    chunks: impl IntoIterator<Item = (i32, &'c [u8])>,
    stored: &mut Vec<u8>,
) -> Result<(), ToastError> {
    let size = stored_size(ptr)?;
    let max = max_chunk_size(block_size);
    let total = size.div_ceil(max);
    let mut chunks = chunks.into_iter();
    stored.reserve(size);
    for expected in 0..total {
        let (seq, data) = chunks.next().ok_or(ToastError::ChunkOrder {
            value_id: ptr.value_id,
            expected: expected as i64,
            found: -1,
        })?;
        if i64::from(seq) != expected as i64 {
            return Err(ToastError::ChunkOrder {
                value_id: ptr.value_id,
                expected: expected as i64,
                found: i64::from(seq),
            });
        }
        let due = if expected + 1 < total {
            max
        } else {
            size - expected * max
        };
        if data.len() != due {
            return Err(ToastError::ChunkSize {
                value_id: ptr.value_id,
                seq,
                size: data.len(),
                expected: due,
            });
        }
        stored.extend_from_slice(data);
    }
    if let Some((seq, _)) = chunks.next() {
        return Err(ToastError::ChunkOrder {
            value_id: ptr.value_id,
            expected: total as i64,
            found: i64::from(seq),
        });
    }
    Ok(())
}

/// Appends the payload of the value `ptr` points to, given its stored
/// bytes (from [`reassemble`]), to `out`: copied, or decompressed when the
/// pointer says compressed (`va_tcinfo` first, whose method and raw size
/// must be the pointer's).
pub fn expand(ptr: &ToastPointer, stored: &[u8], out: &mut Vec<u8>) -> Result<(), ToastError> {
    let Some(method) = ptr.compression() else {
        out.extend_from_slice(stored);
        return Ok(());
    };
    let method = method?;
    stored_size(ptr)?;
    // Checked by `stored_size`: at least the header.
    let raw = ptr.rawsize as usize - VARHDRSZ;
    let tcinfo = stored
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(ToastError::ChunkTuple(
            "compressed value shorter than its header",
        ))?;
    let header_method = match tcinfo >> 30 {
        0 => CompressionMethod::Pglz,
        1 => CompressionMethod::Lz4,
        b => return Err(VarlenaError::CompressionMethod(b as u8).into()),
    };
    let header_raw = (tcinfo & VARLENA_MAX as u32) as usize;
    if header_method != method || header_raw != raw {
        return Err(ToastError::CompressedHeader {
            value_id: ptr.value_id,
            header: format!("{header_method:?}, {header_raw} bytes"),
            pointer: format!("{method:?}, {raw} bytes"),
        });
    }
    varlena::decompress_append(method, &stored[4..], raw, out)?;
    Ok(())
}

/// Where the converters get values stored out of line. Implementations
/// answer from the TOAST relation's trusted pages only.
pub trait ToastLookup: Debug + Send + Sync {
    /// Appends the payload (decompressed) of the value `ptr` points to, to
    /// `out`, or says why it cannot be read from the files.
    fn detoast(&self, ptr: &ToastPointer, out: &mut Vec<u8>) -> Result<(), ToastError>;
}

/// One value's chunks: `(chunk_seq, chunk_data)`.
type Chunks = Vec<(i32, Box<[u8]>)>;

/// A [`ToastLookup`] holding the chunks' bytes in memory, keyed by value
/// id: for TOAST relations small enough to keep whole, and for tests.
#[derive(Debug, Default)]
pub struct ChunkMap {
    toast_relid: u32,
    block_size: usize,
    /// Per value id, its chunks in `chunk_seq` order.
    values: HashMap<u32, Chunks>,
    /// Value ids with a chunk on a page that cannot be trusted.
    untrusted: HashSet<u32>,
}

impl ChunkMap {
    /// An empty map for the TOAST relation `toast_relid` (its OID) of
    /// pages of `block_size` bytes.
    pub fn new(toast_relid: u32, block_size: usize) -> ChunkMap {
        ChunkMap {
            toast_relid,
            block_size,
            ..ChunkMap::default()
        }
    }

    /// Adds a chunk read from a trusted page.
    pub fn add(&mut self, chunk: Chunk<'_>) {
        self.values
            .entry(chunk.value_id)
            .or_default()
            .push((chunk.seq, chunk.data.into()));
    }

    /// Marks a value as having a chunk on a page that cannot be trusted:
    /// it is then never read from the map.
    pub fn add_untrusted(&mut self, value_id: u32) {
        self.untrusted.insert(value_id);
    }

    /// Adds the chunks and untrusted values of `other`, a map of another
    /// part of the same TOAST relation (read by another thread).
    pub fn absorb(&mut self, other: ChunkMap) {
        for (id, chunks) in other.values {
            self.values.entry(id).or_default().extend(chunks);
        }
        self.untrusted.extend(other.untrusted);
    }

    /// Sorts every value's chunks by number; call once all are added.
    pub fn finish(&mut self) {
        for chunks in self.values.values_mut() {
            chunks.sort_unstable_by_key(|c| c.0);
        }
    }

    /// Bytes of chunk data held.
    pub fn bytes(&self) -> usize {
        self.values
            .values()
            .flat_map(|v| v.iter().map(|c| c.1.len()))
            .sum()
    }
}

/// Whether `ptr` may be looked up in an index of TOAST relation
/// `toast_relid` whose values `untrusted` have a chunk on an untrusted page:
/// the checks every [`ToastLookup`] makes before its own.
pub fn admit(
    ptr: &ToastPointer,
    toast_relid: u32,
    untrusted: &HashSet<u32>,
) -> Result<(), ToastError> {
    if ptr.toast_relid != toast_relid {
        return Err(ToastError::WrongRelation {
            pointer: ptr.toast_relid,
            toast: toast_relid,
        });
    }
    if untrusted.contains(&ptr.value_id) {
        return Err(ToastError::Untrusted(ptr.value_id));
    }
    Ok(())
}

impl ToastLookup for ChunkMap {
    fn detoast(&self, ptr: &ToastPointer, out: &mut Vec<u8>) -> Result<(), ToastError> {
        admit(ptr, self.toast_relid, &self.untrusted)?;
        let chunks = self
            .values
            .get(&ptr.value_id)
            .ok_or(ToastError::Missing(ptr.value_id))?;
        let iter = chunks.iter().map(|(s, d)| (*s, &d[..]));
        if ptr.compression().is_none() {
            // Stored uncompressed: straight into the output.
            let start = out.len();
            return reassemble(ptr, self.block_size, iter, out)
                .inspect_err(|_| out.truncate(start));
        }
        let mut stored = Vec::new();
        reassemble(ptr, self.block_size, iter, &mut stored)?;
        expand(ptr, &stored, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::build::{heap_fill_tuple, toast_chunk_tuple, FillAttr};
    use crate::heap::tuple::Align;
    use crate::heap::{lz4, pglz};

    #[test]
    fn chunk_size_matches_postgres() {
        // TOAST_MAX_CHUNK_SIZE at 8, 16 and 32 KiB blocks.
        assert_eq!(max_chunk_size(8192), 1996);
        assert_eq!(max_chunk_size(16384), 4044);
        assert_eq!(max_chunk_size(32768), 8140);
    }

    /// The chunks PostgreSQL would store for `stored` under value `id`.
    fn cut(id: u32, stored: &[u8]) -> Vec<Vec<u8>> {
        stored
            .chunks(1996)
            .enumerate()
            .map(|(i, c)| toast_chunk_tuple(id, i as i32, c))
            .collect()
    }

    fn map_of(tuples: &[Vec<u8>]) -> ChunkMap {
        let mut m = ChunkMap::new(16390, 8192);
        for t in tuples.iter().rev() {
            m.add(parse_chunk(t).unwrap());
        }
        m.finish();
        m
    }

    fn pointer(rawsize: usize, extsize: usize, method: u32, value_id: u32) -> ToastPointer {
        ToastPointer {
            rawsize: (rawsize + 4) as i32,
            extinfo: extsize as u32 | method << 30,
            value_id,
            toast_relid: 16390,
        }
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"toast me "[i % 9] ^ (i / 501) as u8)
            .collect()
    }

    #[test]
    fn uncompressed_pglz_and_lz4_values() {
        let raw = text(10_000);
        let mut tuples = cut(1, &raw);
        let mut pg = (raw.len() as u32).to_le_bytes().to_vec();
        pg.extend_from_slice(&pglz::compress(&raw));
        tuples.extend(cut(2, &pg));
        let mut lz = (raw.len() as u32 | 1 << 30).to_le_bytes().to_vec();
        lz.extend_from_slice(&lz4::compress(&raw));
        tuples.extend(cut(3, &lz));
        let m = map_of(&tuples);
        for (ptr, what) in [
            (pointer(raw.len(), raw.len(), 0, 1), "plain"),
            (pointer(raw.len(), pg.len(), 0, 2), "pglz"),
            (pointer(raw.len(), lz.len(), 1, 3), "lz4"),
        ] {
            let mut out = b"x".to_vec();
            m.detoast(&ptr, &mut out).unwrap();
            assert_eq!(&out[1..], &raw[..], "{what}");
        }
    }

    #[test]
    fn missing_reordered_and_wrong_sized_chunks_are_errors() {
        let raw = text(5000); // chunks of 1996, 1996, 1008
        let ptr = pointer(raw.len(), raw.len(), 0, 7);
        let all = cut(7, &raw);
        let detoast = |tuples: &[Vec<u8>], ptr: &ToastPointer| {
            let mut out = Vec::new();
            map_of(tuples).detoast(ptr, &mut out).map(|_| out)
        };
        assert_eq!(detoast(&all, &ptr).unwrap(), raw);
        assert!(matches!(
            detoast(&all[..2], &ptr),
            Err(ToastError::ChunkOrder {
                expected: 2,
                found: -1,
                ..
            })
        ));
        assert!(matches!(
            detoast(&[all[0].clone(), all[2].clone()], &ptr),
            Err(ToastError::ChunkOrder {
                expected: 1,
                found: 2,
                ..
            })
        ));
        let mut extra = all.clone();
        extra.push(toast_chunk_tuple(7, 3, b"more"));
        assert!(matches!(
            detoast(&extra, &ptr),
            Err(ToastError::ChunkOrder {
                expected: 3,
                found: 3,
                ..
            })
        ));
        let mut short = all.clone();
        short[1] = toast_chunk_tuple(7, 1, &raw[1996..3000]);
        assert!(matches!(
            detoast(&short, &ptr),
            Err(ToastError::ChunkSize {
                seq: 1,
                size: 1004,
                expected: 1996,
                ..
            })
        ));
        assert_eq!(
            detoast(&all, &pointer(raw.len(), raw.len(), 0, 8)),
            Err(ToastError::Missing(8))
        );
        let mut other = ptr;
        other.toast_relid = 1;
        assert!(matches!(
            detoast(&all, &other),
            Err(ToastError::WrongRelation { pointer: 1, .. })
        ));
        let mut m = map_of(&all);
        m.add_untrusted(7);
        assert_eq!(
            m.detoast(&ptr, &mut Vec::new()),
            Err(ToastError::Untrusted(7))
        );
        // Stored larger than raw.
        assert!(matches!(
            detoast(&all, &pointer(10, 5000, 0, 7)),
            Err(ToastError::BadPointer { .. })
        ));
    }

    #[test]
    fn maps_of_parts_are_absorbed() {
        let raw = text(5000);
        let ptr = pointer(raw.len(), raw.len(), 0, 7);
        let all = cut(7, &raw);
        // Chunks 2 and 0 in one part, 1 and an untrusted value in the other.
        let mut a = ChunkMap::new(16390, 8192);
        a.add(parse_chunk(&all[2]).unwrap());
        a.add(parse_chunk(&all[0]).unwrap());
        let mut b = ChunkMap::new(16390, 8192);
        b.add(parse_chunk(&all[1]).unwrap());
        b.add_untrusted(9);
        a.absorb(b);
        a.finish();
        let mut out = Vec::new();
        a.detoast(&ptr, &mut out).unwrap();
        assert_eq!(out, raw);
        assert_eq!(a.bytes(), raw.len());
        assert_eq!(
            a.detoast(&pointer(10, 10, 0, 9), &mut out),
            Err(ToastError::Untrusted(9))
        );
    }

    #[test]
    fn compressed_header_must_match_pointer() {
        let raw = text(6000);
        let mut lz = (raw.len() as u32 | 1 << 30).to_le_bytes().to_vec();
        lz.extend_from_slice(&lz4::compress(&raw));
        let m = map_of(&cut(4, &lz));
        // The pointer says pglz, the header lz4.
        assert!(matches!(
            m.detoast(&pointer(raw.len(), lz.len(), 0, 4), &mut Vec::new()),
            Err(ToastError::CompressedHeader { .. })
        ));
        // A raw size the data does not decompress to.
        let mut bad = ((raw.len() as u32 + 1) | 1 << 30).to_le_bytes().to_vec();
        bad.extend_from_slice(&lz4::compress(&raw));
        let m = map_of(&cut(5, &bad));
        assert!(matches!(
            m.detoast(&pointer(raw.len() + 1, bad.len(), 1, 5), &mut Vec::new()),
            Err(ToastError::Decompress(_))
        ));
    }

    #[test]
    fn chunk_tuples() {
        let t = toast_chunk_tuple(42, 3, b"data");
        assert_eq!(
            parse_chunk(&t).unwrap(),
            Chunk {
                value_id: 42,
                seq: 3,
                data: b"data"
            }
        );
        let two = heap_fill_tuple(
            &[FillAttr::new(4, Align::Int), FillAttr::new(4, Align::Int)],
            &[Some(&[0; 4][..]), Some(&[0; 4][..])],
        );
        assert!(matches!(parse_chunk(&two), Err(ToastError::ChunkTuple(_))));
        assert!(parse_chunk(&t[..t.len() - 2]).is_err());
    }

    /// Pages with TOAST pointers convert through the layout's lookup, text,
    /// bytea and numeric alike; a value whose chunks are missing makes the
    /// page fall back, naming why.
    #[test]
    fn pages_convert_through_the_lookup() {
        use crate::encode::{encode_tuple, Value};
        use crate::heap::build::{toast_pointer, PageBuilder};
        use crate::heap::{transcode_page, AttributeDesc, FallbackReason, TupleLayout};
        use crate::types::PgType;
        use crate::CopyChunk;
        use std::sync::Arc;

        let raw = text(7000);
        let mut lz = (raw.len() as u32 | 1 << 30).to_le_bytes().to_vec();
        lz.extend_from_slice(&lz4::compress(&raw));
        let mut tuples = cut(1, &raw);
        tuples.extend(cut(2, &lz));
        let map = Arc::new(map_of(&tuples));
        let attrs = vec![
            AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
            AttributeDesc::column(PgType::Text, -1, Align::Int, false),
            AttributeDesc::column(PgType::Bytea, -1, Align::Int, false),
        ];
        let fill = [
            FillAttr::new(4, Align::Int),
            FillAttr::new(-1, Align::Int),
            FillAttr::new(-1, Align::Int),
        ];
        let plain = toast_pointer((raw.len() + 4) as i32, raw.len() as u32, 1, 16390);
        let packed = toast_pointer((raw.len() + 4) as i32, lz.len() as u32 | 1 << 30, 2, 16390);
        let row = heap_fill_tuple(
            &fill,
            &[Some(&5i32.to_le_bytes()[..]), Some(&plain), Some(&packed)],
        );
        let mut b = PageBuilder::new(8192, 0);
        b.add_tuple(&row).unwrap();
        let page = b.finish();
        let mut layout = TupleLayout::all_columns(attrs, HashMap::new()).unwrap();
        let mut chunk = CopyChunk::default();
        let e = transcode_page(&page, 0, &layout, &mut chunk).unwrap_err();
        assert_eq!(e.reason, FallbackReason::ExternalToast);
        layout.set_toast(map);
        transcode_page(&page, 0, &layout, &mut chunk).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert_eq!(
            chunk.row(0),
            &encode_tuple(&[Value::Int4(5), Value::Text(text), Value::Bytes(raw.clone())])[..]
        );
        // Value 3 has no chunks.
        let gone = toast_pointer((raw.len() + 4) as i32, raw.len() as u32, 3, 16390);
        let row = heap_fill_tuple(&fill, &[Some(&[0; 4][..]), Some(&gone), None]);
        let mut b = PageBuilder::new(8192, 4);
        b.add_tuple(&row).unwrap();
        let e = transcode_page(&b.finish(), 4, &layout, &mut chunk).unwrap_err();
        assert_eq!(e.reason, FallbackReason::Toast(ToastError::Missing(3)));
        assert_eq!(e.attnum, Some(2));
    }
}

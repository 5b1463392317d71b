//! Writing heap tuples and pages the way PostgreSQL does, the inverse of
//! [`tuple`](mod@super::tuple) and [`transcode`](super::transcode).
//!
//! gpupgparser only reads heap pages; this exists so tests (here and in the
//! crates above) can build exact server-like pages from on-disk datums
//! without a server. The functions panic on inconsistent input (a test
//! bug), never on data.

use super::page::{
    maxalign, ItemId, LpFlags, PageHeader, ITEM_ID_SIZE, PAGE_HEADER_SIZE, PAGE_LAYOUT_VERSION,
};
use super::tuple::{
    bitmap_len, Align, TupleHeader, HEAP_HASEXTERNAL, HEAP_HASNULL, HEAP_HASVARWIDTH,
    HEAP_TUPLE_HEADER_SIZE, HEAP_XMAX_INVALID, HEAP_XMIN_COMMITTED,
};
use super::varlena::{CompressionMethod, VARATT_SHORT_MAX, VARHDRSZ, VARTAG_ONDISK};
use super::{lz4, pglz};

/// How one attribute is stored, for [`heap_fill_tuple`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillAttr {
    /// `attlen`: a fixed size, or -1 for a varlena, -2 for a C string.
    pub attlen: i16,
    /// `attalign`.
    pub align: Align,
    /// `attstorage = 'p'`: varlenas keep their 4-byte header.
    pub plain_storage: bool,
}

impl FillAttr {
    /// An attribute of `attlen` and `align` with the default (not plain) storage.
    pub fn new(attlen: i16, align: Align) -> FillAttr {
        FillAttr {
            attlen,
            align,
            plain_storage: false,
        }
    }
}

/// A varlena with a 4-byte header.
pub fn varlena_4b(payload: &[u8]) -> Vec<u8> {
    let size = (payload.len() + VARHDRSZ) as u32;
    assert!(size <= 0x3fff_ffff, "varlena too large");
    let mut v = (size << 2).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A compressed-inline varlena of already compressed `data` that
/// decompresses to `rawsize` bytes.
pub fn varlena_compressed(data: &[u8], rawsize: usize, method: CompressionMethod) -> Vec<u8> {
    let size = (data.len() + 8) as u32;
    let method_bits: u32 = match method {
        CompressionMethod::Pglz => 0,
        CompressionMethod::Lz4 => 1,
    };
    let mut v = ((size << 2) | 0x02).to_le_bytes().to_vec();
    v.extend_from_slice(&((rawsize as u32) | (method_bits << 30)).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// `payload` pglz-compressed inline (with [`pglz::compress`]).
pub fn varlena_pglz(payload: &[u8]) -> Vec<u8> {
    varlena_compressed(
        &pglz::compress(payload),
        payload.len(),
        CompressionMethod::Pglz,
    )
}

/// `payload` lz4-compressed inline (with [`lz4::compress`]).
pub fn varlena_lz4(payload: &[u8]) -> Vec<u8> {
    varlena_compressed(
        &lz4::compress(payload),
        payload.len(),
        CompressionMethod::Lz4,
    )
}

/// An on-disk TOAST pointer (`0x01`, `VARTAG_ONDISK`, `varatt_external`).
pub fn toast_pointer(rawsize: i32, extinfo: u32, value_id: u32, toast_relid: u32) -> Vec<u8> {
    let mut v = vec![0x01, VARTAG_ONDISK];
    for w in [rawsize as u32, extinfo, value_id, toast_relid] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// A row of a TOAST relation (chunk_id oid, chunk_seq int4, chunk_data
/// bytea), as `toast_save_datum` writes it: chunk `seq` of value
/// `value_id`, holding `data`.
pub fn toast_chunk_tuple(value_id: u32, seq: i32, data: &[u8]) -> Vec<u8> {
    let attrs = [
        FillAttr::new(4, Align::Int),
        FillAttr::new(4, Align::Int),
        FillAttr::new(-1, Align::Int),
    ];
    heap_fill_tuple(
        &attrs,
        &[
            Some(&value_id.to_le_bytes()[..]),
            Some(&seq.to_le_bytes()[..]),
            Some(&varlena_4b(data)[..]),
        ],
    )
}

/// The on-disk numeric (a 4-byte-header varlena, as `make_result` builds
/// it) of a value in numeric_send's format; `None` if `send` is not one.
/// Finite values with `dscale <= 63` and `-64 <= weight <= 63` take the
/// short form.
pub fn numeric_to_disk(send: &[u8]) -> Option<Vec<u8>> {
    let rd = |i: usize| send.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let ndigits = usize::from(rd(0)?);
    let weight = rd(2)? as i16;
    let sign = rd(4)?;
    let dscale = rd(6)?;
    if send.len() != 8 + 2 * ndigits {
        return None;
    }
    let mut p = Vec::new();
    match sign {
        0xC000 | 0xD000 | 0xF000 => p.extend_from_slice(&sign.to_le_bytes()),
        0x0000 | 0x4000 => {
            if dscale <= 63 && (-64..=63).contains(&weight) {
                let h = 0x8000
                    | if sign == 0x4000 { 0x2000 } else { 0 }
                    | (dscale << 7)
                    | if weight < 0 { 0x0040 } else { 0 }
                    | (weight as u16 & 0x003F);
                p.extend_from_slice(&h.to_le_bytes());
            } else {
                p.extend_from_slice(&(sign | (dscale & 0x3FFF)).to_le_bytes());
                p.extend_from_slice(&weight.to_le_bytes());
            }
            for d in send[8..].chunks_exact(2) {
                p.extend_from_slice(&[d[1], d[0]]);
            }
        }
        _ => return None,
    }
    Some(varlena_4b(&p))
}

/// An on-disk array (a 4-byte-header ArrayType, as `construct_md_array`
/// builds it) of element type `elemtype` with `dims` as (length, lower
/// bound) and the on-disk datums of its elements (`None` = NULL), each
/// followed by padding to `elem_align`.
pub fn array_to_disk(
    elemtype: u32,
    dims: &[(i32, i32)],
    elements: &[Option<Vec<u8>>],
    elem_align: Align,
) -> Vec<u8> {
    let nd = if elements.is_empty() { 0 } else { dims.len() };
    let has_nulls = elements.iter().any(Option::is_none);
    let header = 16 + 8 * nd;
    let (dataoffset, data_start) = if has_nulls {
        let off = maxalign(header + bitmap_len(elements.len()));
        (off, off)
    } else {
        (0, maxalign(header))
    };
    // Built with the 4-byte header in place; the size is set at the end.
    let mut a = vec![0u8; data_start];
    a[4..8].copy_from_slice(&(nd as i32).to_le_bytes());
    a[8..12].copy_from_slice(&(dataoffset as i32).to_le_bytes());
    a[12..16].copy_from_slice(&elemtype.to_le_bytes());
    for (i, (d, l)) in dims.iter().take(nd).enumerate() {
        a[16 + 4 * i..20 + 4 * i].copy_from_slice(&d.to_le_bytes());
        a[16 + 4 * nd + 4 * i..20 + 4 * nd + 4 * i].copy_from_slice(&l.to_le_bytes());
    }
    for (i, e) in elements.iter().enumerate() {
        if let Some(d) = e {
            if has_nulls {
                a[header + i / 8] |= 1 << (i % 8);
            }
            a.extend_from_slice(d);
            a.resize(elem_align.align(a.len()), 0);
        }
    }
    let size = a.len() as u32;
    a[0..4].copy_from_slice(&(size << 2).to_le_bytes());
    a
}

/// Forms a heap tuple as `heap_form_tuple` / `heap_fill_tuple` do, from the
/// on-disk datum of each attribute (`None` = NULL): fixed-size values are
/// `attlen` bytes, varlenas whole datums (any header form), cstrings
/// include their NUL. Non-null varlenas with a 4-byte uncompressed header
/// that fit a 1-byte header get one (unless plain storage); other 4-byte
/// varlenas and fixed values are aligned; 1-byte-header and TOAST-pointer
/// datums are not. The tuple's attribute count is `values.len()` (fewer
/// than `attrs` models a tuple written before columns were added). xmin is
/// frozen (2, committed), xmax invalid.
pub fn heap_fill_tuple(attrs: &[FillAttr], values: &[Option<&[u8]>]) -> Vec<u8> {
    assert!(values.len() <= attrs.len(), "more values than attributes");
    let natts = values.len();
    let has_null = values.iter().any(Option::is_none);
    let bitmap = if has_null { bitmap_len(natts) } else { 0 };
    let hoff = maxalign(HEAP_TUPLE_HEADER_SIZE + bitmap);
    let mut t = vec![0u8; hoff];
    let mut infomask = HEAP_XMIN_COMMITTED | HEAP_XMAX_INVALID;
    if has_null {
        infomask |= HEAP_HASNULL;
    }
    for (i, (attr, value)) in attrs.iter().zip(values).enumerate() {
        let Some(d) = value else { continue };
        if has_null {
            t[HEAP_TUPLE_HEADER_SIZE + i / 8] |= 1 << (i % 8);
        }
        // Offsets relative to t_hoff, which is MAXALIGNed, so aligning the
        // absolute length is the same.
        match attr.attlen {
            l if l > 0 => {
                assert_eq!(
                    d.len(),
                    l as usize,
                    "attribute {} has the wrong size",
                    i + 1
                );
                t.resize(attr.align.align(t.len()), 0);
                t.extend_from_slice(d);
            }
            -1 => {
                infomask |= HEAP_HASVARWIDTH;
                let first = d[0];
                if first == 0x01 {
                    infomask |= HEAP_HASEXTERNAL;
                    t.extend_from_slice(d);
                } else if first & 0x01 == 0x01 {
                    t.extend_from_slice(d);
                } else if first & 0x03 == 0x00
                    && d.len() - VARHDRSZ < VARATT_SHORT_MAX
                    && !attr.plain_storage
                {
                    t.push((((d.len() - VARHDRSZ + 1) << 1) | 1) as u8);
                    t.extend_from_slice(&d[VARHDRSZ..]);
                } else {
                    t.resize(attr.align.align(t.len()), 0);
                    t.extend_from_slice(d);
                }
            }
            -2 => {
                infomask |= HEAP_HASVARWIDTH;
                t.resize(attr.align.align(t.len()), 0);
                t.extend_from_slice(d);
            }
            l => panic!("invalid attlen {l}"),
        }
    }
    TupleHeader {
        xmin: 2,
        xmax: 0,
        cid: 0,
        ctid_block: 0,
        ctid_offset: 0,
        infomask2: natts as u16,
        infomask,
        hoff: hoff as u8,
    }
    .write(&mut t);
    t
}

/// Builds one heap page the way `PageInit` and `PageAddItem` do: line
/// pointers grow from the header, tuples (MAXALIGNed) from the end.
#[derive(Debug, Clone)]
pub struct PageBuilder {
    page: Vec<u8>,
    header: PageHeader,
    blkno: u32,
}

impl PageBuilder {
    /// An empty page of `block_size` bytes for block `blkno` (the block
    /// number is written into the tuples' `t_ctid`).
    pub fn new(block_size: usize, blkno: u32) -> PageBuilder {
        PageBuilder {
            page: vec![0u8; block_size],
            header: PageHeader {
                lsn: 0,
                checksum: 0,
                flags: 0,
                lower: PAGE_HEADER_SIZE as u16,
                upper: block_size as u16,
                special: block_size as u16,
                pagesize_version: (block_size as u16 & 0xff00) | u16::from(PAGE_LAYOUT_VERSION),
                prune_xid: 0,
            },
            blkno,
        }
    }

    /// Free bytes between the line pointers and the tuples.
    pub fn free_space(&self) -> usize {
        usize::from(self.header.upper) - usize::from(self.header.lower)
    }

    /// Whether a tuple of `len` bytes (and its line pointer) still fits.
    pub fn fits(&self, len: usize) -> bool {
        maxalign(len) + ITEM_ID_SIZE <= self.free_space()
    }

    fn push_item(&mut self, id: ItemId) -> u16 {
        let at = usize::from(self.header.lower);
        self.page[at..at + ITEM_ID_SIZE].copy_from_slice(&id.to_raw().to_le_bytes());
        self.header.lower += ITEM_ID_SIZE as u16;
        (at - PAGE_HEADER_SIZE) as u16 / ITEM_ID_SIZE as u16 + 1
    }

    /// Adds a tuple with an `LP_NORMAL` line pointer and returns its offset
    /// number, or `None` if it does not fit. `t_ctid` is set to its own TID.
    pub fn add_tuple(&mut self, tuple: &[u8]) -> Option<u16> {
        if !self.fits(tuple.len()) {
            return None;
        }
        let upper = usize::from(self.header.upper) - maxalign(tuple.len());
        self.page[upper..upper + tuple.len()].copy_from_slice(tuple);
        self.header.upper = upper as u16;
        let offnum = self.push_item(ItemId {
            off: upper as u16,
            flags: LpFlags::Normal,
            len: tuple.len() as u16,
        });
        let t = &mut self.page[upper..upper + tuple.len()];
        t[12..14].copy_from_slice(&((self.blkno >> 16) as u16).to_le_bytes());
        t[14..16].copy_from_slice(&(self.blkno as u16).to_le_bytes());
        t[16..18].copy_from_slice(&offnum.to_le_bytes());
        Some(offnum)
    }

    /// Adds a line pointer without storage (`LP_UNUSED`, `LP_DEAD`, or
    /// `LP_REDIRECT` to offset number `target`).
    pub fn add_line_pointer(&mut self, flags: LpFlags, target: u16) -> Option<u16> {
        if self.free_space() < ITEM_ID_SIZE {
            return None;
        }
        Some(self.push_item(ItemId {
            off: if flags == LpFlags::Redirect {
                target
            } else {
                0
            },
            flags,
            len: 0,
        }))
    }

    /// Sets `pd_flags` (e.g. `PD_ALL_VISIBLE`).
    pub fn set_flags(&mut self, flags: u16) {
        self.header.flags = flags;
    }

    /// Sets `pd_lsn`, the WAL position of the page's last change.
    pub fn set_lsn(&mut self, lsn: u64) {
        self.header.lsn = lsn;
    }

    /// The page bytes (checksum not set; see
    /// [`set_page_checksum`](super::checksum::set_page_checksum)).
    pub fn finish(mut self) -> Vec<u8> {
        self.header.write(&mut self.page);
        self.page
    }
}

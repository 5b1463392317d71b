//! The layout of a heap page: the page header and the line pointer array
//! (PostgreSQL's `storage/bufpage.h` and `storage/itemid.h`).
//!
//! ```text
//! 0        24              pd_lower         pd_upper           pd_special  block_size
//! | header | line pointers |   free space   | tuples (from the end) | special |
//! ```
//!
//! All integers on a page are in the host's byte order; PostgreSQL on every
//! platform gpupgparser reads from (x86-64, aarch64) is little-endian, so
//! this module reads little-endian.

use thiserror::Error;

/// PostgreSQL's default block size (`BLCKSZ`).
pub const DEFAULT_BLOCK_SIZE: usize = 8192;
/// `SizeOfPageHeaderData`.
pub const PAGE_HEADER_SIZE: usize = 24;
/// `sizeof(ItemIdData)`.
pub const ITEM_ID_SIZE: usize = 4;
/// `PG_PAGE_LAYOUT_VERSION` of PostgreSQL 8.3 and later.
pub const PAGE_LAYOUT_VERSION: u8 = 4;
/// `MAXIMUM_ALIGNOF` on 64-bit platforms.
pub const MAXIMUM_ALIGNOF: usize = 8;

/// `pd_flags`: there are (probably) unused line pointers before `pd_lower`.
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
/// `pd_flags`: not enough free space for a new tuple.
pub const PD_PAGE_FULL: u16 = 0x0002;
/// `pd_flags`: every tuple on the page is visible to every transaction.
pub const PD_ALL_VISIBLE: u16 = 0x0004;
/// The flag bits that may be set (`PD_VALID_FLAG_BITS`).
pub const PD_VALID_FLAG_BITS: u16 = 0x0007;

/// Rounds `off` up to a multiple of `MAXIMUM_ALIGNOF` (`MAXALIGN`).
#[inline]
pub const fn maxalign(off: usize) -> usize {
    (off + MAXIMUM_ALIGNOF - 1) & !(MAXIMUM_ALIGNOF - 1)
}

/// What is wrong with a page.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PageError {
    /// A block size PostgreSQL cannot be built with.
    #[error("block size {0} is not a power of two between 1 kB and 32 kB")]
    BadBlockSize(usize),
    /// A page buffer whose length is not the block size.
    #[error("page has {found} bytes, the block size is {expected}")]
    WrongSize {
        /// The block size.
        expected: usize,
        /// The buffer's length.
        found: usize,
    },
    /// `pd_upper` is 0 (never initialized) but the page holds data.
    #[error("page header says it is new (pd_upper = 0) but the page is not all zeros")]
    NewPageNotZero,
    /// `pd_pagesize_version`'s size differs from the block size.
    #[error("page header has page size {found}, the block size is {expected}")]
    PageSize {
        /// The block size.
        expected: usize,
        /// The size in the header.
        found: usize,
    },
    /// A page layout version other than 4 (PostgreSQL 8.3 and later).
    #[error("page layout version {0} (only version 4 is known)")]
    LayoutVersion(u8),
    /// `pd_flags` bits PostgreSQL does not define.
    #[error("page header has unknown flag bits {0:#06x}")]
    Flags(u16),
    /// `pd_lower`, `pd_upper` and `pd_special` out of order or past the page.
    #[error(
        "page header bounds are inconsistent: pd_lower {lower}, pd_upper {upper}, pd_special {special}"
    )]
    Bounds {
        /// `pd_lower`: end of the line pointer array.
        lower: u16,
        /// `pd_upper`: start of the tuples.
        upper: u16,
        /// `pd_special`: start of the special space.
        special: u16,
    },
    /// A line pointer whose tuple lies outside the tuple space.
    #[error("line pointer {offnum} (lp_off {off}, lp_len {len}) is invalid: {reason}")]
    LinePointer {
        /// 1-based offset number, as in a ctid.
        offnum: u16,
        /// `lp_off`.
        off: u16,
        /// `lp_len`.
        len: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// An offset number past the line pointer array.
    #[error("line pointer {0} does not exist")]
    NoSuchLinePointer(usize),
}

/// Checks that `block_size` is one PostgreSQL can be built with.
pub fn check_block_size(block_size: usize) -> Result<(), PageError> {
    if block_size.is_power_of_two() && (1024..=32768).contains(&block_size) {
        Ok(())
    } else {
        Err(PageError::BadBlockSize(block_size))
    }
}

#[inline]
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `PageHeaderData`, the first 24 bytes of every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageHeader {
    /// LSN of the last WAL record that changed the page, as one 64-bit
    /// number (`xlogid << 32 | xrecoff`).
    pub lsn: u64,
    /// The data checksum (meaningful only with data checksums enabled).
    pub checksum: u16,
    /// `PD_*` flag bits.
    pub flags: u16,
    /// Offset of the start of free space (end of the line pointer array).
    pub lower: u16,
    /// Offset of the end of free space (start of tuple data).
    pub upper: u16,
    /// Offset of the special space (the block size on heap pages).
    pub special: u16,
    /// Page size (high byte) and layout version (low byte).
    pub pagesize_version: u16,
    /// Oldest unpruned XMAX on the page, or 0.
    pub prune_xid: u32,
}

impl PageHeader {
    /// Reads the header from the first 24 bytes of `page`; `None` if the
    /// slice is shorter.
    pub fn read(page: &[u8]) -> Option<PageHeader> {
        if page.len() < PAGE_HEADER_SIZE {
            return None;
        }
        let xlogid = le_u32(page, 0);
        let xrecoff = le_u32(page, 4);
        Some(PageHeader {
            lsn: (u64::from(xlogid) << 32) | u64::from(xrecoff),
            checksum: le_u16(page, 8),
            flags: le_u16(page, 10),
            lower: le_u16(page, 12),
            upper: le_u16(page, 14),
            special: le_u16(page, 16),
            pagesize_version: le_u16(page, 18),
            prune_xid: le_u32(page, 20),
        })
    }

    /// Checks what the header of a page that is not new says of the page
    /// (size, layout version, flags, and the bounds of the line pointers,
    /// free space and special space) for `block_size`-byte blocks; returns
    /// the number of line pointers. [`Page::parse`] checks this and that
    /// the page has the block's size; readers that hold only the header
    /// (the page is in GPU memory) check this alone.
    pub fn check(&self, block_size: usize) -> Result<usize, PageError> {
        if self.page_size() != block_size {
            return Err(PageError::PageSize {
                expected: block_size,
                found: self.page_size(),
            });
        }
        if self.layout_version() != PAGE_LAYOUT_VERSION {
            return Err(PageError::LayoutVersion(self.layout_version()));
        }
        if self.flags & !PD_VALID_FLAG_BITS != 0 {
            return Err(PageError::Flags(self.flags));
        }
        let (lower, upper, special) = (
            usize::from(self.lower),
            usize::from(self.upper),
            usize::from(self.special),
        );
        if lower < PAGE_HEADER_SIZE
            || !(lower - PAGE_HEADER_SIZE).is_multiple_of(ITEM_ID_SIZE)
            || lower > upper
            || upper > special
            || special > block_size
            || special != maxalign(special)
        {
            return Err(PageError::Bounds {
                lower: self.lower,
                upper: self.upper,
                special: self.special,
            });
        }
        Ok((lower - PAGE_HEADER_SIZE) / ITEM_ID_SIZE)
    }

    /// Writes the header into the first 24 bytes of `page` (for builders);
    /// panics if `page` is shorter.
    pub fn write(&self, page: &mut [u8]) {
        page[0..4].copy_from_slice(&((self.lsn >> 32) as u32).to_le_bytes());
        page[4..8].copy_from_slice(&(self.lsn as u32).to_le_bytes());
        page[8..10].copy_from_slice(&self.checksum.to_le_bytes());
        page[10..12].copy_from_slice(&self.flags.to_le_bytes());
        page[12..14].copy_from_slice(&self.lower.to_le_bytes());
        page[14..16].copy_from_slice(&self.upper.to_le_bytes());
        page[16..18].copy_from_slice(&self.special.to_le_bytes());
        page[18..20].copy_from_slice(&self.pagesize_version.to_le_bytes());
        page[20..24].copy_from_slice(&self.prune_xid.to_le_bytes());
    }

    /// The page size recorded in the header (`PageGetPageSize`).
    pub fn page_size(&self) -> usize {
        usize::from(self.pagesize_version & 0xff00)
    }

    /// The layout version recorded in the header.
    pub fn layout_version(&self) -> u8 {
        (self.pagesize_version & 0x00ff) as u8
    }

    /// `PD_ALL_VISIBLE`.
    pub fn all_visible(&self) -> bool {
        self.flags & PD_ALL_VISIBLE != 0
    }

    /// Whether the page was never initialized (`PageIsNew`: `pd_upper == 0`).
    pub fn is_new(&self) -> bool {
        self.upper == 0
    }
}

/// `lp_flags`: the state of a line pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LpFlags {
    /// `LP_UNUSED`: free; `lp_len` is 0.
    Unused,
    /// `LP_NORMAL`: points at a tuple (`lp_len` > 0).
    Normal,
    /// `LP_REDIRECT`: HOT redirect to the line pointer `lp_off`, no storage.
    Redirect,
    /// `LP_DEAD`: dead, may or may not have storage.
    Dead,
}

impl LpFlags {
    /// The two-bit code.
    pub fn code(self) -> u32 {
        match self {
            LpFlags::Unused => 0,
            LpFlags::Normal => 1,
            LpFlags::Redirect => 2,
            LpFlags::Dead => 3,
        }
    }
}

/// `ItemIdData`: one line pointer, a 32-bit word of bit fields
/// `lp_off:15, lp_flags:2, lp_len:15` (lowest bits first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ItemId {
    /// Offset of the tuple from the start of the page (the target offset
    /// number for a redirect).
    pub off: u16,
    /// Unused, normal, redirect or dead.
    pub flags: LpFlags,
    /// Length of the tuple in bytes.
    pub len: u16,
}

impl ItemId {
    /// Decodes the raw 32-bit word.
    pub fn from_raw(raw: u32) -> ItemId {
        ItemId {
            off: (raw & 0x7fff) as u16,
            flags: match (raw >> 15) & 0x3 {
                0 => LpFlags::Unused,
                1 => LpFlags::Normal,
                2 => LpFlags::Redirect,
                _ => LpFlags::Dead,
            },
            len: (raw >> 17) as u16,
        }
    }

    /// Encodes the raw 32-bit word (`off` and `len` are cut to 15 bits).
    pub fn to_raw(self) -> u32 {
        u32::from(self.off & 0x7fff)
            | (self.flags.code() << 15)
            | (u32::from(self.len & 0x7fff) << 17)
    }

    /// Whether the line pointer points at storage (`ItemIdHasStorage`).
    pub fn has_storage(self) -> bool {
        self.len != 0
    }
}

/// A validated page: the header is sane for `block_size` (the checks of
/// PostgreSQL's `PageIsVerifiedExtended`, less the checksum, plus the page
/// size and layout version), or the page is new (all zeros).
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    bytes: &'a [u8],
    header: PageHeader,
    nitems: usize,
}

impl<'a> Page<'a> {
    /// Validates `bytes` as one page of a relation with `block_size`-byte
    /// blocks. An all-zero page (as relation extension leaves it) is a
    /// valid, empty, new page.
    pub fn parse(bytes: &'a [u8], block_size: usize) -> Result<Page<'a>, PageError> {
        check_block_size(block_size)?;
        if bytes.len() != block_size {
            return Err(PageError::WrongSize {
                expected: block_size,
                found: bytes.len(),
            });
        }
        let header = PageHeader::read(bytes).ok_or(PageError::WrongSize {
            expected: block_size,
            found: bytes.len(),
        })?;
        if header.is_new() {
            if bytes.iter().any(|&b| b != 0) {
                return Err(PageError::NewPageNotZero);
            }
            return Ok(Page {
                bytes,
                header,
                nitems: 0,
            });
        }
        let nitems = header.check(block_size)?;
        Ok(Page {
            bytes,
            header,
            nitems,
        })
    }

    /// The page's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The header (all zeros for a new page).
    pub fn header(&self) -> &PageHeader {
        &self.header
    }

    /// Whether this is a new, all-zero page (no tuples).
    pub fn is_new(&self) -> bool {
        self.header.is_new()
    }

    /// Number of line pointers (`PageGetMaxOffsetNumber`).
    pub fn item_count(&self) -> usize {
        self.nitems
    }

    /// Line pointer `index` (0-based; its offset number is `index + 1`).
    pub fn item_id(&self, index: usize) -> Option<ItemId> {
        if index >= self.nitems {
            return None;
        }
        Some(ItemId::from_raw(le_u32(
            self.bytes,
            PAGE_HEADER_SIZE + index * ITEM_ID_SIZE,
        )))
    }

    /// All line pointers in offset-number order.
    pub fn item_ids(&self) -> impl Iterator<Item = ItemId> + '_ {
        (0..self.nitems).filter_map(move |i| self.item_id(i))
    }

    /// The bytes of the tuple line pointer `index` (0-based) points at.
    ///
    /// The line pointer must be `LP_NORMAL`, and its storage must lie in the
    /// tuple area (`pd_upper..pd_special`), start MAXALIGNed (tuple data
    /// alignment is computed relative to it) and be at least as long as a
    /// heap tuple header.
    pub fn tuple(&self, index: usize) -> Result<&'a [u8], PageError> {
        let id = self
            .item_id(index)
            .ok_or(PageError::NoSuchLinePointer(index + 1))?;
        let bad = |reason| PageError::LinePointer {
            offnum: (index + 1) as u16,
            off: id.off,
            len: id.len,
            reason,
        };
        if id.flags != LpFlags::Normal {
            return Err(bad("not LP_NORMAL"));
        }
        let (off, len) = (usize::from(id.off), usize::from(id.len));
        if len < crate::heap::tuple::HEAP_TUPLE_HEADER_SIZE {
            return Err(bad("shorter than a heap tuple header"));
        }
        if off < usize::from(self.header.upper) {
            return Err(bad("points below pd_upper"));
        }
        if off + len > usize::from(self.header.special) {
            return Err(bad("extends past pd_special"));
        }
        if off % MAXIMUM_ALIGNOF != 0 {
            return Err(bad("tuple is not MAXALIGNed"));
        }
        Ok(&self.bytes[off..off + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_page(block_size: usize) -> Vec<u8> {
        let mut p = vec![0u8; block_size];
        PageHeader {
            lsn: 0x0000_0001_2345_6789,
            checksum: 0,
            flags: PD_ALL_VISIBLE,
            lower: PAGE_HEADER_SIZE as u16,
            upper: block_size as u16,
            special: block_size as u16,
            pagesize_version: block_size as u16 | u16::from(PAGE_LAYOUT_VERSION),
            prune_xid: 7,
        }
        .write(&mut p);
        p
    }

    #[test]
    fn header_round_trip() {
        let p = empty_page(8192);
        let page = Page::parse(&p, 8192).unwrap();
        let h = page.header();
        assert_eq!(h.lsn, 0x0000_0001_2345_6789);
        assert!(h.all_visible());
        assert_eq!(h.page_size(), 8192);
        assert_eq!(h.layout_version(), 4);
        assert_eq!(h.prune_xid, 7);
        assert_eq!(page.item_count(), 0);
        assert!(!page.is_new());
    }

    #[test]
    fn new_page_is_empty_and_must_be_zero() {
        let mut p = vec![0u8; 8192];
        let page = Page::parse(&p, 8192).unwrap();
        assert!(page.is_new());
        assert_eq!(page.item_count(), 0);
        p[4000] = 1;
        assert_eq!(
            Page::parse(&p, 8192).unwrap_err(),
            PageError::NewPageNotZero
        );
    }

    #[test]
    fn header_checks() {
        assert!(matches!(
            Page::parse(&empty_page(8192), 4096),
            Err(PageError::WrongSize { .. })
        ));
        assert!(Page::parse(&empty_page(4096), 4096).is_ok());
        assert!(Page::parse(&empty_page(32768), 32768).is_ok());
        assert_eq!(
            Page::parse(&[0; 1000], 1000).unwrap_err(),
            PageError::BadBlockSize(1000)
        );
        let mut p = empty_page(8192);
        p[18] = 3;
        assert_eq!(
            Page::parse(&p, 8192).unwrap_err(),
            PageError::LayoutVersion(3)
        );
        let mut p = empty_page(8192);
        p[10] = 0x08;
        assert_eq!(Page::parse(&p, 8192).unwrap_err(), PageError::Flags(8));
        let mut p = empty_page(8192);
        p[12..14].copy_from_slice(&26u16.to_le_bytes());
        assert!(matches!(
            Page::parse(&p, 8192),
            Err(PageError::Bounds { .. })
        ));
        let mut p = empty_page(8192);
        p[14..16].copy_from_slice(&20u16.to_le_bytes());
        assert!(matches!(
            Page::parse(&p, 8192),
            Err(PageError::Bounds { .. })
        ));
        let mut p = empty_page(8192);
        p[16..18].copy_from_slice(&8100u16.to_le_bytes());
        p[14..16].copy_from_slice(&8000u16.to_le_bytes());
        assert!(matches!(
            Page::parse(&p, 8192),
            Err(PageError::Bounds { .. })
        ));
        let mut p = empty_page(8192);
        p[19] = 0x10;
        assert!(matches!(
            Page::parse(&p, 8192),
            Err(PageError::PageSize { .. })
        ));
    }

    #[test]
    fn line_pointer_bits() {
        for (off, flags, len) in [
            (0u16, LpFlags::Unused, 0u16),
            (8152, LpFlags::Normal, 40),
            (3, LpFlags::Redirect, 0),
            (0x7fff, LpFlags::Dead, 0x7fff),
        ] {
            let id = ItemId { off, flags, len };
            assert_eq!(ItemId::from_raw(id.to_raw()), id);
        }
        // lp_off in the low 15 bits, then 2 flag bits, then lp_len.
        assert_eq!(
            ItemId::from_raw(8152 | (1 << 15) | (40 << 17)),
            ItemId {
                off: 8152,
                flags: LpFlags::Normal,
                len: 40
            }
        );
    }

    #[test]
    fn tuple_bounds() {
        let mut p = empty_page(8192);
        // lower: one line pointer; upper: 8192 - 32.
        p[12..14].copy_from_slice(&28u16.to_le_bytes());
        p[14..16].copy_from_slice(&8160u16.to_le_bytes());
        let set =
            |p: &mut Vec<u8>, id: ItemId| p[24..28].copy_from_slice(&id.to_raw().to_le_bytes());
        set(
            &mut p,
            ItemId {
                off: 8160,
                flags: LpFlags::Normal,
                len: 32,
            },
        );
        assert_eq!(Page::parse(&p, 8192).unwrap().tuple(0).unwrap().len(), 32);
        for (off, len) in [(8160u16, 33u16), (8152, 24), (8164, 24), (8160, 10)] {
            set(
                &mut p,
                ItemId {
                    off,
                    flags: LpFlags::Normal,
                    len,
                },
            );
            assert!(
                matches!(
                    Page::parse(&p, 8192).unwrap().tuple(0),
                    Err(PageError::LinePointer { .. })
                ),
                "{off} {len}"
            );
        }
        set(
            &mut p,
            ItemId {
                off: 8160,
                flags: LpFlags::Dead,
                len: 32,
            },
        );
        assert!(Page::parse(&p, 8192).unwrap().tuple(0).is_err());
        assert_eq!(
            Page::parse(&p, 8192).unwrap().tuple(1),
            Err(PageError::NoSuchLinePointer(2))
        );
    }
}

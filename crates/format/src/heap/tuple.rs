//! Heap tuples (`access/htup_details.h`) and deforming them into attribute
//! values the way `heap_deform_tuple` (`access/common/heaptuple.c`) does.
//!
//! A tuple is a 23-byte header, an optional null bitmap (one bit per
//! attribute of the tuple, set = not null), padding to `t_hoff` (MAXALIGNed)
//! and the data: the non-null attributes in attnum order, each aligned to
//! its `attalign` except that a varlena that is not at an aligned offset and
//! whose first byte is not zero is a 1-byte-header (or TOAST pointer) datum,
//! stored unaligned (PostgreSQL pads with zero bytes, and no 1-byte header
//! is zero: `att_align_pointer`).

use thiserror::Error;

use super::page::{le_u16, le_u32, maxalign};
use super::varlena::{self, VarlenaError};

/// `SizeofHeapTupleHeader`.
pub const HEAP_TUPLE_HEADER_SIZE: usize = 23;
/// Most attributes a tuple can have (`MaxTupleAttributeNumber`).
pub const MAX_TUPLE_ATTRIBUTES: usize = 1664;

/// `t_infomask2`: the number of attributes.
pub const HEAP_NATTS_MASK: u16 = 0x07ff;
/// `t_infomask2`: tuple was updated and key columns modified, or deleted.
pub const HEAP_KEYS_UPDATED: u16 = 0x2000;
/// `t_infomask2`: tuple was HOT-updated.
pub const HEAP_HOT_UPDATED: u16 = 0x4000;
/// `t_infomask2`: this is a heap-only tuple.
pub const HEAP_ONLY_TUPLE: u16 = 0x8000;

/// `t_infomask`: has null attribute(s), so a null bitmap.
pub const HEAP_HASNULL: u16 = 0x0001;
/// `t_infomask`: has variable-width attribute(s).
pub const HEAP_HASVARWIDTH: u16 = 0x0002;
/// `t_infomask`: has external (TOAST pointer) attribute(s).
pub const HEAP_HASEXTERNAL: u16 = 0x0004;
/// `t_infomask`: has an OID field (before PostgreSQL 12).
pub const HEAP_HASOID_OLD: u16 = 0x0008;
/// `t_infomask`: xmax is a key-share locker.
pub const HEAP_XMAX_KEYSHR_LOCK: u16 = 0x0010;
/// `t_infomask`: `t_cid` is a combo CID.
pub const HEAP_COMBOCID: u16 = 0x0020;
/// `t_infomask`: xmax is an exclusive locker.
pub const HEAP_XMAX_EXCL_LOCK: u16 = 0x0040;
/// `t_infomask`: xmax, if valid, only locked the tuple.
pub const HEAP_XMAX_LOCK_ONLY: u16 = 0x0080;
/// `t_infomask`: xmin is known committed.
pub const HEAP_XMIN_COMMITTED: u16 = 0x0100;
/// `t_infomask`: xmin is known invalid (aborted).
pub const HEAP_XMIN_INVALID: u16 = 0x0200;
/// Both xmin bits: xmin frozen.
pub const HEAP_XMIN_FROZEN: u16 = HEAP_XMIN_COMMITTED | HEAP_XMIN_INVALID;
/// `t_infomask`: xmax is known committed.
pub const HEAP_XMAX_COMMITTED: u16 = 0x0400;
/// `t_infomask`: xmax is known invalid (aborted), or there is none.
pub const HEAP_XMAX_INVALID: u16 = 0x0800;
/// `t_infomask`: xmax is a MultiXactId.
pub const HEAP_XMAX_IS_MULTI: u16 = 0x1000;
/// `t_infomask`: this is the UPDATEd version of a row.
pub const HEAP_UPDATED: u16 = 0x2000;
/// `t_infomask`: moved away by a pre-9.0 VACUUM FULL.
pub const HEAP_MOVED_OFF: u16 = 0x4000;
/// `t_infomask`: moved here by a pre-9.0 VACUUM FULL.
pub const HEAP_MOVED_IN: u16 = 0x8000;

/// What is wrong with a tuple.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TupleError {
    /// Fewer bytes than the fixed tuple header.
    #[error("tuple of {0} bytes is shorter than a heap tuple header")]
    TooShort(usize),
    /// `t_hoff` below the header, past the tuple or not MAXALIGNed.
    #[error("tuple header offset t_hoff {hoff} is invalid for a tuple of {len} bytes")]
    BadHoff {
        /// `t_hoff`.
        hoff: u8,
        /// The tuple's bytes.
        len: usize,
    },
    /// The null bitmap does not end before the data.
    #[error("tuple's null bitmap for {natts} attributes does not fit before t_hoff {hoff}")]
    BitmapTooLong {
        /// Attributes the tuple says it has.
        natts: usize,
        /// `t_hoff`.
        hoff: u8,
    },
    /// An attribute runs past the end of the tuple.
    #[error("attribute {attnum} at data offset {offset} needs {needed} bytes, {available} left")]
    Truncated {
        /// The attribute number (1-based).
        attnum: usize,
        /// Where it starts, from `t_hoff`.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left in the tuple.
        available: usize,
    },
    /// A varlena attribute's header is invalid.
    #[error("attribute {attnum} at data offset {offset}: {source}")]
    Varlena {
        /// The attribute number (1-based).
        attnum: usize,
        /// Where it starts, from `t_hoff`.
        offset: usize,
        /// What is wrong with it.
        source: VarlenaError,
    },
    /// A cstring attribute (`attlen` -2) without its NUL.
    #[error("attribute {attnum} at data offset {offset}: cstring has no terminating NUL")]
    UnterminatedCString {
        /// The attribute number (1-based).
        attnum: usize,
        /// Where it starts, from `t_hoff`.
        offset: usize,
    },
    /// An `attlen` that is neither positive, -1 nor -2.
    #[error("attribute {attnum} has invalid attlen {attlen}")]
    BadAttlen {
        /// The attribute number (1-based).
        attnum: usize,
        /// Its `attlen`.
        attlen: i16,
    },
}

/// `attalign` / `typalign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Align {
    /// `c`: 1 byte.
    Char,
    /// `s`: 2 bytes.
    Short,
    /// `i`: 4 bytes.
    Int,
    /// `d`: 8 bytes.
    Double,
}

impl Align {
    /// From the catalog's letter (`c`, `s`, `i`, `d`).
    pub fn from_code(c: u8) -> Option<Align> {
        Some(match c {
            b'c' => Align::Char,
            b's' => Align::Short,
            b'i' => Align::Int,
            b'd' => Align::Double,
            _ => return None,
        })
    }

    /// The catalog's letter.
    pub fn code(self) -> char {
        match self {
            Align::Char => 'c',
            Align::Short => 's',
            Align::Int => 'i',
            Align::Double => 'd',
        }
    }

    /// Alignment in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Align::Char => 1,
            Align::Short => 2,
            Align::Int => 4,
            Align::Double => 8,
        }
    }

    /// `att_align_nominal`: `off` rounded up to this alignment.
    #[inline(always)]
    pub fn align(self, off: usize) -> usize {
        let a = self.bytes() - 1;
        (off + a) & !a
    }
}

/// How an attribute is stored: what deforming needs to step over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrStorage {
    /// `attlen`: > 0 fixed size, -1 varlena, -2 NUL-terminated cstring.
    pub attlen: i16,
    /// `attalign`: where the value starts.
    pub align: Align,
}

/// `HeapTupleHeaderData` (without the null bitmap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TupleHeader {
    /// `t_xmin`: the inserting transaction.
    pub xmin: u32,
    /// `t_xmax`: the deleting or locking transaction, or 0.
    pub xmax: u32,
    /// `t_cid` or `t_xvac` (`t_field3`).
    pub cid: u32,
    /// `t_ctid`: block number.
    pub ctid_block: u32,
    /// `t_ctid`: offset number.
    pub ctid_offset: u16,
    /// `t_infomask2`: the attribute count and HOT flags.
    pub infomask2: u16,
    /// `t_infomask`: the `HEAP_*` flags above.
    pub infomask: u16,
    /// `t_hoff`: offset of the data from the start of the tuple.
    pub hoff: u8,
}

impl TupleHeader {
    /// Reads the 23-byte header.
    pub fn read(b: &[u8]) -> Result<TupleHeader, TupleError> {
        if b.len() < HEAP_TUPLE_HEADER_SIZE {
            return Err(TupleError::TooShort(b.len()));
        }
        Ok(TupleHeader {
            xmin: le_u32(b, 0),
            xmax: le_u32(b, 4),
            cid: le_u32(b, 8),
            ctid_block: (u32::from(le_u16(b, 12)) << 16) | u32::from(le_u16(b, 14)),
            ctid_offset: le_u16(b, 16),
            infomask2: le_u16(b, 18),
            infomask: le_u16(b, 20),
            hoff: b[22],
        })
    }

    /// Writes the 23-byte header (for builders); panics if `b` is shorter.
    pub fn write(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.xmin.to_le_bytes());
        b[4..8].copy_from_slice(&self.xmax.to_le_bytes());
        b[8..12].copy_from_slice(&self.cid.to_le_bytes());
        b[12..14].copy_from_slice(&((self.ctid_block >> 16) as u16).to_le_bytes());
        b[14..16].copy_from_slice(&(self.ctid_block as u16).to_le_bytes());
        b[16..18].copy_from_slice(&self.ctid_offset.to_le_bytes());
        b[18..20].copy_from_slice(&self.infomask2.to_le_bytes());
        b[20..22].copy_from_slice(&self.infomask.to_le_bytes());
        b[22] = self.hoff;
    }

    /// Number of attributes stored in the tuple (`HeapTupleHeaderGetNatts`).
    pub fn natts(&self) -> usize {
        usize::from(self.infomask2 & HEAP_NATTS_MASK)
    }

    /// `HEAP_HASNULL`: the tuple has a null bitmap.
    pub fn has_nulls(&self) -> bool {
        self.infomask & HEAP_HASNULL != 0
    }
}

/// `BITMAPLEN`: bytes of null bitmap for `natts` attributes.
pub fn bitmap_len(natts: usize) -> usize {
    natts.div_ceil(8)
}

/// A tuple whose header and null bitmap have been checked.
#[derive(Debug, Clone, Copy)]
pub struct HeapTuple<'a> {
    bytes: &'a [u8],
    header: TupleHeader,
}

impl<'a> HeapTuple<'a> {
    /// Checks the header of the tuple `bytes` (exactly `lp_len` bytes):
    /// `t_hoff` is MAXALIGNed, at least the header plus the null bitmap, and
    /// inside the tuple.
    pub fn parse(bytes: &'a [u8]) -> Result<HeapTuple<'a>, TupleError> {
        let header = TupleHeader::read(bytes)?;
        let hoff = usize::from(header.hoff);
        if hoff < HEAP_TUPLE_HEADER_SIZE || hoff != maxalign(hoff) || hoff > bytes.len() {
            return Err(TupleError::BadHoff {
                hoff: header.hoff,
                len: bytes.len(),
            });
        }
        if header.has_nulls() && HEAP_TUPLE_HEADER_SIZE + bitmap_len(header.natts()) > hoff {
            return Err(TupleError::BitmapTooLong {
                natts: header.natts(),
                hoff: header.hoff,
            });
        }
        Ok(HeapTuple { bytes, header })
    }

    /// The whole tuple.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The tuple's header fields.
    pub fn header(&self) -> &TupleHeader {
        &self.header
    }

    /// Number of attributes stored in the tuple.
    pub fn natts(&self) -> usize {
        self.header.natts()
    }

    /// Whether attribute `index` (0-based) is NULL per the bitmap.
    /// Attributes past the tuple's `natts` count as NULL here (their value
    /// may be a "missing" value instead, see [`deform`]).
    #[inline]
    pub fn is_null(&self, index: usize) -> bool {
        if index >= self.natts() {
            return true;
        }
        self.header.has_nulls()
            && self.bytes[HEAP_TUPLE_HEADER_SIZE + index / 8] & (1 << (index % 8)) == 0
    }

    /// The data area (from `t_hoff`).
    pub fn data(&self) -> &'a [u8] {
        &self.bytes[usize::from(self.header.hoff)..]
    }
}

/// One deformed attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Datum {
    /// NULL in the tuple.
    #[default]
    Null,
    /// Past the tuple's attribute count (the attribute was added after the
    /// tuple was written): its "missing" value, or NULL.
    Missing,
    /// The datum's bytes, as a range of the tuple (header included for a
    /// varlena, the terminating NUL included for a cstring).
    Bytes {
        /// Offset of the first byte in the tuple.
        start: u32,
        /// Offset just past the last byte.
        end: u32,
    },
}

/// Deforms `tuple` into `out`: one entry per attribute for the first
/// `out.len()` attributes of the descriptor `attrs` (which must have at
/// least that many), following `heap_deform_tuple`. Attributes the tuple
/// does not have are [`Datum::Missing`]. Dropped attributes must be in
/// `attrs` with their `attlen` and alignment, as they still take space in
/// old tuples.
///
/// Every datum is checked to lie within the tuple; the bytes of a varlena
/// are measured by its header ([`varlena::datum_size`]) but not otherwise
/// checked.
pub fn deform(
    tuple: &HeapTuple<'_>,
    attrs: &[AttrStorage],
    out: &mut [Datum],
) -> Result<(), TupleError> {
    let data = tuple.data();
    let hoff = usize::from(tuple.header.hoff);
    let wanted = out.len().min(attrs.len());
    let natts = tuple.natts().min(wanted);
    let mut off = 0usize;
    for (i, (attr, slot)) in attrs[..natts].iter().zip(out.iter_mut()).enumerate() {
        if tuple.is_null(i) {
            *slot = Datum::Null;
            continue;
        }
        let attnum = i + 1;
        let len = match attr.attlen {
            l if l > 0 => {
                off = attr.align.align(off);
                l as usize
            }
            -1 => {
                // att_align_pointer: a nonzero byte here starts a datum with
                // a 1-byte header (never padded); a zero byte is padding
                // before a 4-byte header.
                match data.get(off) {
                    Some(&b) if b != 0 => {}
                    _ => off = attr.align.align(off),
                }
                let rest = data.get(off..).unwrap_or(&[]);
                varlena::datum_size(rest).map_err(|source| TupleError::Varlena {
                    attnum,
                    offset: off,
                    source,
                })?
            }
            -2 => {
                off = attr.align.align(off);
                let rest = data.get(off..).unwrap_or(&[]);
                rest.iter()
                    .position(|&b| b == 0)
                    .ok_or(TupleError::UnterminatedCString {
                        attnum,
                        offset: off,
                    })?
                    + 1
            }
            attlen => return Err(TupleError::BadAttlen { attnum, attlen }),
        };
        let available = data.len().saturating_sub(off);
        if len > available {
            return Err(TupleError::Truncated {
                attnum,
                offset: off,
                needed: len,
                available,
            });
        }
        *slot = Datum::Bytes {
            start: (hoff + off) as u32,
            end: (hoff + off + len) as u32,
        };
        off += len;
    }
    for slot in &mut out[natts..wanted] {
        *slot = Datum::Missing;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(natts: u16, infomask: u16, bitmap: &[u8], data: &[u8]) -> Vec<u8> {
        let hoff = maxalign(HEAP_TUPLE_HEADER_SIZE + bitmap.len());
        let mut t = vec![0u8; hoff];
        TupleHeader {
            xmin: 100,
            xmax: 0,
            cid: 0,
            ctid_block: 0x0001_0002,
            ctid_offset: 3,
            infomask2: natts,
            infomask,
            hoff: hoff as u8,
        }
        .write(&mut t);
        t[HEAP_TUPLE_HEADER_SIZE..HEAP_TUPLE_HEADER_SIZE + bitmap.len()].copy_from_slice(bitmap);
        t.extend_from_slice(data);
        t
    }

    const INT4: AttrStorage = AttrStorage {
        attlen: 4,
        align: Align::Int,
    };
    const INT8: AttrStorage = AttrStorage {
        attlen: 8,
        align: Align::Double,
    };
    const TEXT: AttrStorage = AttrStorage {
        attlen: -1,
        align: Align::Int,
    };
    const BOOL: AttrStorage = AttrStorage {
        attlen: 1,
        align: Align::Char,
    };

    fn ranges(t: &[u8], attrs: &[AttrStorage], n: usize) -> Result<Vec<Datum>, TupleError> {
        let tup = HeapTuple::parse(t)?;
        let mut out = vec![Datum::Null; n];
        deform(&tup, attrs, &mut out)?;
        Ok(out)
    }

    #[test]
    fn header_fields() {
        let t = tuple(3, HEAP_HASNULL, &[0b101], &[]);
        let h = HeapTuple::parse(&t).unwrap();
        assert_eq!(h.header().ctid_block, 0x0001_0002);
        assert_eq!(h.header().ctid_offset, 3);
        assert_eq!(h.natts(), 3);
        assert!(!h.is_null(0));
        assert!(h.is_null(1));
        assert!(!h.is_null(2));
        assert!(h.is_null(3), "past natts");
        assert_eq!(h.data().len(), 0);
    }

    #[test]
    fn alignment_and_short_varlena() {
        // bool true, then int8 at offset 8, then short text "ab" at 16
        // (unaligned allowed), then int4 aligned to 20.
        let mut d = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
        d.extend_from_slice(&7i64.to_le_bytes());
        d.extend_from_slice(&[0x07, b'a', b'b']);
        d.push(0);
        d.extend_from_slice(&9i32.to_le_bytes());
        let t = tuple(4, HEAP_HASVARWIDTH, &[], &d);
        let r = ranges(&t, &[BOOL, INT8, TEXT, INT4], 4).unwrap();
        let h = 24u32;
        assert_eq!(
            r,
            vec![
                Datum::Bytes {
                    start: h,
                    end: h + 1
                },
                Datum::Bytes {
                    start: h + 8,
                    end: h + 16
                },
                Datum::Bytes {
                    start: h + 16,
                    end: h + 19
                },
                Datum::Bytes {
                    start: h + 20,
                    end: h + 24
                },
            ]
        );
        // A 4-byte varlena after a bool is padded to 4.
        let mut d = vec![1u8, 0, 0, 0];
        d.extend_from_slice(&((6u32 + 4) << 2).to_le_bytes());
        d.extend_from_slice(b"abcdef");
        let t = tuple(2, HEAP_HASVARWIDTH, &[], &d);
        let r = ranges(&t, &[BOOL, TEXT], 2).unwrap();
        assert_eq!(
            r[1],
            Datum::Bytes {
                start: h + 4,
                end: h + 14
            }
        );
    }

    #[test]
    fn nulls_and_missing() {
        let mut d = Vec::new();
        d.extend_from_slice(&5i32.to_le_bytes());
        // attribute 2 null, attribute 3 present.
        d.extend_from_slice(&6i32.to_le_bytes());
        let t = tuple(3, HEAP_HASNULL, &[0b101], &d);
        let r = ranges(&t, &[INT4, INT4, INT4, INT4, INT4], 5).unwrap();
        assert_eq!(r[1], Datum::Null);
        assert_eq!(r[2], Datum::Bytes { start: 28, end: 32 });
        assert_eq!(&r[3..], &[Datum::Missing, Datum::Missing]);
        // Deforming fewer attributes than the tuple has.
        let r = ranges(&t, &[INT4, INT4, INT4], 1).unwrap();
        assert_eq!(r, vec![Datum::Bytes { start: 24, end: 28 }]);
    }

    #[test]
    fn cstring() {
        let cs = AttrStorage {
            attlen: -2,
            align: Align::Char,
        };
        let t = tuple(2, HEAP_HASVARWIDTH, &[], b"hi\0x\0");
        let r = ranges(&t, &[cs, cs], 2).unwrap();
        assert_eq!(r[1], Datum::Bytes { start: 27, end: 29 });
        let t = tuple(1, 0, &[], b"hi");
        assert!(matches!(
            ranges(&t, &[cs], 1),
            Err(TupleError::UnterminatedCString { .. })
        ));
    }

    #[test]
    fn corrupt_tuples() {
        assert!(matches!(
            ranges(&[0; 10], &[INT4], 1),
            Err(TupleError::TooShort(10))
        ));
        let mut t = tuple(1, 0, &[], &[1, 2, 3, 4]);
        t[22] = 20;
        assert!(matches!(
            ranges(&t, &[INT4], 1),
            Err(TupleError::BadHoff { .. })
        ));
        t[22] = 32;
        assert!(matches!(
            ranges(&t, &[INT4], 1),
            Err(TupleError::BadHoff { .. })
        ));
        // 80 attributes need a 10-byte bitmap: t_hoff 24 is too small.
        let mut t = tuple(1, HEAP_HASNULL, &[1], &[1, 2, 3, 4]);
        t[18] = 80;
        assert!(matches!(
            ranges(&t, &[INT4], 1),
            Err(TupleError::BitmapTooLong { .. })
        ));
        // Data too short for the fixed attribute.
        let t = tuple(1, 0, &[], &[1, 2, 3]);
        assert!(matches!(
            ranges(&t, &[INT4], 1),
            Err(TupleError::Truncated { .. })
        ));
        // A varlena longer than the tuple.
        let t = tuple(1, 0, &[], &[0x41, 1, 2]);
        assert!(matches!(
            ranges(&t, &[TEXT], 1),
            Err(TupleError::Varlena { .. })
        ));
        let bad = AttrStorage {
            attlen: 0,
            align: Align::Char,
        };
        let t = tuple(1, 0, &[], &[0]);
        assert!(matches!(
            ranges(&t, &[bad], 1),
            Err(TupleError::BadAttlen { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), natts in 0usize..12) {
            let attrs = [INT4, TEXT, BOOL, INT8, TEXT, AttrStorage { attlen: -2, align: Align::Char }, INT4, TEXT, INT8, BOOL, TEXT, INT4];
            if let Ok(t) = HeapTuple::parse(&bytes) {
                let mut out = vec![Datum::Null; natts];
                if deform(&t, &attrs, &mut out).is_ok() {
                    for d in out {
                        if let Datum::Bytes { start, end } = d {
                            proptest::prop_assert!(start <= end && end as usize <= bytes.len());
                        }
                    }
                }
            }
        }
    }
}

//! Variable-length values as stored in heap tuples (`varatt.h`, formerly
//! part of `postgres.h`), little-endian layout.
//!
//! The first byte says which form a datum has:
//!
//! | first byte          | form                                              |
//! | ------------------- | ------------------------------------------------- |
//! | `xxxxxx00`          | 4-byte header, uncompressed; size = word >> 2     |
//! | `xxxxxx10`          | 4-byte header, compressed inline; then `va_tcinfo`|
//! | `00000001`          | 1-byte header `0x01` + vartag: a TOAST pointer    |
//! | `xxxxxxx1` (≠ 0x01) | 1-byte header ("short"); size = byte >> 1         |
//!
//! Sizes include the header. A compressed datum's `va_tcinfo` holds the raw
//! (decompressed) size in its low 30 bits and the compression method in the
//! top 2 (0 = pglz, 1 = lz4). The decompressed bytes are the payload of the
//! original value (what followed its 4-byte header).

use thiserror::Error;

use super::lz4::{self, Lz4Error};
use super::pglz::{self, PglzError};

/// `VARHDRSZ`.
pub const VARHDRSZ: usize = 4;
/// `VARHDRSZ_SHORT`.
pub const VARHDRSZ_SHORT: usize = 1;
/// `VARHDRSZ_EXTERNAL`: the `0x01` byte and the vartag.
pub const VARHDRSZ_EXTERNAL: usize = 2;
/// `VARHDRSZ_COMPRESSED`: the header and `va_tcinfo`.
pub const VARHDRSZ_COMPRESSED: usize = 8;
/// `VARATT_SHORT_MAX`: the largest datum a 1-byte header can describe.
pub const VARATT_SHORT_MAX: usize = 0x7f;
/// Largest size a 4-byte header can describe.
pub const VARLENA_MAX: usize = 0x3fff_ffff;

/// vartag of an in-memory indirect pointer (never on disk).
pub const VARTAG_INDIRECT: u8 = 1;
/// vartag of an expanded object, read-only (never on disk).
pub const VARTAG_EXPANDED_RO: u8 = 2;
/// vartag of an expanded object, read-write (never on disk).
pub const VARTAG_EXPANDED_RW: u8 = 3;
/// vartag of an on-disk TOAST pointer.
pub const VARTAG_ONDISK: u8 = 18;
/// `sizeof(varatt_external)`.
pub const TOAST_POINTER_SIZE: usize = 16;

/// How a compressed value is compressed (`ToastCompressionId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompressionMethod {
    /// PostgreSQL's own LZ compressor, the default.
    Pglz,
    /// LZ4 (`default_toast_compression = lz4`), which PostgreSQL 14+ can use.
    Lz4,
}

impl CompressionMethod {
    fn from_bits(bits: u32) -> Result<CompressionMethod, VarlenaError> {
        match bits {
            0 => Ok(CompressionMethod::Pglz),
            1 => Ok(CompressionMethod::Lz4),
            b => Err(VarlenaError::CompressionMethod(b as u8)),
        }
    }
}

/// What is wrong with a varlena datum.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VarlenaError {
    /// The datum's header or payload runs past the end of the tuple.
    #[error("varlena needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the header says the datum has (or the header itself).
        needed: usize,
        /// Bytes left in the tuple.
        available: usize,
    },
    /// A size smaller than the header that holds it.
    #[error("varlena header gives size {size}, less than its own header")]
    SizeTooSmall {
        /// The size in the header.
        size: usize,
    },
    /// A TOAST pointer whose tag is not `VARTAG_ONDISK` (the others exist
    /// only in memory).
    #[error("TOAST pointer has vartag {0}, which cannot be on disk")]
    VarTag(u8),
    /// A compression method id other than pglz (0) and lz4 (1).
    #[error("compressed value has invalid compression method id {0}")]
    CompressionMethod(u8),
    /// The size in the header differs from the datum's bytes.
    #[error("varlena header gives size {header}, the datum has {actual} bytes")]
    LengthMismatch {
        /// The size in the header.
        header: usize,
        /// The datum's bytes.
        actual: usize,
    },
}

/// An on-disk TOAST pointer (`varatt_external`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToastPointer {
    /// Original data size, including the 4-byte header.
    pub rawsize: i32,
    /// External stored size (low 30 bits) and compression method (top 2).
    pub extinfo: u32,
    /// OID of the value in the TOAST table.
    pub value_id: u32,
    /// OID of the TOAST table.
    pub toast_relid: u32,
}

impl ToastPointer {
    /// Bytes stored in the TOAST table (`VARATT_EXTERNAL_GET_EXTSIZE`).
    pub fn extsize(&self) -> u32 {
        self.extinfo & VARLENA_MAX as u32
    }

    /// Whether the stored value is compressed, and how
    /// (`VARATT_EXTERNAL_IS_COMPRESSED`).
    pub fn compression(&self) -> Option<Result<CompressionMethod, VarlenaError>> {
        let raw = i64::from(self.rawsize) - VARHDRSZ as i64;
        (i64::from(self.extsize()) < raw).then(|| CompressionMethod::from_bits(self.extinfo >> 30))
    }
}

/// A compressed value that does not decompress to its raw size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecompressError {
    /// A corrupt pglz stream.
    #[error(transparent)]
    Pglz(#[from] PglzError),
    /// A corrupt LZ4 block.
    #[error(transparent)]
    Lz4(#[from] Lz4Error),
}

/// Decompresses `data`, compressed with `method`, to exactly `rawsize`
/// bytes appended to `out` (`out` keeps its length on error).
pub fn decompress_append(
    method: CompressionMethod,
    data: &[u8],
    rawsize: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecompressError> {
    match method {
        CompressionMethod::Pglz => pglz::decompress_append(data, rawsize, out)?,
        CompressionMethod::Lz4 => lz4::decompress_append(data, rawsize, out)?,
    }
    Ok(())
}

/// A classified varlena datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Varlena<'a> {
    /// 1-byte header; the payload.
    Short(&'a [u8]),
    /// 4-byte header, not compressed; the payload.
    Plain(&'a [u8]),
    /// 4-byte header, compressed inline.
    Compressed {
        /// The compressor used.
        method: CompressionMethod,
        /// Size of the decompressed payload.
        rawsize: usize,
        /// The compressed bytes (after `va_tcinfo`).
        data: &'a [u8],
    },
    /// A TOAST pointer: the value lives in the TOAST table.
    External(ToastPointer),
}

/// `VARSIZE_ANY` of the datum starting at `b[0]`: its total size in bytes,
/// header included, checked to lie within `b` and to be at least its
/// header. TOAST pointers with a vartag other than `VARTAG_ONDISK` are
/// errors (the others exist only in memory).
#[inline]
pub fn datum_size(b: &[u8]) -> Result<usize, VarlenaError> {
    let first = *b.first().ok_or(VarlenaError::Truncated {
        needed: 1,
        available: 0,
    })?;
    let size = if first == 0x01 {
        let tag = *b.get(1).ok_or(VarlenaError::Truncated {
            needed: 2,
            available: b.len(),
        })?;
        if tag != VARTAG_ONDISK {
            return Err(VarlenaError::VarTag(tag));
        }
        VARHDRSZ_EXTERNAL + TOAST_POINTER_SIZE
    } else if first & 0x01 == 0x01 {
        usize::from(first >> 1)
    } else {
        let h = b.get(..4).ok_or(VarlenaError::Truncated {
            needed: 4,
            available: b.len(),
        })?;
        let size = ((u32::from_le_bytes([h[0], h[1], h[2], h[3]]) >> 2) & 0x3fff_ffff) as usize;
        let min = if first & 0x03 == 0x02 {
            VARHDRSZ_COMPRESSED
        } else {
            VARHDRSZ
        };
        if size < min {
            return Err(VarlenaError::SizeTooSmall { size });
        }
        size
    };
    if size > b.len() {
        return Err(VarlenaError::Truncated {
            needed: size,
            available: b.len(),
        });
    }
    Ok(size)
}

/// Classifies the datum `b`, which must be exactly one datum (as
/// [`datum_size`] measured it).
pub fn parse(b: &[u8]) -> Result<Varlena<'_>, VarlenaError> {
    let size = datum_size(b)?;
    if size != b.len() {
        return Err(VarlenaError::LengthMismatch {
            header: size,
            actual: b.len(),
        });
    }
    let first = b[0];
    Ok(if first == 0x01 {
        let p = &b[VARHDRSZ_EXTERNAL..];
        let w = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        Varlena::External(ToastPointer {
            rawsize: w(0) as i32,
            extinfo: w(4),
            value_id: w(8),
            toast_relid: w(12),
        })
    } else if first & 0x01 == 0x01 {
        Varlena::Short(&b[VARHDRSZ_SHORT..])
    } else if first & 0x03 == 0x02 {
        let tcinfo = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        Varlena::Compressed {
            method: CompressionMethod::from_bits(tcinfo >> 30)?,
            rawsize: (tcinfo & VARLENA_MAX as u32) as usize,
            data: &b[VARHDRSZ_COMPRESSED..],
        }
    } else {
        Varlena::Plain(&b[VARHDRSZ..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four_byte(payload: &[u8], compressed: bool) -> Vec<u8> {
        let size = (payload.len() + 4) as u32;
        let mut v = ((size << 2) | if compressed { 2 } else { 0 })
            .to_le_bytes()
            .to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn forms() {
        // Short: "abc" with a 1-byte header 4 << 1 | 1.
        let s = [0x09, b'a', b'b', b'c'];
        assert_eq!(datum_size(&s).unwrap(), 4);
        assert_eq!(parse(&s).unwrap(), Varlena::Short(b"abc"));
        // Empty short value.
        assert_eq!(parse(&[0x03]).unwrap(), Varlena::Short(b""));
        // 4-byte plain.
        let p = four_byte(b"hello", false);
        assert_eq!(parse(&p).unwrap(), Varlena::Plain(b"hello"));
        // Compressed: tcinfo = rawsize 1000 | pglz.
        let mut c = 1000u32.to_le_bytes().to_vec();
        c.extend_from_slice(&[1, 2, 3]);
        let c = four_byte(&c, true);
        assert_eq!(
            parse(&c).unwrap(),
            Varlena::Compressed {
                method: CompressionMethod::Pglz,
                rawsize: 1000,
                data: &[1, 2, 3]
            }
        );
        let mut lz = (1000u32 | 1 << 30).to_le_bytes().to_vec();
        lz.push(0);
        assert!(matches!(
            parse(&four_byte(&lz, true)).unwrap(),
            Varlena::Compressed {
                method: CompressionMethod::Lz4,
                ..
            }
        ));
        let mut bad = (1000u32 | 2 << 30).to_le_bytes().to_vec();
        bad.push(0);
        assert_eq!(
            parse(&four_byte(&bad, true)),
            Err(VarlenaError::CompressionMethod(2))
        );
        // TOAST pointer.
        let mut e = vec![0x01, VARTAG_ONDISK];
        for w in [20004i32 as u32, 9000 | 1 << 30, 16400, 16390] {
            e.extend_from_slice(&w.to_le_bytes());
        }
        let Varlena::External(t) = parse(&e).unwrap() else {
            panic!("not external")
        };
        assert_eq!(
            (t.rawsize, t.extsize(), t.value_id, t.toast_relid),
            (20004, 9000, 16400, 16390)
        );
        assert_eq!(t.compression(), Some(Ok(CompressionMethod::Lz4)));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            datum_size(&[]),
            Err(VarlenaError::Truncated { .. })
        ));
        assert!(matches!(
            datum_size(&[0x01]),
            Err(VarlenaError::Truncated { .. })
        ));
        assert_eq!(datum_size(&[0x01, 2, 0, 0]), Err(VarlenaError::VarTag(2)));
        assert!(matches!(
            datum_size(&[0x09, b'a']),
            Err(VarlenaError::Truncated { .. })
        ));
        assert!(matches!(
            datum_size(&[0, 0, 0]),
            Err(VarlenaError::Truncated { .. })
        ));
        assert_eq!(
            datum_size(&[0, 0, 0, 0]),
            Err(VarlenaError::SizeTooSmall { size: 0 })
        );
        assert_eq!(
            datum_size(&[(6 << 2) | 2, 0, 0, 0, 0, 0, 0, 0]),
            Err(VarlenaError::SizeTooSmall { size: 6 })
        );
        assert!(matches!(
            parse(&[0x05, 1, 2]),
            Err(VarlenaError::LengthMismatch { .. })
        ));
        // A short header of size 0 is the 0x01 external marker; size 1 is
        // the empty value, so no short header is ever too small.
        assert_eq!(datum_size(&[0x03]).unwrap(), 1);
    }
}

//! Binary COPY framing: the file header, tuples and the trailer.
//!
//! Layout (PostgreSQL docs, "Binary Format" under COPY): an 11-byte signature
//! `PGCOPY\n\xff\r\n\0`, an int32 flags field, an int32 header-extension
//! length followed by that many bytes; then tuples, each an int16 field count
//! and per field an int32 length (-1 = NULL) and the value; then the trailer,
//! an int16 -1. All integers are big-endian.

use thiserror::Error;

/// The 11-byte signature that starts every binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Bit 16 of the flags: OIDs are included in the data (never by PG 12+).
const FLAG_HAS_OIDS: u32 = 1 << 16;

/// Errors in the framing of a binary COPY stream.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// Fewer bytes than the header: 19, plus the extension area it announces.
    #[error("binary COPY header is truncated ({0} bytes)")]
    TruncatedHeader(usize),
    /// The stream does not start with `PGCOPY\n\377\r\n\0`.
    #[error("binary COPY signature is wrong (not a binary COPY stream)")]
    BadSignature,
    /// The header's OID flag is set (`WITH OIDS`, before PostgreSQL 12).
    #[error("binary COPY stream has OIDs in its rows, which is not supported")]
    HasOids,
    /// Flags in the critical half of the header that this reader does not know.
    #[error("binary COPY header has unknown critical flags {0:#x}")]
    UnknownCriticalFlags(u32),
    /// A tuple's field count differs from the number of columns.
    #[error("tuple has {found} fields, expected {expected}")]
    FieldCount {
        /// Columns of the result.
        expected: usize,
        /// The count the tuple starts with.
        found: i64,
    },
    /// A field runs past the end of its row.
    #[error("tuple is truncated: field {field} needs {needed} bytes at offset {offset}, the row has {len}")]
    Truncated {
        /// Index of the field (0-based).
        field: usize,
        /// Where in the row its length word or value starts.
        offset: usize,
        /// Bytes it needs from there.
        needed: usize,
        /// Bytes in the row.
        len: usize,
    },
    /// A field length below -1 (the NULL marker).
    #[error("field {field} has invalid length {length}")]
    BadLength {
        /// Index of the field (0-based).
        field: usize,
        /// The length word.
        length: i32,
    },
    /// Bytes left in the row after its last field.
    #[error("tuple has {0} trailing bytes after its last field")]
    TrailingBytes(usize),
    /// The caller's slice of field positions has fewer entries than columns.
    #[error("output has room for {room} fields, the tuple needs {needed}")]
    OutputTooSmall {
        /// Entries the caller gave.
        room: usize,
        /// Columns expected.
        needed: usize,
    },
}

/// Parses the binary COPY header at the start of `buf` and returns its length
/// in bytes (19 plus the extension area).
pub fn parse_header(buf: &[u8]) -> Result<usize, FramingError> {
    if buf.len() < 19 {
        return Err(FramingError::TruncatedHeader(buf.len()));
    }
    if &buf[..11] != SIGNATURE {
        return Err(FramingError::BadSignature);
    }
    let flags = u32::from_be_bytes([buf[11], buf[12], buf[13], buf[14]]);
    if flags & FLAG_HAS_OIDS != 0 {
        return Err(FramingError::HasOids);
    }
    // Bits 17-31 are reserved critical flags: a reader must stop on them.
    if flags & 0xfffe_0000 != 0 {
        return Err(FramingError::UnknownCriticalFlags(flags));
    }
    let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
    let total = 19usize
        .checked_add(ext)
        .ok_or(FramingError::TruncatedHeader(buf.len()))?;
    if buf.len() < total {
        return Err(FramingError::TruncatedHeader(buf.len()));
    }
    Ok(total)
}

/// Whether `buf` is exactly the trailer (an int16 -1).
pub fn is_trailer(buf: &[u8]) -> bool {
    buf == [0xff, 0xff]
}

/// Reads a big-endian i16 at `pos`, if the bytes are there.
#[inline(always)]
fn be_i16(row: &[u8], pos: usize) -> Option<i16> {
    let b = row.get(pos..pos + 2)?;
    Some(i16::from_be_bytes([b[0], b[1]]))
}

/// Reads a big-endian i32 at `pos`, if the bytes are there.
#[inline(always)]
fn be_i32(row: &[u8], pos: usize) -> Option<i32> {
    let b = row.get(pos..pos + 4)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Walks one tuple and writes, for each of its `ncols` fields, the offset in
/// `row` where the value starts and its length (-1 for NULL) to `out[i]`.
///
/// This is the framing guarantee every decoder relies on: the field count
/// must be exactly `ncols`, every value must lie inside the row, and the
/// last one must end exactly at the row's end. A row that passes cannot make
/// a value decoder read outside it or out of step with the columns.
pub fn field_offsets(row: &[u8], ncols: usize, out: &mut [(u32, i32)]) -> Result<(), FramingError> {
    if out.len() < ncols {
        return Err(FramingError::OutputTooSmall {
            room: out.len(),
            needed: ncols,
        });
    }
    let count = be_i16(row, 0).ok_or(FramingError::Truncated {
        field: 0,
        offset: 0,
        needed: 2,
        len: row.len(),
    })?;
    if count as i64 != ncols as i64 {
        return Err(FramingError::FieldCount {
            expected: ncols,
            found: i64::from(count),
        });
    }
    // Offsets fit u32 because rows live in a chunk of at most 4 GiB.
    if u32::try_from(row.len()).is_err() {
        return Err(FramingError::BadLength {
            field: 0,
            length: -2,
        });
    }
    let mut pos = 2usize;
    for (field, slot) in out[..ncols].iter_mut().enumerate() {
        let len = be_i32(row, pos).ok_or(FramingError::Truncated {
            field,
            offset: pos,
            needed: 4,
            len: row.len(),
        })?;
        pos += 4;
        if len >= 0 {
            let l = len as usize;
            if row.len() - pos < l {
                return Err(FramingError::Truncated {
                    field,
                    offset: pos,
                    needed: l,
                    len: row.len(),
                });
            }
            *slot = (pos as u32, len);
            pos += l;
        } else if len == -1 {
            *slot = (pos as u32, -1);
        } else {
            return Err(FramingError::BadLength { field, length: len });
        }
    }
    if pos != row.len() {
        return Err(FramingError::TrailingBytes(row.len() - pos));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{encode_tuple, Value};

    #[test]
    fn walks_fields() {
        let row = encode_tuple(&[Value::Int4(1), Value::Null, Value::Text("héllo".into())]);
        let mut out = [(0u32, 0i32); 3];
        field_offsets(&row, 3, &mut out).unwrap();
        assert_eq!(out[0], (6, 4));
        assert_eq!(out[1].1, -1);
        assert_eq!(out[2], (18, 6));
        assert_eq!(&row[18..24], "héllo".as_bytes());
    }

    #[test]
    fn framing_errors() {
        let row = encode_tuple(&[Value::Int4(1), Value::Int8(2)]);
        let mut out = [(0u32, 0i32); 4];
        assert_eq!(
            field_offsets(&row, 3, &mut out),
            Err(FramingError::FieldCount {
                expected: 3,
                found: 2
            })
        );
        let mut trailing = row.clone();
        trailing.push(0);
        assert_eq!(
            field_offsets(&trailing, 2, &mut out),
            Err(FramingError::TrailingBytes(1))
        );
        for cut in 0..row.len() {
            assert!(
                field_offsets(&row[..cut], 2, &mut out).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = row.clone();
        bad[2..6].copy_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(
            field_offsets(&bad, 2, &mut out),
            Err(FramingError::BadLength {
                field: 0,
                length: -2
            })
        );
        let mut huge = row.clone();
        huge[2..6].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            field_offsets(&huge, 2, &mut out),
            Err(FramingError::Truncated { field: 0, .. })
        ));
        assert!(matches!(
            field_offsets(&row, 2, &mut out[..1]),
            Err(FramingError::OutputTooSmall { .. })
        ));
        // The trailer is a tuple with field count -1.
        assert_eq!(
            field_offsets(&[0xff, 0xff], 2, &mut out),
            Err(FramingError::FieldCount {
                expected: 2,
                found: -1
            })
        );
    }
}

//! jsonb's on-disk binary form to the text `jsonb_out` prints for it, so
//! that the heap path sends a jsonb value exactly as COPY does (binary COPY
//! sends a version byte 1 and then this text).
//!
//! The form (PostgreSQL's `utils/jsonb.h`): the varlena payload is the root
//! container. A container is a `u32` header (the count of elements or
//! key/value pairs and the flags `JB_FSCALAR`, `JB_FOBJECT`, `JB_FARRAY`),
//! one `u32` JEntry per child (an object's keys, sorted as stored, then its
//! values in the same order), then the children's data. A JEntry holds the
//! child's type in three bits and, in its low 28 bits, either the end
//! offset of the child's data (when `JENTRY_HAS_OFF` is set, every
//! `JB_OFFSET_STRIDE` children) or its length. Strings are their bytes,
//! numerics a numeric varlena, booleans and null have no data, nested
//! containers are containers; numerics and containers start at a 4-byte
//! boundary, the padding counted in their length. A top-level scalar is a
//! one-element array with `JB_FSCALAR` set.
//!
//! Everything is checked against the bytes there are: a malformed value is
//! a [`JsonbError`], never a panic or a read out of bounds.

use thiserror::Error;

use super::transcode::numeric_parts;
use super::varlena::{self, Varlena};
use crate::value;

const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;

const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;

const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

/// Containers nested deeper than this are refused rather than followed:
/// the printer recurses once per level (a few hundred bytes of stack
/// each, on threads with 2 MiB), and a value nested this deep is rare
/// enough to be read through COPY.
pub const JSONB_MAX_DEPTH: usize = 256;

/// Why a jsonb value could not be printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum JsonbError {
    /// Fewer bytes than a header or the JEntry array needs.
    #[error("jsonb value truncated in a container's {0}")]
    Truncated(&'static str),
    /// A container header with impossible flags.
    #[error("invalid jsonb container header {0:#010x}")]
    Header(u32),
    /// A JEntry with an unknown type, or data where its type has none.
    #[error("invalid jsonb entry {0:#010x}")]
    Entry(u32),
    /// Children's offsets that go backwards or past the container, or a
    /// container with bytes after its last child.
    #[error("jsonb entry offsets do not fit the container")]
    Bounds,
    /// An object key that is not a string.
    #[error("jsonb object key is not a string")]
    KeyNotString,
    /// A NUL byte in a string (jsonb refuses `\u0000`).
    #[error("jsonb string holds a NUL byte")]
    NulInString,
    /// A numeric that is not a well-formed on-disk numeric.
    #[error("invalid numeric in a jsonb value")]
    Numeric,
    /// Containers nested deeper than [`JSONB_MAX_DEPTH`].
    #[error("jsonb nested deeper than {JSONB_MAX_DEPTH} levels")]
    TooDeep,
}

/// Appends to `out` the text `jsonb_out` prints for the jsonb whose varlena
/// payload (uncompressed, after the varlena header) is `payload`.
/// `scratch` is reused space for numerics. On error `out` is as it was.
pub fn jsonb_to_text(
    payload: &[u8],
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), JsonbError> {
    let mark = out.len();
    let r = Printer { out, scratch }.root(payload);
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

/// A container's parts, its offsets checked.
struct Container<'a> {
    header: u32,
    /// Elements, or key/value pairs of an object.
    count: usize,
    object: bool,
    scalar: bool,
    /// The JEntry array, 4 bytes a child.
    entries: &'a [u8],
    /// The children's data.
    data: &'a [u8],
    /// The end offset of the keys' data (an object's), where its values'
    /// data starts.
    keys_end: usize,
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// `INTALIGN`: offsets count from a 4-byte-aligned start.
fn intalign(v: usize) -> usize {
    (v + 3) & !3
}

impl<'a> Container<'a> {
    /// Parses the container `c`, which must end exactly where its last
    /// child's data does.
    fn parse(c: &'a [u8]) -> Result<Container<'a>, JsonbError> {
        let header = le_u32(c, 0).ok_or(JsonbError::Truncated("header"))?;
        let object = header & JB_FOBJECT != 0;
        let scalar = header & JB_FSCALAR != 0;
        if object == (header & JB_FARRAY != 0)
            || header & 0x8000_0000 != 0
            || (scalar && (object || header & JB_CMASK != 1))
        {
            return Err(JsonbError::Header(header));
        }
        let count = (header & JB_CMASK) as usize;
        let children = if object { 2 * count } else { count };
        let entries = c
            .get(4..4 + 4 * children)
            .ok_or(JsonbError::Truncated("JEntry array"))?;
        let data = &c[4 + 4 * children..];
        let mut end = 0usize;
        let mut keys_end = 0usize;
        for i in 0..children {
            if object && i == count {
                keys_end = end;
            }
            end = next_end(entry(entries, i), end, data.len())?;
        }
        if end != data.len() {
            return Err(JsonbError::Bounds);
        }
        Ok(Container {
            header,
            count,
            object,
            scalar,
            entries,
            data,
            keys_end,
        })
    }
}

/// JEntry `i` of a checked JEntry array.
fn entry(entries: &[u8], i: usize) -> u32 {
    let w = &entries[4 * i..4 * i + 4];
    u32::from_le_bytes([w[0], w[1], w[2], w[3]])
}

/// The end offset of the child whose JEntry is `e`, given the previous
/// child's end `prev` and the data's length `len`: the offset itself when
/// `JENTRY_HAS_OFF` is set, else `prev` plus the length.
fn next_end(e: u32, prev: usize, len: usize) -> Result<usize, JsonbError> {
    let field = (e & JENTRY_OFFLENMASK) as usize;
    let end = if e & JENTRY_HAS_OFF != 0 {
        field
    } else {
        prev + field
    };
    if end < prev || end > len {
        return Err(JsonbError::Bounds);
    }
    Ok(end)
}

struct Printer<'o> {
    out: &'o mut Vec<u8>,
    scratch: &'o mut Vec<u8>,
}

impl Printer<'_> {
    fn root(&mut self, payload: &[u8]) -> Result<(), JsonbError> {
        let c = Container::parse(payload)?;
        if c.scalar {
            // A raw scalar: its one element, without brackets.
            let e = entry(c.entries, 0);
            if e & JENTRY_TYPEMASK == JENTRY_ISCONTAINER {
                return Err(JsonbError::Entry(e));
            }
            return self.child(e, c.data, 0, c.data.len(), 0);
        }
        self.container(&c, 0)
    }

    /// Prints a (non-scalar) container at nesting `depth`.
    fn container(&mut self, c: &Container<'_>, depth: usize) -> Result<(), JsonbError> {
        if c.scalar {
            return Err(JsonbError::Header(c.header));
        }
        if c.object {
            self.out.push(b'{');
            let (mut key_at, mut value_at) = (0usize, c.keys_end);
            for i in 0..c.count {
                if i > 0 {
                    self.out.extend_from_slice(b", ");
                }
                let k = entry(c.entries, i);
                let key_end = next_end(k, key_at, c.data.len())?;
                if k & JENTRY_TYPEMASK != JENTRY_ISSTRING {
                    return Err(JsonbError::KeyNotString);
                }
                self.string(&c.data[key_at..key_end])?;
                self.out.extend_from_slice(b": ");
                let v = entry(c.entries, c.count + i);
                let value_end = next_end(v, value_at, c.data.len())?;
                self.child(v, c.data, value_at, value_end, depth)?;
                (key_at, value_at) = (key_end, value_end);
            }
            self.out.push(b'}');
        } else {
            self.out.push(b'[');
            let mut at = 0usize;
            for i in 0..c.count {
                if i > 0 {
                    self.out.extend_from_slice(b", ");
                }
                let e = entry(c.entries, i);
                let end = next_end(e, at, c.data.len())?;
                self.child(e, c.data, at, end, depth)?;
                at = end;
            }
            self.out.push(b']');
        }
        Ok(())
    }

    /// Prints the child whose JEntry is `e` and whose data (with any
    /// alignment padding) is `data[start..end]`, in a container at `depth`.
    fn child(
        &mut self,
        e: u32,
        data: &[u8],
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<(), JsonbError> {
        let bytes = data.get(start..end).ok_or(JsonbError::Bounds)?;
        match e & JENTRY_TYPEMASK {
            JENTRY_ISSTRING => self.string(bytes),
            JENTRY_ISNUMERIC => self.numeric(aligned(data, start, end)?),
            JENTRY_ISCONTAINER => {
                if depth + 1 >= JSONB_MAX_DEPTH {
                    return Err(JsonbError::TooDeep);
                }
                let c = Container::parse(aligned(data, start, end)?)?;
                self.container(&c, depth + 1)
            }
            t => {
                let word: &[u8] = match t {
                    JENTRY_ISBOOL_FALSE => b"false",
                    JENTRY_ISBOOL_TRUE => b"true",
                    JENTRY_ISNULL => b"null",
                    _ => return Err(JsonbError::Entry(e)),
                };
                if !bytes.is_empty() {
                    return Err(JsonbError::Entry(e));
                }
                self.out.extend_from_slice(word);
                Ok(())
            }
        }
    }

    /// A string as `escape_json` writes it: quoted, `"` `\` and the
    /// control characters escaped, everything else as it is.
    fn string(&mut self, s: &[u8]) -> Result<(), JsonbError> {
        // Most strings (every key, most values) need no escape: one test
        // over the bytes, which the compiler vectorizes, and one copy.
        if !s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
            self.out.reserve(s.len() + 2);
            self.out.push(b'"');
            self.out.extend_from_slice(s);
            self.out.push(b'"');
            return Ok(());
        }
        self.out.push(b'"');
        let mut plain = 0;
        for (i, &b) in s.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                0x08 => b"\\b",
                0x0C => b"\\f",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0 => return Err(JsonbError::NulInString),
                b if b < 0x20 => {
                    self.out.extend_from_slice(&s[plain..i]);
                    plain = i + 1;
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.out.extend_from_slice(b"\\u00");
                    self.out.push(HEX[usize::from(b >> 4)]);
                    self.out.push(HEX[usize::from(b & 0xF)]);
                    continue;
                }
                _ => continue,
            };
            self.out.extend_from_slice(&s[plain..i]);
            self.out.extend_from_slice(esc);
            plain = i + 1;
        }
        self.out.extend_from_slice(&s[plain..]);
        self.out.push(b'"');
        Ok(())
    }

    /// A numeric varlena as `numeric_out` prints it: put in send format
    /// and printed by the crate's numeric text code.
    fn numeric(&mut self, datum: &[u8]) -> Result<(), JsonbError> {
        let p = match varlena::parse(datum).map_err(|_| JsonbError::Numeric)? {
            Varlena::Plain(p) | Varlena::Short(p) => p,
            _ => return Err(JsonbError::Numeric),
        };
        let (head, digits) = numeric_parts(p).map_err(|_| JsonbError::Numeric)?;
        self.scratch.clear();
        self.scratch.extend_from_slice(&head);
        for d in digits.chunks_exact(2) {
            self.scratch.extend_from_slice(&[d[1], d[0]]);
        }
        let n = value::numeric(self.scratch).map_err(|_| JsonbError::Numeric)?;
        n.write_text(self.out);
        Ok(())
    }
}

/// `data[INTALIGN(start)..end]`: a numeric's or container's bytes after
/// the padding that aligns them.
fn aligned(data: &[u8], start: usize, end: usize) -> Result<&[u8], JsonbError> {
    data.get(intalign(start)..end).ok_or(JsonbError::Bounds)
}

#[cfg(test)]
#[path = "jsonb_tests.rs"]
mod tests;

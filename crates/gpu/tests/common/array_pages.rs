//! Heap pages of tables with array columns, for the page kernels' arrays
//! (kernels/array.cuh) against the CPU converter: random arrays of every
//! element form (NULL elements, empty and multi-dimensional arrays, other
//! lower bounds, text elements with 1-byte and 4-byte headers, null
//! bitmaps of several bytes), and malformed ArrayTypes both must refuse.
//! Shared by the test binaries that include `common`, not all of which use
//! it.
#![allow(dead_code)]

use std::collections::HashMap;

use gpupg_format::encode::numeric_from_str;
use gpupg_format::heap::build::{
    array_to_disk, heap_fill_tuple, numeric_to_disk, varlena_4b, varlena_pglz, FillAttr,
    PageBuilder,
};
use gpupg_format::heap::sample::Rng;
use gpupg_format::heap::{Align, AttributeDesc, ElementDesc, TupleLayout};
use gpupg_format::PgType;

/// The element types of the random table's array columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    Text,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Numeric,
    Uuid,
    Date,
    Timestamptz,
    Interval,
    Name,
    Jsonb,
}

const ELEMS: [Elem; 14] = [
    Elem::Text,
    Elem::Int2,
    Elem::Int4,
    Elem::Int8,
    Elem::Float4,
    Elem::Float8,
    Elem::Bool,
    Elem::Numeric,
    Elem::Uuid,
    Elem::Date,
    Elem::Timestamptz,
    Elem::Interval,
    Elem::Name,
    Elem::Jsonb,
];

impl Elem {
    /// The type, typlen, typalign and element type OID.
    fn desc(self) -> (PgType, i16, Align, u32) {
        match self {
            Elem::Text => (PgType::Text, -1, Align::Int, 25),
            Elem::Int2 => (PgType::Int2, 2, Align::Short, 21),
            Elem::Int4 => (PgType::Int4, 4, Align::Int, 23),
            Elem::Int8 => (PgType::Int8, 8, Align::Double, 20),
            Elem::Float4 => (PgType::Float4, 4, Align::Int, 700),
            Elem::Float8 => (PgType::Float8, 8, Align::Double, 701),
            Elem::Bool => (PgType::Bool, 1, Align::Char, 16),
            Elem::Numeric => (PgType::Numeric(None), -1, Align::Int, 1700),
            Elem::Uuid => (PgType::Uuid, 16, Align::Char, 2950),
            Elem::Date => (PgType::Date, 4, Align::Int, 1082),
            Elem::Timestamptz => (PgType::Timestamptz, 8, Align::Double, 1184),
            Elem::Interval => (PgType::Interval, 16, Align::Double, 1186),
            Elem::Name => (PgType::Text, 64, Align::Char, 19),
            Elem::Jsonb => (PgType::Jsonb, -1, Align::Int, 3802),
        }
    }

    /// An on-disk element.
    fn value(self, rng: &mut Rng) -> Vec<u8> {
        let bytes =
            |rng: &mut Rng, n: usize| -> Vec<u8> { (0..n).map(|_| rng.below(256) as u8).collect() };
        match self {
            Elem::Text => {
                let n = if rng.chance(5) {
                    130 + rng.below(200)
                } else {
                    rng.below(30)
                };
                let s: Vec<u8> = (0..n).map(|_| b'a' + rng.below(26) as u8).collect();
                short_or_long(rng, &s)
            }
            Elem::Int2 => bytes(rng, 2),
            Elem::Int4 | Elem::Float4 | Elem::Date => bytes(rng, 4),
            Elem::Int8 | Elem::Float8 | Elem::Timestamptz => bytes(rng, 8),
            Elem::Uuid => bytes(rng, 16),
            Elem::Interval => {
                // The time part within ±2^52 µs (about 142 years): random
                // bytes would almost always exceed what Arrow's interval
                // nanoseconds hold (±9.2e15 µs), which the CPU decoder
                // rightly refuses, so clean pages would not decode.
                let micros = rng.below(1 << 53) as i64 - (1 << 52);
                let mut v = micros.to_le_bytes().to_vec();
                v.extend(bytes(rng, 8));
                v
            }
            Elem::Bool => vec![rng.below(2) as u8],
            Elem::Numeric => {
                let s = match rng.below(6) {
                    0 => "NaN".to_string(),
                    1 => "-Infinity".to_string(),
                    2 => format!("-{}.{:04}", rng.below(1 << 40), rng.below(10000)),
                    3 => format!("0.{:010}", rng.below(1 << 30)),
                    _ => format!("{}", rng.below(1 << 50)),
                };
                let send = numeric_from_str(&s).expect("a numeric");
                let disk = numeric_to_disk(&send).expect("an on-disk numeric");
                short_or_long(rng, &disk[4..])
            }
            Elem::Name => {
                let n = rng.below(64) as usize;
                let mut v: Vec<u8> = (0..n).map(|_| b'a' + rng.below(26) as u8).collect();
                v.resize(64, 0);
                v
            }
            Elem::Jsonb => {
                // The jsonb of a scalar string: a raw scalar array of one
                // string entry.
                let s: Vec<u8> = (0..rng.below(20))
                    .map(|_| b'a' + rng.below(26) as u8)
                    .collect();
                let mut p = (0x4000_0001u32 | 0x1000_0000).to_le_bytes().to_vec();
                p.extend_from_slice(&(s.len() as u32).to_le_bytes());
                p.extend_from_slice(&s);
                varlena_4b(&p)
            }
        }
    }
}

/// A varlena of `payload` with a 1-byte header (when it fits, half of the
/// time) or a 4-byte one.
fn short_or_long(rng: &mut Rng, payload: &[u8]) -> Vec<u8> {
    if payload.len() < 127 && rng.chance(50) {
        let mut v = vec![(((payload.len() + 1) << 1) | 1) as u8];
        v.extend_from_slice(payload);
        v
    } else {
        varlena_4b(payload)
    }
}

/// A nullable array column of elements of type `pg` (`typlen`, `align`),
/// aligned as PostgreSQL aligns such an array (double when its elements
/// are, int otherwise).
pub fn array_column(pg: PgType, typlen: i16, align: Align) -> AttributeDesc {
    let col_align = if align == Align::Double {
        Align::Double
    } else {
        Align::Int
    };
    AttributeDesc::column(PgType::Array(Box::new(pg)), -1, col_align, false).with_element(
        ElementDesc {
            typlen,
            align,
            byval: typlen > 0 && typlen <= 8,
        },
    )
}

fn array_attr(elem: Elem) -> (AttributeDesc, FillAttr) {
    let (pg, typlen, align, _) = elem.desc();
    let attr = array_column(pg, typlen, align);
    let fill = FillAttr::new(-1, attr.align);
    (attr, fill)
}

/// The random table: id int4, then an array column of each element type.
fn table() -> Vec<(AttributeDesc, FillAttr)> {
    let mut t = vec![(
        AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
        FillAttr::new(4, Align::Int),
    )];
    t.extend(ELEMS.iter().map(|&e| array_attr(e)));
    t
}

/// Every column of the random table, and a projection (reordered, one
/// column repeated).
pub fn array_layouts() -> Vec<TupleLayout> {
    let attrs: Vec<AttributeDesc> = table().into_iter().map(|(a, _)| a).collect();
    vec![
        TupleLayout::all_columns(attrs.clone(), HashMap::new()).expect("a valid layout"),
        TupleLayout::new(attrs, vec![13, 1, 0, 8, 1], HashMap::new()).expect("a valid projection"),
    ]
}

/// A random array of `elem`: empty, or of 1 to 3 dimensions, sometimes
/// with other lower bounds and NULL elements.
fn array(rng: &mut Rng, elem: Elem) -> Vec<u8> {
    let (_, _, align, oid) = elem.desc();
    let ndim = rng.below(4) as usize;
    let dims: Vec<(i32, i32)> = (0..ndim)
        .map(|_| {
            let len = if ndim == 1 {
                1 + rng.below(14)
            } else {
                1 + rng.below(4)
            };
            let lb = if rng.chance(70) {
                1
            } else {
                rng.below(7) as i32 - 3
            };
            (len as i32, lb)
        })
        .collect();
    let n: i32 = if ndim == 0 {
        0
    } else {
        dims.iter().map(|d| d.0).product()
    };
    let nulls = rng.chance(30);
    let items: Vec<Option<Vec<u8>>> = (0..n)
        .map(|_| (!(nulls && rng.chance(30))).then(|| elem.value(rng)))
        .collect();
    array_to_disk(oid, &dims, &items, align)
}

/// One page of rows: `row` gives each row's values (`None`: the page is
/// done), until the page is full.
fn page_of(
    fill: &[FillAttr],
    blkno: u32,
    row: &mut dyn FnMut(usize) -> Option<Vec<Option<Vec<u8>>>>,
) -> Vec<u8> {
    let mut b = PageBuilder::new(8192, blkno);
    let mut k = 0;
    while let Some(vals) = row(k) {
        let refs: Vec<Option<&[u8]>> = vals.iter().map(|v| v.as_deref()).collect();
        if b.add_tuple(&heap_fill_tuple(fill, &refs)).is_none() {
            break;
        }
        k += 1;
    }
    b.finish()
}

/// `n` pages of rows of random arrays (some columns NULL).
pub fn array_pages(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let fill: Vec<FillAttr> = table().iter().map(|(_, f)| *f).collect();
    let mut out = Vec::with_capacity(n * 8192);
    for p in 0..n {
        out.extend_from_slice(&page_of(&fill, p as u32, &mut |k| {
            let mut vals = vec![Some((k as i32).to_le_bytes().to_vec())];
            for &e in &ELEMS {
                vals.push((!rng.chance(10)).then(|| array(&mut rng, e)));
            }
            Some(vals)
        }));
    }
    out
}

/// The table of [`malformed`]: id int4, a int4[], t text[].
fn small_table() -> Vec<(AttributeDesc, FillAttr)> {
    vec![
        (
            AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
            FillAttr::new(4, Align::Int),
        ),
        array_attr(Elem::Int4),
        array_attr(Elem::Text),
    ]
}

/// The layout of the pages of [`pages_with`].
pub fn small_layout() -> TupleLayout {
    let attrs: Vec<AttributeDesc> = small_table().into_iter().map(|(a, _)| a).collect();
    TupleLayout::all_columns(attrs, HashMap::new()).expect("a valid layout")
}

/// An int4[] or text[] datum (4-byte header) of the ArrayType fields given
/// and `rest` (bitmap and elements).
fn raw(ndim: i32, dataoffset: i32, elemtype: u32, dims: &[i32], rest: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&ndim.to_le_bytes());
    p.extend_from_slice(&dataoffset.to_le_bytes());
    p.extend_from_slice(&elemtype.to_le_bytes());
    for d in dims {
        p.extend_from_slice(&d.to_le_bytes());
    }
    p.extend_from_slice(rest);
    varlena_4b(&p)
}

/// A one-dimensional text[] (lower bound 1, no NULLs) of on-disk elements.
fn text_array(elems: &[Vec<u8>]) -> Vec<u8> {
    let mut rest = Vec::new();
    for e in elems {
        rest.extend_from_slice(e);
        rest.resize(rest.len().next_multiple_of(4), 0);
    }
    raw(1, 0, 25, &[elems.len() as i32, 1], &rest)
}

/// Arrays both converters refuse, each as (column of [`small_table`],
/// datum).
pub fn malformed() -> Vec<(usize, Vec<u8>)> {
    let ints = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut toast = vec![0x01, 18];
    toast.extend_from_slice(&[0u8; 16]);
    vec![
        // Shorter than the fixed header.
        (1, varlena_4b(&ints(&[1, 0]))),
        // 7 dimensions, and -1.
        (1, raw(7, 0, 23, &[1; 14], &[0; 8])),
        (1, raw(-1, 0, 23, &[], &[0; 8])),
        // A negative dimension.
        (1, raw(1, 0, 23, &[-1, 1], &[0; 8])),
        // Dimensions past the payload.
        (1, raw(2, 0, 23, &[1, 1], &[])),
        // More than ARRAY_MAX_ELEMENTS items.
        (1, raw(2, 0, 23, &[1 << 20, 1 << 20, 1, 1], &[0; 8])),
        // A null bitmap past the payload (32 items: 4 bytes).
        (1, raw(1, 28, 23, &[32, 1], &[0xff, 0xff])),
        // Data offsets: past the payload, negative, inside the header.
        (1, raw(1, 1000, 23, &[1, 1], &ints(&[1, 5]))),
        (1, raw(1, -8, 23, &[1, 1], &ints(&[1, 5]))),
        (1, raw(1, 16, 23, &[1, 1], &ints(&[1, 5]))),
        // 5 items, 3 stored.
        (1, raw(1, 0, 23, &[5, 1], &ints(&[1, 2, 3]))),
        // Text elements: a 4-byte header under 4, a length past the
        // datum (4-byte and 1-byte headers), a TOAST pointer.
        (2, text_array(&[vec![8, 0, 0, 0]])),
        (
            2,
            text_array(&[[&400u32.to_le_bytes()[..], b"ab"].concat()]),
        ),
        (2, text_array(&[vec![(50 << 1) | 1, b'a', b'b']])),
        (2, text_array(&[b"\x07ab".to_vec(), toast])),
    ]
}

/// Arrays the CPU converts and the kernels leave to it (flagged): a
/// compressed text element.
pub fn left_to_the_cpu() -> Vec<(usize, Vec<u8>)> {
    let long = "compressible ".repeat(40);
    vec![(
        2,
        text_array(&[b"\x07ab".to_vec(), varlena_pglz(long.as_bytes())]),
    )]
}

/// Arrays both convert that look odd: a zero dimension among huge ones (an
/// empty array, as the CPU's saturating item count says), 20 items of
/// which every third is NULL (a 3-byte bitmap).
pub fn odd_but_valid() -> Vec<(usize, Vec<u8>)> {
    let items: Vec<Option<Vec<u8>>> = (0..20)
        .map(|i: i32| (i % 3 != 0).then(|| i.to_le_bytes().to_vec()))
        .collect();
    vec![
        (1, raw(3, 0, 23, &[1 << 30, 1 << 30, 0, 1, 1, 1], &[])),
        (1, array_to_disk(23, &[(20, -5)], &items, Align::Int)),
    ]
}

/// One page per datum of `special`: random rows of [`small_table`], and
/// one row (the second) whose column is that datum.
pub fn pages_with(seed: u64, special: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let fill: Vec<FillAttr> = small_table().iter().map(|(_, f)| *f).collect();
    let mut out = Vec::with_capacity(special.len() * 8192);
    for (p, (col, datum)) in special.iter().enumerate() {
        out.extend_from_slice(&page_of(&fill, p as u32, &mut |k| {
            if k >= 6 {
                return None;
            }
            let mut vals = vec![
                Some((k as i32).to_le_bytes().to_vec()),
                Some(array(&mut rng, Elem::Int4)),
                Some(array(&mut rng, Elem::Text)),
            ];
            if k == 1 {
                vals[*col] = Some(datum.clone());
            }
            Some(vals)
        }));
    }
    out
}

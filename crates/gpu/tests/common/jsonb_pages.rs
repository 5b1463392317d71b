//! Heap pages of a table with jsonb columns, for the page kernels' jsonb
//! printer (kernels/jsonb.cuh) against the CPU converter: random documents
//! of every shape, documents nested around the kernels' depth limit, and
//! malformed jsonb bytes that both must refuse. Shared by the test
//! binaries that include `common`, not all of which use it.
#![allow(dead_code)]

use std::collections::HashMap;

use gpupg_format::encode::numeric_from_str;
use gpupg_format::heap::build::{
    heap_fill_tuple, numeric_to_disk, varlena_4b, FillAttr, PageBuilder,
};
use gpupg_format::heap::jsonb_build::{jsonb_payload, Json};
use gpupg_format::heap::sample::Rng;
use gpupg_format::heap::{Align, AttributeDesc, TupleLayout};
use gpupg_format::PgType;

/// Containers the kernels follow (`JSONB_GPU_DEPTH` in kernels/jsonb.cuh);
/// deeper documents flag their page.
pub const GPU_DEPTH: usize = 32;

const JB_FARRAY: u32 = 0x4000_0000;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const OFF: u32 = 0x8000_0000;
const NUMERIC: u32 = 0x1000_0000;
const NULL: u32 = 0x4000_0000;
const CONTAINER: u32 = 0x5000_0000;

/// The table: id int4, doc jsonb (short headers where they fit), note
/// text, raw jsonb with plain storage (always a 4-byte header).
fn table() -> Vec<(AttributeDesc, FillAttr)> {
    let col = |t: PgType, len: i16, al: Align, byval: bool| {
        (
            AttributeDesc::column(t, len, al, byval),
            FillAttr::new(len, al),
        )
    };
    let mut raw = col(PgType::Jsonb, -1, Align::Int, false);
    raw.1.plain_storage = true;
    vec![
        col(PgType::Int4, 4, Align::Int, true),
        col(PgType::Jsonb, -1, Align::Int, false),
        col(PgType::Text, -1, Align::Int, false),
        raw,
    ]
}

/// Every column of the table, and a projection of the jsonb columns
/// (reordered, one repeated).
pub fn jsonb_layouts() -> Vec<TupleLayout> {
    let attrs: Vec<AttributeDesc> = table().into_iter().map(|(a, _)| a).collect();
    vec![
        TupleLayout::all_columns(attrs.clone(), HashMap::new()).expect("a valid layout"),
        TupleLayout::new(attrs, vec![3, 1, 3], HashMap::new()).expect("a valid projection"),
    ]
}

/// A string of ASCII, the characters escape_json escapes, and multibyte
/// UTF-8.
fn string(rng: &mut Rng) -> String {
    const POOL: [char; 22] = [
        'a', 'b', 'Z', '0', ' ', '/', '"', '\\', '\u{8}', '\u{c}', '\n', '\r', '\t', '\u{1}',
        '\u{1f}', '\u{7f}', 'é', '€', '😀', '中', '\u{80}', '\u{ffff}',
    ];
    let n = rng.below(14) as usize;
    (0..n)
        .map(|_| POOL[rng.below(POOL.len() as u64) as usize])
        .collect()
}

fn decimal_digits(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect()
}

/// A number of one of many shapes: small, huge, tiny, negative, with
/// trailing fractional zeros (dscale), zero with a sign, NaN, ±Infinity.
fn number(rng: &mut Rng) -> String {
    let sign = if rng.chance(40) { "-" } else { "" };
    let int = |rng: &mut Rng| {
        let n = 1 + rng.below(25) as usize;
        format!("{}{}", 1 + rng.below(9), decimal_digits(rng, n - 1))
    };
    match rng.below(9) {
        0 => format!("{}", rng.below(20_000) as i64 - 10_000),
        1 => format!("{sign}{}", int(rng)),
        2 => {
            let f = 1 + rng.below(20) as usize;
            format!("{sign}{}.{}", int(rng), decimal_digits(rng, f))
        }
        3 => {
            let z = rng.below(70) as usize;
            let n = 1 + rng.below(12) as usize;
            format!("{sign}0.{}{}", "0".repeat(z), decimal_digits(rng, n))
        }
        4 => format!("{sign}{}e{}", int(rng), rng.below(300)),
        5 => format!("{sign}{}.{}e-{}", int(rng), int(rng), rng.below(200)),
        6 => ["0", "-0", "0.000", "-0.0", "0e-20", "10000", "0.0001"][rng.below(7) as usize].into(),
        7 => ["NaN", "Infinity", "-Infinity"][rng.below(3) as usize].into(),
        _ => format!(
            "{sign}{}.{}",
            int(rng),
            "0".repeat(1 + rng.below(9) as usize)
        ),
    }
}

/// A random document; containers below `levels` more levels only.
fn value(rng: &mut Rng, levels: usize) -> Json {
    let kind = if levels == 0 {
        rng.below(4)
    } else {
        rng.below(7)
    };
    match kind {
        0 => Json::Null,
        1 => Json::Bool(rng.chance(50)),
        2 => Json::Number(number(rng)),
        3 => Json::String(string(rng)),
        4 | 5 => {
            // Now and then more than 32 children: JEntries with offsets
            // every 32 (JB_OFFSET_STRIDE), lengths between.
            let (n, below) = if rng.chance(15) {
                (33 + rng.below(40) as usize, 0)
            } else {
                (rng.below(6) as usize, levels - 1)
            };
            if kind == 4 {
                Json::Array((0..n).map(|_| value(rng, below)).collect())
            } else {
                // Keys from a small pool now and then: duplicates.
                let key = |rng: &mut Rng| {
                    if rng.chance(30) {
                        ["k", "key", "", "é"][rng.below(4) as usize].to_string()
                    } else {
                        string(rng)
                    }
                };
                Json::Object((0..n).map(|_| (key(rng), value(rng, below))).collect())
            }
        }
        _ => Json::Array(vec![]),
    }
}

/// A random document's payload of at most 1500 bytes (several rows fit
/// a page).
fn document(rng: &mut Rng) -> Vec<u8> {
    loop {
        let levels = if rng.chance(20) {
            0
        } else {
            1 + rng.below(5) as usize
        };
        let j = value(rng, levels);
        if let Some(p) = jsonb_payload(&j).filter(|p| p.len() <= 1500) {
            return p;
        }
    }
}

/// `levels` containers nested, arrays and objects alternating, a string
/// innermost.
pub fn nested(levels: usize) -> Vec<u8> {
    let mut j = Json::String("deep".into());
    for k in 0..levels {
        j = if k % 2 == 0 {
            Json::Array(vec![Json::Null, j])
        } else {
            Json::Object(vec![("k".into(), j)])
        };
    }
    jsonb_payload(&j).expect("a nested document")
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A numeric in numeric_send's format, from its header and digits.
fn send(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
    let mut s = Vec::new();
    for v in [ndigits, weight as u16, sign, dscale] {
        s.extend_from_slice(&v.to_be_bytes());
    }
    for d in digits {
        s.extend_from_slice(&d.to_be_bytes());
    }
    s
}

/// The on-disk numeric of `send`, with a 1-byte header when `short`.
fn disk_numeric(send: &[u8], short: bool) -> Vec<u8> {
    let d = numeric_to_disk(send).expect("a numeric");
    if short && d.len() - 4 < 127 {
        let mut s = vec![(((d.len() - 3) << 1) | 1) as u8];
        s.extend_from_slice(&d[4..]);
        s
    } else {
        d
    }
}

/// A jsonb array of the numeric datums `items` (each padded to 4 bytes).
fn numeric_array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut entries = vec![JB_FARRAY | items.len() as u32];
    let mut data = Vec::new();
    for (i, d) in items.iter().enumerate() {
        let start = data.len();
        data.resize(start.next_multiple_of(4), 0);
        data.extend_from_slice(d);
        entries.push(if i % 32 == 0 {
            NUMERIC | OFF | data.len() as u32
        } else {
            NUMERIC | (data.len() - start) as u32
        });
    }
    let mut v = words(&entries);
    v.extend_from_slice(&data);
    v
}

/// Numerics as the server may store them but numeric_from_str never
/// makes them: leading and trailing zero digits, a negative value that
/// truncates to zero at its dscale, a digit cut by dscale, short and long
/// headers, special values with digits, 1-byte varlena headers.
pub fn odd_numerics() -> Vec<u8> {
    let cases = [
        send(3, 1, 0, 0, &[0, 12, 0]),
        send(2, -1, 0x4000, 2, &[1, 0]),
        send(1, -1, 0x4000, 4, &[1]),
        send(1, -1, 0x4000, 3, &[1]),
        send(1, -1, 0x4000, 5, &[1234]),
        send(2, 0, 0x4000, 1, &[5, 5678]),
        send(2, 0, 0x4000, 0, &[0, 5678]),
        send(0, 7, 0x4000, 3, &[]),
        send(0, 0, 0, 0, &[]),
        send(1, 100, 0, 0, &[9999]),
        send(1, -100, 0, 401, &[7]),
        send(1, 2000, 0x4000, 16383, &[1]),
        send(4, -3, 0, 20, &[1, 2, 3, 4]),
    ];
    let mut items: Vec<Vec<u8>> = Vec::new();
    for (k, c) in cases.iter().enumerate() {
        items.push(disk_numeric(c, k % 2 == 0));
        items.push(disk_numeric(c, k % 2 == 1));
    }
    // NaN, +Infinity, -Infinity as stored (a 2-byte header only).
    for s in [0xC000u16, 0xD000, 0xF000] {
        items.push(varlena_4b(&s.to_le_bytes()));
        items.push(vec![0x07, s as u8, (s >> 8) as u8]);
    }
    numeric_array(&items)
}

/// jsonb payloads the CPU converter refuses (and so the kernels must).
pub fn malformed() -> Vec<Vec<u8>> {
    let num = |send: &[u8]| numeric_to_disk(send).expect("a numeric");
    let one = numeric_from_str("1").expect("1");
    let mut big_digit = num(&send(1, 0, 0, 0, &[1]));
    big_digit[6..8].copy_from_slice(&10000u16.to_le_bytes());
    let mut compressed = num(&one);
    compressed[0] |= 2;
    let mut long_len = num(&one);
    long_len[0] = long_len[0].wrapping_add(4);
    let bad_special = varlena_4b(&0xE000u16.to_le_bytes());
    let scalar_numeric = |d: Vec<u8>| {
        let mut v = words(&[JB_FARRAY | JB_FSCALAR | 1, NUMERIC | OFF | d.len() as u32]);
        v.extend_from_slice(&d);
        v
    };
    let mut nul = words(&[JB_FARRAY | JB_FSCALAR | 1, OFF | 3]);
    nul.extend_from_slice(b"a\0b");
    let mut nul_key = words(&[JB_FOBJECT | 1, OFF | 2, NULL]);
    nul_key.extend_from_slice(b"\0k");
    vec![
        vec![],
        vec![0, 0, 0],
        words(&[0]),
        words(&[JB_FOBJECT | JB_FARRAY]),
        words(&[JB_FARRAY | 0x8000_0000]),
        words(&[JB_FARRAY | JB_FSCALAR | 2, OFF | NULL, NULL]),
        words(&[JB_FOBJECT | JB_FSCALAR | 1, OFF | NULL, NULL]),
        words(&[JB_FARRAY | 2, OFF]),
        words(&[JB_FOBJECT | 1, OFF]),
        words(&[JB_FARRAY | 0x0FFF_FFFF]),
        words(&[JB_FARRAY | 1, OFF | 4]),
        words(&[JB_FARRAY | 1, 0x0FFF_FFFF]),
        words(&[JB_FARRAY | 2, OFF | 4, OFF | 2, 0]),
        words(&[JB_FARRAY | 1, OFF, 0]),
        words(&[JB_FOBJECT | 1, OFF | NULL, NULL]),
        words(&[JB_FARRAY | 1, OFF | 0x6000_0000]),
        words(&[JB_FARRAY | 1, OFF | 0x7000_0000]),
        words(&[JB_FARRAY | 1, OFF | NULL | 4, 0]),
        words(&[JB_FARRAY | JB_FSCALAR | 1, OFF | CONTAINER | 4, JB_FARRAY]),
        words(&[
            JB_FARRAY | 1,
            OFF | CONTAINER | 8,
            JB_FARRAY | JB_FSCALAR | 1,
            OFF | NULL,
        ]),
        words(&[JB_FARRAY | 1, OFF | CONTAINER | 4, 0]),
        [words(&[JB_FARRAY | 1, OFF | CONTAINER | 2]), vec![0, 0]].concat(),
        words(&[JB_FARRAY | 1, OFF | NUMERIC | 4, 0]),
        [words(&[JB_FARRAY | 1, OFF | NUMERIC | 2]), vec![3, 0]].concat(),
        // A numeric's padding past its end.
        [
            words(&[JB_FARRAY | 2, OFF | 1, OFF | NUMERIC | 2]),
            vec![b'a', 0],
        ]
        .concat(),
        scalar_numeric(big_digit),
        scalar_numeric(compressed),
        scalar_numeric(long_len),
        scalar_numeric(bad_special),
        scalar_numeric(vec![0x01, 0x12, 0, 0]),
        nul,
        nul_key,
        // A valid document with a byte after it.
        [nested(3), vec![0]].concat(),
        // A valid document cut short.
        {
            let mut v = nested(4);
            v.truncate(v.len() - 1);
            v
        },
    ]
}

/// One page of rows whose raw jsonb payloads come from `docs` (the doc
/// column random, some of it NULL), filled until the page is full or
/// `docs` gives `None`.
fn page(rng: &mut Rng, blkno: u32, docs: &mut dyn FnMut(&mut Rng) -> Option<Vec<u8>>) -> Vec<u8> {
    let fill: Vec<FillAttr> = table().iter().map(|(_, f)| *f).collect();
    let mut b = PageBuilder::new(8192, blkno);
    let mut id = 0i32;
    while let Some(raw) = docs(rng) {
        let doc = (!rng.chance(10)).then(|| varlena_4b(&document(rng)));
        let note = varlena_4b(format!("row {id}").as_bytes());
        let raw = varlena_4b(&raw);
        let id_bytes = id.to_le_bytes();
        let vals: Vec<Option<&[u8]>> =
            vec![Some(&id_bytes), doc.as_deref(), Some(&note), Some(&raw)];
        if b.add_tuple(&heap_fill_tuple(&fill, &vals)).is_none() {
            break;
        }
        id += 1;
    }
    b.finish()
}

/// `n` pages of random documents in both jsonb columns; page 0 also holds
/// [`odd_numerics`].
pub fn jsonb_pages(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n * 8192);
    for p in 0..n {
        let mut first = p == 0;
        out.extend_from_slice(&page(&mut rng, p as u32, &mut |rng: &mut Rng| {
            if std::mem::take(&mut first) {
                Some(odd_numerics())
            } else {
                Some(document(rng))
            }
        }));
    }
    out
}

/// One page per payload of `special`: random rows, and one row (the
/// second) whose raw jsonb column is that payload.
pub fn pages_with(seed: u64, special: &[Vec<u8>]) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(special.len() * 8192);
    for (p, s) in special.iter().enumerate() {
        let mut row = 0;
        out.extend_from_slice(&page(&mut rng, p as u32, &mut |rng: &mut Rng| {
            row += 1;
            match row {
                2 => Some(s.clone()),
                1..=6 => Some(document(rng)),
                _ => None,
            }
        }));
    }
    out
}

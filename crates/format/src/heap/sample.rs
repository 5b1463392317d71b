//! Heap pages of a sample table with every form of value the page
//! readers handle (and some they leave to the reference converter), built
//! with [`build`](super::build)'s page builder, for the tests of every page
//! reader: the GPU page kernels (on their CPU twin and on the GPU) and the
//! CPU decoder's column locator. Deterministic for a seed.

use std::collections::HashMap;

use super::build::{
    heap_fill_tuple, numeric_to_disk, toast_pointer, varlena_4b, varlena_pglz, FillAttr,
    PageBuilder,
};
use super::{transcode_page, Align, AttributeDesc, LpFlags, TupleLayout};
use crate::{ColumnDesc, CopyChunk, PgType};

/// A small xorshift generator (tests only need variety, not quality).
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed` (0 is allowed).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The sample enum type's labels with their OIDs (`pg_enum.oid`, what a heap page stores).
pub const LABELS: [(u32, &str); 3] = [(16384, "red"), (16385, "green"), (16390, "blue-ish")];

/// The table: (attribute, storage for the builder).
fn attributes() -> Vec<(AttributeDesc, FillAttr)> {
    let col = |t: PgType, len: i16, al: Align, byval: bool| {
        (
            AttributeDesc::column(t, len, al, byval),
            FillAttr::new(len, al),
        )
    };
    let mut plain = col(PgType::Text, -1, Align::Int, false);
    plain.1.plain_storage = true;
    vec![
        col(PgType::Int4, 4, Align::Int, true),
        col(PgType::Text, -1, Align::Int, false),
        col(PgType::Int8, 8, Align::Double, true),
        (
            AttributeDesc::dropped(2, Align::Short),
            FillAttr::new(2, Align::Short),
        ),
        col(PgType::Bool, 1, Align::Char, true),
        col(PgType::Float8, 8, Align::Double, true),
        col(PgType::Numeric(None), -1, Align::Int, false),
        col(PgType::Date, 4, Align::Int, true),
        col(PgType::Uuid, 16, Align::Char, false),
        col(PgType::Text, 64, Align::Char, false),
        col(PgType::Interval, 16, Align::Double, false),
        col(PgType::Int2, 2, Align::Short, true),
        col(PgType::Enum, 4, Align::Int, true),
        col(PgType::Timestamp, 8, Align::Double, true),
        plain,
        // Added after some tuples were written: they get its missing value.
        (
            AttributeDesc::column(PgType::Int8, 8, Align::Double, true)
                .with_missing(42i64.to_be_bytes().to_vec()),
            FillAttr::new(8, Align::Double),
        ),
        col(PgType::Text, -2, Align::Char, false),
    ]
}

/// Layouts over the table: every live column in order, and a projection
/// with reordered and repeated columns.
pub fn layouts() -> Vec<TupleLayout> {
    let attrs: Vec<AttributeDesc> = attributes().into_iter().map(|(a, _)| a).collect();
    let labels: HashMap<u32, String> = LABELS.iter().map(|&(k, v)| (k, v.to_string())).collect();
    vec![
        TupleLayout::all_columns(attrs.clone(), labels.clone())
            .expect("the sample table is a valid layout"),
        TupleLayout::new(attrs, vec![12, 0, 1, 0, 15, 6, 16], labels)
            .expect("the sample projection is a valid layout"),
    ]
}

fn text(rng: &mut Rng, max: u64) -> Vec<u8> {
    let n = rng.below(max + 1) as usize;
    (0..n).map(|_| b'a' + rng.below(26) as u8).collect()
}

/// One value of attribute `i` in its on-disk form; `special` allows the
/// forms that make the kernels flag a page (compressed, TOAST pointer,
/// unknown enum value).
fn value(rng: &mut Rng, i: usize, special: bool) -> Vec<u8> {
    match i {
        0 => (rng.next_u64() as i32).to_le_bytes().to_vec(),
        1 | 14 => {
            if special && rng.chance(30) {
                if rng.chance(50) {
                    varlena_pglz(&b"abcabcabcabcabcabcabcabcabcabcabcabc".repeat(4))
                } else {
                    toast_pointer(5000, 4000, 1234, 5678)
                }
            } else {
                varlena_4b(&text(rng, 300))
            }
        }
        2 | 15 => (rng.next_u64() as i64).to_le_bytes().to_vec(),
        // Timestamps and intervals within what the decoders accept.
        13 => (rng.below(2_000_000_000_000_000) as i64 - 1_000_000_000_000_000)
            .to_le_bytes()
            .to_vec(),
        3 => vec![0, 0],
        4 => vec![rng.below(2) as u8],
        5 => f64::from_bits(rng.next_u64()).to_le_bytes().to_vec(),
        6 => {
            let special_value = [0xC000u16, 0xD000, 0xF000][rng.below(3) as usize];
            let mut send = Vec::new();
            if rng.chance(10) {
                send.extend_from_slice(&[0, 0, 0, 0]);
                send.extend_from_slice(&special_value.to_be_bytes());
                send.extend_from_slice(&[0, 0]);
            } else {
                let nd = rng.below(8) as u16;
                let weight = rng.below(200) as i16 - 100;
                let sign: u16 = if rng.chance(50) { 0 } else { 0x4000 };
                let dscale = rng.below(80) as u16;
                send.extend_from_slice(&nd.to_be_bytes());
                send.extend_from_slice(&weight.to_be_bytes());
                send.extend_from_slice(&sign.to_be_bytes());
                send.extend_from_slice(&dscale.to_be_bytes());
                for k in 0..nd {
                    // No leading or trailing zero digits, as the server stores.
                    let d = if k == 0 || k + 1 == nd {
                        1 + rng.below(9999)
                    } else {
                        rng.below(10000)
                    } as u16;
                    send.extend_from_slice(&d.to_be_bytes());
                }
            }
            numeric_to_disk(&send).unwrap_or_else(|| varlena_4b(&[0x00, 0x80]))
        }
        7 => (rng.below(100_000) as i32 - 50_000).to_le_bytes().to_vec(),
        8 => (0..16).map(|_| rng.next_u64() as u8).collect(),
        9 => {
            let mut v = text(rng, 63);
            v.resize(64, 0);
            v
        }
        10 => {
            let mut v = (rng.below(2_000_000_000_000) as i64 - 1_000_000_000_000)
                .to_le_bytes()
                .to_vec();
            v.extend_from_slice(&(rng.below(20_000) as i32 - 10_000).to_le_bytes());
            v.extend_from_slice(&(rng.below(2_000) as i32 - 1_000).to_le_bytes());
            v
        }
        11 => (rng.next_u64() as i16).to_le_bytes().to_vec(),
        12 => {
            if special && rng.chance(20) {
                99_999u32.to_le_bytes().to_vec()
            } else {
                LABELS[rng.below(3) as usize].0.to_le_bytes().to_vec()
            }
        }
        _ => {
            let mut v = text(rng, 40);
            v.push(0);
            v
        }
    }
}

/// `n` pages (8 kB) of the table. Pages with `special_every` > 0 at every
/// such index hold values the kernels leave to the CPU; some pages have
/// dead, unused and redirect line pointers; some tuples predate the last
/// two columns.
pub fn pages(seed: u64, n: usize, special_every: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let table = attributes();
    let fill: Vec<FillAttr> = table.iter().map(|(_, f)| *f).collect();
    let mut out = Vec::with_capacity(n * 8192);
    for p in 0..n {
        let special = special_every > 0 && p % special_every == special_every - 1;
        let mut b = PageBuilder::new(8192, p as u32);
        b.set_flags(0x0004);
        b.set_lsn(0x1_0000_0000 + p as u64);
        loop {
            if rng.chance(5) {
                let flags =
                    [LpFlags::Dead, LpFlags::Unused, LpFlags::Redirect][rng.below(3) as usize];
                if b.add_line_pointer(flags, 1).is_none() {
                    break;
                }
                continue;
            }
            let natts = if rng.chance(10) { 15 } else { table.len() };
            let vals: Vec<Option<Vec<u8>>> = (0..natts)
                .map(|i| {
                    if i == 3 || rng.chance(12) {
                        None
                    } else {
                        Some(value(&mut rng, i, special))
                    }
                })
                .collect();
            let refs: Vec<Option<&[u8]>> = vals.iter().map(|v| v.as_deref()).collect();
            let t = heap_fill_tuple(&fill, &refs);
            if b.add_tuple(&t).is_none() {
                break;
            }
        }
        out.extend_from_slice(&b.finish());
    }
    out
}

/// `pages` with `flips` random bytes changed in the tuple area of random
/// pages (the kernels must flag such a page or agree with the CPU).
pub fn mutate(pages: &mut [u8], seed: u64, flips: usize) {
    let mut rng = Rng::new(seed);
    let n = pages.len() / 8192;
    for _ in 0..flips {
        let p = rng.below(n as u64) as usize;
        let at = 24 + rng.below(8192 - 24) as usize;
        pages[p * 8192 + at] = rng.next_u64() as u8;
    }
}

// Lineorder-like pages (SSB lineorder: 14 int4 columns, char(15), char(1),
// char(10), as in `gpupg_datagen::lineorder_ddl`), for speed measurements.

/// Column `k` of the table: `None` for int4, else the bpchar length.
const COLUMNS: [Option<usize>; 17] = [
    None,
    None,
    None,
    None,
    None,
    None,
    Some(15),
    Some(1),
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    Some(10),
];

const PRIORITIES: [&str; 5] = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
const MODES: [&str; 7] = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];

/// The datagen's per-column pseudo-random numbers.
fn h(g: u64, k: u64) -> u64 {
    (g * (2_654_435_761 + 2 * k)) % 2_147_483_647
}

fn bpchar(s: &str, n: usize) -> Vec<u8> {
    varlena_4b(format!("{s:<n$}").as_bytes())
}

/// On-disk datums of lineorder row `g`, like `lineorder_insert` makes.
fn row(g: u64) -> Vec<Vec<u8>> {
    let d = h(g, 4);
    let r = h(g, 8);
    let q = h(g, 6);
    let e = h(g, 7);
    let date = |x: u64| (19920101 + (x % 7) * 10000 + (x % 12) * 100 + x % 28) as i32;
    let ints = [
        (g / 4 + 1) as i32,
        (g % 7 + 1) as i32,
        (h(g, 1) % 30000 + 1) as i32,
        (h(g, 2) % 200000 + 1) as i32,
        (h(g, 3) % 2000 + 1) as i32,
        date(d),
        (q % 50 + 1) as i32,
        (e % 10_000_000 + 90000) as i32,
        (e % 40_000_000) as i32,
        (q % 11) as i32,
        (r % 10_000_000) as i32,
        (e % 100_000) as i32,
        (q % 9) as i32,
        date(r),
    ];
    let mut ints = ints.iter().map(|v| v.to_le_bytes().to_vec());
    COLUMNS
        .iter()
        .enumerate()
        .map(|(k, c)| match (k, c) {
            (_, None) => ints.next().unwrap_or_default(),
            (6, Some(n)) => bpchar(PRIORITIES[(h(g, 5) % 5) as usize], *n),
            (7, Some(n)) => bpchar("0", *n),
            (_, Some(n)) => bpchar(MODES[(h(g, 9) % 7) as usize], *n),
        })
        .collect()
}

/// The lineorder table's attributes.
pub fn lineorder_attributes() -> Vec<AttributeDesc> {
    COLUMNS
        .iter()
        .map(|c| match c {
            None => AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
            Some(_) => AttributeDesc::column(PgType::Text, -1, Align::Int, false),
        })
        .collect()
}

/// `n` all-visible 8 kB pages of lineorder rows, full as the server fills
/// them; with `nulls`, one row in three has a NULL.
pub fn lineorder_pages(n: usize, nulls: bool) -> Vec<Vec<u8>> {
    let fill: Vec<FillAttr> = lineorder_attributes()
        .iter()
        .map(|a| FillAttr::new(a.attlen, a.align))
        .collect();
    let mut pages: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut b = PageBuilder::new(8192, 0);
    let mut g = 0u64;
    while pages.len() < n {
        let datums = row(g);
        g += 1;
        let mut vals: Vec<Option<&[u8]>> = datums.iter().map(|d| Some(&d[..])).collect();
        if nulls && g.is_multiple_of(3) {
            vals[(g % 17) as usize] = None;
        }
        let t = heap_fill_tuple(&fill, &vals);
        if b.add_tuple(&t).is_none() {
            b.set_flags(super::page::PD_ALL_VISIBLE);
            let blk = pages.len() as u32 + 1;
            pages.push(std::mem::replace(&mut b, PageBuilder::new(8192, blk)).finish());
            // An empty page takes any lineorder tuple.
            let _ = b.add_tuple(&t);
        }
    }
    pages
}

/// The output columns of `layout` as a schema's column descriptions
/// (named `c{position}_{attribute index}`, all nullable); attributes
/// without a type are left out.
pub fn output_columns(layout: &TupleLayout) -> Vec<ColumnDesc> {
    layout
        .output()
        .iter()
        .enumerate()
        .filter_map(|(j, &i)| {
            let pg_type = layout.attributes().get(i)?.pg_type.clone()?;
            Some(ColumnDesc {
                name: format!("c{j}_{i}"),
                type_name: pg_type.to_string(),
                type_oid: 0,
                typmod: -1,
                pg_type,
                nullable: true,
            })
        })
        .collect()
}

/// The rows the reference converter (`transcode_page`) makes of 8 kB pages
/// (`pages`: indexes into `data`, also used as block numbers), leaving out
/// the pages in `skip` (indexes into `pages`), and the pages it refuses.
pub fn converter_rows(
    data: &[u8],
    pages: &[u32],
    layout: &TupleLayout,
    skip: &[u32],
) -> (CopyChunk, Vec<u32>) {
    let mut rows = CopyChunk::default();
    let mut refused = Vec::new();
    for (k, &p) in pages.iter().enumerate() {
        let Some(page) = data.get(p as usize * 8192..(p as usize + 1) * 8192) else {
            refused.push(k as u32);
            continue;
        };
        let mut one = CopyChunk::default();
        if transcode_page(page, p, layout, &mut one).is_err() {
            refused.push(k as u32);
        }
        if skip.contains(&(k as u32)) {
            continue;
        }
        for (s, e) in one.row_starts.iter().zip(&one.row_ends) {
            let at = rows.data.len() as u32;
            rows.data
                .extend_from_slice(&one.data[*s as usize..*e as usize]);
            rows.row_starts.push(at);
            rows.row_ends.push(at + (e - s));
        }
    }
    (rows, refused)
}

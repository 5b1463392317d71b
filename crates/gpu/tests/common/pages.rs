//! Heap pages of a table with every form the GPU page kernels convert
//! (and some they leave to the CPU converter), built with the format
//! crate's page builder, for the kernels' tests on the CPU twin and on the
//! GPU. Deterministic for a seed.

use std::collections::HashMap;

use gpupg_format::heap::build::{
    heap_fill_tuple, numeric_to_disk, toast_pointer, varlena_4b, varlena_pglz, FillAttr,
    PageBuilder,
};
use gpupg_format::heap::{transcode_page, Align, AttributeDesc, LpFlags, TupleLayout};
use gpupg_format::{CopyChunk, PgType};

/// A small xorshift generator (tests only need variety, not quality).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

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
        TupleLayout::all_columns(attrs.clone(), labels.clone()).expect("layout"),
        TupleLayout::new(attrs, vec![12, 0, 1, 0, 15, 6, 16], labels).expect("layout"),
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
        0 => (rng.next() as i32).to_le_bytes().to_vec(),
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
        2 | 15 => (rng.next() as i64).to_le_bytes().to_vec(),
        // Timestamps and intervals within what the decoders accept.
        13 => (rng.below(2_000_000_000_000_000) as i64 - 1_000_000_000_000_000)
            .to_le_bytes()
            .to_vec(),
        3 => vec![0, 0],
        4 => vec![rng.below(2) as u8],
        5 => f64::from_bits(rng.next()).to_le_bytes().to_vec(),
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
        8 => (0..16).map(|_| rng.next() as u8).collect(),
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
        11 => (rng.next() as i16).to_le_bytes().to_vec(),
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
        pages[p * 8192 + at] = rng.next() as u8;
    }
}

/// The rows of `pages` by the CPU converter, leaving out the pages in
/// `skip` (indexes into `pages`), and the pages it refuses.
pub fn cpu_rows(
    data: &[u8],
    pages: &[u32],
    layout: &TupleLayout,
    skip: &[u32],
) -> (CopyChunk, Vec<u32>) {
    let mut want = CopyChunk::default();
    let mut refused = Vec::new();
    for (i, &p) in pages.iter().enumerate() {
        let page = &data[p as usize * 8192..(p as usize + 1) * 8192];
        let mut one = CopyChunk::default();
        if transcode_page(page, p, layout, &mut one).is_err() {
            refused.push(i as u32);
        }
        if skip.contains(&(i as u32)) {
            continue;
        }
        for (s, e) in one.row_starts.iter().zip(&one.row_ends) {
            let at = want.data.len() as u32;
            want.data
                .extend_from_slice(&one.data[*s as usize..*e as usize]);
            want.row_starts.push(at);
            want.row_ends.push(at + (e - s));
        }
    }
    (want, refused)
}

/// Checks the page kernels' rows `got` and flagged pages against the CPU
/// converter: every page it refuses is flagged, and the rows of the other
/// pages are byte for byte its rows. Returns the pages it refuses.
pub fn check_against_cpu(
    data: &[u8],
    pages: &[u32],
    layout: &TupleLayout,
    got: &CopyChunk,
    flagged: &[u32],
) -> Vec<u32> {
    let (want, refused) = cpu_rows(data, pages, layout, flagged);
    for r in &refused {
        assert!(
            flagged.contains(r),
            "page {}: the CPU converter refuses it, the kernels did not flag it",
            pages[*r as usize]
        );
    }
    assert_eq!(got.num_rows(), want.num_rows(), "row counts");
    if flagged.len() < pages.len() {
        assert!(want.num_rows() > 0, "pages without rows prove nothing");
    }
    for r in 0..want.num_rows() {
        let g = &got.data[got.row_starts[r] as usize..got.row_ends[r] as usize];
        let w = &want.data[want.row_starts[r] as usize..want.row_ends[r] as usize];
        assert_eq!(g, w, "row {r} differs");
    }
    eprintln!(
        "{} pages: {} rows compared, {} flagged, {} refused by the CPU converter",
        pages.len(),
        want.num_rows(),
        flagged.len(),
        refused.len()
    );
    refused
}

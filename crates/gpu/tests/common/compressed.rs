//! Heap pages of values compressed inline (pglz and LZ4), shaped like the
//! events table's compressed columns, for the page kernels' tests on the
//! CPU twin and on the GPU (not every binary that includes it uses it).
#![allow(dead_code)]

use gpupg_format::heap::build::{
    heap_fill_tuple, numeric_to_disk, toast_pointer, varlena_4b, varlena_lz4, varlena_pglz,
    FillAttr, PageBuilder,
};
use gpupg_format::heap::sample::Rng;
use gpupg_format::heap::varlena::{self, Varlena};
use gpupg_format::heap::{Align, AttributeDesc, TupleLayout};
use gpupg_format::PgType;

/// The table of the compressed-value tests, shaped like the events
/// table's compressed columns: id int4, note text, summary text, amount
/// numeric, kind text.
pub fn compressed_table() -> TupleLayout {
    table().0
}

fn table() -> (TupleLayout, Vec<FillAttr>) {
    let text = || AttributeDesc::column(PgType::Text, -1, Align::Int, false);
    let attrs = vec![
        AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
        text(),
        text(),
        AttributeDesc::column(PgType::Numeric(None), -1, Align::Int, false),
        text(),
    ];
    let fill = attrs
        .iter()
        .map(|a| FillAttr::new(a.attlen, a.align))
        .collect();
    let layout = TupleLayout::all_columns(attrs, Default::default()).expect("a valid layout");
    (layout, fill)
}

/// `n` bytes of words (compressible text, with multi-byte characters).
fn words(rng: &mut Rng, n: usize) -> Vec<u8> {
    const WORDS: [&str; 9] = [
        "status ",
        "ok; ",
        "click ",
        "purchase ",
        "Zürich ",
        "東京 ",
        "user_",
        "42 ",
        "\n",
    ];
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(WORDS[rng.below(9) as usize].as_bytes());
        if rng.chance(30) {
            v.extend_from_slice(format!("{:x}", rng.next_u64()).as_bytes());
        }
    }
    v
}

/// `n` pages of the compressed table: a fifth of the rows with a note of
/// 0.3-3 kB pglz-compressed inline, a tenth with a summary LZ4-compressed
/// inline (each page's first row has both), the rest short or 4-byte
/// plain values. With `special`, page p with p % 4 == 2 also holds a TOAST
/// pointer (its second row's note), p % 4 == 3 a compressed numeric (its
/// second row's amount), a form the kernels leave to the CPU.
pub fn compressed_pages(seed: u64, n: usize, special: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let (_, fill) = table();
    let mut out = Vec::with_capacity(n * 8192);
    let mut id = 0i32;
    for p in 0..n {
        let mut b = PageBuilder::new(8192, p as u32);
        for row in 0.. {
            id += 1;
            let note = if special && row == 1 && p % 4 == 2 {
                Some(toast_pointer(5000, 4000, 1234, 5678))
            } else if row == 0 || rng.chance(20) {
                let n = 300 + rng.below(2700) as usize;
                Some(varlena_pglz(&words(&mut rng, n)))
            } else if rng.chance(50) {
                let n = rng.below(200) as usize;
                Some(varlena_4b(&words(&mut rng, n)))
            } else {
                None
            };
            let summary = if row == 0 || rng.chance(10) {
                let n = 200 + rng.below(2000) as usize;
                varlena_lz4(&words(&mut rng, n))
            } else {
                varlena_4b(format!("status {}", rng.below(7)).as_bytes())
            };
            let send = [0, 2, 0, 1, 0, 0, 0, 4, 0x04, 0xd2, 0x16, 0x2e];
            let mut amount = numeric_to_disk(&send).expect("a numeric");
            if special && row == 1 && p % 4 == 3 {
                let Ok(Varlena::Plain(payload)) = varlena::parse(&amount) else {
                    panic!("a plain numeric")
                };
                amount = varlena_pglz(payload);
            }
            let kind = varlena_4b(format!("event.{}", rng.below(5)).as_bytes());
            let values = [
                Some(id.to_le_bytes().to_vec()),
                note,
                Some(summary),
                Some(amount),
                Some(kind),
            ];
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            if b.add_tuple(&heap_fill_tuple(&fill, &refs)).is_none() {
                break;
            }
        }
        out.extend_from_slice(&b.finish());
    }
    out
}

//! The CPU decoder's direct page path (`CpuDecoder::decode_pages`) against
//! the reference: the heap converter's binary COPY rows
//! (`transcode_page`) decoded by the same decoder. On the sample table's
//! pages (every form of value, dead and redirect line pointers, tuples
//! older than the last columns, missing values), on pages with values only
//! the converter reads, and on randomly damaged pages.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::RecordBatch;
use gpupg_decode::{CpuDecoder, DecodeError, Decoder, OutputSchema, TypeOptions};
use gpupg_format::heap::sample::{self, layouts, mutate, output_columns, pages};
use gpupg_format::heap::TupleLayout;
use gpupg_format::CopyChunk;

const BS: usize = 8192;

fn schema(layout: &TupleLayout) -> Arc<OutputSchema> {
    Arc::new(OutputSchema::new(&output_columns(layout), &TypeOptions::default()).expect("schema"))
}

/// The converter's rows of `pages` except `skip` (indexes into `pages`), and
/// the pages it refuses.
fn converter_rows(
    data: &[u8],
    pages: &[u32],
    layout: &TupleLayout,
    skip: &BTreeSet<u32>,
) -> (CopyChunk, BTreeSet<u32>) {
    let skip: Vec<u32> = skip.iter().copied().collect();
    let (rows, refused) = sample::converter_rows(data, pages, layout, &skip);
    (rows, refused.into_iter().collect())
}

/// Decodes `pages` both ways and compares; returns the flagged pages, or
/// the direct path's error (after checking the reference fails too).
fn compare(
    data: &[u8],
    pages: &[u32],
    layout: &TupleLayout,
    what: &str,
) -> Result<BTreeSet<u32>, DecodeError> {
    let schema = schema(layout);
    let mut direct = CpuDecoder::new(schema.clone());
    let mut reference = CpuDecoder::new(schema);
    let blocks = pages.to_vec();
    match direct.decode_pages(data, pages, &blocks, layout) {
        Ok(got) => {
            let flagged: BTreeSet<u32> = got.flagged.iter().copied().collect();
            let (rows, refused) = converter_rows(data, pages, layout, &flagged);
            assert!(
                refused.is_subset(&flagged),
                "{what}: pages the converter refuses must be flagged: refused {refused:?}, flagged {flagged:?}"
            );
            let want = reference.decode(&rows).unwrap_or_else(|e| {
                panic!("{what}: the reference fails ({e}) where the direct path did not")
            });
            match got.batch {
                Some(b) => assert_eq!(b, want, "{what}: columns differ"),
                None => assert_eq!(want.num_rows(), 0, "{what}: no batch but rows expected"),
            }
            Ok(flagged)
        }
        Err(e) => {
            // The direct path reads a subset of the pages the converter
            // converts, with the same values: their rows must fail too.
            let (_, refused) = converter_rows(data, pages, layout, &BTreeSet::new());
            let (rows, _) = converter_rows(data, pages, layout, &refused);
            assert!(
                reference.decode(&rows).is_err(),
                "{what}: the direct path fails ({e}) but the converter's rows decode"
            );
            Err(e)
        }
    }
}

#[test]
fn sample_pages_equal_the_converter_rows() {
    for (k, layout) in layouts().iter().enumerate() {
        let n = 200u32;
        let data = pages(500 + k as u64, n as usize, 7);
        let all: Vec<u32> = (0..n).collect();
        let flagged = compare(&data, &all, layout, &format!("layout {k}")).expect("decodes");
        // Only pages holding compressed values, TOAST pointers (these pages
        // have no TOAST relation) or unknown enum values may be left to the
        // converter: compressed strings are decompressed by the direct path,
        // so a page whose only special values are those is decoded there.
        let special: BTreeSet<u32> = (0..n).filter(|p| p % 7 == 6).collect();
        assert!(
            flagged.is_subset(&special),
            "layout {k}: flagged pages {flagged:?}"
        );

        // A subset in another order, across blocks of pages.
        let some: Vec<u32> = (0..n).rev().step_by(3).collect();
        compare(&data, &some, layout, &format!("layout {k}, subset")).expect("decodes");
    }
}

#[test]
fn clean_pages_are_all_decoded_directly() {
    for (k, layout) in layouts().iter().enumerate() {
        let data = pages(77 + k as u64, 50, 0);
        let all: Vec<u32> = (0..50).collect();
        let flagged = compare(&data, &all, layout, &format!("layout {k}, clean")).expect("decodes");
        assert!(
            flagged.is_empty(),
            "layout {k}: clean pages flagged: {flagged:?}"
        );
    }
}

#[test]
fn damaged_pages_are_flagged_or_decoded_exactly() {
    let mut errors = 0;
    let mut flagged_total = 0;
    for (k, layout) in layouts().iter().enumerate() {
        for seed in 0..60u64 {
            let mut data = pages(900 + seed, 24, 0);
            mutate(&mut data, seed, 1 + seed as usize % 9);
            let all: Vec<u32> = (0..24).collect();
            match compare(&data, &all, layout, &format!("layout {k}, seed {seed}")) {
                Ok(f) => flagged_total += f.len(),
                Err(e) => {
                    // Errors name where the value is.
                    assert!(e.to_string().contains("of the row with ctid ("), "{e}");
                    errors += 1;
                }
            }
        }
    }
    eprintln!("damaged pages: {flagged_total} flagged, {errors} batches failed on a value");
    // The damage must have been noticed somewhere, or the test proves little.
    assert!(flagged_total + errors > 0, "no damaged page was noticed");
}

#[test]
fn empty_and_new_pages() {
    let layout = &layouts()[0];
    let schema = schema(layout);
    let mut d = CpuDecoder::new(schema);
    let data = vec![0u8; 3 * BS];
    let got = d
        .decode_pages(&data, &[0, 1, 2], &[0, 1, 2], layout)
        .expect("new pages");
    assert!(got.batch.is_none());
    assert!(got.flagged.is_empty());
    // Mismatched arguments are an error, not a panic.
    assert!(d.decode_pages(&data, &[0, 1], &[0], layout).is_err());
    // A page index past the buffer is flagged (the converter reports it).
    let got = d.decode_pages(&data, &[5], &[5], layout).expect("flags");
    assert_eq!(got.flagged, vec![0]);
}

#[test]
fn repeated_calls_give_the_same_batch() {
    // A decoder keeps its located-values scratch between calls.
    let ls = layouts();
    let data = pages(3, 30, 0);
    let all: Vec<u32> = (0..30).collect();
    let mut d = CpuDecoder::new(schema(&ls[0]));
    let a: RecordBatch = d
        .decode_pages(&data, &all, &all, &ls[0])
        .expect("first")
        .batch
        .expect("rows");
    let b = d
        .decode_pages(&data, &all, &all, &ls[0])
        .expect("second")
        .batch
        .expect("rows");
    assert_eq!(a, b);
}

//! The sample pages of `gpupg_format::heap::sample`, and checks of a page
//! converter's rows against the CPU converter's.

use gpupg_format::heap::TupleLayout;
use gpupg_format::CopyChunk;

pub use gpupg_format::heap::sample::*;

/// The rows of `pages` by the CPU converter, leaving out the pages in
/// `skip` (indexes into `pages`), and the pages it refuses.
pub fn cpu_rows(
    data: &[u8],
    pages: &[u32],
    layout: &TupleLayout,
    skip: &[u32],
) -> (CopyChunk, Vec<u32>) {
    converter_rows(data, pages, layout, skip)
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

//! The sample table's heap pages, overwritten with arbitrary bytes →
//! `CpuDecoder::decode_pages`. Any panic is a bug; errors and flagged pages
//! are fine. The harness lives in `gpupg_decode::fuzz` so a plain test runs
//! it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gpupg_decode::fuzz::decode_pages_arbitrary(data);
});

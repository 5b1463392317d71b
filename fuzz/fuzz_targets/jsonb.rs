//! Arbitrary bytes as a jsonb value's on-disk form → the text `jsonb_out`
//! would print. Any panic is a bug; errors are fine. The same bytes, and
//! damaged valid values, are fed by a proptest in `cargo test`
//! (`gpupg-format`'s `heap::jsonb` tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    if gpupg_format::heap::jsonb::jsonb_to_text(data, &mut out, &mut scratch).is_err() {
        assert!(out.is_empty(), "an error leaves the output as it was");
    }
});

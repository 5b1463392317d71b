//! Arbitrary bytes → a schema, type options and a chunk with arbitrary row
//! boundaries → decode. Any panic is a bug; errors are fine. The harness
//! lives in `gpupg_decode::fuzz` so a plain test runs it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gpupg_decode::fuzz::decode_arbitrary(data);
});

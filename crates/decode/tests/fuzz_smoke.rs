//! Runs the fuzz harness on a few thousand random and mutated inputs, so CI
//! exercises it without cargo-fuzz.

use gpupg_decode::fuzz::decode_arbitrary;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs per test; `GPUPG_FUZZ_ITERS` raises it for a longer local run.
fn iterations(default: usize) -> usize {
    std::env::var("GPUPG_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut decoded = 0;
    for _ in 0..iterations(4000) {
        let len = rng.random_range(0..400);
        let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        decoded += usize::from(decode_arbitrary(&input));
    }
    // The structured mode builds well-framed rows, so some inputs decode:
    // the harness reaches the value decoders, not just the framing checks.
    assert!(decoded > 100, "only {decoded} inputs decoded");
}

#[test]
fn mutated_valid_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    // Start from inputs that decode, then flip, insert and delete bytes.
    let mut seeds = Vec::new();
    while seeds.len() < 50 {
        let input: Vec<u8> = (0..rng.random_range(8..300))
            .map(|_| rng.random())
            .collect();
        if decode_arbitrary(&input) {
            seeds.push(input);
        }
    }
    for i in 0..iterations(3000) {
        let mut m = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..m.len());
            match rng.random_range(0..3) {
                0 => m[at] = rng.random(),
                1 => m.insert(at, rng.random()),
                _ => {
                    m.remove(at);
                }
            }
            if m.is_empty() {
                m.push(0);
            }
        }
        decode_arbitrary(&m);
    }
}

#[test]
fn damaged_heap_pages_never_panic() {
    use gpupg_decode::fuzz::decode_pages_arbitrary;
    let mut rng = StdRng::seed_from_u64(0xbeef);
    let mut decoded = 0;
    for _ in 0..iterations(300) {
        let len = rng.random_range(0..200);
        let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        decoded += usize::from(decode_pages_arbitrary(&input));
    }
    // Most inputs leave pages intact enough to decode rows.
    assert!(decoded > 30, "only {decoded} inputs decoded rows");
}

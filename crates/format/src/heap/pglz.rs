//! pglz, PostgreSQL's built-in LZ compression (`common/pg_lzcompress.c`), as
//! used for values compressed inline in heap tuples.
//!
//! The compressed stream is a sequence of groups: one control byte, then up
//! to eight items, one per control bit from the lowest. A clear bit is a
//! literal byte; a set bit is a 2- or 3-byte back reference: the first byte
//! holds the length minus 3 (low nibble) and the top 4 bits of the offset,
//! the second the low 8 bits of the offset; a length nibble of 15 (length
//! 18) is followed by a byte added to the length (18..=273). Offsets are
//! 1..=4095 bytes back into the output; the copy may overlap itself.
//!
//! Decompression follows `pglz_decompress` with `check_complete`, as TOAST
//! uses it: the output must be exactly `rawsize` bytes and the input must be
//! consumed exactly; anything else is [`PglzError`].

use thiserror::Error;

/// Longest match a tag can describe.
const MAX_MATCH: usize = 273;
/// Farthest back a tag can point.
const MAX_OFFSET: usize = 4095;

/// Corrupt pglz data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PglzError {
    /// A back reference's tag runs past the end of the input.
    #[error("pglz back reference at input byte {at} is truncated")]
    TruncatedTag {
        /// Where the tag starts in the input.
        at: usize,
    },
    /// A back reference points before the start of the output.
    #[error(
        "pglz back reference at input byte {at} has offset {offset} with {written} bytes written"
    )]
    BadOffset {
        /// Where the tag starts in the input.
        at: usize,
        /// How far back it points.
        offset: usize,
        /// Bytes of output so far.
        written: usize,
    },
    /// The output's size differs from the raw size in the varlena header.
    #[error("pglz data decompresses to {produced} bytes, the header says {expected}")]
    WrongSize {
        /// Bytes the input produced.
        produced: usize,
        /// The raw size the varlena header gives.
        expected: usize,
    },
    /// Input is left when the output has its full size.
    #[error("pglz data has {0} bytes left over after the output was complete")]
    TrailingInput(usize),
    /// A raw size that no pglz stream of this length can produce.
    #[error("pglz raw size {rawsize} is impossible for {compressed} compressed bytes")]
    ImplausibleSize {
        /// The raw size the varlena header gives.
        rawsize: usize,
        /// Bytes of compressed input.
        compressed: usize,
    },
}

/// The largest output `compressed` bytes of pglz can possibly produce: a
/// control byte and eight 3-byte tags (25 bytes) make at most 8 × 273 bytes.
pub fn max_raw_size(compressed: usize) -> usize {
    compressed.saturating_mul(8 * MAX_MATCH).div_ceil(25) + 8 * MAX_MATCH
}

/// Decompresses `src` into `dest`, whose length is the expected raw size;
/// all of `dest` must be produced and all of `src` consumed.
pub fn decompress_into(src: &[u8], dest: &mut [u8]) -> Result<(), PglzError> {
    let mut sp = 0usize;
    let mut dp = 0usize;
    let send = src.len();
    let dend = dest.len();
    while sp < send && dp < dend {
        let mut ctrl = src[sp];
        sp += 1;
        let mut bit = 0;
        while bit < 8 && sp < send && dp < dend {
            if ctrl & 1 != 0 {
                let at = sp;
                if sp + 1 >= send {
                    return Err(PglzError::TruncatedTag { at });
                }
                let mut len = usize::from(src[sp] & 0x0f) + 3;
                let off = (usize::from(src[sp] & 0xf0) << 4) | usize::from(src[sp + 1]);
                sp += 2;
                if len == 18 {
                    let extra = *src.get(sp).ok_or(PglzError::TruncatedTag { at })?;
                    len += usize::from(extra);
                    sp += 1;
                }
                if off == 0 || off > dp {
                    return Err(PglzError::BadOffset {
                        at,
                        offset: off,
                        written: dp,
                    });
                }
                let len = len.min(dend - dp);
                if off >= len {
                    dest.copy_within(dp - off..dp - off + len, dp);
                } else {
                    // Overlapping: each byte may be one just written.
                    for i in dp..dp + len {
                        dest[i] = dest[i - off];
                    }
                }
                dp += len;
            } else {
                dest[dp] = src[sp];
                dp += 1;
                sp += 1;
            }
            ctrl >>= 1;
            bit += 1;
        }
    }
    if dp != dend {
        return Err(PglzError::WrongSize {
            produced: dp,
            expected: dend,
        });
    }
    if sp != send {
        return Err(PglzError::TrailingInput(send - sp));
    }
    Ok(())
}

/// Decompresses `src`, which must decompress to exactly `rawsize` bytes,
/// appending the output to `out`. A `rawsize` that `src` could never
/// produce is refused before anything is allocated. On error `out` keeps
/// its original length.
pub fn decompress_append(src: &[u8], rawsize: usize, out: &mut Vec<u8>) -> Result<(), PglzError> {
    if rawsize > max_raw_size(src.len()) {
        return Err(PglzError::ImplausibleSize {
            rawsize,
            compressed: src.len(),
        });
    }
    let start = out.len();
    out.resize(start + rawsize, 0);
    let r = decompress_into(src, &mut out[start..]);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Compresses `src` into the pglz format (greedy, hash of 3-byte prefixes).
///
/// A simple encoder for tests and builders: its output decompresses with
/// [`decompress_into`] (and with PostgreSQL's `pglz_decompress`), but it is
/// not byte-identical to `pglz_compress`, and it never gives up on
/// incompressible input.
pub fn compress(src: &[u8]) -> Vec<u8> {
    const HASH_BITS: u32 = 12;
    let mut out = Vec::with_capacity(src.len() + src.len() / 8 + 2);
    let mut heads: Vec<Option<usize>> = vec![None; 1 << HASH_BITS];
    let hash = |p: usize| -> usize {
        let v = u32::from(src[p]) | u32::from(src[p + 1]) << 8 | u32::from(src[p + 2]) << 16;
        (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
    };
    let mut pos = 0usize;
    let mut ctrl_at = 0usize;
    let mut bit = 8;
    while pos < src.len() {
        if bit == 8 {
            ctrl_at = out.len();
            out.push(0);
            bit = 0;
        }
        let mut best = (0usize, 0usize);
        if pos + 3 <= src.len() {
            let h = hash(pos);
            if let Some(cand) = heads[h] {
                let off = pos - cand;
                if off > 0 && off <= MAX_OFFSET {
                    let limit = (src.len() - pos).min(MAX_MATCH);
                    let mut l = 0;
                    while l < limit && src[cand + l] == src[pos + l] {
                        l += 1;
                    }
                    if l >= 3 {
                        best = (l, off);
                    }
                }
            }
            heads[h] = Some(pos);
        }
        let (len, off) = best;
        if len >= 3 {
            out[ctrl_at] |= 1 << bit;
            if len < 18 {
                out.push((((off >> 4) & 0xf0) | (len - 3)) as u8);
                out.push((off & 0xff) as u8);
            } else {
                out.push((((off >> 4) & 0xf0) | 0x0f) as u8);
                out.push((off & 0xff) as u8);
                out.push((len - 18) as u8);
            }
            // Index the positions the match covers (cheaply: a few).
            for p in pos + 1..(pos + len).min(src.len().saturating_sub(2)) {
                heads[hash(p)] = Some(p);
            }
            pos += len;
        } else {
            out.push(src[pos]);
            pos += 1;
        }
        bit += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) {
        let c = compress(data);
        let mut out = Vec::new();
        decompress_append(&c, data.len(), &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn known_vectors() {
        // "abcabcabcabc": 3 literals, then a match of 9 at offset 3.
        let c = [0b0000_1000, b'a', b'b', b'c', 0x06, 0x03];
        let mut out = Vec::new();
        decompress_append(&c, 12, &mut out).unwrap();
        assert_eq!(out, b"abcabcabcabc");
        // An extended length: 1 literal then 18 + 100 copies of it.
        let c = [0b0000_0010, b'x', 0x0f, 0x01, 100];
        let mut out = Vec::new();
        decompress_append(&c, 119, &mut out).unwrap();
        assert_eq!(out, vec![b'x'; 119]);
        // A match longer than what is left is cut at rawsize
        // (pglz_decompress's Min(len, destend - dp)); as the tag is the last
        // item the input is still consumed exactly.
        let mut dest = vec![0; 60];
        assert_eq!(decompress_into(&c, &mut dest), Ok(()));
        assert_eq!(dest, vec![b'x'; 60]);
    }

    #[test]
    fn corrupt_inputs() {
        let mut out = vec![7u8];
        // Offset 0.
        assert!(matches!(
            decompress_append(&[0x01, 0x00, 0x00], 3, &mut out),
            Err(PglzError::BadOffset { .. })
        ));
        assert_eq!(out, vec![7], "output restored on error");
        // Offset before the start.
        assert!(matches!(
            decompress_append(&[0x02, b'a', 0x00, 0x02], 4, &mut out),
            Err(PglzError::BadOffset { .. })
        ));
        // Truncated tag.
        assert!(matches!(
            decompress_append(&[0x02, b'a', 0x00], 4, &mut out),
            Err(PglzError::TruncatedTag { .. })
        ));
        assert!(matches!(
            decompress_append(&[0x02, b'a', 0x0f, 0x01], 40, &mut out),
            Err(PglzError::TruncatedTag { .. })
        ));
        // Short output.
        assert!(matches!(
            decompress_append(&[0x00, b'a', b'b'], 3, &mut out),
            Err(PglzError::WrongSize { .. })
        ));
        // Left-over input.
        assert!(matches!(
            decompress_append(&[0x00, b'a', b'b'], 1, &mut out),
            Err(PglzError::TrailingInput(1))
        ));
        // Impossible size: no allocation of a gigabyte.
        assert!(matches!(
            decompress_append(&[0x00, b'a'], 1 << 30, &mut out),
            Err(PglzError::ImplausibleSize { .. })
        ));
    }

    #[test]
    fn compressor_round_trips() {
        round_trip(b"");
        round_trip(b"a");
        round_trip(&b"abc".repeat(1000));
        round_trip(&vec![0u8; 100_000]);
        let text: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        round_trip(&text);
        assert!(compress(&b"abc".repeat(1000)).len() < 100);
        // Maximal ratio stays within max_raw_size.
        let zeros = vec![0u8; 1 << 20];
        let c = compress(&zeros);
        assert!(zeros.len() <= max_raw_size(c.len()));
    }

    proptest::proptest! {
        #[test]
        fn round_trip_random(data in proptest::collection::vec(0u8..4, 0..3000)) {
            round_trip(&data);
        }

        #[test]
        fn random_input_never_panics(src in proptest::collection::vec(proptest::num::u8::ANY, 0..200), raw in 0usize..5000) {
            let mut out = Vec::new();
            let _ = decompress_append(&src, raw, &mut out);
        }
    }
}

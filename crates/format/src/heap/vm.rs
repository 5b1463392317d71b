//! The visibility map fork (`_vm` file; `access/heap/visibilitymap.c`).
//!
//! Each VM page is a normal page header (24 bytes, MAXALIGNed) followed by
//! a bitmap with two bits per heap block: bit 0 all-visible, bit 1
//! all-frozen; four heap blocks per byte, lowest bits first. With 8 kB
//! blocks one VM page covers (8192 − 24) × 4 = 32672 heap blocks. Heap
//! blocks past the end of the file (or in a new, all-zero VM page) have
//! both bits clear.

use std::ops::Range;

use super::page::{check_block_size, maxalign, PageError, PAGE_HEADER_SIZE};

/// `VISIBILITYMAP_ALL_VISIBLE`.
pub const VISIBILITYMAP_ALL_VISIBLE: u8 = 0x01;
/// `VISIBILITYMAP_ALL_FROZEN`.
pub const VISIBILITYMAP_ALL_FROZEN: u8 = 0x02;

/// The two bits of one heap block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmBits {
    /// Every tuple on the heap page is visible to every transaction.
    pub all_visible: bool,
    /// Every tuple on the heap page is frozen.
    pub all_frozen: bool,
}

/// Where one heap block's bits are: VM block, byte in its map, bit shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmLocation {
    /// Block of the visibility map fork.
    pub vm_block: u32,
    /// Byte within that block's map (after the page header).
    pub map_byte: usize,
    /// Bit shift of the block's two bits within that byte.
    pub shift: u32,
}

/// Bytes of bitmap per VM page (`MAPSIZE`).
pub fn map_size(block_size: usize) -> usize {
    block_size - maxalign(PAGE_HEADER_SIZE)
}

/// Heap blocks one VM page covers (`HEAPBLOCKS_PER_PAGE`).
pub fn heap_blocks_per_vm_page(block_size: usize) -> u32 {
    (map_size(block_size) * 4) as u32
}

/// Where the bits of `heap_block` are (`HEAPBLK_TO_MAPBLOCK`,
/// `HEAPBLK_TO_MAPBYTE`, `HEAPBLK_TO_OFFSET`).
pub fn locate(heap_block: u32, block_size: usize) -> VmLocation {
    let per_page = heap_blocks_per_vm_page(block_size);
    let in_page = heap_block % per_page;
    VmLocation {
        vm_block: heap_block / per_page,
        map_byte: (in_page / 4) as usize,
        shift: (in_page % 4) * 2,
    }
}

/// A visibility map, or a run of its pages, in memory.
#[derive(Debug, Clone, Copy)]
pub struct VisibilityMap<'a> {
    bytes: &'a [u8],
    block_size: usize,
    first_vm_block: u32,
}

impl<'a> VisibilityMap<'a> {
    /// The whole `_vm` fork (its bytes from the start of the file).
    pub fn new(bytes: &'a [u8], block_size: usize) -> Result<VisibilityMap<'a>, PageError> {
        Self::from_pages(bytes, 0, block_size)
    }

    /// Whole VM pages starting at VM block `first_vm_block` (for a caller
    /// that reads one page, or a range of them).
    pub fn from_pages(
        bytes: &'a [u8],
        first_vm_block: u32,
        block_size: usize,
    ) -> Result<VisibilityMap<'a>, PageError> {
        check_block_size(block_size)?;
        Ok(VisibilityMap {
            bytes,
            block_size,
            first_vm_block,
        })
    }

    /// The bits of `heap_block`; both clear when the map does not cover it.
    pub fn get(&self, heap_block: u32) -> VmBits {
        let loc = locate(heap_block, self.block_size);
        let Some(rel) = loc.vm_block.checked_sub(self.first_vm_block) else {
            return VmBits::default();
        };
        let at = (rel as usize)
            .saturating_mul(self.block_size)
            .saturating_add(maxalign(PAGE_HEADER_SIZE))
            .saturating_add(loc.map_byte);
        let byte = self.bytes.get(at).copied().unwrap_or(0) >> loc.shift;
        VmBits {
            all_visible: byte & VISIBILITYMAP_ALL_VISIBLE != 0,
            all_frozen: byte & VISIBILITYMAP_ALL_FROZEN != 0,
        }
    }

    /// The heap blocks in `range` whose all-visible bit is set, ascending.
    pub fn all_visible_blocks(&self, range: Range<u32>) -> Vec<u32> {
        range.filter(|&b| self.get(b).all_visible).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets the bits of `heap_block` in a VM file image, growing it.
    fn set(vm: &mut Vec<u8>, heap_block: u32, bits: u8, bs: usize) {
        let loc = locate(heap_block, bs);
        let need = (loc.vm_block as usize + 1) * bs;
        if vm.len() < need {
            vm.resize(need, 0);
        }
        vm[loc.vm_block as usize * bs + 24 + loc.map_byte] |= bits << loc.shift;
    }

    #[test]
    fn bit_math() {
        assert_eq!(heap_blocks_per_vm_page(8192), 32672);
        assert_eq!(
            locate(0, 8192),
            VmLocation {
                vm_block: 0,
                map_byte: 0,
                shift: 0
            }
        );
        assert_eq!(
            locate(7, 8192),
            VmLocation {
                vm_block: 0,
                map_byte: 1,
                shift: 6
            }
        );
        assert_eq!(
            locate(32672 + 5, 8192),
            VmLocation {
                vm_block: 1,
                map_byte: 1,
                shift: 2
            }
        );
    }

    #[test]
    fn reads_bits_and_past_the_end() {
        let bs = 8192;
        let mut vm = Vec::new();
        set(&mut vm, 0, 1, bs);
        set(&mut vm, 1, 3, bs);
        set(&mut vm, 6, 2, bs);
        set(&mut vm, 32672 + 2, 1, bs);
        let m = VisibilityMap::new(&vm, bs).unwrap();
        assert_eq!(
            m.get(0),
            VmBits {
                all_visible: true,
                all_frozen: false
            }
        );
        assert_eq!(
            m.get(1),
            VmBits {
                all_visible: true,
                all_frozen: true
            }
        );
        assert_eq!(m.get(2), VmBits::default());
        assert_eq!(
            m.get(6),
            VmBits {
                all_visible: false,
                all_frozen: true
            }
        );
        assert!(m.get(32674).all_visible);
        assert_eq!(m.get(u32::MAX), VmBits::default());
        assert_eq!(m.all_visible_blocks(0..40000), vec![0, 1, 32674]);
        // The second page alone.
        let second = VisibilityMap::from_pages(&vm[bs..], 1, bs).unwrap();
        assert!(second.get(32674).all_visible);
        assert!(!second.get(0).all_visible);
        // An empty fork: nothing is all-visible.
        assert_eq!(
            VisibilityMap::new(&[], bs).unwrap().get(0),
            VmBits::default()
        );
    }

    proptest::proptest! {
        #[test]
        fn set_then_get(blocks in proptest::collection::btree_set(0u32..100_000, 0..50), bs_pow in 10u32..=15) {
            let bs = 1usize << bs_pow;
            let mut vm = Vec::new();
            for &b in &blocks {
                set(&mut vm, b, 1, bs);
            }
            let m = VisibilityMap::new(&vm, bs).unwrap();
            let want: Vec<u32> = blocks.iter().copied().collect();
            proptest::prop_assert_eq!(m.all_visible_blocks(0..100_000), want);
        }
    }
}

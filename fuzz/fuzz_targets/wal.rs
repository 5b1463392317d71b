//! Arbitrary bytes as WAL: the first 8 bytes choose the start and end
//! offsets, the rest is the WAL from LSN 0 (1 KiB pages, 4 KiB segments).
//! Any panic is a bug; errors are fine. Damaged hand-built WAL is fed by a
//! proptest in `cargo test` (`gpupg-format`'s `wal` tests).
#![no_main]

use gpupg_format::wal::{for_each_block, WalLayout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, wal)) = data.split_first_chunk::<8>() else {
        return;
    };
    let start = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let end = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    let layout = WalLayout {
        page_size: 1024,
        segment_size: 4096,
        timeline: 1,
    };
    let source = |lsn: u64, page: &mut [u8]| -> Result<(), String> {
        let at = usize::try_from(lsn).map_err(|e| e.to_string())?;
        let src = wal
            .get(at..at.saturating_add(page.len()))
            .ok_or("no such page")?;
        page.copy_from_slice(src);
        Ok(())
    };
    let _ = for_each_block(layout, source, start, end, |_| {});
});

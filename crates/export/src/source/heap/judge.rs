//! Which heap pages are trusted: not dirty in shared buffers after the
//! fence, the visibility map and the page header say all-visible, the page
//! has not changed since the fence nor while it was read; and why a page is read through COPY instead, as the report counts
//! it.

use gpupg_format::heap::{FallbackReason, PageHeader, ToastError, VisibilityMap};

/// Trusted pages in a gap of fewer blocks than this between two untrusted
/// ones are read through COPY with them, in one range. One COPY statement
/// (parse, plan, a TID range scan's start-up, the binary header) costs
/// about as much as 50 pages sent through COPY; without this, an UPDATE of
/// 1% of lineorder's rows (about 16% of its pages left not all-visible,
/// scattered) made one statement per run of such pages: 22 s into device
/// memory, slower than COPY of the whole table.
pub(super) const MERGE_GAP: usize = 32;

/// Which trusted pages (`!untrusted[i]`) lie in a gap of fewer than `gap`
/// pages between two untrusted ones.
pub(super) fn bridge_gaps(untrusted: &[bool], gap: usize) -> Vec<bool> {
    let mut bridged = vec![false; untrusted.len()];
    let mut last_untrusted: Option<usize> = None;
    for (i, &u) in untrusted.iter().enumerate() {
        if !u {
            continue;
        }
        if let Some(prev) = last_untrusted {
            if i - prev - 1 < gap {
                bridged[prev + 1..i].iter_mut().for_each(|b| *b = true);
            }
        }
        last_untrusted = Some(i);
    }
    bridged
}

/// Why a page is read through COPY, as counted in the report.
pub(super) fn reason_name(r: &FallbackReason) -> String {
    match r {
        FallbackReason::ExternalToast => "values stored out of line (TOAST)".into(),
        FallbackReason::Toast(e) => match e {
            ToastError::Untrusted(_) => "TOAST chunks on untrusted pages".into(),
            ToastError::Missing(_) => "TOAST values not in the TOAST relation's files".into(),
            _ => "TOAST values not understood".into(),
        },
        FallbackReason::UnsupportedType(t) => format!("type {t} is not converted from the heap"),
        FallbackReason::UnknownEnumValue(_) => "enum value unknown to the catalog read".into(),
        FallbackReason::ChunkFull => "chunk full".into(),
        FallbackReason::Corrupt(c) => match c {
            gpupg_format::heap::Corruption::Checksum(_) => "checksum failure".into(),
            _ => "page not understood".into(),
        },
    }
}

/// Why a page listed dirty in shared buffers after the fence is read
/// through COPY, as counted in the report.
pub(super) const DIRTY: &str = "dirty in shared buffers";

/// Whether the page of block `block` whose header is `header` can be
/// trusted: `Ok(true)` trusted, `Ok(false)` a new page (no rows), else why
/// not. Judged from the header alone (the page may be in GPU memory): not
/// `dirty` in shared buffers after the fence (its file may lack changes
/// made before it; checked first, as a page new in the files may hold rows
/// in shared buffers), the visibility map and the header say all-visible,
/// the LSN is at most the fence and unchanged after the read, and the
/// header's bounds make sense. Whoever reads the page checks its line
/// pointers, tuples and checksum.
pub(super) fn trust(
    (fence, dirty): (u64, bool),
    vm: &VisibilityMap<'_>,
    block: u64,
    header: &[u8],
    lsn_after: u64,
    block_size: usize,
) -> Result<bool, String> {
    if dirty {
        return Err(DIRTY.into());
    }
    let Some(header) = PageHeader::read(header) else {
        return Err("page not understood".into());
    };
    if header.is_new() {
        // Never initialized: no rows (and no LSN to check).
        return Ok(false);
    }
    if !vm.get(block as u32).all_visible || !header.all_visible() {
        return Err("not all-visible".into());
    }
    if header.lsn > fence {
        return Err("changed after the snapshot".into());
    }
    if lsn_after != header.lsn {
        return Err("written while being read".into());
    }
    if header.check(block_size).is_err() {
        return Err("page not understood".into());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::bridge_gaps;

    #[test]
    fn short_gaps_between_untrusted_pages_are_bridged() {
        let u = |s: &str| s.chars().map(|c| c == 'x').collect::<Vec<bool>>();
        let b = |v: Vec<bool>| {
            v.iter()
                .map(|&x| if x { 'b' } else { '.' })
                .collect::<String>()
        };
        assert_eq!(b(bridge_gaps(&u("..x..x....x.."), 3)), "...bb........");
        assert_eq!(b(bridge_gaps(&u("..x..x....x.."), 4)), "...bb........");
        assert_eq!(b(bridge_gaps(&u("..x..x....x.."), 5)), "...bb.bbbb...");
        assert_eq!(b(bridge_gaps(&u("xx.x"), 32)), "..b.");
        assert_eq!(b(bridge_gaps(&u("...."), 32)), "....");
        assert_eq!(b(bridge_gaps(&u("x...."), 32)), ".....");
    }
}

//! How the heap path makes sure the files hold every change made before
//! its fence ([`HeapSync`]): a CHECKPOINT, or the list of the table's pages
//! changed since the latest checkpoint (from the WAL, [`wal_blocks`]) or
//! dirty in shared buffers (`pg_buffercache`), which are then read through
//! COPY. Why the lists are exact: docs/heap.md, "Dirty pages".

use std::path::Path;
use std::time::Instant;

use gpupg_source::{Connection, SourceError};

use super::proof::{directory_provable, Synced};
use super::server::{checkpoint, dirty_blocks, DirtyBlocks};
use super::wal::{wal_blocks, NoWalList};
use super::Unavailable;
use crate::HeapSync;
use gpupg_format::wal::lsn_text;

/// What was done so that the files hold every change made before the
/// fence, for the readers (the dirty pages) and the report.
pub(crate) struct FilesSync {
    pub(super) synced: Synced,
    /// Per relation given to [`sync_files`] (the plan's, in its order, then
    /// any other, such as a TOAST relation), its pages dirty after the
    /// fence (empty after a CHECKPOINT).
    pub(super) dirty: Vec<DirtyBlocks>,
    /// Seconds the CHECKPOINT took (0 without one).
    pub checkpoint_seconds: f64,
    /// Why `auto` ran a CHECKPOINT: the dirty pages could not be listed,
    /// or too many were dirty.
    pub(super) why_checkpoint: Option<String>,
    /// When the list came from the WAL: the checkpoint's REDO pointer it
    /// starts at and the bytes of WAL read.
    pub(super) wal: Option<(u64, u64)>,
    /// Why the WAL gave no list (`auto`, `wal`).
    pub(super) why_not_wal: Option<String>,
}

impl FilesSync {
    /// Whether block `block` of relation `rel` (its index in the OIDs given
    /// to [`sync_files`]) was dirty in shared buffers; false after a
    /// CHECKPOINT, which wrote them all.
    pub(super) fn dirty(&self, rel: usize, block: u64) -> bool {
        self.dirty.get(rel).is_some_and(|d| d.contains(block))
    }

    /// Dirty pages listed, of the main forks and of the visibility maps.
    pub(super) fn dirty_pages(&self) -> (u64, u64) {
        self.dirty
            .iter()
            .fold((0, 0), |(h, v), d| (h + d.heap.len() as u64, v + d.vm))
    }

    /// One line for the report: "pages changed since the checkpoint at
    /// 4/45CF3730 (1.2 MB of WAL): 12 read through COPY (0 of the
    /// visibility map); no CHECKPOINT", "dirty pages from pg_buffercache:
    /// ..." or "CHECKPOINT 0.412 s (why)", then why not from the WAL where
    /// it was tried and gave no list.
    pub(crate) fn describe(&self) -> String {
        let mut line = self.describe_way();
        if let Some(why) = &self.why_not_wal {
            line.push_str(&format!(" (not from the WAL: {why})"));
        }
        line
    }

    fn describe_way(&self) -> String {
        if let Some(why) = &self.why_checkpoint {
            return format!("CHECKPOINT {:.3} s ({why})", self.checkpoint_seconds);
        }
        match (self.synced, self.wal) {
            (Synced::DirtyListed, Some((redo, bytes))) => {
                let (heap, vm) = self.dirty_pages();
                format!(
                    "pages changed since the checkpoint at {} ({:.1} MB of WAL): {heap} read \
                     through COPY ({vm} of the visibility map); no CHECKPOINT",
                    lsn_text(redo),
                    bytes as f64 / 1e6
                )
            }
            (Synced::DirtyListed, None) => {
                let (heap, vm) = self.dirty_pages();
                format!(
                    "dirty pages from pg_buffercache: {heap} read through COPY \
                     ({vm} of the visibility map); no CHECKPOINT"
                )
            }
            (Synced::Checkpoint, _) => {
                format!("CHECKPOINT {:.3} s, as asked", self.checkpoint_seconds)
            }
        }
    }
}

/// Above this share of the tables' pages dirty in shared buffers, `auto`
/// runs a CHECKPOINT rather than read them through COPY: from 15% of the
/// pages going to COPY the heap path is no faster than COPY itself
/// (measured on the H100 host, `estimate.rs`), and right after a table is
/// loaded every page is dirty (events 20k rows here: 0 of 1,764 pages from
/// the files with the list, all of them after a CHECKPOINT). Below it, the
/// busy primary's I/O spike is avoided; `--heap-sync buffercache` keeps the
/// list whatever the share.
const CHECKPOINT_ABOVE_DIRTY_SHARE: f64 = 0.10;

/// Makes the files of relations `oids` (the plan's relations in its order,
/// then any other whose pages are read from the files, such as a TOAST
/// relation) hold every change made before the fence (taken just before),
/// as `mode` says, on `probe` (a connection outside the export's
/// transaction). `table_pages`: the size of all relations of `oids` (the
/// plan's and their TOAST relations), in blocks. `data_dir` holds the WAL read from, `fence` is
/// the fence.
pub(super) fn sync_files(
    probe: &mut Connection,
    mode: HeapSync,
    oids: &[u32],
    table_pages: u64,
    (data_dir, fence): (&Path, u64),
) -> Result<FilesSync, Unavailable> {
    let mut why_not_wal = None;
    if matches!(mode, HeapSync::Wal | HeapSync::Auto) {
        match list_from_wal(probe, mode, oids, data_dir, fence) {
            Ok(listed) => return too_dirty_then(probe, mode, listed, table_pages),
            Err(Unavailable::Error(e)) => return Err(Unavailable::Error(e)),
            Err(Unavailable::Reason(why)) => why_not_wal = Some(why),
        }
    }
    match sync_without_wal(probe, mode, oids, table_pages) {
        Ok(mut synced) => {
            synced.why_not_wal = why_not_wal;
            Ok(synced)
        }
        Err(Unavailable::Reason(why)) => Err(Unavailable::Reason(match why_not_wal {
            Some(wal) => format!("not from the WAL: {wal}; {why}"),
            None => why,
        })),
        Err(e) => Err(e),
    }
}

/// `--heap-sync wal` with no WAL list: the buffer cache's, as `buffercache`.
fn sync_without_wal(
    probe: &mut Connection,
    mode: HeapSync,
    oids: &[u32],
    table_pages: u64,
) -> Result<FilesSync, Unavailable> {
    let mode = if mode == HeapSync::Wal {
        HeapSync::BufferCache
    } else {
        mode
    };
    let listed = match mode {
        HeapSync::Checkpoint => Err(None),
        HeapSync::BufferCache | HeapSync::Auto | HeapSync::Wal => {
            list_dirty(probe, oids).map_err(Some)
        }
    };
    let why = match listed {
        Ok(dirty) => {
            let listed = FilesSync {
                synced: Synced::DirtyListed,
                dirty,
                checkpoint_seconds: 0.0,
                why_checkpoint: None,
                wal: None,
                why_not_wal: None,
            };
            return too_dirty_then(probe, mode, listed, table_pages);
        }
        Err(Some(Unavailable::Error(e))) => return Err(Unavailable::Error(e)),
        Err(Some(Unavailable::Reason(why))) if mode == HeapSync::BufferCache => {
            return Err(Unavailable::Reason(format!(
                "the pages dirty in shared buffers cannot be listed: {why}"
            )))
        }
        Err(Some(Unavailable::Reason(why))) => Some(format!("no dirty-page list: {why}")),
        Err(None) => None,
    };
    let t = Instant::now();
    checkpoint(probe).map_err(|e| match (e, &why) {
        (SourceError::HeapUnavailable { reason, .. }, Some(why)) => Unavailable::Reason(format!(
            "{reason}; and the pages dirty in shared buffers cannot be listed instead: {why}"
        )),
        (e, _) => e.into(),
    })?;
    Ok(FilesSync {
        synced: Synced::Checkpoint,
        dirty: Vec::new(),
        checkpoint_seconds: t.elapsed().as_secs_f64(),
        why_checkpoint: why,
        wal: None,
        why_not_wal: None,
    })
}

/// The list stands, unless `auto` finds it too long to read through COPY
/// and runs a CHECKPOINT instead.
fn too_dirty_then(
    probe: &mut Connection,
    mode: HeapSync,
    listed: FilesSync,
    table_pages: u64,
) -> Result<FilesSync, Unavailable> {
    match (mode, too_dirty(&listed, table_pages)) {
        (HeapSync::Auto, Some(why)) => checkpoint_instead(probe, listed, why),
        _ => Ok(listed),
    }
}

/// The pages of `oids` changed since the latest checkpoint, from the WAL,
/// when the files can be proven current without a checkpoint and the WAL
/// read (`auto`: when that costs less than the buffer scan).
fn list_from_wal(
    probe: &mut Connection,
    mode: HeapSync,
    oids: &[u32],
    data_dir: &Path,
    fence: u64,
) -> Result<FilesSync, Unavailable> {
    directory_provable(probe).map_err(|why| {
        Unavailable::Reason(format!(
            "without a CHECKPOINT the files must be proven the postmaster's own directory, and {why}"
        ))
    })?;
    match wal_blocks(probe, data_dir, oids, fence, mode == HeapSync::Auto) {
        Ok(list) => Ok(FilesSync {
            synced: Synced::DirtyListed,
            dirty: list.dirty,
            checkpoint_seconds: 0.0,
            why_checkpoint: None,
            wal: Some((list.redo, list.bytes)),
            why_not_wal: None,
        }),
        Err(NoWalList::Why(why)) => Err(Unavailable::Reason(why)),
        Err(NoWalList::Error(e)) => Err(e.into()),
    }
}

/// Why the listed dirty pages (of the tables and their TOAST relations)
/// are too many to read through COPY ([`CHECKPOINT_ABOVE_DIRTY_SHARE`] of
/// the tables' pages).
fn too_dirty(listed: &FilesSync, table_pages: u64) -> Option<String> {
    let dirty: u64 = listed.dirty.iter().map(|d| d.heap.len() as u64).sum();
    let share = dirty as f64 / table_pages.max(1) as f64;
    (share > CHECKPOINT_ABOVE_DIRTY_SHARE).then(|| {
        format!(
            "{dirty} of {table_pages} pages ({:.0}%) {}: \
             a CHECKPOINT costs less than reading them through COPY",
            100.0 * share,
            if listed.wal.is_some() {
                "changed since the checkpoint"
            } else {
                "dirty in shared buffers"
            }
        )
    })
}

/// A CHECKPOINT after the dirty pages were listed (the fence is older than
/// both, so either makes the files exact); where it is not allowed, the
/// list stands. The files keep the list's proof (`Synced::DirtyListed`:
/// current by pg_control's checkpoint, and the postmaster's own
/// directory), which holds all the more after a checkpoint, with nothing
/// left dirty from before the fence.
fn checkpoint_instead(
    probe: &mut Connection,
    listed: FilesSync,
    why: String,
) -> Result<FilesSync, Unavailable> {
    let t = Instant::now();
    match checkpoint(probe) {
        Ok(()) => Ok(FilesSync {
            synced: Synced::DirtyListed,
            dirty: Vec::new(),
            checkpoint_seconds: t.elapsed().as_secs_f64(),
            why_checkpoint: Some(why),
            wal: None,
            why_not_wal: listed.why_not_wal,
        }),
        Err(SourceError::HeapUnavailable { .. }) => Ok(listed),
        Err(e) => Err(e.into()),
    }
}

/// The dirty pages of `oids`, when they can be listed and the files then
/// proven current without a checkpoint.
fn list_dirty(probe: &mut Connection, oids: &[u32]) -> Result<Vec<DirtyBlocks>, Unavailable> {
    directory_provable(probe).map_err(|why| {
        Unavailable::Reason(format!(
            "without a CHECKPOINT the files must be proven the postmaster's own directory, and {why}"
        ))
    })?;
    Ok(dirty_blocks(probe, oids)?)
}

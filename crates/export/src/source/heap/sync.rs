//! How the heap path makes sure the files hold every change made before
//! its fence ([`HeapSync`]): a CHECKPOINT, or the list of the table's pages
//! dirty in shared buffers (`pg_buffercache`), which are then read through
//! COPY. Why the list is exact: docs/heap.md, "Dirty pages".

use std::time::Instant;

use gpupg_source::{Connection, SourceError};

use super::proof::{directory_provable, Synced};
use super::server::{checkpoint, dirty_blocks, DirtyBlocks};
use super::Unavailable;
use crate::HeapSync;

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
    /// Why a CHECKPOINT was run where `auto` would have done without.
    pub(super) why_checkpoint: Option<String>,
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

    /// One line for the report: "pg_buffercache: 12 dirty pages read
    /// through COPY; no CHECKPOINT" or "CHECKPOINT 0.412 s (why)".
    pub(crate) fn describe(&self) -> String {
        match self.synced {
            Synced::DirtyListed => {
                let (heap, vm) = self.dirty_pages();
                format!(
                    "dirty pages from pg_buffercache: {heap} read through COPY \
                     ({vm} of the visibility map); no CHECKPOINT"
                )
            }
            Synced::Checkpoint => match &self.why_checkpoint {
                Some(why) => format!(
                    "CHECKPOINT {:.3} s (no dirty-page list: {why})",
                    self.checkpoint_seconds
                ),
                None => format!("CHECKPOINT {:.3} s, as asked", self.checkpoint_seconds),
            },
        }
    }
}

/// Makes the files of relations `oids` (the plan's relations in its order,
/// then any other whose pages are read from the files, such as a TOAST
/// relation) hold every change made before the fence (taken just before),
/// as `mode` says, on `probe` (a connection outside the export's
/// transaction).
pub(super) fn sync_files(
    probe: &mut Connection,
    mode: HeapSync,
    oids: &[u32],
) -> Result<FilesSync, Unavailable> {
    let listed = match mode {
        HeapSync::Checkpoint => Err(None),
        HeapSync::BufferCache | HeapSync::Auto => list_dirty(probe, oids).map_err(Some),
    };
    let why = match listed {
        Ok(dirty) => {
            return Ok(FilesSync {
                synced: Synced::DirtyListed,
                dirty,
                checkpoint_seconds: 0.0,
                why_checkpoint: None,
            })
        }
        Err(Some(Unavailable::Error(e))) => return Err(Unavailable::Error(e)),
        Err(Some(Unavailable::Reason(why))) if mode == HeapSync::BufferCache => {
            return Err(Unavailable::Reason(format!(
                "the pages dirty in shared buffers cannot be listed: {why}"
            )))
        }
        Err(Some(Unavailable::Reason(why))) => Some(why),
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
    })
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

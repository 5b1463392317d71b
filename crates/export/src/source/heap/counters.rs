//! What the heap path did, counted by its threads, and how the report
//! shows it ([`HeapReport`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::HeapPlan;
use crate::carry::KeptPage;

/// What the heap readers did, summed over threads.
#[derive(Default)]
pub(crate) struct HeapCounters {
    pub(super) next_block: AtomicU64,
    pub(super) pages_direct: AtomicU64,
    pub(super) pages_fallback: AtomicU64,
    /// Pages converted by the GPU page kernels (part of pages_direct).
    pub(super) pages_gpu: AtomicU64,
    pub(crate) rows_direct: AtomicU64,
    /// Pages (and their rows) kept from the previous load.
    pub(super) pages_kept: AtomicU64,
    pub(super) rows_kept: AtomicU64,
    pub(crate) kept: Mutex<Vec<KeptPage>>,
    pub(super) read_nanos: AtomicU64,
    pub(super) convert_nanos: AtomicU64,
    pub(super) flush_nanos: AtomicU64,
    pub(super) reasons: Mutex<BTreeMap<String, u64>>,
}

/// The heap path in the report.
#[derive(Debug, Clone, Serialize)]
pub struct HeapReport {
    /// Pages decoded from the files.
    pub pages_direct: u64,
    /// Pages read through COPY instead, by reason.
    pub pages_fallback: u64,
    /// Of the direct pages, those converted to rows by the GPU page
    /// kernels (the rest on the CPU).
    pub pages_gpu: u64,
    /// Pages read through COPY, by reason.
    pub fallback_reasons: BTreeMap<String, u64>,
    /// Rows taken from the files (the rest came through COPY).
    pub rows_direct: u64,
    /// On a refresh: pages unchanged since the previous load, not read
    /// again (their rows are copied from it), and their rows.
    pub pages_kept: u64,
    /// Rows of the pages kept.
    pub rows_kept: u64,
    /// Blocks in the files after the checkpoint (or the dirty-page list).
    pub blocks: u64,
    /// Bytes of a block.
    pub block_size: usize,
    /// Whether the cluster has data checksums (verified on every page).
    pub checksums: bool,
    /// How the files were read.
    pub io: String,
    /// Seconds the CHECKPOINT took (0 when none was run).
    pub checkpoint_seconds: f64,
    /// How the files were made to hold every change made before the fence,
    /// and why: "pages changed since the checkpoint at 4/45CF3730 (1.2 MB
    /// of WAL): 12 read through COPY (0 of the visibility map); no
    /// CHECKPOINT", "dirty pages from pg_buffercache: 12 read through COPY
    /// (0 of the visibility map); no CHECKPOINT (not from the WAL: ...)" or
    /// "CHECKPOINT 0.412 s (...)".
    pub sync: String,
    /// Pages of the table listed dirty in shared buffers after the fence
    /// (read through COPY; 0 after a CHECKPOINT).
    pub pages_dirty: u64,
    /// Thread-seconds reading files, converting pages to COPY rows, and
    /// handing chunks to the decoders (waiting for a free buffer and a free
    /// decoder included: large when decoding or writing is the bottleneck).
    pub read_seconds: f64,
    /// See `read_seconds`.
    pub convert_seconds: f64,
    /// See `read_seconds`.
    pub handoff_seconds: f64,
    /// The WAL position no trusted page is newer than.
    pub fence_lsn: String,
    /// What proved the files the server's own and current, and what could
    /// not be proven ("proven: same cluster (...); current (...); ...").
    pub files_proof: String,
    /// Per TOAST relation: the pages trusted and chunks indexed, or why it
    /// was not read (its values then go through COPY).
    pub toast: Vec<String>,
}

impl HeapCounters {
    pub(super) fn add(&self, counter: &AtomicU64, d: std::time::Duration) {
        counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn count_fallback(&self, why: String) {
        self.pages_fallback.fetch_add(1, Ordering::Relaxed);
        *self
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(why)
            .or_insert(0) += 1;
    }

    /// The pages a refresh kept, handed over once the readers are done.
    pub(crate) fn take_kept(&self) -> Vec<KeptPage> {
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn report(&self, heap: &HeapPlan, readers: usize, device: usize) -> HeapReport {
        HeapReport {
            pages_direct: self.pages_direct.load(Ordering::Relaxed),
            pages_fallback: self.pages_fallback.load(Ordering::Relaxed),
            pages_gpu: self.pages_gpu.load(Ordering::Relaxed),
            fallback_reasons: self
                .reasons
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            rows_direct: self.rows_direct.load(Ordering::Relaxed),
            pages_kept: self.pages_kept.load(Ordering::Relaxed),
            rows_kept: self.rows_kept.load(Ordering::Relaxed),
            blocks: heap.blocks(),
            block_size: heap.rels.first().map_or(0, |r| r.rel.block_size),
            checksums: heap.rels.iter().any(|r| r.rel.checksums),
            io: heap.io_description(device, readers),
            checkpoint_seconds: heap.sync.checkpoint_seconds,
            sync: heap.sync.describe(),
            pages_dirty: heap.sync.dirty_pages().0,
            read_seconds: self.read_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            convert_seconds: self.convert_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            handoff_seconds: self.flush_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            fence_lsn: format!("{:X}/{:X}", heap.fence >> 32, heap.fence & 0xffff_ffff),
            files_proof: heap.proof.describe(),
            toast: heap.toast.clone(),
        }
    }
}

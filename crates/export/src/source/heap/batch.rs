//! A batch of trusted heap pages on its way to a decoder and back.

use gpupg_format::heap::page::{LpFlags, Page};
use gpupg_gpu::PagesIn;
use gpupg_source::BufferPool;

use super::io::DeviceChunk;
use crate::carry::PageRows;
use crate::ExportError;

/// Heap pages of one relation that the readers trust (all-visible, not
/// changed since the fence, header sound), read into a pool buffer or, by
/// cuFile, into device memory: the decoder converts them on the GPU (or
/// decodes them on the CPU) and hands the batch back with the pages it
/// flagged, which the source's fallback side converts with
/// `transcode_page` ([`super::fallback`]).
pub(crate) struct PageBatch {
    pub data: PageData,
    /// The trusted pages: their index in `data`, block number and LSN.
    pub pages: Vec<u32>,
    pub blocks: Vec<u32>,
    pub lsns: Vec<u64>,
    /// The rows of each page (its normal line pointers), counted by the
    /// reader when the pages are in host memory; empty when they are not.
    pub rows: Vec<u32>,
    /// The relation (index into the plan's relations).
    pub rel: usize,
    pub partition: u32,
    /// Bytes of `data` holding pages.
    pub(super) filled: usize,
}

/// Where a batch's pages are.
pub(crate) enum PageData {
    /// A (page-locked, with the GPU engine) pool buffer.
    Host(Vec<u8>),
    /// Device memory filled by cuFile, with the pages' headers.
    Device(DeviceChunk),
}

impl PageBatch {
    /// The pages, for the decoders.
    pub(crate) fn input(&self) -> PagesIn<'_> {
        match &self.data {
            PageData::Host(d) => PagesIn::Host(d),
            PageData::Device(c) => c.input(),
        }
    }

    /// Gives a host buffer back to the pool (a device buffer goes back to
    /// its own pool when dropped).
    pub(crate) fn recycle(self, pool: &BufferPool) {
        if let PageData::Host(d) = self.data {
            pool.give(d);
        }
    }

    /// Adds the trusted page at `index` of the buffer (block `block`, LSN
    /// `lsn`), counting its rows when it is in host memory.
    pub(super) fn push_page(&mut self, index: usize, block: u32, lsn: u64, block_size: usize) {
        self.pages.push(index as u32);
        self.blocks.push(block);
        self.lsns.push(lsn);
        if let PageData::Host(d) = &self.data {
            let at = index * block_size;
            let rows = d
                .get(at..at + block_size)
                .and_then(|p| Page::parse(p, block_size).ok())
                .map_or(0, |p| {
                    p.item_ids()
                        .filter(|i| i.flags == LpFlags::Normal && i.has_storage())
                        .count()
                });
            self.rows.push(rows as u32);
        }
    }

    /// The pages of the batch other than `flagged` (indexes into `pages`),
    /// with their rows, in page order; `None` when the rows were not
    /// counted (pages in device memory).
    pub(crate) fn pages_except(&self, flagged: &[u32]) -> Option<Vec<PageRows>> {
        if self.rows.len() != self.pages.len() {
            return None;
        }
        let mut skip = vec![false; self.pages.len()];
        for &f in flagged {
            if let Some(s) = skip.get_mut(f as usize) {
                *s = true;
            }
        }
        Some(
            (0..self.pages.len())
                .filter(|&k| !skip[k])
                .map(|k| PageRows {
                    block: self.blocks[k],
                    lsn: self.lsns[k],
                    rows: self.rows[k],
                })
                .collect(),
        )
    }

    /// Bytes the batch can hold.
    pub(super) fn capacity(&self) -> usize {
        match &self.data {
            PageData::Host(d) => d.len(),
            PageData::Device(c) => c.len(),
        }
    }

    /// The header of page `index` of the buffer.
    pub(super) fn header(&self, index: usize, block_size: usize) -> &[u8] {
        match &self.data {
            PageData::Host(d) => d.get(index * block_size..).unwrap_or(&[]),
            PageData::Device(c) => c.header(index),
        }
    }

    /// Page `index` of the buffer on the host (copied back from the GPU
    /// when it is there).
    pub(super) fn page(
        &self,
        index: usize,
        block_size: usize,
    ) -> Result<std::borrow::Cow<'_, [u8]>, ExportError> {
        let at = index * block_size;
        match &self.data {
            PageData::Host(d) => d
                .get(at..at + block_size)
                .map(std::borrow::Cow::Borrowed)
                .ok_or_else(|| ExportError::Internal("a page past its batch".into())),
            PageData::Device(c) => {
                let mut page = vec![0u8; block_size];
                c.copy_page(index, &mut page).map_err(|e| {
                    ExportError::Invalid(format!("copying a page back from the GPU: {e}"))
                })?;
                Ok(std::borrow::Cow::Owned(page))
            }
        }
    }
}

//! Heap pages into columns: the page kernels (kernels/heap.cu) write the
//! pages' tuples as binary COPY rows into an input slot on the device, and
//! the decode kernels take them from there exactly as they take uploaded
//! COPY rows. Pages the kernels leave to the CPU converter come back as
//! [`GpuPagesDecoded::flagged`].

use gpupg_format::heap::page::PAGE_HEADER_SIZE;

use super::*;

/// What a batch of heap pages became.
#[derive(Debug)]
pub struct GpuPagesDecoded<T> {
    /// The rows of the pages not flagged, in page and line pointer order;
    /// `None` when there are none.
    pub batch: Option<T>,
    /// Indexes into the `pages` given of the pages the kernels left to the
    /// CPU converter (a value stored otherwise than inline and plain, an
    /// enum value the layout does not know, anything inconsistent),
    /// ascending.
    pub flagged: Vec<u32>,
}

/// Where a batch of whole heap pages is, for the page kernels.
#[derive(Debug, Clone, Copy)]
pub enum PagesIn<'a> {
    /// In host memory; page-locked memory is copied to the device without
    /// staging.
    Host(&'a [u8]),
    /// Already in device memory of the decoder's device (read there by
    /// cuFile): `len` bytes at `ptr`, and each page's header copied back,
    /// [`PAGE_HEADER_SIZE`] bytes per page of the buffer in buffer order
    /// (the line pointer counts come from them).
    Device {
        /// Device address of the first page.
        ptr: u64,
        /// Bytes of pages at `ptr`.
        len: usize,
        /// Each page's header, in buffer order.
        headers: &'a [u8],
    },
}

impl PagesIn<'_> {
    /// Bytes of pages the input holds.
    fn len(&self) -> usize {
        match self {
            PagesIn::Host(data) => data.len(),
            PagesIn::Device { len, .. } => *len,
        }
    }
}

impl GpuDecoder {
    /// Decodes the heap pages `pages` (indexes of `layout.block_size()`
    /// pages in `input`, at blocks `blocks` of the relation) into
    /// device-resident columns. The input is read before this returns.
    /// With data checksums (`layout` says), the kernels verify each page's
    /// checksum against its block number and flag the pages that fail.
    pub fn decode_pages_to_device(
        &mut self,
        input: PagesIn<'_>,
        pages: &[u32],
        blocks: &[u32],
        layout: &PageLayout,
    ) -> Result<GpuPagesDecoded<DeviceBatch>, GpuError> {
        self.decode_pages_with(
            input,
            (pages, blocks),
            layout,
            AllocKind::Plain,
            |d, outcome, n, rows| d.device_batch(outcome, n, rows),
        )
    }

    /// As [`Self::decode_pages_to_device`], into a host `RecordBatch`.
    pub fn decode_pages(
        &mut self,
        input: PagesIn<'_>,
        pages: &[u32],
        blocks: &[u32],
        layout: &PageLayout,
    ) -> Result<GpuPagesDecoded<RecordBatch>, GpuError> {
        self.decode_pages_with(
            input,
            (pages, blocks),
            layout,
            AllocKind::Pool,
            |d, outcome, n, rows| match d.host_arrays(outcome, 0..n, rows)? {
                Some((arrays, flattened)) => {
                    let mut per_col: Vec<Vec<ArrayRef>> = vec![Vec::new(); d.plans.len()];
                    for (i, a) in arrays {
                        per_col[i].push(a);
                    }
                    d.record_batch(per_col, n, flattened)
                }
                None => {
                    let chunk = d.host_rows(rows)?;
                    d.cpu_full(chunk)
                }
            },
        )
    }

    /// Converts the pages, runs the decode kernels over their rows (outputs
    /// allocated as `kind`) and makes the batch with `finish`.
    fn decode_pages_with<T>(
        &mut self,
        input: PagesIn<'_>,
        (pages, blocks): (&[u32], &[u32]),
        layout: &PageLayout,
        kind: AllocKind,
        finish: impl FnOnce(&mut Self, Outcome, usize, &mut HostRows<'_>) -> Result<T, GpuError>,
    ) -> Result<GpuPagesDecoded<T>, GpuError> {
        self.ctx.bind()?;
        let (up, flagged) = self.convert_pages(input, pages, blocks, layout)?;
        let Some(up) = up else {
            return Ok(GpuPagesDecoded {
                batch: None,
                flagged,
            });
        };
        self.stats.chunks += 1;
        let n = up.rows.len();
        let outcome = self.run(&up, kind)?;
        let batch = finish(
            self,
            outcome,
            n,
            &mut HostRows::Device {
                up: &up,
                copy: None,
            },
        )?;
        Ok(GpuPagesDecoded {
            batch: Some(batch),
            flagged,
        })
    }

    /// The binary COPY rows the page kernels write for `pages`, copied
    /// back (what the decode kernels read; for tests against the CPU
    /// converter), and the flagged pages.
    pub fn convert_pages_to_host(
        &mut self,
        input: PagesIn<'_>,
        pages: &[u32],
        blocks: &[u32],
        layout: &PageLayout,
    ) -> Result<(CopyChunk, Vec<u32>), GpuError> {
        self.ctx.bind()?;
        let (up, flagged) = self.convert_pages(input, pages, blocks, layout)?;
        let chunk = match up {
            Some(up) => self.download_rows(&up)?,
            None => CopyChunk::default(),
        };
        Ok((chunk, flagged))
    }

    /// Runs the page kernels over `pages` into the next input slot.
    /// Returns the slot's rows (`None`: no rows) and the flagged pages.
    fn convert_pages(
        &mut self,
        input: PagesIn<'_>,
        pages: &[u32],
        blocks: &[u32],
        layout: &PageLayout,
    ) -> Result<(Option<Uploaded>, Vec<u32>), GpuError> {
        let npages = pages.len();
        if npages == 0 {
            return Ok((None, Vec::new()));
        }
        let (span, bases) = page_bases(input, pages, blocks, layout)?;
        let nslots = *bases.last().unwrap_or(&0) as usize;
        if nslots == 0 {
            // No line pointers at all: no rows, nothing to flag.
            self.stats.pages += npages as u64;
            return Ok((None, Vec::new()));
        }
        // Whatever earlier calls queued is done before buffers are reused.
        self.compute.sync()?;
        self.copy.sync()?;
        self.stats.page_convert_s += self.pending_page_seconds();
        self.stats.pages += npages as u64;

        let slot_i = self.next_slot;
        self.next_slot ^= 1;
        self.prefetched.retain(|p| p.slot != slot_i);

        // --- the pages to the device ---
        let pages_ptr = match input {
            PagesIn::Host(data) => self.upload_pages(data, span, slot_i)?,
            PagesIn::Device { ptr, .. } => {
                // Nothing to copy: the slot's copy events mark an empty
                // interval, so the decode's waits and timings stay as for
                // an upload.
                let slot = &mut self.slots[slot_i];
                slot.h2d_start.record(&self.copy)?;
                slot.h2d_done.record(&self.copy)?;
                ptr
            }
        };

        let (mut args, page_table) = self.heap_args(pages_ptr, pages, blocks, &bases, layout)?;

        // --- pass 1: row sizes, scans, totals ---
        let ev0 = Event::new(&self.ctx)?;
        let ev1 = Event::new(&self.ctx)?;
        ev0.record(&self.compute)?;
        let row_len = self.alloc(8 * nslots.max(1), AllocKind::Pool)?;
        let incl = self.alloc(16 * nslots.max(1), AllocKind::Pool)?;
        let flagged_dev = self.zeroed(4 * (npages + 2))?;
        args.row_len = row_len.ptr();
        args.incl = incl.ptr();
        args.flagged = flagged_dev.ptr();
        let (bytes, nrows, nflagged) = {
            self.kernels
                .heap_pages(&self.compute, &args, true, layout.has_arrays())?;
            self.kernels.scan_u32(
                &self.compute,
                row_len.ptr(),
                incl.ptr(),
                nslots as u64,
                2,
                nslots as u64,
            )?;
            let v = self.read_u64s(&[
                incl.ptr() + 8 * (nslots as u64 - 1),
                incl.ptr() + 8 * (2 * nslots as u64 - 1),
                flagged_dev.ptr(),
            ])?;
            (v[0], v[1] as usize, (v[2] & 0xffff_ffff) as usize)
        };
        let flagged = self.read_flagged(&flagged_dev, nflagged.min(npages))?;
        self.stats.pages_flagged += flagged.len() as u64;
        if nrows == 0 {
            return Ok((None, flagged));
        }
        if bytes > u64::from(u32::MAX) - 16 {
            return Err(bad_pages(format!(
                "{npages} pages make {bytes} bytes of rows, more than one batch can hold (4 GiB)"
            )));
        }

        // --- pass 2: the rows, into the slot's input buffer ---
        let data_pad = (bytes as usize).div_ceil(16) * 16;
        let total = data_pad + 8 * nrows;
        let slot = &mut self.slots[slot_i];
        if slot.dev.as_ref().is_none_or(|d| d.len() < total) {
            slot.dev = None;
            slot.dev = Some(DeviceBuffer::alloc(
                &self.ctx,
                total + total / 4,
                AllocKind::Plain,
                &self.compute,
            )?);
        }
        slot.used = true;
        let Some(dev) = slot.dev.as_ref() else {
            return Err(bad_pages("no input slot".into()));
        };
        args.out = dev.ptr();
        args.starts = dev.ptr() + data_pad as u64;
        args.ends = args.starts + 4 * nrows as u64;
        self.kernels
            .heap_pages(&self.compute, &args, false, layout.has_arrays())?;
        ev1.record(&self.compute)?;
        // Timed once the stream has passed ev1 (the decode kernels that
        // follow synchronize it): no wait here on the hot path.
        self.page_timing = Some((ev0, ev1));
        drop((row_len, incl, flagged_dev, page_table));
        Ok((
            Some(Uploaded {
                slot: slot_i,
                rows: 0..nrows,
                lo: 0,
                hi: bytes as u32,
                key: (0, 0, 0, 0),
            }),
            flagged,
        ))
    }

    /// The layout's tables on the device (uploaded once per layout) and
    /// the page table (page indexes, slot bases and, with checksums, block
    /// numbers), as the page kernels' arguments; the page table stays
    /// alive with the returned buffer.
    fn heap_args(
        &mut self,
        pages_ptr: u64,
        pages: &[u32],
        blocks: &[u32],
        bases: &[u32],
        layout: &PageLayout,
    ) -> Result<(HeapArgs, DeviceBuffer), GpuError> {
        let npages = pages.len();
        let nslots = *bases.last().unwrap_or(&0) as usize;
        let bs = layout.block_size;
        if !self.page_layouts.contains_key(&layout.id()) {
            let (blob, at) = layout.blob();
            let buf = self
                .kernels
                .upload_bytes(&self.compute, &blob, AllocKind::Plain)?;
            self.page_layouts.insert(layout.id(), (buf, at));
        }
        let Some((tables, at)) = self.page_layouts.get(&layout.id()) else {
            return Err(bad_pages("layout tables not uploaded".into()));
        };
        let tables = tables.ptr();
        let table_at = |k: usize| tables + at[k] as u64;
        // Page indexes, slot bases and (with checksums) block numbers.
        let checked: &[u32] = if layout.checksums { blocks } else { &[] };
        let mut table = Vec::with_capacity(4 * (3 * npages + 1));
        for v in pages.iter().chain(bases).chain(checked) {
            table.extend_from_slice(&v.to_ne_bytes());
        }
        let page_table = self
            .kernels
            .upload_bytes(&self.compute, &table, AllocKind::Pool)?;
        let (natts, nout) = layout.counts();
        let args = HeapArgs {
            pages: pages_ptr,
            page_at: page_table.ptr(),
            slot_base: page_table.ptr() + 4 * npages as u64,
            check_blocks: if layout.checksums {
                page_table.ptr() + 4 * (2 * npages as u64 + 1)
            } else {
                0
            },
            attrs: table_at(0),
            outputs: table_at(1),
            missing: table_at(2),
            enum_oids: table_at(3),
            enum_off: table_at(4),
            enum_blob: table_at(5),
            npages: npages as u32,
            nslots: nslots as u32,
            block_size: bs as u32,
            natts: natts as u32,
            nout: nout as u32,
            nenum: layout.enum_count() as u32,
            ..HeapArgs::default()
        };
        Ok((args, page_table))
    }

    /// The first `n` entries of the page kernels' list of flagged pages,
    /// sorted (the compute stream is already synchronized).
    fn read_flagged(&self, flagged_dev: &DeviceBuffer, n: usize) -> Result<Vec<u32>, GpuError> {
        let mut flagged = vec![0u32; n];
        if !flagged.is_empty() {
            let mut raw = vec![0u8; 4 * flagged.len()];
            check(
                // SAFETY: the flag list has npages + 2 u32s and n <= npages;
                // the compute stream was synchronized by read_u64s.
                unsafe {
                    sys::cuMemcpyDtoH_v2(
                        raw.as_mut_ptr() as *mut c_void,
                        flagged_dev.ptr() + 4,
                        raw.len(),
                    )
                },
                "cuMemcpyDtoH",
                self.ctx.ordinal,
            )?;
            for (f, b) in flagged.iter_mut().zip(raw.chunks_exact(4)) {
                *f = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
            flagged.sort_unstable();
        }
        Ok(flagged)
    }

    /// Copies the first `span` bytes of `data` into the decoder's page
    /// buffer on the copy stream (staged first unless page-locked), with
    /// slot `slot_i`'s copy events around it and the compute stream made to
    /// wait for it. Returns the device address of the pages.
    fn upload_pages(&mut self, data: &[u8], span: usize, slot_i: usize) -> Result<u64, GpuError> {
        let ordinal = self.ctx.ordinal;
        if self.page_dev.as_ref().is_none_or(|d| d.len() < span) {
            self.page_dev = None;
            self.page_dev = Some(DeviceBuffer::alloc(
                &self.ctx,
                span + span / 4,
                AllocKind::Plain,
                &self.copy,
            )?);
        }
        let direct = is_pinned(data.as_ptr());
        let src: *const u8 = if direct {
            data.as_ptr()
        } else {
            let t = Instant::now();
            if self
                .page_staging
                .as_ref()
                .is_none_or(|b| b.capacity() < span)
            {
                self.page_staging = None;
                self.page_staging = Some(PinnedBuffer::new(span + span / 4)?);
            }
            let Some(st) = self.page_staging.as_mut() else {
                return Err(GpuError::Pinned("no page staging buffer".into()));
            };
            st.full_mut()[..span].copy_from_slice(&data[..span]);
            self.stats.stage_s += t.elapsed().as_secs_f64();
            st.full_mut_ptr()
        };
        let (Some(page_dev), slot) = (self.page_dev.as_ref(), &mut self.slots[slot_i]) else {
            return Err(GpuError::Pinned("no page buffer".into()));
        };
        slot.h2d_start.record(&self.copy)?;
        check(
            // SAFETY: `span` bytes at `src` (the caller's data or the staging
            // buffer, both checked above) into a buffer of at least `span`; the
            // copy is waited for (compute waits on h2d_done and is synchronized
            // below) before this call returns.
            unsafe {
                sys::cuMemcpyHtoDAsync_v2(page_dev.ptr(), src as *const c_void, span, self.copy.raw)
            },
            "cuMemcpyHtoDAsync",
            ordinal,
        )?;
        slot.h2d_done.record(&self.copy)?;
        self.stats.h2d_bytes += span as u64;
        self.compute.wait(&slot.h2d_done)?;
        Ok(page_dev.ptr())
    }

    /// Device time of the last batch's page kernels not yet counted (its
    /// events have completed once the compute stream was synchronized).
    pub(super) fn pending_page_seconds(&mut self) -> f64 {
        match self.page_timing.take() {
            Some((a, b)) => b.since(&a).map_or(0.0, |ms| ms / 1e3),
            None => 0.0,
        }
    }

    /// The rows of an input slot, copied back.
    pub(super) fn download_rows(&mut self, up: &Uploaded) -> Result<CopyChunk, GpuError> {
        let ordinal = self.ctx.ordinal;
        self.compute.sync()?;
        let n = up.rows.len();
        let bytes = (up.hi - up.lo) as usize;
        let data_pad = bytes.div_ceil(16) * 16;
        let Some(dev) = self.slots[up.slot].dev.as_ref() else {
            return Err(GpuError::Layout {
                column: "(rows)".into(),
                what: "input slot without a buffer".into(),
            });
        };
        let mut raw = vec![0u8; data_pad + 8 * n];
        check(
            // SAFETY: the slot holds data_pad + 8n bytes for this piece; the
            // stream writing it was synchronized above.
            unsafe { sys::cuMemcpyDtoH_v2(raw.as_mut_ptr() as *mut c_void, dev.ptr(), raw.len()) },
            "cuMemcpyDtoH",
            ordinal,
        )?;
        let word = |at: usize| u32::from_ne_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let starts: Vec<u32> = (0..n).map(|k| word(data_pad + 4 * k) - up.lo).collect();
        let ends: Vec<u32> = (0..n)
            .map(|k| word(data_pad + 4 * (n + k)) - up.lo)
            .collect();
        raw.truncate(bytes);
        Ok(CopyChunk {
            data: raw,
            row_starts: starts,
            row_ends: ends,
            partition: 0,
            first_row: 0,
        })
    }
}

/// A malformed batch of heap pages.
fn bad_pages(what: String) -> GpuError {
    GpuError::Layout {
        column: "(heap pages)".into(),
        what,
    }
}

/// Checks `pages` (and `blocks`, with checksums) against the input, and
/// returns the bytes of pages the kernels read and each page's first row
/// slot (a running sum of line pointers; the last entry is the total).
fn page_bases(
    input: PagesIn<'_>,
    pages: &[u32],
    blocks: &[u32],
    layout: &PageLayout,
) -> Result<(usize, Vec<u32>), GpuError> {
    let bs = layout.block_size;
    let npages = pages.len();
    if layout.checksums && blocks.len() != npages {
        return Err(bad_pages(format!(
            "{} block numbers for {npages} pages",
            blocks.len()
        )));
    }
    let span = (*pages.iter().max().unwrap_or(&0) as usize + 1) * bs;
    if span > input.len() {
        return Err(bad_pages(format!(
            "page index past the {} bytes given",
            input.len()
        )));
    }
    let bases = match input {
        PagesIn::Host(data) => slot_bases(data, pages, bs),
        PagesIn::Device { headers, .. } => {
            if headers.len() < span / bs * PAGE_HEADER_SIZE {
                return Err(bad_pages(format!(
                    "{} bytes of page headers for {} pages",
                    headers.len(),
                    span / bs
                )));
            }
            slot_bases_of_headers(headers, PAGE_HEADER_SIZE, pages, bs)
        }
    };
    Ok((span, bases))
}

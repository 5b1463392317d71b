//! The decoder threads: each takes work from the sources, decodes it with
//! its [`BatchDecoder`], hands the batches to the sink and every heap page
//! batch back to the source (with the pages it flagged).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use gpupg_decode::OutputSchema;
use gpupg_gpu::GpuStats;

use super::{merge_gpu_stats, new_decoder, BatchDecoder, EngineChoice, OutBatch, PagesToDecode};
use crate::carry::BatchOrigin;
use crate::cputime::thread_cpu_seconds;
use crate::row_name::{failing_row, value_error_row};
use crate::sink::BatchSink;
use crate::source::heap::fallback::Back;
use crate::source::heap::{PageBatch, PageFormat};
use crate::source::Work;
use crate::state::Shared;
use crate::ExportError;

/// The decoder threads' side of one export.
pub(crate) struct Decoding<'a, S> {
    pub engine: &'a EngineChoice,
    pub schema: &'a Arc<OutputSchema>,
    pub sink: &'a S,
    /// Per heap relation, how its pages are decoded.
    pub formats: Vec<PageFormat<'a>>,
    pub notes: Mutex<Vec<String>>,
    pub gpu_stats: Mutex<BTreeMap<usize, GpuStats>>,
}

/// A decoded part of a chunk or page batch: the batch, its rows' bytes
/// (COPY or heap), its partition and its pages.
type Part<B> = (B, u64, u32, BatchOrigin);

impl<S> Decoding<'_, S> {
    /// One decoder thread: decodes work until the sources are done. After a
    /// failure it keeps draining, so that readers blocked on the channel or
    /// the pool can finish and see the abort.
    pub(crate) fn run<B: OutBatch>(
        &self,
        thread: usize,
        work: &Receiver<Work>,
        back: &Sender<Back>,
        shared: &Shared<'_>,
    ) where
        S: BatchSink<B>,
    {
        let mut decoder = match new_decoder(self.engine, thread, self.schema, self.sink.arenas()) {
            Ok((d, note)) => {
                if let Some(n) = note {
                    let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
                    if !notes.contains(&n) {
                        notes.push(n);
                    }
                }
                Some(d)
            }
            Err(e) => {
                shared.abort.fail(e);
                None
            }
        };
        for w in work.iter() {
            match decoder.as_deref_mut() {
                Some(d) if !shared.abort.stopped() => self.decode(d, w, back, shared),
                _ => match w {
                    Work::Rows(chunk) => shared.pool.give(chunk.data),
                    Work::Converted { .. } => {}
                    Work::Pages(batch) => drop(Lent::new(batch, back)),
                },
            }
        }
        let Some(d) = decoder else { return };
        shared
            .counts
            .flattened
            .fetch_add(d.stats().flattened_arrays, Ordering::Relaxed);
        if let Some(g) = d.gpu_stats() {
            let mut by_device = self.gpu_stats.lock().unwrap_or_else(|p| p.into_inner());
            match by_device.get_mut(&g.device) {
                Some(t) => merge_gpu_stats(t, &g),
                None => {
                    by_device.insert(g.device, g);
                }
            }
        }
    }

    /// Decodes one piece of work and hands its batches to the sink.
    fn decode<B: OutBatch>(
        &self,
        d: &mut dyn BatchDecoder,
        work: Work,
        back: &Sender<Back>,
        shared: &Shared<'_>,
    ) where
        S: BatchSink<B>,
    {
        let (abort, counts) = (&shared.abort, &shared.counts);
        let (t, cpu) = (Instant::now(), thread_cpu_seconds());
        let mut parts: Vec<Part<B>> = Vec::with_capacity(1);
        let mut bad_row = None;
        let result = match work {
            Work::Rows(chunk) => {
                let r = B::decode_rows(d, &chunk);
                // The row's bytes go back to the pool next.
                bad_row = r
                    .as_ref()
                    .err()
                    .and_then(value_error_row)
                    .and_then(|row| failing_row(&chunk, row));
                let (bytes, partition) = (chunk.row_bytes(), chunk.partition);
                shared.pool.give(chunk.data);
                r.map(|b| parts.push((b, bytes, partition, BatchOrigin::Untracked)))
            }
            Work::Converted { chunk, origin } => B::decode_rows(d, &chunk)
                .map(|b| parts.push((b, chunk.row_bytes(), chunk.partition, origin))),
            Work::Pages(batch) => self.decode_pages(d, Lent::new(batch, back), &mut parts),
        };
        counts.decode.add(t.elapsed());
        counts.decode_cpu.add_seconds(thread_cpu_seconds() - cpu);
        if let Err(e) = result {
            abort.fail_in_row(e, bad_row);
            return;
        }
        let t = Instant::now();
        for (batch, bytes, partition, origin) in parts {
            let n = batch.num_rows() as u64;
            if let Err(e) = self.sink.write(batch, partition, origin) {
                abort.fail(e);
                break;
            }
            counts.rows.fetch_add(n, Ordering::Relaxed);
            counts.copy_bytes.fetch_add(bytes, Ordering::Relaxed);
            shared.progress.advance(n, bytes);
        }
        counts.write.add(t.elapsed());
    }

    /// Decodes a batch of trusted heap pages (the GPU page kernels, or the
    /// CPU page decoder); the batch goes back to the source with the pages
    /// the decoder flagged, which the source converts or reads again.
    fn decode_pages<B: OutBatch>(
        &self,
        d: &mut dyn BatchDecoder,
        mut lent: Lent<'_>,
        parts: &mut Vec<Part<B>>,
    ) -> Result<(), ExportError> {
        let Some(batch) = lent.batch.as_ref() else {
            return Err(ExportError::Internal("a page batch lent twice".into()));
        };
        let Some(format) = self.formats.get(batch.rel) else {
            return Err(ExportError::Internal("heap pages of no relation".into()));
        };
        let pages = PagesToDecode {
            input: batch.input(),
            pages: &batch.pages,
            blocks: &batch.blocks,
            layout: format.layout,
            gpu_layout: format.gpu_layout,
        };
        let (decoded, flagged) = B::decode_pages(d, &pages)?;
        if let Some(b) = decoded {
            let rows = b.num_rows();
            let heap_bytes =
                ((batch.pages.len() - flagged.len()) * format.layout.block_size()) as u64;
            let origin = BatchOrigin::of(batch.rel, batch.pages_except(&flagged), rows);
            parts.push((b, heap_bytes, batch.partition, origin));
            lent.decoded_rows = rows as u64;
        }
        lent.flagged = flagged;
        Ok(())
    }
}

/// A page batch a decoder holds; it goes back to the source when dropped,
/// whichever way the decoding ended (with no flagged pages unless set).
struct Lent<'a> {
    batch: Option<PageBatch>,
    flagged: Vec<u32>,
    decoded_rows: u64,
    back: &'a Sender<Back>,
}

impl<'a> Lent<'a> {
    fn new(batch: PageBatch, back: &'a Sender<Back>) -> Lent<'a> {
        Lent {
            batch: Some(batch),
            flagged: Vec::new(),
            decoded_rows: 0,
            back,
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        // The source's side ends only after every batch came back, so it
        // is still there.
        let _ = self.back.send(Back::Pages {
            batch,
            flagged: std::mem::take(&mut self.flagged),
            decoded_rows: self.decoded_rows,
        });
    }
}

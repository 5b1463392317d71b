//! A GPU decoder as the pipeline's [`BatchDecoder`]: rows and heap pages
//! into host record batches or device columns, with the export's policy
//! for GPU failures (`--engine gpu` fails the export, `auto` decodes on the
//! CPU and reports it).

use arrow_array::RecordBatch;
use gpupg_decode::{DecodeStats, Decoder};
use gpupg_format::CopyChunk;
use gpupg_gpu::{DeviceBatch, GpuDecoder, GpuStats};

use super::{BatchDecoder, PagesOut, PagesToDecode};
use crate::ExportError;

/// One decoder thread's GPU decoder.
pub(crate) struct GpuThread {
    pub(super) gpu: Box<GpuDecoder>,
    /// `--engine gpu`: any GPU failure is the export's failure.
    pub(super) strict: bool,
}

impl GpuThread {
    /// Decodes pages with the page kernels (`to_device`: into device
    /// columns). In auto mode a GPU failure flags every page and is counted
    /// in the GPU stats; device output has no CPU path, so it always fails.
    fn pages<T>(
        &mut self,
        p: &PagesToDecode<'_>,
        to_device: bool,
        decode: impl FnOnce(
            &mut GpuDecoder,
            &gpupg_gpu::PageLayout,
        ) -> Result<gpupg_gpu::GpuPagesDecoded<T>, gpupg_gpu::GpuError>,
    ) -> Result<PagesOut<T>, ExportError> {
        // Pages the GPU does not convert go through the rows of
        // `transcode_page`.
        let Some(gl) = p.gpu_layout else {
            return Ok(p.all_flagged());
        };
        match decode(&mut self.gpu, gl) {
            Ok(d) => Ok((d.batch, d.flagged)),
            Err(e) if self.strict || to_device => Err(gpu_failure(e)),
            Err(e) => {
                self.gpu.note_failure(&e);
                Ok(p.all_flagged())
            }
        }
    }
}

impl BatchDecoder for GpuThread {
    fn rows_to_host(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, ExportError> {
        if self.strict {
            self.gpu.decode_batch(chunk).map_err(gpu_failure)
        } else {
            // Auto: the trait path decodes on the CPU after a GPU failure
            // and counts it in the GPU stats.
            Ok(Decoder::decode(self.gpu.as_mut(), chunk)?)
        }
    }

    fn rows_to_device(&mut self, chunk: &CopyChunk) -> Result<DeviceBatch, ExportError> {
        self.gpu.decode_to_device(chunk).map_err(gpu_failure)
    }

    fn pages_to_host(
        &mut self,
        p: &PagesToDecode<'_>,
    ) -> Result<PagesOut<RecordBatch>, ExportError> {
        self.pages(p, false, |gpu, gl| {
            gpu.decode_pages(p.input, p.pages, p.blocks, gl)
        })
    }

    fn pages_to_device(
        &mut self,
        p: &PagesToDecode<'_>,
    ) -> Result<PagesOut<DeviceBatch>, ExportError> {
        self.pages(p, true, |gpu, gl| {
            gpu.decode_pages_to_device(p.input, p.pages, p.blocks, gl)
        })
    }

    fn stats(&self) -> DecodeStats {
        self.gpu.stats()
    }

    fn gpu_stats(&self) -> Option<GpuStats> {
        Some(self.gpu.gpu_stats())
    }
}

/// A GPU decoder's error as the export's: malformed data is a decode error
/// (it names the row and column), anything else a GPU failure.
pub(super) fn gpu_failure(e: gpupg_gpu::GpuError) -> ExportError {
    match e {
        gpupg_gpu::GpuError::Decode(d) => ExportError::Decode(d),
        e => ExportError::Gpu(e),
    }
}

/// Adds `b` to `a`: times and bytes summed over threads, peaks summed (an
/// upper bound of the device memory held at once), reasons merged.
pub(crate) fn merge_gpu_stats(a: &mut GpuStats, b: &GpuStats) {
    a.chunks += b.chunks;
    a.pieces += b.pieces;
    a.rows += b.rows;
    a.h2d_bytes += b.h2d_bytes;
    a.d2h_bytes += b.d2h_bytes;
    a.stage_s += b.stage_s;
    a.h2d_s += b.h2d_s;
    a.frame_s += b.frame_s;
    a.decode_s += b.decode_s;
    a.d2h_s += b.d2h_s;
    a.cpu_fallback_s += b.cpu_fallback_s;
    a.plain_alloc_s += b.plain_alloc_s;
    a.pages += b.pages;
    a.pages_flagged += b.pages_flagged;
    a.page_convert_s += b.page_convert_s;
    a.peak_device_bytes += b.peak_device_bytes;
    for c in &b.cpu_columns {
        if !a.cpu_columns.contains(c) {
            a.cpu_columns.push(c.clone());
        }
    }
    a.dynamic_cpu_fallbacks += b.dynamic_cpu_fallbacks;
    a.cpu_rechecks += b.cpu_rechecks;
    a.gpu_failures += b.gpu_failures;
    if a.last_gpu_failure.is_none() {
        a.last_gpu_failure = b.last_gpu_failure.clone();
    }
    a.kernel_compile_ms = a.kernel_compile_ms.max(b.kernel_compile_ms);
    a.kernels_from_cache = b.kernels_from_cache;
    a.device = b.device;
    if a.arch.is_empty() {
        a.arch = b.arch.clone();
    }
}

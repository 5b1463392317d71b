//! The CPU decoder as the pipeline's [`BatchDecoder`]: rows and heap pages
//! into host record batches; it cannot decode into device memory.

use arrow_array::RecordBatch;
use gpupg_decode::{CpuDecoder, DecodeStats};
use gpupg_format::CopyChunk;
use gpupg_gpu::{DeviceBatch, GpuStats, PagesIn};

use super::{BatchDecoder, PagesOut, PagesToDecode};
use crate::ExportError;

impl BatchDecoder for CpuDecoder {
    fn rows_to_host(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, ExportError> {
        Ok(gpupg_decode::Decoder::decode(self, chunk)?)
    }

    fn rows_to_device(&mut self, _: &CopyChunk) -> Result<DeviceBatch, ExportError> {
        Err(ExportError::Invalid(
            "device-resident output needs the GPU engine".into(),
        ))
    }

    fn pages_to_host(
        &mut self,
        p: &PagesToDecode<'_>,
    ) -> Result<PagesOut<RecordBatch>, ExportError> {
        match p.input {
            PagesIn::Host(data) => {
                let d = self.decode_pages(data, p.pages, p.blocks, p.layout)?;
                Ok((d.batch, d.flagged))
            }
            // Pages in device memory go through the rows of `transcode_page`.
            PagesIn::Device { .. } => Ok(p.all_flagged()),
        }
    }

    fn pages_to_device(
        &mut self,
        p: &PagesToDecode<'_>,
    ) -> Result<PagesOut<DeviceBatch>, ExportError> {
        // The CPU makes no device columns: every page goes through rows,
        // whose decoding then says why.
        Ok(p.all_flagged())
    }

    fn stats(&self) -> DecodeStats {
        gpupg_decode::Decoder::stats(self)
    }

    fn gpu_stats(&self) -> Option<GpuStats> {
        None
    }
}

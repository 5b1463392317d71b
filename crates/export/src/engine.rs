//! Which decoder the export threads run: the CPU decoder, or one
//! `GpuDecoder` per thread on the chosen GPU.

use std::sync::Arc;

use arrow_array::RecordBatch;
use gpupg_decode::{CpuDecoder, DecodeStats, Decoder, OutputSchema};
use gpupg_format::heap::TupleLayout;
use gpupg_format::CopyChunk;
use gpupg_gpu::{DeviceArena, DeviceBatch, GpuDecoder, GpuStats, PagesIn};

use crate::heap_source::PageReader;
use crate::{Engine, ExportError};

/// The engine an export runs with, decided once before any data moves.
#[derive(Debug, Clone)]
pub(crate) enum Chosen {
    Cpu {
        /// Why the CPU runs although the GPU was asked for or preferred.
        why: Option<String>,
    },
    Gpu {
        /// The GPUs, in the order the decoder threads take them.
        gpus: Vec<ChosenGpu>,
        /// `--engine gpu`: a GPU failure fails the export. `auto`: the chunk
        /// is decoded on the CPU and the failure reported.
        strict: bool,
    },
}

/// One GPU of the export.
#[derive(Debug, Clone)]
pub(crate) struct ChosenGpu {
    pub device: usize,
    pub name: String,
    /// The device's context, alive until the export ends.
    _hold: gpupg_gpu::DeviceHold,
}

impl Chosen {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Chosen::Cpu { .. } => "cpu",
            Chosen::Gpu { .. } => "gpu",
        }
    }

    /// "GPU 0 (NVIDIA H100 80GB HBM3)", "GPUs 0, 1 (...; ...)".
    pub(crate) fn gpus_text(gpus: &[ChosenGpu]) -> String {
        let ids: Vec<String> = gpus.iter().map(|g| g.device.to_string()).collect();
        let names: Vec<&str> = gpus.iter().map(|g| g.name.as_str()).collect();
        format!(
            "GPU{} {} ({})",
            if gpus.len() > 1 { "s" } else { "" },
            ids.join(", "),
            names.join("; ")
        )
    }
}

/// Decides the engine: probes the driver and the device before the first
/// CUDA call, so that a missing GPU is an error value (gpu) or a reason to
/// use the CPU (auto), never a crash. The chosen GPU's context is held
/// until the export ends.
pub(crate) fn choose(engine: Engine, devices: &[usize]) -> Result<Chosen, ExportError> {
    if engine == Engine::Cpu {
        return Ok(Chosen::Cpu { why: None });
    }
    let strict = engine == Engine::Gpu;
    let held: Result<Vec<ChosenGpu>, _> = devices
        .iter()
        .map(|&device| {
            gpupg_gpu::DeviceHold::new(device).map(|hold| ChosenGpu {
                device,
                name: hold.name().to_string(),
                _hold: hold,
            })
        })
        .collect();
    match held {
        Ok(gpus) if gpus.is_empty() => {
            Err(ExportError::Invalid("no GPU given to decode on".into()))
        }
        Ok(gpus) => Ok(Chosen::Gpu { gpus, strict }),
        Err(e) if strict => Err(ExportError::Gpu(e)),
        Err(e) => Ok(Chosen::Cpu {
            // The summary line stays short: where the driver was looked for
            // is what `gpupgparser info` and `--engine gpu` print.
            why: Some(match e {
                gpupg_gpu::GpuError::NoDriver { .. } => {
                    "no usable GPU (no CUDA driver found)".to_string()
                }
                e => format!("no usable GPU ({e})"),
            }),
        }),
    }
}

/// A decoded chunk, on the host or on the device.
pub(crate) enum Decoded {
    Host(RecordBatch),
    Device(DeviceBatch),
}

impl Decoded {
    pub(crate) fn num_rows(&self) -> usize {
        match self {
            Decoded::Host(b) => b.num_rows(),
            Decoded::Device(b) => b.num_rows,
        }
    }
}

/// The decoder of one export thread.
pub(crate) enum ThreadDecoder {
    Cpu(Box<CpuDecoder>),
    Gpu { gpu: Box<GpuDecoder>, strict: bool },
}

impl ThreadDecoder {
    /// A decoder for `chosen`: decoder thread `thread` takes GPU
    /// `thread % n` of the chosen ones, and carves device-resident outputs
    /// from that GPU's arena. In auto mode a GPU decoder that cannot be
    /// created (kernel compile error, out of memory) becomes a CPU decoder,
    /// and the reason is returned for the report.
    pub(crate) fn new(
        chosen: &Chosen,
        thread: usize,
        schema: &Arc<OutputSchema>,
        arenas: Option<&[Arc<DeviceArena>]>,
    ) -> Result<(ThreadDecoder, Option<String>), ExportError> {
        match chosen {
            Chosen::Cpu { .. } => Ok((
                ThreadDecoder::Cpu(Box::new(CpuDecoder::new(schema.clone()))),
                None,
            )),
            Chosen::Gpu { gpus, strict } => {
                let slot = thread % gpus.len().max(1);
                let device = gpus.get(slot).map_or(0, |g| g.device);
                let arena = arenas.and_then(|a| a.get(slot));
                Self::gpu(device, *strict, schema, arena)
            }
        }
    }

    fn gpu(
        device: usize,
        strict: bool,
        schema: &Arc<OutputSchema>,
        arena: Option<&Arc<DeviceArena>>,
    ) -> Result<(ThreadDecoder, Option<String>), ExportError> {
        let made = GpuDecoder::new(device, schema.clone()).and_then(|mut gpu| {
            if let Some(a) = arena {
                gpu.set_output_arena(a.clone())?;
            }
            Ok(gpu)
        });
        match made {
            Ok(gpu) => Ok((
                ThreadDecoder::Gpu {
                    gpu: Box::new(gpu),
                    strict,
                },
                None,
            )),
            Err(e) if strict => Err(ExportError::Gpu(e)),
            Err(e) => Ok((
                ThreadDecoder::Cpu(Box::new(CpuDecoder::new(schema.clone()))),
                Some(format!("GPU decoder unavailable, decoded on the CPU: {e}")),
            )),
        }
    }

    pub(crate) fn decode(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, ExportError> {
        match self {
            ThreadDecoder::Cpu(d) => Ok(d.decode(chunk)?),
            // Strict: any GPU failure is the export's failure.
            ThreadDecoder::Gpu { gpu, strict: true } => {
                gpu.decode_batch(chunk).map_err(gpu_failure)
            }
            // Auto: the trait path decodes on the CPU after a GPU failure
            // and counts it in the GPU stats.
            ThreadDecoder::Gpu { gpu, strict: false } => Ok(Decoder::decode(gpu.as_mut(), chunk)?),
        }
    }

    /// Decodes into device memory; only the GPU engine (always strict:
    /// device output has no CPU path) can.
    pub(crate) fn decode_to_device(
        &mut self,
        chunk: &CopyChunk,
    ) -> Result<DeviceBatch, ExportError> {
        match self {
            ThreadDecoder::Gpu { gpu, .. } => gpu.decode_to_device(chunk).map_err(gpu_failure),
            ThreadDecoder::Cpu(_) => Err(ExportError::Invalid(
                "device-resident output needs the GPU engine".into(),
            )),
        }
    }

    /// Decodes a chunk on the host or into device memory.
    pub(crate) fn decode_to(
        &mut self,
        chunk: &CopyChunk,
        device: bool,
    ) -> Result<Decoded, ExportError> {
        if device {
            self.decode_to_device(chunk).map(Decoded::Device)
        } else {
            self.decode(chunk).map(Decoded::Host)
        }
    }

    /// Converts and decodes heap pages (indexes into `data`, block numbers
    /// `blocks`): with the GPU page kernels when `reader` is the GPU's,
    /// else straight into columns on the CPU. Returns the rows of the pages
    /// not flagged (`None`: none) and the flagged pages (indexes into
    /// `pages`), which the caller converts with `transcode_page`. In auto
    /// mode a GPU failure flags every page and is counted in the GPU stats;
    /// a thread without a GPU decoder decodes GPU pages on the CPU.
    pub(crate) fn decode_pages(
        &mut self,
        input: PagesIn<'_>,
        (pages, blocks): (&[u32], &[u32]),
        layout: &TupleLayout,
        reader: &PageReader,
        device: bool,
    ) -> Result<(Option<Decoded>, Vec<u32>), ExportError> {
        match (self, reader, input) {
            (ThreadDecoder::Gpu { gpu, strict }, PageReader::Gpu(gl), _) => {
                let r = if device {
                    gpu.decode_pages_to_device(input, pages, blocks, gl)
                        .map(|d| (d.batch.map(Decoded::Device), d.flagged))
                } else {
                    gpu.decode_pages(input, pages, blocks, gl)
                        .map(|d| (d.batch.map(Decoded::Host), d.flagged))
                };
                match r {
                    Ok(v) => Ok(v),
                    Err(e) if *strict || device => Err(gpu_failure(e)),
                    Err(e) => {
                        gpu.note_failure(&e);
                        Ok((None, (0..pages.len() as u32).collect()))
                    }
                }
            }
            (ThreadDecoder::Cpu(cpu), _, PagesIn::Host(data)) if !device => {
                let d = cpu.decode_pages(data, pages, blocks, layout)?;
                Ok((d.batch.map(Decoded::Host), d.flagged))
            }
            // Anything else goes through the rows of `transcode_page`.
            _ => Ok((None, (0..pages.len() as u32).collect())),
        }
    }

    pub(crate) fn stats(&self) -> DecodeStats {
        match self {
            ThreadDecoder::Cpu(d) => d.stats(),
            ThreadDecoder::Gpu { gpu, .. } => gpu.stats(),
        }
    }

    pub(crate) fn gpu_stats(&self) -> Option<GpuStats> {
        match self {
            ThreadDecoder::Cpu(_) => None,
            ThreadDecoder::Gpu { gpu, .. } => Some(gpu.gpu_stats()),
        }
    }
}

/// A GPU decoder's error as the export's: malformed data is a decode error
/// (it names the row and column), anything else a GPU failure.
fn gpu_failure(e: gpupg_gpu::GpuError) -> ExportError {
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

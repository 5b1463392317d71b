//! The pipeline's decoders: one [`BatchDecoder`] per decoder thread, the
//! CPU decoder ([`cpu`]) or a GPU decoder ([`gpu`]), chosen once per export
//! ([`EngineChoice`]). A decoder turns whole COPY rows or a batch of heap
//! pages into a host [`RecordBatch`] or a device [`DeviceBatch`]
//! ([`OutBatch`] says which); pages it cannot decode it flags, and the
//! pipeline hands them back to the source.

mod cpu;
mod gpu;
mod thread;

use std::sync::Arc;

use arrow_array::RecordBatch;
use gpupg_decode::{CpuDecoder, DecodeStats, OutputSchema};
use gpupg_format::heap::TupleLayout;
use gpupg_format::CopyChunk;
use gpupg_gpu::{DeviceArena, DeviceBatch, GpuDecoder, GpuStats, PageLayout, PagesIn};

use crate::carry::BatchSize;
use crate::source::SourceChoice;
use crate::{Engine, ExportError, ExportRequest};
pub(crate) use gpu::merge_gpu_stats;
use gpu::GpuThread;
pub(crate) use thread::Decoding;

/// The engine an export runs with, decided once before any data moves.
#[derive(Debug, Clone)]
pub(crate) enum EngineChoice {
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

impl EngineChoice {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            EngineChoice::Cpu { .. } => "cpu",
            EngineChoice::Gpu { .. } => "gpu",
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

/// Whether the engine is chosen before the source: always, except `auto`
/// for host output (files, host memory, a stream), which depends on where
/// the rows come from ([`choose_engine`] after [`crate::source::choose_source`]).
/// An explicit engine or device output is chosen first, so that
/// `--engine gpu` without a usable GPU fails before anything is opened.
pub(crate) fn engine_before_source(req: &ExportRequest<'_>, device: bool) -> bool {
    device || req.engine != Engine::Auto
}

/// Above this share of TOAST pages (over the table's), `auto` decodes heap
/// pages for host output on the CPU: the GPU engine converts every page
/// holding a TOAST pointer on the CPU anyway, and then loses. Measured on
/// the H100 host (issue 17, 2026-12-07/08, best of two): events 10M (TOAST
/// 21% of the table, 60% of the pages hold a pointer) CPU faster for every
/// host output (Parquet 6.57 against 6.60 s, Arrow IPC 4.06 against 4.82,
/// memory 3.61 against 3.80); lineorder 60M (no TOAST) GPU faster
/// (memory 0.88 against 1.14 s, Arrow IPC 1.45 against 1.79, Parquet 2.96
/// against 3.48; in the run before, 1.64/1.90, 1.92/2.12, 3.12/3.10).
/// Issue 16 had measured lineorder the other way (Arrow IPC 1.56 s on the
/// CPU against 3.51 s), before issue 17's page kernels and hand-off.
const GPU_FOR_HOST_BELOW_TOAST_SHARE: f64 = 0.02;

/// Why `auto` decodes heap pages for host output on the CPU.
fn heap_to_host_on_cpu(toast_share: f64) -> String {
    format!(
        "the table's TOAST is {:.0}% of its size: host output from the heap files \
         decodes faster on the CPU when pages hold TOAST pointers",
        100.0 * toast_share
    )
}

/// The engine: device output has no CPU path, it needs the GPU as
/// `--engine gpu` does. `auto` for host output decodes on the GPU where
/// there is one, except heap pages of a table with TOAST
/// ([`GPU_FOR_HOST_BELOW_TOAST_SHARE`]), which it decodes on the CPU; `source` is `None` when
/// chosen before the source ([`engine_before_source`]).
pub(crate) fn choose_engine(
    req: &ExportRequest<'_>,
    device: bool,
    source: Option<&SourceChoice>,
) -> Result<EngineChoice, ExportError> {
    let engine = match (device, req.engine) {
        (true, Engine::Cpu) => return Err(crate::RequestError::DeviceOutputOnCpu.into()),
        (true, _) => Engine::Gpu,
        (false, Engine::Auto) => match source {
            Some(SourceChoice::Heap(plan))
                if plan.toast_share >= GPU_FOR_HOST_BELOW_TOAST_SHARE =>
            {
                // Before any CUDA call: the GPU's set-up would be time lost.
                return Ok(EngineChoice::Cpu {
                    why: Some(heap_to_host_on_cpu(plan.toast_share)),
                });
            }
            _ => Engine::Auto,
        },
        (false, e) => e,
    };
    choose(engine, &req.devices).map_err(|e| match (device, e) {
        (true, ExportError::Gpu(g)) => {
            ExportError::Invalid(format!("device-resident output needs a usable GPU: {g}"))
        }
        (_, e) => e,
    })
}

/// Decides the engine: probes the driver and the device before the first
/// CUDA call, so that a missing GPU is an error value (gpu) or a reason to
/// use the CPU (auto), never a crash. The chosen GPU's context is held
/// until the export ends.
fn choose(engine: Engine, devices: &[usize]) -> Result<EngineChoice, ExportError> {
    if engine == Engine::Cpu {
        return Ok(EngineChoice::Cpu { why: None });
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
        Ok(gpus) => Ok(EngineChoice::Gpu { gpus, strict }),
        Err(e) if strict => Err(ExportError::Gpu(e)),
        Err(e) => Ok(EngineChoice::Cpu {
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

/// The decoded batch of pages not flagged (`None`: none), and the flagged
/// pages (indexes into [`PagesToDecode::pages`]).
pub(crate) type PagesOut<T> = (Option<T>, Vec<u32>);

/// A batch of heap pages of one relation, for a decoder.
pub(crate) struct PagesToDecode<'a> {
    pub input: PagesIn<'a>,
    /// The trusted pages: their indexes in `input`, and block numbers.
    pub pages: &'a [u32],
    pub blocks: &'a [u32],
    pub layout: &'a TupleLayout,
    /// The layout for the GPU page kernels, when they convert this
    /// relation's pages.
    pub gpu_layout: Option<&'a PageLayout>,
}

impl PagesToDecode<'_> {
    /// Nothing decoded, every page flagged.
    pub(crate) fn all_flagged<T>(&self) -> PagesOut<T> {
        (None, (0..self.pages.len() as u32).collect())
    }
}

/// What every decoder of the pipeline does; implemented by the CPU decoder
/// and by [`GpuThread`].
pub(crate) trait BatchDecoder {
    /// Decodes whole COPY rows into a host batch.
    fn rows_to_host(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, ExportError>;
    /// Decodes whole COPY rows into device columns (the GPU only).
    fn rows_to_device(&mut self, chunk: &CopyChunk) -> Result<DeviceBatch, ExportError>;
    /// Decodes heap pages into a host batch, flagging those it cannot.
    fn pages_to_host(
        &mut self,
        pages: &PagesToDecode<'_>,
    ) -> Result<PagesOut<RecordBatch>, ExportError>;
    /// Decodes heap pages into device columns, flagging those it cannot.
    fn pages_to_device(
        &mut self,
        pages: &PagesToDecode<'_>,
    ) -> Result<PagesOut<DeviceBatch>, ExportError>;
    fn stats(&self) -> DecodeStats;
    /// The GPU's statistics, for a GPU decoder.
    fn gpu_stats(&self) -> Option<GpuStats>;
}

/// A decoded batch as a sink takes it: in host memory ([`RecordBatch`]) or
/// in device memory ([`DeviceBatch`]). The pipeline is generic over it, so
/// the decode always matches the sink.
pub(crate) trait OutBatch: Send + Sized + 'static {
    /// Whether the batches live in device memory.
    const DEVICE: bool;
    fn decode_rows(d: &mut dyn BatchDecoder, chunk: &CopyChunk) -> Result<Self, ExportError>;
    fn decode_pages(
        d: &mut dyn BatchDecoder,
        pages: &PagesToDecode<'_>,
    ) -> Result<PagesOut<Self>, ExportError>;
    fn num_rows(&self) -> usize;
    /// Rows, bytes and GPU, for the page map of a load kept in memory.
    fn size(&self) -> BatchSize;
}

impl OutBatch for RecordBatch {
    const DEVICE: bool = false;
    fn decode_rows(d: &mut dyn BatchDecoder, chunk: &CopyChunk) -> Result<Self, ExportError> {
        d.rows_to_host(chunk)
    }
    fn decode_pages(
        d: &mut dyn BatchDecoder,
        pages: &PagesToDecode<'_>,
    ) -> Result<PagesOut<Self>, ExportError> {
        d.pages_to_host(pages)
    }
    fn num_rows(&self) -> usize {
        RecordBatch::num_rows(self)
    }
    fn size(&self) -> BatchSize {
        BatchSize {
            rows: RecordBatch::num_rows(self),
            bytes: self.get_array_memory_size() as u64,
            device: 0,
        }
    }
}

impl OutBatch for DeviceBatch {
    const DEVICE: bool = true;
    fn decode_rows(d: &mut dyn BatchDecoder, chunk: &CopyChunk) -> Result<Self, ExportError> {
        d.rows_to_device(chunk)
    }
    fn decode_pages(
        d: &mut dyn BatchDecoder,
        pages: &PagesToDecode<'_>,
    ) -> Result<PagesOut<Self>, ExportError> {
        d.pages_to_device(pages)
    }
    fn num_rows(&self) -> usize {
        self.num_rows
    }
    fn size(&self) -> BatchSize {
        BatchSize {
            rows: self.num_rows,
            bytes: self.device_bytes() as u64,
            device: self.device(),
        }
    }
}

/// A decoder for `choice`: decoder thread `thread` takes GPU `thread % n` of
/// the chosen ones, and carves device-resident outputs from that GPU's arena
/// (when `arenas` are given). In auto mode a GPU decoder that cannot be
/// created (kernel compile error, out of memory) becomes a CPU decoder, and
/// the reason is returned for the report.
pub(crate) fn new_decoder(
    choice: &EngineChoice,
    thread: usize,
    schema: &Arc<OutputSchema>,
    arenas: &[Arc<DeviceArena>],
) -> Result<(Box<dyn BatchDecoder>, Option<String>), ExportError> {
    let (gpus, strict) = match choice {
        EngineChoice::Cpu { .. } => return Ok((Box::new(CpuDecoder::new(schema.clone())), None)),
        EngineChoice::Gpu { gpus, strict } => (gpus, *strict),
    };
    let slot = thread % gpus.len().max(1);
    let device = gpus.get(slot).map_or(0, |g| g.device);
    let made = GpuDecoder::new(device, schema.clone()).and_then(|mut gpu| {
        if let Some(a) = arenas.get(slot) {
            gpu.set_output_arena(a.clone())?;
        }
        Ok(gpu)
    });
    match made {
        Ok(gpu) => Ok((
            Box::new(GpuThread {
                gpu: Box::new(gpu),
                strict,
            }),
            None,
        )),
        Err(e) if strict => Err(ExportError::Gpu(e)),
        Err(e) => Ok((
            Box::new(CpuDecoder::new(schema.clone())),
            Some(format!("GPU decoder unavailable, decoded on the CPU: {e}")),
        )),
    }
}

//! The export's entry points: into files ([`export`]), into memory
//! ([`export_to_host`], [`export_to_device`]); all run the one pipeline with
//! a sink of their own ([`crate::stream`] runs it with a channel).

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use gpupg_gpu::DeviceBatch;

use crate::carry::{BatchOrigin, BatchSize, CarriedBatch, PageMap};
use crate::pipeline::{run, Ran};
use crate::sink::files::{FileSink, Files};
use crate::sink::memory::MemorySink;
use crate::{ExportError, ExportReport, ExportRequest, Output, Progress};

/// A load kept in memory ([`export_to_device`], [`export_to_host`]).
pub struct Loaded<B> {
    /// The columns of every batch.
    pub schema: SchemaRef,
    /// The batches read, in the order they were decoded.
    pub batches: Vec<B>,
    /// What the load did.
    pub report: ExportReport,
    /// The pages each batch of `batches` holds.
    pub pages: PageMap,
    /// On a refresh ([`ExportRequest::prior`]): the rows of the previous
    /// load to copy into new batches (with
    /// [`gpupg_gpu::gather_rows`] or [`gpupg_gpu::gather_rows_host`]) and
    /// append, with their origins, to `batches` and `pages`. Together with
    /// `batches` they are the table under this load's snapshot.
    pub carried: Vec<CarriedBatch>,
}

impl<B> Loaded<B> {
    /// Appends the rows [`Self::carried`] lists: `gather` copies one carried
    /// batch's runs out of the previous load's batches, `size` gives a
    /// batch's rows and bytes. Carried batches without rows are left out.
    pub fn append_carried<E>(
        &mut self,
        mut gather: impl FnMut(&CarriedBatch) -> Result<B, E>,
        size: impl Fn(&B) -> BatchSize,
    ) -> Result<(), E> {
        for c in std::mem::take(&mut self.carried) {
            if c.rows == 0 {
                continue;
            }
            let batch = gather(&c)?;
            self.pages.push(c.origin, size(&batch));
            self.batches.push(batch);
        }
        Ok(())
    }

    /// Whether a refresh left rows to carry over.
    pub fn carries_rows(&self) -> bool {
        self.carried.iter().any(|c| c.rows > 0)
    }
}

/// Runs one export. Output appears only if everything succeeded: on any
/// error (or cancellation) the temporary files are removed. With
/// [`Output::Device`] the columns are decoded into device memory, held until
/// the end and then freed (a measure of the load; [`export_to_device`] keeps
/// them), with [`Output::Host`] into host memory likewise.
pub fn export(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
) -> Result<ExportReport, ExportError> {
    let files = match &req.output {
        Output::File(path) => Files::One(path),
        Output::Dir(dir) => Files::Dir(dir),
        Output::Device => return export_to_device(req, progress).map(|l| l.report),
        Output::Host => return export_to_host(req, progress).map(|l| l.report),
    };
    let sink = |setup: &_| FileSink::create(files, &req.sink, setup);
    run::<RecordBatch, _>(req, progress, None, sink).map(|ran| ran.report)
}

/// Reads the table or query of `req` into device-resident Arrow columns on
/// the GPUs `req.devices`, whatever `req.output` says. Needs a usable GPU: the
/// engine is the GPU's, and a GPU failure fails the load.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use gpupg_export::{export_to_device, ExportRequest, NoProgress};
/// # let req: ExportRequest<'static> = unimplemented!();
/// let loaded = export_to_device(&req, &NoProgress)?;
/// let bytes: usize = loaded.batches.iter().map(|b| b.device_bytes()).sum();
/// println!("{} rows, {bytes} bytes on GPUs {:?}", loaded.report.rows, req.devices);
/// # Ok(()) }
/// ```
pub fn export_to_device(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
) -> Result<Loaded<DeviceBatch>, ExportError> {
    let req = req.with_output(Output::Device);
    let sink = |_: &_| Ok(MemorySink::new(&req.devices, req.device_limit));
    run(&req, progress, None, sink).map(loaded)
}

/// Reads the table or query of `req` into Arrow record batches in memory,
/// whatever `req.output` says, with `req.engine`.
pub fn export_to_host(
    req: &ExportRequest<'_>,
    progress: &dyn Progress,
) -> Result<Loaded<RecordBatch>, ExportError> {
    let req = req.with_output(Output::Host);
    let sink = |_: &_| Ok(MemorySink::new(&req.devices, None));
    run(&req, progress, None, sink).map(loaded)
}

/// The batches kept, their pages (sizes filled, origins still with the
/// batches) and what a refresh carries, as a [`Loaded`].
fn loaded<B>(ran: Ran<Vec<(B, BatchOrigin)>>) -> Loaded<B> {
    let Ran {
        report,
        kept,
        mut pages,
        carried,
        schema,
    } = ran;
    let batches = kept
        .into_iter()
        .map(|(b, origin)| {
            pages.batches.push(origin);
            b
        })
        .collect();
    Loaded {
        schema,
        batches,
        report,
        pages,
        carried,
    }
}

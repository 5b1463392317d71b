//! Batches as they are decoded: [`stream`] runs the export on threads of
//! its own and yields host record batches through a bounded channel
//! ([`stream_to_device`]: device batches), so memory stays bounded by the
//! parallelism and the chunk size whatever the table size. The schema is
//! known before the first batch, the report once the last one is taken.
//! Dropping a stream stops its export: the server's statements are
//! cancelled, the connections closed, the threads joined and their
//! (page-locked) buffers freed before `drop` returns.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gpupg_export::{stream, ExportRequest, NoProgress};
//! # let req: ExportRequest<'static> = unimplemented!();
//! let mut batches = stream(req, NoProgress)?;
//! println!("columns: {:?}", batches.schema().fields());
//! for batch in &mut batches {
//!     println!("{} rows", batch?.num_rows());
//! }
//! println!("{}", batches.finish()?.summary());
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, Receiver};
use gpupg_gpu::DeviceBatch;

use crate::decoder::OutBatch;
use crate::pipeline::run;
use crate::sink::channel::ChannelSink;
use crate::{ExportError, ExportReport, ExportRequest, Progress};

/// Host record batches of one export as they are decoded ([`stream`]).
pub struct BatchStream(Stream<RecordBatch>);

/// Device batches of one export as they are decoded ([`stream_to_device`]).
pub struct DeviceBatchStream(Stream<DeviceBatch>);

/// Starts the export of `req` (whatever `req.output` says) and returns its
/// record batches as they are decoded, in no particular order, once the
/// columns are known; an error before that (a bad request, no such table)
/// is returned here, later ones by the iterator.
pub fn stream(
    req: ExportRequest<'static>,
    progress: impl Progress + Send + 'static,
) -> Result<BatchStream, ExportError> {
    Stream::start(req, progress).map(BatchStream)
}

/// [`stream`] into device memory on the GPUs `req.devices` (the GPU
/// engine, as [`crate::export_to_device`]); each batch is allocated on its
/// own and freed when dropped.
pub fn stream_to_device(
    req: ExportRequest<'static>,
    progress: impl Progress + Send + 'static,
) -> Result<DeviceBatchStream, ExportError> {
    Stream::start(req, progress).map(DeviceBatchStream)
}

/// The export thread of a stream and what it sends.
struct Stream<B> {
    schema: SchemaRef,
    /// `None` once the export ended.
    batches: Option<Receiver<B>>,
    /// Set to stop the export early.
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<ExportReport, ExportError>>>,
    report: Option<ExportReport>,
}

impl<B: OutBatch> Stream<B> {
    fn start(
        req: ExportRequest<'static>,
        progress: impl Progress + Send + 'static,
    ) -> Result<Stream<B>, ExportError> {
        req.validate()?;
        // A batch in the channel per decoder thread: the decoders wait for
        // a slow consumer, and the readers for them.
        let (tx, batches) = bounded::<B>(req.workers);
        let (schema_tx, schema_rx) = bounded::<SchemaRef>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gpupg-stream".into())
            .spawn(move || {
                let sink = |setup: &crate::sink::SinkSetup| {
                    // The caller waits for this; it may have gone.
                    let _ = schema_tx.send(setup.schema.clone());
                    Ok(ChannelSink { tx })
                };
                run(&req, &progress, Some(&stopped), sink).map(|ran| ran.report)
            })
            .map_err(|e| ExportError::Internal(format!("cannot start a stream's thread: {e}")))?;
        match schema_rx.recv() {
            Ok(schema) => Ok(Stream {
                schema,
                batches: Some(batches),
                stop,
                thread: Some(thread),
                report: None,
            }),
            // The export ended before its columns were known: its error.
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => Err(ExportError::Internal(
                    "a stream ended without its columns".into(),
                )),
                Err(_) => Err(ExportError::ThreadPanicked("stream")),
            },
        }
    }

    fn next(&mut self) -> Option<Result<B, ExportError>> {
        let batches = self.batches.as_ref()?;
        if let Ok(b) = batches.recv() {
            return Some(Ok(b));
        }
        // Every batch is taken and the export thread is ending.
        self.batches = None;
        match self.thread.take()?.join() {
            Ok(Ok(report)) => {
                self.report = Some(report);
                None
            }
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => Some(Err(ExportError::ThreadPanicked("stream"))),
        }
    }

    fn finish(mut self) -> Result<ExportReport, ExportError> {
        while let Some(b) = self.next() {
            b?;
        }
        self.report
            .take()
            .ok_or_else(|| ExportError::Internal("a stream ended without its report".into()))
    }
}

impl<B> Drop for Stream<B> {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // The flag cancels the server's statements and stops every thread
        // at its next look; with the channel gone, decoders waiting to send
        // fail at once.
        self.stop.store(true, Ordering::SeqCst);
        self.batches = None;
        // The export's own error (a cancel) is of no interest to a stream
        // dropped early.
        let _ = thread.join();
    }
}

macro_rules! stream_api {
    ($name:ident, $batch:ty) => {
        impl $name {
            /// The columns of every batch, known before the first one.
            pub fn schema(&self) -> SchemaRef {
                self.0.schema.clone()
            }

            /// The export's report, once the iterator has returned `None`.
            pub fn report(&self) -> Option<&ExportReport> {
                self.0.report.as_ref()
            }

            /// Takes (and drops) the batches not taken yet, and returns the
            /// report, or the export's error.
            pub fn finish(self) -> Result<ExportReport, ExportError> {
                self.0.finish()
            }
        }

        impl Iterator for $name {
            type Item = Result<$batch, ExportError>;

            fn next(&mut self) -> Option<Self::Item> {
                self.0.next()
            }
        }
    };
}

stream_api!(BatchStream, RecordBatch);
stream_api!(DeviceBatchStream, DeviceBatch);

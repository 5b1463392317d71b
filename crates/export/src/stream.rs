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
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
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

/// [`stream`] without waiting for the columns: the export connects and
/// plans on its own thread while the caller waits in slices
/// ([`StartingStream::wait`]), so that it can give up in between (a
/// Python caller looks for Ctrl-C). Dropping it stops the export as
/// dropping a stream does.
pub fn start_stream(
    req: ExportRequest<'static>,
    progress: impl Progress + Send + 'static,
) -> Result<StartingStream, ExportError> {
    Starting::spawn(req, progress).map(StartingStream)
}

/// A [`stream`] whose columns are not known yet ([`start_stream`]).
pub struct StartingStream(Starting<RecordBatch>);

impl StartingStream {
    /// Waits at most `timeout` for the columns: `Ready` with the stream
    /// once they are known (or with the export's error if it ended before
    /// them), `Pending` if the export is still connecting or planning.
    pub fn wait(&mut self, timeout: Duration) -> Poll<Result<BatchStream, ExportError>> {
        self.0.wait(timeout).map(|r| r.map(BatchStream))
    }
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
    thread: Option<ExportThread>,
    report: Option<ExportReport>,
}

impl<B: OutBatch> Stream<B> {
    fn start(
        req: ExportRequest<'static>,
        progress: impl Progress + Send + 'static,
    ) -> Result<Stream<B>, ExportError> {
        let mut starting = Starting::spawn(req, progress)?;
        loop {
            // Long slices: nobody looks in between.
            if let Poll::Ready(started) = starting.wait(Duration::from_secs(3600)) {
                return started;
            }
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

    /// [`Stream::next`] waiting at most `timeout` for a batch: `Pending`
    /// if none came by then.
    fn next_timeout(&mut self, timeout: Duration) -> Poll<Option<Result<B, ExportError>>> {
        let Some(batches) = self.batches.as_ref() else {
            return Poll::Ready(None);
        };
        match batches.recv_timeout(timeout) {
            Ok(b) => Poll::Ready(Some(Ok(b))),
            Err(RecvTimeoutError::Timeout) => Poll::Pending,
            // Every batch is taken: `next` joins the export thread.
            Err(RecvTimeoutError::Disconnected) => Poll::Ready(self.next()),
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

/// An export whose columns are not known yet: its thread, and the channels
/// its schema and batches will come through.
struct Starting<B> {
    schema: Receiver<SchemaRef>,
    batches: Option<Receiver<B>>,
    stop: Arc<AtomicBool>,
    /// `None` once handed to the stream or joined.
    thread: Option<ExportThread>,
}

impl<B: OutBatch> Starting<B> {
    fn spawn(
        req: ExportRequest<'static>,
        progress: impl Progress + Send + 'static,
    ) -> Result<Starting<B>, ExportError> {
        req.validate()?;
        // A batch in the channel per decoder thread: the decoders wait for
        // a slow consumer, and the readers for them.
        let (tx, batches) = bounded::<B>(req.workers);
        let (schema_tx, schema) = bounded::<SchemaRef>(1);
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
        Ok(Starting {
            schema,
            batches: Some(batches),
            stop,
            thread: Some(thread),
        })
    }

    fn wait(&mut self, timeout: Duration) -> Poll<Result<Stream<B>, ExportError>> {
        let ended = match self.schema.recv_timeout(timeout) {
            Ok(schema) => {
                return Poll::Ready(Ok(Stream {
                    schema,
                    batches: self.batches.take(),
                    stop: self.stop.clone(),
                    thread: self.thread.take(),
                    report: None,
                }))
            }
            Err(RecvTimeoutError::Timeout) => return Poll::Pending,
            // The export ended before its columns were known: its error.
            Err(RecvTimeoutError::Disconnected) => self.thread.take().map(JoinHandle::join),
        };
        Poll::Ready(match ended {
            Some(Ok(Err(e))) => Err(e),
            Some(Ok(Ok(_))) | None => Err(ExportError::Internal(
                "a stream ended without its columns".into(),
            )),
            Some(Err(_)) => Err(ExportError::ThreadPanicked("stream")),
        })
    }
}

/// The thread of an export, as a stream or a starting one holds it.
type ExportThread = JoinHandle<Result<ExportReport, ExportError>>;

/// Stops an export given up early: the flag cancels the server's
/// statements and stops every thread at its next look; with the channel
/// gone, decoders waiting to send fail at once. The export's own error (a
/// cancel) is of no interest to a caller that gave up.
fn stop_early<B>(stop: &AtomicBool, batches: &mut Option<Receiver<B>>, thread: ExportThread) {
    stop.store(true, Ordering::SeqCst);
    *batches = None;
    let _ = thread.join();
}

impl<B> Drop for Starting<B> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            stop_early(&self.stop, &mut self.batches, thread);
        }
    }
}

impl<B> Drop for Stream<B> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            stop_early(&self.stop, &mut self.batches, thread);
        }
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

            /// The next batch as [`Iterator::next`] gives it, waiting at
            /// most `timeout`: `Pending` if none came by then (so that the
            /// caller can look for an interrupt and call again).
            pub fn next_timeout(
                &mut self,
                timeout: Duration,
            ) -> Poll<Option<Result<$batch, ExportError>>> {
                self.0.next_timeout(timeout)
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

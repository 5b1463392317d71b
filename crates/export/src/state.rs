//! What every thread of one export shares: the first error ([`Abort`]),
//! the buffer pool, and the counters the report is made of.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gpupg_source::BufferPool;

use crate::row_name::RowFields;
use crate::{ExportError, Progress};

/// The first error of any thread wins; the others stop as soon as they see it.
pub(crate) struct Abort<'a> {
    flag: AtomicBool,
    /// The error, and for an error about a value the fields of its row
    /// (to name the row once the export has stopped).
    first: Mutex<Option<(ExportError, Option<RowFields>)>>,
    /// Flags that stop the export from outside (the request's cancel, a
    /// dropped stream's).
    cancels: [Option<&'a AtomicBool>; 2],
}

impl<'a> Abort<'a> {
    pub(crate) fn new(cancels: [Option<&'a AtomicBool>; 2]) -> Abort<'a> {
        Abort {
            flag: AtomicBool::new(false),
            first: Mutex::new(None),
            cancels,
        }
    }

    pub(crate) fn fail(&self, e: ExportError) {
        self.fail_in_row(e, None);
    }

    pub(crate) fn fail_in_row(&self, e: ExportError, row: Option<RowFields>) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some((e, row));
        }
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Records `e` unless it only says that another thread failed first.
    pub(crate) fn fail_unless_downstream(&self, e: ExportError) {
        if !matches!(
            e,
            ExportError::Source(gpupg_source::SourceError::Downstream(_))
        ) {
            self.fail(e);
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        if self
            .cancels
            .iter()
            .any(|c| c.is_some_and(|c| c.load(Ordering::Relaxed)))
        {
            self.fail(ExportError::Cancelled);
        }
        self.flag.load(Ordering::Relaxed)
    }

    /// The first error, once every thread has ended.
    pub(crate) fn into_first(self) -> Option<(ExportError, Option<RowFields>)> {
        self.first.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// The error a thread returns when it stops because another one failed.
pub(crate) fn downstream() -> gpupg_source::SourceError {
    gpupg_source::SourceError::Downstream("another export thread failed".into())
}

/// Time spent by the threads of one kind, summed.
#[derive(Default)]
pub(crate) struct Busy {
    nanos: AtomicU64,
}

impl Busy {
    pub(crate) fn add(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    pub(crate) fn add_seconds(&self, s: f64) {
        self.nanos
            .fetch_add((s.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
    pub(crate) fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// The counters of one export, summed over its threads.
#[derive(Default)]
pub(crate) struct Counts {
    pub rows: AtomicU64,
    /// Bytes of rows decoded (COPY rows, or heap pages).
    pub copy_bytes: AtomicU64,
    /// Bytes the connections received.
    pub wire_bytes: AtomicU64,
    pub flattened: AtomicU64,
    pub decode: Busy,
    pub decode_cpu: Busy,
    pub write: Busy,
    /// Readers waiting for a decoder to take their chunk.
    pub send_wait: Busy,
    /// When the last connection finished its statements, since `copy_started`.
    pub copy_wall: Mutex<Duration>,
}

/// What every thread of one export shares.
pub(crate) struct Shared<'a> {
    pub abort: Abort<'a>,
    pub pool: BufferPool,
    pub counts: Counts,
    pub progress: &'a dyn Progress,
    pub copy_started: Instant,
}

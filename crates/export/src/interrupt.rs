//! Cancelling an export promptly. The request's cancel flag is looked at
//! between chunks, but a connection waiting inside the server (a COPY
//! blocked on a lock, a CHECKPOINT) sends no chunk: a watcher thread sends a
//! CancelRequest to every connection the export opened as soon as the flag
//! is set, so their statements fail at once and the export unwinds (and
//! removes its temporary files).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use gpupg_source::{CancelToken, Connection};

use crate::ExportError;

/// How often the watcher looks at the cancel flag: the delay a user sees
/// between Ctrl-C and the statements being cancelled.
const POLL: Duration = Duration::from_millis(50);

/// How often the cancel requests are sent again while the export has not
/// ended: a statement sent just after a round of requests (its connection was
/// idle then, so nothing was cancelled) is stopped by the next round.
const RESEND: Duration = Duration::from_secs(1);

/// The connections of one export that a cancel must reach.
#[derive(Default)]
pub(crate) struct Interrupts {
    tokens: Mutex<Vec<CancelToken>>,
}

impl Interrupts {
    /// Adds `conn` to the connections a cancel reaches. Without its token
    /// the connection is still stopped at the next chunk, so failing to
    /// get one (the socket's peer address unreadable) is not an error.
    pub(crate) fn watch(&self, conn: &Connection) {
        if let Ok(token) = conn.cancel_token() {
            self.tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(token);
        }
    }

    fn cancel_all(&self) {
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for token in tokens {
            // Best effort: the export stops at its next chunk either way.
            let _ = token.cancel();
        }
    }
}

/// Runs `f` with a watcher that cancels the connections `f` registers once
/// either of `cancels` is set (the request's flag, a dropped stream's). An
/// export stopped so fails with [`ExportError::Cancelled`], whichever error
/// its threads saw first (a cancelled statement's own error among them).
pub(crate) fn cancellable<T>(
    cancels: [Option<&AtomicBool>; 2],
    f: impl FnOnce(&Interrupts) -> Result<T, ExportError>,
) -> Result<T, ExportError> {
    let interrupts = Interrupts::default();
    if cancels.iter().all(Option::is_none) {
        return f(&interrupts);
    }
    let set = || cancels.iter().flatten().any(|c| c.load(Ordering::SeqCst));
    let (done, ended) = bounded::<()>(0);
    let result = std::thread::scope(|s| {
        s.spawn(|| watch(&set, &interrupts, &ended));
        let result = f(&interrupts);
        // Disconnecting the channel ends the watcher.
        drop(done);
        result
    });
    match result {
        Err(_) if set() => Err(ExportError::Cancelled),
        other => other,
    }
}

fn watch(set: &(dyn Fn() -> bool + Sync), interrupts: &Interrupts, ended: &Receiver<()>) {
    let mut last_round: Option<Instant> = None;
    while let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(POLL) {
        if set() && last_round.is_none_or(|t| t.elapsed() >= RESEND) {
            interrupts.cancel_all();
            last_round = Some(Instant::now());
        }
    }
}

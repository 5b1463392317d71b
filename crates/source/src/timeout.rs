//! `connect_timeout`: one deadline over the whole connection attempt (TLS
//! handshake, authentication and startup included), as in libpq. A
//! per-read socket timeout would not do: a server that answers slowly but
//! steadily would never expire, and an expired read looks like a lost
//! connection ("Resource temporarily unavailable").

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use crate::conn::Socket;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Armed,
    Fired,
    Disarmed,
}

/// Shuts the socket down at the deadline unless disarmed first, which makes
/// any read or write of the startup fail at once.
pub(crate) struct Watchdog {
    phase: Arc<Mutex<Phase>>,
    /// Dropping it wakes the thread, which then ends.
    _wake: Sender<()>,
}

impl Watchdog {
    /// Watches `socket` (a clone of the connection's) until `deadline`.
    pub(crate) fn arm(socket: Socket, deadline: Instant) -> std::io::Result<Watchdog> {
        let phase = Arc::new(Mutex::new(Phase::Armed));
        let (wake, woken) = mpsc::channel::<()>();
        let watched = Arc::clone(&phase);
        thread::Builder::new()
            .name("connect-timeout".into())
            .spawn(move || {
                let left = deadline.saturating_duration_since(Instant::now());
                if let Err(RecvTimeoutError::Timeout) = woken.recv_timeout(left) {
                    let mut phase = watched.lock().unwrap_or_else(PoisonError::into_inner);
                    if *phase == Phase::Armed {
                        socket.shutdown();
                        *phase = Phase::Fired;
                    }
                }
            })?;
        Ok(Watchdog { phase, _wake: wake })
    }

    /// Stops watching; true if the deadline had already passed and the
    /// socket is shut down.
    pub(crate) fn disarm(self) -> bool {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let fired = *phase == Phase::Fired;
        *phase = Phase::Disarmed;
        fired
    }
}

//! `connect_timeout`: one deadline over the whole connection attempt (the
//! connect, TLS handshake, authentication and startup), as in libpq. A
//! per-read socket timeout would not do: a server that answers slowly but
//! steadily would never expire, and an expired read looks like a lost
//! connection ("Resource temporarily unavailable"). The TCP connect has
//! std's timeout; the Unix one is [`connect_unix`]; after it, a
//! [`Watchdog`] shuts the socket down at the deadline.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
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
    pub(crate) fn arm(socket: Socket, deadline: Instant) -> io::Result<Watchdog> {
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

/// Connects to a Unix socket, giving up at `deadline`. A blocking connect
/// to a server whose listen queue is full waits for room as long as the
/// socket's send timeout allows, forever by default, and std sets that
/// timeout only on a connected socket: hence the socket is made here.
pub(crate) fn connect_unix(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data, valid zeroed.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or containing a NUL byte",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket that nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        // SAFETY: addr is a valid sockaddr_un and the length is its size.
        let rc = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            // The send timeout passed while the queue stayed full.
            io::ErrorKind::WouldBlock => return Err(io::ErrorKind::TimedOut.into()),
            _ => return Err(e),
        }
    }
    stream.set_write_timeout(None)?;
    Ok(stream)
}

//! SIGTERM and SIGINT as a flag the server's accept loop polls, so it
//! shuts down cleanly (device memory freed, socket removed) instead of
//! dying with the signal.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::StoreError;

static TERMINATION: AtomicBool = AtomicBool::new(false);

extern "C" fn on_termination(_signal: libc::c_int) {
    // A lock-free atomic store is async-signal-safe.
    TERMINATION.store(true, Ordering::SeqCst);
}

/// Installs handlers for SIGTERM and SIGINT that set the returned flag
/// (and do nothing else: the process goes on until it looks at the flag).
pub fn termination_flag() -> Result<&'static AtomicBool, StoreError> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler
        // only stores to an atomic; sigemptyset and sigaction get valid
        // pointers.
        let r = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_termination as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(StoreError::io(
                "installing the SIGTERM/SIGINT handler",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(&TERMINATION)
}

//! SIGINT, SIGTERM and SIGHUP during an export, bench or demo: the first one
//! cancels the work (its connections' statements are cancelled on the
//! server, the temporary files removed as the export unwinds) and the
//! process then exits with 128 + the signal's number (130, 143, 129); a
//! second one (half a second or more after the first) exits at once with
//! that convention too, leaving any temporary file to the next export in
//! that directory (gpupg_sink removes the files of dead processes).
//!
//! The signals are blocked in every thread and taken by one thread with
//! `sigwait`, so nothing runs in a signal handler: that thread may lock,
//! allocate and exit freely.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Set by the first signal; exports stop when they see it.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

/// Signals this close to the first one are taken as copies of it.
const SAME_REQUEST: Duration = Duration::from_millis(500);

/// The first signal received, 0 before.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Takes over SIGINT, SIGTERM and SIGHUP. Must be called before the process
/// starts any other thread: threads inherit the signal mask, and a thread
/// without it would die of the signal with its temporary files. (Child
/// processes do not: std resets the mask when it spawns one.)
pub fn install() -> Result<()> {
    // SAFETY: sigset_t is plain data that sigemptyset initializes;
    // pthread_sigmask gets valid pointers.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r))
                .context("blocking SIGINT, SIGTERM and SIGHUP");
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || wait_for_signals(set))
        .context("starting the signal thread")?;
    Ok(())
}

fn wait_for_signals(set: libc::sigset_t) {
    let mut first: Option<Instant> = None;
    loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: both pointers are valid for the call.
        if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
            continue;
        }
        match first {
            None => {
                first = Some(Instant::now());
                RECEIVED.store(signal, Ordering::SeqCst);
                CANCEL.store(true, Ordering::SeqCst);
            }
            // The same request delivered twice: `timeout` signals the
            // process and then its process group, which holds it too.
            Some(t) if t.elapsed() < SAME_REQUEST => {}
            // A second request: the user does not want to wait for the
            // cleanup.
            Some(_) => std::process::exit(exit_code(signal)),
        }
    }
}

/// The signal received, if any: its number and name.
pub fn received() -> Option<(libc::c_int, &'static str)> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some((libc::SIGINT, "SIGINT")),
        libc::SIGTERM => Some((libc::SIGTERM, "SIGTERM")),
        libc::SIGHUP => Some((libc::SIGHUP, "SIGHUP")),
        s => Some((s, "a signal")),
    }
}

/// The shell's convention for a process ended by `signal`.
pub fn exit_code(signal: libc::c_int) -> i32 {
    128 + signal
}

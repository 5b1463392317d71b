//! `gpupgparser serve`: the accept loop, one thread per client, the
//! background refresher, and a clean shutdown.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gpupg_store::{default_socket_path, GpuBackend, Registry, Server};
//!
//! # fn main() -> Result<(), gpupg_store::StoreError> {
//! let registry = Registry::new(Arc::new(GpuBackend::default()), Some(40 << 30));
//! let server = Server::bind(&default_socket_path()?, registry)?
//!     .stop_on(gpupg_store::signals::termination_flag()?);
//! server.run()?; // until SIGTERM, SIGINT or a client's shutdown request
//! # Ok(()) }
//! ```

use std::io::{BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::StoreError;
use crate::protocol::{
    decode_request, encode_error, encode_ok, encode_ok_rendered, read_line, Request,
    MAX_REQUEST_BYTES,
};
use crate::registry::{Attachment, Registry};
use crate::socket::{bind_owner_only, peer_credentials, trusted_uid};

/// How long the accept loop waits before looking at the stop flags again.
const POLL_MILLIS: i32 = 100;

/// Where the server's log lines go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, so that shutdown removes only
    /// the file this server made.
    file_id: (u64, u64),
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    external_stop: Option<&'static AtomicBool>,
    log: Log,
}

/// One client's thread and its socket (shut down to end the thread).
struct ClientThread {
    stream: UnixStream,
    thread: JoinHandle<()>,
}

impl Server {
    /// Binds the socket at `path` (owner-only; a live server's socket is
    /// refused, a stale one replaced).
    pub fn bind(path: &Path, registry: Registry) -> Result<Server, StoreError> {
        let listener = bind_owner_only(path)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| StoreError::io("setting up the socket", e))?;
        let meta = std::fs::metadata(path)
            .map_err(|e| StoreError::io(format!("checking {}", path.display()), e))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            file_id: (meta.dev(), meta.ino()),
            registry: Arc::new(registry),
            stop: Arc::default(),
            external_stop: None,
            log: Arc::new(|line: &str| eprintln!("gpupgparser serve: {line}")),
        })
    }

    /// Also stops when `flag` is set (e.g. [`crate::signals::termination_flag`]).
    pub fn stop_on(mut self, flag: &'static AtomicBool) -> Server {
        self.external_stop = Some(flag);
        self
    }

    /// Sends log lines to `log` instead of stderr.
    pub fn with_log(mut self, log: Log) -> Server {
        self.log = log;
        self
    }

    /// Setting this flag stops [`Server::run`] (as a `shutdown` request does).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The tables it serves, for callers that load or inspect them in
    /// process.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || self.external_stop.is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Serves until stopped, then shuts down: no new clients, loads in
    /// progress cancelled, clients disconnected, every table freed, the
    /// socket removed.
    pub fn run(self) -> Result<(), StoreError> {
        (self.log)(&format!(
            "serving on {} ({} backend)",
            self.path.display(),
            self.registry.backend_kind()
        ));
        let refresher = {
            let registry = self.registry.clone();
            let stop = self.stop.clone();
            let log = self.log.clone();
            std::thread::Builder::new()
                .name("auto-refresh".into())
                .spawn(move || registry.run_auto_refresh(&stop, &*log))
                .map_err(|e| StoreError::io("starting the refresh thread", e))?
        };
        let mut clients: Vec<ClientThread> = Vec::new();
        while !self.stopping() {
            if !self.wait_readable() {
                continue;
            }
            match self.listener.accept() {
                // The socket's mode already keeps other users out; this
                // also holds where the file system ignores modes.
                Ok((stream, _)) => match peer_credentials(&stream) {
                    Ok(c) if trusted_uid(c.uid) => match self.spawn_client(stream) {
                        Ok(c) => clients.push(c),
                        Err(e) => (self.log)(&e.one_line()),
                    },
                    Ok(c) => (self.log)(&format!(
                        "refused a client of uid {} (pid {}): not this user or root",
                        c.uid, c.pid
                    )),
                    Err(e) => (self.log)(&format!(
                        "refused a client whose credentials could not be read: {e}"
                    )),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => (self.log)(&format!("accept: {e}")),
            }
            clients.retain(|c| !c.thread.is_finished());
        }
        (self.log)("stopping: disconnecting clients and freeing device memory");
        self.stop.store(true, Ordering::SeqCst);
        self.registry.shut_down();
        for c in &clients {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        for c in clients {
            let _ = c.thread.join();
        }
        let _ = refresher.join();
        // The tables went at shut_down, every attachment with its client.
        let freed = self.registry.used_bytes() == 0;
        self.remove_socket();
        (self.log)(if freed {
            "stopped"
        } else {
            "stopped (some device memory was still referenced)"
        });
        Ok(())
    }

    /// Waits up to [`POLL_MILLIS`] for a connection.
    fn wait_readable(&self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a timeout, so no unbounded block.
        let r = unsafe { libc::poll(&mut fd, 1, POLL_MILLIS) };
        r > 0 && fd.revents & libc::POLLIN != 0
    }

    fn spawn_client(&self, stream: UnixStream) -> Result<ClientThread, StoreError> {
        let io = |e| StoreError::io("setting up a client connection", e);
        stream.set_nonblocking(false).map_err(io)?;
        let handle = stream.try_clone().map_err(io)?;
        let registry = self.registry.clone();
        let stop = self.stop.clone();
        let log = self.log.clone();
        let thread = std::thread::Builder::new()
            .name("store-client".into())
            .spawn(move || serve_client(stream, &registry, &stop, &*log))
            .map_err(|e| StoreError::io("starting a client thread", e))?;
        Ok(ClientThread {
            stream: handle,
            thread,
        })
    }

    fn remove_socket(&self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Answers one client's requests in order until it disconnects; its
/// attachments are released when this returns, however it ends.
fn serve_client(stream: UnixStream, registry: &Registry, stop: &AtomicBool, log: &dyn Fn(&str)) {
    let mut reader = match stream.try_clone() {
        Ok(s) => BufReader::new(s),
        Err(e) => {
            log(&format!("client connection: {e}"));
            return;
        }
    };
    let mut writer = stream;
    let mut attachments: Vec<Attachment> = Vec::new();
    loop {
        let (response, last) = match read_line(&mut reader, MAX_REQUEST_BYTES) {
            Ok(None) => break,
            Ok(Some(line)) if line.trim().is_empty() => continue,
            Ok(Some(line)) => {
                let result = decode_request(&line)
                    .and_then(|r| handle(r, registry, &mut attachments, stop, log));
                (result, false)
            }
            // Not the protocol (an endless line): say why and hang up.
            Err(e) => (Err(e), true),
        };
        let line = match response {
            Ok(Reply::Value(v)) => encode_ok(v),
            Ok(Reply::Rendered(json)) => encode_ok_rendered(&json),
            Err(e) => encode_error(&e),
        };
        if writer.write_all(line.as_bytes()).is_err() || last {
            break;
        }
    }
    if !attachments.is_empty() {
        log(&format!(
            "client gone: released {} attachment(s)",
            attachments.len()
        ));
    }
}

fn handle(
    request: Request,
    registry: &Registry,
    attachments: &mut Vec<Attachment>,
    stop: &AtomicBool,
    log: &dyn Fn(&str),
) -> Result<Reply, StoreError> {
    if stop.load(Ordering::SeqCst) {
        return Err(StoreError::ShuttingDown);
    }
    match request {
        Request::Load { spec } => {
            let info = registry.load(*spec)?;
            log(&format!(
                "loaded {} (table {}) revision {}: {} rows, {} bytes on {} device {} in {:.2} s via {}",
                info.name,
                info.table,
                info.revision,
                info.rows,
                info.device_bytes,
                info.backend,
                info.device,
                info.load_seconds,
                info.source
            ));
            to_json(&info)
        }
        Request::Refresh { name } => {
            let outcome = registry.refresh(&name)?;
            if outcome.rebuilt {
                log(&format!(
                    "refreshed {name}: revision {}, {} rows",
                    outcome.info.revision, outcome.info.rows
                ));
            }
            to_json(&outcome)
        }
        Request::Drop { name } => {
            let outcome = registry.drop_table(&name)?;
            log(&format!("dropped {name}"));
            to_json(&outcome)
        }
        Request::List { stale } => to_json(&registry.list(stale)),
        Request::Export { name } => Ok(Reply::Rendered(registry.manifest_json(&name)?)),
        Request::Attach { name } => {
            let (attachment, manifest) = registry.attach_json(&name)?;
            attachments.push(attachment);
            Ok(Reply::Rendered(manifest))
        }
        Request::Release { name, revision } => {
            let at = attachments
                .iter()
                .position(|a| a.name() == name && a.revision() == revision)
                .ok_or(StoreError::NotAttached { name, revision })?;
            // Frees the revision when it was the last hold on an old one.
            attachments.swap_remove(at);
            Ok(Reply::Value(json!({ "released": true })))
        }
        Request::Shutdown => {
            log("shutdown requested by a client");
            stop.store(true, Ordering::SeqCst);
            Ok(Reply::Value(json!({ "stopping": true })))
        }
    }
}

/// What a request answers: a value, or JSON rendered before.
enum Reply {
    Value(Value),
    Rendered(Arc<str>),
}

fn to_json(value: &impl Serialize) -> Result<Reply, StoreError> {
    serde_json::to_value(value)
        .map(Reply::Value)
        .map_err(|e| StoreError::Internal(e.to_string()))
}

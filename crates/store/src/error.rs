//! The store's one error type, and the kinds it is sent over the socket as.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What went wrong, as a client sees it on the wire (`error.kind`): stable
/// names a program can branch on, whatever the message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No table of that name in the store.
    UnknownTable,
    /// A table of that name is loaded already.
    AlreadyLoaded,
    /// The name is not one the store accepts.
    BadName,
    /// The device does not exist or cannot be used.
    BadDevice,
    /// The load would pass the server's memory limit.
    MemoryLimit,
    /// The device ran out of memory during the load.
    OutOfMemory,
    /// The export of the table failed.
    LoadFailed,
    /// Whether the table changed could not be read.
    Freshness,
    /// The client releases a revision it did not attach.
    NotAttached,
    /// A request the server cannot read or run (the message names the field).
    BadRequest,
    /// A manifest that does not describe the table's buffers.
    BadManifest,
    /// The peer speaks another protocol version.
    Version,
    /// The server is stopping.
    ShuttingDown,
    /// Another server listens on the socket, or a file is in its place.
    SocketInUse,
    /// The socket belongs to another user, or its directory is not this
    /// user's alone: nothing was sent.
    UntrustedSocket,
    /// Nothing listens on the socket.
    NoServer,
    /// A read or write failed.
    Io,
    /// The GPU failed.
    Gpu,
    /// A bug in gpupgparser.
    Internal,
    /// A kind this client does not know (a newer server).
    #[serde(other)]
    Other,
}

/// Every failure of the store, server and client side. Each message is one
/// line naming what to act on; a variant that adds context to a cause
/// returns it as its source, and [`StoreError::one_line`] prints the chain.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No table of this name.
    #[error("no table named {0:?} in the store")]
    UnknownTable(String),
    /// A table of this name is loaded already.
    #[error("a table named {0:?} is already in the store (drop it first, or load it under another name)")]
    AlreadyLoaded(String),
    /// A name the store does not accept, and why.
    #[error("invalid table name {name:?}: {why}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A device that does not exist or cannot be used.
    #[error("device {device} cannot be used: {detail}")]
    BadDevice {
        /// The ordinal asked for.
        device: usize,
        /// Why it cannot be used.
        detail: String,
    },
    /// A load or refresh that would pass the memory limit; nothing changed.
    #[error(
        "{name:?} needs at least {needed} bytes of device memory, {in_use} of the limit of {limit} are in use; \
         nothing was changed"
    )]
    MemoryLimit {
        /// The table's name in the store.
        name: String,
        /// Bytes the table needs (at least).
        needed: u64,
        /// Bytes other tables hold.
        in_use: u64,
        /// The server's limit in bytes.
        limit: u64,
    },
    /// The device ran out of memory during a load.
    #[error("loading {name:?}: out of memory on device {device}; other tables are untouched")]
    OutOfMemory {
        /// The table's name in the store.
        name: String,
        /// The device that ran out.
        device: usize,
    },
    /// The export of a table failed (the source says why).
    #[error("loading {name:?}")]
    Load {
        /// The table's name in the store.
        name: String,
        /// Why the export failed.
        #[source]
        source: Box<gpupg_export::ExportError>,
    },
    /// Whether a table changed could not be read (the source says why).
    #[error("reading the catalog state of {table}")]
    Freshness {
        /// The table as given at load.
        table: String,
        /// The server's error.
        #[source]
        source: Box<gpupg_source::SourceError>,
    },
    /// A release of a revision this client did not attach.
    #[error("this client holds no attachment to revision {revision} of {name:?}")]
    NotAttached {
        /// The table's name in the store.
        name: String,
        /// The revision named.
        revision: u64,
    },
    /// A request the server cannot read or run; the message names the
    /// field.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A manifest that does not describe the table's buffers.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The peer speaks another protocol version.
    #[error("protocol version {got} is not supported: this side speaks version {supported}")]
    Version {
        /// The version the peer sent.
        got: u64,
        /// The version this side speaks.
        supported: u32,
    },
    /// The server is stopping.
    #[error("the store server is shutting down")]
    ShuttingDown,
    /// Another server listens on the socket.
    #[error("{}: in use by a running store server", .0.display())]
    SocketInUse(PathBuf),
    /// A file that is not a socket is where the socket should be.
    #[error("{}: exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// The process on the socket runs as another user: nothing was sent.
    #[error(
        "{}: the process listening there runs as uid {uid}, not as this user (uid {me}) or root; \
         nothing was sent to it",
        path.display()
    )]
    UntrustedPeer {
        /// The socket.
        path: PathBuf,
        /// The peer's user.
        uid: u32,
        /// This process's user.
        me: u32,
    },
    /// The socket's directory is not this user's alone.
    #[error(
        "{}: {why}; refusing it as the store socket's directory (remove it, or choose a socket \
         with --socket or $GPUPGPARSER_STORE_SOCKET)",
        dir.display()
    )]
    UnsafeSocketDir {
        /// The directory.
        dir: PathBuf,
        /// What is unsafe about it.
        why: String,
    },
    /// Nothing listens on the socket. The message spells out the I/O
    /// error, which is also the source.
    #[error("no store server at {} (start one with `gpupgparser serve`): {source}", path.display())]
    NoServer {
        /// The socket.
        path: PathBuf,
        /// Why connecting failed.
        #[source]
        source: std::io::Error,
    },
    /// A read or write failed. The message ends with the I/O error's,
    /// which is also the source.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The GPU failed.
    #[error(transparent)]
    Gpu(Box<gpupg_gpu::GpuError>),
    /// An error the server sent back, with its kind.
    #[error("{message}")]
    Remote {
        /// The kind the server sent.
        kind: ErrorKind,
        /// The server's one-line message.
        message: String,
    },
    /// A bug in gpupgparser: the message says which invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<gpupg_gpu::GpuError> for StoreError {
    fn from(e: gpupg_gpu::GpuError) -> Self {
        StoreError::Gpu(Box::new(e))
    }
}

impl StoreError {
    /// The kind sent over the wire.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::UnknownTable(_) => ErrorKind::UnknownTable,
            StoreError::AlreadyLoaded(_) => ErrorKind::AlreadyLoaded,
            StoreError::BadName { .. } => ErrorKind::BadName,
            StoreError::BadDevice { .. } => ErrorKind::BadDevice,
            StoreError::MemoryLimit { .. } => ErrorKind::MemoryLimit,
            StoreError::OutOfMemory { .. } => ErrorKind::OutOfMemory,
            StoreError::Load { .. } => ErrorKind::LoadFailed,
            StoreError::Freshness { .. } => ErrorKind::Freshness,
            StoreError::NotAttached { .. } => ErrorKind::NotAttached,
            StoreError::BadRequest(_) => ErrorKind::BadRequest,
            StoreError::Manifest(_) => ErrorKind::BadManifest,
            StoreError::Version { .. } => ErrorKind::Version,
            StoreError::ShuttingDown => ErrorKind::ShuttingDown,
            StoreError::SocketInUse(_) | StoreError::NotASocket(_) => ErrorKind::SocketInUse,
            StoreError::UntrustedPeer { .. } | StoreError::UnsafeSocketDir { .. } => {
                ErrorKind::UntrustedSocket
            }
            StoreError::NoServer { .. } => ErrorKind::NoServer,
            StoreError::Io { .. } => ErrorKind::Io,
            StoreError::Gpu(_) => ErrorKind::Gpu,
            StoreError::Remote { kind, .. } => *kind,
            StoreError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message and its causes on one line, as sent to clients and
    /// printed by the CLI.
    pub fn one_line(&self) -> String {
        use std::error::Error as _;
        let mut line = self.to_string();
        let mut cause = self.source();
        while let Some(c) = cause {
            let text = c.to_string();
            // A few errors spell out their cause's message and return it
            // as their source too (I/O errors under a context, a failed
            // connect): printed once.
            if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        line.replace('\n', " ")
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

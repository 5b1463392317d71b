//! The store's one error type, and the kinds it is sent over the socket as.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What went wrong, as a client sees it on the wire (`error.kind`): stable
/// names a program can branch on, whatever the message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    UnknownTable,
    AlreadyLoaded,
    BadName,
    BadDevice,
    MemoryLimit,
    OutOfMemory,
    LoadFailed,
    Freshness,
    NotAttached,
    BadRequest,
    BadManifest,
    Version,
    ShuttingDown,
    SocketInUse,
    /// The socket belongs to another user, or its directory is not this
    /// user's alone: nothing was sent.
    UntrustedSocket,
    NoServer,
    Io,
    Gpu,
    Internal,
    /// A kind this client does not know (a newer server).
    #[serde(other)]
    Other,
}

/// Every failure of the store, server and client side. Each message is one
/// line naming what to act on.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("no table named {0:?} in the store")]
    UnknownTable(String),
    #[error("a table named {0:?} is already in the store (drop it first, or load it under another --name)")]
    AlreadyLoaded(String),
    #[error("invalid table name {name:?}: {why}")]
    BadName { name: String, why: String },
    #[error("device {device} cannot be used: {detail}")]
    BadDevice { device: usize, detail: String },
    #[error(
        "{name:?} needs at least {needed} bytes of device memory, {in_use} of the limit of {limit} are in use; \
         nothing was changed"
    )]
    MemoryLimit {
        name: String,
        needed: u64,
        in_use: u64,
        limit: u64,
    },
    #[error("loading {name:?}: out of memory on device {device}; other tables are untouched")]
    OutOfMemory { name: String, device: usize },
    #[error("loading {name:?}: {source}")]
    Load {
        name: String,
        #[source]
        source: Box<gpupg_export::ExportError>,
    },
    #[error("reading the catalog state of {table}: {source}")]
    Freshness {
        table: String,
        #[source]
        source: Box<gpupg_source::SourceError>,
    },
    #[error("this client holds no attachment to revision {revision} of {name:?}")]
    NotAttached { name: String, revision: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("protocol version {got} is not supported: this side speaks version {supported}")]
    Version { got: u64, supported: u32 },
    #[error("the store server is shutting down")]
    ShuttingDown,
    #[error("{}: in use by a running store server", .0.display())]
    SocketInUse(PathBuf),
    #[error("{}: exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error(
        "{}: the process listening there runs as uid {uid}, not as this user (uid {me}) or root; \
         nothing was sent to it",
        path.display()
    )]
    UntrustedPeer { path: PathBuf, uid: u32, me: u32 },
    #[error(
        "{}: {why}; refusing it as the store socket's directory (remove it, or choose a socket \
         with --socket or $GPUPGPARSER_STORE_SOCKET)",
        dir.display()
    )]
    UnsafeSocketDir { dir: PathBuf, why: String },
    #[error("no store server at {} ({source}); start one with `gpupgparser serve`", path.display())]
    NoServer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Gpu(Box<gpupg_gpu::GpuError>),
    /// An error the server sent back, with its kind.
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
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

    /// The message on one line, as sent to clients and printed by the CLI.
    pub fn one_line(&self) -> String {
        use std::error::Error as _;
        let mut line = self.to_string();
        // Sources whose text the message does not already include.
        let mut cause = self.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
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

//! The GPU-resident table store (`gpupgparser serve`, `gpupgparser store
//! ...`): tables loaded once into device memory as Arrow columns, shared
//! with any process of the same user through CUDA IPC, and kept fresh.
//!
//! - [`protocol`]: JSON lines over a Unix socket, versioned, typed errors.
//! - [`registry`]: named tables, revisions swapped in whole, attachments,
//!   memory accounting against a limit.
//! - [`backend`]: where tables live: [`GpuBackend`] (device memory, CUDA
//!   IPC handles) or [`HostBackend`] (host memory, for tests without a GPU).
//! - [`manifest`]: what `store export` prints: schema, allocations with
//!   their IPC handles, and every column buffer's place.
//! - `freshness` (private): whether a table changed since its load, from
//!   its relfilenode, size and row-change counters.
//! - [`server`], [`client`], [`signals`], and the socket's rules in
//!   [`default_socket_path`].
//!
//! docs/store.md describes the commands, the protocol and the manifest.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gpupg_store::{Client, HostBackend, LoadSpec, Registry, Server};
//!
//! # fn main() -> Result<(), gpupg_store::StoreError> {
//! let socket = std::path::Path::new("/tmp/store-example.sock");
//! let server = Server::bind(socket, Registry::new(Arc::new(HostBackend::default()), None))?;
//! let stop = server.stop_flag();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let mut client = Client::connect(socket)?;
//! client.load(LoadSpec::new("lineorder", "host=/tmp dbname=ssb"))?;
//! println!("{}", serde_json::to_string_pretty(&client.export("lineorder")?).unwrap());
//! client.shutdown()?;
//! # let _ = (stop, thread.join());
//! # Ok(()) }
//! ```

pub mod backend;
pub mod client;
pub mod error;
mod freshness;
mod gpu_backend;
mod host_backend;
pub mod large_object;
pub mod manifest;
pub mod protocol;
pub mod registry;
mod request;
pub mod server;
pub mod signals;
mod socket;

pub use backend::{Backend, LoadedTable};
pub use client::Client;
pub use error::{ErrorKind, StoreError};
pub use gpu_backend::GpuBackend;
pub use host_backend::HostBackend;
pub use manifest::Manifest;
pub use protocol::{
    DropOutcome, HeapSync, ListReport, LoadSpec, RefreshOutcome, Request, RevisionInfo, Source,
    PROTOCOL_VERSION,
};
pub use registry::{Attachment, Registry};
pub use server::Server;
pub use socket::default_socket_path;

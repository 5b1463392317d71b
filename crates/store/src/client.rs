//! A connection to a store server: one typed method per operation.
//!
//! ```no_run
//! use gpupg_store::{default_socket_path, Client, LoadSpec};
//!
//! # fn main() -> Result<(), gpupg_store::StoreError> {
//! let mut client = Client::connect(&default_socket_path()?)?;
//! client.load(LoadSpec::new("lineorder", "host=/tmp dbname=ssb"))?;
//! let manifest = client.attach("lineorder")?; // held until release or disconnect
//! println!("{} rows in {} allocations", manifest.rows, manifest.allocations.len());
//! client.release("lineorder", manifest.revision)?;
//! # Ok(()) }
//! ```

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::StoreError;
use crate::manifest::Manifest;
use crate::protocol::{
    decode_response, encode_request, read_line, DropOutcome, ListReport, LoadSpec, RefreshOutcome,
    Request, RevisionInfo, MAX_RESPONSE_BYTES,
};
use crate::socket::verify_server;

/// One connection; attachments made through it last until it is dropped
/// (or released).
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the server at `path`, and checks that it runs as this
    /// user or root ([`StoreError::UntrustedPeer`] otherwise) before
    /// anything is sent: requests carry connection strings, passwords
    /// included.
    pub fn connect(path: &Path) -> Result<Client, StoreError> {
        let stream = UnixStream::connect(path).map_err(|source| StoreError::NoServer {
            path: path.to_path_buf(),
            source,
        })?;
        verify_server(&stream, path)?;
        let reader = stream
            .try_clone()
            .map_err(|e| StoreError::io("setting up the connection", e))?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(reader),
            writer: stream,
        })
    }

    /// Sends `request` and returns the result object.
    pub fn call(&mut self, request: &Request) -> Result<Value, StoreError> {
        let lost = |e| {
            StoreError::io(
                format!("talking to the store server at {}", self.path.display()),
                e,
            )
        };
        self.writer
            .write_all(encode_request(request).as_bytes())
            .map_err(lost)?;
        match read_line(&mut self.reader, MAX_RESPONSE_BYTES)? {
            Some(line) => decode_response(&line),
            None => Err(StoreError::io(
                format!("talking to the store server at {}", self.path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
            )),
        }
    }

    fn typed<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, StoreError> {
        let value = self.call(request)?;
        serde_json::from_value(value)
            .map_err(|e| StoreError::BadRequest(format!("unexpected result from the server: {e}")))
    }

    /// Loads a table (the server runs the export with `spec.dsn`).
    pub fn load(&mut self, spec: LoadSpec) -> Result<RevisionInfo, StoreError> {
        self.typed(&Request::Load {
            spec: Box::new(spec),
        })
    }

    /// Rebuilds `name` if its table changed.
    pub fn refresh(&mut self, name: &str) -> Result<RefreshOutcome, StoreError> {
        self.typed(&Request::Refresh { name: name.into() })
    }

    /// Removes `name` from the store.
    pub fn drop_table(&mut self, name: &str) -> Result<DropOutcome, StoreError> {
        self.typed(&Request::Drop { name: name.into() })
    }

    /// Every table and held revision; `stale` checks each against
    /// PostgreSQL.
    pub fn list(&mut self, stale: bool) -> Result<ListReport, StoreError> {
        self.typed(&Request::List { stale })
    }

    /// The current revision's manifest, not held.
    pub fn export(&mut self, name: &str) -> Result<Manifest, StoreError> {
        self.typed(&Request::Export { name: name.into() })
    }

    /// The current revision's manifest, held until [`Client::release`] or
    /// until this connection closes.
    pub fn attach(&mut self, name: &str) -> Result<Manifest, StoreError> {
        self.typed(&Request::Attach { name: name.into() })
    }

    /// Gives back one attachment to `revision` of `name`.
    pub fn release(&mut self, name: &str, revision: u64) -> Result<(), StoreError> {
        self.call(&Request::Release {
            name: name.into(),
            revision,
        })
        .map(|_| ())
    }

    /// Asks the server to stop.
    pub fn shutdown(&mut self) -> Result<(), StoreError> {
        self.call(&Request::Shutdown).map(|_| ())
    }
}

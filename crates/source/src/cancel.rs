//! CancelRequest: stops the statement another connection's backend is
//! running (a COPY waiting on a lock, a long CHECKPOINT) from outside it, as
//! libpq's `PQcancel` does. The request goes on a new socket to the address
//! the connection itself reached, in plain text even when the session uses
//! TLS: the server reads it before any TLS or authentication, and the
//! backend's secret key is what proves the sender may cancel.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::conn::{Connection, Socket, Stream};
use crate::error::SourceError;
use crate::protocol;
use crate::timeout::connect_unix;

/// How long sending one CancelRequest may take: it is sent while the user
/// waits for the export to stop.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a CancelRequest for a connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What cancelling one connection's current statement needs; it can be
/// kept and used from another thread while the connection is busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelToken {
    address: Address,
    backend_pid: i32,
    secret_key: i32,
}

impl Connection {
    /// A token that cancels this connection's statement from another thread.
    /// A token outliving its connection is harmless: the server ignores a
    /// request whose key matches no backend.
    pub fn cancel_token(&self) -> Result<CancelToken, SourceError> {
        let socket = match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        };
        let failed = |e: io::Error| self.lost("reading the server's address for cancelling", e);
        let address = match socket {
            Socket::Tcp(s) => Address::Tcp(s.peer_addr().map_err(failed)?),
            // The peer of a Unix connection is the server's socket file; the
            // endpoint names the same file when the peer has no path.
            Socket::Unix(s) => Address::Unix(
                s.peer_addr()
                    .map_err(failed)?
                    .as_pathname()
                    .map_or_else(|| PathBuf::from(self.endpoint()), PathBuf::from),
            ),
        };
        Ok(CancelToken {
            address,
            backend_pid: self.backend_pid(),
            secret_key: self.secret_key,
        })
    }
}

impl CancelToken {
    /// Asks the server to cancel whatever the connection runs now (nothing
    /// happens when it is idle). The server answers nothing: the cancelled
    /// statement fails with SQLSTATE 57014 on the connection itself.
    pub fn cancel(&self) -> Result<(), SourceError> {
        let request = protocol::cancel_request(self.backend_pid, self.secret_key);
        let sent = match &self.address {
            Address::Tcp(addr) => {
                TcpStream::connect_timeout(addr, CANCEL_TIMEOUT).and_then(|mut s| {
                    s.set_write_timeout(Some(CANCEL_TIMEOUT))?;
                    s.write_all(&request)
                })
            }
            // Bounded like a connect_timeout: a server whose listen queue is
            // full would otherwise keep a plain connect waiting forever.
            Address::Unix(path) => {
                connect_unix(path, Instant::now() + CANCEL_TIMEOUT).and_then(|mut s| {
                    s.set_write_timeout(Some(CANCEL_TIMEOUT))?;
                    s.write_all(&request)
                })
            }
        };
        sent.map_err(|source| SourceError::Connect {
            host: format!("{} (to cancel backend {})", self.target(), self.backend_pid),
            source,
        })
    }

    fn target(&self) -> String {
        match &self.address {
            Address::Tcp(a) => a.to_string(),
            Address::Unix(p) => p.display().to_string(),
        }
    }
}

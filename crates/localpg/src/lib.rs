//! A throwaway local PostgreSQL server for integration tests, `gpupgparser
//! demo` and `gpupgparser bench`.
//!
//! [`LocalServer::start`] runs `initdb` into a fresh temporary directory,
//! starts `postgres` on a free TCP port of 127.0.0.1 (and a Unix socket in the
//! same directory) and stops it and removes the directory on drop. Many
//! servers may run at once (cargo runs tests on threads): every server has its
//! own directory and port, and a port clash at start is retried on another
//! port.
//!
//! PostgreSQL refuses to run as root; when this process is root the server
//! programs run as the unprivileged `postgres` user instead.

mod bin;
mod error;
mod server;
mod tls;
mod user;

pub use bin::find_bin_dir;
pub use error::LocalPgError;
pub use server::{LocalServer, LocalServerOptions, TEST_PASSWORD};

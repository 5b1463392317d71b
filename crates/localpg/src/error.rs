//! Errors of the local server, each naming what failed and where.

use std::path::PathBuf;

use thiserror::Error;

/// Why the throwaway server could not be set up, started or used.
#[derive(Debug, Error)]
pub enum LocalPgError {
    /// The PostgreSQL server programs are not installed where looked.
    #[error("PostgreSQL server programs (initdb, pg_ctl, postgres) not found; looked in: {tried}; install the server (Debian/Ubuntu: apt-get install postgresql) or set GPUPGPARSER_PG_BIN to its bin directory")]
    NoBinDir {
        /// The places searched, in order.
        tried: String,
    },

    /// A file or directory operation failed. The message ends with the I/O
    /// error's, which is also the source.
    #[error("{what} ({path}): {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },

    /// Running as root with no `postgres` user to run the server as.
    #[error("running as root, but PostgreSQL refuses to run as root and there is no user 'postgres' to run it as; create one (useradd -r postgres) or run as an unprivileged user")]
    NoPostgresUser,

    /// A server program (initdb, pg_ctl, openssl) failed.
    #[error("{program} failed ({status}): {output}")]
    Command {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The last lines of its output, on one line.
        output: String,
    },

    /// The server did not come up.
    #[error("PostgreSQL server in {data_dir} did not start on 127.0.0.1:{port}: {log_tail}")]
    Start {
        /// The server's data directory.
        data_dir: PathBuf,
        /// The port it was to listen on.
        port: u16,
        /// The last lines of its log, on one line.
        log_tail: String,
    },

    /// A statement run through psql failed.
    #[error("psql against 127.0.0.1:{port} failed running `{sql}`: {stderr}")]
    Psql {
        /// The server's port.
        port: u16,
        /// The statements.
        sql: String,
        /// What psql printed.
        stderr: String,
    },

    /// The TLS certificate for the test server could not be made.
    #[error("generating the self-signed TLS certificate for localhost: {0}")]
    Cert(String),
}

/// Squeezes multi-line program output into one line for an error message,
/// keeping only its last `max_lines` lines (the ones that say what failed).
pub(crate) fn one_line_tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_on_one_line() {
        let t = one_line_tail("a\n\nb\nc\nd\n", 2);
        assert_eq!(t, "c | d");
        assert_eq!(one_line_tail("", 3), "");
    }
}

//! Errors of the local server, each naming what failed and where.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LocalPgError {
    #[error("PostgreSQL server programs (initdb, pg_ctl, postgres) not found; looked in: {tried}; install the server (Debian/Ubuntu: apt-get install postgresql) or set GPUPGPARSER_PG_BIN to its bin directory")]
    NoBinDir { tried: String },

    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("running as root, but PostgreSQL refuses to run as root and there is no user 'postgres' to run it as; create one (useradd -r postgres) or run as an unprivileged user")]
    NoPostgresUser,

    #[error("{program} failed ({status}): {output}")]
    Command {
        program: String,
        status: String,
        output: String,
    },

    #[error("PostgreSQL server in {data_dir} did not start on 127.0.0.1:{port}: {log_tail}")]
    Start {
        data_dir: PathBuf,
        port: u16,
        log_tail: String,
    },

    #[error("psql against 127.0.0.1:{port} failed running `{sql}`: {stderr}")]
    Psql {
        port: u16,
        sql: String,
        stderr: String,
    },

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

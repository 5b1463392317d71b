//! The errors of talking to PostgreSQL. Each one says what failed and where
//! (server, table, column, protocol phase) on one line.

use gpupg_format::copy::FramingError;
use thiserror::Error;

/// Why talking to PostgreSQL failed. Leaf variants that hold an I/O or
/// framing error end their message with its message and return it as the
/// source as well: a chain printer skips a cause the line already ends with.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The connection string or environment is malformed.
    #[error("invalid connection string: {0}")]
    Dsn(String),

    /// The connection service cannot be used: not defined in any service
    /// file, or its section is malformed (the message names file and line).
    #[error("service \"{service}\": {message}")]
    Service {
        /// The service's name.
        service: String,
        /// What is wrong, with file and line.
        message: String,
    },

    /// `connect_timeout` passed before the session was ready.
    #[error("connection to {host} timed out after {seconds} s (connect_timeout) while {during}")]
    ConnectTimeout {
        /// The server, as `host:port` or the socket.
        host: String,
        /// The timeout.
        seconds: u64,
        /// The step that was waiting.
        during: String,
    },

    /// The TCP or Unix-socket connection could not be opened.
    #[error("cannot connect to {host}: {source}")]
    Connect {
        /// The server, as `host:port` or the socket.
        host: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },

    /// TLS could not be negotiated or the certificate was rejected.
    #[error("TLS with {host}: {message}")]
    Tls {
        /// The server.
        host: String,
        /// What failed.
        message: String,
    },

    /// The server rejected the credentials, or needs some we do not have.
    #[error("authentication of user \"{user}\" at {host} failed: {message}")]
    Auth {
        /// The server.
        host: String,
        /// The user name sent.
        user: String,
        /// The server's message, or what is missing.
        message: String,
    },

    /// The server answered with an ErrorResponse.
    #[error(
        "{context}: {message} (SQLSTATE {code}){}{}",
        opt_part(" DETAIL: ", detail),
        opt_part(" HINT: ", hint)
    )]
    Server {
        /// The SQLSTATE, e.g. `42P01`.
        code: String,
        /// The server's primary message.
        message: String,
        /// The server's DETAIL, if any.
        detail: Option<String>,
        /// The server's HINT, if any.
        hint: Option<String>,
        /// What we were doing and where, e.g. "COPY of partition 3 on
        /// db:5432".
        context: String,
    },

    /// The socket closed or failed in the middle of an exchange.
    #[error("connection to {host} lost while {during}: {reason}")]
    ConnectionLost {
        /// The server.
        host: String,
        /// The exchange under way.
        during: String,
        /// What the socket said.
        reason: String,
    },

    /// The server sent something the protocol does not allow here.
    #[error("protocol error from {host} while {during}: {message}")]
    Protocol {
        /// The server.
        host: String,
        /// The exchange under way.
        during: String,
        /// What was wrong.
        message: String,
    },

    /// The binary COPY stream itself is malformed.
    #[error("malformed binary COPY data from {host} while {during}: {source}")]
    Framing {
        /// The server.
        host: String,
        /// The COPY under way.
        during: String,
        /// What was malformed.
        #[source]
        source: FramingError,
    },

    /// The server is too old or configured in a way we cannot read.
    #[error("server {host} is not supported: {message}")]
    UnsupportedServer {
        /// The server.
        host: String,
        /// What is missing or unreadable.
        message: String,
    },

    /// No such table, or not on the search path.
    #[error("table {table} does not exist or is not on the search_path ({NAME_HINT})")]
    NoSuchTable {
        /// The name as the user gave it.
        table: String,
    },

    /// The server cannot parse the name the user gave as a table name.
    #[error("`{table}` is not a valid table name: {reason} ({NAME_HINT})")]
    BadTableName {
        /// The name as the user gave it.
        table: String,
        /// The server's reason.
        reason: String,
    },

    /// A column asked for that the table does not have.
    #[error("column \"{column}\" does not exist in table {table} (its columns: {available}; names are matched exactly, as PostgreSQL spells them)")]
    NoSuchColumn {
        /// The table.
        table: String,
        /// The column asked for.
        column: String,
        /// The table's columns, comma-separated.
        available: String,
    },

    /// The user may not read these columns (checked before any COPY).
    #[error("permission denied: user \"{user}\" may not read column(s) {columns} of table {table} (ask for GRANT SELECT on it, or leave those columns out)")]
    NoPrivilege {
        /// The user connected as.
        user: String,
        /// The table.
        table: String,
        /// The columns it may not read, comma-separated.
        columns: String,
    },

    /// A column of a type no decoder reads (the request may have the server
    /// cast such columns to text: `UnsupportedTypes::CastToText`).
    #[error("column \"{column}\" of {table} has type {type_name}, which gpupgparser cannot decode; have the server cast it to text, or cast it in a query")]
    UnsupportedType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type as the server names it.
        type_name: String,
    },

    /// The connection broke earlier (e.g. a COPY was abandoned) and cannot be
    /// used again.
    #[error("connection to {host} is unusable after an earlier failure; open a new one")]
    Broken {
        /// The server.
        host: String,
    },

    /// The consumer of COPY chunks stopped (e.g. a decoder failed).
    #[error("COPY consumer stopped: {0}")]
    Downstream(String),

    /// The heap path cannot read this table (and why); the automatic source
    /// choice then uses COPY.
    #[error("the heap path cannot read {table}: {reason}")]
    HeapUnavailable {
        /// The table.
        table: String,
        /// Why not.
        reason: String,
    },
}

/// How to give a table name, for errors about one.
const NAME_HINT: &str =
    "give it as schema.name or name; names are SQL: quote mixed case and odd characters, as in '\"My Table\"'";

impl SourceError {
    /// This error of looking up `name` with `to_regclass` as an error about
    /// the name the user gave: the server could not parse it (an
    /// unbalanced quote, too many dots, another database). Others stay.
    pub fn about_table_name(self, name: &str) -> SourceError {
        match self {
            // Syntax and name errors, invalid values, cross-database names.
            SourceError::Server { code, message, .. }
                if ["42", "22", "0A", "3F"].iter().any(|c| code.starts_with(c)) =>
            {
                SourceError::BadTableName {
                    table: name.to_string(),
                    reason: message,
                }
            }
            other => other,
        }
    }

    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            SourceError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// `prefix + text` with line breaks flattened, or nothing: keeps server
/// details and hints on the error's single line.
fn opt_part(prefix: &str, text: &Option<String>) -> String {
    match text {
        Some(t) => format!(
            "{prefix}{}",
            t.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_is_one_line_with_context() {
        let e = SourceError::Server {
            code: "42501".into(),
            message: "permission denied for table t".into(),
            detail: Some("line one\nline two".into()),
            hint: None,
            context: "COPY of partition 2 on db:5432".into(),
        };
        let s = e.to_string();
        assert_eq!(
            s,
            "COPY of partition 2 on db:5432: permission denied for table t (SQLSTATE 42501) DETAIL: line one line two"
        );
        assert_eq!(e.sqlstate(), Some("42501"));
    }
}

//! The module's exceptions: `gpupgparser.Error` and one subclass per kind
//! of failure a caller may want to handle apart, each with the library's
//! one-line message (the CLI's, less the names of its flags).

use std::error::Error as StdError;

use gpupg_export::{ExportError, RequestError};
use gpupg_source::SourceError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    gpupgparser,
    Error,
    PyException,
    "Every error of gpupgparser; the message is the CLI's one line."
);
create_exception!(
    gpupgparser,
    ConnectionError,
    Error,
    "The server could not be reached, refused the login, or the connection was lost."
);
create_exception!(
    gpupgparser,
    NotFound,
    Error,
    "No such table or column, or a table name the server cannot parse."
);
create_exception!(
    gpupgparser,
    Unsupported,
    Error,
    "A column type no decoder reads, or a server gpupgparser cannot read."
);
create_exception!(
    gpupgparser,
    Cancelled,
    Error,
    "The export was interrupted (a stream closed early, or Ctrl-C)."
);
create_exception!(
    gpupgparser,
    InvalidRequest,
    Error,
    "An option no export can run with, or one this table or server refuses."
);

/// `e` and its causes on one line, each cause once, as the CLI prints them.
pub fn one_line(e: &(dyn StdError + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        // Some errors spell out their cause's message and return it as their
        // source too (a failed connect): it is said once.
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}

/// The Python exception for a failed export.
pub fn export_error(e: &ExportError) -> PyErr {
    let msg = one_line(e);
    match e {
        ExportError::Source(s) => match s {
            SourceError::NoSuchTable { .. }
            | SourceError::BadTableName { .. }
            | SourceError::NoSuchColumn { .. } => NotFound::new_err(msg),
            SourceError::UnsupportedType { .. } | SourceError::UnsupportedServer { .. } => {
                Unsupported::new_err(msg)
            }
            SourceError::Dsn(_)
            | SourceError::Service { .. }
            | SourceError::ConnectTimeout { .. }
            | SourceError::Connect { .. }
            | SourceError::Tls { .. }
            | SourceError::Auth { .. }
            | SourceError::ConnectionLost { .. } => ConnectionError::new_err(msg),
            _ => Error::new_err(msg),
        },
        ExportError::Cancelled => Cancelled::new_err(msg),
        ExportError::Request(_)
        | ExportError::Invalid(_)
        | ExportError::HeapRefused(_)
        | ExportError::FilterNotACondition { .. } => InvalidRequest::new_err(msg),
        _ => Error::new_err(msg),
    }
}

/// The Python exception for a refused option.
pub fn request_error(e: &RequestError) -> PyErr {
    InvalidRequest::new_err(one_line(e))
}

/// The Python exception for a connection string that cannot be resolved.
pub fn source_error(e: SourceError) -> PyErr {
    export_error(&ExportError::Source(e))
}

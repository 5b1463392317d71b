//! The keyword arguments of `read_table`, `read_sql` and `export` to an
//! `ExportRequest`, with the CLI's names, values and defaults.

use std::path::Path;
use std::str::FromStr;

use gpupg_decode::TypeChoiceError;
use gpupg_export::{Engine, ExportRequest, Output, Source, Target};
use gpupg_sink::{Compression, Format, FormatChoiceError, SinkOptions};
use gpupg_source::{ConnectConfig, UnsupportedTypes};
use pyo3::PyResult;

use crate::errors::{request_error, source_error, InvalidRequest};

/// The options of `read_table`, `read_sql` and `export`, with the CLI's
/// defaults ([`Options::new`]); each function sets the ones it takes.
pub struct Options {
    /// `dsn`: a libpq connection string or URL; `None`: the environment's.
    pub dsn: Option<String>,
    /// `columns`.
    pub columns: Option<Vec<String>>,
    /// `where`.
    pub filter: Option<String>,
    /// `parallel`: connections.
    pub parallel: Option<usize>,
    /// `source`: auto, copy or heap.
    pub source: String,
    /// `chunk_mib`: the size of one chunk buffer (1 to 1024 MiB).
    pub chunk_mib: Option<usize>,
    /// `engine`: auto, cpu or gpu.
    pub engine: String,
    /// How the columns' types become Arrow's.
    pub types: TypeArgs,
}

/// The type keywords every read and export takes, as the CLI's flags of
/// the same names.
pub struct TypeArgs {
    /// `numeric`: text, float64 or decimal:SCALE.
    pub numeric: String,
    /// `enums`: utf8 or dictionary.
    pub enums: String,
    /// `arrays`: list or struct.
    pub arrays: String,
    /// `cast_unsupported`: the server casts columns of unsupported types
    /// to text instead of the export failing.
    pub cast_unsupported: bool,
}

impl Options {
    /// Every row and column of the target, the CLI's defaults otherwise.
    pub fn new(dsn: Option<String>, engine: String, types: TypeArgs) -> Options {
        Options {
            dsn,
            columns: None,
            filter: None,
            parallel: None,
            source: "auto".into(),
            chunk_mib: None,
            engine,
            types,
        }
    }

    /// The request for `target` into `output`, written in `sink.format`.
    pub fn request(
        &self,
        target: Target,
        output: Output,
        sink: SinkOptions,
    ) -> PyResult<ExportRequest<'static>> {
        let connect = ConnectConfig::resolve(self.dsn.as_deref()).map_err(source_error)?;
        let source: Source = self.source.parse().map_err(|e| request_error(&e))?;
        let engine: Engine = self.engine.parse().map_err(|e| request_error(&e))?;
        let t = &self.types;
        let types = gpupg_export::type_options(
            sink.format,
            choice("numeric", &t.numeric)?,
            choice("enums", &t.enums)?,
            choice("arrays", &t.arrays)?,
        );
        ExportRequest::builder(connect, target, output)
            .columns(self.columns.clone())
            .filter(self.filter.clone())
            .parallel(self.parallel)
            .chunk_mib(self.chunk_mib)
            .engine(engine)
            .source(source)
            .types(types)
            .unsupported(if t.cast_unsupported {
                UnsupportedTypes::CastToText
            } else {
                UnsupportedTypes::Error
            })
            .sink(sink)
            .build()
            .map_err(|e| request_error(&e))
    }
}

/// A type keyword's value as the library parses it, refused in this
/// module's words (`numeric="float32": expected ...`).
fn choice<T: FromStr<Err = TypeChoiceError>>(keyword: &str, value: &str) -> PyResult<T> {
    value
        .parse()
        .map_err(|e| InvalidRequest::new_err(format!("{keyword}={value:?}: {e}")))
}

/// The sink of an in-memory stream: Arrow's types, nothing compressed.
pub fn stream_sink() -> SinkOptions {
    SinkOptions {
        format: Format::Arrow,
        compression: Compression::None,
        ..SinkOptions::default()
    }
}

/// The sink of `export()`: the format from `format=` or the file's
/// extension, the compression from `compression=` or the format's default.
pub fn file_sink(
    path: &Path,
    format: Option<&str>,
    compression: Option<&str>,
    overwrite: bool,
) -> PyResult<SinkOptions> {
    let given = match format.map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("parquet") => Some(Format::Parquet),
        Some("arrow") => Some(Format::Arrow),
        Some(f) => {
            return Err(InvalidRequest::new_err(format!(
                "format={f:?}: expected parquet or arrow"
            )))
        }
    };
    let format = output_format(path, given)?;
    let compression = match compression {
        Some(c) => c
            .parse()
            .map_err(|e| InvalidRequest::new_err(format!("compression={c:?}: {e}")))?,
        None => format.default_compression(),
    };
    Ok(SinkOptions {
        format,
        compression,
        overwrite,
        ..SinkOptions::default()
    })
}

/// The format `path` is written in ([`gpupg_sink::output_format`]), in
/// this module's words (`format=`).
fn output_format(path: &Path, given: Option<Format>) -> PyResult<Format> {
    gpupg_sink::output_format(path, given).map_err(|e| {
        InvalidRequest::new_err(match e {
            FormatChoiceError::UnknownExtension(ext) => format!(
                "{}: .{ext} is not an output format (Parquet: .parquet, .pq; Arrow IPC: \
                 .arrow, .arrows, .ipc, .feather; or give format=)",
                path.display()
            ),
            FormatChoiceError::Disagree { named, given } => format!(
                "{}: the name says {named} but format= says {given}",
                path.display()
            ),
        })
    })
}

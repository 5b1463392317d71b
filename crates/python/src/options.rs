//! The keyword arguments of `read_table`, `read_sql` and `export` to an
//! `ExportRequest`, with the CLI's names, values and defaults.

use std::path::Path;

use gpupg_decode::{IntervalRepr, TypeOptions, UnconstrainedNumeric};
use gpupg_export::{Engine, ExportRequest, Output, Source, Target};
use gpupg_sink::{Compression, Format, FormatChoiceError, SinkOptions, DEFAULT_ZSTD_LEVEL};
use gpupg_source::ConnectConfig;
use pyo3::PyResult;

use crate::errors::{request_error, source_error, InvalidRequest};

/// The options every read and export takes.
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
    /// `engine`: auto, cpu or gpu.
    pub engine: String,
    /// `numeric`: text, float64 or decimal:SCALE.
    pub numeric: String,
    /// `chunk_mib`: the size of one chunk buffer (1 to 1024 MiB).
    pub chunk_mib: Option<usize>,
}

impl Options {
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
        let types = TypeOptions {
            // Parquet has no signed interval type: a struct keeps all three parts.
            interval: match sink.format {
                Format::Parquet => IntervalRepr::Struct,
                Format::Arrow => IntervalRepr::MonthDayNano,
            },
            numeric: parse_numeric(&self.numeric)?,
            ..TypeOptions::default()
        };
        ExportRequest::builder(connect, target, output)
            .columns(self.columns.clone())
            .filter(self.filter.clone())
            .parallel(self.parallel)
            .chunk_mib(self.chunk_mib)
            .engine(engine)
            .source(source)
            .types(types)
            .sink(sink)
            .build()
            .map_err(|e| request_error(&e))
    }
}

/// `numeric=`: how numeric without a usable precision becomes Arrow.
fn parse_numeric(s: &str) -> PyResult<UnconstrainedNumeric> {
    Ok(match s {
        "text" => UnconstrainedNumeric::Text,
        "float64" => UnconstrainedNumeric::Float64,
        _ => match s.strip_prefix("decimal:") {
            Some(scale) => {
                let scale = scale
                    .parse::<i8>()
                    .ok()
                    .filter(|s| (-38..=38).contains(s))
                    .ok_or_else(|| {
                        InvalidRequest::new_err(format!(
                            "numeric={s:?}: the scale must be a number from -38 to 38"
                        ))
                    })?;
                UnconstrainedNumeric::Decimal128 { scale }
            }
            None => {
                return Err(InvalidRequest::new_err(format!(
                    "numeric={s:?}: expected text, float64 or decimal:SCALE"
                )))
            }
        },
    })
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
        None => match format {
            Format::Parquet => Compression::Zstd(DEFAULT_ZSTD_LEVEL),
            Format::Arrow => Compression::None,
        },
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

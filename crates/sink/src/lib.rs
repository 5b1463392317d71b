//! Output stage of gpupgparser: writes Arrow record batches to Parquet or Arrow IPC files.
//!
//! A sink is shared by many decoder threads. Each thread encodes and compresses its own
//! batches (the expensive part) and only the append of the finished bytes to the file is
//! serialized (Parquet: column chunks of a row group; Arrow IPC: a record batch message), so
//! encoding scales with the number of writer threads.
//!
//! Output is atomic: a sink writes a hidden temporary file next to the destination and renames
//! it into place in [`Sink::finish`]; a sink dropped without `finish` removes its temporary
//! file, so a failed or interrupted export leaves nothing behind.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, IntervalUnit, Schema, SchemaRef};
use parquet::errors::ParquetError;

mod ipc;
mod parquet_sink;
mod target;
mod temp;

/// The file format written by a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Apache Parquet, columnar and compressed per column chunk.
    #[default]
    Parquet,
    /// The Arrow IPC *file* format (random access, with footer), a.k.a. Feather v2.
    Arrow,
}

impl Format {
    /// The compression a file of this format gets when none is asked for:
    /// zstd at [`DEFAULT_ZSTD_LEVEL`] for Parquet, none for Arrow IPC
    /// (whose readers map it into memory).
    pub fn default_compression(self) -> Compression {
        match self {
            Format::Parquet => Compression::Zstd(DEFAULT_ZSTD_LEVEL),
            Format::Arrow => Compression::None,
        }
    }

    /// File name extension used for `--output-dir` partition files.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }
}

/// Extensions that name a format, for an output file given no format.
const PARQUET_EXTENSIONS: [&str; 2] = ["parquet", "pq"];
const ARROW_EXTENSIONS: [&str; 4] = ["arrow", "arrows", "ipc", "feather"];

/// Why an output file's name and the format asked for do not give one
/// format; the caller words it with its own option's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatChoiceError {
    /// The extension (lower case, without the dot) names no format and none
    /// was given.
    UnknownExtension(String),
    /// The name says one format, the caller another.
    Disagree {
        /// The name's format.
        named: Format,
        /// The format asked for.
        given: Format,
    },
}

/// The format an output file is written in: `given` when there is one,
/// else its extension's. A file without an extension is Parquet; an
/// extension naming no supported format (`.csv`) is refused rather than
/// written as Parquet, and so is one naming the other format than `given`.
pub fn output_format(path: &Path, given: Option<Format>) -> Result<Format, FormatChoiceError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let named = match ext {
        None => None,
        Some(e) if PARQUET_EXTENSIONS.contains(&e.as_str()) => Some(Format::Parquet),
        Some(e) if ARROW_EXTENSIONS.contains(&e.as_str()) => Some(Format::Arrow),
        Some(e) => return given.ok_or(FormatChoiceError::UnknownExtension(e)),
    };
    match (named, given) {
        (Some(named), Some(given)) if named != given => {
            Err(FormatChoiceError::Disagree { named, given })
        }
        (n, g) => Ok(g.or(n).unwrap_or(Format::Parquet)),
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        })
    }
}

/// Compression codec. Parquet supports all of them; Arrow IPC only zstd, lz4 and none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at the given level (1..=22, or zstd's faster negative levels down to
    /// [`ZSTD_FASTEST_LEVEL`]); level 1 is the default because it is several times faster than
    /// the higher levels for a few percent larger files.
    Zstd(i32),
    /// Snappy: fast, light compression (Parquet only).
    Snappy,
    /// Parquet: LZ4_RAW (the Hadoop-framed LZ4 codec is deprecated); Arrow IPC: LZ4_FRAME.
    Lz4,
    /// Gzip at its default level (Parquet only).
    Gzip,
    /// Brotli at its default level (Parquet only).
    Brotli,
    /// Uncompressed.
    None,
}

/// Default zstd level: the speed target leaves no room for the slower levels.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// zstd's fastest ("negative") level: levels below 1 trade compression for
/// speed (`ZSTD_minCLevel`).
pub const ZSTD_FASTEST_LEVEL: i32 = -131_072;

/// Default rows per Parquet row group when `SinkOptions::row_group_rows` is 0.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1 << 20;

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_ZSTD_LEVEL)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
            Compression::Snappy => f.write_str("snappy"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Gzip => f.write_str("gzip"),
            Compression::Brotli => f.write_str("brotli"),
            Compression::None => f.write_str("none"),
        }
    }
}

impl FromStr for Compression {
    type Err = SinkError;

    /// Parses `zstd`, `zstd:LEVEL`, `snappy`, `lz4`, `gzip`, `brotli`, `none` (case-insensitive;
    /// `uncompressed` is accepted for `none`).
    fn from_str(spec: &str) -> Result<Self, SinkError> {
        let invalid = |reason: String| SinkError::InvalidCompression {
            spec: spec.to_string(),
            reason,
        };
        let lower = spec.trim().to_ascii_lowercase();
        let (name, level) = match lower.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (lower.as_str(), None),
        };
        let codec = match name {
            "zstd" => {
                let level = match level {
                    None => DEFAULT_ZSTD_LEVEL,
                    Some(l) => l
                        .parse::<i32>()
                        .map_err(|_| invalid(format!("zstd level {l:?} is not an integer")))?,
                };
                // zstd's own range; 0 would mean its default level (3).
                if !(ZSTD_FASTEST_LEVEL..=22).contains(&level) || level == 0 {
                    return Err(invalid(format!(
                        "zstd level {level} is outside {ZSTD_FASTEST_LEVEL}..=-1 and 1..=22"
                    )));
                }
                return Ok(Compression::Zstd(level));
            }
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "gzip" => Compression::Gzip,
            "brotli" => Compression::Brotli,
            "none" | "uncompressed" => Compression::None,
            other => {
                return Err(invalid(format!(
                    "unknown codec {other:?} (expected zstd, zstd:LEVEL, snappy, lz4, gzip, brotli or none)"
                )))
            }
        };
        match level {
            Some(_) => Err(invalid(format!("only zstd takes a level, not {name}"))),
            None => Ok(codec),
        }
    }
}

/// How a sink writes its file(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOptions {
    /// Parquet or Arrow IPC.
    pub format: Format,
    /// The codec every column (Parquet) or buffer (Arrow IPC) is compressed with.
    pub compression: Compression,
    /// Replace existing output files; without it an existing file is refused.
    pub overwrite: bool,
    /// Rows per Parquet row group (0: [`DEFAULT_ROW_GROUP_ROWS`]). Batches are split to respect
    /// it and small batches of different `write` calls are gathered into one row group, so
    /// groups have exactly this many rows except up to one partial group per writer thread.
    /// Arrow IPC writes each batch as one record batch and ignores it.
    pub row_group_rows: usize,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            format: Format::Parquet,
            compression: Compression::default(),
            overwrite: false,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// What a sink wrote.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutputStats {
    /// Final path and size in bytes of each file written.
    pub files: Vec<(PathBuf, u64)>,
    /// Rows written over all files.
    pub rows: u64,
    /// Time spent encoding and compressing, summed over the writing threads (they encode in
    /// parallel). Arrow IPC: includes mapping batch dictionaries to the file-wide ones.
    pub encode_seconds: f64,
    /// Time spent holding the file lock appending encoded data, plus the footer in `finish`:
    /// the serialized part of writing.
    pub write_seconds: f64,
}

/// A destination that many worker threads write to at once.
pub trait Sink: Send + Sync {
    /// Encodes `batch` in the calling thread (column encoding or IPC buffer copies, and
    /// compression) and appends the result; only the final append to the file is serialized.
    /// Batches from different threads may land in any order. After an error the sink is
    /// unusable: later writes fail and it should be dropped, which removes its temporary file.
    fn write(&self, batch: &RecordBatch) -> Result<(), SinkError>;

    /// Finishes the file(s): flushes buffered rows, writes the footer (no fsync) and renames
    /// each temporary file to its final name. Returns what was written.
    fn finish(self: Box<Self>) -> Result<OutputStats, SinkError>;
}

/// Errors of the output stage; each displays as one line naming the file (and column).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The output file exists and overwriting was not asked for.
    #[error("{}: output file already exists (use overwrite to replace it)", path.display())]
    Exists {
        /// The output file.
        path: PathBuf,
    },

    /// Creating, writing, syncing or renaming a file failed.
    #[error("{}: I/O error while {during}: {source}", path.display())]
    Io {
        /// The output file.
        path: PathBuf,
        /// The step that failed.
        during: &'static str,
        /// The system's error.
        source: std::io::Error,
    },

    /// A type or option combination the format cannot write.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is unsupported.
        what: String,
    },

    /// A compression name or level that cannot be used.
    #[error("invalid compression {spec:?}: {reason}")]
    InvalidCompression {
        /// The compression as given.
        spec: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// An argument no file can be written with (a bad file stem, two
    /// columns of one name).
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What is wrong.
        what: String,
    },

    /// A batch whose schema differs from the one the sink was created with.
    #[error("{}: batch does not match the sink schema at column {column:?}: {detail}", path.display())]
    SchemaMismatch {
        /// The output file.
        path: PathBuf,
        /// The first column that differs.
        column: String,
        /// How it differs.
        detail: String,
    },

    /// The Parquet writer could not encode a column.
    #[error("{}: cannot encode column {column:?} as Parquet: {source}", path.display())]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The Parquet writer's error.
        source: ParquetError,
    },

    /// The Parquet writer failed outside one column (footer, row group).
    #[error("{}: Parquet error while {during}: {source}", path.display())]
    Parquet {
        /// The output file.
        path: PathBuf,
        /// The step that failed.
        during: &'static str,
        /// The Parquet writer's error.
        source: ParquetError,
    },

    /// The Arrow IPC writer failed.
    #[error("{}: Arrow error while {during}: {source}", path.display())]
    Arrow {
        /// The output file.
        path: PathBuf,
        /// The step that failed.
        during: &'static str,
        /// The Arrow writer's error.
        source: ArrowError,
    },

    /// A write after an earlier one failed (the file is not finished).
    #[error("{}: the sink failed earlier and accepts no more data", path.display())]
    Failed {
        /// The output file.
        path: PathBuf,
    },
}

/// Creates a sink writing one file at `path`. Refuses an existing file unless
/// `opts.overwrite`; nothing appears at `path` until [`Sink::finish`] succeeds.
pub fn create_file_sink(
    path: &Path,
    schema: SchemaRef,
    opts: &SinkOptions,
) -> Result<Box<dyn Sink>, SinkError> {
    validate(&schema, opts)?;
    temp::remove_stale(&target::directory_of(path));
    create_validated(path, schema, opts)
}

/// [`create_file_sink`] once the options are checked and the directory's
/// stale temporary files removed.
fn create_validated(
    path: &Path,
    schema: SchemaRef,
    opts: &SinkOptions,
) -> Result<Box<dyn Sink>, SinkError> {
    let (target, file) = target::OutputTarget::create(path, opts.overwrite)?;
    match opts.format {
        Format::Parquet => Ok(Box::new(parquet_sink::ParquetSink::new(
            target, file, schema, opts,
        )?)),
        Format::Arrow => Ok(Box::new(ipc::IpcSink::new(target, file, schema, opts)?)),
    }
}

/// `--output-dir`: one sink per partition, writing `dir/{stem}-{i:05}.{ext}`; partition `i`
/// should be written only by the worker that owns it. The directory is created if missing.
/// All names are checked before any file is created, so an existing file (without overwrite)
/// is refused without leaving anything behind.
pub fn create_dir_sinks(
    dir: &Path,
    stem: &str,
    partitions: usize,
    schema: SchemaRef,
    opts: &SinkOptions,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
        return Err(SinkError::InvalidArgument {
            what: format!(
                "file stem {stem:?} must be non-empty, contain no path separator and not start with '.'"
            ),
        });
    }
    validate(&schema, opts)?;
    std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
        path: dir.to_path_buf(),
        during: "creating the output directory",
        source,
    })?;
    let paths: Vec<PathBuf> = (0..partitions)
        .map(|i| dir.join(format!("{stem}-{i:05}.{}", opts.format.extension())))
        .collect();
    for path in &paths {
        target::check_destination(path, opts.overwrite)?;
    }
    // Files of the same set beyond this export's count (an earlier export
    // over more connections) would be read with the new ones as one table:
    // refused here, or with overwrite removed once the export succeeded
    // (`remove_other_parts`).
    if !opts.overwrite {
        if let Some(path) = other_parts(dir, stem, opts.format, partitions)?
            .into_iter()
            .next()
        {
            return Err(SinkError::Exists { path });
        }
    }
    temp::remove_stale(dir);
    paths
        .iter()
        .map(|path| create_validated(path, schema.clone(), opts))
        .collect()
}

/// The files `dir/{stem}-NNNNN.{ext}` that [`create_dir_sinks`] made for
/// partitions `partitions` and above (so not this export's), in name order.
fn other_parts(
    dir: &Path,
    stem: &str,
    format: Format,
    partitions: usize,
) -> Result<Vec<PathBuf>, SinkError> {
    let suffix = format!(".{}", format.extension());
    let entries = std::fs::read_dir(dir).map_err(|source| SinkError::Io {
        path: dir.to_path_buf(),
        during: "listing the output directory",
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let index = name
                .to_str()
                .and_then(|n| n.strip_prefix(stem))
                .and_then(|n| n.strip_prefix('-'))
                .and_then(|n| n.strip_suffix(suffix.as_str()))
                .filter(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok());
            index.is_some_and(|i| i >= partitions)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found)
}

/// After an `--output-dir` export with overwrite succeeded: removes the
/// files of the same set that it did not write (partitions `partitions` and
/// above, left by an earlier export over more connections), so the
/// directory holds exactly this export's rows.
pub fn remove_other_parts(
    dir: &Path,
    stem: &str,
    format: Format,
    partitions: usize,
) -> Result<(), SinkError> {
    for path in other_parts(dir, stem, format, partitions)? {
        std::fs::remove_file(&path).map_err(|source| SinkError::Io {
            path: path.clone(),
            during: "removing a file of an earlier export of the same set",
            source,
        })?;
    }
    Ok(())
}

/// Writes `bytes` to `path` as the sinks write their files: under a
/// temporary name in the same directory, renamed into place when complete,
/// an existing file refused unless `overwrite`. A failure leaves nothing.
pub fn write_file(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), SinkError> {
    use std::io::Write;
    temp::remove_stale(&target::directory_of(path));
    let (target, mut file) = target::OutputTarget::create(path, overwrite)?;
    file.write_all(bytes).map_err(|source| SinkError::Io {
        path: path.to_path_buf(),
        during: "writing",
        source,
    })?;
    drop(file);
    target.commit().map(|_| ())
}

/// Rejects option/schema combinations before any file is created.
fn validate(schema: &Schema, opts: &SinkOptions) -> Result<(), SinkError> {
    let fields = schema.fields();
    for (i, field) in fields.iter().enumerate() {
        // Both formats would store it, but readers such as pyarrow refuse a
        // file with two columns of one name.
        if fields[..i].iter().any(|f| f.name() == field.name()) {
            return Err(SinkError::InvalidArgument {
                what: format!("two columns are named {:?}", field.name()),
            });
        }
    }
    match opts.format {
        Format::Parquet => {
            parquet_sink::parquet_compression(opts.compression)?;
            for field in schema.fields() {
                if contains_type(field.data_type(), &|t| {
                    matches!(
                        t,
                        DataType::Interval(IntervalUnit::MonthDayNano) | DataType::Union(..)
                    )
                }) {
                    return Err(SinkError::Unsupported {
                        what: format!(
                            "column {:?} of type {} cannot be written to Parquet",
                            field.name(),
                            field.data_type()
                        ),
                    });
                }
            }
        }
        Format::Arrow => {
            ipc::ipc_compression(opts.compression)?;
        }
    }
    Ok(())
}

/// Whether `pred` holds for `dt` or any type nested in it.
fn contains_type(dt: &DataType, pred: &dyn Fn(&DataType) -> bool) -> bool {
    if pred(dt) {
        return true;
    }
    match dt {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => contains_type(f.data_type(), pred),
        DataType::Struct(fields) => fields.iter().any(|f| contains_type(f.data_type(), pred)),
        DataType::Dictionary(_, v) => contains_type(v, pred),
        _ => false,
    }
}

/// Checks that `batch` has the sink's column count and types (names and metadata may differ:
/// the file uses the sink schema's).
fn check_batch_schema(path: &Path, schema: &Schema, batch: &RecordBatch) -> Result<(), SinkError> {
    if batch.num_columns() != schema.fields().len() {
        return Err(SinkError::SchemaMismatch {
            path: path.to_path_buf(),
            column: String::new(),
            detail: format!(
                "batch has {} columns, the sink {}",
                batch.num_columns(),
                schema.fields().len()
            ),
        });
    }
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !field.data_type().equals_datatype(column.data_type()) {
            return Err(SinkError::SchemaMismatch {
                path: path.to_path_buf(),
                column: field.name().clone(),
                detail: format!("expected {}, got {}", field.data_type(), column.data_type()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! `gpupgparser export`: command-line arguments to an [`ExportRequest`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gpupg_decode::{ArrayRepr, EnumRepr, UnconstrainedNumeric};
use gpupg_export::{Engine, ExportRequest, HeapIo, HeapSync, Output, RequestError, Source, Target};
use gpupg_sink::{Compression, Format, SinkOptions};
use gpupg_source::{ConnectConfig, UnsupportedTypes};

use crate::output_paths;
use crate::progress::Bar;
use crate::selection_args::SelectionArgs;
use gpupg_export::DeviceChoice;

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Table, view or materialized view to export (schema-qualified, quoted as in SQL).
    #[arg(long, conflicts_with = "query", required_unless_present = "query")]
    pub table: Option<String>,
    /// A SELECT statement to export (read on one connection).
    #[arg(long)]
    pub query: Option<String>,
    /// Output file.
    #[arg(
        long,
        conflicts_with = "output_dir",
        required_unless_present = "output_dir"
    )]
    pub output: Option<PathBuf>,
    /// Output directory: one file per connection.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub options: ExportOptions,
    /// Write a JSON report (rows, bytes, seconds, engine, source, phases) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar and no summary.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// libpq connection string or postgresql:// URL. Default: $GPUPGPARSER_PG_DSN,
    /// $GPUPASER_PG_DSN, $DATABASE_URL, then PGSERVICE and the PG* variables
    /// (passwords also from ~/.pgpass or PGPASSFILE), as in libpq.
    #[arg(long)]
    pub dsn: Option<String>,
}

impl ConnArgs {
    pub fn resolve(&self) -> Result<ConnectConfig> {
        Ok(ConnectConfig::resolve(self.dsn.as_deref())?)
    }
}

/// Options shared by `export` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct ExportOptions {
    /// Output format (default: from the file extension: .parquet, .pq or none for Parquet,
    /// .arrow, .arrows, .ipc or .feather for Arrow IPC; another extension needs --format).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// zstd[:LEVEL] (1 to 22, or zstd's faster negative levels such as -1), snappy, lz4, gzip,
    /// brotli or none. Default: zstd (level 1) for
    /// Parquet; none for Arrow IPC (which also takes zstd and lz4, compressed by the decoder
    /// threads in parallel).
    #[arg(long)]
    pub compression: Option<String>,
    /// Connections to the server (default: cores, at most 16).
    #[arg(long, value_parser = at_least_one)]
    pub parallel: Option<usize>,
    /// Decode and encode threads (default: cores).
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Only these columns, in this order (names as the catalog spells them).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// SQL condition on the table's rows.
    #[arg(long = "where")]
    pub filter: Option<String>,
    /// Where rows come from: the table's heap files (heap), COPY (copy), or heap when the
    /// data directory is readable, the table qualifies and is at least --heap-threshold (auto).
    #[arg(long, default_value_t = Source::Auto, value_name = "auto|copy|heap")]
    pub source: Source,
    /// Smallest table (bytes; suffixes kB, MB, GB) that --source auto reads from its heap files.
    #[arg(long, default_value = "256MB", value_parser = gpupg_source::parse_size)]
    pub heap_threshold: u64,
    /// How the heap files are read for the GPU: cufile (GPUDirect Storage, straight into GPU
    /// memory; fails when cuFile cannot register the files), pread (into page-locked memory,
    /// then copied), or cufile where it registers the files and reads them without its
    /// compatibility mode, else pread (auto).
    #[arg(long, default_value_t = HeapIo::Auto, value_name = "auto|pread|cufile")]
    pub heap_io: HeapIo,
    /// How the heap path makes the files hold every change made before the export began:
    /// buffercache (the table's pages dirty in shared buffers, listed by the pg_buffercache
    /// extension with superuser or pg_monitor, are read through COPY; no checkpoint),
    /// wal (the table's pages changed since the latest checkpoint, listed from pg_wal, are
    /// read through COPY; else buffercache), checkpoint (runs CHECKPOINT: superuser or
    /// pg_checkpoint), or wal where the WAL since the checkpoint is short, else buffercache
    /// where it can be used, else checkpoint (auto).
    #[arg(long, default_value_t = HeapSync::Auto, value_name = "auto|checkpoint|buffercache|wal")]
    pub heap_sync: HeapSync,
    /// The server's data directory as this machine sees it (default: the server's
    /// data_directory setting, which needs superuser or pg_read_all_settings to read).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Decoder: gpu when one is usable (auto), cpu, or gpu (fails when no GPU is usable).
    #[arg(long, default_value_t = Engine::Auto, value_name = "auto|cpu|gpu")]
    pub engine: Engine,
    /// GPU to decode on (see `gpupgparser info`).
    #[arg(long, default_value_t = 0, conflicts_with = "devices")]
    pub device: usize,
    /// Several GPUs to decode on: all, or ordinals such as 0,1 (the decoder threads take them
    /// in turn; with --to device each keeps its columns on its GPU).
    #[arg(long, value_name = "all|N,N...")]
    pub devices: Option<DeviceChoice>,
    /// With --heap-io auto, the heap files are read with GPU-Direct only by a GPU chosen
    /// for them.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Replace existing output files.
    #[arg(long)]
    pub overwrite: bool,
    /// numeric without precision (or above 38 digits): text (lossless), float64, or decimal:SCALE (Decimal128(38,SCALE)).
    #[arg(long, default_value = "text")]
    pub numeric: String,
    /// Enums as utf8 or dictionary.
    #[arg(long, default_value = "utf8", value_name = "utf8|dictionary", value_parser = type_choice::<EnumRepr>)]
    pub enums: EnumRepr,
    /// Arrays as list (multi-dimensional values flattened) or struct (dims, lower bounds and values: lossless).
    #[arg(long, default_value = "list", value_name = "list|struct", value_parser = type_choice::<ArrayRepr>)]
    pub arrays: ArrayRepr,
    /// Have the server cast columns of unsupported types to text instead of failing.
    #[arg(long)]
    pub cast_unsupported: bool,
    /// Chunk size in MiB (memory in use is about (connections + 2 x threads) x chunk size);
    /// default 32 on the COPY path, 16 on the heap path.
    #[arg(long, value_parser = chunk_mib)]
    pub chunk_mib: Option<usize>,
    /// Rows per Parquet row group at most.
    #[arg(long, default_value_t = 1 << 20, value_parser = at_least_one)]
    pub row_group_rows: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    Parquet,
    Arrow,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Parquet => Format::Parquet,
            FormatArg::Arrow => Format::Arrow,
        }
    }
}

/// `--chunk-mib`: a size the export takes (1 to 1024), checked by the
/// export's own rule while clap can still call it a usage error.
pub fn chunk_mib(s: &str) -> Result<usize, String> {
    let mib = s.parse::<usize>().map_err(|e| e.to_string())?;
    match gpupg_export::chunk_bytes_from_mib(mib) {
        Ok(_) => Ok(mib),
        Err(_) => Err("must be from 1 to 1024".into()),
    }
}

/// A refused request setting in the command line's words: the flag, the
/// value where it helps, and the library's reason.
pub fn flag_message(e: &RequestError) -> String {
    match e {
        RequestError::ChunkSize { bytes } => {
            format!("--chunk-mib {}: must be from 1 to 1024", bytes >> 20)
        }
        RequestError::NoConnections => format!("--parallel 0: {e}"),
        RequestError::NoThreads => format!("--threads 0: {e}"),
        RequestError::EmptyColumnName { columns } => {
            format!("--columns {columns:?}: a column name is empty")
        }
        RequestError::ColumnTwice(_) => format!("--columns: {e}"),
        RequestError::FilterOnQuery => {
            "--where applies to --table; put the condition into the --query".into()
        }
        RequestError::ColumnsOnQuery => {
            "--columns applies to --table; select the columns in the --query".into()
        }
        RequestError::DeviceOutputOnCpu => {
            "device-resident output needs the GPU engine, not --engine cpu".into()
        }
        // clap parses the choices and names the flag itself.
        RequestError::UnknownChoice { .. } => e.to_string(),
        RequestError::NoGpu => "--devices all: this machine has no GPU".into(),
        RequestError::NoUsableGpu(why) => format!("--devices all: no usable GPU ({why})"),
        RequestError::NoDevices
        | RequestError::DeviceTwice(_)
        | RequestError::NotAnOrdinal(_)
        | RequestError::NoSuchGpu { .. } => format!("--devices: {e}"),
    }
}

/// A count that must be at least 1 (connections, threads, rows per group).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A type option's value (`--numeric`, `--enums`, `--arrays`) as the
/// library parses it; clap (or the caller) names the flag.
pub fn type_choice<T>(value: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = gpupg_decode::TypeChoiceError>,
{
    value
        .parse()
        .map_err(|e: gpupg_decode::TypeChoiceError| e.to_string())
}

impl ExportOptions {
    /// The format `output` is written in.
    pub fn format_of(&self, output: &Output) -> Result<Format> {
        match output {
            Output::File(path) => output_paths::output_format(path, self.format.map(Format::from)),
            Output::Dir(_) => Ok(self.format.map_or(Format::Parquet, Format::from)),
            // Columns in memory take Arrow's types (e.g. MonthDayNano intervals).
            Output::Device | Output::Host => Ok(Format::Arrow),
        }
    }

    /// Builds the request for `target` into `output`.
    pub fn request(
        &self,
        connect: ConnectConfig,
        target: Target,
        output: Output,
    ) -> Result<ExportRequest<'static>> {
        let format = self.format_of(&output)?;
        let compression: Compression = match &self.compression {
            Some(c) => c
                .parse()
                .map_err(|e| anyhow::anyhow!("--compression {c}: {e}"))?,
            None => format.default_compression(),
        };
        let devices = match (&self.devices, self.engine) {
            // The CPU decodes: no GPU to check.
            (_, Engine::Cpu) | (None, _) => vec![self.device],
            (Some(choice), _) => choice.resolve_here()?,
        };
        let types = gpupg_export::type_options(
            format,
            // Checked here rather than by clap, as before: its message names
            // the value.
            type_choice::<UnconstrainedNumeric>(&self.numeric)
                .map_err(|e| anyhow::anyhow!("--numeric {}: {e}", self.numeric))?,
            self.enums,
            self.arrays,
        );
        Ok(ExportRequest::builder(connect, target, output)
            .columns(self.columns.clone())
            .filter(self.filter.clone())
            .parallel(self.parallel)
            .threads(self.threads)
            .chunk_mib(self.chunk_mib)
            .engine(self.engine)
            .devices(devices)
            .types(types)
            .unsupported(if self.cast_unsupported {
                UnsupportedTypes::CastToText
            } else {
                UnsupportedTypes::Error
            })
            .sink(SinkOptions {
                format,
                compression,
                overwrite: self.overwrite,
                row_group_rows: self.row_group_rows,
            })
            .source(self.source)
            .heap_threshold(Some(self.heap_threshold))
            .heap_io(self.heap_io)
            .heap_sync(self.heap_sync)
            .data_dir(self.data_dir.clone())
            .gpu_selection(self.selection.selection())
            .cancel(&crate::signals::CANCEL)
            .build()?)
    }
}

pub fn run(args: ExportArgs) -> Result<()> {
    // First: checking --devices may load the CUDA driver, whose threads
    // must inherit the blocked signals.
    crate::signals::install()?;
    let target = match (&args.table, &args.query) {
        (Some(t), None) => Target::Table(t.clone()),
        (None, Some(q)) => Target::Query(q.clone()),
        _ => bail!("give exactly one of --table and --query"),
    };
    let output = match (&args.output, &args.output_dir) {
        (Some(f), None) => Output::File(f.clone()),
        (None, Some(d)) => Output::Dir(d.clone()),
        _ => bail!("give exactly one of --output and --output-dir"),
    };
    // Every option is checked before the server is asked anything.
    let format = args.options.format_of(&output)?;
    let overwrite = args.options.overwrite;
    output_paths::check(&output, format, args.report.as_deref(), overwrite)?;
    let connect = args.conn.resolve()?;
    let req = args.options.request(connect, target, output)?;
    let bar = Bar::new(args.quiet);
    let report = gpupg_export::export(&req, &bar)?;
    // Only after the output succeeded, and as atomically.
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)? + "\n";
        gpupg_sink::write_file(path, json.as_bytes(), overwrite)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if !args.quiet {
        eprintln!("{}", report.summary());
        if report.flattened_arrays > 0 {
            // The library's warning says what happened; the flag is ours.
            eprintln!("(--arrays struct keeps the dimensions of such arrays)");
        }
    }
    Ok(())
}

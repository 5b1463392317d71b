//! What one export reads, how, and where it writes ([`ExportRequest`]),
//! the defaults, and the one place that checks a request
//! ([`RequestBuilder::build`], [`ExportRequest::validate`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;

use gpupg_decode::{ArrayRepr, EnumRepr, IntervalRepr, TypeOptions, UnconstrainedNumeric};
use gpupg_sink::{Format, SinkOptions};
use gpupg_source::{ConnectConfig, PageRange, UnsupportedTypes};
use serde::{Deserialize, Serialize};

use crate::error::RequestError;

/// Decoder threads for device-resident output unless asked otherwise: a
/// decoder thread only queues copies and kernels, so a few keep the GPU
/// busy, and more contend in the driver (cuMemAlloc, page-locking).
/// Measured on lineorder from the heap files with pages converted on the
/// CPU: 1.35 s with 4 threads, 1.83 s with 16.
pub const DEVICE_WORKERS: usize = 4;

/// What to read.
#[derive(Debug, Clone)]
pub enum Target {
    /// A table, view or materialized view, named as in SQL (schema-qualified,
    /// quoted or not). Plain and partitioned tables are read in parallel
    /// page ranges.
    Table(String),
    /// A SELECT statement, read on one connection.
    Query(String),
}

/// Where to write.
#[derive(Debug, Clone)]
pub enum Output {
    /// One file for the whole result.
    File(PathBuf),
    /// One file per connection (partition) in this directory.
    Dir(PathBuf),
    /// Device-resident Arrow columns on the GPU engine's device (needs a
    /// usable GPU). [`crate::export_to_device`] returns them;
    /// [`crate::export`] keeps them until the export ends and then frees
    /// them, which measures the load.
    Device,
    /// Arrow record batches kept in host memory ([`crate::export_to_host`]
    /// returns them).
    Host,
}

/// Where rows come from. Written and parsed as `auto`, `copy` and `heap`
/// (the command line's values and the table store's JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The heap files when the table qualifies (see [`Source::Heap`]) and is
    /// at least `heap_threshold` bytes, else COPY; the report says which
    /// and why.
    #[default]
    Auto,
    /// COPY BINARY over the connections.
    Copy,
    /// The table's heap files, read from the data directory; pages that
    /// cannot be proven to hold exactly the snapshot's rows go through COPY.
    /// Fails when the table cannot be read that way.
    Heap,
}

/// How the heap path reads a relation's files when the GPU converts its
/// pages (the CPU engine always reads with `pread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapIo {
    /// cuFile (GPUDirect Storage) where every segment file registers with
    /// it and its reads would not go through cuFile's compatibility mode;
    /// otherwise parallel `pread` into page-locked buffers and
    /// asynchronous copies to the GPU. The report says which, and why.
    Auto,
    /// Parallel `pread` into page-locked buffers.
    Pread,
    /// cuFile, straight into device memory, in compatibility mode too (the
    /// files are still read with `O_DIRECT` and the pages never pass
    /// through the decoders' host buffers); fails when a file does not
    /// register.
    CuFile,
}

/// How the heap path makes sure the files hold every change made before
/// its fence (the pages dirty in shared buffers are not in them yet).
/// Written and parsed as `auto`, `checkpoint` and `buffercache` (the
/// command line's values and the table store's JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeapSync {
    /// [`HeapSync::Wal`] where the WAL since the latest checkpoint is short
    /// and readable, else [`HeapSync::BufferCache`] where `pg_buffercache`
    /// is installed and readable (both need the files proven the server's
    /// own without a checkpoint); else [`HeapSync::Checkpoint`] where the
    /// user may run it; else the heap path is refused, saying why.
    #[default]
    Auto,
    /// Runs `CHECKPOINT` (superuser or `pg_checkpoint`): every page dirty
    /// at the fence is written to the files.
    Checkpoint,
    /// Lists the table's pages dirty in shared buffers (`pg_buffercache`,
    /// superuser or `pg_monitor`) and reads those through COPY; no
    /// checkpoint. Refuses the heap path when that cannot be done.
    BufferCache,
    /// Lists the table's pages changed since the latest checkpoint's REDO
    /// pointer from the WAL files in `pg_wal` and reads those through COPY;
    /// no checkpoint. Where the WAL cannot be read, the `pg_buffercache`
    /// list is taken instead, saying why.
    Wal,
}

/// `FromStr` and `Display` for an enum of plain choices, by the names the
/// command line and the table store use for them.
macro_rules! choice_names {
    ($ty:ident, $what:literal, $($value:ident => $name:literal),+ $(,)?) => {
        impl FromStr for $ty {
            type Err = RequestError;

            /// The choice of this name, ignoring case.
            fn from_str(s: &str) -> Result<$ty, RequestError> {
                $(if s.trim().eq_ignore_ascii_case($name) {
                    return Ok($ty::$value);
                })+
                Err(RequestError::UnknownChoice {
                    what: $what,
                    value: s.to_string(),
                    expected: concat!($($name, ", "),+).trim_end_matches(", "),
                })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($ty::$value => $name),+
                })
            }
        }
    };
}

choice_names!(Source, "source", Auto => "auto", Copy => "copy", Heap => "heap");
choice_names!(HeapIo, "way to read heap files", Auto => "auto", Pread => "pread", CuFile => "cufile");
choice_names!(HeapSync, "way to make heap files current", Auto => "auto", Checkpoint => "checkpoint", BufferCache => "buffercache", Wal => "wal");
choice_names!(Engine, "engine", Auto => "auto", Cpu => "cpu", Gpu => "gpu");

/// The type options of an output written in `format` (in-memory outputs
/// take Arrow's) with the user's choices for numeric, enums and arrays:
/// intervals as the format can hold them (Parquet has no signed interval
/// type, so a struct keeps all three parts).
pub fn type_options(
    format: Format,
    numeric: UnconstrainedNumeric,
    enums: EnumRepr,
    arrays: ArrayRepr,
) -> TypeOptions {
    TypeOptions {
        interval: match format {
            Format::Parquet => IntervalRepr::Struct,
            Format::Arrow => IntervalRepr::MonthDayNano,
        },
        numeric,
        enums,
        arrays,
    }
}

/// Tables smaller than this are read through COPY by [`Source::Auto`]: the
/// CHECKPOINT the heap path needs can cost more than COPY of a small table.
pub const DEFAULT_HEAP_THRESHOLD: u64 = 256 << 20;

/// The smallest chunk buffer a request may ask for.
pub const MIN_CHUNK_BYTES: usize = 64 << 10;

/// The largest chunk buffer a request may ask for: each connection and
/// decoder thread holds a few.
pub const MAX_CHUNK_BYTES: usize = 1 << 30;

/// A chunk size given in MiB, in bytes, when it is within
/// [`MIN_CHUNK_BYTES`]..=[`MAX_CHUNK_BYTES`] (1 to 1024 MiB).
pub fn chunk_bytes_from_mib(mib: usize) -> Result<usize, RequestError> {
    let bytes = mib_to_bytes(mib);
    check_chunk_bytes(bytes)?;
    Ok(bytes)
}

/// `mib` MiB in bytes; too many to count stays too many (and is refused).
fn mib_to_bytes(mib: usize) -> usize {
    mib.saturating_mul(1 << 20)
}

fn check_chunk_bytes(bytes: usize) -> Result<(), RequestError> {
    if (MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&bytes) {
        Ok(())
    } else {
        Err(RequestError::ChunkSize { bytes })
    }
}

/// Default chunk size of the COPY path (`chunk_bytes`).
pub const DEFAULT_CHUNK_BYTES: usize = 32 << 20;

/// Default chunk size of the heap path (`heap_chunk_bytes`): smaller than
/// COPY's, because there the chunk buffers are page-locked by the readers
/// at the start and the batches go to the GPU whole. Measured on lineorder
/// 60M to Parquet with pages converted on the GPU: 2.37-2.95 s with 16 MiB,
/// 3.32-3.51 s with 32 MiB; into device columns the same (0.57-0.62 s).
pub const DEFAULT_HEAP_CHUNK_BYTES: usize = 16 << 20;

/// Which decoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The GPU when one is usable, else the CPU; a GPU failure during the
    /// export is reported and the affected chunks are decoded on the CPU.
    Auto,
    /// The CPU, whatever GPUs there are.
    Cpu,
    /// The GPU or nothing: fails at once when no GPU is usable.
    Gpu,
}

/// Which GPUs: every GPU, or some by CUDA ordinal. Written and parsed as
/// `all` or `0,1,3` (the command line's `--devices`, the store's `devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Every GPU the driver sees.
    All,
    /// These ordinals, each once.
    List(Vec<usize>),
}

impl FromStr for DeviceChoice {
    type Err = RequestError;

    /// `all`, or ordinals separated by commas (`0,1,3`), each once.
    fn from_str(s: &str) -> Result<DeviceChoice, RequestError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(DeviceChoice::All);
        }
        let mut list = Vec::new();
        for part in s.split(',') {
            let d: usize = part
                .trim()
                .parse()
                .map_err(|_| RequestError::NotAnOrdinal(part.to_string()))?;
            if list.contains(&d) {
                return Err(RequestError::DeviceTwice(d));
            }
            list.push(d);
        }
        Ok(DeviceChoice::List(list))
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::All => f.write_str("all"),
            DeviceChoice::List(l) => {
                let l: Vec<String> = l.iter().map(usize::to_string).collect();
                f.write_str(&l.join(","))
            }
        }
    }
}

impl DeviceChoice {
    /// The ordinals, given how many GPUs the driver sees (`count`, or why
    /// none is usable).
    pub fn resolve(&self, count: Result<usize, String>) -> Result<Vec<usize>, RequestError> {
        match self {
            DeviceChoice::All => match count {
                Ok(0) => Err(RequestError::NoGpu),
                Ok(n) => Ok((0..n).collect()),
                Err(why) => Err(RequestError::NoUsableGpu(why)),
            },
            DeviceChoice::List(list) => {
                let count = count.unwrap_or(0);
                match list.iter().find(|&&d| d >= count) {
                    Some(&device) => Err(RequestError::NoSuchGpu { device, count }),
                    None => Ok(list.clone()),
                }
            }
        }
    }

    /// [`Self::resolve`] against this machine's GPUs.
    pub fn resolve_here(&self) -> Result<Vec<usize>, RequestError> {
        self.resolve(gpupg_gpu::device_count().map_err(|e| e.to_string()))
    }
}

/// Which GPUs may read a relation's files with GPU-Direct (cuFile), as
/// PG-Strom's `pg_strom.gpu_selection_policy` and
/// `pg_strom.manual_optimal_gpus` say: with [`HeapIo::Auto`] the heap
/// path reads with cuFile only when the export's GPU is among those chosen
/// for every file of the table (`gpupg_topology::Selector`), else with
/// `pread`, and the report says why.
#[derive(Debug, Clone, Default)]
pub struct GpuSelection {
    /// How GPUs are chosen for a file: by PCIe distance, NUMA node, or any.
    pub policy: gpupg_topology::Policy,
    /// GPUs named for drives or paths, overriding the policy there.
    pub manual: Option<gpupg_topology::ManualGpus>,
}

/// Everything one export needs.
pub struct ExportRequest<'a> {
    /// How to reach the server.
    pub connect: ConnectConfig,
    /// The table or query.
    pub target: Target,
    /// Only these columns, in this order.
    pub columns: Option<Vec<String>>,
    /// A SQL condition added to the WHERE clause (tables only).
    pub filter: Option<String>,
    /// Where the batches go.
    pub output: Output,
    /// Number of connections.
    pub parallel: usize,
    /// Number of decode/encode threads.
    pub workers: usize,
    /// Size of one chunk buffer in bytes (COPY rows received, or on the
    /// heap path rows converted on the CPU).
    pub chunk_bytes: usize,
    /// Size of one chunk buffer on the heap path: heap pages for the GPU,
    /// or converted rows.
    pub heap_chunk_bytes: usize,
    /// Which decoder runs.
    pub engine: Engine,
    /// GPU ordinals for the GPU engine, at least one: the decoder threads
    /// (`workers` in all) take them in turn, each with its own streams,
    /// buffers and kernels, and take chunks from one queue, so a faster
    /// GPU takes more. The first is where cuFile reads and what the
    /// report names first.
    pub devices: Vec<usize>,
    /// With [`Output::Device`]: the most device bytes the kept columns may
    /// take; the export fails with `GpuError::MemoryLimit` as soon as they
    /// would take more (the table store's memory limit).
    pub device_limit: Option<u64>,
    /// How PostgreSQL types map to Arrow's where there is a choice.
    pub types: TypeOptions,
    /// Whether columns of types no decoder reads are refused or cast to
    /// text by the server.
    pub unsupported: UnsupportedTypes,
    /// The output file's format, compression and row groups.
    pub sink: SinkOptions,
    /// Where rows come from.
    pub source: Source,
    /// `Source::Auto` reads tables of at least this many bytes from their
    /// heap files.
    pub heap_threshold: u64,
    /// How heap files are read for the GPU page kernels.
    pub heap_io: HeapIo,
    /// How the heap path accounts for pages dirty in shared buffers.
    pub heap_sync: HeapSync,
    /// Which GPUs may read the table's files with GPU-Direct
    /// (`--gpu-selection`, `--manual-optimal-gpus`).
    pub gpu_selection: GpuSelection,
    /// The server's data directory as this process sees it (default: the
    /// server's `data_directory` setting).
    pub data_dir: Option<PathBuf>,
    /// A refresh of an earlier load kept in memory: the pages it holds
    /// ([`crate::Loaded::pages`]). Pages of the heap files unchanged since
    /// are not read; [`crate::Loaded::carried`] says which rows of that
    /// load to copy instead. Ignored on the COPY path.
    pub prior: Option<&'a crate::PageMap>,
    /// Set (e.g. by a Ctrl-C handler) to stop the export; it then fails with
    /// [`crate::ExportError::Cancelled`] and leaves no output.
    pub cancel: Option<&'a AtomicBool>,
    /// A snapshot exported by another session (`pg_export_snapshot()`, a
    /// [`crate::FragmentPlan`]'s): every connection imports it instead of
    /// the export exporting its own. Read through COPY only.
    pub snapshot: Option<String>,
    /// Only these pages of a plain table (or materialized view), split
    /// among the connections; `end: None` reads to the end of the table.
    pub pages: Option<PageRange>,
}

impl<'a> ExportRequest<'a> {
    /// A request for `target` into `output` with the plain defaults: every
    /// column and row, [`default_parallelism`] connections, a thread per
    /// core, the engine and source chosen automatically on GPU 0,
    /// unsupported types refused, the sink's defaults. Unchecked, and with
    /// no default that depends on another setting: from users' settings,
    /// build with [`ExportRequest::builder`].
    ///
    /// ```
    /// use gpupg_export::{ExportRequest, Output, Source, Target};
    /// # let connect = gpupg_source::ConnectConfig::resolve(Some("host=/tmp")).unwrap();
    /// let req = ExportRequest {
    ///     source: Source::Heap,
    ///     ..ExportRequest::new(connect, Target::Table("lineorder".into()), Output::Host)
    /// };
    /// assert_eq!(req.devices, [0]);
    /// ```
    pub fn new(connect: ConnectConfig, target: Target, output: Output) -> ExportRequest<'a> {
        ExportRequest {
            connect,
            target,
            columns: None,
            filter: None,
            output,
            parallel: default_parallelism(),
            workers: cores(),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            heap_chunk_bytes: DEFAULT_HEAP_CHUNK_BYTES,
            engine: Engine::Auto,
            devices: vec![0],
            device_limit: None,
            types: TypeOptions::default(),
            unsupported: UnsupportedTypes::Error,
            sink: SinkOptions::default(),
            source: Source::Auto,
            heap_threshold: DEFAULT_HEAP_THRESHOLD,
            heap_io: HeapIo::Auto,
            heap_sync: HeapSync::Auto,
            gpu_selection: GpuSelection::default(),
            data_dir: None,
            prior: None,
            cancel: None,
            snapshot: None,
            pages: None,
        }
    }

    /// A builder of a request for `target` into `output` that takes the
    /// user's settings, fills in the defaults that depend on other settings
    /// and checks the whole request once ([`RequestBuilder::build`]).
    pub fn builder(connect: ConnectConfig, target: Target, output: Output) -> RequestBuilder<'a> {
        RequestBuilder {
            req: ExportRequest::new(connect, target, output),
            parallel: None,
            threads: None,
            chunk_mib: None,
        }
    }

    /// Refuses settings no export can run with; [`crate::export`] calls it
    /// before it connects, [`RequestBuilder::build`] before it returns.
    pub fn validate(&self) -> Result<(), crate::ExportError> {
        Ok(self.check()?)
    }

    fn check(&self) -> Result<(), RequestError> {
        if let Target::Query(_) = self.target {
            if self.filter.is_some() {
                return Err(RequestError::FilterOnQuery);
            }
            if self.columns.is_some() {
                return Err(RequestError::ColumnsOnQuery);
            }
        }
        if matches!((&self.output, self.engine), (Output::Device, Engine::Cpu)) {
            return Err(RequestError::DeviceOutputOnCpu);
        }
        if self.parallel == 0 {
            return Err(RequestError::NoConnections);
        }
        if self.devices.is_empty() {
            return Err(RequestError::NoDevices);
        }
        if self.workers == 0 {
            return Err(RequestError::NoThreads);
        }
        check_chunk_bytes(self.chunk_bytes)?;
        check_chunk_bytes(self.heap_chunk_bytes)?;
        let columns = self.columns.as_deref().unwrap_or_default();
        if columns.iter().any(String::is_empty) {
            return Err(RequestError::EmptyColumnName {
                columns: columns.join(","),
            });
        }
        for (i, name) in columns.iter().enumerate() {
            if columns[..i].contains(name) {
                return Err(RequestError::ColumnTwice(name.clone()));
            }
        }
        Ok(())
    }

    /// The same request with another output.
    pub fn with_output(&self, output: Output) -> ExportRequest<'a> {
        ExportRequest {
            output,
            connect: self.connect.clone(),
            target: self.target.clone(),
            columns: self.columns.clone(),
            filter: self.filter.clone(),
            sink: self.sink.clone(),
            data_dir: self.data_dir.clone(),
            gpu_selection: self.gpu_selection.clone(),
            devices: self.devices.clone(),
            snapshot: self.snapshot.clone(),
            ..*self
        }
    }
}

/// Builds an [`ExportRequest`] from the user's settings (the command line's
/// flags, the table store's load spec): each setter takes the value as given,
/// `None` meaning the default, and [`RequestBuilder::build`] applies the
/// defaults that depend on other settings and checks everything once.
///
/// ```
/// use gpupg_export::{ExportRequest, Output, Source, Target};
/// # let connect = gpupg_source::ConnectConfig::resolve(Some("host=/tmp")).unwrap();
/// let req = ExportRequest::builder(connect, Target::Table("lineorder".into()), Output::Device)
///     .source(Source::Heap)
///     .devices(vec![0, 1])
///     .chunk_mib(Some(8))
///     .build()?;
/// assert_eq!(req.heap_chunk_bytes, 8 << 20);
/// # Ok::<(), gpupg_export::RequestError>(())
/// ```
pub struct RequestBuilder<'a> {
    req: ExportRequest<'a>,
    parallel: Option<usize>,
    threads: Option<usize>,
    chunk_mib: Option<usize>,
}

impl<'a> RequestBuilder<'a> {
    /// Only these columns, in this order (`None`: every column).
    pub fn columns(mut self, columns: Option<Vec<String>>) -> Self {
        self.req.columns = columns;
        self
    }

    /// A SQL condition on the table's rows.
    pub fn filter(mut self, filter: Option<String>) -> Self {
        self.req.filter = filter;
        self
    }

    /// Connections (`None`: [`default_parallelism`]).
    pub fn parallel(mut self, parallel: Option<usize>) -> Self {
        self.parallel = parallel;
        self
    }

    /// Decoder threads (`None`: [`DEVICE_WORKERS`] per GPU for
    /// [`Output::Device`], at most one per core but at least one per GPU;
    /// else one per core).
    pub fn threads(mut self, threads: Option<usize>) -> Self {
        self.threads = threads;
        self
    }

    /// Chunk size in MiB, on both paths (`None`: [`DEFAULT_CHUNK_BYTES`]
    /// for COPY, [`DEFAULT_HEAP_CHUNK_BYTES`] for heap pages).
    pub fn chunk_mib(mut self, mib: Option<usize>) -> Self {
        self.chunk_mib = mib;
        self
    }

    /// Which decoder runs.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.req.engine = engine;
        self
    }

    /// GPU ordinals to decode on (default: GPU 0).
    pub fn devices(mut self, devices: Vec<usize>) -> Self {
        self.req.devices = devices;
        self
    }

    /// Where rows come from.
    pub fn source(mut self, source: Source) -> Self {
        self.req.source = source;
        self
    }

    /// Smallest table [`Source::Auto`] reads from its heap files (`None`:
    /// [`DEFAULT_HEAP_THRESHOLD`]).
    pub fn heap_threshold(mut self, bytes: Option<u64>) -> Self {
        self.req.heap_threshold = bytes.unwrap_or(DEFAULT_HEAP_THRESHOLD);
        self
    }

    /// How heap files are read for the GPU page kernels.
    pub fn heap_io(mut self, heap_io: HeapIo) -> Self {
        self.req.heap_io = heap_io;
        self
    }

    /// How the heap path accounts for pages dirty in shared buffers: a
    /// CHECKPOINT, or reading them through COPY.
    pub fn heap_sync(mut self, heap_sync: HeapSync) -> Self {
        self.req.heap_sync = heap_sync;
        self
    }

    /// Which GPUs may read the table's files with GPU-Direct.
    pub fn gpu_selection(mut self, selection: GpuSelection) -> Self {
        self.req.gpu_selection = selection;
        self
    }

    /// The server's data directory as this process sees it (`None`: the
    /// server's `data_directory` setting).
    pub fn data_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.req.data_dir = dir;
        self
    }

    /// How PostgreSQL types map to Arrow's.
    pub fn types(mut self, types: TypeOptions) -> Self {
        self.req.types = types;
        self
    }

    /// Whether unsupported types are refused or cast to text.
    pub fn unsupported(mut self, unsupported: UnsupportedTypes) -> Self {
        self.req.unsupported = unsupported;
        self
    }

    /// The output file's format, compression and row groups.
    pub fn sink(mut self, sink: SinkOptions) -> Self {
        self.req.sink = sink;
        self
    }

    /// Imports this exported snapshot instead of exporting one
    /// ([`ExportRequest::snapshot`]).
    pub fn snapshot(mut self, snapshot: Option<String>) -> Self {
        self.req.snapshot = snapshot;
        self
    }

    /// Reads only these pages of the table ([`ExportRequest::pages`]).
    pub fn pages(mut self, pages: Option<PageRange>) -> Self {
        self.req.pages = pages;
        self
    }

    /// Stops the export when set (a Ctrl-C handler, a server shutdown).
    pub fn cancel(mut self, cancel: &'a AtomicBool) -> Self {
        self.req.cancel = Some(cancel);
        self
    }

    /// The request, with the defaults filled in, once every setting is
    /// one an export can run with.
    pub fn build(self) -> Result<ExportRequest<'a>, RequestError> {
        let RequestBuilder {
            mut req,
            parallel,
            threads,
            chunk_mib,
        } = self;
        req.parallel = parallel.unwrap_or_else(default_parallelism);
        req.workers = threads.unwrap_or_else(|| default_workers(&req.output, req.devices.len()));
        if let Some(mib) = chunk_mib {
            req.chunk_bytes = mib_to_bytes(mib);
            req.heap_chunk_bytes = req.chunk_bytes;
        }
        req.check()?;
        Ok(req)
    }
}

/// Decoder threads when the user does not say: for device-resident output
/// a decoder thread only queues copies and kernels, so a few per GPU keep
/// it busy (more contend in the driver), though no more than the cores
/// unless each GPU is to have one; for files and host memory one per core.
fn default_workers(output: &Output, devices: usize) -> usize {
    let cores = cores();
    match output {
        Output::Device => (DEVICE_WORKERS * devices).min(cores.max(devices)),
        _ => cores,
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get())
}

/// Connections to use when the user does not say: one per core, at most 16
/// (the server needs cores of its own to produce COPY data, and more
/// connections than its cores gain nothing).
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .clamp(1, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(output: Output) -> RequestBuilder<'static> {
        let connect = ConnectConfig::resolve(Some("host=/tmp")).unwrap();
        ExportRequest::builder(connect, Target::Table("t".into()), output)
    }

    #[test]
    fn devices_parse_and_resolve() {
        let all: DeviceChoice = "all".parse().unwrap();
        assert_eq!(all, DeviceChoice::All);
        assert_eq!(all.resolve(Ok(2)), Ok(vec![0, 1]));
        assert_eq!(all.resolve(Ok(0)), Err(RequestError::NoGpu));
        assert_eq!(
            all.resolve(Err("no CUDA driver found".into())),
            Err(RequestError::NoUsableGpu("no CUDA driver found".into()))
        );
        let some: DeviceChoice = " 1, 0 ".parse().unwrap();
        assert_eq!(some, DeviceChoice::List(vec![1, 0]));
        assert_eq!(some.to_string(), "1,0");
        assert_eq!(some.resolve(Ok(2)), Ok(vec![1, 0]));
        let missing = some.resolve(Ok(1)).unwrap_err();
        assert_eq!(
            missing,
            RequestError::NoSuchGpu {
                device: 1,
                count: 1
            }
        );
        assert_eq!(
            missing.to_string(),
            "GPU 1 does not exist (this machine has 1 GPU(s))"
        );
        assert_eq!(
            "0,0".parse::<DeviceChoice>().unwrap_err().to_string(),
            "GPU 0 is given twice"
        );
        assert!("0,x"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .to_string()
            .contains("\"x\" is not a GPU ordinal"));
        assert!("".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn choices_parse_and_print_by_name() {
        for s in [Source::Auto, Source::Copy, Source::Heap] {
            assert_eq!(s.to_string().parse::<Source>(), Ok(s));
        }
        assert_eq!("CuFile".parse::<HeapIo>(), Ok(HeapIo::CuFile));
        assert_eq!(HeapIo::CuFile.to_string(), "cufile");
        assert_eq!("BufferCache".parse::<HeapSync>(), Ok(HeapSync::BufferCache));
        assert_eq!(HeapSync::Checkpoint.to_string(), "checkpoint");
        assert_eq!("gpu".parse::<Engine>(), Ok(Engine::Gpu));
        assert_eq!(
            "disk".parse::<Source>().unwrap_err().to_string(),
            "\"disk\" is not a source (expected auto, copy, heap)"
        );
        // The table store's JSON spells them as the command line does.
        assert_eq!(serde_json::to_string(&Source::Heap).unwrap(), "\"heap\"");
        assert_eq!(
            serde_json::from_str::<Source>("\"copy\"").unwrap(),
            Source::Copy
        );
        assert_eq!(Source::default(), Source::Auto);
    }

    #[test]
    fn the_builder_fills_in_the_defaults() {
        let req = builder(Output::Host).build().unwrap();
        assert_eq!(req.parallel, default_parallelism());
        assert_eq!(req.workers, cores());
        assert_eq!(req.chunk_bytes, DEFAULT_CHUNK_BYTES);
        assert_eq!(req.heap_chunk_bytes, DEFAULT_HEAP_CHUNK_BYTES);
        assert_eq!(req.heap_threshold, DEFAULT_HEAP_THRESHOLD);
        assert_eq!(req.devices, [0]);
        assert_eq!(req.source, Source::Auto);
        assert_eq!(req.engine, Engine::Auto);
        assert!(req.cancel.is_none());

        let cancel = AtomicBool::new(false);
        let req = builder(Output::Host)
            .parallel(Some(3))
            .threads(Some(5))
            .chunk_mib(Some(2))
            .heap_threshold(Some(7))
            .source(Source::Copy)
            .columns(Some(vec!["a".into(), "b".into()]))
            .cancel(&cancel)
            .build()
            .unwrap();
        assert_eq!((req.parallel, req.workers), (3, 5));
        assert_eq!((req.chunk_bytes, req.heap_chunk_bytes), (2 << 20, 2 << 20));
        assert_eq!(req.heap_threshold, 7);
        assert_eq!(req.source, Source::Copy);
        assert!(req.cancel.is_some());
    }

    #[test]
    fn device_output_gets_a_few_workers_per_gpu() {
        let workers = |devices: Vec<usize>| {
            builder(Output::Device)
                .devices(devices)
                .build()
                .unwrap()
                .workers
        };
        let cores = cores();
        assert_eq!(workers(vec![0]), DEVICE_WORKERS.min(cores));
        assert_eq!(workers(vec![0, 1]), (2 * DEVICE_WORKERS).min(cores.max(2)));
        // At least one per GPU, whatever the cores.
        let many: Vec<usize> = (0..cores + 1).collect();
        assert_eq!(workers(many), cores + 1);
        // Asked for: as asked.
        let req = builder(Output::Device).threads(Some(9)).build().unwrap();
        assert_eq!(req.workers, 9);
        // Other outputs: a thread per core.
        assert_eq!(builder(Output::Host).build().unwrap().workers, cores);
    }

    #[test]
    fn the_builder_refuses_what_no_export_runs_with() {
        let refused = |b: RequestBuilder<'static>| b.build().err();
        let output = || Output::Host;
        assert_eq!(
            refused(builder(output()).parallel(Some(0))),
            Some(RequestError::NoConnections)
        );
        assert_eq!(
            refused(builder(output()).threads(Some(0))),
            Some(RequestError::NoThreads)
        );
        assert_eq!(
            refused(builder(output()).devices(vec![])),
            Some(RequestError::NoDevices)
        );
        for (mib, bytes) in [(0, 0), (1025, 1025 << 20), (usize::MAX, usize::MAX)] {
            assert_eq!(
                refused(builder(output()).chunk_mib(Some(mib))),
                Some(RequestError::ChunkSize { bytes }),
                "{mib} MiB"
            );
        }
        for mib in [1, 1024] {
            assert!(builder(output()).chunk_mib(Some(mib)).build().is_ok());
            assert_eq!(chunk_bytes_from_mib(mib), Ok(mib << 20));
        }
        assert_eq!(
            chunk_bytes_from_mib(0),
            Err(RequestError::ChunkSize { bytes: 0 })
        );
        let columns = |c: &[&str]| Some(c.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            refused(builder(output()).columns(columns(&["a", "", "b"]))),
            Some(RequestError::EmptyColumnName {
                columns: "a,,b".into()
            })
        );
        assert_eq!(
            refused(builder(output()).columns(columns(&["id", "x", "id"]))),
            Some(RequestError::ColumnTwice("id".into()))
        );
        let connect = || ConnectConfig::resolve(Some("host=/tmp")).unwrap();
        let query =
            || ExportRequest::builder(connect(), Target::Query("SELECT 1".into()), output());
        assert_eq!(
            refused(query().filter(Some("a > 1".into()))),
            Some(RequestError::FilterOnQuery)
        );
        assert_eq!(
            refused(query().columns(columns(&["a"]))),
            Some(RequestError::ColumnsOnQuery)
        );
        assert!(query().build().is_ok());
        assert_eq!(
            refused(builder(Output::Device).engine(Engine::Cpu)),
            Some(RequestError::DeviceOutputOnCpu)
        );
    }

    #[test]
    fn validate_checks_a_request_built_by_hand() {
        let mut req = builder(Output::Host).build().unwrap();
        req.heap_chunk_bytes = MIN_CHUNK_BYTES - 1;
        let e = req.validate().unwrap_err();
        assert!(matches!(
            e,
            crate::ExportError::Request(RequestError::ChunkSize { .. })
        ));
        assert_eq!(
            e.to_string(),
            "a chunk of 65535 bytes: the chunk size must be from 64 KiB to 1024 MiB"
        );
    }
}

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use gpupg_decode::TypeOptions;
use gpupg_sink::SinkOptions;
use gpupg_source::{ConnectConfig, UnsupportedTypes};

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

/// Where rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The heap files when the table qualifies (see [`Source::Heap`]) and is
    /// at least `heap_threshold` bytes, else COPY; the report says which
    /// and why.
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

/// Tables smaller than this are read through COPY by `--source auto`: the
/// CHECKPOINT the heap path needs can cost more than COPY of a small table.
pub const DEFAULT_HEAP_THRESHOLD: u64 = 256 << 20;

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
    Cpu,
    /// The GPU or nothing: fails at once when no GPU is usable.
    Gpu,
}

/// `--devices`: every GPU, or some by CUDA ordinal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    All,
    List(Vec<usize>),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    /// `all`, or ordinals separated by commas (`0,1,3`), each once.
    fn from_str(s: &str) -> Result<DeviceChoice, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(DeviceChoice::All);
        }
        let mut list = Vec::new();
        for part in s.split(',') {
            let d: usize = part.trim().parse().map_err(|_| {
                format!("{part:?} is not a GPU ordinal (expected all, or ordinals such as 0,1)")
            })?;
            if list.contains(&d) {
                return Err(format!("GPU {d} is given twice"));
            }
            list.push(d);
        }
        Ok(DeviceChoice::List(list))
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
    pub fn resolve(&self, count: Result<usize, String>) -> Result<Vec<usize>, String> {
        match self {
            DeviceChoice::All => match count {
                Ok(0) => Err("--devices all: this machine has no GPU".into()),
                Ok(n) => Ok((0..n).collect()),
                Err(why) => Err(format!("--devices all: no usable GPU ({why})")),
            },
            DeviceChoice::List(list) => {
                let n = count.unwrap_or(0);
                match list.iter().find(|&&d| d >= n) {
                    Some(d) => Err(format!(
                        "--devices {self}: GPU {d} does not exist (this machine has {n} GPU(s))"
                    )),
                    None => Ok(list.clone()),
                }
            }
        }
    }

    /// [`Self::resolve`] against this machine's GPUs.
    pub fn resolve_here(&self) -> Result<Vec<usize>, String> {
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
    pub policy: gpupg_topology::Policy,
    pub manual: Option<gpupg_topology::ManualGpus>,
}

/// Everything one export needs.
pub struct ExportRequest<'a> {
    pub connect: ConnectConfig,
    pub target: Target,
    /// Only these columns, in this order.
    pub columns: Option<Vec<String>>,
    /// A SQL condition added to the WHERE clause (tables only).
    pub filter: Option<String>,
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
    pub types: TypeOptions,
    pub unsupported: UnsupportedTypes,
    pub sink: SinkOptions,
    pub source: Source,
    /// `Source::Auto` reads tables of at least this many bytes from their
    /// heap files.
    pub heap_threshold: u64,
    /// How heap files are read for the GPU page kernels.
    pub heap_io: HeapIo,
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
}

impl<'a> ExportRequest<'a> {
    /// A request for `target` into `output` with the defaults the command
    /// line has: every column and row, [`default_parallelism`] connections,
    /// a thread per core, the engine and source chosen automatically on GPU
    /// 0, unsupported types refused, the sink's defaults.
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
            workers: std::thread::available_parallelism().map_or(4, |n| n.get()),
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
            gpu_selection: GpuSelection::default(),
            data_dir: None,
            prior: None,
            cancel: None,
        }
    }

    /// Refuses settings no export can run with; [`crate::export`] calls it
    /// before it connects.
    pub fn validate(&self) -> Result<(), crate::ExportError> {
        let invalid = |what: String| Err(crate::ExportError::Invalid(what));
        if self.parallel == 0 {
            return invalid("--parallel 0: at least one connection is needed".into());
        }
        if self.workers == 0 {
            return invalid("--threads 0: at least one thread is needed".into());
        }
        if self.chunk_bytes.min(self.heap_chunk_bytes) < 64 * 1024 {
            return invalid("the chunk size must be at least 64 KiB".into());
        }
        if self.devices.is_empty() {
            return invalid("no GPU ordinal given".into());
        }
        let columns = self.columns.as_deref().unwrap_or_default();
        if columns.iter().any(String::is_empty) {
            return invalid(format!(
                "--columns {:?}: a column name is empty",
                columns.join(",")
            ));
        }
        for (i, name) in columns.iter().enumerate() {
            if columns[..i].contains(name) {
                // Readers such as pyarrow cannot read a file with two
                // columns of one name.
                return invalid(format!("--columns: column {name:?} is given twice"));
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
            ..*self
        }
    }
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
    use super::DeviceChoice;

    #[test]
    fn devices_parse_and_resolve() {
        let all: DeviceChoice = "all".parse().unwrap();
        assert_eq!(all, DeviceChoice::All);
        assert_eq!(all.resolve(Ok(2)), Ok(vec![0, 1]));
        assert_eq!(
            all.resolve(Ok(0)).unwrap_err(),
            "--devices all: this machine has no GPU"
        );
        assert!(all
            .resolve(Err("no CUDA driver found".into()))
            .unwrap_err()
            .contains("no usable GPU (no CUDA driver found)"));
        let some: DeviceChoice = " 1, 0 ".parse().unwrap();
        assert_eq!(some, DeviceChoice::List(vec![1, 0]));
        assert_eq!(some.to_string(), "1,0");
        assert_eq!(some.resolve(Ok(2)), Ok(vec![1, 0]));
        assert_eq!(
            some.resolve(Ok(1)).unwrap_err(),
            "--devices 1,0: GPU 1 does not exist (this machine has 1 GPU(s))"
        );
        assert_eq!(
            "0,0".parse::<DeviceChoice>().unwrap_err(),
            "GPU 0 is given twice"
        );
        assert!("0,x"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .contains("\"x\" is not a GPU ordinal"));
        assert!("".parse::<DeviceChoice>().is_err());
    }
}

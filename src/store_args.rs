//! `gpupgparser serve` and `gpupgparser store ...`: the GPU-resident table
//! store's server and its client commands (docs/store.md).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use gpupg_store::{
    default_socket_path, Backend, Client, GpuBackend, HeapSync, HostBackend, ListReport, LoadSpec,
    Registry, RevisionInfo, Server, Source,
};

use crate::export_args::ConnArgs;
use crate::selection_args::SelectionArgs;
use gpupg_export::DeviceChoice;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Socket to listen on (default: store.sock in $XDG_RUNTIME_DIR/gpupgparser when
    /// $XDG_RUNTIME_DIR is this user's, else in /tmp/gpupgparser-UID; that directory is
    /// created with mode 0700 and must be this user's alone). Created with mode 0600.
    #[arg(long, env = "GPUPGPARSER_STORE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Most bytes all tables may hold together (suffixes kB, MB, GB); a load or refresh that
    /// would pass it fails and changes nothing.
    #[arg(long, value_parser = nonzero_size)]
    pub memory_limit: Option<u64>,
    /// Where tables live: gpu (device memory, shared through CUDA IPC), or host (host
    /// memory through the CPU engine, with the same protocol and manifests: for trying the
    /// store and for tests without a GPU).
    #[arg(long, value_enum, default_value_t = BackendArg::Gpu)]
    pub backend: BackendArg,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendArg {
    Gpu,
    Host,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The server's socket (default: as for `serve`). Nothing is sent unless the process
    /// listening there runs as this user or root.
    #[arg(long, env = "GPUPGPARSER_STORE_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum StoreCommand {
    /// Load a table into the store (the server runs the export with these connection settings).
    Load(Box<LoadArgs>),
    /// Rebuild a table when it changed since its load (a no-op otherwise).
    Refresh {
        /// The table's name in the store.
        name: String,
    },
    /// Remove a table (clients attached to it keep their revision until they release it).
    Drop {
        /// The table's name in the store.
        name: String,
    },
    /// Show the tables: revision, device, rows, bytes, load time, LSN, attached clients, stale.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        /// Do not check the tables against PostgreSQL (stale is then unknown).
        #[arg(long)]
        no_stale: bool,
    },
    /// Print the manifest (JSON) of a table's current revision: schema, CUDA IPC handles, and
    /// every column buffer's offset and length.
    Export {
        /// The table's name in the store.
        name: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Table to load (schema-qualified, quoted as in SQL).
    #[arg(long)]
    pub table: String,
    /// Name in the store (default: the table as given).
    #[arg(long)]
    pub name: Option<String>,
    /// GPU to hold the table.
    #[arg(long, default_value_t = 0, conflicts_with = "devices")]
    pub device: usize,
    /// Several GPUs to hold the table: all (the server's), or ordinals such as 0,1; its chunks
    /// are spread over them.
    #[arg(long, value_name = "all|N,N...")]
    pub devices: Option<DeviceChoice>,
    /// Where rows come from: heap files, COPY, or heap when the table qualifies (auto).
    #[arg(long, default_value_t = Source::Auto, value_name = "auto|copy|heap")]
    pub source: Source,
    /// Only these columns, in this order.
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Check every SECONDS whether the table changed, and rebuild it in the background when it did.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub auto_refresh: Option<u64>,
    /// Connections to the server (default: cores, at most 16).
    #[arg(long, value_parser = crate::export_args::at_least_one)]
    pub parallel: Option<usize>,
    /// Decoder threads (default: 4 per GPU, which keep it busy; no more than the server's
    /// cores unless each GPU is to have one).
    #[arg(long, value_parser = crate::export_args::at_least_one)]
    pub threads: Option<usize>,
    /// Chunk size in MiB (one chunk per device batch).
    #[arg(long, value_parser = crate::export_args::chunk_mib)]
    pub chunk_mib: Option<usize>,
    /// Smallest table (bytes; suffixes kB, MB, GB) that --source auto reads from its heap files.
    #[arg(long, value_parser = gpupg_source::parse_size)]
    pub heap_threshold: Option<u64>,
    /// How the heap path makes the files hold every change made before the load: wal,
    /// buffercache, checkpoint, or the first of these that can be used (auto); as export's.
    #[arg(long, default_value_t = HeapSync::Auto, value_name = "auto|checkpoint|buffercache|wal")]
    pub heap_sync: HeapSync,
    /// The PostgreSQL data directory as the store server sees it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Which GPUs may read the heap files with GPU-Direct.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let backend: Arc<dyn Backend> = match args.backend {
        BackendArg::Gpu => Arc::new(GpuBackend::holding_all()),
        BackendArg::Host => Arc::new(HostBackend::default()),
    };
    let socket = match args.socket {
        Some(path) => path,
        None => default_socket_path()?,
    };
    let server = Server::bind(&socket, Registry::new(backend, args.memory_limit))?
        .stop_on(gpupg_store::signals::termination_flag()?);
    server.run()?;
    Ok(())
}

pub fn run(args: StoreArgs) -> Result<()> {
    let socket = match args.socket {
        Some(path) => path,
        None => default_socket_path()?,
    };
    // Checks who listens there before anything (a load's password) is sent.
    let mut client = Client::connect(&socket)?;
    match args.command {
        StoreCommand::Load(load) => {
            let spec = load_spec(*load)?;
            let info = client.load(spec)?;
            println!(
                "loaded {}: revision {}, {} rows, {} on {} device {} in {:.2} s ({})",
                info.name,
                info.revision,
                info.rows,
                human_bytes(info.device_bytes),
                info.backend,
                info.device,
                info.load_seconds,
                info.source
            );
        }
        StoreCommand::Refresh { name } => {
            let outcome = client.refresh(&name)?;
            let info = &outcome.info;
            if outcome.rebuilt {
                println!(
                    "{name}: rebuilt as revision {}, {} rows, {} in {:.2} s{}",
                    info.revision,
                    info.rows,
                    human_bytes(info.device_bytes),
                    info.load_seconds,
                    pages_text(info)
                );
            } else {
                println!("{name}: unchanged, revision {}", info.revision);
            }
        }
        StoreCommand::Drop { name } => {
            let outcome = client.drop_table(&name)?;
            if outcome.held_bytes > 0 {
                println!(
                    "dropped {name}: {} stay held by attached clients until they release",
                    human_bytes(outcome.held_bytes)
                );
            } else {
                println!("dropped {name}: freed {}", human_bytes(outcome.freed_bytes));
            }
        }
        StoreCommand::List { json, no_stale } => {
            let report = client.list(!no_stale)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", list_table(&report));
            }
        }
        StoreCommand::Export { name } => {
            let manifest = client.export(&name)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
    }
    Ok(())
}

fn load_spec(args: LoadArgs) -> Result<LoadSpec> {
    // Resolved here, with this process's environment (PG* variables,
    // $GPUPGPARSER_PG_DSN, PGPASSWORD), and sent whole: the server has its
    // own environment, and needs the password again for every refresh,
    // long after this client is gone. It goes only to a server of this
    // user (Client::connect checked), which never prints or lists it.
    let connect = args.conn.resolve()?;
    let mut spec = LoadSpec::new(args.table, connect.to_connection_string());
    spec.name = args.name;
    spec.device = args.device;
    spec.devices = args.devices.map(|d| d.to_string());
    spec.source = args.source;
    spec.columns = args.columns;
    spec.auto_refresh_seconds = args.auto_refresh;
    spec.parallel = args.parallel;
    spec.threads = args.threads;
    spec.chunk_mib = args.chunk_mib;
    spec.heap_threshold = args.heap_threshold;
    spec.heap_sync = args.heap_sync;
    spec.data_dir = args.data_dir;
    spec.gpu_selection = Some(args.selection.gpu_selection.to_string());
    spec.manual_optimal_gpus = args
        .selection
        .manual_optimal_gpus
        .as_ref()
        .map(|m| m.to_string());
    Ok(spec)
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// What a load through the heap files read: "; pages: 12 read from the
/// files, 3 through COPY, 820 kept (59000 rows copied from revision 1)".
fn pages_text(r: &RevisionInfo) -> String {
    if r.source != "heap" {
        return String::new();
    }
    let mut s = format!(
        "; pages: {} read from the files, {} through COPY",
        r.pages_read, r.pages_copied
    );
    if r.pages_kept > 0 {
        s.push_str(&format!(
            ", {} unchanged and kept ({} rows copied from revision {})",
            r.pages_kept,
            r.rows_kept,
            r.revision.saturating_sub(1)
        ));
    }
    s
}

fn stale_text(r: &RevisionInfo) -> String {
    match (r.current, r.stale) {
        (false, _) => "-".into(),
        (true, Some(true)) => "yes".into(),
        (true, Some(false)) => "no".into(),
        (true, None) => match &r.stale_detail {
            Some(d) => format!("unknown ({d})"),
            None => "unchecked".into(),
        },
    }
}

/// The list as an aligned text table, then the totals.
fn list_table(report: &ListReport) -> String {
    let header = [
        "NAME",
        "TABLE",
        "REV",
        "DEVICE",
        "ROWS",
        "BYTES",
        "LOAD_S",
        "PAGES_R/C/K",
        "LSN",
        "ATTACHED",
        "STALE",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in &report.revisions {
        rows.push(vec![
            if r.current {
                r.name.clone()
            } else {
                format!("{} (old)", r.name)
            },
            r.table.clone(),
            r.revision.to_string(),
            format!("{}:{}", r.backend, r.device),
            r.rows.to_string(),
            human_bytes(r.device_bytes),
            format!("{:.2}", r.load_seconds),
            if r.source == "heap" {
                format!("{}/{}/{}", r.pages_read, r.pages_copied, r.pages_kept)
            } else {
                "-".into()
            },
            r.lsn.clone(),
            r.attached.to_string(),
            stale_text(r),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for name in &report.loading {
        out.push_str(&format!("{name}: loading\n"));
    }
    out.push_str(&format!(
        "{} in use{}\n",
        human_bytes(report.used_bytes),
        report
            .memory_limit
            .map(|l| format!(" of a limit of {}", human_bytes(l)))
            .unwrap_or_default()
    ));
    for r in report.revisions.iter().filter_map(|r| {
        r.auto_refresh_error
            .as_ref()
            .map(|e| format!("{}: last auto-refresh failed: {e}", r.name))
    }) {
        out.push_str(&r);
        out.push('\n');
    }
    out
}

/// A size of at least one byte: a memory limit of 0 would refuse every load.
fn nonzero_size(s: &str) -> Result<u64, String> {
    match gpupg_source::parse_size(s)? {
        0 => Err("must be more than 0 bytes".into()),
        n => Ok(n),
    }
}

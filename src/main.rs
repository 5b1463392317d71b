//! The `gpupgparser` command: export, demo, bench, info, and the table store
//! (serve, store).

mod bench;
mod demo;
mod export_args;
mod info_args;
mod lo_args;
mod machine;
mod output_paths;
mod progress;
mod selection_args;
mod signals;
mod store_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Every decoded batch gets fresh column buffers of a few hundred kB to a
/// few MB, freed when the sink is done with them. glibc's allocator maps
/// and unmaps such blocks again and again (page faults, zeroing and TLB
/// shootdowns across the decoder threads); mimalloc keeps reusing them.
/// On one core, heap pages decode into columns 1.7x faster with it
/// (`examples/heap_decode_speed` of gpupg-decode).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h):
/// how long freed memory stays committed before it goes back to the OS.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[derive(Parser)]
#[command(
    name = "gpupgparser",
    version,
    about = "PostgreSQL tables to Parquet, Arrow and GPU memory at the speed of the hardware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export a table or query to Parquet or Arrow IPC.
    Export(Box<export_args::ExportArgs>),
    /// Start a throwaway PostgreSQL server, create demo tables, export them and check the output.
    Demo(Box<demo::DemoArgs>),
    /// Measure an export of SSB lineorder against the server's own COPY speed.
    Bench(Box<bench::BenchArgs>),
    /// Show the GPUs, driver, CUDA and NVRTC versions, pinned memory, GPUDirect Storage,
    /// the PCIe topology of GPUs and NVMe drives, and the GPUs the selection policy chooses.
    Info(info_args::InfoArgs),
    /// Run the table store: hold tables in GPU memory and share them with other processes.
    Serve(store_args::ServeArgs),
    /// Talk to the table store: load, refresh, drop, list, export.
    Store(store_args::StoreArgs),
    /// Copy bytes of a GPU allocation (CUDA IPC handle) into a PostgreSQL large object; prints its OID.
    LoImport(lo_args::LoImportArgs),
    /// Copy a PostgreSQL large object into a GPU allocation (CUDA IPC handle), zero-filling the
    /// rest of the region; prints the bytes written.
    LoExport(lo_args::LoExportArgs),
}

/// Decoders allocate and free multi-megabyte Arrow buffers for every chunk.
/// By default glibc serves those with mmap and returns them to the kernel on
/// free, so every chunk pays page faults and zeroing again (about a third of
/// decoding time). Raising the mmap and trim thresholds keeps them in the heap
/// for reuse; memory stays bounded by the pipeline's chunks in flight.
///
/// mimalloc (the default allocator) gives freed memory back to the OS 1 s
/// after it was freed (v3's default), and the next batches fault it in
/// again, zeroing every page (2 MiB at a time with transparent huge pages):
/// 17% of the CPU time of the events table's heap path to Parquet
/// (bench/RESULTS.md, "leaner heap -> Parquet"). 10 s keeps it for the
/// whole export and still returns it when a long-lived process (the store)
/// goes idle.
///
/// Transparent huge pages are turned off for the process: every first touch
/// of a 2 MiB region zeroes all of it, and the decoders' and the Parquet
/// writer's buffers kept faulting new ones in. On the events table's heap
/// path to Parquet this halved the system time (2.5 s to 1.0 s, user time
/// unchanged; bench/RESULTS.md, "leaner heap -> Parquet").
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process, read
    // when its pages fault in; a kernel without it returns an error, which
    // leaves huge pages as they were.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // SAFETY: mi_option_set stores the value of an option that mimalloc
    // reads when it purges; every value of purge_delay is valid.
    #[cfg(feature = "mimalloc")]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000)
    };
}

/// The error and its causes on one line, each cause's message once, in
/// the command line's words (flag names where the libraries name a
/// setting).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = in_cli_words(cause);
        // A few errors still spell out their cause's message and return it
        // as their source too (the sink's I/O errors, a failed connect).
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// One error of the chain as the command line says it: the libraries say
/// which setting is wrong in their words, the flag is the user's.
fn in_cli_words(e: &(dyn std::error::Error + 'static)) -> String {
    use gpupg_export::{ExportError, RequestError};
    use gpupg_source::SourceError;
    let source_error = e
        .downcast_ref::<SourceError>()
        .or_else(|| match e.downcast_ref() {
            Some(ExportError::Source(s)) => Some(s),
            _ => None,
        });
    let request_error = e
        .downcast_ref::<RequestError>()
        .or_else(|| match e.downcast_ref() {
            Some(ExportError::Request(r)) => Some(r),
            _ => None,
        });
    if let Some(e) = request_error {
        return export_args::flag_message(e);
    }
    match (e.downcast_ref::<ExportError>(), source_error) {
        (Some(ExportError::Gpu(_)), _) => "--engine gpu".into(),
        (Some(ExportError::HeapRefused(why)), _) => {
            format!("invalid request: --source heap: {why}")
        }
        (
            Some(ExportError::FilterNotACondition {
                filter,
                table,
                message,
            }),
            _,
        ) => format!(
            "invalid request: --where {filter:?} is not one condition on table {table}: \
             {message} (give a boolean SQL expression on its columns, e.g. --where \"id > 100\")"
        ),
        (
            _,
            Some(SourceError::UnsupportedType {
                table,
                column,
                type_name,
            }),
        ) => format!(
            "column \"{column}\" of {table} has type {type_name}, which gpupgparser cannot \
             decode; use --cast-unsupported to have the server cast it to text, or cast it in \
             a --query"
        ),
        (
            _,
            Some(SourceError::NoPrivilege {
                user,
                table,
                columns,
            }),
        ) => format!(
            "permission denied: user \"{user}\" may not read column(s) {columns} of table \
             {table} (ask for GRANT SELECT on it, or leave those columns out with --columns)"
        ),
        _ => e.to_string(),
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Export(args) => export_args::run(*args),
        Command::Demo(args) => demo::run(*args),
        Command::Bench(args) => bench::run(*args),
        Command::Serve(args) => store_args::serve(args),
        Command::Store(args) => store_args::run(args),
        Command::LoImport(args) => lo_args::import(args),
        Command::LoExport(args) => lo_args::export(args),
        Command::Info(args) => info_args::run(args),
    };
    if let Some((signal, name)) = signals::received() {
        // Whatever the work's own error (the cancelled statements', say):
        // the signal is why it stopped.
        match result {
            Ok(()) => eprintln!("interrupted by {name} after the work had completed"),
            Err(_) => eprintln!("error: interrupted by {name}; no output was left behind"),
        }
        return ExitCode::from(u8::try_from(signals::exit_code(signal)).unwrap_or(u8::MAX));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

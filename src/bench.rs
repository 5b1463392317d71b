//! `gpupgparser bench`: an export of SSB lineorder (or the events table,
//! shaped like application data) measured against the server's own COPY
//! speed on the same connections, recorded as JSON with the machine and the
//! arguments.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gpupg_export::{measure_copy_ceiling, CeilingReport, ExportReport, NoProgress, Output, Target};
use gpupg_localpg::LocalServer;
use gpupg_source::{ConnectConfig, Connection, Param};
use serde::Serialize;

use crate::export_args::{ConnArgs, ExportOptions};
use crate::machine::{describe, Machine};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to measure (default: a throwaway local server).
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Table to export. When created, a table named `events` is shaped like
    /// application events (jsonb, TOASTed notes, lz4); any other name is SSB
    /// lineorder.
    #[arg(long, default_value = "lineorder")]
    pub table: String,
    /// Rows to generate when the table is created.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,
    /// Create the table: when missing (auto), always (replacing it), or never.
    #[arg(long, value_enum, default_value_t = CreateArg::Auto)]
    pub create: CreateArg,
    /// Directory for the output files, removed after each run (default: the system's temporary directory).
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,
    /// Export runs (the best is reported, all are recorded).
    #[arg(long, default_value_t = 1, value_parser = crate::export_args::at_least_one)]
    pub runs: usize,
    /// Do not measure the server's COPY ceiling.
    #[arg(long)]
    pub skip_ceiling: bool,
    /// Write the results as JSON to this file (replaced if it exists).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// What the export produces: a file (Parquet or Arrow, see --format),
    /// Arrow record batches in host memory, or device-resident Arrow columns
    /// on the GPU of --device (both held until the run ends).
    #[arg(long, value_enum, default_value_t = BenchTo::File)]
    pub to: BenchTo,
    #[command(flatten)]
    pub options: ExportOptions,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchTo {
    File,
    Host,
    Device,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateArg {
    Auto,
    Always,
    Never,
}

#[derive(Serialize)]
struct BenchResult {
    machine: Machine,
    command: Vec<String>,
    server_version: String,
    table: String,
    rows: u64,
    heap_bytes: u64,
    /// The faster of the ceiling measured before and after the exports.
    ceiling: Option<CeilingReport>,
    ceiling_runs: Vec<CeilingReport>,
    runs: Vec<ExportReport>,
    best_seconds: f64,
    rows_per_second: f64,
    copy_gb_per_second: f64,
    /// Export time over ceiling time (1.0 = as fast as COPY into nothing).
    ratio_to_ceiling: Option<f64>,
    /// COPY bytes decoded per second of one decoder thread.
    decode_gb_per_second_per_core: f64,
    /// CPU seconds the decoder threads used in the best run (the GPU
    /// engine's "host CPU time for decoding").
    decode_cpu_seconds: f64,
    /// What the GB/s count: COPY rows, or heap pages and COPY rows.
    data_kind: &'static str,
}

/// The one value of `sql`; `what` it is for names it in errors.
fn scalar(conn: &mut Connection, what: &str, sql: &str, params: &[Param]) -> Result<String> {
    conn.query(what, sql, params)?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .with_context(|| format!("{what}: no value"))
}

pub fn run(args: BenchArgs) -> Result<()> {
    // Known before the benchmark runs, not after.
    if let Some(json) = &args.json {
        crate::output_paths::check_file("--json", json, true)?;
    }
    crate::signals::install()?;
    let server;
    let config = match &args.conn.dsn {
        Some(_) => args.conn.resolve()?,
        None => {
            eprintln!("no --dsn: starting a throwaway PostgreSQL server");
            server = LocalServer::start().context("starting the benchmark server")?;
            ConnectConfig::resolve(Some(&server.dsn()))?
        }
    };
    let mut conn = Connection::connect(&config)?;
    create_if_asked(&args, &config, &mut conn)?;
    let server_version = scalar(
        &mut conn,
        "reading the server version",
        "SELECT pg_catalog.current_setting('server_version')",
        &[],
    )?;
    let heap_bytes: u64 = scalar(
        &mut conn,
        &format!("measuring table {}", args.table),
        "SELECT pg_catalog.pg_relation_size(pg_catalog.to_regclass($1))",
        &[Param::untyped_text(&args.table)],
    )?
    .parse()
    .context("pg_relation_size")?;

    let scratch = tempfile::Builder::new()
        .prefix("gpupg-bench-")
        .tempdir_in(args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir))
        .context("creating the scratch directory")?;
    let mut options = args.options.clone();
    options.overwrite = true;
    let ext = match options.format {
        Some(crate::export_args::FormatArg::Arrow) => "arrow",
        _ => "parquet",
    };
    let out = scratch.path().join(format!("bench.{ext}"));
    let req = options.request(
        config.clone(),
        Target::Table(args.table.clone()),
        match args.to {
            BenchTo::File => Output::File(out.clone()),
            BenchTo::Host => Output::Host,
            BenchTo::Device => Output::Device,
        },
    )?;

    // The ceiling is measured before and after the exports and the faster
    // one kept, so that a cold first scan does not flatter the exports.
    let measure_ceiling = || -> Result<Option<CeilingReport>> {
        if args.skip_ceiling {
            return Ok(None);
        }
        eprintln!(
            "measuring the COPY ceiling: COPY BINARY into nothing on {} connection(s) ...",
            req.parallel
        );
        let c = measure_copy_ceiling(&req)?;
        eprintln!(
            "  ceiling: {:.2} s, {} rows, {:.2} GB ({:.2} GB/s)",
            c.seconds,
            c.rows,
            c.bytes_received as f64 / 1e9,
            c.bytes_received as f64 / 1e9 / c.seconds
        );
        Ok(Some(c))
    };
    let mut ceilings: Vec<CeilingReport> = measure_ceiling()?.into_iter().collect();

    let mut runs = Vec::new();
    for i in 0..args.runs {
        let report = gpupg_export::export(&req, &NoProgress)?;
        eprintln!("\nrun {}:\n{}", i + 1, report.summary());
        std::fs::remove_file(&out).ok();
        runs.push(report);
    }
    ceilings.extend(measure_ceiling()?);
    let ceiling = ceilings
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .cloned();
    let best = runs
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .context("no run")?;
    let result = BenchResult {
        machine: describe(),
        command: std::env::args().collect(),
        server_version,
        table: args.table.clone(),
        rows: best.rows,
        heap_bytes,
        best_seconds: best.seconds,
        rows_per_second: best.rows_per_second(),
        copy_gb_per_second: best.copy_gb_per_second(),
        ratio_to_ceiling: ceiling.as_ref().map(|c| best.seconds / c.seconds),
        decode_gb_per_second_per_core: best.copy_bytes as f64 / 1e9 / best.phases.decode.max(1e-9),
        decode_cpu_seconds: best.phases.decode_cpu,
        data_kind: best.data_kind(),
        ceiling,
        ceiling_runs: ceilings,
        runs,
    };
    eprintln!(
        "\nbench: {} rows ({:.2} GB heap) in {:.2} s: {:.0} rows/s, {:.2} GB/s of {}, decoder {:.2} GB/s per core{}",
        result.rows,
        heap_bytes as f64 / 1e9,
        result.best_seconds,
        result.rows_per_second,
        result.copy_gb_per_second,
        result.data_kind,
        result.decode_gb_per_second_per_core,
        match result.ratio_to_ceiling {
            Some(r) => format!(", {r:.2}x the COPY ceiling's time"),
            None => String::new(),
        }
    );
    let json = serde_json::to_string_pretty(&result)?;
    match &args.json {
        Some(path) => {
            gpupg_sink::write_file(path, (json + "\n").as_bytes(), true)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("results written to {}", path.display());
        }
        None => println!("{json}"),
    }
    Ok(())
}

/// Creates the benchmark table when `--create` says so (always, or when it
/// does not exist yet): `events` is the application-shaped table, any other
/// name SSB lineorder.
fn create_if_asked(args: &BenchArgs, config: &ConnectConfig, conn: &mut Connection) -> Result<()> {
    let exists = scalar(
        conn,
        &format!("looking up table {}", args.table),
        "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
        &[Param::untyped_text(&args.table)],
    )
    .map_err(|e| match e.downcast::<gpupg_source::SourceError>() {
        Ok(e) => e.about_table_name(&args.table).into(),
        Err(e) => e,
    })? == "t";
    if args.create == CreateArg::Always || (args.create == CreateArg::Auto && !exists) {
        let t = Instant::now();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        eprintln!("creating {} with {} rows ...", args.table, args.rows);
        if args.table == "events" {
            if !gpupg_datagen::create_events(config, &args.table, args.rows, cores)? {
                eprintln!("  the server has no lz4: the summary column is compressed with pglz");
            }
        } else {
            gpupg_datagen::create_lineorder(config, &args.table, args.rows, cores)?;
        }
        eprintln!("  created in {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}

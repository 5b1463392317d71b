//! `gpupgparser demo`: everything on a throwaway server, end to end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use gpupg_export::{NoProgress, Output, Target};
use gpupg_localpg::LocalServer;
use gpupg_source::{ConnectConfig, Connection};

use crate::export_args::ExportOptions;
use crate::progress::Bar;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Rows of SSB lineorder to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Keep the exported files in this directory (default: a temporary one, removed).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    #[command(flatten)]
    pub options: ExportOptions,
}

pub fn run(args: DemoArgs) -> Result<()> {
    crate::signals::install()?;
    let t = Instant::now();
    eprintln!("starting a throwaway PostgreSQL server ...");
    let server = LocalServer::start().context("starting the demo server")?;
    eprintln!(
        "  server on port {} (data in {}, binaries in {}) started in {:.1} s",
        server.port(),
        server.data_dir().display(),
        server.bin_dir().display(),
        t.elapsed().as_secs_f64()
    );
    let config = ConnectConfig::resolve(Some(&server.dsn()))?;

    let t = Instant::now();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    gpupg_datagen::create_lineorder(&config, "lineorder", args.rows, cores)?;
    gpupg_datagen::create_all_types(&config, 1000)?;
    eprintln!(
        "created lineorder ({} rows) and all_types (1000 rows) in {:.1} s",
        args.rows,
        t.elapsed().as_secs_f64()
    );

    let scratch;
    let dir: &Path = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            scratch = tempfile::tempdir().context("creating a temporary directory")?;
            scratch.path()
        }
    };

    let mut conn = Connection::connect(&config)?;
    let exports = [
        ("lineorder", "lineorder.parquet"),
        ("all_types", "all_types.parquet"),
        ("all_types", "all_types.arrow"),
    ];
    for (table, file) in exports {
        let path = dir.join(file);
        let mut options = args.options.clone();
        options.overwrite = true;
        options.format = None;
        let req = options.request(
            config.clone(),
            Target::Table(table.into()),
            Output::File(path.clone()),
        )?;
        eprintln!("\nexport {table} -> {}", path.display());
        let report = gpupg_export::export(&req, &Bar::new(false))?;
        eprintln!("{}", report.summary());
        let expected = count_rows(&mut conn, table)?;
        let written = rows_in_file(&path)?;
        if written != expected || report.rows != expected {
            bail!(
                "{}: {written} rows in the file, {} exported, but {table} has {expected}",
                path.display(),
                report.rows
            );
        }
        eprintln!(
            "read back {}: {written} rows, as in the table",
            path.display()
        );
    }
    // A query export too: one connection, a cast the server computes.
    let path = dir.join("revenue_by_shipmode.parquet");
    let mut options = args.options.clone();
    options.overwrite = true;
    let req = options.request(
        config.clone(),
        Target::Query(
            "SELECT lo_shipmode, sum(lo_revenue)::bigint AS revenue FROM lineorder GROUP BY 1"
                .into(),
        ),
        Output::File(path.clone()),
    )?;
    let report = gpupg_export::export(&req, &NoProgress)?;
    eprintln!(
        "\nexport of a query -> {}: {} rows",
        path.display(),
        report.rows
    );
    drop(server);
    eprintln!("\ndemo passed: every export read back with the table's row count; server stopped");
    Ok(())
}

fn count_rows(conn: &mut Connection, table: &str) -> Result<u64> {
    let rows = conn.simple_query(&format!(
        "SELECT count(*) FROM {}",
        gpupg_source::sql::quote_ident(table)
    ))?;
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .context("count(*) returned nothing")
}

/// Row count of a Parquet or Arrow IPC file, read back from the file itself.
pub fn rows_in_file(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "parquet") {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let reader = SerializedFileReader::new(file)
            .with_context(|| format!("reading {} as Parquet", path.display()))?;
        Ok(reader.metadata().file_metadata().num_rows() as u64)
    } else {
        let reader = arrow::ipc::reader::FileReader::try_new(file, None)
            .with_context(|| format!("reading {} as Arrow IPC", path.display()))?;
        let mut rows = 0u64;
        for batch in reader {
            rows += batch?.num_rows() as u64;
        }
        Ok(rows)
    }
}

//! The `gpupgparser` command: export, demo, bench.

mod bench;
mod demo;
mod export_args;
mod machine;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Demo(demo::DemoArgs),
    /// Measure an export of SSB lineorder against the server's own COPY speed.
    Bench(Box<bench::BenchArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Export(args) => export_args::run(*args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the libraries' errors already say what and where.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

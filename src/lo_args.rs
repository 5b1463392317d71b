//! `gpupgparser lo-import` and `gpupgparser lo-export`: large-object
//! bridges between GPU memory another process exported through CUDA IPC
//! and PostgreSQL large objects, as PG-Strom's `lo_import_gpu` and
//! `lo_export_gpu` (docs/store.md).

use anyhow::{Context, Result};
use clap::Args;
use gpupg_gpu::{IpcHandle, MappedRegion};
use gpupg_source::Connection;
use gpupg_store::large_object::{
    check_region, check_span, export_region, import_region, DEFAULT_CHUNK_BYTES,
};

use crate::export_args::ConnArgs;

/// Where the bytes are on the GPU.
#[derive(Args, Debug, Clone)]
pub struct RegionArgs {
    /// GPU to map the allocation on.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// CUDA IPC memory handle of the allocation, 128 hex digits (as `store export` prints them;
    /// the allocation is another process's, which must keep it while this runs).
    #[arg(long, value_name = "HEX")]
    pub ipc_handle: String,
    /// First byte of the region, from the start of the allocation.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Bytes of the region.
    #[arg(long)]
    pub length: u64,
}

#[derive(Args, Debug, Clone)]
pub struct LoImportArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub region: RegionArgs,
    /// Replace the contents of this large object (its owner and privileges stay), or create it
    /// with this OID when it does not exist. Default: a new large object.
    #[arg(long, value_name = "OID", value_parser = clap::value_parser!(u32).range(1..))]
    pub loid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct LoExportArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The large object to write into the region.
    #[arg(long, value_name = "OID", value_parser = clap::value_parser!(u32).range(1..))]
    pub loid: u32,
    #[command(flatten)]
    pub region: RegionArgs,
}

/// Checks what can be checked without a GPU, then maps the allocation and
/// checks the span against it: all before any SQL runs.
fn open(region: &RegionArgs) -> Result<MappedRegion> {
    check_span(region.offset, region.length)?;
    let handle = IpcHandle::from_hex(&region.ipc_handle).context("--ipc-handle")?;
    let mapped = MappedRegion::open(region.device, &handle).with_context(|| {
        format!(
            "mapping the --ipc-handle allocation on GPU {}",
            region.device
        )
    })?;
    check_region(&mapped, region.offset, region.length)?;
    Ok(mapped)
}

/// `lo-import`: prints the large object's OID.
pub fn import(args: LoImportArgs) -> Result<()> {
    let config = args.conn.resolve()?;
    let mapped = open(&args.region)?;
    let mut conn = Connection::connect(&config)?;
    let done = import_region(
        &mut conn,
        &mapped,
        args.region.offset,
        args.region.length,
        args.loid,
        DEFAULT_CHUNK_BYTES,
    )?;
    println!("{}", done.oid);
    Ok(())
}

/// `lo-export`: prints the bytes written from the object (its size).
pub fn export(args: LoExportArgs) -> Result<()> {
    let config = args.conn.resolve()?;
    let mut mapped = open(&args.region)?;
    let mut conn = Connection::connect(&config)?;
    let written = export_region(
        &mut conn,
        args.loid,
        &mut mapped,
        args.region.offset,
        args.region.length,
        DEFAULT_CHUNK_BYTES,
    )?;
    println!("{written}");
    Ok(())
}

//! `gpupgparser info`: the GPUs (gpupg-gpu's report), then the PCIe
//! topology and the GPUs the selection policy would choose
//! (gpupg-topology). Nothing missing is an error here: a machine without a
//! GPU or an NVMe drive gets a one-line note and exit status 0.

use std::path::{Path, PathBuf};

use gpupg_topology::{GpuId, Report, Selection, Selector, Sysfs, Topology};

use crate::selection_args::SelectionArgs;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// Check whether GPUDirect Storage (cuFile) can register a file in this directory.
    #[arg(long, value_name = "DIR")]
    check_gds: Option<PathBuf>,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Show the GPUs chosen for this PostgreSQL data directory and its
    /// tablespaces (without it: for each NVMe drive).
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Print everything as one JSON object.
    #[arg(long)]
    json: bool,
    /// Read this sysfs tree instead of /sys (tests and diagnosis).
    #[arg(long, value_name = "DIR", hide = true)]
    sysfs_root: Option<PathBuf>,
}

/// The selection for a data directory: where its relations are (`base`,
/// else the directory itself), and each tablespace (`pg_tblspc/OID`
/// links); several of them give their intersection, since a table may
/// have partitions in any of them.
fn data_dir_selection(sel: &Selector, dir: &Path) -> Selection {
    let base = dir.join("base");
    let mut parts = vec![sel.for_path(if base.is_dir() { &base } else { dir })];
    if let Ok(rd) = std::fs::read_dir(dir.join("pg_tblspc")) {
        let mut links: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        links.sort();
        for l in links {
            parts.push(sel.for_path(&l));
        }
    }
    if parts.len() == 1 {
        let mut only = parts.remove(0);
        only.target = dir.display().to_string();
        return only;
    }
    let n = parts.len() - 1;
    sel.intersect(
        format!(
            "{} with {n} tablespace{}",
            dir.display(),
            if n == 1 { "" } else { "s" }
        ),
        parts,
    )
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let sysfs = match &args.sysfs_root {
        Some(root) => Sysfs::new(root),
        None => Sysfs::system(),
    };
    let (gpu_ids, gpu_note) = match gpupg_gpu::probe::pci_locations() {
        Ok(l) => (
            l.into_iter()
                .map(|g| GpuId {
                    ordinal: g.ordinal,
                    pci_bus_id: g.pci_bus_id,
                    name: Some(g.name),
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let topology = Topology::read(sysfs, &gpu_ids);
    let selector = Selector::new(
        &topology,
        args.selection.gpu_selection,
        args.selection.manual_optimal_gpus.as_ref(),
    );
    let selections = args
        .data_dir
        .iter()
        .map(|d| data_dir_selection(&selector, d))
        .collect();
    if args.json {
        let report = Report::new(&selector, gpu_note, selections);
        let (gpus, gpu_error) = match gpupg_gpu::devices() {
            Ok(d) => (serde_json::to_value(d)?, None),
            Err(e) => (serde_json::Value::Null, Some(e.to_string())),
        };
        let gds = match &args.check_gds {
            Some(dir) => serde_json::to_value(gpupg_gpu::check_gds(dir))?,
            None => serde_json::Value::Null,
        };
        let out = serde_json::json!({
            "gpus": gpus,
            "gpu_error": gpu_error,
            "gds": gds,
            "topology": report.to_json(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        // No GPU is not an error here: the report says so. Its first line
        // already gives the CUDA error in full.
        let report = Report::new(
            &selector,
            gpu_note.map(|_| "none usable by CUDA: see the GPU line above".to_string()),
            selections,
        );
        print!("{}", gpupg_gpu::info_report(args.check_gds.as_deref()));
        print!("{}", report.to_text());
    }
    Ok(())
}

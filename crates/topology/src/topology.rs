//! The machine's GPUs and NVMe drives placed in the PCIe tree, read once.

use std::path::PathBuf;

use serde::Serialize;

use crate::block::NvmeDrive;
use crate::distance::{distance, Distance, NumaNodes};
use crate::pci::{PciAddress, PciDevice};
use crate::sysfs::{Gpu, GpuId, Sysfs};

/// GPUs and NVMe drives with their PCIe paths. Reading never fails:
/// whatever cannot be read becomes a note, so `gpupgparser info` always
/// prints what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    #[serde(skip)]
    sysfs: Sysfs,
    /// The sysfs tree read (`/sys`, or a fake one in tests).
    pub sysfs_root: PathBuf,
    /// The online NUMA nodes.
    pub numa: NumaNodes,
    /// The GPUs the caller gave, placed in the tree.
    pub gpus: Vec<Gpu>,
    /// NVMe namespaces on PCIe (each path of a multipath namespace).
    pub nvme: Vec<NvmeDrive>,
    /// NVIDIA functions in sysfs that no given GPU names (hidden by
    /// `CUDA_VISIBLE_DEVICES`, or CUDA not usable).
    pub other_nvidia: Vec<PciAddress>,
    /// Why something is missing, one line each.
    pub notes: Vec<String>,
}

impl Topology {
    /// Reads the GPUs given (CUDA ordinals and bus ids) and every NVMe
    /// namespace from `sysfs`.
    pub fn read(sysfs: Sysfs, gpu_ids: &[GpuId]) -> Topology {
        let mut notes = Vec::new();
        let numa = sysfs.numa_nodes().unwrap_or_else(|e| {
            notes.push(format!("NUMA nodes: {e}"));
            NumaNodes::default()
        });
        let gpus = sysfs.gpus(gpu_ids);
        let mut nvme = Vec::new();
        match sysfs.nvme_namespace_names() {
            // One unreadable namespace must not hide the others.
            Ok(names) => {
                for name in names {
                    match sysfs.block_device(&name) {
                        Ok(s) => {
                            let leaves = s.nvme_leaves();
                            if leaves.is_empty() {
                                notes.push(format!("{}: not in the distance table", s.describe()));
                            }
                            nvme.extend(leaves.into_iter().cloned());
                        }
                        Err(e) => notes.push(format!("{name}: {e}")),
                    }
                }
            }
            Err(e) => notes.push(format!("NVMe drives: {e}")),
        }
        nvme.sort_by(|a, b| a.name.cmp(&b.name));
        nvme.dedup_by(|a, b| a.name == b.name);
        let placed: Vec<PciAddress> = gpus
            .iter()
            .filter_map(|g| g.pci.as_ref().map(|p| p.address))
            .collect();
        let other_nvidia = match sysfs.nvidia_functions() {
            Ok(all) => all.into_iter().filter(|a| !placed.contains(a)).collect(),
            Err(e) => {
                notes.push(format!("NVIDIA devices: {e}"));
                Vec::new()
            }
        };
        Topology {
            sysfs_root: sysfs.root().to_path_buf(),
            sysfs,
            numa,
            gpus,
            nvme,
            other_nvidia,
            notes,
        }
    }

    /// The sysfs tree it was read from (to resolve paths against it).
    pub fn sysfs(&self) -> &Sysfs {
        &self.sysfs
    }

    /// The GPU with CUDA ordinal `ordinal`, if it was given.
    pub fn gpu(&self, ordinal: usize) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.ordinal == ordinal)
    }

    /// The distance from a GPU to a PCI device; `None` when the GPU could
    /// not be placed.
    pub fn distance(&self, gpu: &Gpu, to: &PciDevice) -> Option<Distance> {
        gpu.pci.as_ref().map(|g| distance(g, to, &self.numa))
    }

    /// An NVMe namespace or controller by name.
    pub fn nvme_named(&self, name: &str) -> Vec<&NvmeDrive> {
        self.nvme
            .iter()
            .filter(|d| d.name == name || d.controller == name)
            .collect()
    }
}

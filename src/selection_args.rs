//! `--gpu-selection` and `--manual-optimal-gpus`, shared by `info`,
//! `export`, `bench` and `store load`.

use gpupg_export::GpuSelection;
use gpupg_topology::{ManualGpus, Policy};

#[derive(clap::Args, Debug, Clone)]
pub struct SelectionArgs {
    /// Which GPUs read a drive's data with GPU-Direct: the nearest (optimal),
    /// those on the drive's NUMA node (numa), or all (system).
    #[arg(long, value_name = "POLICY", default_value = "optimal", value_parser = parse_policy)]
    pub gpu_selection: Policy,
    /// GPUs for drives or directories, overriding the policy, e.g.
    /// 'nvme3=gpu2:gpu3,/mnt/nfs=gpu1' (docs/topology.md).
    #[arg(long, value_name = "SPEC", value_parser = parse_manual)]
    pub manual_optimal_gpus: Option<ManualGpus>,
}

impl SelectionArgs {
    /// As the export takes it.
    pub fn selection(&self) -> GpuSelection {
        GpuSelection {
            policy: self.gpu_selection,
            manual: self.manual_optimal_gpus.clone(),
        }
    }
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn parse_manual(s: &str) -> Result<ManualGpus, String> {
    // clap names the option; the error says what and where in the value.
    s.parse::<ManualGpus>().map_err(|e| e.to_string())
}

//! Which GPUs read a drive's data with GPU-Direct: PG-Strom's
//! `pg_strom.gpu_selection_policy` and `pg_strom.manual_optimal_gpus`.
//!
//! - `optimal`: the GPUs at the smallest distance from the drive;
//! - `numa`: the GPUs on the drive's NUMA node;
//! - `system`: every GPU.
//!
//! A path on several drives (md-raid members; several tablespaces) may use
//! only the GPUs every drive allows: the intersection. An empty set means
//! no GPU-Direct for that path, and [`Selection::reason`] says why.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::block::{NvmeDrive, StackKind, Storage};
use crate::distance::Distance;
use crate::error::ManualSpecError;
use crate::pci::PciDevice;
use crate::topology::Topology;

/// `--gpu-selection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The nearest GPUs (smallest [`Distance`]); ties all count.
    #[default]
    Optimal,
    /// The GPUs on the drive's NUMA node.
    Numa,
    /// All GPUs.
    System,
}

impl Policy {
    /// The policy's name as the command line takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Optimal => "optimal",
            Policy::Numa => "numa",
            Policy::System => "system",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "optimal" => Ok(Policy::Optimal),
            "numa" => Ok(Policy::Numa),
            "system" => Ok(Policy::System),
            _ => Err(format!(
                "unknown GPU selection policy {s:?} (expected optimal, numa or system)"
            )),
        }
    }
}

/// What a manual entry names: a drive or an absolute directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum ManualTarget {
    /// A controller (`nvme3`: all its namespaces), a namespace (`nvme3n1`),
    /// a partition, or a stacked device (`md0`).
    Device(String),
    /// Everything under a directory; the deepest matching entry wins.
    Path(PathBuf),
}

/// One `TARGET=GPUS` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualEntry {
    /// The drive or path the entry is for.
    pub target: ManualTarget,
    /// Sorted CUDA ordinals; empty for `none`.
    pub gpus: Vec<usize>,
}

impl fmt::Display for ManualEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            ManualTarget::Device(n) => write!(f, "{n}=")?,
            ManualTarget::Path(p) => write!(f, "{}=", p.display())?,
        }
        if self.gpus.is_empty() {
            return f.write_str("none");
        }
        let g: Vec<String> = self.gpus.iter().map(|g| format!("gpu{g}")).collect();
        f.write_str(&g.join(":"))
    }
}

/// `--manual-optimal-gpus 'nvme3=gpu2:gpu3,/mnt/nfs=gpu1'`: PG-Strom's
/// `pg_strom.manual_optimal_gpus`.
///
/// ```text
/// spec   := entry [',' entry]...
/// entry  := target '=' gpus
/// target := drive name (nvme3, nvme3n1, nvme3n1p2, md0) | absolute path
/// gpus   := 'none' | gpu [':' gpu]...
/// gpu    := 'gpu' N | N            (a CUDA ordinal)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManualGpus {
    /// The entries in the order given.
    pub entries: Vec<ManualEntry>,
}

impl fmt::Display for ManualGpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e: Vec<String> = self.entries.iter().map(|e| e.to_string()).collect();
        f.write_str(&e.join(","))
    }
}

impl Serialize for ManualGpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

fn leading_ws(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

impl FromStr for ManualGpus {
    type Err = ManualSpecError;

    fn from_str(spec: &str) -> Result<Self, ManualSpecError> {
        // Positions are reported in characters, 1-based, over the whole
        // specification; every offset below is at an ASCII delimiter or
        // after trimmed whitespace, so it is a character boundary.
        let err = |byte: usize, entry: &str, message: String| ManualSpecError {
            position: spec[..byte].chars().count() + 1,
            entry: entry.trim().to_string(),
            message,
        };
        if spec.trim().is_empty() {
            return Err(err(
                0,
                "",
                "empty specification (expected TARGET=gpuN[:gpuM...][,...])".into(),
            ));
        }
        let mut entries: Vec<ManualEntry> = Vec::new();
        let mut start = 0;
        for raw in spec.split(',') {
            let here = start;
            start += raw.len() + 1;
            if raw.trim().is_empty() {
                return Err(err(
                    here,
                    raw,
                    "empty entry (two commas in a row, or a comma at an end)".into(),
                ));
            }
            let Some(eq) = raw.find('=') else {
                return Err(err(
                    here + leading_ws(raw),
                    raw,
                    "expected '=' after the drive or path (TARGET=gpuN)".into(),
                ));
            };
            let target_raw = &raw[..eq];
            let target = target_raw.trim();
            let target_at = here + leading_ws(target_raw);
            let target = if target.is_empty() {
                return Err(err(
                    here + eq,
                    raw,
                    "expected a drive name or an absolute path before '='".into(),
                ));
            } else if target.starts_with('/') {
                ManualTarget::Path(PathBuf::from(target))
            } else if target.contains('/') {
                return Err(err(
                    target_at,
                    raw,
                    format!("{target:?} is a relative path; paths must be absolute"),
                ));
            } else if target
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
            {
                ManualTarget::Device(target.to_string())
            } else {
                return Err(err(
                    target_at,
                    raw,
                    format!("{target:?} is neither a drive name (nvme3, md0) nor an absolute path"),
                ));
            };
            if entries.iter().any(|e| e.target == target) {
                return Err(err(target_at, raw, "this target is given twice".into()));
            }
            let gpus_raw = &raw[eq + 1..];
            let mut gpus = BTreeSet::new();
            if gpus_raw.trim() != "none" {
                let mut at = here + eq + 1;
                for tok in gpus_raw.split(':') {
                    let tok_at = at + leading_ws(tok);
                    at += tok.len() + 1;
                    let t = tok.trim();
                    let digits = t.strip_prefix("gpu").unwrap_or(t);
                    if t.is_empty() {
                        return Err(err(
                            tok_at,
                            raw,
                            "expected a GPU (gpuN or N, several joined by ':', or none)".into(),
                        ));
                    }
                    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(err(
                            tok_at,
                            raw,
                            format!("expected a GPU as gpuN or N, found {t:?}"),
                        ));
                    }
                    let n: usize = digits.parse().map_err(|_| {
                        err(tok_at, raw, format!("GPU number {digits} is too large"))
                    })?;
                    gpus.insert(n);
                }
            }
            entries.push(ManualEntry {
                target,
                gpus: gpus.into_iter().collect(),
            });
        }
        Ok(ManualGpus { entries })
    }
}

impl ManualGpus {
    /// The entry naming this device (by any of `names`).
    fn for_device<'a>(&'a self, names: &[&str]) -> Option<&'a ManualEntry> {
        self.entries.iter().find(|e| match &e.target {
            ManualTarget::Device(n) => names.contains(&n.as_str()),
            ManualTarget::Path(_) => false,
        })
    }

    /// The deepest path entry containing `path` (compared component by
    /// component, so `/mnt/nfs` does not cover `/mnt/nfs2`; an entry's own
    /// path is also compared after resolving its links).
    fn for_path<'a>(&'a self, path: &Path) -> Option<&'a ManualEntry> {
        self.entries
            .iter()
            .filter_map(|e| match &e.target {
                ManualTarget::Path(p) => {
                    let canon = std::fs::canonicalize(p).ok();
                    let hit =
                        path.starts_with(p) || canon.as_ref().is_some_and(|c| path.starts_with(c));
                    hit.then(|| (p.components().count(), e))
                }
                ManualTarget::Device(_) => None,
            })
            .max_by_key(|(depth, _)| *depth)
            .map(|(_, e)| e)
    }
}

/// A GPU's distance to a drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuDistance {
    /// The GPU's CUDA ordinal.
    pub gpu: usize,
    /// `None` when the GPU could not be placed in the tree.
    pub distance: Option<Distance>,
}

/// The GPUs chosen for one NVMe namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveChoice {
    /// The namespace's block device name (`nvme0n1`).
    pub drive: String,
    /// Its controller (`nvme0`).
    pub controller: String,
    /// CUDA ordinals of the GPUs chosen, sorted.
    pub gpus: Vec<usize>,
    /// Why `gpus` is empty.
    pub reason: Option<String>,
    /// The manual entry that set `gpus`, if one did.
    pub manual: Option<String>,
    /// Every GPU's distance to the drive.
    pub distances: Vec<GpuDistance>,
}

/// The GPUs chosen for a path, a block device or several of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// The path or device name asked about.
    pub target: String,
    /// The policy that chose (a manual entry may have overridden it).
    pub policy: Policy,
    /// CUDA ordinals, sorted. Empty: no GPU-Direct there.
    pub gpus: Vec<usize>,
    /// Why `gpus` is empty (`None` when it is not).
    pub reason: Option<String>,
    /// What the target is on.
    pub storage: Option<Storage>,
    /// The choice for each NVMe namespace involved.
    pub drives: Vec<DriveChoice>,
    /// The manual entry that decided, if one did.
    pub manual: Option<String>,
    /// For an intersection over several targets: each one's selection.
    pub parts: Vec<Selection>,
}

impl Selection {
    /// Whether GPU-Direct is usable there (some GPU is chosen).
    pub fn gpudirect(&self) -> bool {
        !self.gpus.is_empty()
    }

    /// `GPU0, GPU2`.
    pub fn gpu_list(&self) -> String {
        gpu_list(&self.gpus)
    }
}

pub(crate) fn gpu_list(g: &[usize]) -> String {
    g.iter()
        .map(|g| format!("GPU{g}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result of evaluating one storage node.
struct Eval {
    gpus: BTreeSet<usize>,
    reason: Option<String>,
    drives: Vec<DriveChoice>,
    manual: Option<String>,
}

impl Eval {
    fn empty(reason: String) -> Eval {
        Eval {
            gpus: BTreeSet::new(),
            reason: Some(reason),
            drives: Vec::new(),
            manual: None,
        }
    }
}

/// Applies a policy and the manual entries to a [`Topology`].
#[derive(Debug, Clone, Copy)]
pub struct Selector<'a> {
    topology: &'a Topology,
    policy: Policy,
    manual: Option<&'a ManualGpus>,
}

impl<'a> Selector<'a> {
    /// A selector following `policy`, overridden by `manual`'s entries.
    pub fn new(topology: &'a Topology, policy: Policy, manual: Option<&'a ManualGpus>) -> Self {
        Selector {
            topology,
            policy,
            manual,
        }
    }

    /// The topology it selects from.
    pub fn topology(&self) -> &'a Topology {
        self.topology
    }

    /// The policy it follows.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The manual entries, if any.
    pub fn manual(&self) -> Option<&'a ManualGpus> {
        self.manual
    }

    /// A manual entry's GPUs, keeping only GPUs that exist here.
    fn manual_eval(&self, e: &ManualEntry) -> Eval {
        let known: BTreeSet<usize> = e
            .gpus
            .iter()
            .copied()
            .filter(|g| self.topology.gpu(*g).is_some())
            .collect();
        let reason = known.is_empty().then(|| {
            if e.gpus.is_empty() {
                format!("the manual entry {e} names no GPU")
            } else {
                format!("the manual entry {e} names no GPU present here")
            }
        });
        Eval {
            gpus: known,
            reason,
            drives: Vec::new(),
            manual: Some(e.to_string()),
        }
    }

    /// The policy's GPUs for a PCI device (a drive's controller), and why
    /// there are none.
    pub fn policy_gpus(&self, pci: &PciDevice, name: &str) -> (Vec<usize>, Option<String>) {
        let topo = self.topology;
        if topo.gpus.is_empty() {
            return (Vec::new(), Some("no GPUs".into()));
        }
        match self.policy {
            Policy::System => (topo.gpus.iter().map(|g| g.ordinal).collect(), None),
            Policy::Optimal => {
                let d: Vec<(usize, u32)> = topo
                    .gpus
                    .iter()
                    .filter_map(|g| topo.distance(g, pci).map(|d| (g.ordinal, d.value)))
                    .collect();
                let Some(min) = d.iter().map(|(_, v)| *v).min() else {
                    return (
                        Vec::new(),
                        Some("no GPU could be placed in the PCIe tree".into()),
                    );
                };
                (
                    d.iter()
                        .filter(|(_, v)| *v == min)
                        .map(|(g, _)| *g)
                        .collect(),
                    None,
                )
            }
            Policy::Numa => {
                let Some(node) = topo.numa.effective(pci.numa_node) else {
                    return (
                        Vec::new(),
                        Some(format!(
                            "{name}'s NUMA node is unknown (numa_node -1 on a machine with {} NUMA nodes)",
                            topo.numa
                                .online
                                .as_ref()
                                .map(|o| o.len().to_string())
                                .unwrap_or_else(|| "an unknown number of".into())
                        )),
                    );
                };
                let g: Vec<usize> = topo
                    .gpus
                    .iter()
                    .filter(|g| {
                        g.pci
                            .as_ref()
                            .and_then(|p| topo.numa.effective(p.numa_node))
                            == Some(node)
                    })
                    .map(|g| g.ordinal)
                    .collect();
                let reason = g
                    .is_empty()
                    .then(|| format!("no GPU is on NUMA node {node}, {name}'s"));
                (g, reason)
            }
        }
    }

    /// The GPUs for one NVMe namespace: a manual entry naming it (or its
    /// controller, or `partition`), else the policy.
    pub fn drive_choice(&self, d: &NvmeDrive) -> DriveChoice {
        let distances = self
            .topology
            .gpus
            .iter()
            .map(|g| GpuDistance {
                gpu: g.ordinal,
                distance: self.topology.distance(g, &d.pci),
            })
            .collect();
        let mut names = vec![d.name.as_str(), d.controller.as_str()];
        if let Some(p) = &d.partition {
            names.push(p);
        }
        let (gpus, reason, manual) = match self.manual.and_then(|m| m.for_device(&names)) {
            Some(e) => {
                let ev = self.manual_eval(e);
                (ev.gpus.into_iter().collect(), ev.reason, ev.manual)
            }
            None => {
                let (g, r) = self.policy_gpus(&d.pci, &d.name);
                (g, r, None)
            }
        };
        DriveChoice {
            drive: d.name.clone(),
            controller: d.controller.clone(),
            gpus,
            reason,
            manual,
            distances,
        }
    }

    fn eval(&self, s: &Storage) -> Eval {
        if let Storage::Nvme(d) = s {
            let c = self.drive_choice(d);
            return Eval {
                gpus: c.gpus.iter().copied().collect(),
                reason: c.reason.clone().map(|r| format!("{}: {r}", d.name)),
                manual: c.manual.clone(),
                drives: vec![c],
            };
        }
        let (name, partition) = match s {
            Storage::Stacked(st) => (st.name.as_str(), st.partition.as_deref()),
            Storage::OtherBlock(o) => (o.name.as_str(), o.partition.as_deref()),
            Storage::Nvme(_) | Storage::NoBlockDevice(_) => ("", None),
        };
        if !name.is_empty() {
            let mut names = vec![name];
            names.extend(partition);
            if let Some(e) = self.manual.and_then(|m| m.for_device(&names)) {
                return self.manual_eval(e);
            }
        }
        match s {
            Storage::Nvme(_) => unreachable!("handled above"),
            Storage::Stacked(st) => match st.kind {
                StackKind::Md | StackKind::NvmeMultipath => {
                    if st.members.is_empty() {
                        return Eval::empty(format!("{} has no members", st.name));
                    }
                    let evals: Vec<Eval> = st.members.iter().map(|m| self.eval(m)).collect();
                    let mut gpus = evals[0].gpus.clone();
                    for e in &evals[1..] {
                        gpus = gpus.intersection(&e.gpus).copied().collect();
                    }
                    let reason = if let Some(r) = evals.iter().find_map(|e| e.reason.clone()) {
                        Some(format!("{}'s member {r}", st.name))
                    } else if gpus.is_empty() {
                        let each: Vec<String> = st
                            .members
                            .iter()
                            .zip(&evals)
                            .map(|(m, e)| {
                                format!("{} {}", m.name(), gpu_list(&e.gpus.iter().copied().collect::<Vec<_>>()))
                            })
                            .collect();
                        Some(format!(
                            "no GPU is chosen for every member of {} ({})",
                            st.name,
                            each.join("; ")
                        ))
                    } else {
                        None
                    };
                    let manual = evals
                        .iter()
                        .filter_map(|e| e.manual.clone())
                        .collect::<Vec<_>>();
                    Eval {
                        gpus,
                        reason,
                        drives: evals.into_iter().flat_map(|e| e.drives).collect(),
                        manual: (!manual.is_empty()).then(|| manual.join(",")),
                    }
                }
                StackKind::DeviceMapper | StackKind::Other => Eval::empty(format!(
                    "{} is a {} volume: GPU-Direct is considered only for NVMe namespaces and md-raid over them",
                    st.name,
                    if st.kind == StackKind::DeviceMapper {
                        "device-mapper"
                    } else {
                        "stacked"
                    }
                )),
            },
            Storage::OtherBlock(o) => Eval::empty(format!(
                "{} is not an NVMe drive on PCIe ({})",
                o.name, o.what
            )),
            Storage::NoBlockDevice(_) => Eval::empty(format!("it is on {}", s.describe())),
        }
    }

    fn selection(&self, target: String, storage: Option<Storage>, ev: Eval) -> Selection {
        Selection {
            target,
            policy: self.policy,
            reason: if ev.gpus.is_empty() {
                Some(ev.reason.unwrap_or_else(|| "no GPU chosen".into()))
            } else {
                None
            },
            gpus: ev.gpus.into_iter().collect(),
            storage,
            drives: ev.drives,
            manual: ev.manual,
            parts: Vec::new(),
        }
    }

    /// The GPUs for a block device or what [`crate::Sysfs::storage_for_path`]
    /// found.
    pub fn for_storage(&self, target: impl Into<String>, storage: &Storage) -> Selection {
        // Without GPUs every drive's choice says "no GPUs", while a path on
        // a drive that could never be read with GPU-Direct says why.
        let ev = self.eval(storage);
        self.selection(target.into(), Some(storage.clone()), ev)
    }

    /// The GPUs for a file or directory: a manual path entry covering it,
    /// else the block device holding it.
    pub fn for_path(&self, path: &Path) -> Selection {
        let target = path.display().to_string();
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        let abs = std::fs::canonicalize(&abs).unwrap_or(abs);
        let storage = self.topology.sysfs().storage_for_path(&abs);
        if let Some(e) = self.manual.and_then(|m| m.for_path(&abs)) {
            let ev = self.manual_eval(e);
            return self.selection(target, storage.ok(), ev);
        }
        match storage {
            Ok(s) => self.for_storage(target, &s),
            Err(e) => self.selection(target, None, Eval::empty(e.to_string())),
        }
    }

    /// The GPUs usable for all of `parts` together (a table over several
    /// tablespaces): the intersection.
    pub fn intersect(&self, target: impl Into<String>, parts: Vec<Selection>) -> Selection {
        let target = target.into();
        let Some(first) = parts.first() else {
            return self.selection(target, None, Eval::empty("nothing to read".into()));
        };
        let mut gpus: BTreeSet<usize> = first.gpus.iter().copied().collect();
        for p in &parts[1..] {
            gpus = gpus
                .intersection(&p.gpus.iter().copied().collect())
                .copied()
                .collect();
        }
        let reason = if let Some(p) = parts.iter().find(|p| p.gpus.is_empty()) {
            Some(format!(
                "{}: {}",
                p.target,
                p.reason.as_deref().unwrap_or("no GPU chosen")
            ))
        } else if gpus.is_empty() {
            let each: Vec<String> = parts
                .iter()
                .map(|p| format!("{} {}", p.target, p.gpu_list()))
                .collect();
            Some(format!(
                "no GPU is chosen for every one ({})",
                each.join("; ")
            ))
        } else {
            None
        };
        Selection {
            target,
            policy: self.policy,
            gpus: gpus.into_iter().collect(),
            reason,
            storage: None,
            drives: Vec::new(),
            manual: None,
            parts,
        }
    }

    /// Entries of the manual specification that name nothing here: GPUs
    /// that do not exist, drives not found, paths that do not exist. The
    /// selection ignores what they name; `info` prints these.
    pub fn manual_warnings(&self) -> Vec<String> {
        let Some(m) = self.manual else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let ordinals: Vec<usize> = self.topology.gpus.iter().map(|g| g.ordinal).collect();
        for e in &m.entries {
            let missing: Vec<usize> = e
                .gpus
                .iter()
                .copied()
                .filter(|g| !ordinals.contains(g))
                .collect();
            if !missing.is_empty() {
                out.push(format!(
                    "manual optimal GPUs spec {e}: {} not present (GPUs here: {})",
                    gpu_list(&missing),
                    if ordinals.is_empty() {
                        "none".to_string()
                    } else {
                        gpu_list(&ordinals)
                    }
                ));
            }
            match &e.target {
                ManualTarget::Device(n) => {
                    let found = !self.topology.nvme_named(n).is_empty()
                        || self.topology.sysfs().block_device(n).is_ok();
                    if !found {
                        out.push(format!("manual optimal GPUs spec {e}: no drive named {n}"));
                    }
                }
                ManualTarget::Path(p) => {
                    if !p.exists() {
                        out.push(format!(
                            "manual optimal GPUs spec {e}: {} does not exist",
                            p.display()
                        ));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ManualGpus, ManualSpecError> {
        s.parse()
    }

    #[test]
    fn manual_spec_parses() {
        let m = parse("nvme3=gpu2:gpu3,/mnt/nfs=gpu1").unwrap();
        assert_eq!(
            m.entries,
            [
                ManualEntry {
                    target: ManualTarget::Device("nvme3".into()),
                    gpus: vec![2, 3]
                },
                ManualEntry {
                    target: ManualTarget::Path("/mnt/nfs".into()),
                    gpus: vec![1]
                },
            ]
        );
        assert_eq!(m.to_string(), "nvme3=gpu2:gpu3,/mnt/nfs=gpu1");
        // Spaces, bare ordinals, duplicates and none.
        let m = parse(" md0 = 1 : gpu0 : 1 , nvme0n1p2=none").unwrap();
        assert_eq!(m.entries[0].gpus, [0, 1]);
        assert!(m.entries[1].gpus.is_empty());
        assert_eq!(m.to_string(), "md0=gpu0:gpu1,nvme0n1p2=none");
    }

    #[test]
    fn manual_spec_errors_say_where() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty specification"),
            ("nvme3", 1, "expected '='"),
            ("nvme3=gpu2,,md0=gpu1", 12, "empty entry"),
            ("nvme3=gpu2,", 12, "empty entry"),
            ("=gpu1", 1, "before '='"),
            ("nvme3=gpu2,mnt/nfs=gpu1", 12, "relative path"),
            ("nvme3=gpu2:gpuX", 12, "found \"gpuX\""),
            ("nvme3=gpu2::gpu3", 12, "expected a GPU"),
            ("nvme3=", 7, "expected a GPU"),
            ("nvme3=gpu", 7, "found \"gpu\""),
            ("nvme3=gpu1=gpu2", 7, "found \"gpu1=gpu2\""),
            ("nvme 3=gpu1", 1, "neither a drive name"),
            ("nvme3=gpu1,nvme3=gpu2", 12, "given twice"),
            ("nvme3=gpu99999999999999999999999", 7, "too large"),
            ("/mnté=gpu1,x=gpu?", 14, "found \"gpu?\""),
        ];
        for (spec, pos, text) in cases {
            let e = parse(spec).expect_err(spec);
            assert_eq!(e.position, *pos, "{spec}: {e}");
            assert!(e.message.contains(text), "{spec}: {e}");
            let line = e.to_string();
            assert!(!line.contains('\n'));
            assert!(line.starts_with(&e.message), "{line}");
            assert!(line.contains(&format!("at character {pos}")), "{line}");
        }
    }

    #[test]
    fn policies_parse() {
        assert_eq!("optimal".parse::<Policy>(), Ok(Policy::Optimal));
        assert_eq!("NUMA".parse::<Policy>(), Ok(Policy::Numa));
        assert_eq!("system".parse::<Policy>(), Ok(Policy::System));
        let e = "nearest".parse::<Policy>().unwrap_err();
        assert!(e.contains("optimal, numa or system"), "{e}");
    }

    #[test]
    fn deepest_path_entry_wins() {
        let m = parse("/mnt=gpu0,/mnt/data=gpu1,/mnt/data/extra=gpu2").unwrap();
        let g = |p: &str| m.for_path(Path::new(p)).map(|e| e.gpus.clone());
        assert_eq!(g("/mnt/data/extra/x"), Some(vec![2]));
        assert_eq!(g("/mnt/data/x"), Some(vec![1]));
        assert_eq!(g("/mnt/data2"), Some(vec![0]));
        assert_eq!(g("/mnt"), Some(vec![0]));
        assert_eq!(g("/srv"), None);
    }
}

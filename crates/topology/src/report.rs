//! The topology section of `gpupgparser info`, as text (like PG-Strom's
//! start-up log: the PCIe tree with each drive's GPUs, then the GPU x
//! drive distance matrix) and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::block::NvmeDrive;
use crate::distance::{Distance, HOST_BRIDGE_GAP, NUMA_GAP, ROOT_COMPLEX_HOP};
use crate::pci::PciAddress;
use crate::policy::{gpu_list, DriveChoice, ManualGpus, Policy, Selection, Selector};
use crate::sysfs::Gpu;

/// One cell of the distance matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DistanceCell {
    /// The GPU's CUDA ordinal.
    pub gpu: usize,
    /// The NVMe namespace's name.
    pub drive: String,
    /// `None` when either could not be placed in the PCIe tree.
    pub distance: Option<Distance>,
}

/// Everything `gpupgparser info` shows about the topology.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The sysfs tree read (`/sys`, or a fake one in tests).
    pub sysfs_root: PathBuf,
    /// The online NUMA nodes; `None` when sysfs does not say.
    pub numa_nodes_online: Option<Vec<u32>>,
    /// The selection policy the choices below follow.
    pub policy: Policy,
    /// The manual entries that override the policy, if any.
    pub manual: Option<ManualGpus>,
    /// The GPUs CUDA reported, placed in the tree.
    pub gpus: Vec<Gpu>,
    /// Why there are no GPUs, as the caller knows it (the CUDA error).
    pub gpu_note: Option<String>,
    /// NVIDIA functions no GPU above names (hidden from CUDA, or CUDA not
    /// usable).
    pub other_nvidia: Vec<PciAddress>,
    /// NVMe namespaces on PCIe.
    pub nvme: Vec<NvmeDrive>,
    /// Every GPU's distance to every NVMe namespace.
    pub distances: Vec<DistanceCell>,
    /// The GPUs chosen for each NVMe namespace.
    pub drive_choices: Vec<DriveChoice>,
    /// The GPUs chosen for the paths asked about.
    pub selections: Vec<Selection>,
    /// What could not be read or decided, one sentence each.
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Node {
    children: BTreeMap<PciAddress, Node>,
    labels: Vec<String>,
}

impl Node {
    fn insert(&mut self, path: &[PciAddress], label: String) {
        match path.split_first() {
            None => self.labels.push(label),
            Some((a, rest)) => self.children.entry(*a).or_default().insert(rest, label),
        }
    }

    fn render(&self, out: &mut String, depth: usize) {
        for (addr, child) in &self.children {
            let pad = "   ".repeat(depth);
            let _ = write!(out, "  {pad} - [{addr}]");
            if !child.labels.is_empty() {
                let _ = write!(out, " {}", child.labels.join("; "));
            }
            out.push('\n');
            child.render(out, depth + 1);
        }
    }
}

fn choice_words(c: &DriveChoice) -> String {
    if c.gpus.is_empty() {
        return format!("no GPU ({})", c.reason.as_deref().unwrap_or("none chosen"));
    }
    let how = match &c.manual {
        Some(m) => format!("manual {m}"),
        None => {
            let d: Vec<u32> = c
                .distances
                .iter()
                .filter(|d| c.gpus.contains(&d.gpu))
                .filter_map(|d| d.distance.map(|x| x.value))
                .collect();
            match d.iter().min() {
                Some(min) => format!("dist={min}"),
                None => "dist=?".to_string(),
            }
        }
    };
    format!("{} [{how}]", gpu_list(&c.gpus))
}

impl Report {
    /// Gathers the report: the topology the selector holds, the choice for
    /// every NVMe namespace and the `selections` made for paths.
    /// `gpu_note` says why there are no GPUs, when there are none.
    pub fn new(
        selector: &Selector,
        gpu_note: Option<String>,
        selections: Vec<Selection>,
    ) -> Report {
        let topo = selector.topology();
        let mut distances = Vec::new();
        for g in &topo.gpus {
            for d in &topo.nvme {
                distances.push(DistanceCell {
                    gpu: g.ordinal,
                    drive: d.name.clone(),
                    distance: topo.distance(g, &d.pci),
                });
            }
        }
        let mut notes = topo.notes.clone();
        notes.extend(selector.manual_warnings());
        Report {
            sysfs_root: topo.sysfs_root.clone(),
            numa_nodes_online: topo.numa.online.clone(),
            policy: selector.policy(),
            manual: selector.manual().cloned(),
            gpus: topo.gpus.clone(),
            gpu_note: if topo.gpus.is_empty() { gpu_note } else { None },
            other_nvidia: topo.other_nvidia.clone(),
            nvme: topo.nvme.clone(),
            distances,
            drive_choices: topo.nvme.iter().map(|d| selector.drive_choice(d)).collect(),
            selections,
            notes,
        }
    }

    /// The report as `gpupgparser info --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        // Every field is plain data; serializing it cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The text section, every line indented under a heading.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let nodes = match &self.numa_nodes_online {
            Some(n) if n.len() == 1 => format!("; NUMA node {}", n[0]),
            Some(n) => format!(
                "; NUMA nodes {}",
                n.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => String::new(),
        };
        let _ = writeln!(s, "PCIe topology ({}{nodes}):", self.sysfs_root.display());

        self.write_tree(&mut s);
        self.write_matrix(&mut s);
        self.write_selection(&mut s);
        s
    }

    /// Every GPU and NVMe controller under its host bridge, then what
    /// could not be placed or found.
    fn write_tree(&self, s: &mut String) {
        let mut roots: BTreeMap<String, (Node, Option<u32>)> = BTreeMap::new();
        for g in &self.gpus {
            if let Some(p) = &g.pci {
                let label = format!(
                    "GPU{}{}",
                    g.ordinal,
                    g.name
                        .as_ref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                );
                let r = roots.entry(p.host_bridge.clone()).or_default();
                r.0.insert(&p.path, label);
                r.1 = r.1.or(p.numa_node);
            }
        }
        let mut by_ctrl: BTreeMap<&str, Vec<&NvmeDrive>> = BTreeMap::new();
        for d in &self.nvme {
            by_ctrl.entry(&d.controller).or_default().push(d);
        }
        for (ctrl, drives) in &by_ctrl {
            let p = &drives[0].pci;
            let each: Vec<String> = drives
                .iter()
                .map(|d| {
                    let c = self.drive_choices.iter().find(|c| c.drive == d.name);
                    format!("{} --> {}", d.name, c.map(choice_words).unwrap_or_default())
                })
                .collect();
            let label = format!(
                "{ctrl}{} {}",
                drives[0]
                    .model
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default(),
                each.join(", ")
            );
            let r = roots.entry(p.host_bridge.clone()).or_default();
            r.0.insert(&p.path, label);
            r.1 = r.1.or(p.numa_node);
        }
        for (host, (tree, numa)) in &roots {
            let numa = numa
                .map(|n| format!(" (NUMA node {n})"))
                .unwrap_or_default();
            let _ = writeln!(s, "  [pci{host}]{numa}");
            tree.render(s, 0);
        }
        for g in &self.gpus {
            if g.pci.is_none() {
                let _ = writeln!(
                    s,
                    "  GPU{} at {}: not placed ({})",
                    g.ordinal,
                    g.pci_bus_id,
                    g.problem.as_deref().unwrap_or("?")
                );
            }
        }
        if self.gpus.is_empty() {
            match &self.gpu_note {
                Some(n) => {
                    let _ = writeln!(s, "  no GPUs ({n})");
                }
                None => {
                    let _ = writeln!(s, "  no GPUs");
                }
            }
        }
        for a in &self.other_nvidia {
            let _ = writeln!(s, "  NVIDIA device {a} in sysfs has no CUDA ordinal here");
        }
        if self.nvme.is_empty() {
            let _ = writeln!(s, "  no NVMe drives");
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }

    /// The GPU-to-NVMe distance matrix, when there is something on both
    /// sides.
    fn write_matrix(&self, s: &mut String) {
        if !self.gpus.is_empty() && !self.nvme.is_empty() {
            let _ = writeln!(
                s,
                "GPU<->NVMe distance (links; +{ROOT_COMPLEX_HOP} through a root complex, +{HOST_BRIDGE_GAP} between host bridges, +{NUMA_GAP} across NUMA nodes; * chosen):"
            );
            let width = self
                .nvme
                .iter()
                .map(|d| d.name.len())
                .max()
                .unwrap_or(0)
                .max(5);
            let mut line = format!("  {:<6}", "");
            for d in &self.nvme {
                let _ = write!(line, " {:>width$} ", d.name);
            }
            let _ = writeln!(s, "{}", line.trim_end());
            for g in &self.gpus {
                let mut line = format!("  {:<6}", format!("GPU{}", g.ordinal));
                for d in &self.nvme {
                    let cell = self
                        .distances
                        .iter()
                        .find(|c| c.gpu == g.ordinal && c.drive == d.name)
                        .and_then(|c| c.distance);
                    let chosen = self
                        .drive_choices
                        .iter()
                        .any(|c| c.drive == d.name && c.gpus.contains(&g.ordinal));
                    let value = cell
                        .map(|c| c.value.to_string())
                        .unwrap_or_else(|| "?".into());
                    let _ = write!(line, " {value:>width$}{}", if chosen { '*' } else { ' ' });
                }
                let _ = writeln!(s, "{}", line.trim_end());
            }
        }
    }

    /// The policy and what it chose, per drive or per path asked about.
    fn write_selection(&self, s: &mut String) {
        let manual = self
            .manual
            .as_ref()
            .map(|m| format!(", manual optimal GPUs {m}"))
            .unwrap_or_default();
        let _ = writeln!(s, "GPU selection ({}{manual}):", self.policy);
        if self.selections.is_empty() {
            if self.drive_choices.is_empty() {
                let _ = writeln!(
                    s,
                    "  nothing to choose for: no NVMe drives and no data directory"
                );
            }
            for c in &self.drive_choices {
                let _ = writeln!(s, "  {} --> {}", c.drive, choice_words(c));
            }
        }
        for sel in &self.selections {
            render_selection(s, sel, 1);
        }
    }
}

fn render_selection(s: &mut String, sel: &Selection, depth: usize) {
    let pad = "  ".repeat(depth);
    if sel.gpudirect() {
        let how = sel
            .manual
            .as_ref()
            .map(|m| format!(" [manual {m}]"))
            .unwrap_or_default();
        let _ = writeln!(s, "{pad}{} --> {}{how}", sel.target, sel.gpu_list());
    } else {
        let _ = writeln!(
            s,
            "{pad}{} --> no GPU-Direct: {}",
            sel.target,
            sel.reason.as_deref().unwrap_or("no GPU chosen")
        );
    }
    if let Some(st) = &sel.storage {
        let _ = writeln!(s, "{pad}    on {}", st.describe());
    }
    for p in &sel.parts {
        render_selection(s, p, depth + 1);
    }
}

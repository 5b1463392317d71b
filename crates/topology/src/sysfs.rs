//! Reading the sysfs tree: PCI functions and their paths, GPUs by PCI
//! address, NVMe namespaces, block devices (partitions, md-raid, NVMe
//! multipath, device-mapper), the NUMA nodes, and the block device behind
//! a path.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::block::{
    DevNum, NoBlockDevice, NvmeDrive, OtherBlock, StackKind, StackedDevice, Storage,
};
use crate::distance::NumaNodes;
use crate::error::TopologyError;
use crate::pci::{chain_of, PciAddress, PciDevice};

/// No real configuration stacks block devices this deep (md over dm over
/// a partition is 3); more means a loop in the links.
const MAX_STACK_DEPTH: usize = 8;

/// A sysfs tree: the real `/sys`, or a fake one in tests.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
    mountinfo: Option<PathBuf>,
}

/// A GPU as the caller knows it: its CUDA ordinal and PCI bus id
/// (`cuDeviceGetPCIBusId`, e.g. `0000:3B:00.0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuId {
    /// The CUDA device ordinal.
    pub ordinal: usize,
    /// `cuDeviceGetPCIBusId`'s string.
    pub pci_bus_id: String,
    /// The device's name, when CUDA gave one.
    pub name: Option<String>,
}

/// A GPU and its place in the PCIe tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// The CUDA device ordinal.
    pub ordinal: usize,
    /// The device's name, when CUDA gave one.
    pub name: Option<String>,
    /// `cuDeviceGetPCIBusId`'s string.
    pub pci_bus_id: String,
    /// `None` when the bus id is not in sysfs (a container that hides
    /// devices) or not an address; `problem` says which.
    pub pci: Option<PciDevice>,
    /// Why `pci` is `None`.
    pub problem: Option<String>,
}

/// A line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub fs_type: String,
    pub source: String,
    pub mount_point: PathBuf,
}

/// Reads a one-line sysfs attribute, trimmed; `Ok(None)` when it is absent.
fn read_opt(path: &Path) -> Result<Option<String>, TopologyError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TopologyError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn malformed(path: &Path, content: &str, expected: &'static str) -> TopologyError {
    TopologyError::Malformed {
        path: path.to_path_buf(),
        content: content.to_string(),
        expected,
    }
}

/// `numa_node`: a node number, or -1 for none; absent on kernels built
/// without NUMA.
fn read_numa(path: &Path) -> Result<Option<u32>, TopologyError> {
    let Some(s) = read_opt(path)? else {
        return Ok(None);
    };
    if s == "-1" {
        return Ok(None);
    }
    s.parse::<u32>()
        .map(Some)
        .map_err(|_| malformed(path, &s, "a NUMA node number or -1"))
}

fn read_devnum(path: &Path) -> Result<Option<DevNum>, TopologyError> {
    match read_opt(path)? {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| malformed(path, &s, "MAJOR:MINOR")),
    }
}

/// Parses a node list such as `0`, `0-3` or `0,2-3`.
fn parse_node_list(path: &Path, s: &str) -> Result<Vec<u32>, TopologyError> {
    let bad = || malformed(path, s, "a node list such as 0-1,3");
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        // No machine has more than a few thousand nodes; a huge range is
        // a corrupt file, not a reason to allocate.
        if a > b || b - a > 4096 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Entries of a directory, sorted; empty when it does not exist.
fn list_dir(path: &Path) -> Result<Vec<String>, TopologyError> {
    match fs::read_dir(path) {
        Ok(rd) => {
            let mut v = Vec::new();
            for e in rd {
                let e = e.map_err(|e| TopologyError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
                v.push(e.file_name().to_string_lossy().into_owned());
            }
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(TopologyError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// `nvme0n1`: an NVMe namespace's block device, not a path device
/// (`nvme0c0n1`) or a partition (`nvme0n1p1`).
pub(crate) fn is_nvme_namespace(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((ctrl, ns)) = rest.split_once('n') else {
        return false;
    };
    !ctrl.is_empty()
        && !ns.is_empty()
        && ctrl.bytes().all(|c| c.is_ascii_digit())
        && ns.bytes().all(|c| c.is_ascii_digit())
}

/// `nvme3`: an NVMe controller.
pub(crate) fn is_nvme_controller(name: &str) -> bool {
    name.strip_prefix("nvme")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// Undoes the mount table's octal escapes (`\040` for a space).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // The kernel escapes only space, tab, newline and backslash, so the
        // first digit is at most 3 and the value fits a byte.
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first mount of device `dev` in a `/proc/self/mountinfo` text.
/// Lines that do not have the expected fields are skipped: the table only
/// adds words to a message.
pub(crate) fn find_mount(mountinfo: &str, dev: DevNum) -> Option<Mount> {
    let key = dev.to_string();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 10 || fields[2] != key {
            continue;
        }
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 3 {
            continue;
        }
        return Some(Mount {
            fs_type: fields[sep + 1].to_string(),
            source: unescape_mount(fields[sep + 2]),
            mount_point: PathBuf::from(unescape_mount(fields[4])),
        });
    }
    None
}

/// A guess at what a block device is from its kernel name, for messages.
fn block_kind_words(name: &str) -> &'static str {
    let starts = |p: &str| name.starts_with(p);
    if starts("vd") {
        "virtio"
    } else if starts("sd") {
        "SCSI/SATA"
    } else if starts("loop") {
        "loop device"
    } else if starts("zram") {
        "compressed RAM disk"
    } else if starts("nbd") {
        "network block device"
    } else if starts("rbd") {
        "Ceph RBD"
    } else if starts("xvd") {
        "Xen virtual disk"
    } else if starts("mmcblk") {
        "MMC/SD"
    } else if starts("pmem") {
        "persistent memory"
    } else {
        "block device"
    }
}

impl Sysfs {
    /// The real `/sys`, with the mount table of `/proc/self/mountinfo`.
    pub fn system() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
            mountinfo: Some(PathBuf::from("/proc/self/mountinfo")),
        }
    }

    /// A tree rooted at `root` (what `/sys` is on a real machine), without
    /// a mount table.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs {
            root: root.into(),
            mountinfo: None,
        }
    }

    /// Reads the mount table from `path` (to name the file system of a path
    /// with no block device).
    pub fn with_mountinfo(mut self, path: impl Into<PathBuf>) -> Self {
        self.mountinfo = Some(path.into());
        self
    }

    /// The directory read as `/sys`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn canonical_root(&self) -> Result<PathBuf, TopologyError> {
        fs::canonicalize(&self.root).map_err(|e| TopologyError::Io {
            path: self.root.clone(),
            source: e,
        })
    }

    /// Resolves a link to its canonical path relative to the sysfs root
    /// (`devices/...`), as the kernel's relative links mean it.
    fn resolve_rel(&self, link: &Path) -> Result<PathBuf, TopologyError> {
        let root = self.canonical_root()?;
        let target = fs::canonicalize(link).map_err(|e| TopologyError::Io {
            path: link.to_path_buf(),
            source: e,
        })?;
        match target.strip_prefix(&root) {
            Ok(rel) if rel.starts_with("devices") => Ok(rel.to_path_buf()),
            _ => Err(TopologyError::OutsideDevices {
                link: link.to_path_buf(),
                target,
                root: self.root.clone(),
            }),
        }
    }

    /// The machine's online NUMA nodes.
    pub fn numa_nodes(&self) -> Result<NumaNodes, TopologyError> {
        let path = self.root.join("devices/system/node/online");
        Ok(NumaNodes {
            online: read_opt(&path)?
                .map(|s| parse_node_list(&path, &s))
                .transpose()?,
        })
    }

    /// The PCI function at the end of `chain` in the canonical relative
    /// path `rel` (whose first `end` components lead to it).
    fn pci_at(
        &self,
        rel: &Path,
        host: String,
        chain: Vec<PciAddress>,
        end: usize,
    ) -> Result<Option<PciDevice>, TopologyError> {
        let Some(&address) = chain.last() else {
            return Ok(None);
        };
        let dir: PathBuf = rel.components().take(end).collect();
        let numa_node = read_numa(&self.root.join(&dir).join("numa_node"))?;
        Ok(Some(PciDevice {
            address,
            host_bridge: host,
            path: chain,
            numa_node,
            sysfs_path: dir,
        }))
    }

    /// A PCI function by address: its path from the root complex and its
    /// NUMA node (`bus/pci/devices/<address>` resolved into
    /// `devices/pciDDDD:BB/...`).
    pub fn pci_device(&self, address: PciAddress) -> Result<PciDevice, TopologyError> {
        let link = self.root.join("bus/pci/devices").join(address.to_string());
        if fs::symlink_metadata(&link).is_err() {
            return Err(TopologyError::NoSuchPciDevice {
                address: address.to_string(),
                root: self.root.clone(),
            });
        }
        let rel = self.resolve_rel(&link)?;
        let not_it = || {
            malformed(
                &link,
                &rel.to_string_lossy(),
                "a path under devices/pciDDDD:BB ending in the device's address",
            )
        };
        let (host, chain, end) = chain_of(&rel).ok_or_else(not_it)?;
        if chain.last() != Some(&address) || end != rel.components().count() {
            return Err(not_it());
        }
        self.pci_at(&rel, host, chain, end)?.ok_or_else(not_it)
    }

    /// Every NVIDIA display or 3D controller function (vendor 0x10de, class
    /// 0x03xxxx) in `bus/pci/devices`, whether or not CUDA lists it.
    pub fn nvidia_functions(&self) -> Result<Vec<PciAddress>, TopologyError> {
        let dir = self.root.join("bus/pci/devices");
        let mut out = Vec::new();
        for name in list_dir(&dir)? {
            let Ok(addr) = name.parse::<PciAddress>() else {
                continue;
            };
            let vendor = read_opt(&dir.join(&name).join("vendor"))?;
            let class = read_opt(&dir.join(&name).join("class"))?;
            if vendor.as_deref() == Some("0x10de")
                && class.as_deref().is_some_and(|c| c.starts_with("0x03"))
            {
                out.push(addr);
            }
        }
        Ok(out)
    }

    /// Places each GPU in the tree. A GPU that cannot be placed keeps
    /// `pci: None` and says why: one hidden device must not hide the others.
    pub fn gpus(&self, ids: &[GpuId]) -> Vec<Gpu> {
        ids.iter()
            .map(|id| {
                let placed = id
                    .pci_bus_id
                    .parse::<PciAddress>()
                    .and_then(|a| self.pci_device(a));
                let (pci, problem) = match placed {
                    Ok(p) => (Some(p), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                Gpu {
                    ordinal: id.ordinal,
                    name: id.name.clone(),
                    pci_bus_id: id.pci_bus_id.clone(),
                    pci,
                    problem,
                }
            })
            .collect()
    }

    /// The names of the NVMe namespaces in `block/`, sorted.
    pub fn nvme_namespace_names(&self) -> Result<Vec<String>, TopologyError> {
        Ok(list_dir(&self.root.join("block"))?
            .into_iter()
            .filter(|n| is_nvme_namespace(n))
            .collect())
    }

    /// A block device by kernel name (`nvme0n1`, `nvme0n1p2`, `md0`,
    /// `dm-0`), through `class/block` (which has partitions) or `block`.
    pub fn block_device(&self, name: &str) -> Result<Storage, TopologyError> {
        let bad_name = name.is_empty() || name.contains('/') || name == "." || name == "..";
        for dir in ["class/block", "block"] {
            let link = self.root.join(dir).join(name);
            if !bad_name && fs::symlink_metadata(&link).is_ok() {
                return self.resolve_block(&link, 0);
            }
        }
        Err(TopologyError::NoSuchBlockDevice {
            name: name.to_string(),
            root: self.root.clone(),
        })
    }

    /// A block device by number, or the file system with no block device
    /// when `dev/block/MAJOR:MINOR` does not exist.
    pub fn block_dev(&self, dev: DevNum) -> Result<Storage, TopologyError> {
        let link = self.root.join("dev/block").join(dev.to_string());
        if fs::symlink_metadata(&link).is_ok() {
            return self.resolve_block(&link, 0);
        }
        let mount = match &self.mountinfo {
            Some(p) => fs::read_to_string(p).ok().and_then(|t| find_mount(&t, dev)),
            None => None,
        };
        Ok(Storage::NoBlockDevice(NoBlockDevice {
            dev,
            fs_type: mount.as_ref().map(|m| m.fs_type.clone()),
            source: mount.as_ref().map(|m| m.source.clone()),
            mount_point: mount.map(|m| m.mount_point),
        }))
    }

    /// The block device holding `path` (a file or a directory): `stat`'s
    /// device number, then [`Sysfs::block_dev`].
    pub fn storage_for_path(&self, path: &Path) -> Result<Storage, TopologyError> {
        let md = fs::metadata(path).map_err(|e| TopologyError::Stat {
            path: path.to_path_buf(),
            source: e,
        })?;
        self.block_dev(DevNum::from_st_dev(md.dev()))
    }

    /// Resolves a block device link (`class/block/x`, `dev/block/M:m`, or an
    /// entry of `slaves/` or `multipath/`).
    fn resolve_block(&self, link: &Path, depth: usize) -> Result<Storage, TopologyError> {
        if depth > MAX_STACK_DEPTH {
            return Err(TopologyError::TooDeep {
                path: link.to_path_buf(),
                limit: MAX_STACK_DEPTH,
            });
        }
        let rel = self.resolve_rel(link)?;
        let dir = self.root.join(&rel);
        if dir.join("partition").exists() {
            // A partition's directory is inside its disk's.
            let disk = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            return self.classify(&disk, Some(file_name(&rel)), depth);
        }
        self.classify(&rel, None, depth)
    }

    fn classify(
        &self,
        rel: &Path,
        partition: Option<String>,
        depth: usize,
    ) -> Result<Storage, TopologyError> {
        let dir = self.root.join(rel);
        let name = file_name(rel);
        let dev = read_devnum(&dir.join("dev"))?;
        let slaves = list_dir(&dir.join("slaves"))?;
        if !slaves.is_empty() {
            let (kind, level) = if dir.join("md").is_dir() {
                (StackKind::Md, read_opt(&dir.join("md/level"))?)
            } else if dir.join("dm").is_dir() {
                (StackKind::DeviceMapper, read_opt(&dir.join("dm/name"))?)
            } else {
                (StackKind::Other, None)
            };
            let members = slaves
                .iter()
                .map(|s| self.resolve_block(&dir.join("slaves").join(s), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Storage::Stacked(StackedDevice {
                name,
                dev,
                kind,
                level,
                partition,
                members,
            }));
        }
        let paths = list_dir(&dir.join("multipath"))?;
        if !paths.is_empty() {
            let members = paths
                .iter()
                .map(|s| self.resolve_block(&dir.join("multipath").join(s), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Storage::Stacked(StackedDevice {
                name,
                dev,
                kind: StackKind::NvmeMultipath,
                level: None,
                partition,
                members,
            }));
        }
        let names: Vec<String> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let pci = match chain_of(rel) {
            Some((host, chain, end)) => self.pci_at(rel, host, chain, end)?,
            None => None,
        };
        // A PCIe NVMe namespace lives in .../<function>/nvme/nvmeN/<namespace>.
        let ctrl_at = names
            .windows(2)
            .position(|w| w[0] == "nvme" && is_nvme_controller(&w[1]));
        if let Some(i) = ctrl_at {
            let ctrl_rel: PathBuf = names[..i + 2].iter().collect();
            let ctrl_dir = self.root.join(&ctrl_rel);
            let transport = read_opt(&ctrl_dir.join("transport"))?;
            if let (Some(pci), None | Some("pcie")) = (pci.clone(), transport.as_deref()) {
                return Ok(Storage::Nvme(NvmeDrive {
                    name,
                    controller: names[i + 1].clone(),
                    dev,
                    partition,
                    model: read_opt(&ctrl_dir.join("model"))?,
                    pci,
                }));
            }
        }
        let what = if name.starts_with("nvme") {
            // Fabrics controllers sit in devices/virtual/nvme-fabrics/ctl/nvmeN.
            let transport = rel
                .parent()
                .map(|p| read_opt(&self.root.join(p).join("transport")))
                .transpose()?
                .flatten();
            match transport {
                Some(t) => format!("NVMe over fabrics ({t})"),
                None => "NVMe, not on PCIe".to_string(),
            }
        } else {
            block_kind_words(&name).to_string()
        };
        Ok(Storage::OtherBlock(OtherBlock {
            name,
            dev,
            what,
            partition,
            pci,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_nvme_namespace("nvme0n1"));
        assert!(is_nvme_namespace("nvme12n3"));
        assert!(!is_nvme_namespace("nvme0c0n1"));
        assert!(!is_nvme_namespace("nvme0n1p1"));
        assert!(!is_nvme_namespace("nvme0"));
        assert!(!is_nvme_namespace("nvmen1"));
        assert!(is_nvme_controller("nvme3"));
        assert!(!is_nvme_controller("nvme"));
        assert!(!is_nvme_controller("nvme3n1"));
    }

    #[test]
    fn node_lists() {
        let p = Path::new("online");
        assert_eq!(parse_node_list(p, "0").unwrap(), [0]);
        assert_eq!(parse_node_list(p, "0-1").unwrap(), [0, 1]);
        assert_eq!(parse_node_list(p, "0,2-3").unwrap(), [0, 2, 3]);
        for bad in ["x", "1-0", "0-", "-1", "0,,1", "0-99999999"] {
            assert!(
                matches!(
                    parse_node_list(p, bad),
                    Err(TopologyError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn mount_table() {
        let t = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                 garbage line\n\
                 27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n\
                 90 27 0:53 / /mnt/my\\040nfs rw,relatime shared:5 - nfs4 server:/export rw,vers=4.2\n";
        let m = find_mount(t, DevNum::new(0, 53)).unwrap();
        assert_eq!(m.fs_type, "nfs4");
        assert_eq!(m.source, "server:/export");
        assert_eq!(m.mount_point, PathBuf::from("/mnt/my nfs"));
        assert_eq!(find_mount(t, DevNum::new(254, 0)).unwrap().fs_type, "ext4");
        assert!(find_mount(t, DevNum::new(8, 1)).is_none());
        assert_eq!(unescape_mount("a\\134b\\"), "a\\b\\");
    }
}

//! What a block device, or the file system holding a path, is made of:
//! an NVMe namespace on PCIe, md-raid (or NVMe multipath) over such
//! namespaces, another block device, or no block device at all.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::pci::PciDevice;

/// A block device number, `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum {
    /// The driver's number.
    pub major: u32,
    /// The device's number within the driver.
    pub minor: u32,
}

impl DevNum {
    /// `major:minor`.
    pub fn new(major: u32, minor: u32) -> Self {
        DevNum { major, minor }
    }

    /// Splits a `st_dev` as glibc's `major()`/`minor()` do (Linux's 64-bit
    /// encoding: 12+20 bits of major, 8+24 of minor, interleaved).
    pub fn from_st_dev(dev: u64) -> Self {
        let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
        let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff);
        DevNum {
            major: major as u32,
            minor: minor as u32,
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevNum {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.trim().split_once(':').ok_or(())?;
        let n = |x: &str| {
            if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
                return Err(());
            }
            x.parse::<u32>().map_err(|_| ())
        };
        Ok(DevNum {
            major: n(a)?,
            minor: n(b)?,
        })
    }
}

impl Serialize for DevNum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An NVMe namespace behind a PCIe controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvmeDrive {
    /// The namespace's block device (`nvme0n1`; `nvme0c0n1` for one path of
    /// a multipath namespace).
    pub name: String,
    /// The controller (`nvme0`), the name PG-Strom's log and
    /// `--manual-optimal-gpus` use.
    pub controller: String,
    /// Its device number, when sysfs gives one.
    pub dev: Option<DevNum>,
    /// Set when the path was on a partition of this namespace.
    pub partition: Option<String>,
    /// The controller's `model`, when sysfs has it.
    pub model: Option<String>,
    /// The controller's PCI function.
    pub pci: PciDevice,
}

/// How a stacked block device is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackKind {
    /// Linux software RAID (`md/` in its sysfs directory).
    Md,
    /// Native NVMe multipath: one namespace reached through several
    /// controllers (`multipath/`).
    NvmeMultipath,
    /// LVM, dm-crypt and other device-mapper targets (`dm/`).
    DeviceMapper,
    /// Something else with `slaves/`.
    Other,
}

/// A block device over other block devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackedDevice {
    /// Its block device name (`md0`, `dm-1`).
    pub name: String,
    /// Its device number, when sysfs gives one.
    pub dev: Option<DevNum>,
    /// RAID, multipath, device mapper or other.
    pub kind: StackKind,
    /// `md/level` (`raid0`, `raid1`, ...) or the dm name.
    pub level: Option<String>,
    /// Set when the path was on a partition of this device.
    pub partition: Option<String>,
    /// The devices it is built on, each resolved the same way.
    pub members: Vec<Storage>,
}

/// A block device that is not NVMe on PCIe (virtio, SATA/SAS, loop, NVMe
/// over fabrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherBlock {
    /// Its block device name (`vda`, `sda`, `loop0`).
    pub name: String,
    /// Its device number, when sysfs gives one.
    pub dev: Option<DevNum>,
    /// What it is, in words (`virtio`, `SCSI/SATA`, `NVMe over fabrics (tcp)`).
    pub what: String,
    /// Set when the path was on a partition of this device.
    pub partition: Option<String>,
    /// Its PCI function, when it has one.
    pub pci: Option<PciDevice>,
}

/// A file system whose device number has no block device in sysfs (NFS,
/// tmpfs, overlay, and btrfs, whose files carry an anonymous device number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoBlockDevice {
    /// The file system's device number (`st_dev`).
    pub dev: DevNum,
    /// From the mount table, when it was readable.
    pub fs_type: Option<String>,
    /// What was mounted (a server's export, `tmpfs`, ...), from the mount table.
    pub source: Option<String>,
    /// Where it is mounted, from the mount table.
    pub mount_point: Option<PathBuf>,
}

/// What holds a path, or what a block device is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Storage {
    /// An NVMe namespace on PCIe, the kind GPUDirect Storage reads from.
    Nvme(NvmeDrive),
    /// RAID, multipath or device mapper over other devices.
    Stacked(StackedDevice),
    /// Any other block device.
    OtherBlock(OtherBlock),
    /// A file system without a block device.
    NoBlockDevice(NoBlockDevice),
}

fn on_partition(partition: &Option<String>, name: &str) -> String {
    match partition {
        Some(p) => format!("{p} (partition of {name})"),
        None => name.to_string(),
    }
}

impl Storage {
    /// The device's name (the whole disk's, not the partition's); the
    /// file system type for a path without a block device.
    pub fn name(&self) -> String {
        match self {
            Storage::Nvme(d) => d.name.clone(),
            Storage::Stacked(s) => s.name.clone(),
            Storage::OtherBlock(o) => o.name.clone(),
            Storage::NoBlockDevice(n) => n.fs_type.clone().unwrap_or_else(|| n.dev.to_string()),
        }
    }

    /// Every NVMe namespace under this device.
    pub fn nvme_leaves(&self) -> Vec<&NvmeDrive> {
        match self {
            Storage::Nvme(d) => vec![d],
            Storage::Stacked(s) => s.members.iter().flat_map(|m| m.nvme_leaves()).collect(),
            _ => Vec::new(),
        }
    }

    /// One line: what it is and what it is made of.
    pub fn describe(&self) -> String {
        match self {
            Storage::Nvme(d) => {
                let mut s = format!(
                    "{} (NVMe {} at {}",
                    on_partition(&d.partition, &d.name),
                    d.controller,
                    d.pci.address
                );
                if let Some(m) = &d.model {
                    s.push_str(&format!(", {m}"));
                }
                s.push(')');
                s
            }
            Storage::Stacked(st) => {
                let what = match st.kind {
                    StackKind::Md => format!("md {}", st.level.as_deref().unwrap_or("raid")),
                    StackKind::NvmeMultipath => "NVMe multipath".to_string(),
                    StackKind::DeviceMapper => format!(
                        "device-mapper{}",
                        st.level
                            .as_deref()
                            .map(|l| format!(" {l}"))
                            .unwrap_or_default()
                    ),
                    StackKind::Other => "stacked device".to_string(),
                };
                let members: Vec<String> = st.members.iter().map(|m| m.describe()).collect();
                format!(
                    "{} ({what} over {})",
                    on_partition(&st.partition, &st.name),
                    if members.is_empty() {
                        "no members".to_string()
                    } else {
                        members.join(", ")
                    }
                )
            }
            Storage::OtherBlock(o) => {
                let at = o
                    .pci
                    .as_ref()
                    .map(|p| format!(" at {}", p.address))
                    .unwrap_or_default();
                format!(
                    "{} ({}{at}, not NVMe on PCIe)",
                    on_partition(&o.partition, &o.name),
                    o.what
                )
            }
            Storage::NoBlockDevice(n) => {
                let mut s = match &n.fs_type {
                    Some(t) => format!("a {t} file system"),
                    None => format!("device {}", n.dev),
                };
                if let Some(src) = &n.source {
                    s.push_str(&format!(" from {src}"));
                }
                if let Some(m) = &n.mount_point {
                    s.push_str(&format!(" mounted at {}", m.display()));
                }
                s.push_str(" with no block device in sysfs");
                if n.fs_type.as_deref() == Some("btrfs") {
                    s.push_str(" (btrfs gives its files anonymous device numbers)");
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers() {
        assert_eq!(DevNum::from_st_dev(65024), DevNum::new(254, 0));
        assert_eq!(DevNum::from_st_dev(0x10300), DevNum::new(259, 0));
        // glibc's makedev: large majors and minors use the high bits.
        let makedev = |ma: u64, mi: u64| {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        };
        for (ma, mi) in [
            (0, 21),
            (259, 3),
            (0xfffff, 0xffffff),
            (0x123abc, 0x4567),
            (4095, 256),
        ] {
            assert_eq!(
                DevNum::from_st_dev(makedev(ma, mi)),
                DevNum::new(ma as u32, mi as u32)
            );
        }
        assert_eq!("259:3\n".parse::<DevNum>(), Ok(DevNum::new(259, 3)));
        for bad in ["", "259", "259:", ":3", "a:b", "259:3:1", "-1:2"] {
            assert!(bad.parse::<DevNum>().is_err(), "{bad}");
        }
        assert_eq!(DevNum::new(8, 1).to_string(), "8:1");
    }
}

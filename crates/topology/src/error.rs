//! Typed errors of the topology reader and of the manual override parser.

use std::path::PathBuf;

use thiserror::Error;

/// What went wrong reading the sysfs tree. A machine that simply has no
/// GPU or no NVMe drive is not an error: those are empty lists.
#[derive(Debug, Error)]
pub enum TopologyError {
    /// A file or directory that should be readable is not.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure (its message ends this one's, too).
        #[source]
        source: std::io::Error,
    },
    /// A sysfs file holds something other than what the kernel writes there.
    #[error("{}: unexpected content {content:?} (expected {expected})", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
        /// What the kernel writes there.
        expected: &'static str,
    },
    /// A string that should be a PCI address is not one.
    #[error("{0:?} is not a PCI address (expected DDDD:BB:DD.F, e.g. 0000:3b:00.0)")]
    BadPciAddress(String),
    /// The PCI address is not under `<root>/bus/pci/devices`.
    #[error("PCI device {address} is not in {}", root.join("bus/pci/devices").display())]
    NoSuchPciDevice {
        /// The address.
        address: String,
        /// The sysfs root searched.
        root: PathBuf,
    },
    /// A device resolved outside `<root>/devices`, so its PCIe path cannot be read.
    #[error("{}: resolves to {}, outside {}", link.display(), target.display(), root.join("devices").display())]
    OutsideDevices {
        /// The link followed.
        link: PathBuf,
        /// Where it leads.
        target: PathBuf,
        /// The sysfs root.
        root: PathBuf,
    },
    /// No block device of that name under `<root>/class/block`.
    #[error("no block device named {name:?} in {}", root.join("class/block").display())]
    NoSuchBlockDevice {
        /// The name asked for.
        name: String,
        /// The sysfs root searched.
        root: PathBuf,
    },
    /// Stacked block devices (md over md over ...) nested deeper than any
    /// real configuration, or a loop in the links.
    #[error("{}: block devices stacked more than {limit} deep (a loop in the links?)", path.display())]
    TooDeep {
        /// The device where the walk stopped.
        path: PathBuf,
        /// The depth allowed.
        limit: usize,
    },
    /// `stat` of a data path failed.
    #[error("stat {}: {source}", path.display())]
    Stat {
        /// The path.
        path: PathBuf,
        /// The failure (its message ends this one's, too).
        #[source]
        source: std::io::Error,
    },
}

/// A manual GPU specification ([`crate::ManualGpus`], PG-Strom's
/// `manual_optimal_gpus`) that does not parse. One line, saying at which
/// character and in which entry; the caller names the setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message} at character {position} (entry {entry:?})")]
pub struct ManualSpecError {
    /// 1-based character position in the whole specification.
    pub position: usize,
    /// The comma-separated entry it is in.
    pub entry: String,
    /// What is wrong there.
    pub message: String,
}

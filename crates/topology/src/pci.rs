//! PCI addresses and a PCI function's place in the tree: the host bridge
//! (root complex) it hangs under and every bridge, switch port and root
//! port on the way, read from its canonical sysfs path.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::TopologyError;

/// `DDDD:BB:DD.F`: PCI domain, bus, device (slot) and function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// 16 bits on most machines; VMD domains have 5 hex digits (10000).
    pub domain: u32,
    /// Bus number within the domain.
    pub bus: u8,
    /// Device (slot) number on the bus, 0 to 31.
    pub device: u8,
    /// Function number of the device, 0 to 7.
    pub function: u8,
}

impl PciAddress {
    /// `domain:bus:device.function`.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Self {
        PciAddress {
            domain,
            bus,
            device,
            function,
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses the forms the kernel, CUDA (`cuDeviceGetPCIBusId`: `0000:3B:00.0`)
/// and NVML (`00000000:3B:00.0`) write: hex fields, any case, a domain of
/// up to 8 digits. `BB:DD.F` without a domain means domain 0 (lspci's
/// short form).
impl FromStr for PciAddress {
    type Err = TopologyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TopologyError::BadPciAddress(s.to_string());
        let t = s.trim();
        let (rest, function) = t.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, dev] => (*d, *b, *dev),
            [b, dev] => ("0", *b, *dev),
            _ => return Err(bad()),
        };
        let hex = |x: &str, max_len: usize| -> Result<u32, TopologyError> {
            if x.is_empty() || x.len() > max_len || !x.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(x, 16).map_err(|_| bad())
        };
        let domain = hex(domain, 8)?;
        let bus = hex(bus, 2)?;
        let device = hex(device, 2)?;
        let function = hex(function, 1)?;
        // A slot number is 5 bits and a function 3 bits.
        if device > 0x1f || function > 7 {
            return Err(bad());
        }
        Ok(PciAddress {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

/// Whether a sysfs path component names a PCI function (`0000:00:01.0`).
pub(crate) fn component_address(name: &str) -> Option<PciAddress> {
    // Only the full kernel form: a component such as "nvme0" or "0:0" is
    // not a function.
    let colon = name.matches(':').count();
    if colon != 2 || !name.contains('.') {
        return None;
    }
    name.parse().ok()
}

/// Whether a component is a host bridge directory (`pci0000:00`,
/// `pci10000:e0` behind VMD), returning its `DDDD:BB`.
pub(crate) fn component_host_bridge(name: &str) -> Option<String> {
    let rest = name.strip_prefix("pci")?;
    let (d, b) = rest.split_once(':')?;
    let ok = |x: &str, n: usize| {
        !x.is_empty() && x.len() <= n && x.bytes().all(|c| c.is_ascii_hexdigit())
    };
    (ok(d, 8) && ok(b, 2)).then(|| rest.to_ascii_lowercase())
}

/// A PCI function and its place in the PCIe tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// The root complex it hangs under, as `DDDD:BB` of `/sys/devices/pciDDDD:BB`.
    pub host_bridge: String,
    /// Every PCI function from the root port down to this device, the
    /// device last (a device on the root bus has just itself).
    pub path: Vec<PciAddress>,
    /// `numa_node` as sysfs says (`None` for -1: no affinity reported).
    pub numa_node: Option<u32>,
    /// The canonical sysfs directory, relative to the sysfs root
    /// (`devices/pci0000:00/0000:00:01.0/0000:01:00.0`).
    pub sysfs_path: PathBuf,
}

impl PciDevice {
    /// Number of PCI functions from the host bridge down to this device
    /// (1 for a device on the root bus).
    pub fn depth(&self) -> usize {
        self.path.len()
    }
}

/// The host bridge and the chain of PCI functions in a canonical sysfs path
/// relative to the sysfs root (`devices/pci0000:00/0000:00:01.0/...`), up
/// to the last PCI function; also the length of the path prefix that ends
/// at that function. `None` when the path is not under a PCI host bridge
/// (virtual devices, NVMe over fabrics).
pub(crate) fn chain_of(rel: &Path) -> Option<(String, Vec<PciAddress>, usize)> {
    let names: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if names.first().map(String::as_str) != Some("devices") {
        return None;
    }
    let host = component_host_bridge(names.get(1)?)?;
    let mut chain = Vec::new();
    let mut end = 2;
    for (i, n) in names.iter().enumerate().skip(2) {
        if let Some(a) = component_address(n) {
            chain.push(a);
            end = i + 1;
        } else if component_host_bridge(n).is_some() {
            // A bus behind an endpoint (Intel VMD): the functions below it
            // continue the same chain.
            continue;
        } else {
            break;
        }
    }
    Some((host, chain, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_every_form() {
        let a: PciAddress = "0000:3b:00.0".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 0x3b, 0, 0));
        assert_eq!(a.to_string(), "0000:3b:00.0");
        // NVML's 8-digit domain and CUDA's upper case.
        let b: PciAddress = "00000000:3B:00.0".parse().unwrap();
        assert_eq!(a, b);
        let c: PciAddress = "3b:00.0".parse().unwrap();
        assert_eq!(a, c);
        let vmd: PciAddress = "10000:e1:00.0".parse().unwrap();
        assert_eq!(vmd.to_string(), "10000:e1:00.0");
        for bad in [
            "",
            "0000:3b:00",
            "0000:3b.00.0",
            "0000:3g:00.0",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "0000:123:00.0",
            "000000000:3b:00.0",
            "a:b:c:d.0",
        ] {
            assert!(
                matches!(
                    bad.parse::<PciAddress>(),
                    Err(TopologyError::BadPciAddress(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn chains_follow_the_path() {
        let (host, chain, end) = chain_of(Path::new(
            "devices/pci0000:00/0000:00:01.0/0000:01:00.0/nvme/nvme0/nvme0n1",
        ))
        .unwrap();
        assert_eq!(host, "0000:00");
        assert_eq!(
            chain.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["0000:00:01.0", "0000:01:00.0"]
        );
        assert_eq!(end, 4);
        // VMD: a nested host bridge continues the chain.
        let (_, chain, _) = chain_of(Path::new(
            "devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0/nvme/nvme2",
        ))
        .unwrap();
        assert_eq!(chain.len(), 3);
        assert!(chain_of(Path::new("devices/virtual/block/loop0")).is_none());
        assert!(chain_of(Path::new("devices/virtual/nvme-fabrics/ctl/nvme1/nvme1n1")).is_none());
    }
}

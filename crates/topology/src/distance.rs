//! Distance between two PCI functions, after PG-Strom's
//! (`sysfs_calculate_distance_root` in its `pcie.c`), with one deviation
//! so that a switch is nearer than the root complex.
//!
//! ```text
//! pci0000:00 (host bridge, NUMA node 0)
//!  ├─ 0000:00:01.0 root port
//!  │   └─ 0000:01:00.0 switch upstream port
//!  │       ├─ 0000:02:00.0 downstream port ── 0000:03:00.0 GPU0
//!  │       └─ 0000:02:01.0 downstream port ── 0000:04:00.0 nvme0
//!  └─ 0000:00:02.0 root port ── 0000:05:00.0 nvme1
//! pci0000:80 (host bridge, NUMA node 1)
//!  └─ 0000:80:01.0 root port ── 0000:81:00.0 nvme2
//! ```
//!
//! - same function: 0;
//! - same host bridge: the number of links between them in the tree, plus
//!   [`ROOT_COMPLEX_HOP`] when the path turns inside the root complex (no
//!   switch or bridge is shared). GPU0-nvme0: 03:00.0 → 02:00.0 → 01:00.0 →
//!   02:01.0 → 04:00.0 = 4 (kind `switch`); GPU0-nvme1: four links up to
//!   the host bridge, two down, plus 1 = 7 (kind `root_complex`);
//! - different host bridges: the depth of each (PCI functions from the
//!   host bridge down to it) plus [`HOST_BRIDGE_GAP`] (5) when both are on
//!   the same NUMA node or a node is not known, or [`NUMA_GAP`] (99) when
//!   they are on different NUMA nodes. GPU0-nvme2: 4 + 2 + 99 = 105 (kind
//!   `numa`).
//!
//! PG-Strom adds 1 in every same-host-bridge case (so a switch and the
//! root complex tie there); the other values are its own (5 and 99).

use serde::Serialize;

use crate::pci::PciDevice;

/// Added when two devices under one host bridge share no switch or bridge,
/// so that traffic turns inside the root complex.
pub const ROOT_COMPLEX_HOP: u32 = 1;
/// Added between two host bridges of one NUMA node (or of unknown nodes).
pub const HOST_BRIDGE_GAP: u32 = 5;
/// Added between host bridges of different NUMA nodes.
pub const NUMA_GAP: u32 = 99;

/// Where the path between two devices turns, nearest first (nvidia-smi
/// topo's PIX/PXB, PHB, NODE, SYS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// The same PCI function.
    Same,
    /// Through a PCIe switch or bridge they share, below the root complex.
    Switch,
    /// Through the root complex of their common host bridge.
    RootComplex,
    /// Between two host bridges of one NUMA node (or of unknown nodes).
    HostBridges,
    /// Across NUMA nodes (the inter-socket link).
    Numa,
}

impl LinkKind {
    /// The kind in words, as `gpupgparser info` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Same => "same",
            LinkKind::Switch => "switch",
            LinkKind::RootComplex => "root complex",
            LinkKind::HostBridges => "host bridges",
            LinkKind::Numa => "NUMA",
        }
    }
}

/// A distance and where the path turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Distance {
    /// PG-Strom's distance (smaller is nearer; see the module documentation).
    pub value: u32,
    /// Where the path between the two turns.
    pub kind: LinkKind,
}

/// The machine's online NUMA nodes (`devices/system/node/online`), to
/// give devices whose `numa_node` is -1 a node when there is only one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NumaNodes {
    /// `None` when the file is missing.
    pub online: Option<Vec<u32>>,
}

impl NumaNodes {
    /// A device's node: its own when sysfs gives one; the only node when
    /// the machine has one (virtual machines and single-socket hosts report
    /// -1); otherwise unknown.
    pub fn effective(&self, node: Option<u32>) -> Option<u32> {
        match (node, self.online.as_deref()) {
            (Some(n), _) => Some(n),
            (None, Some([only])) => Some(*only),
            _ => None,
        }
    }
}

/// The distance between `a` and `b` (module documentation). Symmetric,
/// and 0 only for the same function.
pub fn distance(a: &PciDevice, b: &PciDevice, numa: &NumaNodes) -> Distance {
    if a.host_bridge == b.host_bridge {
        let common = a
            .path
            .iter()
            .zip(&b.path)
            .take_while(|(x, y)| x == y)
            .count();
        let links = (a.path.len() - common + b.path.len() - common) as u32;
        if links == 0 {
            return Distance {
                value: 0,
                kind: LinkKind::Same,
            };
        }
        if common == 0 {
            return Distance {
                value: links + ROOT_COMPLEX_HOP,
                kind: LinkKind::RootComplex,
            };
        }
        return Distance {
            value: links,
            kind: LinkKind::Switch,
        };
    }
    let depths = (a.depth() + b.depth()) as u32;
    match (numa.effective(a.numa_node), numa.effective(b.numa_node)) {
        (Some(x), Some(y)) if x != y => Distance {
            value: depths + NUMA_GAP,
            kind: LinkKind::Numa,
        },
        _ => Distance {
            value: depths + HOST_BRIDGE_GAP,
            kind: LinkKind::HostBridges,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciAddress;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn dev(host: &str, path: &[&str], numa: Option<u32>) -> PciDevice {
        let path: Vec<PciAddress> = path.iter().map(|p| p.parse().unwrap()).collect();
        PciDevice {
            address: *path.last().unwrap(),
            host_bridge: host.into(),
            path,
            numa_node: numa,
            sysfs_path: PathBuf::new(),
        }
    }

    /// The example tree of the module documentation.
    #[test]
    fn the_documented_example() {
        let numa = NumaNodes {
            online: Some(vec![0, 1]),
        };
        let gpu0 = dev(
            "0000:00",
            &[
                "0000:00:01.0",
                "0000:01:00.0",
                "0000:02:00.0",
                "0000:03:00.0",
            ],
            Some(0),
        );
        let nvme0 = dev(
            "0000:00",
            &[
                "0000:00:01.0",
                "0000:01:00.0",
                "0000:02:01.0",
                "0000:04:00.0",
            ],
            Some(0),
        );
        let nvme1 = dev("0000:00", &["0000:00:02.0", "0000:05:00.0"], Some(0));
        let nvme2 = dev("0000:80", &["0000:80:01.0", "0000:81:00.0"], Some(1));
        let d = |a, b| distance(a, b, &numa);
        assert_eq!(d(&gpu0, &gpu0).value, 0);
        assert_eq!(
            d(&gpu0, &nvme0),
            Distance {
                value: 4,
                kind: LinkKind::Switch
            }
        );
        assert_eq!(
            d(&gpu0, &nvme1),
            Distance {
                value: 7,
                kind: LinkKind::RootComplex
            }
        );
        assert_eq!(
            d(&gpu0, &nvme2),
            Distance {
                value: 105,
                kind: LinkKind::Numa
            }
        );
        // The same tree with the second host bridge on node 0 too.
        let nvme2_same_node = dev("0000:80", &["0000:80:01.0", "0000:81:00.0"], Some(0));
        assert_eq!(
            d(&gpu0, &nvme2_same_node),
            Distance {
                value: 11,
                kind: LinkKind::HostBridges
            }
        );
        // Unknown NUMA nodes on a two-node machine are not called far.
        let unknown = dev("0000:80", &["0000:80:01.0", "0000:81:00.0"], None);
        assert_eq!(d(&gpu0, &unknown).kind, LinkKind::HostBridges);
        // A bridge and a device below it.
        let port = dev("0000:00", &["0000:00:01.0"], Some(0));
        assert_eq!(d(&port, &gpu0).value, 3);
    }

    #[test]
    fn one_online_node_gives_minus_one_a_node() {
        let one = NumaNodes {
            online: Some(vec![0]),
        };
        assert_eq!(one.effective(None), Some(0));
        assert_eq!(one.effective(Some(3)), Some(3));
        let two = NumaNodes {
            online: Some(vec![0, 1]),
        };
        assert_eq!(two.effective(None), None);
        assert_eq!(NumaNodes::default().effective(None), None);
    }

    /// Random trees: each device is a random walk from one of two host
    /// bridges; every distinct prefix gets its own address, as in a real
    /// tree, so an address stands for exactly one node.
    fn forest() -> impl Strategy<Value = Vec<PciDevice>> {
        let walk = (
            0u8..2,
            proptest::collection::vec(0u8..3, 1..6),
            proptest::option::of(0u32..2),
        );
        proptest::collection::vec(walk, 1..12).prop_map(|walks| {
            let mut ids: HashMap<(u8, Vec<u8>), PciAddress> = HashMap::new();
            let mut next = 0u32;
            let mut numa_of_host: HashMap<u8, Option<u32>> = HashMap::new();
            walks
                .into_iter()
                .map(|(host, steps, numa)| {
                    let numa = *numa_of_host.entry(host).or_insert(numa);
                    let mut path = Vec::new();
                    for i in 1..=steps.len() {
                        let key = (host, steps[..i].to_vec());
                        let a = *ids.entry(key).or_insert_with(|| {
                            next += 1;
                            PciAddress::new(host as u32, (next >> 5) as u8, (next & 31) as u8, 0)
                        });
                        path.push(a);
                    }
                    PciDevice {
                        address: *path.last().unwrap(),
                        host_bridge: format!("{host:04x}:00"),
                        path,
                        numa_node: numa,
                        sysfs_path: PathBuf::new(),
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn symmetric_and_zero_only_for_the_same_device(devs in forest(), two_nodes in any::<bool>()) {
            let numa = NumaNodes { online: Some(if two_nodes { vec![0, 1] } else { vec![0] }) };
            for a in &devs {
                for b in &devs {
                    let ab = distance(a, b, &numa);
                    let ba = distance(b, a, &numa);
                    prop_assert_eq!(ab, ba);
                    prop_assert_eq!(ab.value == 0, a.address == b.address);
                    prop_assert_eq!(ab.kind == LinkKind::Same, a.address == b.address);
                    // Nearer kinds never cost more than the gaps of farther ones.
                    if a.host_bridge == b.host_bridge {
                        prop_assert!(ab.value <= (a.depth() + b.depth()) as u32 + ROOT_COMPLEX_HOP);
                    } else {
                        prop_assert!(ab.value >= (a.depth() + b.depth()) as u32 + HOST_BRIDGE_GAP);
                    }
                }
            }
        }

        /// Moving a device to another host bridge at the same depth never
        /// brings it nearer.
        #[test]
        fn another_host_bridge_is_never_nearer(devs in forest()) {
            let numa = NumaNodes { online: Some(vec![0, 1]) };
            for a in &devs {
                for b in &devs {
                    if a.host_bridge != b.host_bridge {
                        continue;
                    }
                    let mut moved = b.clone();
                    moved.host_bridge = "ffff:ff".into();
                    prop_assert!(distance(a, &moved, &numa).value >= distance(a, b, &numa).value);
                }
            }
        }
    }
}

//! Where GPUs and NVMe drives sit in the PCIe tree, how far apart they
//! are, and which GPUs should read a path's data with GPU-Direct: PG-Strom's
//! `pg_strom.gpu_selection_policy` (`optimal`, `numa`, `system`) and
//! `pg_strom.manual_optimal_gpus`, for gpupgparser's heap path.
//!
//! Everything is read from a sysfs tree given as a path (`/sys`, or a fake
//! tree in tests: [`fake::FakeSysfs`]); nothing here needs CUDA. The
//! caller passes the GPUs as CUDA ordinals with their PCI bus ids
//! ([`GpuId`]; `gpupg_gpu::probe::pci_locations` gives them).
//!
//! - [`Sysfs`]: PCI functions and their path up to the root complex and
//!   NUMA node; NVMe namespaces (`block/nvmeXnY` → controller → PCI
//!   function); md-raid and NVMe multipath members, partitions; the block
//!   device holding a path (`stat` → `dev/block/MAJOR:MINOR`), or none (NFS).
//! - [`distance()`]: hops between two PCI functions (module [`distance`](mod@distance)
//!   documents the definition with an example tree).
//! - [`Topology`]: the GPUs and NVMe drives of a machine, read once.
//! - [`Selector`]: a [`Policy`] and [`ManualGpus`] applied to a drive, a
//!   path or several paths (intersection); an empty [`Selection`] says why
//!   GPU-Direct is not used there.
//! - [`Report`]: the text and JSON of `gpupgparser info`.
//!
//! ```
//! use gpupg_topology::{fake::FakeSysfs, GpuId, Policy, Selector, Topology};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let fake = FakeSysfs::new(dir.path()).unwrap();
//! fake.numa_online("0").unwrap();
//! // A GPU and an NVMe drive under one PCIe switch.
//! fake.gpu("pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0", 0).unwrap();
//! fake.nvme(
//!     "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/0000:04:00.0",
//!     0, "nvme0", "Fake SSD", &[("nvme0n1", "259:0")],
//! ).unwrap();
//! let gpus = [GpuId { ordinal: 0, pci_bus_id: "0000:03:00.0".into(), name: None }];
//! let topo = Topology::read(fake.sysfs(), &gpus);
//! let sel = Selector::new(&topo, Policy::Optimal, None);
//! let nvme0 = topo.sysfs().block_device("nvme0n1").unwrap();
//! assert_eq!(sel.for_storage("nvme0n1", &nvme0).gpus, [0]);
//! ```

pub mod block;
pub mod distance;
pub mod error;
pub mod fake;
pub mod pci;
pub mod policy;
pub mod report;
pub mod sysfs;
pub mod topology;

pub use block::{DevNum, NoBlockDevice, NvmeDrive, OtherBlock, StackKind, StackedDevice, Storage};
pub use distance::{distance, Distance, LinkKind, NumaNodes};
pub use error::{ManualSpecError, TopologyError};
pub use pci::{PciAddress, PciDevice};
pub use policy::{
    DriveChoice, GpuDistance, ManualEntry, ManualGpus, ManualTarget, Policy, Selection, Selector,
};
pub use report::{DistanceCell, Report};
pub use sysfs::{Gpu, GpuId, Sysfs};
pub use topology::Topology;

//! Topology, distances and the selection policy over fake sysfs trees laid
//! out as the kernel lays out the real one.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use gpupg_topology::fake::FakeSysfs;
use gpupg_topology::{
    DevNum, GpuId, LinkKind, ManualGpus, Policy, Report, Selector, StackKind, Storage, Topology,
    TopologyError,
};

fn gpu(ordinal: usize, bus: &str) -> GpuId {
    GpuId {
        ordinal,
        pci_bus_id: bus.into(),
        name: Some(format!("Fake GPU {ordinal}")),
    }
}

/// Two sockets. Node 0: a switch with GPU0 and nvme0 below it, and nvme1
/// on its own root port; node 1: GPU1 and nvme2 under one root port's
/// switch, nvme3 on another root port.
///
/// ```text
/// pci0000:00 (node 0)
///  ├─ 00:01.0 ─ 01:00.0 switch ┬─ 02:00.0 ─ 03:00.0 GPU0
///  │                           └─ 02:01.0 ─ 04:00.0 nvme0
///  └─ 00:02.0 ─ 05:00.0 nvme1
/// pci0000:80 (node 1)
///  ├─ 80:01.0 ─ 81:00.0 switch ┬─ 82:00.0 ─ 83:00.0 GPU1
///  │                           └─ 82:01.0 ─ 84:00.0 nvme2
///  └─ 80:02.0 ─ 85:00.0 nvme3
/// ```
fn two_sockets(dir: &Path) -> (FakeSysfs, Vec<GpuId>) {
    let f = FakeSysfs::new(dir).unwrap();
    f.numa_online("0-1").unwrap();
    f.gpu(
        "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0",
        0,
    )
    .unwrap();
    f.nvme(
        "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/0000:04:00.0",
        0,
        "nvme0",
        "Fake SSD A",
        &[("nvme0n1", "259:0")],
    )
    .unwrap();
    f.nvme(
        "pci0000:00/0000:00:02.0/0000:05:00.0",
        0,
        "nvme1",
        "Fake SSD B",
        &[("nvme1n1", "259:1")],
    )
    .unwrap();
    f.gpu(
        "pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:00.0/0000:83:00.0",
        1,
    )
    .unwrap();
    f.nvme(
        "pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:01.0/0000:84:00.0",
        1,
        "nvme2",
        "Fake SSD C",
        &[("nvme2n1", "259:2")],
    )
    .unwrap();
    f.nvme(
        "pci0000:80/0000:80:02.0/0000:85:00.0",
        1,
        "nvme3",
        "Fake SSD D",
        &[("nvme3n1", "259:3")],
    )
    .unwrap();
    let gpus = vec![gpu(0, "0000:03:00.0"), gpu(1, "0000:83:00.0")];
    (f, gpus)
}

#[test]
fn gpu_and_nvme_under_one_switch() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    let topo = Topology::read(f.sysfs(), &gpus);
    assert!(topo.notes.is_empty(), "{:?}", topo.notes);
    assert_eq!(topo.nvme.len(), 4);
    let g0 = topo.gpu(0).unwrap();
    let p = g0.pci.as_ref().unwrap();
    assert_eq!(p.host_bridge, "0000:00");
    assert_eq!(p.depth(), 4);
    assert_eq!(p.numa_node, Some(0));
    let nvme0 = &topo.nvme_named("nvme0")[0];
    assert_eq!(nvme0.name, "nvme0n1");
    assert_eq!(nvme0.model.as_deref(), Some("Fake SSD A"));
    let d = topo.distance(g0, &nvme0.pci).unwrap();
    assert_eq!((d.value, d.kind), (4, LinkKind::Switch));

    let sel = Selector::new(&topo, Policy::Optimal, None);
    let c = sel.drive_choice(nvme0);
    assert_eq!(c.gpus, [0]);
    assert_eq!(c.reason, None);
    let c = sel.drive_choice(topo.nvme_named("nvme2")[0]);
    assert_eq!(c.gpus, [1]);
}

#[test]
fn different_root_ports_and_numa_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    let topo = Topology::read(f.sysfs(), &gpus);
    let nvme1 = topo.nvme_named("nvme1n1")[0];
    let d0 = topo.distance(topo.gpu(0).unwrap(), &nvme1.pci).unwrap();
    let d1 = topo.distance(topo.gpu(1).unwrap(), &nvme1.pci).unwrap();
    // GPU0: four functions up to the host bridge, two down, +1 through it.
    assert_eq!((d0.value, d0.kind), (7, LinkKind::RootComplex));
    // GPU1: another socket.
    assert_eq!((d1.value, d1.kind), (4 + 2 + 99, LinkKind::Numa));
    let opt = Selector::new(&topo, Policy::Optimal, None);
    assert_eq!(opt.drive_choice(nvme1).gpus, [0]);
    let numa = Selector::new(&topo, Policy::Numa, None);
    assert_eq!(numa.drive_choice(nvme1).gpus, [0]);
    assert_eq!(numa.drive_choice(topo.nvme_named("nvme3")[0]).gpus, [1]);
    let system = Selector::new(&topo, Policy::System, None);
    assert_eq!(system.drive_choice(nvme1).gpus, [0, 1]);

    // With both host bridges on one node the gap is 5, not 99.
    f.write(
        "devices/pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:00.0/0000:83:00.0/numa_node",
        "0",
    )
    .unwrap();
    f.write(
        "devices/pci0000:00/0000:00:02.0/0000:05:00.0/numa_node",
        "0",
    )
    .unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    let nvme1 = topo.nvme_named("nvme1n1")[0];
    let d1 = topo.distance(topo.gpu(1).unwrap(), &nvme1.pci).unwrap();
    assert_eq!((d1.value, d1.kind), (4 + 2 + 5, LinkKind::HostBridges));
    // numa policy: both GPUs on node 0 now.
    let numa = Selector::new(&topo, Policy::Numa, None);
    assert_eq!(numa.drive_choice(nvme1).gpus, [0, 1]);
}

#[test]
fn md_raid_over_drives_of_different_gpus_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    f.md("md0", "9:0", "raid0", &["nvme0n1", "nvme2n1"])
        .unwrap();
    f.md("md1", "9:1", "raid0", &["nvme0n1", "nvme1n1"])
        .unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    let sel = Selector::new(&topo, Policy::Optimal, None);

    let md0 = topo.sysfs().block_device("md0").unwrap();
    match &md0 {
        Storage::Stacked(s) => {
            assert_eq!(s.kind, StackKind::Md);
            assert_eq!(s.level.as_deref(), Some("raid0"));
            assert_eq!(s.members.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let s = sel.for_storage("md0", &md0);
    assert!(s.gpus.is_empty());
    assert!(!s.gpudirect());
    let reason = s.reason.unwrap();
    assert!(
        reason.contains("no GPU is chosen for every member of md0")
            && reason.contains("nvme0n1 GPU0")
            && reason.contains("nvme2n1 GPU1"),
        "{reason}"
    );
    assert_eq!(s.drives.len(), 2);

    // Both members nearest GPU0: the intersection keeps it.
    let md1 = topo.sysfs().block_device("md1").unwrap();
    assert_eq!(sel.for_storage("md1", &md1).gpus, [0]);
    // With system every GPU stays.
    let system = Selector::new(&topo, Policy::System, None);
    assert_eq!(system.for_storage("md0", &md0).gpus, [0, 1]);
    // A manual entry for one member changes the intersection.
    let manual: ManualGpus = "nvme2=gpu0:gpu1".parse().unwrap();
    let with = Selector::new(&topo, Policy::Optimal, Some(&manual));
    let s = with.for_storage("md0", &md0);
    assert_eq!(s.gpus, [0]);
    assert_eq!(s.manual.as_deref(), Some("nvme2=gpu0:gpu1"));
    // A manual entry for the md device itself wins over its members.
    let manual: ManualGpus = "md0=gpu1".parse().unwrap();
    let with = Selector::new(&topo, Policy::Optimal, Some(&manual));
    assert_eq!(with.for_storage("md0", &md0).gpus, [1]);
}

#[test]
fn partitions_resolve_to_their_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    f.partition("nvme2n1", "nvme2n1p2", "259:7", 2).unwrap();
    f.partition("nvme0n1", "nvme0n1p1", "259:8", 1).unwrap();
    f.md("md2", "9:2", "raid1", &["nvme0n1p1"]).unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    let s = topo.sysfs().block_dev(DevNum::new(259, 7)).unwrap();
    match &s {
        Storage::Nvme(d) => {
            assert_eq!(d.name, "nvme2n1");
            assert_eq!(d.partition.as_deref(), Some("nvme2n1p2"));
            assert_eq!(d.controller, "nvme2");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        s.describe().starts_with("nvme2n1p2 (partition of nvme2n1)"),
        "{}",
        s.describe()
    );
    let sel = Selector::new(&topo, Policy::Optimal, None);
    assert_eq!(sel.for_storage("p", &s).gpus, [1]);
    // By name too, and an md member that is a partition.
    assert_eq!(topo.sysfs().block_device("nvme2n1p2").unwrap(), s);
    let md2 = topo.sysfs().block_device("md2").unwrap();
    assert_eq!(md2.nvme_leaves()[0].partition.as_deref(), Some("nvme0n1p1"));
    assert_eq!(sel.for_storage("md2", &md2).gpus, [0]);
    // A manual entry may name the partition.
    let manual: ManualGpus = "nvme2n1p2=gpu0".parse().unwrap();
    let with = Selector::new(&topo, Policy::Optimal, Some(&manual));
    assert_eq!(with.for_storage("p", &s).gpus, [0]);
}

#[test]
fn a_path_is_resolved_through_its_device_number() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    // Whatever device holds the temporary directory here plays a partition
    // of nvme2n1 in the fake tree.
    let dev = DevNum::from_st_dev(std::fs::metadata(data.path()).unwrap().dev());
    f.partition("nvme2n1", "nvme2n1p1", &dev.to_string(), 1)
        .unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    let sel = Selector::new(&topo, Policy::Optimal, None);
    let file = data.path().join("16384");
    std::fs::write(&file, b"x").unwrap();
    for p in [data.path(), file.as_path()] {
        let s = sel.for_path(p);
        assert_eq!(s.gpus, [1], "{s:?}");
        assert_eq!(s.drives[0].drive, "nvme2n1");
    }
    // A manual path entry covers it instead.
    let spec = format!("{}=gpu0", data.path().display());
    let manual: ManualGpus = spec.parse().unwrap();
    let with = Selector::new(&topo, Policy::Optimal, Some(&manual));
    let s = with.for_path(&file);
    assert_eq!(s.gpus, [0]);
    assert_eq!(s.manual.as_deref(), Some(spec.as_str()));
    // A path that does not exist: no GPU-Direct, and why.
    let s = sel.for_path(&data.path().join("missing"));
    assert!(s.gpus.is_empty());
    assert!(s.reason.unwrap().starts_with("stat "));

    // Several tablespaces: the intersection.
    let a = sel.for_storage("ts_a", &topo.sysfs().block_device("nvme0n1").unwrap());
    let b = sel.for_storage("ts_b", &topo.sysfs().block_device("nvme1n1").unwrap());
    let c = sel.for_storage("ts_c", &topo.sysfs().block_device("nvme2n1").unwrap());
    assert_eq!(sel.intersect("a+b", vec![a.clone(), b]).gpus, [0]);
    let both = sel.intersect("a+c", vec![a, c]);
    assert!(both.gpus.is_empty());
    assert!(
        both.reason
            .as_deref()
            .unwrap()
            .contains("ts_a GPU0; ts_c GPU1"),
        "{both:?}"
    );
}

#[test]
fn a_path_on_a_file_system_without_a_block_device() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    // /proc has an anonymous device number (major 0), as NFS has; the mount
    // table says it is NFS.
    let dev = DevNum::from_st_dev(std::fs::metadata("/proc").unwrap().dev());
    assert_eq!(dev.major, 0);
    let mountinfo = dir.path().join("mountinfo");
    std::fs::write(
        &mountinfo,
        format!("90 27 {dev} / /mnt/nfs rw,relatime shared:5 - nfs4 server:/export rw,vers=4.2\n"),
    )
    .unwrap();
    let topo = Topology::read(f.sysfs().with_mountinfo(&mountinfo), &gpus);
    let sel = Selector::new(&topo, Policy::Optimal, None);
    let s = sel.for_path(Path::new("/proc"));
    assert!(s.gpus.is_empty());
    let reason = s.reason.clone().unwrap();
    assert!(
        reason.contains("nfs4 file system from server:/export mounted at /mnt/nfs")
            && reason.contains("no block device"),
        "{reason}"
    );
    assert!(matches!(s.storage, Some(Storage::NoBlockDevice(_))));
    // Without a mount table it still says what it can.
    let topo = Topology::read(f.sysfs(), &gpus);
    let s = Selector::new(&topo, Policy::Optimal, None).for_path(Path::new("/proc"));
    assert!(s.reason.unwrap().contains(&format!("device {dev}")));
    // PG-Strom's use of the manual override: an NFS mount given GPUs.
    let manual: ManualGpus = "/proc=gpu1".parse().unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    let s = Selector::new(&topo, Policy::Optimal, Some(&manual)).for_path(Path::new("/proc/self"));
    assert_eq!(s.gpus, [1]);
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    f.write(
        "devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/numa_node",
        "zero",
    )
    .unwrap();
    f.write("devices/system/node/online", "0-x").unwrap();
    f.write(
        "devices/pci0000:80/0000:80:02.0/0000:85:00.0/nvme/nvme3/nvme3n1/dev",
        "259",
    )
    .unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    // The GPU cannot be placed, and says why.
    let g0 = topo.gpu(0).unwrap();
    assert!(g0.pci.is_none());
    let problem = g0.problem.as_deref().unwrap();
    assert!(
        problem.contains("numa_node") && problem.contains("\"zero\""),
        "{problem}"
    );
    assert!(topo.gpu(1).unwrap().pci.is_some());
    // The node list and the drive become notes.
    assert!(
        topo.notes
            .iter()
            .any(|n| n.contains("online") && n.contains("0-x")),
        "{:?}",
        topo.notes
    );
    assert!(
        topo.notes.iter().any(|n| n.contains("MAJOR:MINOR")),
        "{:?}",
        topo.notes
    );
    match f.sysfs().block_device("nvme3n1") {
        Err(TopologyError::Malformed { content, .. }) => assert_eq!(content, "259"),
        other => panic!("{other:?}"),
    }
    let text = Report::new(&Selector::new(&topo, Policy::Optimal, None), None, vec![]).to_text();
    assert!(text.contains("GPU0 at 0000:03:00.0: not placed"), "{text}");

    // A bus id that is not an address, and one that is not in sysfs.
    let topo = Topology::read(f.sysfs(), &[gpu(0, "GPU-1234"), gpu(1, "0000:99:00.0")]);
    assert!(topo
        .gpu(0)
        .unwrap()
        .problem
        .as_deref()
        .unwrap()
        .contains("not a PCI address"));
    assert!(topo
        .gpu(1)
        .unwrap()
        .problem
        .as_deref()
        .unwrap()
        .contains("is not in"));

    // md devices whose members loop.
    f.md("md5", "9:5", "raid0", &[]).unwrap();
    f.link_members("devices/virtual/block/md5", &["md5"])
        .unwrap();
    assert!(matches!(
        f.sysfs().block_device("md5"),
        Err(TopologyError::TooDeep { .. })
    ));
    // A name that is not a block device, or tries to leave the directory.
    for n in ["sdz", "../block/nvme0n1", ""] {
        assert!(matches!(
            f.sysfs().block_device(n),
            Err(TopologyError::NoSuchBlockDevice { .. })
        ));
    }
    // A sysfs root that does not exist: notes, no panic.
    let topo = Topology::read(
        gpupg_topology::Sysfs::new(dir.path().join("nothing")),
        &gpus,
    );
    assert!(topo.nvme.is_empty());
    assert!(topo.gpus.iter().all(|g| g.pci.is_none()));
}

#[test]
fn other_block_devices_and_fabrics_are_not_gpudirect() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    // A SATA disk behind an AHCI controller, a dm volume over an NVMe,
    // and an NVMe over TCP namespace.
    f.pci("pci0000:00/0000:00:17.0", "0x8086", "0x010601", 0)
        .unwrap();
    f.block_at(
        "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        "sda",
        "8:0",
        true,
    )
    .unwrap();
    f.block_at("devices/virtual/block/dm-0", "dm-0", "253:0", true)
        .unwrap();
    f.write("devices/virtual/block/dm-0/dm/name", "vg-data")
        .unwrap();
    f.link_members("devices/virtual/block/dm-0", &["nvme0n1"])
        .unwrap();
    f.write("devices/virtual/nvme-fabrics/ctl/nvme7/transport", "tcp")
        .unwrap();
    f.block_at(
        "devices/virtual/nvme-fabrics/ctl/nvme7/nvme7n1",
        "nvme7n1",
        "259:70",
        true,
    )
    .unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    let sel = Selector::new(&topo, Policy::System, None);
    let sda = topo.sysfs().block_device("sda").unwrap();
    let s = sel.for_storage("sda", &sda);
    assert!(s.gpus.is_empty());
    assert!(s
        .reason
        .unwrap()
        .contains("sda is not an NVMe drive on PCIe (SCSI/SATA)"));
    let dm = topo.sysfs().block_device("dm-0").unwrap();
    let s = sel.for_storage("dm-0", &dm);
    assert!(s.reason.unwrap().contains("device-mapper"), "{dm:?}");
    assert!(
        dm.describe().contains("device-mapper vg-data over nvme0n1"),
        "{}",
        dm.describe()
    );
    let tcp = topo.sysfs().block_device("nvme7n1").unwrap();
    assert!(
        tcp.describe().contains("NVMe over fabrics (tcp)"),
        "{}",
        tcp.describe()
    );
    // The fabrics namespace is not in the distance table and says why.
    assert_eq!(topo.nvme.len(), 4);
    assert!(
        topo.notes.iter().any(|n| n.contains("nvme7n1")),
        "{:?}",
        topo.notes
    );
}

#[test]
fn manual_entries_that_name_nothing_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    let topo = Topology::read(f.sysfs(), &gpus);
    let manual: ManualGpus = "nvme9=gpu0,nvme1=gpu5,/no/such/dir=gpu1,nvme0=none"
        .parse()
        .unwrap();
    let sel = Selector::new(&topo, Policy::Optimal, Some(&manual));
    let w = sel.manual_warnings();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].contains("no drive named nvme9"));
    assert!(w[1].contains("GPU5 not present (GPUs here: GPU0, GPU1)"));
    assert!(w[2].contains("/no/such/dir does not exist"));
    // A GPU that does not exist is not chosen; `none` chooses nothing.
    let c = sel.drive_choice(topo.nvme_named("nvme1")[0]);
    assert!(c.gpus.is_empty());
    assert!(c.reason.unwrap().contains("names no GPU present here"));
    let c = sel.drive_choice(topo.nvme_named("nvme0")[0]);
    assert!(c.gpus.is_empty());
    assert_eq!(c.manual.as_deref(), Some("nvme0=none"));
}

#[test]
fn the_report_renders_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    f.md("md0", "9:0", "raid0", &["nvme0n1", "nvme2n1"])
        .unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    let sel = Selector::new(&topo, Policy::Optimal, None);
    let md0 = sel.for_storage("md0", &topo.sysfs().block_device("md0").unwrap());
    let report = Report::new(&sel, None, vec![md0]);
    let text = report.to_text();
    eprintln!("{text}");
    for want in [
        "NUMA nodes 0,1",
        "  [pci0000:00] (NUMA node 0)",
        "   - [0000:00:01.0]",
        "            - [0000:03:00.0] GPU0 (Fake GPU 0)",
        "[0000:04:00.0] nvme0 (Fake SSD A) nvme0n1 --> GPU0 [dist=4]",
        "[0000:05:00.0] nvme1 (Fake SSD B) nvme1n1 --> GPU0 [dist=7]",
        "GPU<->NVMe distance",
        "md0 --> no GPU-Direct: no GPU is chosen for every member of md0",
        "    on md0 (md raid0 over nvme0n1 (NVMe nvme0 at 0000:04:00.0, Fake SSD A)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("GPU<->NVMe"))
        .skip(1)
        .take(3)
        .collect();
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["nvme0n1", "nvme1n1", "nvme2n1", "nvme3n1"]
    );
    assert_eq!(
        rows[1].split_whitespace().collect::<Vec<_>>(),
        ["GPU0", "4*", "7*", "107", "105"]
    );
    assert_eq!(
        rows[2].split_whitespace().collect::<Vec<_>>(),
        ["GPU1", "107", "105", "4*", "7*"]
    );

    let json = report.to_json();
    assert_eq!(json["policy"], "optimal");
    assert_eq!(json["gpus"][0]["pci"]["address"], "0000:03:00.0");
    assert_eq!(json["gpus"][0]["pci"]["path"][0], "0000:00:01.0");
    assert_eq!(json["nvme"][0]["dev"], "259:0");
    let cell = json["distances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["gpu"] == 1 && c["drive"] == "nvme0n1")
        .unwrap();
    assert_eq!(cell["distance"]["value"], 4 + 4 + 99);
    assert_eq!(cell["distance"]["kind"], "numa");
    assert_eq!(json["selections"][0]["gpus"].as_array().unwrap().len(), 0);
    assert_eq!(json["selections"][0]["storage"]["type"], "stacked");
    assert_eq!(json["selections"][0]["storage"]["kind"], "md");
    assert_eq!(json["drive_choices"][2]["gpus"][0], 1);
}

/// The lent GPU machine (nvidia-h100-x1) as its sysfs was captured: one
/// H100 straight on the root bus of a virtual machine's only host bridge,
/// `numa_node` -1 everywhere with one node online, two virtio disks (vda
/// holds `/`), loop and zram devices, no NVMe, no md.
#[test]
fn the_lent_gpu_machine() {
    let dir = tempfile::tempdir().unwrap();
    let f = FakeSysfs::new(dir.path()).unwrap();
    f.numa_online("0").unwrap();
    f.pci("pci0000:00/0000:00:00.0", "0x8086", "0x060000", -1)
        .unwrap();
    f.pci("pci0000:00/0000:00:01.0", "0x1af4", "0x018000", -1)
        .unwrap();
    f.pci("pci0000:00/0000:00:02.0", "0x1af4", "0x018000", -1)
        .unwrap();
    f.pci("pci0000:00/0000:00:03.0", "0x1af4", "0x020000", -1)
        .unwrap();
    f.pci("pci0000:00/0000:00:04.0", "0x1af4", "0xffff00", -1)
        .unwrap();
    f.pci("pci0000:00/0000:00:05.0", "0x1af4", "0xffff00", -1)
        .unwrap();
    f.gpu("pci0000:00/0000:00:06.0", -1).unwrap();
    f.block_at(
        "devices/pci0000:00/0000:00:01.0/virtio0/block/vda",
        "vda",
        "254:0",
        true,
    )
    .unwrap();
    f.block_at(
        "devices/pci0000:00/0000:00:02.0/virtio1/block/vdb",
        "vdb",
        "254:16",
        true,
    )
    .unwrap();
    for i in 0..8 {
        f.block_at(
            &format!("devices/virtual/block/loop{i}"),
            &format!("loop{i}"),
            &format!("7:{i}"),
            true,
        )
        .unwrap();
    }
    f.block_at("devices/virtual/block/zram0", "zram0", "253:0", true)
        .unwrap();
    let mountinfo = dir.path().join("mountinfo");
    std::fs::write(
        &mountinfo,
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
         27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534\n\
         29 27 254:16 / /usr/local/nvidia ro,nosuid,nodev,relatime - squashfs /dev/vdb ro,errors=continue\n",
    )
    .unwrap();
    // nvidia-smi's form of the bus id (8-digit domain).
    let gpus = [GpuId {
        ordinal: 0,
        pci_bus_id: "00000000:00:06.0".into(),
        name: Some("NVIDIA H100 80GB HBM3".into()),
    }];
    let topo = Topology::read(f.sysfs().with_mountinfo(&mountinfo), &gpus);
    assert!(topo.notes.is_empty(), "{:?}", topo.notes);
    assert!(topo.nvme.is_empty());
    assert!(topo.other_nvidia.is_empty());
    let g = topo.gpu(0).unwrap().pci.clone().unwrap();
    assert_eq!(g.host_bridge, "0000:00");
    assert_eq!(g.path.len(), 1);
    assert_eq!(g.numa_node, None);
    assert_eq!(topo.numa.effective(g.numa_node), Some(0));

    // The data directory on / is on vda: no GPU-Direct, for any policy.
    for policy in [Policy::Optimal, Policy::Numa, Policy::System] {
        let sel = Selector::new(&topo, policy, None);
        let root = topo.sysfs().block_dev(DevNum::new(254, 0)).unwrap();
        let s = sel.for_storage("/var/lib/postgresql", &root);
        assert!(s.gpus.is_empty());
        assert_eq!(
            s.reason.as_deref(),
            Some("vda is not an NVMe drive on PCIe (virtio)")
        );
        match &root {
            Storage::OtherBlock(o) => {
                assert_eq!(o.pci.as_ref().unwrap().address.to_string(), "0000:00:01.0")
            }
            other => panic!("{other:?}"),
        }
        // What the virtio disk's distance to the GPU would be.
        if let Storage::OtherBlock(o) = &root {
            let d = topo
                .distance(topo.gpu(0).unwrap(), o.pci.as_ref().unwrap())
                .unwrap();
            assert_eq!((d.value, d.kind), (3, LinkKind::RootComplex));
        }
    }
    let sel = Selector::new(&topo, Policy::Optimal, None);
    let text = Report::new(&sel, None, vec![]).to_text();
    assert_eq!(
        text,
        "PCIe topology (".to_string()
            + &dir.path().display().to_string()
            + "; NUMA node 0):\n  \
               [pci0000:00]\n   \
               - [0000:00:06.0] GPU0 (NVIDIA H100 80GB HBM3)\n  \
               no NVMe drives\n\
             GPU selection (optimal):\n  \
               nothing to choose for: no NVMe drives and no data directory\n"
    );
}

/// A machine without GPUs: the drives are listed, nothing is chosen.
#[test]
fn no_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = two_sockets(dir.path());
    let topo = Topology::read(f.sysfs(), &[]);
    // The fake GPUs are in sysfs but CUDA did not list them.
    assert_eq!(topo.other_nvidia.len(), 2);
    let sel = Selector::new(&topo, Policy::Optimal, None);
    let c = sel.drive_choice(topo.nvme_named("nvme0")[0]);
    assert!(c.gpus.is_empty());
    assert_eq!(c.reason.as_deref(), Some("no GPUs"));
    let text = Report::new(&sel, Some("CUDA driver not found".into()), vec![]).to_text();
    assert!(
        text.contains("  no GPUs (CUDA driver not found)\n"),
        "{text}"
    );
    assert!(
        text.contains("NVIDIA device 0000:03:00.0 in sysfs has no CUDA ordinal here"),
        "{text}"
    );
    assert!(text.contains("nvme0n1 --> no GPU (no GPUs)"), "{text}");
    assert!(!text.contains("GPU<->NVMe"), "{text}");
}

/// A multipath namespace: the intersection over its paths.
#[test]
fn nvme_multipath() {
    let dir = tempfile::tempdir().unwrap();
    let (f, gpus) = two_sockets(dir.path());
    // nvme0 and nvme2 both reach namespace nvme4n1 through hidden path
    // devices; the head lives in nvme-subsystem.
    let c0 = "devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/0000:04:00.0/nvme/nvme0/nvme0c0n4";
    let c2 = "devices/pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:01.0/0000:84:00.0/nvme/nvme2/nvme2c2n4";
    std::fs::create_dir_all(dir.path().join(c0)).unwrap();
    std::fs::create_dir_all(dir.path().join(c2)).unwrap();
    let head = "devices/virtual/nvme-subsystem/nvme-subsys4/nvme4n1";
    f.block_at(head, "nvme4n1", "259:40", true).unwrap();
    f.link(&format!("{head}/multipath/nvme0c0n4"), c0).unwrap();
    f.link(&format!("{head}/multipath/nvme2c2n4"), c2).unwrap();
    let topo = Topology::read(f.sysfs(), &gpus);
    // Its two paths join the distance table.
    assert!(topo.nvme.iter().any(|d| d.name == "nvme0c0n4"));
    let s = topo.sysfs().block_device("nvme4n1").unwrap();
    assert!(matches!(&s, Storage::Stacked(st) if st.kind == StackKind::NvmeMultipath));
    let sel = Selector::new(&topo, Policy::Optimal, None);
    assert!(sel.for_storage("nvme4n1", &s).gpus.is_empty());
    assert_eq!(
        Selector::new(&topo, Policy::System, None)
            .for_storage("x", &s)
            .gpus,
        [0, 1]
    );
}

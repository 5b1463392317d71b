//! Builds fake sysfs trees in a directory, laid out as the kernel lays
//! out the real one (devices under `devices/pciDDDD:BB/...`, relative links
//! from `bus/pci/devices`, `block`, `class/block`, `dev/block`), for tests
//! of this crate and of the programs using it.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::sysfs::Sysfs;

/// A fake sysfs tree rooted at a directory (what `/sys` is on a machine).
#[derive(Debug, Clone)]
pub struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    /// Creates the top directories under `root`.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for d in [
            "devices",
            "bus/pci/devices",
            "block",
            "class/block",
            "class/nvme",
            "dev/block",
            "devices/system/node",
        ] {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(FakeSysfs { root })
    }

    /// A reader of this tree.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(&self.root)
    }

    /// Writes `content` (and a newline, as the kernel does) to a file
    /// relative to the root, creating its directory.
    pub fn write(&self, rel: &str, content: &str) -> io::Result<()> {
        let p = self.root.join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        fs::write(p, format!("{content}\n"))
    }

    /// A relative symbolic link at `link` (relative to the root) to
    /// `target` (relative to the root), as the kernel's links are.
    pub fn link(&self, link: &str, target: &str) -> io::Result<()> {
        let l = self.root.join(link);
        if let Some(d) = l.parent() {
            fs::create_dir_all(d)?;
        }
        let up = Path::new(link).components().count().saturating_sub(1);
        let rel = format!("{}{target}", "../".repeat(up));
        let _ = fs::remove_file(&l);
        symlink(rel, l)
    }

    /// `devices/system/node/online`, e.g. `0-1`.
    pub fn numa_online(&self, list: &str) -> io::Result<()> {
        self.write("devices/system/node/online", list)
    }

    /// Creates the PCI functions along `path` (`pci0000:00/0000:00:01.0/
    /// 0000:01:00.0`, relative to `devices`): functions not yet there
    /// become bridges (class 0x060400) on `numa`; the last one gets
    /// `vendor` and `class`. Each is linked from `bus/pci/devices`.
    /// Returns the last one's path relative to the root.
    pub fn pci(&self, path: &str, vendor: &str, class: &str, numa: i32) -> io::Result<String> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut rel = String::from("devices");
        for (i, p) in parts.iter().enumerate() {
            rel.push('/');
            rel.push_str(p);
            if i == 0 {
                fs::create_dir_all(self.root.join(&rel))?;
                continue;
            }
            let last = i == parts.len() - 1;
            let dir = self.root.join(&rel);
            if last || !dir.exists() {
                fs::create_dir_all(&dir)?;
                let (v, c) = if last {
                    (vendor, class)
                } else {
                    ("0x8086", "0x060400")
                };
                self.write(&format!("{rel}/vendor"), v)?;
                self.write(&format!("{rel}/class"), c)?;
                self.write(&format!("{rel}/numa_node"), &numa.to_string())?;
                self.link(&format!("bus/pci/devices/{p}"), &rel)?;
            }
        }
        Ok(rel)
    }

    /// An NVIDIA GPU (3D controller) at the end of `path`.
    pub fn gpu(&self, path: &str, numa: i32) -> io::Result<String> {
        self.pci(path, "0x10de", "0x030200", numa)
    }

    /// Registers a block device whose sysfs directory is `dir` (relative to
    /// the root): its `dev` file and the `class/block`, `dev/block` links,
    /// and `block/` for a whole disk.
    pub fn block_at(&self, dir: &str, name: &str, dev: &str, whole_disk: bool) -> io::Result<()> {
        fs::create_dir_all(self.root.join(dir))?;
        self.write(&format!("{dir}/dev"), dev)?;
        self.link(&format!("class/block/{name}"), dir)?;
        self.link(&format!("dev/block/{dev}"), dir)?;
        if whole_disk {
            self.link(&format!("block/{name}"), dir)?;
        }
        Ok(())
    }

    /// An NVMe controller `ctrl` on PCIe at the end of `path`, with its
    /// namespaces (`(name, "major:minor")`).
    pub fn nvme(
        &self,
        path: &str,
        numa: i32,
        ctrl: &str,
        model: &str,
        namespaces: &[(&str, &str)],
    ) -> io::Result<()> {
        let func = self.pci(path, "0x144d", "0x010802", numa)?;
        let c = format!("{func}/nvme/{ctrl}");
        self.write(&format!("{c}/model"), model)?;
        self.write(&format!("{c}/transport"), "pcie")?;
        let addr = path.rsplit('/').next().unwrap_or_default();
        self.write(&format!("{c}/address"), addr)?;
        self.link(&format!("{c}/device"), &func)?;
        self.link(&format!("class/nvme/{ctrl}"), &c)?;
        for (ns, dev) in namespaces {
            self.block_at(&format!("{c}/{ns}"), ns, dev, true)?;
        }
        Ok(())
    }

    /// A partition `part` of the whole disk `disk` (already registered).
    pub fn partition(&self, disk: &str, part: &str, dev: &str, number: u32) -> io::Result<()> {
        let disk_dir = fs::canonicalize(self.root.join("block").join(disk))?;
        let root = fs::canonicalize(&self.root)?;
        let rel = disk_dir
            .strip_prefix(&root)
            .map_err(|_| io::Error::other("disk outside the tree"))?
            .join(part);
        let rel = rel.to_string_lossy().into_owned();
        self.block_at(&rel, part, dev, false)?;
        self.write(&format!("{rel}/partition"), &number.to_string())
    }

    /// An md-raid device over `members` (block device names, whole disks
    /// or partitions, already registered).
    pub fn md(&self, name: &str, dev: &str, level: &str, members: &[&str]) -> io::Result<()> {
        let dir = format!("devices/virtual/block/{name}");
        self.block_at(&dir, name, dev, true)?;
        self.write(&format!("{dir}/md/level"), level)?;
        self.link_members(&dir, members)
    }

    /// `slaves/` links of a stacked device to its members.
    pub fn link_members(&self, dir: &str, members: &[&str]) -> io::Result<()> {
        let root = fs::canonicalize(&self.root)?;
        fs::create_dir_all(self.root.join(dir).join("slaves"))?;
        for m in members {
            let target = fs::canonicalize(self.root.join("class/block").join(m))?;
            let rel = target
                .strip_prefix(&root)
                .map_err(|_| io::Error::other("member outside the tree"))?
                .to_string_lossy()
                .into_owned();
            self.link(&format!("{dir}/slaves/{m}"), &rel)?;
        }
        Ok(())
    }
}

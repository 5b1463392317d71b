//! The heap readers' GPUDirect Storage path: the segment files of the
//! relations whose pages the GPU converts, registered with cuFile, and the
//! device buffers their pages are read into. Each reader fills a buffer
//! with `cuFileRead` straight from the files (`O_DIRECT`), copies the
//! pages' 24-byte headers back with one strided copy, and judges the pages
//! from those (visibility map, page LSN, header bounds); the page kernels
//! then check the line pointers and the checksums on the device. The pages
//! themselves never pass through host memory unless the kernels flag one,
//! which is then copied back for the CPU converter.
//!
//! Where cuFile cannot register the files (no GPUDirect-capable storage,
//! nvidia-fs absent, a file system without `O_DIRECT`), or would only read
//! them through its compatibility mode (POSIX reads and a copy, slower than
//! the readers' own parallel `pread` into page-locked buffers), `--heap-io
//! auto` reads with `pread` and the report says why.

use std::time::Duration;

use super::files::RelationFiles;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use gpupg_format::heap::page::PAGE_HEADER_SIZE;
use gpupg_gpu::{GdsBuffer, GdsDriver, GdsError, GdsFile, GpuError, PagesIn};

/// The registered files and the device buffers of one export.
pub(crate) struct GdsReads {
    /// Per relation: its segment files, or `None` when its pages are read
    /// with `pread` (the GPU does not convert them).
    files: Vec<Option<Vec<GdsFile>>>,
    free: Receiver<GdsBuffer>,
    home: Sender<GdsBuffer>,
    buffer_bytes: usize,
    block_size: usize,
    /// How cuFile reads them, for the report.
    pub(crate) mode: &'static str,
}

fn one_line(e: GdsError) -> String {
    e.to_string().replace('\n', " ")
}

impl GdsReads {
    /// Opens the cuFile driver on `device`, registers the segment files of
    /// the relations in `rels` that are `Some`, and allocates `buffers`
    /// device buffers of `buffer_bytes` (registered with cuFile where it
    /// accepts them). Without `allow_compat`, a host where cuFile could
    /// read only through its compatibility mode is refused, when it can be
    /// told, before the driver is opened. Errors are one line saying why
    /// cuFile is not used.
    pub(crate) fn open(
        device: usize,
        allow_compat: bool,
        rels: &[Option<&RelationFiles>],
        buffers: usize,
        buffer_bytes: usize,
    ) -> Result<GdsReads, String> {
        if !allow_compat {
            if let Some(why) = gpupg_gpu::gpudirect_unavailable() {
                return Err(why);
            }
        }
        let driver = GdsDriver::open(device).map_err(one_line)?;
        if !allow_compat {
            if let Some(why) = driver.compat_only_reason() {
                return Err(why);
            }
        }
        let mut files = Vec::with_capacity(rels.len());
        let mut block_size = 0;
        for r in rels {
            files.push(match r {
                None => None,
                Some(f) => {
                    block_size = f.block_size();
                    let segments = f
                        .segment_paths()
                        .iter()
                        .map(|p| GdsFile::open(&driver, p).map_err(one_line))
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(segments)
                }
            });
        }
        if block_size == 0 || !buffer_bytes.is_multiple_of(block_size) {
            return Err(format!(
                "internal: device buffers of {buffer_bytes} bytes for {block_size}-byte blocks"
            ));
        }
        let (home, free) = bounded(buffers);
        for _ in 0..buffers {
            let b = driver.alloc(buffer_bytes, true).map_err(one_line)?;
            home.send(b)
                .map_err(|_| "internal: the device buffer pool closed".to_string())?;
        }
        Ok(GdsReads {
            files,
            free,
            home,
            buffer_bytes,
            block_size,
            mode: driver.mode().as_str(),
        })
    }

    /// Whether relation `rel`'s pages are read through cuFile.
    pub(crate) fn reads(&self, rel: usize) -> bool {
        matches!(self.files.get(rel), Some(Some(_)))
    }

    /// A free device buffer, waiting for one the decoders give back;
    /// `None` once `stopped` says the export stops.
    pub(crate) fn take(&self, stopped: &dyn Fn() -> bool) -> Option<DeviceChunk> {
        loop {
            match self.free.recv_timeout(Duration::from_millis(20)) {
                Ok(buf) => {
                    return Some(DeviceChunk {
                        buf: Some(buf),
                        home: self.home.clone(),
                        headers: vec![0; self.buffer_bytes / self.block_size * PAGE_HEADER_SIZE],
                    })
                }
                Err(RecvTimeoutError::Timeout) if !stopped() => continue,
                Err(_) => return None,
            }
        }
    }

    /// Reads `n` blocks of relation `rel` (whose files are `files`) from
    /// block `first` on into `chunk` at byte `at` (a multiple of the block
    /// size), and copies their headers back into `chunk.headers`.
    pub(crate) fn read(
        &self,
        rel: usize,
        files: &RelationFiles,
        (first, n): (u64, u64),
        chunk: &mut DeviceChunk,
        at: usize,
    ) -> Result<(), String> {
        let Some(Some(segments)) = self.files.get(rel) else {
            return Err("internal: a cuFile read of a relation not registered".into());
        };
        let bs = self.block_size;
        let Some(buf) = chunk.buf.as_mut() else {
            return Err("internal: a device chunk without its buffer".into());
        };
        for piece in files.pieces(first, n) {
            let Some(file) = segments.get(piece.segment) else {
                return Err(format!(
                    "block {} is past the files registered with cuFile",
                    first + piece.done
                ));
            };
            let len = piece.blocks as usize * bs;
            let got = file
                .read(buf, at + piece.done as usize * bs, len, piece.offset)
                .map_err(one_line)?;
            if got != len {
                return Err(format!(
                    "{}: {len} bytes at offset {} came back as {got} (the file shrank while read)",
                    file.path().display(),
                    piece.offset
                ));
            }
        }
        let first_page = at / bs;
        let headers = chunk
            .headers
            .get_mut(first_page * PAGE_HEADER_SIZE..(first_page + n as usize) * PAGE_HEADER_SIZE)
            .ok_or_else(|| format!("internal: {n} pages at byte {at} past a device chunk"))?;
        buf.device_buffer()
            .copy_strided_to_host(at, bs, PAGE_HEADER_SIZE, n as usize, headers)
            .map_err(|e| format!("copying page headers back from the GPU: {e}"))
    }
}

/// A device buffer of whole pages read by cuFile, with their headers on
/// the host; it goes back to its pool when dropped.
pub(crate) struct DeviceChunk {
    buf: Option<GdsBuffer>,
    home: Sender<GdsBuffer>,
    /// [`PAGE_HEADER_SIZE`] bytes per page of the buffer, in buffer order.
    headers: Vec<u8>,
}

impl DeviceChunk {
    /// Bytes the buffer holds.
    pub(crate) fn len(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len())
    }

    /// The header of page `index` of the buffer.
    pub(crate) fn header(&self, index: usize) -> &[u8] {
        self.headers
            .get(index * PAGE_HEADER_SIZE..(index + 1) * PAGE_HEADER_SIZE)
            .unwrap_or(&[])
    }

    /// The pages, for the page kernels.
    pub(crate) fn input(&self) -> PagesIn<'_> {
        PagesIn::Device {
            ptr: self.buf.as_ref().map_or(0, |b| b.ptr()),
            len: self.len(),
            headers: &self.headers,
        }
    }

    /// Copies page `index` (`dst.len()` bytes) back to the host.
    pub(crate) fn copy_page(&self, index: usize, dst: &mut [u8]) -> Result<(), GpuError> {
        match self.buf.as_ref() {
            Some(b) => b.device_buffer().copy_range_to_host(index * dst.len(), dst),
            None => Err(GpuError::Pinned("a device chunk without its buffer".into())),
        }
    }
}

impl Drop for DeviceChunk {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            // The pool's channel holds every buffer it made, so this never
            // blocks; it fails only when the pool is gone, and the buffer
            // is then freed here.
            let _ = self.home.send(b);
        }
    }
}

/// Whether GPU `device` is among the GPUs `selection` chooses for every one
/// of `paths` (a table's files, maybe in several tablespaces): `Err` says
/// why not, for the report's "pread (cuFile: ...)".
pub(crate) fn gpudirect_choice(
    device: usize,
    paths: &[&std::path::Path],
    selection: &crate::GpuSelection,
) -> Result<(), String> {
    use gpupg_topology::{GpuId, Selector, Sysfs, Topology};
    let ids: Vec<GpuId> = gpupg_gpu::probe::pci_locations()
        .map_err(|e| format!("the GPUs' PCIe locations: {e}"))?
        .into_iter()
        .map(|g| GpuId {
            ordinal: g.ordinal,
            pci_bus_id: g.pci_bus_id,
            name: Some(g.name),
        })
        .collect();
    let topology = Topology::read(Sysfs::system(), &ids);
    let selector = Selector::new(&topology, selection.policy, selection.manual.as_ref());
    let mut parts: Vec<_> = paths.iter().map(|p| selector.for_path(p)).collect();
    let chosen = if parts.len() == 1 {
        parts.remove(0)
    } else {
        selector.intersect(format!("the {} relations' files", parts.len()), parts)
    };
    decide(device, &chosen)
}

/// `Ok` when `chosen` includes GPU `device`.
fn decide(device: usize, chosen: &gpupg_topology::Selection) -> Result<(), String> {
    if chosen.gpus.contains(&device) {
        return Ok(());
    }
    let policy = chosen.policy;
    Err(match &chosen.reason {
        Some(why) => format!(
            "GPU selection {policy} chooses no GPU for {}: {why}",
            chosen.target
        ),
        None => format!(
            "GPU selection {policy} chooses {} for {}, not GPU{device}",
            chosen.gpu_list(),
            chosen.target
        ),
    })
}

#[cfg(test)]
mod tests {
    use gpupg_topology::{fake::FakeSysfs, GpuId, Policy, Selector, Topology};

    use super::decide;

    /// GPU 0 and an NVMe drive under one PCIe switch, GPU 1 under another
    /// root port.
    #[test]
    fn the_nearest_gpu_reads_with_gpudirect_and_the_others_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSysfs::new(dir.path()).unwrap();
        fake.numa_online("0").unwrap();
        fake.gpu(
            "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0",
            0,
        )
        .unwrap();
        fake.gpu("pci0000:00/0000:00:02.0/0000:05:00.0", 0).unwrap();
        fake.nvme(
            "pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:01.0/0000:04:00.0",
            0,
            "nvme0",
            "Fake SSD",
            &[("nvme0n1", "259:0")],
        )
        .unwrap();
        let gpus = [
            GpuId {
                ordinal: 0,
                pci_bus_id: "0000:03:00.0".into(),
                name: None,
            },
            GpuId {
                ordinal: 1,
                pci_bus_id: "0000:05:00.0".into(),
                name: None,
            },
        ];
        let topo = Topology::read(fake.sysfs(), &gpus);
        let nvme0 = topo.sysfs().block_device("nvme0n1").unwrap();
        let optimal = Selector::new(&topo, Policy::Optimal, None).for_storage("nvme0n1", &nvme0);
        assert_eq!(decide(0, &optimal), Ok(()));
        let e = decide(1, &optimal).unwrap_err();
        assert_eq!(
            e,
            "GPU selection optimal chooses GPU0 for nvme0n1, not GPU1"
        );
        let system = Selector::new(&topo, Policy::System, None).for_storage("nvme0n1", &nvme0);
        assert_eq!(decide(1, &system), Ok(()));
        // A manual entry overrides the policy; `none` means no GPU-Direct.
        let manual = "nvme0=none".parse().unwrap();
        let none =
            Selector::new(&topo, Policy::Optimal, Some(&manual)).for_storage("nvme0n1", &nvme0);
        let e = decide(0, &none).unwrap_err();
        assert!(
            e.starts_with("GPU selection optimal chooses no GPU for nvme0n1: "),
            "{e}"
        );
        // Nothing in common between two tablespaces' drives.
        let sel = Selector::new(&topo, Policy::Optimal, None);
        let manual1 = "nvme0=gpu1".parse().unwrap();
        let other =
            Selector::new(&topo, Policy::Optimal, Some(&manual1)).for_storage("nvme0n1", &nvme0);
        let both = sel.intersect("2 relations", vec![optimal.clone(), other]);
        let e = decide(0, &both).unwrap_err();
        assert!(e.contains("no GPU is chosen for every one"), "{e}");
    }
}

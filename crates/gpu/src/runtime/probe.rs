//! What the machine offers: GPUs, driver, NVRTC, pinned memory and
//! GPUDirect Storage, for `gpupgparser info`. Never panics: a machine
//! without a GPU gets an error value that says what was looked for.

use std::ffi::{c_char, c_int, CStr};
use std::fmt::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::sys;
use serde::Serialize;

use crate::io::gds::{self, GdsDriver, GdsError, GdsFile};
use crate::runtime::cuda::{self, check, device_attr, Context};
use crate::runtime::error::GpuError;
use crate::runtime::pinned::PinnedBuffer;

/// Bytes of pinned memory `devices()` tries to allocate.
pub const PINNED_PROBE_BYTES: usize = 64 << 20;

/// One GPU.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// The CUDA ordinal (after `CUDA_VISIBLE_DEVICES`).
    pub ordinal: usize,
    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// e.g. "9.0".
    pub compute_capability: String,
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
    /// Device memory in bytes.
    pub total_memory: u64,
    /// Free device memory in bytes, when probed.
    pub free_memory: u64,
    /// NVIDIA driver version from NVML (e.g. "580.159.04"), when available.
    pub driver_version: Option<String>,
    /// CUDA version the driver supports (e.g. "13.0").
    pub cuda_version: String,
    /// Path of the `libcuda` loaded.
    pub driver_library: String,
    /// NVRTC version and library, or why it is missing.
    pub nvrtc_version: Option<String>,
    /// Path of the NVRTC library loaded.
    pub nvrtc_library: Option<String>,
    /// Why NVRTC could not be loaded.
    pub nvrtc_error: Option<String>,
    /// Whether page-locked memory can be had.
    pub pinned: PinnedProbe,
}

/// Whether page-locked host memory can be had.
#[derive(Debug, Clone, Serialize)]
pub struct PinnedProbe {
    /// Whether the test allocation succeeded.
    pub ok: bool,
    /// Bytes of the test allocation.
    pub tested_bytes: u64,
    /// `RLIMIT_MEMLOCK` soft limit (None: unlimited).
    pub memlock_limit: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// NVIDIA driver version through NVML, if libnvidia-ml can be opened.
fn nvml_driver_version() -> Option<String> {
    // SAFETY: NVML's documented C API; the library stays loaded (leaked)
    // because NVML keeps state until nvmlShutdown, which we never need.
    unsafe {
        let lib = libloading::Library::new("libnvidia-ml.so.1")
            .or_else(|_| libloading::Library::new("/usr/local/nvidia/lib64/libnvidia-ml.so.1"))
            .ok()?;
        let init: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
            lib.get(b"nvmlInit_v2\0").ok()?;
        let get: libloading::Symbol<unsafe extern "C" fn(*mut c_char, u32) -> c_int> =
            lib.get(b"nvmlSystemGetDriverVersion\0").ok()?;
        if init() != 0 {
            return None;
        }
        let mut buf = [0 as c_char; 96];
        let r = get(buf.as_mut_ptr(), buf.len() as u32);
        let v = (r == 0).then(|| CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
        std::mem::forget(lib);
        v
    }
}

fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur)
}

/// Number of CUDA devices the driver sees, without probing them (cheap:
/// for validating a device ordinal). `Err` when no driver or no device is
/// usable.
pub fn device_count() -> Result<usize, GpuError> {
    cuda::driver()?;
    let mut count = 0;
    check(
        // SAFETY: driver initialized; out-pointer.
        unsafe { sys::cuDeviceGetCount(&mut count) },
        "cuDeviceGetCount",
        0,
    )?;
    Ok(count.max(0) as usize)
}

/// Device `ordinal`'s primary context, kept alive while this (or a clone)
/// is held.
///
/// The driver destroys a primary context when its last user releases it,
/// and making it again costs a tenth of a second or more. An export holds
/// one from its probe to its end, so its decoders do not make the context
/// again; a process that loads table after table (the store server) holds
/// one for its life.
#[derive(Debug, Clone)]
pub struct DeviceHold {
    ctx: Arc<Context>,
    name: String,
}

impl DeviceHold {
    /// Retains device `ordinal`'s primary context. Checks that the driver
    /// sees the device and that NVRTC (which builds the kernels) loads.
    pub fn new(ordinal: usize) -> Result<DeviceHold, GpuError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(GpuError::NoDevice(Some(format!(
                "GPU {ordinal} does not exist (this machine has {count} GPU(s))"
            ))));
        }
        cuda::nvrtc_version()?;
        let ctx = Context::new(ordinal)?;
        let name = device_name(&ctx)?;
        Ok(DeviceHold { ctx, name })
    }

    /// The CUDA ordinal held.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal
    }

    /// The device's name ("NVIDIA H100 80GB HBM3").
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The name of the device of `ctx` ("NVIDIA H100 80GB HBM3").
fn device_name(ctx: &Context) -> Result<String, GpuError> {
    let mut name = [0 as c_char; 256];
    check(
        // SAFETY: buffer of the stated length.
        unsafe { sys::cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, ctx.dev) },
        "cuDeviceGetName",
        ctx.ordinal,
    )?;
    // SAFETY: the driver NUL-terminates within the buffer.
    Ok(unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// Every GPU with its properties. `Err` when no driver or no device is
/// usable (the error says which and where it looked).
pub fn devices() -> Result<Vec<DeviceInfo>, GpuError> {
    let drv = cuda::driver()?.clone();
    let mut count = 0;
    check(
        // SAFETY: driver initialized; out-pointer.
        unsafe { sys::cuDeviceGetCount(&mut count) },
        "cuDeviceGetCount",
        0,
    )?;
    if count <= 0 {
        return Err(GpuError::NoDevice(None));
    }
    let (nvrtc_version, nvrtc_library, nvrtc_error) = match cuda::nvrtc_version() {
        Ok((a, b)) => (
            Some(format!("{a}.{b}")),
            cuda::nvrtc_lib().ok().map(|l| l.path.clone()),
            None,
        ),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let driver_version = nvml_driver_version();
    let mut out = Vec::new();
    for ordinal in 0..count as usize {
        let ctx = Context::new(ordinal)?;
        let a = |x| device_attr(ctx.dev, x, ordinal);
        use sys::CUdevice_attribute as A;
        let major = a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let sms = a(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let name = device_name(&ctx)?;
        let (free, total) = cuda::mem_info(ordinal)?;
        let pinned = match PinnedBuffer::new(PINNED_PROBE_BYTES) {
            Ok(_) => PinnedProbe {
                ok: true,
                tested_bytes: PINNED_PROBE_BYTES as u64,
                memlock_limit: memlock_limit(),
                error: None,
            },
            Err(e) => PinnedProbe {
                ok: false,
                tested_bytes: PINNED_PROBE_BYTES as u64,
                memlock_limit: memlock_limit(),
                error: Some(e.to_string()),
            },
        };
        out.push(DeviceInfo {
            ordinal,
            name,
            compute_capability: format!("{major}.{minor}"),
            multiprocessors: sms.max(0) as u32,
            total_memory: total as u64,
            free_memory: free as u64,
            driver_version: driver_version.clone(),
            cuda_version: version_string(drv.version),
            driver_library: drv.path.clone(),
            nvrtc_version: nvrtc_version.clone(),
            nvrtc_library: nvrtc_library.clone(),
            nvrtc_error: nvrtc_error.clone(),
            pinned,
        });
    }
    Ok(out)
}

/// A GPU's CUDA ordinal, name and PCI bus id: what gpupg-topology needs to
/// place it in the PCIe tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciLocation {
    /// The CUDA ordinal (after `CUDA_VISIBLE_DEVICES`).
    pub ordinal: usize,
    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// `cuDeviceGetPCIBusId`'s `DDDD:BB:DD.F` (upper-case hex, e.g.
    /// `0000:3B:00.0`). The ordinal is the one this process sees, after
    /// `CUDA_VISIBLE_DEVICES`; the bus id names the physical device.
    pub pci_bus_id: String,
}

/// Every GPU's ordinal, name and PCI bus id. Cheap next to [`devices`]: it
/// creates no context and allocates nothing. `Err` when no driver or no
/// device is usable.
pub fn pci_locations() -> Result<Vec<PciLocation>, GpuError> {
    let count = device_count()?;
    if count == 0 {
        return Err(GpuError::NoDevice(None));
    }
    let mut out = Vec::with_capacity(count);
    for ordinal in 0..count {
        let mut dev = 0;
        check(
            // SAFETY: driver initialized (device_count), ordinal below the count.
            unsafe { sys::cuDeviceGet(&mut dev, ordinal as i32) },
            "cuDeviceGet",
            ordinal,
        )?;
        let mut name = [0 as c_char; 256];
        check(
            // SAFETY: buffer of the stated length; valid device handle.
            unsafe { sys::cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev) },
            "cuDeviceGetName",
            ordinal,
        )?;
        // "DDDD:BB:DD.F" needs 13 bytes; the driver NUL-terminates within
        // the length it is given.
        let mut bus = [0 as c_char; 64];
        check(
            // SAFETY: buffer of the stated length; valid device handle.
            unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), bus.len() as i32, dev) },
            "cuDeviceGetPCIBusId",
            ordinal,
        )?;
        // SAFETY: both buffers were NUL-terminated by the driver.
        let (name, bus) = unsafe {
            (
                CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                CStr::from_ptr(bus.as_ptr()).to_string_lossy().into_owned(),
            )
        };
        out.push(PciLocation {
            ordinal,
            name,
            pci_bus_id: bus,
        });
    }
    Ok(out)
}

/// What a GPUDirect Storage (cuFile) check found, step by step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GdsStatus {
    /// Where libcufile was loaded from.
    pub library: Option<String>,
    /// `cuFileDriverOpen` succeeded.
    pub driver_opened: bool,
    /// A file opened with O_DIRECT in the directory.
    pub o_direct: bool,
    /// `cuFileHandleRegister` succeeded on it.
    pub registered: bool,
    /// `properties.allow_compat_mode` of the cuFile configuration, when it
    /// could be read: with it, cuFile falls back to POSIX I/O.
    pub compat_mode: Option<bool>,
    /// Each step's outcome in words.
    pub steps: Vec<String>,
}

/// Checks whether GPUDirect Storage can register a file under `dir`:
/// loads cuFile, opens its driver, creates a temporary file, opens it with
/// O_DIRECT and registers it (through [`crate::io::gds`]). Reports each step;
/// never fails.
pub fn check_gds(dir: &Path) -> GdsStatus {
    let mut st = GdsStatus {
        compat_mode: gds::cufile_config_compat_mode(),
        ..GdsStatus::default()
    };
    let driver = match GdsDriver::open(0) {
        Ok(d) => d,
        Err(e) => {
            match &e {
                GdsError::Cuda(g) => st.steps.push(format!("CUDA: {g}")),
                GdsError::NoLibrary(m) => st.steps.push(m.clone()),
                GdsError::MissingSymbol { library, .. } => {
                    st.library = Some(library.clone());
                    st.steps.push(format!("loaded {library}"));
                    st.steps.push("libcufile lacks the expected symbols".into());
                }
                GdsError::CuFile { .. } => {
                    if let Some(p) = gds::loaded_library_path() {
                        st.library = Some(p.to_string());
                        st.steps.push(format!("loaded {p}"));
                    }
                    st.steps.push(e.to_string());
                }
                other => st.steps.push(other.to_string()),
            }
            return st;
        }
    };
    st.library = Some(driver.library_path().to_string());
    st.steps.push(format!("loaded {}", driver.library_path()));
    st.driver_opened = true;
    st.steps.push("cuFileDriverOpen: ok".into());
    let path = dir.join(format!(".gpupgparser-gds-check-{}", std::process::id()));
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
    {
        st.steps.push(format!("creating {}: {e}", path.display()));
        return st;
    }
    match GdsFile::open(&driver, &path) {
        Ok(f) => {
            st.o_direct = true;
            st.steps
                .push(format!("open({}, O_DIRECT): ok", path.display()));
            st.registered = true;
            st.steps.push(format!(
                "cuFileHandleRegister: ok{}",
                match st.compat_mode {
                    Some(true) =>
                        " (compatibility mode allowed: I/O may go through the page cache)",
                    Some(false) => " (GDS mode: compatibility mode off)",
                    None => "",
                }
            ));
            drop(f);
        }
        Err(GdsError::CuFile {
            code, cuda_code, ..
        }) => {
            st.o_direct = true;
            st.steps
                .push(format!("open({}, O_DIRECT): ok", path.display()));
            st.steps.push(format!(
                "cuFileHandleRegister: {}",
                gds::describe_cufile(code, cuda_code)
            ));
        }
        Err(e) => st.steps.push(e.to_string()),
    }
    let _ = std::fs::remove_file(&path);
    st
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Human-readable report of the GPUs (and GDS when `check_gds` names a
/// directory), for `gpupgparser info`. On a machine without a GPU it says
/// so and why.
pub fn info_report(check_gds_dir: Option<&Path>) -> String {
    let mut s = String::new();
    match devices() {
        Err(e) => {
            let _ = writeln!(s, "GPU: none usable ({e})");
            let _ = writeln!(s, "The CPU engine will be used.");
        }
        Ok(devs) => {
            for d in &devs {
                let _ = writeln!(
                    s,
                    "GPU {}: {} (compute capability {}, {} multiprocessors)",
                    d.ordinal, d.name, d.compute_capability, d.multiprocessors
                );
                let _ = writeln!(
                    s,
                    "  memory: {} total, {} free",
                    gib(d.total_memory),
                    gib(d.free_memory)
                );
                let _ = writeln!(
                    s,
                    "  driver: {} (CUDA {}), {}",
                    d.driver_version.as_deref().unwrap_or("version unknown"),
                    d.cuda_version,
                    d.driver_library
                );
                match (&d.nvrtc_version, &d.nvrtc_error) {
                    (Some(v), _) => {
                        let _ = writeln!(
                            s,
                            "  NVRTC: {v}, {}",
                            d.nvrtc_library.as_deref().unwrap_or("?")
                        );
                    }
                    (None, Some(e)) => {
                        let _ = writeln!(s, "  NVRTC: unavailable ({e})");
                    }
                    _ => {}
                }
                let limit = match d.pinned.memlock_limit {
                    None => "no RLIMIT_MEMLOCK limit".to_string(),
                    Some(l) => format!("RLIMIT_MEMLOCK {}", gib(l)),
                };
                if d.pinned.ok {
                    let _ = writeln!(
                        s,
                        "  pinned host memory: yes ({} MiB test allocation, {limit})",
                        d.pinned.tested_bytes >> 20
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "  pinned host memory: NO ({}; {limit})",
                        d.pinned.error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
    }
    if let Some(dir) = check_gds_dir {
        let g = check_gds(dir);
        let verdict = if g.registered {
            "a file can be registered"
        } else if g.driver_opened {
            "the driver opens but a file cannot be registered"
        } else {
            "not available"
        };
        let _ = writeln!(s, "GPUDirect Storage under {}: {verdict}", dir.display());
        for step in &g.steps {
            let _ = writeln!(s, "  {step}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without libcuda (CI), the probe is an error value, not
    /// a panic; with a GPU it lists devices.
    #[test]
    fn probe_never_panics() {
        match devices() {
            Ok(d) => assert!(!d.is_empty()),
            Err(e) => {
                assert!(
                    e.is_unavailable() || matches!(e, GpuError::Cuda { .. }),
                    "{e}"
                );
                let text = e.to_string();
                assert!(!text.is_empty());
                eprintln!("no GPU here: {text}");
            }
        }
        let r = info_report(None);
        assert!(r.starts_with("GPU"), "{r}");
    }

    #[test]
    fn no_driver_names_where_it_looked() {
        let libcuda_anywhere = [
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            "/usr/local/nvidia/lib64/libcuda.so.1",
        ]
        .iter()
        .any(|p| Path::new(p).exists());
        if libcuda_anywhere {
            eprintln!("skipped: this machine has a CUDA driver");
            return;
        }
        match cuda::driver() {
            Err(GpuError::NoDriver { looked_in, .. }) => {
                assert!(looked_in.contains("libcuda.so.1"));
                assert!(looked_in.contains("/usr/local/nvidia/lib64"));
            }
            other => panic!("expected NoDriver, got {other:?}"),
        }
        // Every entry point reports the same error instead of panicking.
        assert!(matches!(
            PinnedBuffer::new(1),
            Err(GpuError::NoDriver { .. })
        ));
        let schema = Arc::new(
            gpupg_decode::OutputSchema::new(&[], &gpupg_decode::TypeOptions::default()).unwrap(),
        );
        assert!(matches!(
            crate::GpuDecoder::new(0, schema),
            Err(GpuError::NoDriver { .. })
        ));
        let g = check_gds(Path::new("/tmp"));
        assert!(!g.registered && !g.driver_opened);
        assert!(info_report(Some(Path::new("/tmp"))).contains("none usable"));
    }

    /// Bus ids for gpupg-topology: an error value without a driver, the
    /// `DDDD:BB:DD.F` form with one.
    #[test]
    fn pci_locations_never_panic() {
        match pci_locations() {
            Ok(l) => {
                assert!(!l.is_empty());
                for (i, g) in l.iter().enumerate() {
                    assert_eq!(g.ordinal, i);
                    assert_eq!(g.pci_bus_id.matches(':').count(), 2, "{g:?}");
                    assert!(g.pci_bus_id.contains('.'), "{g:?}");
                }
            }
            Err(e) => assert!(
                e.is_unavailable() || matches!(e, GpuError::Cuda { .. }),
                "{e}"
            ),
        }
    }

    #[test]
    fn versions_print() {
        assert_eq!(version_string(13000), "13.0");
        assert_eq!(version_string(12080), "12.8");
    }
}

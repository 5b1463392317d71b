//! Run-time compilation of the kernels with NVRTC, to a cubin for the exact
//! architecture of the device, with a disk cache.
//!
//! Why cubin and not PTX: PTX made by an NVRTC newer than the driver fails
//! to load (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`), while a cubin for the
//! device's own `sm_XY` needs no JIT at all. PTX is only the fallback for a
//! device newer than NVRTC knows, where the driver (then necessarily newer
//! than NVRTC) can JIT it.

use std::ffi::{c_char, CStr, CString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cudarc::nvrtc::sys as nv;
use serde::Serialize;

use crate::runtime::cuda;
use crate::runtime::error::GpuError;

/// The kernel sources, embedded in the binary.
pub const KERNEL_SOURCE: &str = concat!(
    include_str!("../../kernels/decode.cu"),
    include_str!("../../kernels/heap.cu")
);

/// The headers the kernel files include, by the name they include them
/// under: `common.cuh` (typedefs and macros, in every kernel file),
/// `jsonb.cuh` (jsonb to text, in heap.cu), `array.cuh` (arrays to
/// array_send's format, in heap.cu) and `inflate.cuh` (pglz and LZ4
/// decompression of inline values, in heap.cu). Given to NVRTC as
/// in-memory headers, and hashed into the cache key with the source.
pub const KERNEL_HEADERS: [(&str, &str); 4] = [
    ("common.cuh", include_str!("../../kernels/common.cuh")),
    ("jsonb.cuh", include_str!("../../kernels/jsonb.cuh")),
    ("array.cuh", include_str!("../../kernels/array.cuh")),
    ("inflate.cuh", include_str!("../../kernels/inflate.cuh")),
];

/// What the compiled image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ImageKind {
    /// Machine code for the device's own architecture.
    Cubin,
    /// PTX, for a device newer than NVRTC (the driver JITs it).
    Ptx,
}

/// A compiled module image.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The image's bytes.
    pub image: Vec<u8>,
    /// Cubin or PTX.
    pub kind: ImageKind,
    /// `sm_XY` it was built for.
    pub arch: String,
    /// Milliseconds spent compiling (0 when read from the cache).
    pub compile_ms: f64,
    /// Whether the image came from the disk cache.
    pub from_cache: bool,
    /// Where the cache file is (whether or not writing it succeeded).
    pub cache_path: Option<PathBuf>,
    /// NVRTC's log (warnings), if any.
    pub log: String,
}

/// FNV-1a, 64 bit: a stable hash (unlike `DefaultHasher`, which may change
/// between Rust releases) for cache keys and file checksums.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_parts(&[bytes])
}

/// [`fnv1a`] of the concatenation of `parts`, without concatenating them.
fn fnv1a_parts(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The cache directory: `$XDG_CACHE_HOME/gpupgparser/kernels`, else
/// `~/.cache/gpupgparser/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("gpupgparser/kernels"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/gpupgparser/kernels"))
}

/// Cache file name for a source, architecture and NVRTC version.
pub fn cache_file_name(source: &str, arch: &str, kind: ImageKind, nvrtc: (i32, i32)) -> String {
    let ext = match kind {
        ImageKind::Cubin => "cubin",
        ImageKind::Ptx => "ptx",
    };
    format!(
        "decode-{arch}-nvrtc{}.{}-{:016x}.{ext}",
        nvrtc.0,
        nvrtc.1,
        fnv1a_parts(&[
            source.as_bytes(),
            KERNEL_HEADERS[0].1.as_bytes(),
            KERNEL_HEADERS[1].1.as_bytes(),
            KERNEL_HEADERS[2].1.as_bytes(),
            KERNEL_HEADERS[3].1.as_bytes(),
        ])
    )
}

const MAGIC: &[u8; 12] = b"GPUPGKERNEL1";

/// Cache file contents: magic, length, checksum, image. A file that does
/// not check out (truncated, corrupt, another format) reads as absent.
pub fn encode_cache(image: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(image.len() + 28);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&(image.len() as u64).to_le_bytes());
    v.extend_from_slice(&fnv1a(image).to_le_bytes());
    v.extend_from_slice(image);
    v
}

/// The image in a cache file, if the file is intact.
pub fn decode_cache(file: &[u8]) -> Option<Vec<u8>> {
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    let img = rest.get(16..)?;
    (img.len() == len && fnv1a(img) == sum).then(|| img.to_vec())
}

/// Writes `bytes` to `path` atomically (temporary file in the same
/// directory, then rename), so concurrent processes never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kernel"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn nvrtc_err(what: &str, r: nv::nvrtcResult) -> GpuError {
    // SAFETY: NVRTC returns a static string for any result code.
    let s = unsafe {
        let p = nv::nvrtcGetErrorString(r);
        if p.is_null() {
            format!("{r:?}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    GpuError::Nvrtc {
        log: format!("{what}: {s}"),
    }
}

/// Architectures this NVRTC can make cubins for (e.g. 75, 80, 90, ...).
pub fn supported_archs() -> Result<Vec<i32>, GpuError> {
    cuda::nvrtc_lib()?;
    let mut n = 0;
    // SAFETY: library loaded; out-pointer.
    let r = unsafe { nv::nvrtcGetNumSupportedArchs(&mut n) };
    if r != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err("nvrtcGetNumSupportedArchs", r));
    }
    let mut v = vec![0i32; n.max(0) as usize];
    // SAFETY: v has room for n entries.
    let r = unsafe { nv::nvrtcGetSupportedArchs(v.as_mut_ptr()) };
    if r != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err("nvrtcGetSupportedArchs", r));
    }
    Ok(v)
}

/// Compiles `source` for compute capability `cc` (major, minor), reading
/// and filling the disk cache in `cache` (`None`: no caching).
pub fn compile(source: &str, cc: (i32, i32), cache: Option<&Path>) -> Result<Compiled, GpuError> {
    let version = cuda::nvrtc_version()?;
    let want = cc.0 * 10 + cc.1;
    let archs = supported_archs()?;
    let (kind, arch_num) = if archs.contains(&want) {
        (ImageKind::Cubin, want)
    } else {
        // A device newer than this NVRTC: PTX for the newest architecture
        // it knows, for the (newer) driver to JIT.
        let best = archs.iter().copied().filter(|&a| a <= want).max();
        match best {
            Some(a) => (ImageKind::Ptx, a),
            None => {
                return Err(GpuError::Nvrtc {
                    log: format!(
                        "NVRTC {}.{} cannot compile for sm_{want} (supports {archs:?})",
                        version.0, version.1
                    ),
                })
            }
        }
    };
    let arch = format!("sm_{arch_num}");
    let cache_path = cache.map(|d| d.join(cache_file_name(source, &arch, kind, version)));
    if let Some(p) = &cache_path {
        if let Some(img) = std::fs::read(p).ok().and_then(|f| decode_cache(&f)) {
            return Ok(Compiled {
                image: img,
                kind,
                arch,
                compile_ms: 0.0,
                from_cache: true,
                cache_path,
                log: String::new(),
            });
        }
    }
    let t = Instant::now();
    let (image, log) = compile_uncached(source, &arch, kind)?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(p) = &cache_path {
        // A cache that cannot be written (read-only home) only costs the
        // next run a compile.
        let _ = write_atomic(p, &encode_cache(&image));
    }
    Ok(Compiled {
        image,
        kind,
        arch,
        compile_ms,
        from_cache: false,
        cache_path,
        log,
    })
}

fn compile_uncached(
    source: &str,
    arch: &str,
    kind: ImageKind,
) -> Result<(Vec<u8>, String), GpuError> {
    let src = CString::new(source).map_err(|_| GpuError::Nvrtc {
        log: "kernel source contains a NUL byte".into(),
    })?;
    let name = c"decode.cu";
    let mut texts = Vec::with_capacity(KERNEL_HEADERS.len());
    let mut names = Vec::with_capacity(KERNEL_HEADERS.len());
    for (header, text) in KERNEL_HEADERS {
        let nul = |_| GpuError::Nvrtc {
            log: format!("kernels/{header} contains a NUL byte"),
        };
        texts.push(CString::new(text).map_err(nul)?);
        names.push(CString::new(header).map_err(nul)?);
    }
    let headers: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr()).collect();
    let include_names: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let mut prog: nv::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid C strings; the headers' text and name arrays both of
    // KERNEL_HEADERS.len() entries, all alive until the call returns (NVRTC
    // copies them).
    let r = unsafe {
        nv::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            KERNEL_HEADERS.len() as i32,
            headers.as_ptr(),
            include_names.as_ptr(),
        )
    };
    if r != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err("nvrtcCreateProgram", r));
    }
    struct Prog(nv::nvrtcProgram);
    impl Drop for Prog {
        fn drop(&mut self) {
            // SAFETY: created above, destroyed once.
            unsafe {
                let _ = nv::nvrtcDestroyProgram(&mut self.0);
            }
        }
    }
    let prog = Prog(prog);
    let arch_opt = match kind {
        ImageKind::Cubin => format!("--gpu-architecture={arch}"),
        ImageKind::Ptx => format!("--gpu-architecture=compute_{}", &arch[3..]),
    };
    // No fast-math: the numeric -> float64 path relies on IEEE division and
    // multiplication being correctly rounded.
    let opts: Vec<CString> = [arch_opt.as_str(), "-std=c++17", "--device-int128"]
        .iter()
        .filter_map(|s| CString::new(*s).ok())
        .collect();
    let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: option pointers live until the call returns.
    let r = unsafe { nv::nvrtcCompileProgram(prog.0, ptrs.len() as i32, ptrs.as_ptr()) };
    let log = program_log(prog.0);
    if r != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(GpuError::Nvrtc {
            log: format!("compiling the kernels for {arch} failed:\n{log}"),
        });
    }
    let mut size = 0usize;
    // SAFETY: compiled program; out-pointer.
    let r = unsafe {
        match kind {
            ImageKind::Cubin => nv::nvrtcGetCUBINSize(prog.0, &mut size),
            ImageKind::Ptx => nv::nvrtcGetPTXSize(prog.0, &mut size),
        }
    };
    if r != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err("nvrtcGetCUBINSize", r));
    }
    let mut image = vec![0u8; size];
    // SAFETY: image has `size` bytes as NVRTC asked.
    let r = unsafe {
        match kind {
            ImageKind::Cubin => nv::nvrtcGetCUBIN(prog.0, image.as_mut_ptr() as *mut c_char),
            ImageKind::Ptx => nv::nvrtcGetPTX(prog.0, image.as_mut_ptr() as *mut c_char),
        }
    };
    if r != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err("nvrtcGetCUBIN", r));
    }
    Ok((image, log))
}

fn program_log(prog: nv::nvrtcProgram) -> String {
    let mut n = 0usize;
    // SAFETY: valid program; out-pointer.
    if unsafe { nv::nvrtcGetProgramLogSize(prog, &mut n) } != nv::nvrtcResult::NVRTC_SUCCESS
        || n == 0
    {
        return String::new();
    }
    let mut buf = vec![0u8; n];
    // SAFETY: buf has n bytes.
    if unsafe { nv::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) }
        != nv::nvrtcResult::NVRTC_SUCCESS
    {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip_and_corruption() {
        let img = b"\x7fELF some cubin bytes".to_vec();
        let f = encode_cache(&img);
        assert_eq!(decode_cache(&f).as_deref(), Some(img.as_slice()));
        // Truncated, flipped and foreign files read as absent.
        assert!(decode_cache(&f[..f.len() - 1]).is_none());
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_cache(&bad).is_none());
        assert!(decode_cache(b"not a cache file").is_none());
        assert!(decode_cache(b"").is_none());
    }

    #[test]
    fn cache_key_changes_with_source_arch_and_version() {
        let a = cache_file_name("x", "sm_90", ImageKind::Cubin, (13, 0));
        assert_ne!(a, cache_file_name("y", "sm_90", ImageKind::Cubin, (13, 0)));
        assert_ne!(a, cache_file_name("x", "sm_80", ImageKind::Cubin, (13, 0)));
        assert_ne!(a, cache_file_name("x", "sm_90", ImageKind::Cubin, (12, 8)));
        assert_ne!(a, cache_file_name("x", "sm_90", ImageKind::Ptx, (13, 0)));
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/k.cubin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    /// Compiles the real kernels when an NVRTC library can be found (no GPU
    /// needed); otherwise says why it skipped.
    #[test]
    fn kernels_compile_with_nvrtc_when_available() {
        if let Err(e) = cuda::nvrtc_lib() {
            eprintln!("skipped: {e}");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let c = match compile(KERNEL_SOURCE, (9, 0), Some(d.path())) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.kind, ImageKind::Cubin);
        assert!(!c.from_cache);
        assert!(c.image.starts_with(b"\x7fELF"), "a cubin is an ELF file");
        eprintln!(
            "compiled for {} in {:.0} ms, {} bytes{}",
            c.arch,
            c.compile_ms,
            c.image.len(),
            if c.log.is_empty() {
                String::new()
            } else {
                format!("\nlog: {}", c.log)
            }
        );
        let again = compile(KERNEL_SOURCE, (9, 0), Some(d.path())).unwrap();
        assert!(again.from_cache);
        assert_eq!(again.image, c.image);
        // A corrupt cache file is recompiled.
        let p = c.cache_path.clone().unwrap();
        std::fs::write(&p, b"garbage").unwrap();
        let third = compile(KERNEL_SOURCE, (9, 0), Some(d.path())).unwrap();
        assert!(!third.from_cache);
        assert!(decode_cache(&std::fs::read(&p).unwrap()).is_some());
    }
}

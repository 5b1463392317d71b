//! CUDA IPC: sharing device memory with other processes without a copy.
//!
//! The process that owns an allocation exports an [`IpcHandle`] for it
//! ([`export_allocation`]); another process of the same host opens the
//! handle ([`MappedRegion::open`]) and gets the same device memory mapped
//! into its own address space. Handles name whole allocations (the base
//! address of a `cuMemAlloc`), so a buffer inside a slab is shared as the
//! slab's handle plus the buffer's offset from the slab's base
//! ([`Allocation::offset_of`]).
//!
//! The driver refuses to open a handle in the process that exported it,
//! and a handle stays valid only while its allocation lives: the exporting
//! process must keep the memory until every importer is done with it.
//!
//! ```no_run
//! use gpupg_gpu::ipc::{IpcHandle, MappedRegion};
//!
//! # fn main() -> Result<(), gpupg_gpu::GpuError> {
//! // In the consuming process, with the handle and offsets from a manifest:
//! let handle = IpcHandle::from_hex(&"00".repeat(64))?;
//! let region = MappedRegion::open(0, &handle)?;
//! let mut first = [0u8; 8];
//! region.read(0, &mut first)?;
//! println!("{} bytes mapped at {:#x}", region.len(), region.ptr());
//! # Ok(()) }
//! ```

use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

use cudarc::driver::sys;

use crate::runtime::cuda::{check, describe, AllocKind, Context, DeviceBuffer, Stream};
use crate::runtime::error::GpuError;

/// Bytes of a CUDA IPC memory handle (`CUipcMemHandle`, the same as the
/// runtime's `cudaIpcMemHandle_t`).
pub const IPC_HANDLE_BYTES: usize = 64;

/// An opaque CUDA IPC memory handle: 64 bytes that another process turns
/// back into a mapping of the same allocation. Written as 128 lowercase hex
/// digits in manifests (`bytes.fromhex` in Python gives what CuPy's
/// `ipcOpenMemHandle` takes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpcHandle(pub [u8; IPC_HANDLE_BYTES]);

impl IpcHandle {
    /// The handle as 128 lowercase hex digits.
    ///
    /// ```
    /// use gpupg_gpu::ipc::IpcHandle;
    /// let h = IpcHandle([0xab; 64]);
    /// assert_eq!(h.to_hex(), "ab".repeat(64));
    /// ```
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(IPC_HANDLE_BYTES * 2);
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s
    }

    /// Parses 128 hex digits (either case; surrounding white space is
    /// ignored).
    ///
    /// ```
    /// use gpupg_gpu::ipc::IpcHandle;
    /// let h = IpcHandle::from_hex(&"0F".repeat(64)).unwrap();
    /// assert_eq!(h.0[0], 15);
    /// assert!(IpcHandle::from_hex("abc").is_err());
    /// ```
    pub fn from_hex(text: &str) -> Result<IpcHandle, GpuError> {
        let text = text.trim();
        if text.len() != IPC_HANDLE_BYTES * 2 {
            return Err(GpuError::IpcHandle(format!(
                "expected {} hex digits, got {} characters",
                IPC_HANDLE_BYTES * 2,
                text.chars().count()
            )));
        }
        let mut out = [0u8; IPC_HANDLE_BYTES];
        let digits = text.as_bytes();
        for (i, byte) in out.iter_mut().enumerate() {
            let hi = hex_digit(digits[2 * i]);
            let lo = hex_digit(digits[2 * i + 1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
                _ => {
                    return Err(GpuError::IpcHandle(format!(
                        "not a hex digit at position {}",
                        if hi.is_none() { 2 * i } else { 2 * i + 1 }
                    )))
                }
            }
        }
        Ok(IpcHandle(out))
    }

    fn to_raw(self) -> sys::CUipcMemHandle {
        sys::CUipcMemHandle {
            reserved: self.0.map(|b| b as std::ffi::c_char),
        }
    }

    fn from_raw(raw: &sys::CUipcMemHandle) -> IpcHandle {
        IpcHandle(raw.reserved.map(|c| c as u8))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for IpcHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpcHandle({})", self.to_hex())
    }
}

/// The allocation (`cuMemAlloc`) a device buffer lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The CUDA ordinal of the allocation's device.
    pub device: usize,
    /// Device address of the allocation's first byte.
    pub base: u64,
    /// Bytes allocated, as the driver reports them.
    pub size: usize,
}

impl Allocation {
    /// Offset of `buf` from the allocation's base (what an importer adds to
    /// the address it maps the handle at).
    pub fn offset_of(&self, buf: &DeviceBuffer) -> u64 {
        buf.ptr() - self.base
    }
}

/// The allocation holding `buf`, from `cuMemGetAddressRange`.
pub fn allocation_of(buf: &DeviceBuffer) -> Result<Allocation, GpuError> {
    let ctx = buf.context();
    ctx.bind()?;
    let (base, size) = address_range(ctx, buf.ptr())?;
    Ok(Allocation {
        device: ctx.ordinal,
        base,
        size,
    })
}

/// The allocation holding `buf` and an IPC handle for it. Only plain
/// (`cuMemAlloc`) memory can be exported; stream-ordered pool memory is
/// refused with [`GpuError::NotExportable`].
pub fn export_allocation(buf: &DeviceBuffer) -> Result<(IpcHandle, Allocation), GpuError> {
    if buf.kind() != AllocKind::Plain {
        return Err(GpuError::NotExportable {
            device: buf.device(),
            what: "it lives in a stream-ordered memory pool, not a plain allocation".into(),
        });
    }
    let allocation = allocation_of(buf)?;
    let mut raw = IpcHandle([0; IPC_HANDLE_BYTES]).to_raw();
    check(
        // SAFETY: the context is bound (allocation_of) and `base` is the start
        // of a live cuMemAlloc allocation of that context; out-pointer.
        unsafe { sys::cuIpcGetMemHandle(&mut raw, allocation.base) },
        "cuIpcGetMemHandle",
        allocation.device,
    )?;
    Ok((IpcHandle::from_raw(&raw), allocation))
}

fn address_range(ctx: &Context, ptr: u64) -> Result<(u64, usize), GpuError> {
    let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
    check(
        // SAFETY: the context is bound by the caller; out-pointers.
        unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr) },
        "cuMemGetAddressRange",
        ctx.ordinal,
    )?;
    Ok((base, size))
}

/// Another process's allocation mapped into this one through its IPC
/// handle; unmapped (`cuIpcCloseMemHandle`) on drop. The exporting process
/// must keep the allocation alive until then.
#[derive(Debug)]
pub struct MappedRegion {
    ptr: u64,
    len: usize,
    ctx: Arc<Context>,
}

// SAFETY: the mapping is a device address valid in the retained context,
// which every method binds before use.
unsafe impl Send for MappedRegion {}
// SAFETY: shared references only read the address or copy through the
// thread-safe driver API.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    /// Maps the allocation `handle` names on GPU `device` (peer access is
    /// enabled lazily when the allocation lives on another device). A
    /// malformed, foreign or stale handle, or one exported by this very
    /// process, gives [`GpuError::IpcHandle`] with the driver's reason.
    pub fn open(device: usize, handle: &IpcHandle) -> Result<MappedRegion, GpuError> {
        let ctx = Context::new(device)?;
        let mut ptr: sys::CUdeviceptr = 0;
        // SAFETY: the context is bound (Context::new); the handle is passed
        // by value and only interpreted by the driver; out-pointer.
        let r = unsafe {
            sys::cuIpcOpenMemHandle_v2(
                &mut ptr,
                handle.to_raw(),
                sys::CUipcMem_flags_enum::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
            )
        };
        match r {
            sys::CUresult::CUDA_SUCCESS => {}
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                return Err(GpuError::OutOfMemory { device, bytes: 0 })
            }
            other => {
                return Err(GpuError::IpcHandle(format!(
                    "cuIpcOpenMemHandle on device {device}: {} (a handle opens only in another \
                     process of this host while the exporting process keeps its allocation)",
                    describe(other)
                )))
            }
        }
        let mut region = MappedRegion { ptr, len: 0, ctx };
        // On failure `region` is dropped, which closes the mapping.
        region.len = address_range(&region.ctx, ptr)?.1;
        Ok(region)
    }

    /// The device address the allocation is mapped at in this process.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Bytes of the mapped allocation.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes (never, for a real allocation).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device the region is mapped on.
    pub fn device(&self) -> usize {
        self.ctx.ordinal
    }

    fn checked(&self, offset: u64, len: usize) -> Result<u64, GpuError> {
        let out = GpuError::OutOfRange {
            offset,
            len: len as u64,
            size: self.len as u64,
        };
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len as u64 => Ok(self.ptr + offset),
            _ => Err(out),
        }
    }

    /// Copies `dst.len()` bytes at `offset` of the region to the host.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), GpuError> {
        let src = self.checked(offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        self.ctx.bind()?;
        // SAFETY: bounds checked above; `dst` has dst.len() bytes;
        // synchronous copy.
        check(
            unsafe { sys::cuMemcpyDtoH_v2(dst.as_mut_ptr() as *mut c_void, src, dst.len()) },
            "cuMemcpyDtoH",
            self.ctx.ordinal,
        )
    }

    /// Copies `src` into the region at `offset`.
    pub fn write(&self, offset: u64, src: &[u8]) -> Result<(), GpuError> {
        let dst = self.checked(offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.ctx.bind()?;
        // SAFETY: bounds checked above; `src` has src.len() bytes;
        // synchronous copy.
        check(
            unsafe { sys::cuMemcpyHtoD_v2(dst, src.as_ptr() as *const c_void, src.len()) },
            "cuMemcpyHtoD",
            self.ctx.ordinal,
        )
    }

    /// Waits until every copy into the region has reached device memory.
    /// A copy from pageable host memory ([`MappedRegion::write`]) may
    /// return while the driver still moves the data; another process that
    /// reads the allocation next should be told only after this.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.ctx.synchronize()
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: the address came from cuIpcOpenMemHandle in this context
        // and is closed exactly once.
        unsafe {
            let _ = self.ctx.bind();
            let _ = sys::cuIpcCloseMemHandle(self.ptr);
        }
    }
}

/// A plain device allocation (`cuMemAlloc`) exported through CUDA IPC,
/// with host copies in and out: what a producer process hands to a
/// consumer (another process maps [`ExportableBuffer::handle`] with
/// [`MappedRegion::open`]), and what tests use to play that producer.
/// Freed on drop; the handle is valid only until then.
///
/// ```no_run
/// use gpupg_gpu::ipc::ExportableBuffer;
///
/// # fn main() -> Result<(), gpupg_gpu::GpuError> {
/// let buf = ExportableBuffer::alloc(0, 1 << 20)?;
/// buf.write(0, b"hello")?;
/// println!("--device 0 --ipc-handle {} --offset 0 --length 5", buf.handle().to_hex());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ExportableBuffer {
    // Dropped before the stream it was allocated with.
    buf: DeviceBuffer,
    handle: IpcHandle,
    allocation: Allocation,
    _stream: Stream,
}

impl ExportableBuffer {
    /// Allocates `bytes` (at least 1) of plain device memory on GPU
    /// `device` and exports it. A device that does not exist gives
    /// [`GpuError::NoDevice`]; no driver, [`GpuError::NoDriver`].
    pub fn alloc(device: usize, bytes: usize) -> Result<ExportableBuffer, GpuError> {
        let ctx = Context::new(device)?;
        let stream = Stream::new(&ctx)?;
        let buf = DeviceBuffer::alloc(&ctx, bytes, AllocKind::Plain, &stream)?;
        let (handle, allocation) = export_allocation(&buf)?;
        Ok(ExportableBuffer {
            buf,
            handle,
            allocation,
            _stream: stream,
        })
    }

    /// The IPC handle another process opens.
    pub fn handle(&self) -> IpcHandle {
        self.handle
    }

    /// The allocation: device, base address, size as the driver reports it.
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// Bytes requested.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no bytes were requested.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The device.
    pub fn device(&self) -> usize {
        self.buf.device()
    }

    /// The device address in this process.
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }

    fn checked(&self, offset: u64, len: usize) -> Result<u64, GpuError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.buf.len() as u64 => Ok(self.buf.ptr() + offset),
            _ => Err(GpuError::OutOfRange {
                offset,
                len: len as u64,
                size: self.buf.len() as u64,
            }),
        }
    }

    /// Copies `src` into the buffer at `offset` and waits until it is in
    /// device memory (so another process reading next sees it).
    pub fn write(&self, offset: u64, src: &[u8]) -> Result<(), GpuError> {
        let dst = self.checked(offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let ctx = self.buf.context();
        ctx.bind()?;
        check(
            // SAFETY: bounds checked above; `src` has src.len() bytes and
            // outlives the call, which returns once the bytes are staged.
            unsafe { sys::cuMemcpyHtoD_v2(dst, src.as_ptr() as *const c_void, src.len()) },
            "cuMemcpyHtoD",
            ctx.ordinal,
        )?;
        ctx.synchronize()
    }

    /// Copies `dst.len()` bytes at `offset` of the buffer to the host.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), GpuError> {
        let src = self.checked(offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        let ctx = self.buf.context();
        ctx.bind()?;
        // SAFETY: bounds checked above; `dst` has dst.len() bytes; the copy
        // is synchronous for device-to-host.
        check(
            unsafe { sys::cuMemcpyDtoH_v2(dst.as_mut_ptr() as *mut c_void, src, dst.len()) },
            "cuMemcpyDtoH",
            ctx.ordinal,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut bytes = [0u8; IPC_HANDLE_BYTES];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 37) as u8;
        }
        let h = IpcHandle(bytes);
        let hex = h.to_hex();
        assert_eq!(hex.len(), 128);
        assert_eq!(IpcHandle::from_hex(&hex).unwrap(), h);
        assert_eq!(IpcHandle::from_hex(&hex.to_uppercase()).unwrap(), h);
        assert_eq!(IpcHandle::from_hex(&format!(" {hex}\n")).unwrap(), h);
    }

    #[test]
    fn bad_hex_is_a_clear_error() {
        let short = IpcHandle::from_hex("abcd").unwrap_err().to_string();
        assert_eq!(
            short,
            "invalid CUDA IPC handle: expected 128 hex digits, got 4 characters"
        );
        let mut bad = "0".repeat(128);
        bad.replace_range(77..78, "g");
        let e = IpcHandle::from_hex(&bad).unwrap_err().to_string();
        assert_eq!(e, "invalid CUDA IPC handle: not a hex digit at position 77");
        // Multi-byte characters count as characters, never split a digit.
        let e = IpcHandle::from_hex(&"é".repeat(64))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a hex digit at position 0"), "{e}");
    }

    #[test]
    fn open_without_a_gpu_is_an_error_not_a_panic() {
        if crate::devices().is_ok_and(|d| !d.is_empty()) {
            return;
        }
        let e = MappedRegion::open(0, &IpcHandle([0; IPC_HANDLE_BYTES])).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
    }

    #[test]
    fn exportable_buffer_without_a_gpu_is_an_error_not_a_panic() {
        if crate::devices().is_ok_and(|d| !d.is_empty()) {
            return;
        }
        let e = ExportableBuffer::alloc(0, 4096).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
    }

    #[test]
    fn out_of_range_message() {
        let e = GpuError::OutOfRange {
            offset: 10,
            len: 8,
            size: 16,
        };
        assert_eq!(
            e.to_string(),
            "bytes 10..18 are outside the mapped region of 16 bytes"
        );
    }
}

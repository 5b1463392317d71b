//! Page-locked host buffers, so that COPY connections fill memory the GPU
//! can copy from at full PCIe speed (asynchronously), and a bounded pool of
//! them with the same blocking take / give protocol as the source's
//! `BufferPool`.

use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use cudarc::driver::sys;

use crate::runtime::cuda::{self, Context};
use crate::runtime::error::GpuError;

/// `CU_MEMHOSTALLOC_PORTABLE`: pinned for every context, so one pool serves
/// all devices. Deliberately *not* `CU_MEMHOSTALLOC_WRITECOMBINED` (what
/// cudarc's `alloc_pinned` asks for): write-combined memory is uncached for
/// the CPU, and the CPU reads these buffers (framing checks, CPU fallback),
/// which would be an order of magnitude slower.
const HOST_ALLOC_FLAGS: u32 = 0x01;

static PINNED_CTX: OnceLock<Result<Arc<Context>, String>> = OnceLock::new();

/// The context pinned allocations are made in (device 0's primary context;
/// portable allocations are usable from every context).
fn pinned_ctx() -> Result<Arc<Context>, GpuError> {
    match PINNED_CTX.get_or_init(|| Context::new(0).map_err(|e| e.to_string())) {
        Ok(c) => {
            c.bind()?;
            Ok(c.clone())
        }
        Err(e) => {
            // Report the driver's own error again when that is the cause.
            cuda::driver()?;
            Err(GpuError::Pinned(e.clone()))
        }
    }
}

/// A page-locked host buffer of fixed capacity with a fill length, usable
/// like a `Vec<u8>` that never reallocates. Freed on drop.
#[derive(Debug)]
pub struct PinnedBuffer {
    ptr: *mut u8,
    cap: usize,
    len: usize,
    _ctx: Arc<Context>,
}

// SAFETY: the buffer is exclusively owned memory; CUDA allows using and
// freeing pinned memory from any thread.
unsafe impl Send for PinnedBuffer {}
// SAFETY: shared access only reads.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// Allocates `capacity` bytes of pinned memory (zeroed once, so every
    /// byte of the capacity is initialized and `full_mut` is sound).
    pub fn new(capacity: usize) -> Result<PinnedBuffer, GpuError> {
        let ctx = pinned_ctx()?;
        let mut p: *mut c_void = std::ptr::null_mut();
        let n = capacity.max(1);
        // SAFETY: context bound; out-pointer.
        let r = unsafe { sys::cuMemHostAlloc(&mut p, n, HOST_ALLOC_FLAGS) };
        match r {
            sys::CUresult::CUDA_SUCCESS => {}
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                return Err(GpuError::Pinned(format!(
                    "cuMemHostAlloc of {n} bytes: out of memory (page-locked memory is limited by RLIMIT_MEMLOCK and physical memory)"
                )))
            }
            other => {
                return Err(GpuError::Pinned(format!(
                    "cuMemHostAlloc of {n} bytes: {}",
                    cuda::describe(other)
                )))
            }
        }
        // SAFETY: p points to n writable bytes just allocated.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, n) };
        Ok(PinnedBuffer {
            ptr: p as *mut u8,
            cap: capacity,
            len: 0,
            _ctx: ctx,
        })
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the bytes in use (after filling through [`Self::full_mut`]);
    /// clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.cap);
    }

    /// Forgets the contents.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends bytes; returns how many fitted.
    pub fn extend_from_slice(&mut self, b: &[u8]) -> usize {
        let n = b.len().min(self.cap - self.len);
        let start = self.len;
        self.full_mut()[start..start + n].copy_from_slice(&b[..n]);
        self.len += n;
        n
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: len <= cap, all bytes initialized at allocation.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes in use, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusive borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The whole capacity, for a reader to fill before `set_len`.
    pub fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: all cap bytes initialized at allocation; exclusive borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }

    /// The start of the buffer, for asynchronous copies (which must
    /// complete before the buffer is written again or dropped).
    pub(crate) fn full_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl AsRef<[u8]> for PinnedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for PinnedBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemHostAlloc; not used after this.
        unsafe {
            let _ = sys::cuMemFreeHost(self.ptr as *mut c_void);
        }
    }
}

/// Existing host memory page-locked in place (`cuMemHostRegister`), for
/// buffers that already exist (a `Vec` a COPY reader fills): copies from it
/// are then asynchronous and need no staging. Unregistered on drop.
#[derive(Debug)]
pub struct HostRegistration {
    ptr: *mut c_void,
    _ctx: Arc<Context>,
}

// SAFETY: the registration is a process-wide property of the pages.
unsafe impl Send for HostRegistration {}

impl HostRegistration {
    /// Page-locks `buf`.
    ///
    /// # Safety
    /// `buf` must stay allocated (not freed, not reallocated) for as long as
    /// the registration lives; dropping the registration first is required.
    pub unsafe fn new(buf: &[u8]) -> Result<HostRegistration, GpuError> {
        let ctx = pinned_ctx()?;
        let p = buf.as_ptr() as *mut c_void;
        advise_huge_pages(buf);
        // CU_MEMHOSTREGISTER_PORTABLE, as for our own pinned buffers.
        // SAFETY: `buf` is valid for its length, and stays allocated while
        // the registration lives (the caller's contract).
        let r = unsafe { sys::cuMemHostRegister_v2(p, buf.len().max(1), 0x01) };
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(GpuError::Pinned(format!(
                "cuMemHostRegister of {} bytes: {}",
                buf.len(),
                cuda::describe(r)
            )));
        }
        Ok(HostRegistration { ptr: p, _ctx: ctx })
    }
}

/// Asks the kernel for transparent huge pages on the 2 MiB-aligned part of
/// `buf` before it is page-locked: locking then pins one page per 2 MiB
/// instead of 512, which is most of what registering a large buffer costs.
/// Advice only: where huge pages are off nothing changes.
fn advise_huge_pages(buf: &[u8]) {
    const HUGE: usize = 2 << 20;
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (buf.as_ptr() as usize + buf.len()) & !(HUGE - 1);
    if end > start {
        // SAFETY: the range lies inside `buf`; MADV_HUGEPAGE changes no
        // contents.
        unsafe {
            libc::madvise(start as *mut c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        // SAFETY: registered in `new`.
        unsafe {
            let _ = sys::cuMemHostUnregister(self.ptr);
        }
    }
}

/// Whether `p` lies in page-locked memory known to CUDA (then copies from it
/// are asynchronous and need no staging).
pub(crate) fn is_pinned(p: *const u8) -> bool {
    let mut mem_type: u32 = 0;
    // SAFETY: querying an attribute of any address is allowed; failure
    // (unknown host memory) means "not pinned".
    let r = unsafe {
        sys::cuPointerGetAttribute(
            &mut mem_type as *mut u32 as *mut c_void,
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            p as sys::CUdeviceptr,
        )
    };
    r == sys::CUresult::CUDA_SUCCESS && mem_type == sys::CUmemorytype::CU_MEMORYTYPE_HOST as u32
}

/// A bounded pool of equal-sized pinned buffers: `take` blocks while all of
/// them are out, so memory stays at `count x capacity` whatever the table
/// size. Buffers are allocated lazily, on first need.
#[derive(Debug)]
pub struct PinnedPool {
    inner: Mutex<PoolState>,
    ready: Condvar,
    count: usize,
    capacity: usize,
}

#[derive(Debug)]
struct PoolState {
    free: Vec<PinnedBuffer>,
    allocated: usize,
}

impl PinnedPool {
    /// A pool of at most `count` buffers of `capacity` bytes each.
    pub fn new(count: usize, capacity: usize) -> PinnedPool {
        PinnedPool {
            inner: Mutex::new(PoolState {
                free: Vec::new(),
                allocated: 0,
            }),
            ready: Condvar::new(),
            count: count.max(1),
            capacity,
        }
    }

    /// Capacity of each buffer.
    pub fn buffer_capacity(&self) -> usize {
        self.capacity
    }

    /// Most buffers the pool hands out at once.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Takes a cleared buffer, waiting while all are in use.
    pub fn take(&self) -> Result<PinnedBuffer, GpuError> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(mut b) = st.free.pop() {
                b.clear();
                return Ok(b);
            }
            if st.allocated < self.count {
                st.allocated += 1;
                drop(st);
                return PinnedBuffer::new(self.capacity).inspect_err(|_| {
                    let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                    st.allocated -= 1;
                });
            }
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns a buffer to the pool.
    pub fn give(&self, buf: PinnedBuffer) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        st.free.push(buf);
        drop(st);
        self.ready.notify_one();
    }
}

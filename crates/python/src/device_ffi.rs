//! The C structs device memory leaves through: `ArrowDeviceArray` (the
//! Arrow C device data interface,
//! <https://arrow.apache.org/docs/format/CDeviceDataInterface.html>; arrow
//! 60 has no type for it and its `FFI_ArrowArray` cannot take foreign
//! pointers, so the structs are built here by hand) and DLPack's
//! `DLManagedTensor` / `DLManagedTensorVersioned`
//! (<https://dmlc.github.io/dlpack/latest/c_api.html>). Every struct
//! handed out holds an `Arc` of what owns the memory, dropped by its
//! release callback or deleter, so device memory lives as long as the
//! last consumer needs it.

use std::any::Any;
use std::ffi::{c_void, CStr};
use std::ptr::{null, null_mut, NonNull};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// `ARROW_DEVICE_CUDA` of the Arrow C device data interface.
pub const ARROW_DEVICE_CUDA: i32 = 2;
/// `kDLCUDA` of DLPack.
pub const DL_CUDA: i32 = 2;

/// Capsule name of an `ArrowDeviceArray`.
pub const DEVICE_ARRAY_CAPSULE: &CStr = c"arrow_device_array";
const DLTENSOR: &CStr = c"dltensor";
const DLTENSOR_VERSIONED: &CStr = c"dltensor_versioned";

/// What keeps device memory alive while a consumer holds a pointer to it.
pub type Keep = Arc<dyn Any + Send + Sync>;

/// `struct ArrowArray` of the Arrow C data interface.
#[repr(C)]
pub struct ArrowArray {
    length: i64,
    null_count: i64,
    offset: i64,
    n_buffers: i64,
    n_children: i64,
    buffers: *mut *const c_void,
    children: *mut *mut ArrowArray,
    dictionary: *mut ArrowArray,
    release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    private_data: *mut c_void,
}

/// `struct ArrowDeviceArray` of the Arrow C device data interface.
#[repr(C)]
pub struct ArrowDeviceArray {
    array: ArrowArray,
    device_id: i64,
    device_type: i32,
    sync_event: *mut c_void,
    reserved: [i64; 3],
}

// SAFETY: the struct owns its private data (boxed, `Send` contents) and
// device addresses, which any thread may hand on; its release callback
// may run on any thread (the interface requires consumers to allow it).
unsafe impl Send for ArrowDeviceArray {}

impl Drop for ArrowDeviceArray {
    fn drop(&mut self) {
        // A consumer that moved the struct out set `release` to null; one
        // that did not (or no consumer at all) leaves it to us.
        if let Some(release) = self.array.release {
            // SAFETY: `release` is ours (`release_array`) and the array was
            // not released yet (its `release` is still set).
            unsafe { release(&mut self.array) };
        }
    }
}

/// One array of a device batch as the C interface lays it out.
pub struct CArray {
    /// Values.
    pub length: usize,
    /// NULLs.
    pub null_count: usize,
    /// The C interface's buffers: validity (0 when there is none), then
    /// the type's others.
    pub buffers: Vec<u64>,
    /// Children (a struct's fields, a list's values).
    pub children: Vec<CArray>,
    /// A dictionary array's values.
    pub dictionary: Option<Box<CArray>>,
}

/// What an `ArrowArray` made here owns: its buffer and child pointer
/// arrays, and the memory's keeper.
struct Private {
    buffers: Vec<*const c_void>,
    children: Vec<*mut ArrowArray>,
    /// Null when the array has no dictionary.
    dictionary: *mut ArrowArray,
    _keep: Keep,
}

fn build(array: CArray, keep: &Keep) -> ArrowArray {
    let children: Vec<*mut ArrowArray> = array
        .children
        .into_iter()
        .map(|c| Box::into_raw(Box::new(build(c, keep))))
        .collect();
    let buffers: Vec<*const c_void> = array
        .buffers
        .iter()
        .map(|&p| if p == 0 { null() } else { p as *const c_void })
        .collect();
    let dictionary = match array.dictionary {
        Some(d) => Box::into_raw(Box::new(build(*d, keep))),
        None => null_mut(),
    };
    let mut private = Box::new(Private {
        buffers,
        children,
        dictionary,
        _keep: keep.clone(),
    });
    ArrowArray {
        length: array.length as i64,
        null_count: array.null_count as i64,
        offset: 0,
        n_buffers: private.buffers.len() as i64,
        n_children: private.children.len() as i64,
        // The vectors' heap storage does not move when the box does.
        buffers: private.buffers.as_mut_ptr(),
        children: private.children.as_mut_ptr(),
        dictionary,
        release: Some(release_array),
        private_data: Box::into_raw(private) as *mut c_void,
    }
}

/// The release callback of every `ArrowArray` made here: releases the
/// children and the dictionary, drops the private data (and with it one reference to the
/// memory's keeper) and marks the array released.
///
/// # Safety
/// `array` must point to an unreleased `ArrowArray` built by [`build`]
/// (possibly moved by a consumer, which the interface allows).
unsafe extern "C" fn release_array(array: *mut ArrowArray) {
    // SAFETY: the caller passes a valid array of ours.
    let array = unsafe { &mut *array };
    if array.private_data.is_null() {
        return;
    }
    // SAFETY: private_data came from Box::into_raw in `build` and is taken
    // back once (it is nulled below).
    let private = unsafe { Box::from_raw(array.private_data as *mut Private) };
    let dictionary = (!private.dictionary.is_null()).then_some(private.dictionary);
    for &child in private.children.iter().chain(dictionary.iter()) {
        // SAFETY: each child is a Box of ours; a consumer may have moved a
        // child out and released it already (then its release is null).
        unsafe {
            if let Some(release) = (*child).release {
                release(child);
            }
            drop(Box::from_raw(child));
        }
    }
    array.private_data = null_mut();
    array.release = None;
}

/// The capsule of an `ArrowDeviceArray` over `array` on CUDA device
/// `device`. The memory was synchronized before (see `device.rs`), so the
/// sync event is NULL, as the interface allows for data ready to read.
pub fn device_array_capsule<'py>(
    py: Python<'py>,
    array: CArray,
    device: usize,
    keep: &Keep,
) -> PyResult<Bound<'py, PyCapsule>> {
    let value = ArrowDeviceArray {
        array: build(array, keep),
        device_id: device as i64,
        device_type: ARROW_DEVICE_CUDA,
        sync_event: null_mut(),
        reserved: [0; 3],
    };
    // The capsule owns the struct; its Drop releases it unless moved out.
    PyCapsule::new_with_value(py, value, DEVICE_ARRAY_CAPSULE)
}

/// `DLDevice`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

/// `DLDataType`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DlDataType {
    /// `kDLInt` 0, `kDLUInt` 1, `kDLFloat` 2.
    pub code: u8,
    /// Bits per value.
    pub bits: u8,
    /// Always 1.
    pub lanes: u16,
}

/// `DLTensor`.
#[repr(C)]
struct DlTensor {
    data: *mut c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

/// `DLManagedTensor` (DLPack before 1.0).
#[repr(C)]
struct DlManagedTensor {
    dl_tensor: DlTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensor)>,
}

/// `DLPackVersion`.
#[repr(C)]
struct DlPackVersion {
    major: u32,
    minor: u32,
}

/// `DLManagedTensorVersioned` (DLPack 1.0).
#[repr(C)]
struct DlManagedTensorVersioned {
    version: DlPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DlTensor,
}

/// The manager context of a tensor: its shape and the memory's keeper.
struct Manager {
    shape: Box<[i64; 1]>,
    _keep: Keep,
}

/// A one-dimensional contiguous tensor of `len` values at `ptr`.
pub struct Tensor {
    /// Device address of the first value.
    pub ptr: u64,
    /// Values.
    pub len: usize,
    /// Their type.
    pub dtype: DlDataType,
    /// CUDA device ordinal.
    pub device: usize,
}

fn manager(t: &Tensor, keep: &Keep) -> (DlTensor, *mut c_void) {
    let mut m = Box::new(Manager {
        shape: Box::new([t.len as i64]),
        _keep: keep.clone(),
    });
    let tensor = DlTensor {
        data: t.ptr as *mut c_void,
        device: DlDevice {
            device_type: DL_CUDA,
            device_id: t.device as i32,
        },
        ndim: 1,
        dtype: t.dtype,
        shape: m.shape.as_mut_ptr(),
        // NULL strides: compact row-major (the only layout a 1-D tensor of
        // consecutive values has).
        strides: null_mut(),
        byte_offset: 0,
    };
    (tensor, Box::into_raw(m) as *mut c_void)
}

/// # Safety
/// `t` must be a `DlManagedTensor` boxed by [`dlpack_capsule`], not yet
/// deleted.
unsafe extern "C" fn delete_legacy(t: *mut DlManagedTensor) {
    if t.is_null() {
        return;
    }
    // SAFETY: per the contract, both boxes are ours and deleted once.
    unsafe {
        let t = Box::from_raw(t);
        drop(Box::from_raw(t.manager_ctx as *mut Manager));
    }
}

/// # Safety
/// `t` must be a `DlManagedTensorVersioned` boxed by [`dlpack_capsule`],
/// not yet deleted.
unsafe extern "C" fn delete_versioned(t: *mut DlManagedTensorVersioned) {
    if t.is_null() {
        return;
    }
    // SAFETY: per the contract, both boxes are ours and deleted once.
    unsafe {
        let t = Box::from_raw(t);
        drop(Box::from_raw(t.manager_ctx as *mut Manager));
    }
}

/// Capsule destructor: a tensor no consumer took (the capsule still has
/// its original name; a consumer renames it to `used_...` and calls the
/// deleter itself) is deleted here.
///
/// # Safety
/// Called by Python with a capsule made by [`dlpack_capsule`].
unsafe extern "C" fn drop_legacy_capsule(capsule: *mut pyo3::ffi::PyObject) {
    // SAFETY: a capsule is passed; IsValid/GetPointer only read it.
    unsafe {
        if pyo3::ffi::PyCapsule_IsValid(capsule, DLTENSOR.as_ptr()) == 1 {
            let t = pyo3::ffi::PyCapsule_GetPointer(capsule, DLTENSOR.as_ptr());
            delete_legacy(t as *mut DlManagedTensor);
        }
    }
}

/// As [`drop_legacy_capsule`], for the versioned tensor.
///
/// # Safety
/// Called by Python with a capsule made by [`dlpack_capsule`].
unsafe extern "C" fn drop_versioned_capsule(capsule: *mut pyo3::ffi::PyObject) {
    // SAFETY: a capsule is passed; IsValid/GetPointer only read it.
    unsafe {
        if pyo3::ffi::PyCapsule_IsValid(capsule, DLTENSOR_VERSIONED.as_ptr()) == 1 {
            let t = pyo3::ffi::PyCapsule_GetPointer(capsule, DLTENSOR_VERSIONED.as_ptr());
            delete_versioned(t as *mut DlManagedTensorVersioned);
        }
    }
}

/// The DLPack capsule of `t`: `dltensor_versioned` (DLPack 1.0) when the
/// consumer accepts it, else the legacy `dltensor`.
pub fn dlpack_capsule<'py>(
    py: Python<'py>,
    t: &Tensor,
    versioned: bool,
    keep: &Keep,
) -> PyResult<Bound<'py, PyCapsule>> {
    let (dl_tensor, manager_ctx) = manager(t, keep);
    if versioned {
        let raw = Box::into_raw(Box::new(DlManagedTensorVersioned {
            version: DlPackVersion { major: 1, minor: 0 },
            manager_ctx,
            deleter: Some(delete_versioned),
            // Not read-only: PyTorch refuses read-only tensors, and the
            // memory is the caller's to use.
            flags: 0,
            dl_tensor,
        }));
        // SAFETY: `raw` is a live box; the destructor deletes it unless a
        // consumer took it (and then calls the deleter itself).
        let capsule = unsafe {
            PyCapsule::new_with_pointer_and_destructor(
                py,
                NonNull::new_unchecked(raw as *mut c_void),
                DLTENSOR_VERSIONED,
                Some(drop_versioned_capsule),
            )
        };
        if capsule.is_err() {
            // SAFETY: no capsule took the box.
            unsafe { delete_versioned(raw) };
        }
        capsule
    } else {
        let raw = Box::into_raw(Box::new(DlManagedTensor {
            dl_tensor,
            manager_ctx,
            deleter: Some(delete_legacy),
        }));
        // SAFETY: as above.
        let capsule = unsafe {
            PyCapsule::new_with_pointer_and_destructor(
                py,
                NonNull::new_unchecked(raw as *mut c_void),
                DLTENSOR,
                Some(drop_legacy_capsule),
            )
        };
        if capsule.is_err() {
            // SAFETY: no capsule took the box.
            unsafe { delete_legacy(raw) };
        }
        capsule
    }
}

"""GPU tables: read_table(device=...) and Store.attach on the gpu backend,
checked through CuPy (DLPack, CUDA Array Interface), PyTorch (DLPack) and
the Arrow C device interface against the host export. Skipped without
CuPy or a CUDA device; run on the GPU machine by gpu/run-tests.sh."""

import ctypes
import gc
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest

cp = pytest.importorskip("cupy")
import numpy as np  # noqa: E402  (CuPy's dependency)
try:
    _DEVICES = cp.cuda.runtime.getDeviceCount()
except Exception:  # no driver, no device
    _DEVICES = 0
if _DEVICES == 0:
    pytest.skip("no CUDA device", allow_module_level=True)

import gpupgparser  # noqa: E402

from test_store import start_server, stop_server  # noqa: E402

ROWS = 20000
FIXED = ["id", "i2", "i8", "f4", "f8", "d", "ts"]

DEVICE_TABLE = f"""
drop table if exists dev;
create table dev (id int, i2 smallint, i8 bigint, f4 real, f8 float8, d date,
                  ts timestamp, t text, b bool);
insert into dev
select g,
       case when g % 7 = 1 then null else (g % 30000)::smallint end,
       case when g % 5 = 2 then null else g * 1000000007::bigint end,
       case when g % 3 = 0 then null else g / 3.0 end,
       g / 7.0,
       case when g % 11 = 4 then null else date '2000-01-01' + g end,
       timestamp '2024-01-01 00:00:00' + g * interval '1 second',
       case when g % 13 = 0 then null else 'text ' || g end,
       case when g % 17 = 0 then null else g % 2 = 0 end
from generate_series(1, {ROWS}) g;
"""


@pytest.fixture(scope="module")
def dev(pg):
    pg.sql(DEVICE_TABLE)
    return pg


@pytest.fixture(scope="module")
def host(dev):
    return pa.table(gpupgparser.read_table(dev.dsn, "dev")).sort_by("id")


def valid_mask(col, n: int) -> np.ndarray:
    """The column's validity as booleans, from its bitmap view."""
    v = col.validity
    if v is None:
        return np.ones(n, dtype=bool)
    bits = cp.asnumpy(cp.from_dlpack(v))
    assert bits.dtype == np.uint8 and len(bits) == (n + 7) // 8
    return np.unpackbits(bits, bitorder="little")[:n].astype(bool)


def host_values(arr: pa.Array, dtype) -> np.ndarray:
    """The raw values buffer of a fixed-width host array, as `dtype`."""
    buf = arr.buffers()[1]
    return np.frombuffer(buf, dtype=dtype)[arr.offset:arr.offset + len(arr)]


def test_device_table_shape(dev, host):
    t = gpupgparser.read_table(dev.dsn, "dev", device="cuda:0")
    assert isinstance(t, gpupgparser.DeviceTable)
    assert t.num_rows == ROWS
    assert t.device == 0
    assert t.schema == host.schema
    assert pa.schema(t) == host.schema
    assert sum(len(b) for b in t.batches) == ROWS
    assert t.report["rows"] == ROWS
    assert len(t["id"]) == len(t.batches)
    # The copy back equals the host export.
    assert t.to_host().sort_by("id").equals(host)


def test_fragments_read_into_device_memory(dev, host):
    with gpupgparser.plan(dev.dsn, "dev", fragments=3) as plan:
        parts = [gpupgparser.read_fragment(f, device=0) for f in plan.fragments]
    assert all(isinstance(p, gpupgparser.DeviceTable) for p in parts)
    got = pa.concat_tables([p.to_host() for p in parts]).sort_by("id")
    assert got.equals(host)


def test_columns_through_dlpack_and_cai_equal_the_host_export(dev):
    t = gpupgparser.read_table(dev.dsn, "dev", device=0)
    for batch in t.batches:
        hb = batch.to_host()
        n = len(batch)
        for name in FIXED:
            col = batch[name]
            harr = hb.column(name)
            assert col.__dlpack_device__() == (2, 0)
            x = cp.from_dlpack(col)
            assert x.shape == (n,)
            mask = valid_mask(col, n)
            np.testing.assert_array_equal(mask, harr.is_valid().to_numpy(zero_copy_only=False))
            assert col.null_count == harr.null_count
            got = cp.asnumpy(x)
            want = host_values(harr, got.dtype)
            np.testing.assert_array_equal(got[mask], want[mask])
            # The CUDA Array Interface gives the same memory.
            y = cp.asarray(col)
            assert y.data.ptr == x.data.ptr
            assert col.__cuda_array_interface__["data"] == (x.data.ptr, False)
            assert col.__cuda_array_interface__["version"] == 3


def test_columns_through_torch_dlpack(dev):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    t = gpupgparser.read_table(dev.dsn, "dev", device="cuda")
    for batch in t.batches:
        hb = batch.to_host()
        for name in ["id", "i8", "f8", "d", "ts"]:
            col = batch[name]
            x = torch.from_dlpack(col)
            assert x.device.type == "cuda" and x.device.index == 0
            assert x.shape[0] == len(batch)
            mask = valid_mask(col, len(batch))
            got = x.cpu().numpy()
            want = host_values(hb.column(name), got.dtype)
            np.testing.assert_array_equal(got[mask], want[mask])


def test_variable_width_columns_refuse_dlpack(dev):
    t = gpupgparser.read_table(dev.dsn, "dev", columns=["id", "t", "b"], device="cuda:0")
    batch = t.batches[0]
    with pytest.raises(gpupgparser.Unsupported, match="column t"):
        batch["t"].__dlpack__()
    with pytest.raises(gpupgparser.Unsupported, match="column b"):
        cp.from_dlpack(batch["b"])
    # The validity of a text column is still a plain uint8 view.
    assert batch["t"].validity is not None or batch["t"].null_count == 0


class ArrowArray(ctypes.Structure):
    pass


ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(ArrowArray))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class ArrowDeviceArray(ctypes.Structure):
    _fields_ = [
        ("array", ArrowArray),
        ("device_id", ctypes.c_int64),
        ("device_type", ctypes.c_int32),
        ("sync_event", ctypes.c_void_p),
        ("reserved", ctypes.c_int64 * 3),
    ]


def capsule_pointer(capsule, name: bytes) -> int:
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get(capsule, name)


def test_arrow_device_array_fields(dev):
    t = gpupgparser.read_table(dev.dsn, "dev", device="cuda:0")
    batch = t.batches[0]
    schema_capsule, array_capsule = batch.__arrow_c_device_array__()
    assert pa.Schema._import_from_c_capsule(schema_capsule) == t.schema
    a = ArrowDeviceArray.from_address(capsule_pointer(array_capsule, b"arrow_device_array"))
    assert a.device_type == 2 and a.device_id == 0
    assert a.sync_event is None  # synchronized before the table was returned
    assert a.array.length == len(batch)
    assert a.array.n_children == len(t.schema)
    assert a.array.release is not None
    for i, name in enumerate(t.schema.names):
        child = a.array.children[i].contents
        assert child.length == len(batch)
        col = batch[name]
        assert child.null_count == col.null_count
        if name in FIXED:
            assert child.n_buffers == 2
            assert child.buffers[1] == col.__cuda_array_interface__["data"][0]
            v = col.validity
            want = None if v is None else v.__cuda_array_interface__["data"][0]
            assert child.buffers[0] == want
    # Dropping the capsule releases the struct (and its reference).
    del schema_capsule, array_capsule, a
    gc.collect()


def test_arrow_device_array_into_pyarrow(dev):
    """pyarrow imports the device batch where it has CUDA support."""
    t = gpupgparser.read_table(dev.dsn, "dev", device="cuda:0")
    batch = t.batches[0]
    importer = getattr(pa.RecordBatch, "_import_from_c_device_capsule", None)
    if importer is None:
        pytest.skip("pyarrow without the C device interface")
    try:
        rb = importer(*batch.__arrow_c_device_array__())
    except Exception as e:  # pyarrow built without CUDA, or too old
        pytest.skip(f"pyarrow cannot import CUDA memory here: {e}")
    assert rb.num_rows == len(batch)
    assert rb.device_type == pa.DeviceAllocationType.CUDA


def test_memory_lives_with_the_last_reference_and_is_freed_after(dev):
    # Warm up: kernels compiled, pools sized.
    gpupgparser.read_table(dev.dsn, "dev", device=0)
    gc.collect()
    free0, _ = cp.cuda.runtime.memGetInfo()
    t = gpupgparser.read_table(dev.dsn, "dev", device=0)
    col = t.batches[0]["i8"]
    x = cp.from_dlpack(col)
    want = cp.asnumpy(x).copy()
    free1, _ = cp.cuda.runtime.memGetInfo()
    # Only the consumer's array is left: the memory must stay readable.
    del t, col
    gc.collect()
    np.testing.assert_array_equal(cp.asnumpy(x), want)
    del x
    gc.collect()
    cp.cuda.runtime.deviceSynchronize()
    free2, _ = cp.cuda.runtime.memGetInfo()
    held = free0 - free1
    # Freed again (device memory is managed in 2 MiB pages: some slack).
    assert free2 >= free1 + held // 2 or held < (4 << 20), (free0, free1, free2)


@pytest.fixture(scope="module")
def gpu_store(dev):
    directory = Path(tempfile.mkdtemp(prefix="gpupg-store-gpu-"))
    os.chmod(directory, 0o700)
    socket = directory / "store.sock"
    proc = start_server("gpu", socket)
    try:
        yield gpupgparser.Store(str(socket))
    finally:
        stop_server(proc)


def test_store_attach_on_the_gpu_backend(dev, host, gpu_store):
    info = gpu_store.load("dev", dsn=dev.dsn, name="dev_gpu")
    assert info["backend"] == "gpu" and info["rows"] == ROWS
    with gpu_store.attach("dev_gpu") as t:
        assert isinstance(t, gpupgparser.DeviceTable)
        assert t.num_rows == ROWS
        assert t.report["revision"] == info["revision"]
        held = [r for r in gpu_store.list() if r["name"] == "dev_gpu"]
        assert held[0]["attached"] == 1
        assert t.to_host().sort_by("id").equals(host)
        for batch in t.batches:
            hb = batch.to_host()
            for name in FIXED:
                col = batch[name]
                x = cp.asnumpy(cp.from_dlpack(col))
                mask = valid_mask(col, len(batch))
                want = host_values(hb.column(name), x.dtype)
                np.testing.assert_array_equal(x[mask], want[mask])
    [mine] = [r for r in gpu_store.list() if r["name"] == "dev_gpu"]
    assert mine["attached"] == 0
    gpu_store.drop("dev_gpu")

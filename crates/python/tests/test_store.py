"""gpupgparser.Store against a real store server (`gpupgparser serve
--backend host`, the CLI binary from $GPUPGPARSER_BIN or target/debug)
and a throwaway PostgreSQL server (conftest.py); and read_table(device=)
on a machine without a GPU."""

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import gpupgparser

ROOT = Path(__file__).resolve().parents[3]


def cli_binary() -> Path:
    for b in (os.environ.get("GPUPGPARSER_BIN"), ROOT / "target" / "debug" / "gpupgparser"):
        if b and Path(b).is_file() and os.access(b, os.X_OK):
            return Path(b)
    pytest.skip("no gpupgparser binary (build it, or set GPUPGPARSER_BIN)")


def start_server(backend: str, socket: Path) -> subprocess.Popen:
    """`gpupgparser serve` on `socket`, once it answers."""
    proc = subprocess.Popen(
        [str(cli_binary()), "serve", "--backend", backend, "--socket", str(socket)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the store server exited: {proc.stdout.read()}")
        if socket.exists():
            try:
                gpupgparser.Store(str(socket))
                return proc
            except gpupgparser.ConnectionError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the store server did not start within 60 s")


def stop_server(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def store_socket(pg):
    pg.sql(
        "drop table if exists stored; create table stored (id int, v float8, t text);"
        "insert into stored select g, g / 2.0, 'r' || g from generate_series(1, 500) g;"
        "insert into stored values (0, null, null);"
    )
    directory = Path(tempfile.mkdtemp(prefix="gpupg-store-"))
    os.chmod(directory, 0o700)
    socket = directory / "store.sock"
    proc = start_server("host", socket)
    try:
        yield socket
    finally:
        stop_server(proc)


def test_load_list_refresh_drop(pg, store_socket):
    store = gpupgparser.Store(str(store_socket))
    info = store.load("stored", dsn=pg.dsn, name="s1")
    assert info["name"] == "s1"
    assert info["rows"] == 501
    assert info["revision"] == 1
    assert info["backend"] == "host"

    names = [r["name"] for r in store.list()]
    assert "s1" in names
    [mine] = [r for r in store.list(stale=True) if r["name"] == "s1"]
    assert mine["stale"] is False

    pg.sql("insert into stored values (501, 1.0, 'new')")
    out = store.refresh("s1")
    assert out["rebuilt"] is True
    assert out["info"]["revision"] == 2
    assert out["info"]["rows"] == 502
    assert store.refresh("s1")["rebuilt"] is False

    dropped = store.drop("s1")
    assert dropped["name"] == "s1"
    assert "s1" not in [r["name"] for r in store.list()]


def test_load_options_are_the_stores(pg, store_socket):
    store = gpupgparser.Store(socket=str(store_socket))
    info = store.load("stored", dsn=pg.dsn, name="s2", columns=["id"], source="copy")
    assert info["source"] == "copy"
    store.drop("s2")
    with pytest.raises(gpupgparser.InvalidRequest, match="load options"):
        store.load("stored", dsn=pg.dsn, name="s3", no_such_option=1)


def test_unknown_name_is_not_found(store_socket):
    store = gpupgparser.Store(str(store_socket))
    with pytest.raises(gpupgparser.NotFound):
        store.refresh("no_such_name")
    with pytest.raises(gpupgparser.NotFound):
        store.drop("no_such_name")
    with pytest.raises(gpupgparser.NotFound):
        store.attach("no_such_name")


def test_no_server_is_a_connection_error(tmp_path):
    with pytest.raises(gpupgparser.ConnectionError, match="no store server at"):
        gpupgparser.Store(str(tmp_path / "nothing.sock"))


def test_attach_on_the_host_backend_is_unsupported(pg, store_socket):
    """attach maps device memory; a host-backend store has none."""
    store = gpupgparser.Store(str(store_socket))
    store.load("stored", dsn=pg.dsn, name="s4")
    with pytest.raises(gpupgparser.Unsupported, match="gpu backend"):
        store.attach("s4")
    # The failed attach held nothing.
    [mine] = [r for r in store.list() if r["name"] == "s4"]
    assert mine["attached"] == 0
    store.drop("s4")


def _has_gpu() -> bool:
    try:
        import ctypes

        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 \
            and count.value > 0
    except OSError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="checks the error on a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0])
def test_read_table_to_a_device_without_a_gpu(pg, store_socket, device):
    with pytest.raises(gpupgparser.InvalidRequest, match="no usable GPU|GPU"):
        gpupgparser.read_table(pg.dsn, "stored", device=device)
    with pytest.raises(gpupgparser.InvalidRequest):
        gpupgparser.read_sql(pg.dsn, "select 1", device=device)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", -1, 1.5])
def test_a_bad_device_is_refused(pg, device):
    with pytest.raises(gpupgparser.InvalidRequest, match="expected"):
        gpupgparser.read_table(pg.dsn, "stored", device=device)

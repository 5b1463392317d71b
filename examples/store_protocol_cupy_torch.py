#!/usr/bin/env python3
"""Maps a table held by `gpupgparser serve` into this process through CUDA
IPC, without a copy, and sums its numeric columns with CuPy and with PyTorch
(the same device memory, handed over through DLPack), checking both against
PostgreSQL's sums.

    gpupgparser serve &
    gpupgparser store load --dsn "$DSN" --table lineorder --name lo
    python3 examples/store_protocol_cupy_torch.py --name lo --dsn "$DSN"          # sums by psql
    python3 examples/store_protocol_cupy_torch.py --name lo --sums '{"lo_quantity": "1275000"}'

It speaks the store's protocol itself (JSON lines over the Unix socket; see
docs/store.md), without the gpupgparser module (examples/store_cupy_torch.py
does the same in a few lines with `gpupgparser.Store`): `attach` returns the manifest and holds that revision until
`release` or until the connection closes, so a refresh meanwhile cannot free
the memory mapped here. Integer sums are exact (64-bit accumulators; a sum of
int64 values that overflows would wrap), float sums are compared with a
relative tolerance.
"""

import argparse
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time

INTEGER = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
FLOAT = {"float32", "float64"}


def private_dir_problem(path):
    """Why `path` is not a directory of this user's alone (None when it is)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by its group or others (mode {st.st_mode & 0o7777:o})"
    return None


def default_socket():
    """The server's default socket, as `gpupgparser` finds it: in
    $XDG_RUNTIME_DIR/gpupgparser when XDG_RUNTIME_DIR is this user's, else
    in /tmp/gpupgparser-UID; that directory must be this user's alone."""
    run = os.environ.get("XDG_RUNTIME_DIR")
    try:
        ours = bool(run) and os.path.isabs(run) and private_dir_problem(run) is None
    except OSError:
        ours = False
    directory = os.path.join(run, "gpupgparser") if ours else f"/tmp/gpupgparser-{os.geteuid()}"
    try:
        why = private_dir_problem(directory)
    except OSError:
        why = None  # missing: there is no server, which connect() says
    if why:
        raise SystemExit(f"store: {directory}: {why}; refusing it as the store socket's directory")
    return os.path.join(directory, "store.sock")


class Store:
    """One connection to the store server."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        # Who listens there, before anything is sent: a socket path can be
        # taken by another user first.
        cred = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII"))
        _pid, uid, _gid = struct.unpack("iII", cred)
        if uid not in (os.geteuid(), 0):
            self.sock.close()
            raise SystemExit(
                f"store: {path}: the process listening there runs as uid {uid}, "
                f"not as this user (uid {os.geteuid()}) or root; nothing was sent to it"
            )
        self.file = self.sock.makefile("rw", encoding="utf-8")

    def call(self, op, **fields):
        self.file.write(json.dumps({"v": 1, "op": op, **fields}) + "\n")
        self.file.flush()
        answer = json.loads(self.file.readline())
        if not answer.get("ok"):
            err = answer.get("error", {})
            raise SystemExit(f"store: {err.get('kind')}: {err.get('message')}")
        return answer["result"]

    def close(self):
        self.file.close()
        self.sock.close()


def psql_sums(dsn, psql, table, columns):
    """PostgreSQL's sums of `columns`, as exact decimal strings."""
    quoted = ", ".join(f'sum("{c}")::text' for c in columns)
    out = subprocess.run(
        [psql, dsn, "-XAt", "-F", "\t", "-c", f"SELECT {quoted} FROM {table}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return dict(zip(columns, out.split("\t")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", default=os.environ.get("GPUPGPARSER_STORE_SOCKET"))
    ap.add_argument("--name", required=True, help="the table's name in the store")
    ap.add_argument("--sums", help="expected sums as JSON: {column: decimal string}")
    ap.add_argument("--dsn", help="compute the expected sums with psql on this connection")
    ap.add_argument("--psql", default="psql", help="psql to run with --dsn")
    args = ap.parse_args()

    import cupy as cp
    import torch

    store = Store(args.socket or default_socket())
    started = time.perf_counter()
    manifest = store.call("attach", name=args.name)
    attached = time.perf_counter()
    device = manifest["device"]
    # The CUDA context of this process (created once, whatever it maps).
    cp.cuda.Device(device).use()
    cp.cuda.runtime.free(cp.cuda.runtime.malloc(1))
    ready = time.perf_counter()
    # One mapping per allocation, on the GPU it names (a table loaded with
    # --devices lies on several); every buffer is an offset into one.
    devices = {a["id"]: a["device"] for a in manifest["allocations"]}
    bases = {}
    for a in manifest["allocations"]:
        with cp.cuda.Device(a["device"]):
            bases[a["id"]] = cp.cuda.runtime.ipcOpenMemHandle(bytes.fromhex(a["ipc_handle"]))
    mapped = time.perf_counter()
    attach_ms, map_ms = (attached - started) * 1e3, (mapped - ready) * 1e3
    print(
        f"{manifest['name']} revision {manifest['revision']}: {manifest['rows']} rows, "
        f"{len(manifest['columns'])} columns; attach {attach_ms:.1f} ms, map {len(bases)} allocations "
        f"{map_ms:.1f} ms: attach + map {attach_ms + map_ms:.1f} ms "
        f"(this process's CUDA context {(ready - attached) * 1e3:.0f} ms before that)"
    )

    def device_array(buf, dtype, count):
        """A CuPy view of `count` elements of a manifest buffer (no copy)."""
        dev = devices.get(buf["allocation"], device)
        mem = cp.cuda.UnownedMemory(bases[buf["allocation"]] + buf["offset"], buf["length"], manifest, dev)
        return cp.ndarray((count,), dtype=dtype, memptr=cp.cuda.MemoryPointer(mem, 0))

    numeric = []
    for col in manifest["columns"]:
        kinds = {b["kind"]: b["dtype"] for b in col["chunks"][0]["buffers"]} if col["chunks"] else {}
        if kinds.get("values") in INTEGER | FLOAT:
            numeric.append(col)
    if args.sums:
        expected = json.loads(args.sums)
    elif args.dsn:
        expected = psql_sums(args.dsn, args.psql, manifest["table"], [c["name"] for c in numeric])
    else:
        raise SystemExit("give --sums or --dsn")

    failures = 0
    for col in numeric:
        if col["name"] not in expected:
            continue
        total_cupy, total_torch = 0, 0
        is_float = False
        for chunk in col["chunks"]:
            rows = chunk["rows"]
            if rows == 0:
                continue
            bufs = {b["kind"]: b for b in chunk["buffers"]}
            # The chunk's GPU is current while it is summed there.
            cp.cuda.Device(devices.get(bufs["values"]["allocation"], device)).use()
            dtype = bufs["values"]["dtype"]
            is_float = dtype in FLOAT
            values = device_array(bufs["values"], dtype, rows)
            acc = cp.float64 if is_float else cp.int64
            if "validity" in bufs:
                bitmap = device_array(bufs["validity"], cp.uint8, (rows + 7) // 8)
                valid = cp.unpackbits(bitmap, bitorder="little")[:rows].astype(cp.bool_)
            else:
                valid = cp.ones(rows, dtype=cp.bool_)
            total_cupy += cp.where(valid, values, 0).sum(dtype=acc).item()
            # The same memory as a PyTorch tensor, through DLPack.
            t = torch.from_dlpack(values)
            mask = torch.from_dlpack(valid.view(cp.uint8)).bool()
            total_torch += t[mask].sum(dtype=torch.float64 if is_float else torch.int64).item()
        want = expected[col["name"]]
        if want is None:
            want_value = 0
        else:
            want_value = float(want) if is_float else int(want)
        if is_float:
            ok = all(abs(x - want_value) <= 1e-9 * max(1.0, abs(want_value)) for x in (total_cupy, total_torch))
        else:
            ok = total_cupy == want_value and total_torch == want_value
        failures += not ok
        print(f"  {col['name']}: cupy {total_cupy}, torch {total_torch}, postgres {want}: {'ok' if ok else 'MISMATCH'}")

    for id_, base in bases.items():
        with cp.cuda.Device(devices[id_]):
            cp.cuda.runtime.deviceSynchronize()
            cp.cuda.runtime.ipcCloseMemHandle(base)
    store.call("release", name=manifest["name"], revision=manifest["revision"])
    store.close()
    if failures:
        sys.exit(f"{failures} column(s) differ")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Runs the GPU tests of crates/gpu (and the export's device-resident test
# and the table store's test, against the carried PostgreSQL bundle) on a
# machine with an NVIDIA GPU and prints a short results table at the end.
#
# Usage, from the repository root:
#   gpu/run-tests.sh              # runs the binaries carried in .carry/gpu/
#   gpu/run-tests.sh --build      # builds them first (needs a Rust toolchain)
#
# Binaries are built where Rust is installed with
#   gpu/run-tests.sh --stage-only
# which runs `cargo test -p gpupg-gpu --release --no-run` and copies the test
# executables into .carry/gpu/ (ignored by git) for a machine without Rust;
# the store's tests (gpu_store, gpu_lo) go to .carry/store/, carried on
# their own; the Python wheel to .carry/python/ (the Python device tests
# also use the CLI binary bench/prepare-carry.sh puts in .carry/bin/).
# The store's test also runs examples/store_protocol_cupy_torch.py when python3 has
# CuPy and PyTorch.
set -u -o pipefail
cd "$(dirname "$0")/.."
CARRY=.carry/gpu
STORE_CARRY=.carry/store
PY_CARRY=.carry/python
OUT_DIR=${OUT:-/tmp}

stage() {
    mkdir -p "$CARRY" "$STORE_CARRY"
    rm -f "$CARRY"/* "$STORE_CARRY/gpu_store" "$STORE_CARRY/gpu_lo"
    # The GPU crate's unit and GPU tests, the export's device test and the
    # store's test (both start the carried PostgreSQL server), stripped to
    # fit the carry limit.
    # Only the targets run below: building every test of three crates in
    # release (thin LTO) takes long on a small machine.
    cargo test -p gpupg-gpu -p gpupg-export -p gpupg-store --release --no-run --message-format=json \
        --lib --test gpu --test gpu_compact --test gpu_gds --test gpu_inflate --test gpu_device --test gpu_store --test gpu_lo 2>/dev/null \
        | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("gpupg_gpu", "gpu", "gpu_gds", "gpu_compact", "gpu_inflate", "gpu_device", "gpu_store", "gpu_lo"):
        print(m["executable"])
' | while read -r exe; do
        name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
        dir=$CARRY
        case "$name" in gpu_store | gpu_lo) dir=$STORE_CARRY ;; esac
        cp "$exe" "$dir/$name" && strip "$dir/$name"
    done
    # The Python module's wheel for crates/python/tests/test_device.py: a
    # dev build (abi3), stripped to fit the carry limit.
    mkdir -p "$PY_CARRY"
    rm -f "$PY_CARRY"/gpupgparser-*.whl
    maturin=target/python-venv/bin/maturin
    [ -x "$maturin" ] || maturin="python3 -m maturin"
    CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only $maturin build --quiet --locked \
        --profile dev --strip -m crates/python/Cargo.toml -i python3 -o "$PY_CARRY"
    ls -la "$CARRY" "$STORE_CARRY" "$PY_CARRY"
}

case "${1:-}" in
--stage-only) stage; exit 0 ;;
--build) stage ;;
esac

if [ ! -x "$CARRY/gpu" ] && [ ! -x "$STORE_CARRY/gpu_store" ] && ! ls "$PY_CARRY"/gpupgparser-*.whl >/dev/null 2>&1; then
    echo "no test binaries in $CARRY: run gpu/run-tests.sh --stage-only where Rust is installed" >&2
    exit 2
fi

LOG="$OUT_DIR/gpu-tests.log"
: >"$LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
status=0
# Unit tests (NVRTC compile included: the toolkit's NVRTC is found without
# LD_LIBRARY_PATH), then the GPU tests one at a time.
# The device test needs PostgreSQL: the bundle made by bench/prepare-carry.sh,
# unpacked where the test's server finder looks (/opt/pg).
if [ -f .carry/pg15.tar.xz ] && [ ! -x /opt/pg/usr/lib/postgresql/15/bin/postgres ]; then
    mkdir -p /opt/pg && tar -C /opt/pg -xJf .carry/pg15.tar.xz && chmod -R a+rX /opt/pg
fi
id postgres >/dev/null 2>&1 || useradd -m postgres 2>/dev/null || true
for bin in gpupg_gpu gpu gpu_gds gpu_compact gpu_inflate gpu_device gpu_store gpu_lo; do
    exe=$CARRY/$bin
    case "$bin" in gpu_store | gpu_lo) exe=$STORE_CARRY/$bin ;; esac
    [ -x "$exe" ] || continue
    echo "=== $bin" | tee -a "$LOG"
    args=(--nocapture --test-threads=1)
    [ "$bin" != gpupg_gpu ] && args=(--ignored "${args[@]}")
    if [ "$bin" = gpu_device ] || [ "$bin" = gpu_store ] || [ "$bin" = gpu_lo ]; then
        [ -d /opt/pg/libs ] || { echo "no PostgreSQL bundle (.carry/pg15.tar.xz): skipped" | tee -a "$LOG"; continue; }
        LD_LIBRARY_PATH=/opt/pg/libs "$exe" "${args[@]}" 2>&1 | tee -a "$LOG"
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
        continue
    fi
    "$exe" "${args[@]}" 2>&1 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done

# The Python module's device tests (CuPy, PyTorch, pyarrow and pytest of
# the machine's python3), with the carried wheel, CLI binary (the store
# server) and PostgreSQL bundle; its programs get the bundle's libraries
# through wrappers, so that Python's own are not replaced.
wheel=$(ls "$PY_CARRY"/gpupgparser-*.whl 2>/dev/null | head -n 1)
if [ -n "$wheel" ]; then
    echo "=== python test_device" | tee -a "$LOG"
    if [ ! -d /opt/pg/libs ]; then
        echo "no PostgreSQL bundle (.carry/pg15.tar.xz): skipped" | tee -a "$LOG"
    else
        pyroot=/tmp/gpupg-py
        rm -rf "$pyroot" && mkdir -p "$pyroot/pgbin"
        python3 -m pip install -q --no-deps --no-index --target "$pyroot/lib" "$wheel" 2>&1 | tee -a "$LOG"
        for p in initdb pg_ctl postgres psql; do
            printf '#!/bin/sh\nLD_LIBRARY_PATH=/opt/pg/libs exec /opt/pg/usr/lib/postgresql/15/bin/%s "$@"\n' "$p" \
                >"$pyroot/pgbin/$p"
            chmod +x "$pyroot/pgbin/$p"
        done
        chmod -R a+rX "$pyroot"
        PYTHONPATH="$pyroot/lib" GPUPGPARSER_PG_BIN="$pyroot/pgbin" \
            GPUPGPARSER_BIN=${GPUPGPARSER_BIN:-$PWD/.carry/bin/gpupgparser} \
            python3 -m pytest -q -rs crates/python/tests/test_device.py 2>&1 | tee -a "$LOG"
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    fi
fi

echo
echo "| test | result | key number |"
echo "| --- | --- | --- |"
# A test's RESULT lines are those printed after its "test NAME ..." line;
# failed tests are listed by libtest after "failures:".
awk '
    /^test [A-Za-z0-9_:]+ \.\.\. / { name = $2; sub(/.*::/, "", name); order[++n] = name; key[name] = ""; status[name] = "ok" }
    n > 0 && match($0, /RESULT [^ ]+ .*/) {
        r = substr($0, RSTART + 7); k = r; sub(/ .*/, "", k); v = r; sub(/^[^ ]+ /, "", v)
        key[order[n]] = key[order[n]] (key[order[n]] == "" ? "" : "; ") k ": " v
    }
    /^failures:$/ { inf = 1; next }
    inf && /^    [A-Za-z0-9_:]+$/ { f = $1; sub(/.*::/, "", f); status[f] = "FAILED" }
    /^test result:/ { inf = 0 }
    /ignored, needs a GPU/ { status[name] = "ignored" }
    END { for (i = 1; i <= n; i++) printf "| %s | %s | %s |\n", order[i], status[order[i]], key[order[i]] }
' "$LOG"
exit $status

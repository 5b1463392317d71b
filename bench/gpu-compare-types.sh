#!/usr/bin/env bash
# On the GPU machine: the demo's tables exported by --engine cpu and --engine
# gpu, compared column by column with pyarrow (prints the first differences).
# Carry [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
out=${OUT:-bench/out}
mkdir -p "$out"
bin=.carry/bin/gpupgparser
[ -x /opt/pg/usr/lib/postgresql/15/bin/postgres ] || { mkdir -p /opt/pg && tar -C /opt/pg -xJf .carry/pg15.tar.xz && chmod -R a+rX /opt/pg; }
id postgres >/dev/null 2>&1 || useradd -m postgres
export LD_LIBRARY_PATH=/opt/pg/libs
for e in cpu gpu; do
  "$bin" demo --rows "${ROWS:-1000}" --engine "$e" --keep "/tmp/demo-$e" "$@" >"$out/demo-$e.log" 2>&1 \
    || { tail -20 "$out/demo-$e.log"; exit 1; }
done
unset LD_LIBRARY_PATH
python3 - <<'PY' | tee "$out/compare.txt"
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc
def bits(col):
    # Floats compared by bit pattern: NaN == NaN, -0 != 0.
    col = col.combine_chunks()
    if pa.types.is_float32(col.type):
        return col.view(pa.int32())
    if pa.types.is_float64(col.type):
        return col.view(pa.int64())
    return col
def load(path):
    t = pq.read_table(path) if path.endswith(".parquet") else ipc.open_file(path).read_all()
    return t.sort_by("id")
bad = 0
for f in ["all_types.parquet", "all_types.arrow"]:
    a, b = load(f"/tmp/demo-cpu/{f}"), load(f"/tmp/demo-gpu/{f}")
    for name in a.column_names:
        ca, cb = a.column(name), b.column(name)
        if bits(ca).equals(bits(cb)):
            continue
        bad += 1
        la, lb = ca.to_pylist(), cb.to_pylist()
        diffs = [i for i in range(len(la)) if la[i] != lb[i] and not (la[i] != la[i] and lb[i] != lb[i])]
        print(f"{f} column {name} ({ca.type}): {len(diffs)} rows differ by value; types {ca.type} / {cb.type}; nulls {ca.null_count}/{cb.null_count}")
        for i in diffs[:3]:
            print(f"   id {a.column('id')[i]}: cpu={la[i]!r:.200} gpu={lb[i]!r:.200}")
        if not diffs:
            print("   values equal as Python objects: the difference is in layout (offsets, validity, chunking)")
print(f"columns differing (floats compared bit for bit): {bad} of {len(a.column_names)}")
PY

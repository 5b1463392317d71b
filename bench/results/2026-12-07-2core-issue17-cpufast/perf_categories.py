import sys, collections
# perf script -F tid,ip,sym output: sample header line (tid) then indented frames
cats = [
 ("parquet: zstd", lambda s: any("ParquetSink" in f for f in s) and any("ZSTD" in f or "zstd" in f for f in s)),
 ("parquet: other", lambda s: any("ParquetSink" in f or "ipc" in f.lower() and "gpupg_sink" in f for f in s)),
 ("toast index build", lambda s: any("ToastIndex::build" in f for f in s)),
 ("heap read", lambda s: any("read_blocks" in f or "source::heap::reader" in f for f in s)),
 ("pages: jsonb", lambda s: any("heap::jsonb" in f for f in s)),
 ("pages: numeric text", lambda s: any("Numeric::write_text" in f or "value::numeric" in f for f in s)),
 ("pages: lz4/pglz", lambda s: any("lz4::" in f or "pglz::" in f for f in s)),
 ("pages: detoast", lambda s: any("detoast" in f for f in s)),
 ("pages: add_page other", lambda s: any("add_page" in f for f in s)),
 ("pages: builder append", lambda s: any("append_in" in f or "append_bytes" in f for f in s)),
 ("pages: finish batch", lambda s: any("finish_batch" in f or "Col::finish" in f for f in s)),
 ("decode rows", lambda s: any("Decoder>::decode" in f for f in s)),
 ("transcode", lambda s: any("transcode" in f for f in s)),
]
counts = collections.Counter(); faults = collections.Counter(); total = 0
stack = []
def flush():
    global total
    if not stack: return
    total += 1
    c = next((n for n, p in cats if p(stack)), "other")
    counts[c] += 1
    if any("clear_page" in f or "page_fault" in f for f in stack[:8]): faults[c] += 1
for line in open(sys.argv[1]):
    if not line.startswith(("\t", " ")) or line.strip() and not line.startswith("\t"):
        if line.strip() and not line.startswith("\t"):
            flush(); stack = []; continue
    parts = line.strip().split(None, 1)
    if len(parts) == 2: stack.append(parts[1])
flush()
for c, n in counts.most_common():
    print(f"{c:28s} {100*n/total:5.1f}%   (page faults {100*faults[c]/total:4.1f}%)")
print("samples", total)

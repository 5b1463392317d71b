// The CPU twin of kernels/heap.cu: the kernel source compiled as C++ and
// run with one thread per block, so its logic (deforming, sizes, the bytes
// written) is tested against the CPU converter on machines without a GPU
// (tests/heap_kernel_cpu.rs). Races between threads are not tested here:
// the GPU test compares the same pages on the device.
//
// Input (stdin, native-endian): u32 npages, nslots, block_size, natts,
// nout, nenum, then u64 byte lengths and bytes of: pages, page_at,
// slot_base, attrs, outputs, missing, enum_oids, enum_off, enum_blob,
// check_blocks (empty: checksums not verified).
// Output (stdout): u32 nrows, u64 nbytes, the rows' bytes, u32 starts[],
// ends[], u32 nflagged, flagged page indexes.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// The CUDA built-ins as C++ (kernels/common.cuh).
#define GPUPG_CPU_TWIN 1
#define HEAP_SMEM alignas(16) static u8 smem[32768]
#include "../../kernels/heap.cu"

static std::vector<u8> part() {
    u64 n = 0;
    if (fread(&n, 8, 1, stdin) != 1) exit(2);
    std::vector<u8> v(n + 16);
    if (n && fread(v.data(), 1, n, stdin) != n) exit(2);
    v.resize(n);
    v.reserve(n + 16);
    return v;
}

int main() {
    u32 hdr[6];
    if (fread(hdr, 4, 6, stdin) != 6) return 2;
    std::vector<u8> pages = part(), page_at = part(), slot_base = part(), attrs = part(),
                    outputs = part(), missing = part(), enum_oids = part(), enum_off = part(),
                    enum_blob = part(), check_blocks = part();
    HeapArgs a;
    memset(&a, 0, sizeof a);
    a.npages = hdr[0];
    a.nslots = hdr[1];
    a.block_size = hdr[2];
    a.natts = hdr[3];
    a.nout = hdr[4];
    a.nenum = hdr[5];
    a.pages = pages.data();
    a.page_at = (const u32*)page_at.data();
    a.slot_base = (const u32*)slot_base.data();
    a.attrs = (const HeapAttr*)attrs.data();
    a.outputs = (const u16*)outputs.data();
    a.missing = missing.data();
    a.enum_oids = (const u32*)enum_oids.data();
    a.enum_off = (const u32*)enum_off.data();
    a.enum_blob = enum_blob.data();
    a.check_blocks = check_blocks.empty() ? nullptr : (const u32*)check_blocks.data();
    std::vector<u32> row_len(2 * (size_t)a.nslots + 1);
    std::vector<u64> incl(2 * (size_t)a.nslots + 1);
    std::vector<u32> flagged(a.npages + 2);
    a.row_len = row_len.data();
    a.flagged = flagged.data();
    // The kernels' array variants when an output column is an array, as
    // the host launches them (src/decode/heap.rs, has_arrays).
    bool arrays = false;
    for (u32 c = 0; c < a.nout; c++) arrays |= a.attrs[a.outputs[c]].form == HF_ARRAY;
    if (arrays) heap_sizes_arrays(a); else heap_sizes(a);
    // The host's inclusive scans of both segments.
    for (int seg = 0; seg < 2; seg++) {
        u64 sum = 0;
        for (u32 i = 0; i < a.nslots; i++) {
            sum += row_len[(size_t)seg * a.nslots + i];
            incl[(size_t)seg * a.nslots + i] = sum;
        }
    }
    u64 nbytes = a.nslots ? incl[a.nslots - 1] : 0;
    u32 nrows = a.nslots ? (u32)incl[2 * (size_t)a.nslots - 1] : 0;
    std::vector<u8> out(nbytes + 1);
    std::vector<u32> starts(nrows + 1), ends(nrows + 1);
    a.incl = incl.data();
    a.out = out.data();
    a.starts = starts.data();
    a.ends = ends.data();
    if (nrows) {
        if (arrays) heap_write_arrays(a); else heap_write(a);
    }
    fwrite(&nrows, 4, 1, stdout);
    fwrite(&nbytes, 8, 1, stdout);
    fwrite(out.data(), 1, nbytes, stdout);
    fwrite(starts.data(), 4, nrows, stdout);
    fwrite(ends.data(), 4, nrows, stdout);
    fwrite(&flagged[0], 4, 1, stdout);
    fwrite(&flagged[1], 4, flagged[0], stdout);
    return 0;
}

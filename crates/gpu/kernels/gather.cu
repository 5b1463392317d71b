// gpupgparser gather kernels: runs of rows of device-resident Arrow
// batches copied into one new batch (the table store's page-level refresh
// keeps the rows of unchanged heap pages this way).
//
// A module of its own (compiled by NVRTC like decode.cu, loaded by
// `GatherKernels` in src/kernels.rs, planned by src/store/gather/planner.rs,
// whose `GRun`/`GTask` mirror the structs here field for field). The CPU
// twin (tests/cpu_twin/gather_twin.cpp, driven by src/store/gather/tests.rs)
// compiles this file as C++ (GATHER_TWIN) and runs every thread one after
// the other.
//
// The host plans everything: per output buffer one task naming a run set
// (`GRun`s sorted by output position, no empty runs except where a
// `tail` must still be written), one base address per source batch, and the
// output position in the slab. All tables live in one uploaded buffer `tab`
// (offsets into it), outputs in one slab `out` (offsets into it). Every
// kernel takes (tab, out, tasks_at, ntasks, nunits): task t owns work units
// [tasks[t].start, tasks[t + 1].start).
//
// Reads: every load is of an aligned word holding at least one byte the
// copy needs, so it never leaves the page of a buffer byte (the bytes
// beyond a buffer's end are discarded).

#include "common.cuh"

// Output bytes per unit of gather_copy (one warp).
#define COPY_TILE 16384ull
// Output elements per unit of gather_rebase (one warp).
#define REBASE_TILE 4096ull
// Output bits per unit of gather_bits: one 32-bit word per lane.
#define BITS_UNIT 1024ull
// GTask.flags: gather_rebase writes `tail` at element `total`.
#define FLAG_TAIL 1ull
// GTask.aux of gather_bits: no NULL counter.
#define NO_COUNTER 0xffffffffffffffffull

// Rows (elements, bytes: the task's unit) src..src+len of source `batch`
// go to dst..dst+len of the output.
struct GRun {
    u64 src;
    u64 dst;
    u64 len;
    u64 batch;
};

struct GTask {
    u64 runs;   // offset in tab of the GRun array
    u64 nruns;
    u64 srcs;   // offset in tab of one u64 base address per source batch
    u64 aux;    // rebase: offset of one i64 delta per run; bits: offset of
                // the u64 NULL counter (NO_COUNTER: none); fetch: first
                // result pair
    u64 dst;    // offset in out of the output buffer
    u64 total;  // output elements
    u64 tail;   // rebase: value at element `total` (FLAG_TAIL)
    u64 start;  // first work unit
    u64 width;  // bytes per element (copy, rebase, fetch)
    u64 flags;
};

__device__ __forceinline__ u64 min64(u64 a, u64 b) { return a < b ? a : b; }
__device__ __forceinline__ u64 max64(u64 a, u64 b) { return a > b ? a : b; }

// The task owning `unit`: the last one whose start is <= unit (tasks
// without units share their start with the next one, which owns it).
__device__ __forceinline__ u32 find_task(const GTask* t, u32 n, u64 unit) {
    u32 lo = 0, hi = n - 1;
    while (lo < hi) {
        u32 mid = (lo + hi + 1) >> 1;
        if (t[mid].start <= unit) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// The run holding output position `pos`: the last one starting at or
// before it (n >= 1).
__device__ __forceinline__ u64 find_run(const GRun* r, u64 n, u64 pos) {
    u64 lo = 0, hi = n - 1;
    while (lo < hi) {
        u64 mid = (lo + hi + 1) >> 1;
        if (r[mid].dst <= pos) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// ---------------------------------------------------------------------------
// Byte copies, one warp per call: `n` bytes from s to d, any alignment.
// Source and destination at the same address mod 16 (whole batches, runs
// at matching positions): 16-byte words; same mod 4: 4-byte words;
// otherwise each 4-byte destination word is shifted out of two aligned
// source words. Head and tail bytes are stored one by one, because the
// neighbouring bytes belong to other runs, written by other warps.
// ---------------------------------------------------------------------------

template <typename T, u32 A>
__device__ __forceinline__ void copy_same(u8* __restrict__ d, const u8* __restrict__ s, u64 n, u32 lane) {
    u64 head = (A - ((u64)d & (A - 1))) & (A - 1);
    if (head > n) head = n;
    if (lane < head) d[lane] = s[lane];
    u64 m = (n - head) / A;
    T* dv = (T*)(d + head);
    const T* sv = (const T*)(s + head);
    u64 i = lane;
    // Four loads in flight per lane before their stores.
    for (; i + 96 < m; i += 128) {
        T v0 = sv[i], v1 = sv[i + 32], v2 = sv[i + 64], v3 = sv[i + 96];
        dv[i] = v0;
        dv[i + 32] = v1;
        dv[i + 64] = v2;
        dv[i + 96] = v3;
    }
    for (; i < m; i += 32) dv[i] = sv[i];
    u64 done = head + m * A;
    if (lane < n - done) d[done + lane] = s[done + lane];
}

__device__ __forceinline__ void copy_shifted(u8* __restrict__ d, const u8* __restrict__ s, u64 n, u32 lane) {
    u64 head = (4 - ((u64)d & 3)) & 3;
    if (head > n) head = n;
    if (lane < head) d[lane] = s[lane];
    u64 m = (n - head) / 4;
    u32* dv = (u32*)(d + head);
    u64 sa = (u64)(s + head);
    // Not 0: the source is not 4-aligned when the destination is.
    u32 sh = (u32)(sa & 3) * 8;
    const u32* sw = (const u32*)(sa & ~3ull);
    u64 i = lane;
    for (; i + 96 < m; i += 128) {
        u32 a0 = sw[i], b0 = sw[i + 1], a1 = sw[i + 32], b1 = sw[i + 33];
        u32 a2 = sw[i + 64], b2 = sw[i + 65], a3 = sw[i + 96], b3 = sw[i + 97];
        dv[i] = __funnelshift_r(a0, b0, sh);
        dv[i + 32] = __funnelshift_r(a1, b1, sh);
        dv[i + 64] = __funnelshift_r(a2, b2, sh);
        dv[i + 96] = __funnelshift_r(a3, b3, sh);
    }
    // Word i + 1 holds the last bytes of destination word i (sh > 0).
    for (; i < m; i += 32) dv[i] = __funnelshift_r(sw[i], sw[i + 1], sh);
    u64 done = head + m * 4;
    if (lane < n - done) d[done + lane] = s[done + lane];
}

__device__ __forceinline__ void warp_copy(u8* d, const u8* s, u64 n, u32 lane) {
    u64 x = (u64)d ^ (u64)s;
    if ((x & 15) == 0) copy_same<uint4, 16>(d, s, n, lane);
    else if ((x & 3) == 0) copy_same<u32, 4>(d, s, n, lane);
    else copy_shifted(d, s, n, lane);
}

// Fixed-width values and variable-width bytes: tile of COPY_TILE output
// bytes per warp; each run piece inside it copied by the whole warp.
extern "C" __global__ void __launch_bounds__(256) gather_copy(u8* tab, u8* out, u64 tasks_at, u32 ntasks, u64 nunits) {
    const GTask* tasks = (const GTask*)(tab + tasks_at);
    u32 lane = threadIdx.x & 31;
    u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 unit = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; unit < nunits; unit += nwarps) {
        const GTask t = tasks[find_task(tasks, ntasks, unit)];
        const GRun* runs = (const GRun*)(tab + t.runs);
        const u64* srcs = (const u64*)(tab + t.srcs);
        u64 w = t.width;
        u64 t0 = (unit - t.start) * COPY_TILE;
        u64 t1 = min64(t0 + COPY_TILE, t.total * w);
        for (u64 r = find_run(runs, t.nruns, t0 / w); r < t.nruns; ++r) {
            GRun run = runs[r];
            u64 lo = run.dst * w;
            if (lo >= t1) break;
            u64 a = max64(lo, t0), b = min64(lo + run.len * w, t1);
            if (a >= b) continue;
            const u8* s = (const u8*)(srcs[run.batch] + run.src * w + (a - lo));
            warp_copy(out + t.dst + a, s, b - a, lane);
        }
    }
}

// ---------------------------------------------------------------------------
// Bitmaps (validity, boolean values): one output word per lane, assembled
// from the runs covering its 32 bits, each piece shifted out of two aligned
// source words. A source base of 0 is a batch without a validity bitmap:
// all ones. NULLs (zero bits below `total`) are counted per warp, one
// atomic per 1024 rows.
// ---------------------------------------------------------------------------

// `k` (1..32) bits of the bitmap at `base` from bit `pos` on, LSB first.
__device__ __forceinline__ u32 read_bits(u64 base, u64 pos, u32 k) {
    // Any byte alignment of the bitmap: read aligned words, shift the
    // misalignment into the bit position.
    const u32* w = (const u32*)(base & ~3ull);
    u64 p = pos + (base & 3) * 8;
    u64 wi = p >> 5;
    u32 s = (u32)(p & 31);
    u32 lo = w[wi];
    // The next word only when the bits reach into it (it may be past the
    // bitmap's end otherwise).
    u32 hi = (s + k > 32) ? w[wi + 1] : 0;
    u32 x = __funnelshift_r(lo, hi, s);
    return k == 32 ? x : (x & ((1u << k) - 1));
}

extern "C" __global__ void __launch_bounds__(256) gather_bits(u8* tab, u8* out, u64 tasks_at, u32 ntasks, u64 nunits) {
    const GTask* tasks = (const GTask*)(tab + tasks_at);
    u32 lane = threadIdx.x & 31;
    u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    // Warp-uniform loop: every lane reaches the reduction below.
    for (u64 unit = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; unit < nunits; unit += nwarps) {
        const GTask t = tasks[find_task(tasks, ntasks, unit)];
        const GRun* runs = (const GRun*)(tab + t.runs);
        const u64* srcs = (const u64*)(tab + t.srcs);
        u64 word = (unit - t.start) * 32 + lane;
        u64 lo = word * 32;
        u32 nulls = 0;
        if (lo < t.total) {
            u64 hi = min64(lo + 32, t.total);
            u32 v = 0;
            u64 pos = lo;
            for (u64 r = find_run(runs, t.nruns, lo); pos < hi && r < t.nruns; ++r) {
                GRun run = runs[r];
                u64 end = run.dst + run.len;
                if (end <= pos) continue;
                u32 k = (u32)(min64(end, hi) - pos);
                u64 base = srcs[run.batch];
                u32 bits = base ? read_bits(base, run.src + (pos - run.dst), k)
                                : (k == 32 ? 0xffffffffu : ((1u << k) - 1));
                v |= bits << (u32)(pos - lo);
                pos += k;
            }
            ((u32*)(out + t.dst))[word] = v;
            nulls = (u32)(hi - lo) - (u32)__popc(v);
        }
        if (t.aux != NO_COUNTER) {
#ifdef GATHER_TWIN
            if (nulls) atomicAdd((unsigned long long*)(tab + t.aux), (unsigned long long)nulls);
#else
            // Every lane of this unit belongs to task t (units never span
            // tasks), so one sum per warp.
            for (int o = 16; o > 0; o >>= 1) nulls += __shfl_xor_sync(0xffffffffu, nulls, o);
            if (lane == 0 && nulls) atomicAdd((unsigned long long*)(tab + t.aux), (unsigned long long)nulls);
#endif
        }
    }
}

// ---------------------------------------------------------------------------
// Rebased integers: offsets (value - first offset of the run + output
// position of the run's first element) and dictionary keys (+ the source
// dictionary's position in the output dictionary). The per-run delta is
// planned on the host; arithmetic wraps at the element width.
// ---------------------------------------------------------------------------

__device__ __forceinline__ u64 load_w(const u8* p, u64 i, u64 w) {
    switch (w) {
        case 1: return p[i];
        case 2: return ((const u16*)p)[i];
        case 4: return ((const u32*)p)[i];
        default: return ((const u64*)p)[i];
    }
}

__device__ __forceinline__ void store_w(u8* p, u64 i, u64 w, u64 v) {
    switch (w) {
        case 1: p[i] = (u8)v; break;
        case 2: ((u16*)p)[i] = (u16)v; break;
        case 4: ((u32*)p)[i] = (u32)v; break;
        default: ((u64*)p)[i] = v; break;
    }
}

extern "C" __global__ void __launch_bounds__(256) gather_rebase(u8* tab, u8* out, u64 tasks_at, u32 ntasks, u64 nunits) {
    const GTask* tasks = (const GTask*)(tab + tasks_at);
    u32 lane = threadIdx.x & 31;
    u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 unit = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; unit < nunits; unit += nwarps) {
        const GTask t = tasks[find_task(tasks, ntasks, unit)];
        const GRun* runs = (const GRun*)(tab + t.runs);
        const u64* srcs = (const u64*)(tab + t.srcs);
        const i64* deltas = (const i64*)(tab + t.aux);
        u8* dst = out + t.dst;
        u64 w = t.width;
        u64 e0 = (unit - t.start) * REBASE_TILE;
        u64 e1 = min64(e0 + REBASE_TILE, t.total);
        if (e0 < e1) {
            for (u64 r = find_run(runs, t.nruns, e0); r < t.nruns; ++r) {
                GRun run = runs[r];
                if (run.dst >= e1) break;
                u64 a = max64(run.dst, e0), b = min64(run.dst + run.len, e1);
                if (a >= b) continue;
                const u8* src = (const u8*)srcs[run.batch];
                u64 d = (u64)deltas[r];
                // Four loads in flight per lane before their stores.
                for (u64 i = a + lane; i < b; i += 128) {
                    u64 v[4];
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        u64 k = i + 32 * j;
                        v[j] = k < b ? load_w(src, run.src + (k - run.dst), w) : 0;
                    }
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        u64 k = i + 32 * j;
                        if (k < b) store_w(dst, k, w, v[j] + d);
                    }
                }
            }
        }
        // Offsets have one more entry than rows: the end of the last value.
        if ((t.flags & FLAG_TAIL) && unit == t.start && lane == 0) store_w(dst, t.total, w, t.tail);
    }
}

// ---------------------------------------------------------------------------
// Run boundaries: for every run of a task, the source offsets at its first
// row and one past its last (the host sizes the values and child runs from
// them). One thread per run.
// ---------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256) gather_fetch(u8* tab, u8* out, u64 tasks_at, u32 ntasks, u64 nunits) {
    const GTask* tasks = (const GTask*)(tab + tasks_at);
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < nunits; i += stride) {
        const GTask t = tasks[find_task(tasks, ntasks, i)];
        const GRun* runs = (const GRun*)(tab + t.runs);
        const u64* srcs = (const u64*)(tab + t.srcs);
        u64 r = i - t.start;
        GRun run = runs[r];
        const u8* src = (const u8*)srcs[run.batch];
        u64* o = (u64*)out + 2 * (t.aux + r);
        o[0] = load_w(src, run.src, t.width);
        o[1] = load_w(src, run.src + run.len, t.width);
    }
}

// gpupgparser heap page kernels: PostgreSQL heap pages -> binary COPY rows,
// which the decode kernels (decode.cu, compiled in the same module) then
// turn into Arrow columns.
//
// A port of the common forms of gpupg_format::heap::transcode (the CPU
// converter, which is the reference): line pointers, tuple headers, null
// bitmaps, alignment, 1-byte and 4-byte varlena headers, dropped
// attributes, tuples with fewer attributes (the missing value or NULL), and
// the send formats of SendForm (jsonb's text by jsonb.cuh, arrays by
// array.cuh; text-like values (HF_VARLENA) compressed inline with pglz or
// LZ4 decompressed by inflate.cuh). Anything else on a page (a TOAST
// pointer, another compressed value or a compressed array element, an
// unknown enum OID, a jsonb nested deeper than jsonb.cuh follows, any
// inconsistency) flags the whole page: the host converts it with the CPU
// converter, which gives its rows or the exact reason it falls back to
// COPY. So for every page it does not flag, the bytes here must equal the
// CPU converter's.
//
// One block per page (grid-stride over pages); the page is first copied
// into shared memory, then one thread per line pointer deforms its tuple.
// Pass 1 (heap_sizes) writes each line pointer's row length (0: no row) and
// a 0/1 row count; the host scans both; pass 2 (heap_write) writes the rows
// at the scanned offsets. Tables with an array column take the *_arrays
// variants of both (end of this file).

#include "common.cuh"
#include "inflate.cuh"

#define HF_DROPPED 0
#define HF_BOOL 1
#define HF_SWAP2 2
#define HF_SWAP4 3
#define HF_SWAP8 4
#define HF_INTERVAL 5
#define HF_RAW 6
#define HF_VARLENA 7
#define HF_NULPADDED 8
#define HF_CSTRING 9
#define HF_NUMERIC 10
#define HF_ENUM 11
#define HF_JSONB 12
#define HF_ARRAY 13

// Deformed attribute positions: start | len << 16 (both < 32768), or one of
// these.
#define POS_NULL 0xffffffffu
#define POS_MISSING 0xfffffffeu
#define POS_BAD 0xfffffffdu

#define HEAP_MAX_ATTS 64

// The page's shared-memory copy (the CPU twin of these kernels, in
// crates/gpu/tests/cpu_twin, defines it as a plain array).
#ifndef HEAP_SMEM
#define HEAP_SMEM extern __shared__ __align__(16) u8 smem[]
#endif
#define TUPLE_HEADER 23

// struct HeapAttr in src/decode/heap.rs.
struct HeapAttr {
    i16 attlen;
    u8 align_mask;
    u8 form;
    i32 missing_len;  // -1: NULL
    u32 missing_off;
    // HF_ARRAY: the elements' form, alignment and typlen.
    u8 elem_form;
    u8 elem_align_mask;
    i16 elem_typlen;
};

// struct HeapArgs in src/decode/heap.rs.
struct HeapArgs {
    const u8* pages;
    const u32* page_at;    // page p is at pages + page_at[p] * block_size
    const u32* slot_base;  // npages + 1 entries: line pointer slots of page p
    const HeapAttr* attrs;
    const u16* outputs;
    const u8* missing;
    const u32* enum_oids;  // sorted
    const u32* enum_off;   // nenum + 1 offsets into enum_blob
    const u8* enum_blob;
    u32* row_len;          // 2 * nslots: lengths, then 0/1 row counts
    const u64* incl;       // inclusive scans of row_len (2 * nslots)
    u8* out;
    u32* starts;
    u32* ends;
    u32* flagged;          // [0]: count, then page indexes
    const u32* check_blocks;  // data checksums: page p's block number; NULL: not verified
    u32 npages;
    u32 nslots;
    u32 block_size;
    u32 natts;
    u32 nout;
    u32 nenum;
};

__device__ __forceinline__ u32 ld16le(const u8* p) { return (u32)p[0] | ((u32)p[1] << 8); }
__device__ __forceinline__ u32 ld32le(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// PostgreSQL's data page checksum (storage/checksum_impl.h): the page is
// read as rows of 32 little-endian words, lane j hashing word j of every
// row from its own seed; pd_checksum (bytes 8..10) counts as zero.
__device__ const u32 CHECKSUM_SEEDS[32] = {
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756};

__device__ __forceinline__ u32 checksum_comp(u32 sum, u32 v) {
    u32 t = sum ^ v;
    return (t * 16777619u) ^ (t >> 17);
}

// Lane `lane`'s final sum over the page in `pg` (two rounds of zeros mixed
// in); the page checksum is the lanes XORed with the block number.
__device__ u32 checksum_lane(const u8* pg, u32 lane, u32 block_size) {
    u32 sum = CHECKSUM_SEEDS[lane];
    for (u32 row = 0; row < block_size / 128; row++) {
        u32 v = ld32le(pg + row * 128 + lane * 4);
        if (row == 0 && lane == 2) v &= 0xffff0000u;
        sum = checksum_comp(sum, v);
    }
    return checksum_comp(checksum_comp(sum, 0), 0);
}

// Copies the page into shared memory (16 bytes per thread and step; the
// page and the buffer are 16-byte aligned).
__device__ void load_page(u8* smem, const u8* g, u32 block_size) {
    for (u32 i = threadIdx.x * 16; i < block_size; i += blockDim.x * 16) {
        *(uint4*)(smem + i) = *(const uint4*)(g + i);
    }
}

// Deforms the tuple of line pointer `lp` (0-based) of the page in `pg`
// into pos[0..natts). Returns the tuple start, or -1 when the line pointer
// is not LP_NORMAL (no row), or -2 when anything is wrong or not handled
// here (the page is flagged).
__device__ int deform(const u8* pg, u32 lp, const HeapArgs& a, u32* pos) {
    u32 w = ld32le(pg + 24 + 4 * lp);
    u32 off = w & 0x7fff, flags = (w >> 15) & 3, len = w >> 17;
    if (flags != 1) return -1;
    u32 upper = ld16le(pg + 14), special = ld16le(pg + 16);
    if (len < TUPLE_HEADER || off < upper || off + len > special || (off & 7) != 0) return -2;
    const u8* t = pg + off;
    u32 natts_t = ld16le(t + 18) & 0x07ff;
    u32 infomask = ld16le(t + 20);
    u32 hoff = t[22];
    bool has_nulls = (infomask & 1) != 0;
    if (hoff < TUPLE_HEADER || (hoff & 7) != 0 || hoff > len) return -2;
    if (has_nulls && TUPLE_HEADER + (natts_t + 7) / 8 > hoff) return -2;
    const u8* data = t + hoff;
    u32 dlen = len - hoff;
    u32 n = natts_t < a.natts ? natts_t : a.natts;
    u32 o = 0;
    for (u32 i = 0; i < n; i++) {
        if (has_nulls && (t[TUPLE_HEADER + i / 8] & (1u << (i % 8))) == 0) {
            pos[i] = POS_NULL;
            continue;
        }
        HeapAttr at = a.attrs[i];
        u32 mask = at.align_mask;
        u32 l;
        if (at.attlen > 0) {
            o = (o + mask) & ~mask;
            l = (u32)at.attlen;
        } else if (at.attlen == -1) {
            // att_align_pointer: a nonzero byte starts a 1-byte header.
            if (!(o < dlen && data[o] != 0)) o = (o + mask) & ~mask;
            if (o >= dlen) return -2;
            u32 b = data[o];
            if (b == 0x01) return -2;  // TOAST pointer
            if (b & 1) {
                l = b >> 1;
            } else {
                if (dlen - o < 4) return -2;
                u32 word = ld32le(data + o);
                l = word >> 2;
                if ((word & 3) != 0) {
                    // Compressed inline (its header and va_tcinfo: 8 bytes):
                    // decompressed by field_size() and put_field() for the
                    // byte-copied form only.
                    if (at.form != HF_VARLENA || l < 8) return -2;
                } else if (l < 4) {
                    return -2;
                }
            }
        } else if (at.attlen == -2) {
            o = (o + mask) & ~mask;
            u32 k = o;
            while (k < dlen && data[k] != 0) k++;
            if (k >= dlen) return -2;
            l = k - o + 1;
        } else {
            return -2;
        }
        if (o > dlen || l > dlen - o) return -2;
        pos[i] = (hoff + o) | (l << 16);
        o += l;
    }
    for (u32 i = n; i < a.natts; i++) pos[i] = POS_MISSING;
    return (int)off;
}

// The label of enum value `oid`, or -1.
__device__ int enum_find(const HeapArgs& a, u32 oid) {
    int lo = 0, hi = (int)a.nenum - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        u32 v = a.enum_oids[mid];
        if (v == oid) return mid;
        if (v < oid) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

// Numeric header fields as numeric_send sends them, and the start of the
// digits in the payload; false when the payload is not a valid numeric.
__device__ bool numeric_head(const u8* p, u32 plen, u32* ndigits, u32* weight, u32* sign,
                             u32* dscale, u32* start) {
    if (plen < 2) return false;
    u32 h = ld16le(p);
    if (h & 0x8000) {
        *weight = (h & 0x0040) ? ((~0x003fu | (h & 0x003f)) & 0xffff) : (h & 0x003f);
        *dscale = (h & 0x1f80) >> 7;
        if ((h & 0xc000) == 0xc000) {
            u32 s = h & 0xf000;
            if (s != 0xc000 && s != 0xd000 && s != 0xf000) return false;
            *sign = s;
        } else {
            *sign = (h & 0x2000) ? 0x4000 : 0;
        }
        *start = 2;
    } else {
        if (plen < 4) return false;
        *weight = ld16le(p + 2);
        *sign = h & 0xc000;
        *dscale = h & 0x3fff;
        *start = 4;
    }
    u32 d = plen - *start;
    if (d & 1) return false;
    *ndigits = d / 2;
    return true;
}

// The payload of a varlena datum already checked by deform().
__device__ __forceinline__ void varlena_payload(const u8* d, u32 l, const u8** p, u32* plen) {
    u32 h = (d[0] & 1) ? 1 : 4;
    *p = d + h;
    *plen = l - h;
}

// jsonb_text_len and jsonb_text_write (HF_JSONB), which use the helpers
// above.
#include "jsonb.cuh"

// Bytes of the field (length word included) of the value d[0..l) in form
// `form` (any but HF_ARRAY), or -1 when the page must be flagged. A varlena
// value's header is already checked (by deform() or array_size()).
__device__ __forceinline__ long long value_size(u32 form, const u8* d, u32 l, const HeapArgs& a) {
    switch (form) {
        case HF_BOOL: return l >= 1 ? 5 : -1;
        case HF_SWAP2: return l == 2 ? 6 : -1;
        case HF_SWAP4: return l == 4 ? 8 : -1;
        case HF_SWAP8: return l == 8 ? 12 : -1;
        case HF_INTERVAL: return l == 16 ? 20 : -1;
        case HF_RAW: return 4 + l;
        case HF_VARLENA: {
            const u8* p; u32 pl;
            varlena_payload(d, l, &p, &pl);
            return 4 + pl;
        }
        case HF_NULPADDED: {
            u32 k = 0;
            while (k < l && d[k] != 0) k++;
            return 4 + k;
        }
        case HF_CSTRING: return 4 + (l - 1);
        case HF_NUMERIC: {
            const u8* p; u32 pl;
            varlena_payload(d, l, &p, &pl);
            u32 nd, w, s, ds, st;
            if (!numeric_head(p, pl, &nd, &w, &s, &ds, &st)) return -1;
            return 4 + 8 + 2 * nd;
        }
        case HF_ENUM: {
            if (l != 4) return -1;
            int k = enum_find(a, ld32le(d));
            if (k < 0) return -1;
            return 4 + (a.enum_off[k + 1] - a.enum_off[k]);
        }
        case HF_JSONB: {
            // jsonb_send: a version byte 1, then the text.
            const u8* p; u32 pl;
            varlena_payload(d, l, &p, &pl);
            bool ok;
            u32 n = jsonb_text_len(p, pl, &ok);
            return ok ? 4 + 1 + (long long)n : -1;
        }
        default: return -1;
    }
}

__device__ __forceinline__ u8* put_be32(u8* o, u32 v) {
    o[0] = (u8)(v >> 24); o[1] = (u8)(v >> 16); o[2] = (u8)(v >> 8); o[3] = (u8)v;
    return o + 4;
}
__device__ __forceinline__ u8* put_be16(u8* o, u32 v) {
    o[0] = (u8)(v >> 8); o[1] = (u8)v;
    return o + 2;
}
__device__ __forceinline__ u8* put_bytes(u8* o, const u8* s, u32 n) {
    for (u32 k = 0; k < n; k++) o[k] = s[k];
    return o + n;
}
__device__ __forceinline__ u8* put_reversed(u8* o, const u8* s, u32 n) {
    for (u32 k = 0; k < n; k++) o[k] = s[n - 1 - k];
    return o + n;
}

// Writes the field of the value d[0..l) in form `form` (any but HF_ARRAY;
// checked by value_size()).
__device__ __forceinline__ u8* put_value(u8* o, u32 form, const u8* d, u32 l, const HeapArgs& a) {
    switch (form) {
        case HF_BOOL:
            o = put_be32(o, 1);
            *o = d[0] != 0;
            return o + 1;
        case HF_SWAP2: return put_reversed(put_be32(o, 2), d, 2);
        case HF_SWAP4: return put_reversed(put_be32(o, 4), d, 4);
        case HF_SWAP8: return put_reversed(put_be32(o, 8), d, 8);
        case HF_INTERVAL:
            o = put_be32(o, 16);
            o = put_reversed(o, d, 8);
            o = put_reversed(o, d + 8, 4);
            return put_reversed(o, d + 12, 4);
        case HF_RAW: return put_bytes(put_be32(o, l), d, l);
        case HF_VARLENA: {
            const u8* p; u32 pl;
            varlena_payload(d, l, &p, &pl);
            return put_bytes(put_be32(o, pl), p, pl);
        }
        case HF_NULPADDED: {
            u32 k = 0;
            while (k < l && d[k] != 0) k++;
            return put_bytes(put_be32(o, k), d, k);
        }
        case HF_CSTRING: return put_bytes(put_be32(o, l - 1), d, l - 1);
        case HF_NUMERIC: {
            const u8* p; u32 pl;
            varlena_payload(d, l, &p, &pl);
            u32 nd = 0, w = 0, s = 0, ds = 0, st = 0;
            numeric_head(p, pl, &nd, &w, &s, &ds, &st);
            o = put_be32(o, 8 + 2 * nd);
            o = put_be16(o, nd);
            o = put_be16(o, w);
            o = put_be16(o, s);
            o = put_be16(o, ds);
            for (u32 k = 0; k < nd; k++) {
                o[0] = p[st + 2 * k + 1];
                o[1] = p[st + 2 * k];
                o += 2;
            }
            return o;
        }
        case HF_ENUM: {
            int k = enum_find(a, ld32le(d));
            u32 from = a.enum_off[k], n = a.enum_off[k + 1] - from;
            return put_bytes(put_be32(o, n), a.enum_blob + from, n);
        }
        case HF_JSONB: {
            // The length word once the text is written (pass 1 measured
            // it, but only the row's total was kept).
            const u8* p; u32 pl;
            varlena_payload(d, l, &p, &pl);
            o[4] = 1;
            u8* end = jsonb_text_write(p, pl, o + 5);
            put_be32(o, (u32)(end - o - 4));
            return end;
        }
        default: return o;
    }
}

// array_size and array_write (HF_ARRAY), which use value_size and
// put_value for the elements.
#include "array.cuh"

// A text-like value compressed inline (d[0..l), checked by deform()):
// va_tcinfo holds the raw size (low 30 bits) and the method (top 2: 0
// pglz, 1 LZ4; the CPU refuses the others). The field's bytes, or -1 when
// the stream does not decompress to exactly the raw size.
__device__ __forceinline__ long long compressed_size(const u8* d, u32 l) {
    u32 tcinfo = ld32le(d + 4), raw = tcinfo & 0x3fffffffu, method = tcinfo >> 30;
    bool ok = method == 0 ? pglz_check(d + 8, l - 8, raw)
                          : method == 1 && lz4_check(d + 8, l - 8, raw);
    return ok ? 4 + (long long)raw : -1;
}

// Writes the field of a compressed value compressed_size() accepted.
__device__ __forceinline__ u8* put_compressed(u8* o, const u8* d, u32 l) {
    u32 tcinfo = ld32le(d + 4), raw = tcinfo & 0x3fffffffu;
    o = put_be32(o, raw);
    if (tcinfo >> 30 == 0) {
        pglz_write(d + 8, l - 8, o, raw);
    } else {
        lz4_write(d + 8, l - 8, o, raw);
    }
    return o + raw;
}

// Bytes of the field of output attribute `i` (length word included), or
// -1 when the page must be flagged (an array too, unless ARRAYS).
template <bool ARRAYS>
__device__ long long field_size(const u8* t0, u32 posv, const HeapArgs& a, u32 i) {
    if (posv == POS_NULL) return 4;
    HeapAttr at = a.attrs[i];
    if (posv == POS_MISSING) return 4 + (at.missing_len < 0 ? 0 : at.missing_len);
    const u8* d = t0 + (posv & 0xffff);
    u32 l = posv >> 16;
    if (ARRAYS && at.form == HF_ARRAY) return array_size(d, l, at, a);
    // Only top-level values: array.cuh flags compressed elements itself.
    if (at.form == HF_VARLENA && (d[0] & 3) == 2) return compressed_size(d, l);
    return value_size(at.form, d, l, a);
}

// Writes the field of output attribute `i` (checked by field_size()).
template <bool ARRAYS>
__device__ u8* put_field(u8* o, const u8* t0, u32 posv, const HeapArgs& a, u32 i) {
    if (posv == POS_NULL) return put_be32(o, 0xffffffffu);
    HeapAttr at = a.attrs[i];
    if (posv == POS_MISSING) {
        if (at.missing_len < 0) return put_be32(o, 0xffffffffu);
        o = put_be32(o, (u32)at.missing_len);
        return put_bytes(o, a.missing + at.missing_off, (u32)at.missing_len);
    }
    const u8* d = t0 + (posv & 0xffff);
    u32 l = posv >> 16;
    if (ARRAYS && at.form == HF_ARRAY) return array_write(o, d, l, at, a);
    if (at.form == HF_VARLENA && (d[0] & 3) == 2) return put_compressed(o, d, l);
    return put_value(o, at.form, d, l, a);
}

// The kernels' bodies, with or without arrays (see the kernels at the end).
template <bool ARRAYS>
__device__ __forceinline__ void heap_sizes_body(const HeapArgs& a) {
    HEAP_SMEM;
    __shared__ u32 s_bad;
    __shared__ u32 s_sums[32];
    u32 pos[HEAP_MAX_ATTS];
    for (u32 p = blockIdx.x; p < a.npages; p += gridDim.x) {
        load_page(smem, a.pages + (u64)a.page_at[p] * a.block_size, a.block_size);
        if (threadIdx.x == 0) s_bad = 0;
        __syncthreads();
        // Pages read straight into device memory (cuFile) were never on the
        // host: their checksums are verified here. A mismatch flags the
        // page, and the host, verifying it again, reads it through COPY.
        if (a.check_blocks) {
            for (u32 lane = threadIdx.x; lane < 32; lane += blockDim.x) {
                s_sums[lane] = checksum_lane(smem, lane, a.block_size);
            }
            __syncthreads();
            if (threadIdx.x == 0) {
                u32 c = a.check_blocks[p];
                for (u32 k = 0; k < 32; k++) c ^= s_sums[k];
                if (c % 65535u + 1u != ld16le(smem + 8)) s_bad = 1;
            }
            __syncthreads();
        }
        u32 base = a.slot_base[p], nitems = a.slot_base[p + 1] - base;
        u32 lower = ld16le(smem + 12), upper = ld16le(smem + 14), special = ld16le(smem + 16);
        bool page_ok = !s_bad && lower >= 24 && (lower - 24) / 4 == nitems &&
                       ((lower - 24) & 3) == 0 && lower <= upper && upper <= special &&
                       special <= a.block_size;
        for (u32 lp = threadIdx.x; lp < nitems; lp += blockDim.x) {
            u32 len = 0;
            bool bad = !page_ok;
            if (!bad) {
                int t = deform(smem, lp, a, pos);
                if (t == -2) {
                    bad = true;
                } else if (t >= 0) {
                    long long total = 2;
                    for (u32 c = 0; c < a.nout && !bad; c++) {
                        u32 i = a.outputs[c];
                        long long f = field_size<ARRAYS>(smem + t, pos[i], a, i);
                        if (f < 0) bad = true; else total += f;
                    }
                    if (total > 0x7fffffffll) bad = true;
                    len = (u32)total;
                }
            }
            if (bad) {
                s_bad = 1;
                len = 0;
            }
            a.row_len[base + lp] = len;
            a.row_len[a.nslots + base + lp] = len > 0 ? 1 : 0;
        }
        __syncthreads();
        if (s_bad) {
            for (u32 lp = threadIdx.x; lp < nitems; lp += blockDim.x) {
                a.row_len[base + lp] = 0;
                a.row_len[a.nslots + base + lp] = 0;
            }
            if (threadIdx.x == 0) {
                u32 k = atomicAdd(a.flagged, 1u);
                a.flagged[1 + k] = p;
            }
        }
        // The next page overwrites the shared copy.
        __syncthreads();
    }
}

template <bool ARRAYS>
__device__ __forceinline__ void heap_write_body(const HeapArgs& a) {
    HEAP_SMEM;
    u32 pos[HEAP_MAX_ATTS];
    for (u32 p = blockIdx.x; p < a.npages; p += gridDim.x) {
        u32 base = a.slot_base[p], nitems = a.slot_base[p + 1] - base;
        // A flagged page (all lengths 0) has nothing to write.
        if (nitems == 0) continue;
        u64 before = base == 0 ? 0 : a.incl[a.nslots + base - 1];
        if (a.incl[a.nslots + base + nitems - 1] == before) {
            continue;
        }
        load_page(smem, a.pages + (u64)a.page_at[p] * a.block_size, a.block_size);
        __syncthreads();
        for (u32 lp = threadIdx.x; lp < nitems; lp += blockDim.x) {
            u32 len = a.row_len[base + lp];
            if (len == 0) continue;
            int t = deform(smem, lp, a, pos);
            if (t < 0) continue;
            u32 row = (u32)(a.incl[a.nslots + base + lp] - 1);
            u32 end = (u32)a.incl[base + lp];
            u32 start = end - len;
            a.starts[row] = start;
            a.ends[row] = end;
            u8* o = put_be16(a.out + start, a.nout);
            for (u32 c = 0; c < a.nout; c++) {
                u32 i = a.outputs[c];
                o = put_field<ARRAYS>(o, smem + t, pos[i], a, i);
            }
        }
        __syncthreads();
    }
}

// Tables without an array column take the kernels without the array path:
// inlined, it would cost them registers (occupancy) for nothing. With one,
// the host launches the *_arrays pair.
extern "C" __global__ void __launch_bounds__(128) heap_sizes(HeapArgs a) {
    heap_sizes_body<false>(a);
}
// At least 16 blocks per SM: 32 registers, the occupancy it had before the
// decompressors (inflate.cuh) were inlined, with no more spilling (ptxas
// -v, sm_90); left free, ptxas takes 40 (12 blocks).
extern "C" __global__ void __launch_bounds__(128, 16) heap_write(HeapArgs a) {
    heap_write_body<false>(a);
}
extern "C" __global__ void __launch_bounds__(128) heap_sizes_arrays(HeapArgs a) {
    heap_sizes_body<true>(a);
}
extern "C" __global__ void __launch_bounds__(128) heap_write_arrays(HeapArgs a) {
    heap_write_body<true>(a);
}

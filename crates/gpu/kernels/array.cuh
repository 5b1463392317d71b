// Arrays in the heap page kernels (HF_ARRAY): the on-disk ArrayType to
// array_send's format, a port of `array()` in
// gpupg_format::heap::transcode (the reference). The header is validated
// exactly as there (dimensions, item count, null bitmap, data offset); each
// element's length is found from the element's typlen (and its varlena
// header: an element stored out of line or compressed flags the page) and
// its bytes are converted by value_size / put_value of heap.cu, so every
// scalar form converts inside arrays too.
//
// Included by heap.cu after value_size and put_value. Only the kernels'
// array variants (heap_sizes_arrays, heap_write_arrays: launched for the
// tables that output an array column) use these functions, so the kernels
// of the other tables keep their registers: on sm_90 (NVRTC 13, ptxas -v)
// heap_sizes and heap_write use 32 each, the array variants 47 and 48. Out
// of line (GPUPG_NOINLINE) the array path cost more, 64 and 56, as a
// callee's registers count for every kernel that calls it.
//
// NVRTC gets this file as an in-memory header named "array.cuh" (see
// src/runtime/nvrtc.rs); the CPU twin finds it beside heap.cu.

// ARRAY_MAX_DIMS and ARRAY_MAX_ELEMENTS of gpupg_format::value (MAXDIM
// and MaxArraySize of PostgreSQL), renamed: decode.cu, compiled in the same
// module, defines its own ARRAY_MAX_*.
#define HEAP_ARRAY_MAX_DIMS 6
#define HEAP_ARRAY_MAX_ELEMENTS (0x3fffffffull / 8)

__device__ __forceinline__ i32 ld32s(const u8* p) { return (i32)ld32le(p); }

// An ArrayType's header as `array()` checks it: its payload p[0..pl) (the
// bytes after the varlena header; ArrayType offsets count from a 4-byte
// header, so offset v is at p[v - 4]).
struct ArrayHead {
    u32 ndim;
    u32 nitems;
    const u8* bitmap;  // NULL: no null bitmap
    u32 data_start;    // ArrayType offset of the first element
};

// Reads and checks the header; false when the CPU converter refuses it.
__device__ __forceinline__ bool array_head(const u8* p, u32 pl, ArrayHead* h) {
    if (pl < 12) return false;
    i32 ndim = ld32s(p), dataoffset = ld32s(p + 4);
    if (ndim < 0 || ndim > HEAP_ARRAY_MAX_DIMS) return false;
    u32 nd = (u32)ndim;
    u32 header_end = 12 + 8 * nd;
    if (pl < header_end) return false;
    // The CPU's product saturates: a zero dimension makes the array empty
    // whatever the others are, and any other product past the limit is
    // refused. Clamping to the limit + 1 keeps that without a 64-bit
    // division (limit * dim < 2^59).
    u64 nitems = nd == 0 ? 0 : 1;
    bool zero = false;
    for (u32 k = 0; k < nd; k++) {
        i32 dim = ld32s(p + 12 + 4 * k);
        if (dim < 0) return false;
        zero |= dim == 0;
        nitems *= (u64)dim;
        if (nitems > HEAP_ARRAY_MAX_ELEMENTS) nitems = HEAP_ARRAY_MAX_ELEMENTS + 1;
    }
    if (zero) nitems = 0;
    if (nitems > HEAP_ARRAY_MAX_ELEMENTS) return false;
    u32 bl = 0;
    h->bitmap = 0;
    u32 data_start;
    if (dataoffset != 0) {
        bl = ((u32)nitems + 7) / 8;
        if (header_end + bl > pl) return false;
        h->bitmap = p + header_end;
        if (dataoffset < 0) return false;
        data_start = (u32)dataoffset;
    } else {
        data_start = (16 + 8 * nd + 7) & ~7u;
    }
    if (data_start < 4 + header_end + bl || data_start > pl + 4) return false;
    h->ndim = nd;
    h->nitems = (u32)nitems;
    h->data_start = data_start;
    return true;
}

// The stored length of the element at p[at..pl) (typlen > 0, a varlena or
// a cstring), or 0 when the CPU converter refuses it or converts it in a way
// the kernels do not (out of line, compressed).
__device__ __forceinline__ u32 array_elem_len(const u8* p, u32 pl, u32 at, i32 typlen) {
    u32 rest = at <= pl ? pl - at : 0;
    const u8* e = p + at;
    u32 len;
    if (typlen > 0) {
        len = (u32)typlen;
    } else if (typlen == -1) {
        if (rest < 1) return 0;
        u32 b = e[0];
        if (b == 0x01) return 0;  // TOAST pointer
        if (b & 1) {
            len = b >> 1;
        } else {
            if (rest < 4) return 0;
            u32 word = ld32le(e);
            if ((word & 3) != 0) return 0;  // compressed
            len = word >> 2;
            if (len < 4) return 0;
        }
    } else {
        u32 k = 0;
        while (k < rest && e[k] != 0) k++;
        if (k >= rest) return 0;
        len = k + 1;
    }
    return len <= rest ? len : 0;
}

__device__ __forceinline__ bool array_is_null(const ArrayHead& h, u32 i) {
    return h.bitmap && (h.bitmap[i / 8] & (1u << (i % 8))) == 0;
}

// Bytes of the array_send field (length word included) of the array datum
// d[0..l) (its varlena header checked by deform()), or -1 when the page
// must be flagged.
__device__ __forceinline__ long long array_size(const u8* d, u32 l, HeapAttr at,
                                              const HeapArgs& a) {
    const u8* p; u32 pl;
    varlena_payload(d, l, &p, &pl);
    ArrayHead h;
    if (!array_head(p, pl, &h)) return -1;
    u32 mask = at.elem_align_mask;
    long long total = 4 + 12 + 8 * (long long)h.ndim;
    u32 v = h.data_start;
    for (u32 i = 0; i < h.nitems; i++) {
        if (array_is_null(h, i)) {
            total += 4;
            continue;
        }
        u32 len = array_elem_len(p, pl, v - 4, at.elem_typlen);
        if (len == 0) return -1;
        long long f = value_size(at.elem_form, p + (v - 4), len, a);
        if (f < 0) return -1;
        total += f;
        v = (v + len + mask) & ~mask;
    }
    return total;
}

// Writes the field of the array datum d[0..l) (checked by array_size()).
__device__ __forceinline__ u8* array_write(u8* o, const u8* d, u32 l, HeapAttr at,
                                         const HeapArgs& a) {
    const u8* p; u32 pl;
    varlena_payload(d, l, &p, &pl);
    ArrayHead h;
    array_head(p, pl, &h);
    u8* f = o;
    o = put_be32(o + 4, h.ndim);
    o = put_be32(o, h.bitmap ? 1 : 0);
    o = put_be32(o, ld32le(p + 8));
    for (u32 k = 0; k < h.ndim; k++) {
        o = put_be32(o, ld32le(p + 12 + 4 * k));
        o = put_be32(o, ld32le(p + 12 + 4 * h.ndim + 4 * k));
    }
    u32 mask = at.elem_align_mask;
    u32 v = h.data_start;
    for (u32 i = 0; i < h.nitems; i++) {
        if (array_is_null(h, i)) {
            o = put_be32(o, 0xffffffffu);
            continue;
        }
        u32 len = array_elem_len(p, pl, v - 4, at.elem_typlen);
        o = put_value(o, at.elem_form, p + (v - 4), len, a);
        v = (v + len + mask) & ~mask;
    }
    // The length word once the elements are written (pass 1 kept only the
    // row's total).
    put_be32(f, (u32)(o - f - 4));
    return o;
}

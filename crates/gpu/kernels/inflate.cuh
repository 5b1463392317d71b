// Decompressors for the values PostgreSQL compresses inline in heap tuples
// (pglz, and LZ4 from PostgreSQL 14 on), for the heap page kernels: one
// thread per value, no shared memory, no recursion.
//
// Their semantics are the CPU converter's, which is the reference
// (gpupg_format::heap::pglz::decompress_append, and heap::lz4 on
// lz4_flex's safe block decoder): a stream the CPU refuses is refused here
// (the kernel flags the page and the CPU gives the reason), a stream the
// CPU accepts gives the same bytes. Both must produce exactly `rawsize`
// bytes. tests/inflate_twin.rs compares the two on many streams.
//
// *_check walks a stream without writing (the sizes pass); *_write writes
// its `rawsize` bytes at `out` (the write pass, for streams *_check
// accepted). Both stay within `src[0..n)` and `out[0..rawsize)` whatever
// the input, and back-references copy byte by byte because they may
// overlap the bytes they produce. Everything is inlined (as calls, the ABI
// cost heap_write more registers than inlining; its launch bounds in
// heap.cu hold it at 32).

#ifndef GPUPG_INFLATE_CUH
#define GPUPG_INFLATE_CUH

#include "common.cuh"

// pglz: groups of one control byte and up to eight items, lowest bit
// first; a clear bit is a literal byte, a set bit a 2- or 3-byte tag
// (length - 3 in the low nibble, 18 meaning an extra length byte follows;
// a 12-bit offset back into the output). Output that reaches `rawsize`
// ends the stream; a tag longer than what is left is cut
// (pglz_decompress's Min(len, destend - dp)); the input must then be used
// up exactly (check_complete).
template <bool WRITE>
__device__ __forceinline__ bool pglz_run(const u8* src, u32 n, u8* out, u32 rawsize) {
    // The CPU refuses a raw size no stream of n bytes could produce (a
    // control byte and eight 3-byte tags of 273 bytes) before decoding.
    if ((u64)rawsize > ((u64)n * (8 * 273) + 24) / 25 + 8 * 273) return false;
    u32 sp = 0, dp = 0;
    while (sp < n && dp < rawsize) {
        u32 ctrl = src[sp++];
        for (u32 bit = 0; bit < 8 && sp < n && dp < rawsize; bit++, ctrl >>= 1) {
            if ((ctrl & 1) == 0) {
                if (WRITE) out[dp] = src[sp];
                dp++;
                sp++;
                continue;
            }
            if (sp + 1 >= n) return false;
            u32 len = (src[sp] & 0x0fu) + 3;
            u32 off = ((u32)(src[sp] & 0xf0u) << 4) | src[sp + 1];
            sp += 2;
            if (len == 18) {
                if (sp >= n) return false;
                len += src[sp++];
            }
            if (off == 0 || off > dp) return false;
            if (len > rawsize - dp) len = rawsize - dp;
            if (WRITE) {
                for (u32 k = 0; k < len; k++) out[dp + k] = out[dp + k - off];
            }
            dp += len;
        }
    }
    return dp == rawsize && sp == n;
}

// Whether the pglz stream src[0..n) decompresses to exactly rawsize bytes.
__device__ __forceinline__ bool pglz_check(const u8* src, u32 n, u32 rawsize) {
    return pglz_run<false>(src, n, nullptr, rawsize);
}

// Decompresses the pglz stream src[0..n) into out[0..rawsize); false (out
// partly written) for a stream pglz_check refuses.
__device__ __forceinline__ bool pglz_write(const u8* src, u32 n, u8* out, u32 rawsize) {
    return pglz_run<true>(src, n, out, rawsize);
}

// An LZ4 length extension (lz4_flex's read_integer): bytes added to *v
// until one is not 255; false when the input ends first. No overflow: n
// (a value on a page) is far below 2^32 / 255.
__device__ __forceinline__ bool lz4_length(const u8* src, u32 n, u32* ip, u32* v) {
    u32 b;
    do {
        if (*ip >= n) return false;
        b = src[(*ip)++];
        *v += b;
    } while (b == 255);
    return true;
}

// One raw LZ4 block, as PostgreSQL stores it (LZ4_compress_default, no
// frame): sequences of a token (literal length high nibble, match length
// - 4 low nibble, 15 meaning extension bytes follow), the literals, a
// 2-byte little-endian offset and the match. The block ends right after a
// sequence's literals; a block that ends anywhere else, an offset of 0 or
// before the output's start, or output beyond rawsize is refused, as
// lz4_flex's safe decoder refuses it. lz4_flex, unlike the reference
// decoder, does not insist that the last 5 bytes be literals.
template <bool WRITE>
__device__ __forceinline__ bool lz4_run(const u8* src, u32 n, u8* out, u32 rawsize) {
    // The CPU's bound on the raw size of n compressed bytes.
    if ((u64)rawsize > (u64)n * 255 + 64) return false;
    u32 ip = 0, op = 0;
    for (;;) {
        if (ip >= n) return false;
        u32 token = src[ip++];
        u32 lit = token >> 4;
        if (lit == 15 && !lz4_length(src, n, &ip, &lit)) return false;
        if (lit > n - ip || lit > rawsize - op) return false;
        if (WRITE) {
            for (u32 k = 0; k < lit; k++) out[op + k] = src[ip + k];
        }
        ip += lit;
        op += lit;
        if (ip >= n) break;
        if (n - ip < 2) return false;
        u32 off = (u32)src[ip] | ((u32)src[ip + 1] << 8);
        ip += 2;
        if (off == 0) return false;
        u32 len = (token & 0x0fu) + 4;
        if (len == 19 && !lz4_length(src, n, &ip, &len)) return false;
        if (len > rawsize - op || off > op) return false;
        if (WRITE) {
            for (u32 k = 0; k < len; k++) out[op + k] = out[op + k - off];
        }
        op += len;
    }
    return op == rawsize;
}

// Whether the LZ4 block src[0..n) decompresses to exactly rawsize bytes.
__device__ __forceinline__ bool lz4_check(const u8* src, u32 n, u32 rawsize) {
    return lz4_run<false>(src, n, nullptr, rawsize);
}

// Decompresses the LZ4 block src[0..n) into out[0..rawsize); false (out
// partly written) for a block lz4_check refuses.
__device__ __forceinline__ bool lz4_write(const u8* src, u32 n, u8* out, u32 rawsize) {
    return lz4_run<true>(src, n, out, rawsize);
}

#endif

// gpupgparser GPU decode kernels: binary COPY tuples -> Arrow columns.
//
// Compiled at run time by NVRTC (see src/runtime/nvrtc.rs) to a cubin for
// the device; launched only from src/kernels.rs, whose #[repr(C)] structs
// mirror the ones here field for field. Shares kernels/common.cuh.
//
// Every kernel reproduces exactly what the CPU decoder (crates/decode)
// produces for valid input. For invalid input a kernel only raises a flag
// (FLAG_ERROR) and keeps every read inside the chunk; the host then decodes
// the chunk with the CPU decoder, whose error names the column and row.
// FLAG_CPU asks the host to decode one column of one chunk on the CPU (a
// value the GPU cannot convert bit-exactly, e.g. a numeric -> float64
// outside the exact fast path).
//
// Layout conventions:
// - field offsets/lengths are column-major: [col * nrows + row], offsets are
//   absolute in the chunk's data, length -1 is NULL.
// - validity bitmaps are Arrow's: bit i of byte i/8, LSB first; on a
//   little-endian device a 32-bit word written from a warp ballot over rows
//   32k..32k+31 is exactly those four bytes.
// - grid-stride loops run over n rounded up to a multiple of 32 so whole
//   warps take part in every ballot; out-of-range lanes vote 0.

#include "common.cuh"

#define FLAG_ERROR 1u
#define FLAG_CPU 2u

// Value kinds; must match `Kind` in src/kernels.rs.
#define K_BOOL 0
#define K_INT2 1
#define K_INT4 2
#define K_INT8 3
#define K_FLOAT4 4
#define K_FLOAT8 5
#define K_OID 6
#define K_DATE 7
#define K_TIME 8
#define K_TIMESTAMP 9
#define K_UUID 10
#define K_INTERVAL_MDN 11
#define K_INTERVAL_STRUCT 12
#define K_DECIMAL 13
#define K_NUMERIC_F64 14
// variable-width kinds (var_lengths / var_copy)
#define K_TEXT 20
#define K_JSONB 21
#define K_BYTEA 22
#define K_NUMERIC_TEXT 23

struct Task {
    u64 off;    // const u32*: field offsets
    u64 len;    // const i32*: field lengths (-1 NULL)
    u64 out0;   // values (fixed) / i32 offsets (var)
    u64 out1;   // interval struct: days; var: value bytes
    u64 out2;   // interval struct: microseconds
    u64 valid;  // u32*: validity words
    u64 aux;    // var: u32* lengths in, u64* inclusive sums
    u64 aux2;   // var: u64* inclusive sums
    u64 flag;   // u32*: FLAG_* bits
    u64 nulls;  // u32*: null count
    u32 n;
    u32 kind;
    u32 nullable;
    i32 precision;
    i32 scale;
    u32 round;
    u32 pad0;
    u32 pad1;
};

__device__ __forceinline__ u32 ld_be16(const u8* p) { return ((u32)p[0] << 8) | (u32)p[1]; }
__device__ __forceinline__ u32 ld_be32(const u8* p) {
    return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | (u32)p[3];
}
__device__ __forceinline__ u64 ld_be64(const u8* p) {
    return ((u64)ld_be32(p) << 32) | (u64)ld_be32(p + 4);
}

__device__ __forceinline__ void raise(u64 flag, u32 bits) { atomicOr((u32*)flag, bits); }

// ---------------------------------------------------------------------------
// Framing: one thread per row walks the tuple's int16 field count and int32
// lengths and writes every field's (offset, length). Each thread writes only
// its own row's slots: no atomics on output positions.
// ---------------------------------------------------------------------------
extern "C" __global__ void frame_rows(const u8* __restrict__ data, u64 data_len,
                                      const u32* __restrict__ starts, const u32* __restrict__ ends,
                                      u32 nrows, u32 ncols, u32* __restrict__ foff,
                                      i32* __restrict__ flen, u32* flag) {
    u32 stride = gridDim.x * blockDim.x;
    for (u32 r = blockIdx.x * blockDim.x + threadIdx.x; r < nrows; r += stride) {
        u32 s = starts[r], e = ends[r];
        bool bad = false;
        if (e < s || (u64)e > data_len || e - s < 2) {
            bad = true;
        } else {
            i32 cnt = (i16)ld_be16(data + s);
            if (cnt != (i32)ncols) bad = true;
        }
        u32 pos = s + 2;
        for (u32 c = 0; c < ncols; c++) {
            i32 l = -1;
            u32 o = pos;
            if (!bad) {
                if (e - pos < 4) {
                    bad = true;
                } else {
                    l = (i32)ld_be32(data + pos);
                    pos += 4;
                    o = pos;
                    if (l >= 0) {
                        if ((u32)l > e - pos) { bad = true; l = -1; }
                        else pos += (u32)l;
                    } else if (l != -1) {
                        bad = true;
                        l = -1;
                    }
                }
            }
            // A bad row's remaining fields read as NULL: later kernels never
            // touch bytes outside the row.
            u64 idx = (u64)c * nrows + r;
            foff[idx] = o;
            flen[idx] = l;
        }
        if (!bad && pos != e) bad = true;
        if (bad) atomicOr(flag, FLAG_ERROR);
    }
}

// ---------------------------------------------------------------------------
// numeric helpers (a port of gpupg_format::value::numeric and friends)
// ---------------------------------------------------------------------------
struct Num {
    u32 kind;      // 0 finite, 1 NaN, 2 +Inf, 3 -Inf
    bool negative;
    i32 weight;
    u32 dscale;
    const u8* digits;  // big-endian u16 digits, leading/trailing zeros stripped
    u32 ndigits;
};

__constant__ u16 POW10_U16[5] = {1, 10, 100, 1000, 10000};

// Parses and validates like numeric_recv; false on any malformed value.
__device__ bool parse_numeric(const u8* b, i32 len, Num& n) {
    if (len < 8) return false;
    u32 nd = ld_be16(b);
    i32 weight = (i16)ld_be16(b + 2);
    u32 sign = ld_be16(b + 4);
    u32 dscale = ld_be16(b + 6);
    u32 kind;
    if (sign == 0x0000 || sign == 0x4000) kind = 0;
    else if (sign == 0xC000) kind = 1;
    else if (sign == 0xD000) kind = 2;
    else if (sign == 0xF000) kind = 3;
    else return false;
    if ((dscale & 0x3FFF) != dscale) return false;
    if ((u32)(len - 8) != nd * 2) return false;
    const u8* d = b + 8;
    for (u32 i = 0; i < nd; i++)
        if (ld_be16(d + 2 * i) >= 10000) return false;
    if (kind != 0) {
        n.kind = kind; n.negative = kind == 3; n.weight = 0; n.dscale = 0; n.digits = d; n.ndigits = 0;
        return true;
    }
    while (nd > 0 && ld_be16(d) == 0) { d += 2; nd--; weight--; }
    while (nd > 0 && ld_be16(d + 2 * (nd - 1)) == 0) nd--;
    n.kind = 0;
    n.negative = sign == 0x4000 && nd > 0;
    n.weight = nd == 0 ? 0 : weight;
    n.dscale = dscale;
    n.digits = d;
    n.ndigits = nd;
    return true;
}

__device__ __forceinline__ u32 num_digit(const Num& n, i64 i) {
    return (i >= 0 && i < (i64)n.ndigits) ? ld_be16(n.digits + 2 * i) : 0;
}

// Digit i with decimal places below 10^-dscale cleared (numeric_recv's
// trunc_var).
__device__ __forceinline__ u32 num_tdigit(const Num& n, i64 i) {
    u32 d = num_digit(n, i);
    i64 low = 4 * ((i64)n.weight - i);
    i64 cut = -(i64)n.dscale - low;
    if (cut <= 0) return d;
    if (cut >= 4) return 0;
    u32 p = POW10_U16[cut];
    return d - d % p;
}

__device__ bool num_nonzero_after_trunc(const Num& n) {
    for (u32 i = 0; i < n.ndigits; i++)
        if (num_tdigit(n, i) != 0) return true;
    return false;
}

// 10^38 - 1, the largest magnitude Decimal128(38, s) holds; any partial
// result above it already means overflow (the accumulator only grows).
__device__ __forceinline__ u128 dec_limit() {
    u128 p = 1;
    for (int i = 0; i < 38; i++) p *= 10;
    return p - 1;
}

__device__ __forceinline__ u128 pow10_u128(u32 k) {
    u128 p = 1;
    for (u32 i = 0; i < k; i++) p *= 10;
    return p;
}

// acc * 10^k, false when the result exceeds `limit`.
__device__ __forceinline__ bool mul_pow10(u128& acc, i64 k, u128 limit) {
    if (acc == 0) return true;
    if (k < 0 || k > 38) return false;
    u128 p = pow10_u128((u32)k);
    if (acc > limit / p) return false;
    acc *= p;
    return true;
}

// Numeric::to_i128: exact (round = 0) or rounded half away from zero.
__device__ bool numeric_to_i128(const Num& n, i32 precision, i32 scale, bool round, u128& out_mag) {
    if (n.kind != 0) return false;
    u128 limit = dec_limit();
    u128 acc = 0;
    i64 last_exp = 0;
    bool any = false, round_up = false, inexact = false;
    for (u32 i = 0; i < n.ndigits; i++) {
        u32 d = num_tdigit(n, i);
        i64 e = 4 * ((i64)n.weight - (i64)i) + scale;
        if (e >= 0) {
            if (any && !mul_pow10(acc, last_exp - e, limit)) return false;
            acc += d;
            if (acc > limit) return false;
            last_exp = e;
            any = true;
        } else if (e > -4) {
            u32 p = POW10_U16[-e];
            u32 keep = d / p, rem = d % p;
            if (any && !mul_pow10(acc, last_exp, limit)) return false;
            acc += keep;
            if (acc > limit) return false;
            last_exp = 0;
            any = true;
            round_up = rem >= p / 2;
            inexact |= rem != 0;
        } else {
            if (e == -4) round_up = d >= 5000;
            inexact |= d != 0;
        }
    }
    if (any && last_exp > 0 && !mul_pow10(acc, last_exp, limit)) return false;
    if (inexact) {
        if (!round) return false;
        if (round_up) acc += 1;
    }
    i32 p = precision < 38 ? precision : 38;
    if (acc >= pow10_u128((u32)p)) return false;
    out_mag = acc;
    return true;
}

__constant__ double POW10_F64[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// numeric -> float64 when one IEEE operation gives the correctly rounded
// result (Clinger's fast path: mantissa <= 2^53, |exponent| <= 22), which is
// what the CPU's text-and-parse conversion yields. false: needs the CPU.
__device__ bool numeric_to_f64_fast(const Num& n, double& out) {
    if (n.kind == 1) { out = __longlong_as_double(0x7ff8000000000000LL); return true; }
    if (n.kind == 2) { out = __longlong_as_double(0x7ff0000000000000LL); return true; }
    if (n.kind == 3) { out = __longlong_as_double((long long)0xfff0000000000000ULL); return true; }
    // The value printed with dscale digits: sum of truncated digits.
    u64 m = 0;
    i64 exp10 = 0;  // value = m * 10^exp10
    bool started = false;
    for (u32 i = 0; i < n.ndigits; i++) {
        u32 d = num_tdigit(n, i);
        i64 e = 4 * ((i64)n.weight - (i64)i);
        if (!started) {
            if (d == 0) continue;
            m = d;
            exp10 = e;
            started = true;
        } else {
            // m * 10^(exp10 - e) + d
            i64 k = exp10 - e;
            for (i64 j = 0; j < k; j++) {
                if (m > 1844674407370955161ULL) return false;
                m *= 10;
            }
            if (m > 0xffffffffffffffffULL - d) return false;
            m += d;
            exp10 = e;
        }
    }
    if (!started) { out = 0.0; return true; }
    while (m % 10 == 0) { m /= 10; exp10++; }
    if (m > (1ULL << 53)) return false;
    if (exp10 < -22 || exp10 > 22) return false;
    double v = (double)m;
    if (exp10 >= 0) v = v * POW10_F64[exp10];
    else v = v / POW10_F64[-exp10];
    out = n.negative ? -v : v;
    return true;
}

// Length of numeric_out's text.
__device__ u32 numeric_text_len(const Num& n) {
    if (n.kind == 1) return 3;
    if (n.kind == 2) return 8;
    if (n.kind == 3) return 9;
    u32 len = 0;
    if (n.negative && num_nonzero_after_trunc(n)) len++;
    if (n.weight < 0) {
        len += 1;
    } else {
        u32 d0 = num_digit(n, 0);
        len += d0 >= 1000 ? 4 : d0 >= 100 ? 3 : d0 >= 10 ? 2 : 1;
        len += 4 * (u32)n.weight;
    }
    if (n.dscale > 0) len += 1 + n.dscale;
    return len;
}

// Writes numeric_out's text (get_str_from_var) to out.
__device__ void numeric_text_write(const Num& n, u8* out) {
    if (n.kind == 1) { out[0] = 'N'; out[1] = 'a'; out[2] = 'N'; return; }
    if (n.kind >= 2) {
        const char* s = n.kind == 2 ? "Infinity" : "-Infinity";
        for (int i = 0; s[i]; i++) out[i] = (u8)s[i];
        return;
    }
    u32 p = 0;
    if (n.negative && num_nonzero_after_trunc(n)) out[p++] = '-';
    i64 d;
    if (n.weight < 0) {
        d = (i64)n.weight + 1;
        out[p++] = '0';
    } else {
        for (d = 0; d <= n.weight; d++) {
            u32 dig = num_digit(n, d);
            u8 c[4] = {(u8)('0' + dig / 1000), (u8)('0' + dig / 100 % 10), (u8)('0' + dig / 10 % 10),
                       (u8)('0' + dig % 10)};
            int skip = 0;
            if (d == 0) while (skip < 3 && c[skip] == '0') skip++;
            for (int k = skip; k < 4; k++) out[p++] = c[k];
        }
    }
    if (n.dscale > 0) {
        out[p++] = '.';
        u32 written = 0;
        while (written < n.dscale) {
            u32 dig = d >= 0 ? num_digit(n, d) : 0;
            u8 c[4] = {(u8)('0' + dig / 1000), (u8)('0' + dig / 100 % 10), (u8)('0' + dig / 10 % 10),
                       (u8)('0' + dig % 10)};
            for (int k = 0; k < 4 && written < n.dscale; k++, written++) out[p++] = c[k];
            d++;
        }
    }
}

// ---------------------------------------------------------------------------
// Fixed-width output: one thread per value, blockIdx.y = task (column).
// ---------------------------------------------------------------------------
__device__ __forceinline__ i32 fixed_width(u32 kind) {
    switch (kind) {
        case K_BOOL: return 1;
        case K_INT2: return 2;
        case K_INT4: case K_FLOAT4: case K_OID: case K_DATE: return 4;
        case K_INT8: case K_FLOAT8: case K_TIME: case K_TIMESTAMP: return 8;
        case K_UUID: case K_INTERVAL_MDN: case K_INTERVAL_STRUCT: return 16;
        default: return -1;  // numeric: variable input
    }
}

extern "C" __global__ void decode_fixed(const u8* __restrict__ data, const Task* __restrict__ tasks) {
    const Task t = tasks[blockIdx.y];
    const u32* off = (const u32*)t.off;
    const i32* lens = (const i32*)t.len;
    u32 n = t.n;
    u32 n32 = (n + 31) & ~31u;
    u32 stride = gridDim.x * blockDim.x;
    i32 w = fixed_width(t.kind);
    u32 lane = threadIdx.x & 31;
    bool any_bad = false;
    u32 my_nulls = 0;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n32; i += stride) {
        bool in = i < n;
        i32 l = in ? lens[i] : -1;
        bool valid = in && l >= 0;
        bool bad = false;
        bool bval = false;
        const u8* p = data + (in ? off[i] : 0);
        if (in && !valid && !t.nullable) bad = true;
        if (valid && w >= 0 && l != w) { bad = true; valid = false; }
        switch (t.kind) {
            case K_BOOL:
                bval = valid && p[0] != 0;
                break;
            case K_INT2:
                if (in) ((i16*)t.out0)[i] = valid ? (i16)ld_be16(p) : 0;
                break;
            case K_INT4: case K_FLOAT4: case K_OID:
                if (in) ((u32*)t.out0)[i] = valid ? ld_be32(p) : 0;
                break;
            case K_DATE:
                if (in) {
                    i32 v = valid ? (i32)ld_be32(p) : 0;
                    if (valid && v != 0x7fffffff && v != (i32)0x80000000) {
                        if (v > 0x7fffffff - 10957) { bad = true; v = 0; }
                        else v += 10957;
                    }
                    ((i32*)t.out0)[i] = v;
                }
                break;
            case K_INT8: case K_FLOAT8:
                if (in) ((u64*)t.out0)[i] = valid ? ld_be64(p) : 0;
                break;
            case K_TIME:
                if (in) {
                    i64 v = valid ? (i64)ld_be64(p) : 0;
                    if (v < 0 || v > 86400000000LL) { bad = true; v = 0; }
                    ((i64*)t.out0)[i] = v;
                }
                break;
            case K_TIMESTAMP:
                if (in) {
                    i64 v = valid ? (i64)ld_be64(p) : 0;
                    const i64 shift = 946684800000000LL;
                    if (valid && v != 0x7fffffffffffffffLL && v != (i64)0x8000000000000000ULL) {
                        if (v > 0x7fffffffffffffffLL - shift) { bad = true; v = 0; }
                        else v += shift;
                    }
                    ((i64*)t.out0)[i] = v;
                }
                break;
            case K_UUID:
                if (in) {
                    u8* o = (u8*)t.out0 + (u64)i * 16;
                    for (int k = 0; k < 16; k++) o[k] = valid ? p[k] : 0;
                }
                break;
            case K_INTERVAL_MDN:
            case K_INTERVAL_STRUCT:
                if (in) {
                    i64 micros = valid ? (i64)ld_be64(p) : 0;
                    i32 days = valid ? (i32)ld_be32(p + 8) : 0;
                    i32 months = valid ? (i32)ld_be32(p + 12) : 0;
                    if (t.kind == K_INTERVAL_MDN) {
                        // Arrow IntervalMonthDayNano: months i32, days i32, nanoseconds i64.
                        const i64 lim = 9223372036854775LL;  // i64::MAX / 1000
                        if (micros > lim || micros < -lim) {
                            // checked_mul(1000) fails exactly outside +-lim
                            // (i64::MIN / 1000 = -lim, remainder -808).
                            bad = true;
                            micros = 0;
                        }
                        u8* o = (u8*)t.out0 + (u64)i * 16;
                        *(i32*)(o) = months;
                        *(i32*)(o + 4) = days;
                        *(i64*)(o + 8) = micros * 1000;
                    } else {
                        ((i32*)t.out0)[i] = months;
                        ((i32*)t.out1)[i] = days;
                        ((i64*)t.out2)[i] = micros;
                    }
                }
                break;
            case K_DECIMAL:
                if (in) {
                    u128 mag = 0;
                    bool neg = false;
                    if (valid) {
                        Num nm;
                        if (parse_numeric(p, l, nm) &&
                            numeric_to_i128(nm, t.precision, t.scale, t.round != 0, mag)) {
                            neg = nm.negative;
                        } else {
                            bad = true;
                            mag = 0;
                        }
                    }
                    u128 v = neg ? (u128)0 - mag : mag;
                    u64* o = (u64*)t.out0 + (u64)i * 2;
                    o[0] = (u64)v;
                    o[1] = (u64)(v >> 64);
                }
                break;
            case K_NUMERIC_F64:
                if (in) {
                    double v = 0.0;
                    if (valid) {
                        Num nm;
                        if (!parse_numeric(p, l, nm)) bad = true;
                        else if (!numeric_to_f64_fast(nm, v)) {
                            raise(t.flag, FLAG_CPU);
                            v = 0.0;
                        }
                    }
                    ((double*)t.out0)[i] = v;
                }
                break;
            default:
                bad = in;
        }
        u32 vb = __ballot_sync(FULL_MASK, valid);
        u32 inb = __ballot_sync(FULL_MASK, in);
        if (t.kind == K_BOOL) {
            u32 bb = __ballot_sync(FULL_MASK, bval);
            if (lane == 0) ((u32*)t.out0)[i >> 5] = bb;
        }
        if (lane == 0) {
            ((u32*)t.valid)[i >> 5] = vb;
            my_nulls += __popc(inb & ~vb);
        }
        any_bad |= bad;
    }
    if (lane == 0 && my_nulls) atomicAdd((u32*)t.nulls, my_nulls);
    if (any_bad) raise(t.flag, FLAG_ERROR);
}

// ---------------------------------------------------------------------------
// Variable-width output (text, json, jsonb, enum labels, bytea, numeric as
// text), in three steps: lengths (+ validity), an exclusive scan of the
// lengths into Arrow offsets, then a gather copy of the bytes.
// ---------------------------------------------------------------------------
extern "C" __global__ void var_lengths(const u8* __restrict__ data, const Task* __restrict__ tasks) {
    const Task t = tasks[blockIdx.y];
    const u32* off = (const u32*)t.off;
    const i32* lens = (const i32*)t.len;
    u32* outlen = (u32*)t.aux;
    u32 n = t.n;
    u32 n32 = (n + 31) & ~31u;
    u32 stride = gridDim.x * blockDim.x;
    u32 lane = threadIdx.x & 31;
    bool any_bad = false;
    u32 my_nulls = 0;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n32; i += stride) {
        bool in = i < n;
        i32 l = in ? lens[i] : -1;
        bool valid = in && l >= 0;
        bool bad = in && !valid && !t.nullable;
        u32 ol = 0;
        if (valid) {
            const u8* p = data + off[i];
            if (t.kind == K_JSONB) {
                if (l < 1 || p[0] != 1) bad = true;
                else ol = (u32)l - 1;
            } else if (t.kind == K_NUMERIC_TEXT) {
                Num nm;
                if (!parse_numeric(p, l, nm)) bad = true;
                else ol = numeric_text_len(nm);
            } else {
                ol = (u32)l;
            }
        }
        if (in) outlen[i] = bad ? 0 : ol;
        u32 vb = __ballot_sync(FULL_MASK, valid);
        u32 inb = __ballot_sync(FULL_MASK, in);
        if (lane == 0) {
            ((u32*)t.valid)[i >> 5] = vb;
            my_nulls += __popc(inb & ~vb);
        }
        any_bad |= bad;
    }
    if (lane == 0 && my_nulls) atomicAdd((u32*)t.nulls, my_nulls);
    if (any_bad) raise(t.flag, FLAG_ERROR);
}

// UTF-8 check of the byte at position j of s[0..len): a lead byte must start
// a complete, minimal, non-surrogate sequence of at most U+10FFFF; a
// continuation byte must lie inside the sequence of the nearest lead byte
// before it. All positions passing <=> the whole value is valid UTF-8, and
// each position is checked independently (so a warp can split a value).
__device__ __forceinline__ bool utf8_ok_at(const u8* s, u32 len, u32 j) {
    u32 c = s[j];
    if (c < 0x80) return true;
    if ((c & 0xC0) == 0x80) {
        // continuation: find its lead within 3 bytes back
        for (u32 d = 1; d <= 3; d++) {
            if (d > j) return false;
            u32 b = s[j - d];
            if ((b & 0xC0) == 0x80) continue;
            u32 need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
            return d < need;  // the lead itself is checked at its own position
        }
        return false;
    }
    u32 need;
    u32 lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else return false;
    if (j + need > len) return false;
    u32 c1 = s[j + 1];
    if (c1 < lo || c1 > hi) return false;
    for (u32 k = 2; k < need; k++)
        if ((s[j + k] & 0xC0) != 0x80) return false;
    return true;
}

// Values up to this many bytes are copied by their own lane; longer ones by
// the whole warp, 32 bytes per step.
#define SHORT_VALUE 32

extern "C" __global__ void var_copy(const u8* __restrict__ data, const Task* __restrict__ tasks) {
    const Task t = tasks[blockIdx.y];
    const u32* off = (const u32*)t.off;
    const i32* lens = (const i32*)t.len;
    const u64* incl = (const u64*)t.aux2;
    i32* offsets = (i32*)t.out0;
    u8* values = (u8*)t.out1;
    u32 n = t.n;
    u32 n32 = (n + 31) & ~31u;
    u32 stride = gridDim.x * blockDim.x;
    u32 lane = threadIdx.x & 31;
    bool check_utf8 = t.kind == K_TEXT || t.kind == K_JSONB;
    bool any_bad = false;
    if (blockIdx.x == 0 && threadIdx.x == 0) offsets[0] = 0;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n32; i += stride) {
        bool in = i < n;
        u64 end = in ? incl[i] : 0;
        u64 start = (in && i > 0) ? incl[i - 1] : 0;
        if (in) offsets[i + 1] = (i32)end;  // total checked <= i32::MAX by the host
        u32 ol = (u32)(end - start);
        i32 l = in ? lens[i] : -1;
        const u8* src = data + (in ? off[i] : 0);
        u8* dst = values + start;
        bool mine = in && l >= 0 && ol > 0;
        if (mine && t.kind == K_NUMERIC_TEXT) {
            Num nm;
            if (parse_numeric(src, l, nm)) numeric_text_write(nm, dst);
            mine = false;  // written
        }
        if (mine && t.kind == K_JSONB) src += 1;
        bool is_long = mine && ol > SHORT_VALUE;
        if (mine && !is_long) {
            bool ok = true;
            for (u32 j = 0; j < ol; j++) {
                dst[j] = src[j];
                if (check_utf8) ok &= utf8_ok_at(src, ol, j);
            }
            any_bad |= !ok;
        }
        // Long values: the warp copies them one after another, lane k
        // taking bytes k, k+32, ... (coalesced loads and stores).
        u32 longs = __ballot_sync(FULL_MASK, is_long);
        while (longs) {
            int src_lane = __ffs(longs) - 1;
            longs &= longs - 1;
            u64 s_ptr = __shfl_sync(FULL_MASK, (u64)src, src_lane);
            u64 d_ptr = __shfl_sync(FULL_MASK, (u64)dst, src_lane);
            u32 len = __shfl_sync(FULL_MASK, ol, src_lane);
            const u8* s = (const u8*)s_ptr;
            u8* d = (u8*)d_ptr;
            bool ok = true;
            for (u32 j = lane; j < len; j += 32) {
                d[j] = s[j];
                if (check_utf8) ok &= utf8_ok_at(s, len, j);
            }
            any_bad |= !ok;
        }
    }
    if (any_bad) raise(t.flag, FLAG_ERROR);
}

// ---------------------------------------------------------------------------
// Scan: inclusive prefix sums of u32 (or u64) values into u64, over
// gridDim.y independent segments, in tiles of SCAN_TILE values per block.
// Multi-level: reduce tiles -> scan tile sums (recursively) -> scan tiles
// with their offsets. No CUB needed.
// ---------------------------------------------------------------------------
#define SCAN_THREADS 256
#define SCAN_ITEMS 8
#define SCAN_TILE (SCAN_THREADS * SCAN_ITEMS)

__device__ __forceinline__ u64 warp_incl_scan(u64 v, u32 lane) {
    for (u32 o = 1; o < 32; o <<= 1) {
        u64 t = __shfl_up_sync(FULL_MASK, v, o);
        if (lane >= o) v += t;
    }
    return v;
}

// Block-wide inclusive scan of one value per thread; returns the thread's
// inclusive sum, and the block total in *total.
__device__ u64 block_incl_scan(u64 v, u64* total) {
    __shared__ u64 warp_sums[SCAN_THREADS / 32];
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_incl_scan(v, lane);
    if (lane == 31) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        u64 w = lane < SCAN_THREADS / 32 ? warp_sums[lane] : 0;
        w = warp_incl_scan(w, lane);
        if (lane < SCAN_THREADS / 32) warp_sums[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += warp_sums[warp - 1];
    *total = warp_sums[SCAN_THREADS / 32 - 1];
    __syncthreads();
    return v;
}

template <typename T>
__device__ void scan_reduce(const T* in, u64 n, u64 seg_stride, u64* sums, u64 nblocks) {
    const T* src = in + (u64)blockIdx.y * seg_stride;
    u64 base = (u64)blockIdx.x * SCAN_TILE;
    u64 acc = 0;
    for (u32 k = 0; k < SCAN_ITEMS; k++) {
        u64 i = base + (u64)k * SCAN_THREADS + threadIdx.x;
        if (i < n) acc += (u64)src[i];
    }
    u64 total;
    block_incl_scan(acc, &total);
    if (threadIdx.x == 0) sums[(u64)blockIdx.y * nblocks + blockIdx.x] = total;
}

template <typename T>
__device__ void scan_tiles(const T* in, u64* out, u64 n, u64 seg_stride, const u64* tile_incl,
                           u64 nblocks) {
    __shared__ u64 tile[SCAN_TILE];
    const T* src = in + (u64)blockIdx.y * seg_stride;
    u64* dst = out + (u64)blockIdx.y * seg_stride;
    u64 base = (u64)blockIdx.x * SCAN_TILE;
    // Coalesced load of the tile into shared memory.
    for (u32 k = 0; k < SCAN_ITEMS; k++) {
        u64 i = base + (u64)k * SCAN_THREADS + threadIdx.x;
        tile[k * SCAN_THREADS + threadIdx.x] = i < n ? (u64)src[i] : 0;
    }
    __syncthreads();
    // Each thread scans its SCAN_ITEMS consecutive values.
    u64 local[SCAN_ITEMS];
    u64 s = 0;
#pragma unroll
    for (u32 k = 0; k < SCAN_ITEMS; k++) {
        s += tile[threadIdx.x * SCAN_ITEMS + k];
        local[k] = s;
    }
    u64 total;
    u64 incl = block_incl_scan(s, &total);
    u64 excl = incl - s;
    if (tile_incl != 0 && blockIdx.x > 0) excl += tile_incl[(u64)blockIdx.y * nblocks + blockIdx.x - 1];
#pragma unroll
    for (u32 k = 0; k < SCAN_ITEMS; k++) tile[threadIdx.x * SCAN_ITEMS + k] = local[k] + excl;
    __syncthreads();
    for (u32 k = 0; k < SCAN_ITEMS; k++) {
        u64 i = base + (u64)k * SCAN_THREADS + threadIdx.x;
        if (i < n) dst[i] = tile[k * SCAN_THREADS + threadIdx.x];
    }
}

extern "C" __global__ void __launch_bounds__(SCAN_THREADS) scan_reduce_u32(const u32* in, u64 n, u64 seg_stride, u64* sums, u64 nblocks) {
    scan_reduce<u32>(in, n, seg_stride, sums, nblocks);
}
extern "C" __global__ void __launch_bounds__(SCAN_THREADS) scan_reduce_u64(const u64* in, u64 n, u64 seg_stride, u64* sums, u64 nblocks) {
    scan_reduce<u64>(in, n, seg_stride, sums, nblocks);
}
extern "C" __global__ void __launch_bounds__(SCAN_THREADS) scan_tiles_u32(const u32* in, u64* out, u64 n, u64 seg_stride,
                                                                          const u64* tile_incl, u64 nblocks) {
    scan_tiles<u32>(in, out, n, seg_stride, tile_incl, nblocks);
}
extern "C" __global__ void __launch_bounds__(SCAN_THREADS) scan_tiles_u64(const u64* in, u64* out, u64 n, u64 seg_stride,
                                                                          const u64* tile_incl, u64 nblocks) {
    scan_tiles<u64>(in, out, n, seg_stride, tile_incl, nblocks);
}

// ---------------------------------------------------------------------------
// Arrays (List representation): count elements per row (validating the
// header like array_recv), scan the counts into list offsets, then walk each
// array writing its elements' (offset, length) at the row's list offset.
// The elements are then decoded by the ordinary kernels as a column of
// `total` values.
// ---------------------------------------------------------------------------
#define ARRAY_MAX_ELEMENTS (0x3fffffffu / 8u)

// Array header check; returns the element count and sets *ndim_out, or
// false if malformed.
__device__ bool array_header(const u8* p, i32 l, u32& nitems, u32& ndim_out, u32& elems_start) {
    if (l < 12) return false;
    i32 ndim = (i32)ld_be32(p);
    if (ndim < 0 || ndim > 6) return false;
    i32 flags = (i32)ld_be32(p + 4);
    if (flags != 0 && flags != 1) return false;
    u64 items = 1;
    for (i32 d = 0; d < ndim; d++) {
        if ((i64)l < 12 + 8 * (i64)d + 8) return false;
        i32 dim = (i32)ld_be32(p + 12 + 8 * d);
        i32 lower = (i32)ld_be32(p + 16 + 8 * d);
        if (dim < 0 || (i64)lower + (i64)dim > 0x7fffffffLL) return false;
        items = items * (u64)dim;
        if (items > 0xffffffffULL) items = 0xffffffffULL;  // saturate
    }
    if (ndim == 0) items = 0;
    if (items > ARRAY_MAX_ELEMENTS) return false;
    nitems = (u32)items;
    ndim_out = items == 0 ? 0 : (u32)ndim;
    elems_start = 12 + 8 * (u32)ndim;
    return true;
}

// t.aux: u32* counts out; t.out2: u32* flattened-array counter.
extern "C" __global__ void array_count(const u8* __restrict__ data, const Task* __restrict__ tasks) {
    const Task t = tasks[blockIdx.y];
    const u32* off = (const u32*)t.off;
    const i32* lens = (const i32*)t.len;
    u32* counts = (u32*)t.aux;
    u32 n = t.n;
    u32 n32 = (n + 31) & ~31u;
    u32 stride = gridDim.x * blockDim.x;
    u32 lane = threadIdx.x & 31;
    bool any_bad = false;
    u32 my_nulls = 0, my_flat = 0;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n32; i += stride) {
        bool in = i < n;
        i32 l = in ? lens[i] : -1;
        bool valid = in && l >= 0;
        bool bad = in && !valid && !t.nullable;
        u32 cnt = 0;
        if (valid) {
            u32 nd, es;
            if (!array_header(data + off[i], l, cnt, nd, es)) { bad = true; cnt = 0; }
            else if (nd > 1) my_flat++;
        }
        if (in) counts[i] = cnt;
        u32 vb = __ballot_sync(FULL_MASK, valid);
        u32 inb = __ballot_sync(FULL_MASK, in);
        if (lane == 0) {
            ((u32*)t.valid)[i >> 5] = vb;
            my_nulls += __popc(inb & ~vb);
        }
        any_bad |= bad;
    }
    if (lane == 0 && my_nulls) atomicAdd((u32*)t.nulls, my_nulls);
    if (my_flat) atomicAdd((u32*)t.out2, my_flat);
    if (any_bad) raise(t.flag, FLAG_ERROR);
}

// t.aux2: u64* inclusive element counts; t.out0: i32 list offsets (n+1);
// t.out1: u32* element offsets; t.aux: i32* element lengths.
extern "C" __global__ void array_elems(const u8* __restrict__ data, const Task* __restrict__ tasks) {
    const Task t = tasks[blockIdx.y];
    const u32* off = (const u32*)t.off;
    const i32* lens = (const i32*)t.len;
    const u64* incl = (const u64*)t.aux2;
    i32* list_off = (i32*)t.out0;
    u32* eoff = (u32*)t.out1;
    i32* elen = (i32*)t.aux;
    u32 n = t.n;
    u32 stride = gridDim.x * blockDim.x;
    bool any_bad = false;
    if (blockIdx.x == 0 && threadIdx.x == 0) list_off[0] = 0;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        u64 end = incl[i];
        u64 start = i > 0 ? incl[i - 1] : 0;
        list_off[i + 1] = (i32)end;  // total checked <= i32::MAX by the host
        i32 l = lens[i];
        if (l < 0 || end == start) {
            // NULL, empty, or an array whose header failed (count 0); a
            // header failure was flagged by array_count. Its bytes must
            // still be walked when the count is 0 to check the trailer.
            if (l >= 0) {
                u32 cnt, nd, es;
                const u8* p = data + off[i];
                if (array_header(p, l, cnt, nd, es) && (u32)l != es) any_bad = true;
            }
            continue;
        }
        const u8* p = data + off[i];
        u32 cnt, nd, es;
        if (!array_header(p, l, cnt, nd, es)) { any_bad = true; continue; }
        u32 pos = es;
        u32 L = (u32)l;
        u32 base_off = off[i];
        for (u64 k = start; k < end; k++) {
            u32 o = base_off + pos;
            i32 el = -1;
            if (L - pos < 4 || pos > L) {
                any_bad = true;
            } else {
                el = (i32)ld_be32(p + pos);
                pos += 4;
                o = base_off + pos;
                if (el >= 0) {
                    if ((u32)el > L - pos) { any_bad = true; el = -1; }
                    else pos += (u32)el;
                } else if (el != -1) {
                    any_bad = true;
                    el = -1;
                }
            }
            eoff[k] = o;
            elen[k] = el;
        }
        if (pos != L) any_bad = true;
    }
    if (any_bad) raise(t.flag, FLAG_ERROR);
}

// Fills n bytes with a value (used by tests to poison outputs).
extern "C" __global__ void fill_u8(u8* p, u64 n, u32 v) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) p[i] = (u8)v;
}

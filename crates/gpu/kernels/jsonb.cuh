// jsonb's on-disk form to the text jsonb_out prints, for the heap page
// kernels: a port of gpupg_format::heap::jsonb (the CPU converter, which
// is the reference). heap.cu includes this file after ld16le, ld32le and
// numeric_head, which it uses.
//
// What the reference prints, this prints byte for byte; what the reference
// refuses (a malformed value), this refuses too (ok = false: the page is
// flagged and converted on the CPU, which names the reason). Containers
// nested deeper than JSONB_GPU_DEPTH are refused here although the
// reference prints them: the walk keeps its open containers in a fixed
// per-thread stack, as GPU threads have no room for recursion.
//
// Every container's JEntry offsets are checked against its bytes when it
// is opened (as the reference's Container::parse does), so the walk
// itself reads only checked ranges.

#ifndef GPUPG_JSONB_CUH
#define GPUPG_JSONB_CUH

// Containers open at once (the root included).
#define JSONB_GPU_DEPTH 32

#define JB_CMASK 0x0fffffffu
#define JB_FSCALAR 0x10000000u
#define JB_FOBJECT 0x20000000u
#define JB_FARRAY 0x40000000u
#define JENTRY_OFFLENMASK 0x0fffffffu
#define JENTRY_TYPEMASK 0x70000000u
#define JENTRY_HAS_OFF 0x80000000u
#define JENTRY_ISSTRING 0x00000000u
#define JENTRY_ISNUMERIC 0x10000000u
#define JENTRY_ISBOOL_FALSE 0x20000000u
#define JENTRY_ISBOOL_TRUE 0x30000000u
#define JENTRY_ISNULL 0x40000000u
#define JENTRY_ISCONTAINER 0x50000000u
// JsonbFrame::count's flag: the container is an object.
#define JSONB_OBJECT_BIT 0x80000000u

// The text's bytes: counted (pass 1 sizes the field) or written (W, pass
// 2), from the same code. The writer advances a pointer and keeps no
// count: one register less, which keeps heap_write at 32 registers.
template <bool W>
struct JsonOut {
    u8* o;  // W: where the next byte goes
    u32 n;  // not W: the bytes so far
    __device__ __forceinline__ void put(u8 c) {
        if (W) *o++ = c; else n++;
    }
    __device__ __forceinline__ void put2(u8 a, u8 b) {
        if (W) {
            o[0] = a;
            o[1] = b;
            o += 2;
        } else {
            n += 2;
        }
    }
    __device__ __forceinline__ void lit(const char* s, u32 k) {
        if (W) {
            for (u32 i = 0; i < k; i++) o[i] = (u8)s[i];
            o += k;
        } else {
            n += k;
        }
    }
    // The first `k` (1 to 4) of the four decimal digits of `v` (< 10000),
    // or its last `k` when `last`.
    __device__ __forceinline__ void digits4(u32 v, u32 k, bool last) {
        if (W) {
            u8 c[4] = {(u8)('0' + v / 1000), (u8)('0' + v / 100 % 10), (u8)('0' + v / 10 % 10),
                       (u8)('0' + v % 10)};
            u32 from = last ? 4 - k : 0;
            for (u32 i = 0; i < k; i++) o[i] = c[from + i];
            o += k;
        } else {
            n += k;
        }
    }
};

// An open container: where its JEntries and children's data lie in the
// payload, and how far the walk has got.
struct JsonbFrame {
    u32 ent;    // offset of the JEntry array
    u32 dat;    // offset of the children's data
    u32 count;  // elements, or an object's pairs; | JSONB_OBJECT_BIT
    u32 i;      // the next element (pair) to print
    u32 at;     // end of the previous element's (an object's: key's) data
    u32 vat;    // an object's: end of the previous value's data
};

// The end offset of a child whose JEntry is `e`, after a child ending at
// `prev`: the offset itself every JB_OFFSET_STRIDE children, else a length.
__device__ __forceinline__ u32 jsonb_end(u32 e, u32 prev) {
    u32 field = e & JENTRY_OFFLENMASK;
    return (e & JENTRY_HAS_OFF) ? field : prev + field;
}

// Opens the container of `clen` bytes at payload offset `off`, checking
// its header and that its children's data exactly fills it (the
// reference's Container::parse). `*scalar`: the JB_FSCALAR flag.
__device__ bool jsonb_open(const u8* p, u32 off, u32 clen, JsonbFrame* f, bool* scalar) {
    if (clen < 4) return false;
    u32 h = ld32le(p + off);
    bool obj = (h & JB_FOBJECT) != 0, arr = (h & JB_FARRAY) != 0, sc = (h & JB_FSCALAR) != 0;
    u32 count = h & JB_CMASK;
    if (obj == arr || (h & 0x80000000u) != 0 || (sc && (obj || count != 1))) return false;
    u32 children = obj ? 2 * count : count;
    if (children > (clen - 4) / 4) return false;
    u32 ent = off + 4, dlen = clen - 4 - 4 * children;
    u32 end = 0, keys_end = 0;
    for (u32 k = 0; k < children; k++) {
        if (k == count) keys_end = end;
        u32 next = jsonb_end(ld32le(p + ent + 4 * k), end);
        if (next < end || next > dlen) return false;
        end = next;
    }
    if (end != dlen) return false;
    f->ent = ent;
    f->dat = ent + 4 * children;
    f->count = count | (obj ? JSONB_OBJECT_BIT : 0);
    f->i = 0;
    f->at = 0;
    f->vat = keys_end;
    *scalar = sc;
    return true;
}

// A string as escape_json writes it; false on a NUL byte (jsonb refuses
// \u0000, and so does the reference).
template <bool W>
__device__ bool jsonb_string(const u8* s, u32 len, JsonOut<W>& out) {
    out.put('"');
    for (u32 k = 0; k < len; k++) {
        u8 b = s[k];
        if (b >= 0x20 && b != '"' && b != '\\') {
            out.put(b);
            continue;
        }
        if (b == 0) return false;
        u8 c = b == '"' ? '"' : b == '\\' ? '\\' : b == 0x08 ? 'b' : b == 0x0c ? 'f'
             : b == '\n' ? 'n' : b == '\r' ? 'r' : b == '\t' ? 't' : 0;
        if (c) {
            out.put2('\\', c);
        } else {
            const char* hex = "0123456789abcdef";
            out.put2('\\', 'u');
            out.put2('0', '0');
            out.put2((u8)hex[b >> 4], (u8)hex[b & 15]);
        }
    }
    out.put('"');
    return true;
}

// Base-10000 digit `i` of `n` little-endian digits at `dg` (0 outside).
__device__ __forceinline__ u32 jsonb_digit(const u8* dg, u32 n, int i) {
    return (i >= 0 && (u32)i < n) ? ld16le(dg + 2 * i) : 0;
}

// A numeric datum (a varlena: 1-byte or uncompressed 4-byte header, as
// the reference's varlena::parse takes it) as numeric_out prints it,
// following the reference's value::numeric and Numeric::write_text.
template <bool W>
__device__ bool jsonb_numeric(const u8* d, u32 dl, JsonOut<W>& out) {
    if (dl == 0 || d[0] == 0x01) return false;
    const u8* p;
    u32 pl;
    if (d[0] & 1) {
        if ((u32)(d[0] >> 1) != dl) return false;
        p = d + 1;
        pl = dl - 1;
    } else {
        if ((d[0] & 3) != 0 || dl < 4) return false;
        u32 size = ld32le(d) >> 2;
        if (size < 4 || size != dl) return false;
        p = d + 4;
        pl = dl - 4;
    }
    u32 nd, w, s, ds, st;
    if (!numeric_head(p, pl, &nd, &w, &s, &ds, &st)) return false;
    const u8* dg = p + st;
    for (u32 k = 0; k < nd; k++) {
        if (ld16le(dg + 2 * k) >= 10000) return false;
    }
    if (s == 0xc000) {
        out.lit("NaN", 3);
        return true;
    }
    if (s == 0xd000) {
        out.lit("Infinity", 8);
        return true;
    }
    if (s == 0xf000) {
        out.lit("-Infinity", 9);
        return true;
    }
    // Leading and trailing zero digits stripped, as numeric_recv leaves it.
    u32 first = 0, last = nd;
    while (first < nd && ld16le(dg + 2 * first) == 0) first++;
    while (last > first && ld16le(dg + 2 * (last - 1)) == 0) last--;
    u32 n = last - first;
    dg += 2 * first;
    int weight = n == 0 ? 0 : (int)(i16)(u16)w - (int)first;
    if (s == 0x4000 && n > 0) {
        // The sign only when a digit survives truncation to dscale.
        bool nonzero = false;
        for (u32 i = 0; i < n && !nonzero; i++) {
            u32 v = ld16le(dg + 2 * i);
            int cut = -(int)ds - 4 * (weight - (int)i);
            if (cut <= 0) {
                nonzero = v != 0;
            } else if (cut < 4) {
                u32 pw = cut == 1 ? 10 : cut == 2 ? 100 : 1000;
                nonzero = v - v % pw != 0;
            }
        }
        if (nonzero) out.put('-');
    }
    int d_at;
    if (weight < 0) {
        d_at = weight + 1;
        out.put('0');
    } else {
        // The first digit without its leading zeros, then four per digit.
        u32 v = jsonb_digit(dg, n, 0);
        out.digits4(v, v >= 1000 ? 4 : v >= 100 ? 3 : v >= 10 ? 2 : 1, true);
        if (W) {
            for (int k = 1; k <= weight; k++) out.digits4(jsonb_digit(dg, n, k), 4, false);
        } else {
            out.n += 4 * (u32)weight;
        }
        d_at = weight + 1;
    }
    if (ds > 0) {
        out.put('.');
        if (W) {
            for (u32 put = 0; put < ds; put += 4, d_at++) {
                u32 k = ds - put < 4 ? ds - put : 4;
                out.digits4(jsonb_digit(dg, n, d_at), k, false);
            }
        } else {
            out.n += ds;
        }
    }
    return true;
}

// A child that is not a container: its JEntry `e`, its data (with any
// alignment padding) data[start..end).
template <bool W>
__device__ bool jsonb_scalar(u32 e, const u8* data, u32 start, u32 end, JsonOut<W>& out) {
    u32 t = e & JENTRY_TYPEMASK;
    if (t == JENTRY_ISSTRING) return jsonb_string(data + start, end - start, out);
    if (t == JENTRY_ISNUMERIC) {
        u32 a = (start + 3) & ~3u;
        return a <= end && jsonb_numeric(data + a, end - a, out);
    }
    if (start != end) return false;
    if (t == JENTRY_ISBOOL_FALSE) {
        out.lit("false", 5);
    } else if (t == JENTRY_ISBOOL_TRUE) {
        out.lit("true", 4);
    } else if (t == JENTRY_ISNULL) {
        out.lit("null", 4);
    } else {
        return false;
    }
    return true;
}

// Prints (W) or measures the jsonb whose varlena payload is p[0..len);
// false when the reference would refuse it or it is nested too deep.
// Not inlined into the page kernels: inlined, it raised their register
// counts (sm_90: heap_sizes 30 -> 35, heap_write 32 -> 40), which costs
// every page, jsonb or not, a quarter of the blocks an SM holds; called,
// heap_sizes needs 31 and heap_write 32 (spilling a few words per tuple
// to L1-resident local memory).
template <bool W>
__device__ GPUPG_NOINLINE bool jsonb_text(const u8* p, u32 len, JsonOut<W>& out) {
    JsonbFrame st[JSONB_GPU_DEPTH];
    bool scalar;
    if (!jsonb_open(p, 0, len, &st[0], &scalar)) return false;
    if (scalar) {
        // A raw scalar: its one element, without brackets.
        u32 e = ld32le(p + st[0].ent);
        if ((e & JENTRY_TYPEMASK) == JENTRY_ISCONTAINER) return false;
        return jsonb_scalar(e, p + st[0].dat, 0, len - st[0].dat, out);
    }
    int top = 0;
    out.put((st[0].count & JSONB_OBJECT_BIT) ? '{' : '[');
    for (;;) {
        JsonbFrame& f = st[top];
        bool obj = (f.count & JSONB_OBJECT_BIT) != 0;
        u32 count = f.count & ~JSONB_OBJECT_BIT;
        if (f.i == count) {
            out.put(obj ? '}' : ']');
            if (top == 0) return true;
            top--;
            continue;
        }
        if (f.i > 0) out.put2(',', ' ');
        const u8* data = p + f.dat;
        u32 e, start, end;
        if (obj) {
            u32 k = ld32le(p + f.ent + 4 * f.i);
            if ((k & JENTRY_TYPEMASK) != JENTRY_ISSTRING) return false;
            u32 key_end = jsonb_end(k, f.at);
            if (!jsonb_string(data + f.at, key_end - f.at, out)) return false;
            out.put2(':', ' ');
            f.at = key_end;
            e = ld32le(p + f.ent + 4 * (count + f.i));
            start = f.vat;
            end = jsonb_end(e, start);
            f.vat = end;
        } else {
            e = ld32le(p + f.ent + 4 * f.i);
            start = f.at;
            end = jsonb_end(e, start);
            f.at = end;
        }
        f.i++;
        if ((e & JENTRY_TYPEMASK) != JENTRY_ISCONTAINER) {
            if (!jsonb_scalar(e, data, start, end, out)) return false;
            continue;
        }
        // A nested container starts at a 4-byte boundary of the data.
        u32 a = (start + 3) & ~3u;
        if (a > end || top + 1 >= JSONB_GPU_DEPTH) return false;
        bool nested_scalar;
        if (!jsonb_open(p, f.dat + a, end - a, &st[top + 1], &nested_scalar) || nested_scalar) {
            return false;
        }
        top++;
        out.put((st[top].count & JSONB_OBJECT_BIT) ? '{' : '[');
    }
}

// The exact byte length of the text of the jsonb payload p[0..len), with
// *ok false when it is not printed here (malformed, or nested deeper than
// JSONB_GPU_DEPTH).
__device__ u32 jsonb_text_len(const u8* p, u32 len, bool* ok) {
    JsonOut<false> out = {nullptr, 0};
    *ok = jsonb_text(p, len, out);
    return out.n;
}

// Writes the text of a payload jsonb_text_len() accepted; returns its end.
__device__ u8* jsonb_text_write(const u8* p, u32 len, u8* o) {
    JsonOut<true> out = {o, 0};
    jsonb_text(p, len, out);
    return out.o;
}

#endif

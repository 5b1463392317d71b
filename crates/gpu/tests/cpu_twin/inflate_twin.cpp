// The CPU twin of kernels/inflate.cuh: the pglz and LZ4 decompressors of
// the heap page kernels compiled as C++, run on many streams and compared
// with the CPU converter's decompressors (tests/inflate_twin.rs).
//
// Input (stdin, native-endian): u32 count, then per stream: u32 method
// (0 pglz, 1 LZ4), u32 rawsize, u32 n, n bytes.
// Output (stdout), per stream: u8 1 and the rawsize bytes *_write made
// when *_check accepts it, else u8 0. The process fails (exit 3) when
// *_check and *_write disagree, so a refused stream is also fed to
// *_write (which must stay within its buffers and refuse it too).
#include <cstdio>
#include <cstdlib>
#include <vector>

// The CUDA built-ins as C++ (kernels/common.cuh).
#define GPUPG_CPU_TWIN 1
#include "../../kernels/inflate.cuh"

static u32 word() {
    u32 v = 0;
    if (fread(&v, 4, 1, stdin) != 1) exit(2);
    return v;
}

int main() {
    u32 count = word();
    for (u32 c = 0; c < count; c++) {
        u32 method = word(), rawsize = word(), n = word();
        // Exactly sized buffers, so a sanitizer sees any access past them.
        std::vector<u8> src(n);
        if (n && fread(src.data(), 1, n, stdin) != n) return 2;
        bool ok = method == 0 ? pglz_check(src.data(), n, rawsize)
                              : lz4_check(src.data(), n, rawsize);
        // Refused streams are written only when their raw size is small
        // (a corrupt one may claim up to 1 GiB).
        if (!ok && rawsize > (1u << 20)) {
            fputc(0, stdout);
            continue;
        }
        std::vector<u8> out(rawsize);
        bool wrote = method == 0 ? pglz_write(src.data(), n, out.data(), rawsize)
                                 : lz4_write(src.data(), n, out.data(), rawsize);
        if (wrote != ok) return 3;
        fputc(ok ? 1 : 0, stdout);
        if (ok && rawsize) fwrite(out.data(), 1, rawsize, stdout);
    }
    return 0;
}

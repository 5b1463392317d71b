// What every kernel file of gpupgparser shares: the fixed-width integer
// names, the warp mask, and (for the CPU twins only) the CUDA built-ins
// as plain C++.
//
// NVRTC gets this file as an in-memory header named "common.cuh" (see
// src/runtime/nvrtc.rs, whose cache key hashes it with the kernel source);
// the CPU twins in tests/cpu_twin compile the .cu files as C++ with
// GPUPG_CPU_TWIN defined, and the compiler finds this file beside them.

#ifndef GPUPG_COMMON_CUH
#define GPUPG_COMMON_CUH

typedef unsigned char u8;
typedef unsigned short u16;
typedef short i16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned __int128 u128;

// All 32 lanes of a warp, for the *_sync intrinsics.
#define FULL_MASK 0xffffffffu

// A device function kept out of line (the CPU twins inline as they like).
#ifdef GPUPG_CPU_TWIN
#define GPUPG_NOINLINE
#else
#define GPUPG_NOINLINE __noinline__
#endif

#ifdef GPUPG_CPU_TWIN
// The CUDA built-ins the kernels use, for a C++ compiler: every thread of
// a launch runs after the other (blocks of one thread for heap.cu, whose
// threads share memory; warp intrinsics are not shimmed), so atomics are
// plain read-modify-writes and barriers do nothing.
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__
struct uint4 { unsigned x, y, z, w; };
struct Dim { unsigned x, y, z; };
static Dim threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static inline void __syncthreads() {}
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
    return (unsigned)((((unsigned long long)hi << 32) | lo) >> (s & 31));
}
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p += v; return o; }
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    unsigned long long o = *p; *p = o + v; return o;
}
#endif

#endif

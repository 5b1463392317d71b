// The CPU twin of kernels/gather.cu: the kernel source compiled as C++
// into a shared library whose one entry point runs every thread of a
// launch one after the other, so the gather plans are tested on machines
// without a GPU (src/store/gather/tests.rs drives it through `Exec`).
// GATHER_TWIN replaces the warp shuffle of the NULL count by a per-thread
// atomic add.
#include <cstdint>
#define GPUPG_CPU_TWIN 1
#define GATHER_TWIN 1
#include "../../kernels/gather.cu"

extern "C" void gather_twin_launch(unsigned k, unsigned char* tab, unsigned char* out,
        unsigned long long tasks_at, unsigned ntasks, unsigned long long nunits,
        unsigned grid, unsigned block) {
    gridDim.x = grid; blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b)
        for (unsigned t = 0; t < block; ++t) {
            blockIdx.x = b; threadIdx.x = t;
            switch (k) {
                case 0: gather_copy(tab, out, tasks_at, ntasks, nunits); break;
                case 1: gather_bits(tab, out, tasks_at, ntasks, nunits); break;
                case 2: gather_rebase(tab, out, tasks_at, ntasks, nunits); break;
                default: gather_fetch(tab, out, tasks_at, ntasks, nunits); break;
            }
        }
}

// Shared helpers for radixlm's kernels: bf16 <-> f32 conversion, 16-byte vector load/store of 8 bf16,
// warp and block sums. Conventions for every kernel in this folder:
// - storage is bf16 (__nv_bfloat16), all arithmetic and accumulation is f32, each output is rounded to
//   bf16 once (round-to-nearest-even);
// - tensors are row-major and contiguous unless a stride argument says otherwise; offsets that can
//   pass 2^31 elements are computed in int64;
// - a `vec` argument set by the host means "every row length is a multiple of 8 and every pointer is
//   16-byte aligned": the kernel then moves 8 bf16 per 128-bit access, otherwise one element at a time;
// - blockDim.x is a multiple of 32 and at most 1024 (the host launchers guarantee it).
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float bf2f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ bf16 f2bf(float v) { return __float2bfloat16_rn(v); }
// The value a float has once stored as bf16 (and read back).
__device__ __forceinline__ float round_bf16(float v) { return bf2f(f2bf(v)); }

__device__ __forceinline__ void load8(const bf16* p, float out[8]) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

__device__ __forceinline__ void store8(bf16* p, const float in[8]) {
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
    *reinterpret_cast<uint4*>(p) = u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// 16-byte asynchronous copy global -> shared (sm_80+; .cg: cached in L2 only, streaming data such as
// KV pages gains nothing from L1). When `pred` is false nothing is read and the 16 bytes are zero-filled
// (`src` must still be a valid pointer). Both addresses must be 16-byte aligned.
__device__ __forceinline__ void cp_async16(void* smem, const void* src, bool pred) {
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(pred ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Sum over the whole block; every thread gets the result. Call at most once per kernel (the shared
// scratch is not re-synchronised for a second use).
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < nwarps ? partial[lane] : 0.0f;
    return warp_sum(v);  // every warp reduces the partials, so all threads hold the total
}

// Element offset of 16-byte chunk `ch` of position `pos`'s row for kv head `kvh` in a paged KV cache
// [num_pages, page_size, num_kv_heads, HD] (src/layout.rs), or 0 when `ok` is false (a position past
// the sequence: the copy is then zero-filled and reads nothing). `page_id` is the table entry for pos;
// it is clamped into [0, num_pages) so a bad table gives wrong numbers, never an out-of-bounds read.
template <int HD>
__device__ __forceinline__ int64_t kv_chunk_offset(bool ok, int page_id, int num_pages, int pos, int page_size,
                                                   int num_kv_heads, int kvh, int ch) {
    if (!ok) return 0;
    const int page = min(max(page_id, 0), num_pages - 1);
    return (((int64_t)page * page_size + pos % page_size) * num_kv_heads + kvh) * HD + ch * 8;
}

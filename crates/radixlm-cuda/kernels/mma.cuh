// Tensor-core helpers shared by the attention kernels (sm_80+): ldmatrix loads from shared memory,
// mma.sync m16n8k16 with bf16 inputs and f32 accumulators, and the XOR swizzle of [rows][HD] tiles.
// Fragment layouts are the PTX ISA's for m16n8k16; a thread (lane = 4 * g + t4) holds, of a 16x8 f32
// accumulator c, rows g (c[0], c[1]) and g + 8 (c[2], c[3]) at columns 2 * t4 and 2 * t4 + 1.
#pragma once
#include "common.cuh"

__device__ __forceinline__ void ldsm_x4(unsigned r[4], const bf16* p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}

__device__ __forceinline__ void ldsm_x4_trans(unsigned r[4], const bf16* p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}

// c += a (16x16, row-major) * b (16x8, column-major); fragments as in the PTX ISA for m16n8k16.
__device__ __forceinline__ void mma_bf16(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// Element offset of 16-byte chunk `ch` of row `r` in a swizzled [rows][HD] tile.
template <int HD>
__device__ __forceinline__ int swz(int r, int ch) {
    return r * HD + ((ch ^ (r & 7)) << 3);
}

// One online-softmax step over a tile of scores held as m16n8k16 accumulators. s[NT][4]: this lane's
// scaled scores (log2 units, masked ones -inf) of rows g (e < 2) and g + 8 (e >= 2). Each row's running
// max m becomes the max over the quad (its 4 lanes hold all of the row's columns; the caller guarantees
// a finite score in every row), o and l are rescaled by exp2(m_old - m_new) (0 on the first tile, where
// m_old = -inf), s becomes exp2(s - m_new), and l gains this lane's share of the row sums (the quad is
// summed once, at the end).
template <int NT, int DT>
__device__ __forceinline__ void online_softmax_step(float (&s)[NT][4], float (&o)[DT][4], float (&m)[2],
                                                    float (&l)[2]) {
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        alpha[h] = exp2f(m[h] - mx[h]);
        m[h] = mx[h];
        l[h] *= alpha[h];
    }
#pragma unroll
    for (int d = 0; d < DT; d++) {
        o[d][0] *= alpha[0];
        o[d][1] *= alpha[0];
        o[d][2] *= alpha[1];
        o[d][3] *= alpha[1];
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float p = exp2f(s[nt][e] - m[e >> 1]);  // 0 for masked scores
            s[nt][e] = p;
            l[e >> 1] += p;
        }
    }
}

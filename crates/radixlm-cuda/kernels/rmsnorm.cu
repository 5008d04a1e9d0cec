// RMSNorm, plain and fused with the residual add (SGLang's fused_add_rmsnorm, llm.c's fused_residual).
//
//   rmsnorm_bf16:           out[r, :] = x[r, :] * rstd(x[r, :]) * w
//   fused_add_rmsnorm_bf16: residual[r, :] = bf16(x[r, :] + residual[r, :])      (in place)
//                           x[r, :]        = residual[r, :] * rstd(residual[r, :]) * w  (in place)
//   rstd(v) = 1 / sqrt(mean(v^2) + eps)
//
// x, out, residual: [rows, hidden] bf16; w: [hidden] bf16; eps: f32.
// The norm of the fused variant is taken over the bf16-rounded sum, the value that is stored in
// `residual` and that the next layer adds to: this is what a bf16 PyTorch model computes
// (`h = h + r` in bf16, then RMSNorm). Unlike HF, which rounds x*rstd to bf16 before multiplying by w,
// we round once at the end (within one bf16 ulp of HF).
// Grid: one block per row. Pass 1 reads the row (and writes the new residual), accumulating the sum of
// squares in f32; a block reduction gives rstd; pass 2 re-reads the row (L1/L2-hot, and each thread
// only re-reads elements it wrote itself, so no barrier is needed) and writes the output. Every element
// is read and written by the same thread, so out may alias x.
// Compiled with --use_fast_math: rsqrtf and the f32 sums are unaffected beyond a few f32 ulp.
#include "common.cuh"

template <bool ADD>
__device__ __forceinline__ void rmsnorm_row(bf16* out, bf16* x, bf16* residual,
                                            const bf16* __restrict__ w, float eps, int hidden,
                                            int vec) {
    const int64_t off = (int64_t)blockIdx.x * hidden;
    x += off;
    out += off;
    if (ADD) residual += off;
    const bf16* v = ADD ? residual : x;  // the row the norm is taken over (after pass 1)

    float ss = 0.0f;
    if (vec) {
        for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
            float a[8];
            load8(x + i, a);
            if (ADD) {
                float r[8];
                load8(residual + i, r);
#pragma unroll
                for (int j = 0; j < 8; j++) a[j] = round_bf16(a[j] + r[j]);
                store8(residual + i, a);
            }
#pragma unroll
            for (int j = 0; j < 8; j++) ss += a[j] * a[j];
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            float a = bf2f(x[i]);
            if (ADD) {
                a = round_bf16(a + bf2f(residual[i]));
                residual[i] = f2bf(a);
            }
            ss += a * a;
        }
    }
    const float rstd = rsqrtf(block_sum(ss) / (float)hidden + eps);

    if (vec) {
        for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
            float a[8], g[8];
            load8(v + i, a);
            load8(w + i, g);
#pragma unroll
            for (int j = 0; j < 8; j++) a[j] = a[j] * rstd * g[j];
            store8(out + i, a);
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x)
            out[i] = f2bf(bf2f(v[i]) * rstd * bf2f(w[i]));
    }
}

extern "C" __global__ void rmsnorm_bf16(bf16* out, bf16* x, const bf16* __restrict__ w, float eps,
                                        int hidden, int vec) {
    rmsnorm_row<false>(out, x, nullptr, w, eps, hidden, vec);
}

extern "C" __global__ void fused_add_rmsnorm_bf16(bf16* x, bf16* residual, const bf16* __restrict__ w,
                                                  float eps, int hidden, int vec) {
    rmsnorm_row<true>(x, x, residual, w, eps, hidden, vec);
}

// Gated MLP activation on the fused gate/up projection (Llama/Qwen2 MLP, SGLang's silu_and_mul):
//
//   out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i],   silu(g) = g / (1 + exp(-g))
//
// gate_up: [tokens, 2 * inter] bf16 (gate half, then up half: the output of one GEMM against the
// concatenated [gate_proj; up_proj] weight), out: [tokens, inter] bf16.
// f32 math, one rounding (HF rounds silu(g) to bf16 before the multiply: within one bf16 ulp).
// Grid: (tokens, column chunks); each thread handles 8 columns when `vec`, else one.
// Compiled with --use_fast_math: __expf's error is a few f32 ulp; for g < -88, exp(-g) = inf and the
// fast division gives -0, the right limit.
#include "common.cuh"

__device__ __forceinline__ float silu(float g) { return g / (1.0f + __expf(-g)); }

extern "C" __global__ void silu_and_mul_bf16(bf16* __restrict__ out, const bf16* __restrict__ gate_up,
                                             int inter, int vec) {
    const int64_t t = blockIdx.x;
    const bf16* gate = gate_up + t * 2 * inter;
    const bf16* up = gate + inter;
    bf16* dst = out + t * inter;
    const int per_thread = vec ? 8 : 1;
    const int i = (blockIdx.y * blockDim.x + threadIdx.x) * per_thread;
    if (i >= inter) return;
    if (vec) {
        float g[8], u[8];
        load8(gate + i, g);
        load8(up + i, u);
#pragma unroll
        for (int j = 0; j < 8; j++) g[j] = silu(g[j]) * u[j];
        store8(dst + i, g);
    } else {
        dst[i] = f2bf(silu(bf2f(gate[i])) * bf2f(up[i]));
    }
}

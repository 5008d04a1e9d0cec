// Token embedding lookup: out[t, :] = table[ids[t], :].
//
// table: [vocab, hidden] bf16, ids: [tokens] int32, out: [tokens, hidden] bf16.
// Grid: one block per token (gridDim.x = tokens); threads stride over the row, 8 bf16 per access
// when `vec` (see common.cuh). A pure copy: the result is bit-exact.
// An id outside [0, vocab) yields a zero row instead of an out-of-bounds read: the engine checks ids
// when a request arrives, and a bad id must never become a memory fault that kills the CUDA context.
//
// Overlap scheduling: a negative id with bit 31 set and j = id & 0x7fffffff < future_len stands for
// future[j], a token the previous step's sampler wrote on the device, not known to the host when
// this step was launched. (future may be null with future_len 0.)
#include "common.cuh"

extern "C" __global__ void embedding_bf16(bf16* __restrict__ out, const bf16* __restrict__ table,
                                          const int32_t* __restrict__ ids,
                                          const int32_t* __restrict__ future, int future_len,
                                          int hidden, int vocab, int vec) {
    const int64_t t = blockIdx.x;
    int id = ids[t];
    if (id < 0 && (id & 0x7fffffff) < future_len) id = future[id & 0x7fffffff];
    bf16* dst = out + t * hidden;
    const bool valid = id >= 0 && id < vocab;
    const bf16* src = table + (int64_t)(valid ? id : 0) * hidden;
    if (vec) {
        for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
            uint4 v = valid ? *reinterpret_cast<const uint4*>(src + i) : make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4*>(dst + i) = v;
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = valid ? src[i] : f2bf(0.0f);
    }
}

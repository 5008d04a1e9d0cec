// Rotary position embedding on q and k, fused with the store of k and v into the paged KV cache
// (SGLang's apply_rope_with_cos_sin_cache_inplace + set_kv_buffer, vLLM's rotary_embedding +
// reshape_and_cache_flash, in one launch).
//
// qkv: [tokens, (num_heads + 2 * num_kv_heads) * head_dim] bf16, contiguous rows: q heads, then k
//      heads, then v heads (the output of one GEMM against the concatenated [q; k; v] weight, bias
//      already added). q and k are rotated IN PLACE (attention reads q from here; a ragged prefill
//      kernel may read the new k and v from here too).
// positions: [tokens] int32, the token's position in its sequence.
// slots: [tokens] int32, where the token's k and v go in the cache: slot = page * page_size + offset.
//      A slot < 0 or >= num_slots means "do not store" (padding rows of a CUDA-graph batch).
// k_cache, v_cache: [num_slots, num_kv_heads, head_dim] bf16 for one layer, which is
//      [num_pages, page_size, num_kv_heads, head_dim] ("NHD", the layout of vLLM's flash backend,
//      FlashAttention-3's paged KV and FlashInfer's NHD). Why this layout: a token's k (or v) for all
//      heads is one contiguous row, so the store here is coalesced and addressed by a flat slot index
//      whatever the page size; the paged attention kernels read, for one kv head, head_dim contiguous
//      bf16 (>= 128 bytes) per token, which is a full coalesced segment.
// Rotation, for the pair (a, b) of dims (i0, i1) and angle theta = pos * inv_freq[i]:
//      a' = a cos - b sin,  b' = b cos + a sin,  i = 0 .. rot_dim/2 - 1
//      NEOX (rotate_half; HF Llama/Qwen2):    i0 = i,     i1 = i + rot_dim/2
//      interleaved (GPT-J; GGUF llama):       i0 = 2i,    i1 = 2i + 1
//      dims rot_dim .. head_dim pass through unrotated (partial rotary).
// freqs: TABLE: cos_sin [max_pos, rot_dim] f32, row p = [cos(p f_0) .. cos(p f_{h-1}) | sin(p f_0) ..
//      sin(p f_{h-1})] (h = rot_dim/2), precomputed on the host, so any scaling (Llama 3, YaRN's
//      mscale) is baked in; positions outside [0, max_pos) are clamped (never an out-of-bounds read).
//      !TABLE: inv_freq [rot_dim/2] f32, theta = float(pos) * inv_freq[i] in f32 (as HF computes it),
//      then precise sincosf. This file is compiled WITHOUT --use_fast_math: theta reaches ~1e5 rad at
//      long positions, where __sinf/__cosf are useless.
// Grid: one block per token; dynamic shared memory holds the token's rot_dim cos/sin values.
#include "common.cuh"

template <bool NEOX, bool TABLE>
__device__ __forceinline__ void rope_kv(bf16* __restrict__ qkv, const int32_t* __restrict__ positions,
                                        const int32_t* __restrict__ slots,
                                        const float* __restrict__ freqs, int max_pos,
                                        bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                        int64_t num_slots, int num_heads, int num_kv_heads,
                                        int head_dim, int rot_dim) {
    extern __shared__ float cs[];  // [half cos | half sin]
    const int64_t t = blockIdx.x;
    const int half = rot_dim / 2;
    int pos = positions[t];
    if (TABLE) pos = min(max(pos, 0), max_pos - 1);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float c, s;
        if (TABLE) {
            c = freqs[(int64_t)pos * rot_dim + i];
            s = freqs[(int64_t)pos * rot_dim + half + i];
        } else {
            sincosf((float)pos * freqs[i], &s, &c);
        }
        cs[i] = c;
        cs[half + i] = s;
    }
    __syncthreads();

    const int kv_row = num_kv_heads * head_dim;
    bf16* row = qkv + t * (int64_t)(num_heads * head_dim + 2 * kv_row);
    const int64_t slot = slots[t];
    const bool store = slot >= 0 && slot < num_slots;
    bf16* kc = k_cache + (store ? slot : 0) * kv_row;
    bf16* vc = v_cache + (store ? slot : 0) * kv_row;

    // Rotate every (head, pair) of q and k; k heads follow q heads, so head h starts at h * head_dim.
    const int heads = num_heads + num_kv_heads;
    for (int w = threadIdx.x; w < heads * half; w += blockDim.x) {
        const int h = w / half, i = w - h * half;
        const int i0 = NEOX ? i : 2 * i, i1 = NEOX ? i + half : 2 * i + 1;
        bf16* p = row + h * head_dim;
        const float a = bf2f(p[i0]), b = bf2f(p[i1]);
        const float c = cs[i], s = cs[half + i];
        const bf16 ra = f2bf(a * c - b * s), rb = f2bf(b * c + a * s);
        p[i0] = ra;
        p[i1] = rb;
        if (store && h >= num_heads) {
            bf16* kd = kc + (h - num_heads) * head_dim;
            kd[i0] = ra;
            kd[i1] = rb;
        }
    }
    if (!store) return;
    // The unrotated tail of each k head, then v whole: plain copies.
    const bf16* k = row + num_heads * head_dim;
    const int tail = head_dim - rot_dim;
    for (int w = threadIdx.x; w < num_kv_heads * tail; w += blockDim.x) {
        const int j = (w / tail) * head_dim + rot_dim + w % tail;
        kc[j] = k[j];
    }
    const bf16* v = k + kv_row;
    for (int j = threadIdx.x; j < kv_row; j += blockDim.x) vc[j] = v[j];
}

#define ROPE_KV_ENTRY(name, NEOX, TABLE)                                                              \
    extern "C" __global__ void name(bf16* qkv, const int32_t* positions, const int32_t* slots,       \
                                    const float* freqs, int max_pos, bf16* k_cache, bf16* v_cache,  \
                                    int64_t num_slots, int num_heads, int num_kv_heads,             \
                                    int head_dim, int rot_dim) {                                    \
        rope_kv<NEOX, TABLE>(qkv, positions, slots, freqs, max_pos, k_cache, v_cache, num_slots,   \
                             num_heads, num_kv_heads, head_dim, rot_dim);                           \
    }

ROPE_KV_ENTRY(rope_kv_neox_table_bf16, true, true)
ROPE_KV_ENTRY(rope_kv_neox_freq_bf16, true, false)
ROPE_KV_ENTRY(rope_kv_interleaved_table_bf16, false, true)
ROPE_KV_ENTRY(rope_kv_interleaved_freq_bf16, false, false)

// Prefill / extend attention over the paged KV cache, causal, several sequences packed in one launch
// (FlashAttention-2's varlen forward over FlashInfer-style paged KV; SGLang's extend_attention with a
// radix-cached prefix; our own kernel).
//
// Sequence s owns query tokens cu_seqlens[s] .. cu_seqlens[s+1] - 1 of q/out (its n_s new tokens) and has
// prefix_lens[s] tokens already in the cache before them (a radix-cache hit, or the earlier chunks of a
// chunked prefill). The new tokens' k and v have been stored in the cache too (rope.cu), so all keys
// come from the cache:
//
//   out[t_i, h, :] = sum_p softmax_p(q[t_i, h, :] . k[p, kvh, :] * scale) * v[p, kvh, :]
//   token i of the sequence (0-based among its new tokens) sees positions p = 0 .. prefix + i
//
// q: [tokens, q_stride] bf16, head h at h * HD; out: [tokens, num_heads * HD] bf16. Tokens past
// cu_seqlens[num_seqs] are not written. k_cache / v_cache / page_table (one row of max_pages per
// sequence) as in attention_decode.cu; kv lengths are clamped to max_pages * page_size, page ids into
// [0, num_pages), cu_seqlens into [0, tokens]. scale_log2 = softmax scale * log2(e).
//
// Tiling (FlashAttention-2): a block owns one (sequence, kv head) and BM = 64 query ROWS, where a row is
// a (token, q head of the group) pair, token-major: GQA packs the group's heads into the rows, so one
// K/V tile in shared memory serves all of them (Qwen2.5-0.5B: 7 heads x ~9 tokens per block). 4 warps,
// 16 rows each. K/V tiles of BN = 64 positions are double-buffered through shared memory with cp.async
// (zero-filled past the sequence's end, so a masked probability 0 never meets a NaN); positions past the
// causal limit are masked to -inf. S = Q K^T and O += P V run on tensor cores (mma.sync m16n8k16, bf16 in,
// f32 accumulate), operands loaded with ldmatrix from shared memory whose 16-byte chunks are XOR-swizzled
// by row (chunk ^ (row % 8)) so the 8 rows one ldmatrix phase reads fall in distinct banks. The online
// softmax runs on the f32 accumulators (log2 units, exp2f); P is rounded to bf16 to feed the second mma
// (as FlashAttention does), the row sums l use the unrounded f32 values. Grid: (row tiles, sequences,
// kv heads), row tiles counted for the longest sequence (max_new_tokens); tiles past a shorter
// sequence's end exit at once, and the heaviest tiles (the last rows, which see the most keys) run first.
#include "common.cuh"
#include "mma.cuh"

#define PF_BM 64
#define PF_BN 64
#define PF_THREADS 128

template <int HD>
__device__ __forceinline__ void attn_prefill(
    bf16* __restrict__ out, const bf16* __restrict__ q, int64_t q_stride, int tokens,
    const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache, int num_pages,
    const int32_t* __restrict__ page_table, int max_pages, const int32_t* __restrict__ cu_seqlens,
    const int32_t* __restrict__ prefix_lens, int page_size, int num_heads, int num_kv_heads,
    float scale_log2) {
    constexpr int CH = HD / 8;           // 16-byte chunks per row
    constexpr int KT = HD / 16;          // k-steps of S = Q K^T
    constexpr int NT = PF_BN / 8;        // n-tiles of S (8 keys each)
    constexpr int DT = HD / 8;           // n-tiles of O (8 dims each)
    constexpr int ROWS_PER_PASS = PF_THREADS / CH;  // K/V rows one pass of the block copies
    constexpr int KV_ROWS = PF_BN / ROWS_PER_PASS;   // K/V rows per thread per tile
    extern __shared__ uint4 smem_u4[];
    bf16* qs = reinterpret_cast<bf16*>(smem_u4);  // [BM][HD]
    bf16* ks = qs + PF_BM * HD;                   // [2][BN][HD]
    bf16* vs = ks + 2 * PF_BN * HD;               // [2][BN][HD]

    const int seq = blockIdx.y, kvh = blockIdx.z;
    const int group = num_heads / num_kv_heads;
    const int q0 = min(max(cu_seqlens[seq], 0), tokens);
    const int n = min(max(cu_seqlens[seq + 1], q0), tokens) - q0;
    const int rows = n * group;
    // Row tiles, heaviest first (the last rows see the most keys). The loop makes any grid.x correct;
    // the host sizes grid.x for the longest sequence, so a block normally runs one tile.
    for (int tile = gridDim.x - 1 - blockIdx.x; tile * PF_BM < rows; tile += gridDim.x) {
        const int row0 = tile * PF_BM;
        const int prefix = max(prefix_lens[seq], 0);
        const int kv_len = min(prefix + n, max_pages * page_size);  // >= 1: n >= 1 and the host checks
        const int first_tok = row0 / group, last_tok = (min(row0 + PF_BM, rows) - 1) / group;
        const int kv_hi = min(kv_len, prefix + last_tok + 1);      // keys any row of the tile sees
        const int kv_all = min(kv_len, prefix + first_tok + 1);    // keys every row of the tile sees
        const int ntiles = (kv_hi + PF_BN - 1) / PF_BN;
        const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
        const int32_t* pages = page_table + (int64_t)seq * max_pages;

        // Q tile: row r = (token row0/group + .., head of the group), zero rows past the sequence.
        for (int c = tid; c < PF_BM * CH; c += PF_THREADS) {
            const int r = c / CH, ch = c % CH, R = row0 + r;
            const bool ok = R < rows;
            const bf16* src = q;
            if (ok) src = q + (int64_t)(q0 + R / group) * q_stride + (kvh * group + R % group) * HD + ch * 8;
            cp_async16(qs + swz<HD>(r, ch), src, ok);
        }
        // K and V of keys [j*BN, j*BN + BN) into buffer `stage`: each thread copies one 16-byte chunk
        // column of KV_ROWS rows, for K and V alike. A row's page id is a dependent global load, so
        // the ids of tile j are fetched into `pg` while tile j - 1 is in flight (one tile ahead).
        int pg[KV_ROWS];
        auto fetch_pages = [&](int j) {
#pragma unroll
            for (int i = 0; i < KV_ROWS; i++) {
                const int pos = j * PF_BN + tid / CH + i * ROWS_PER_PASS;
                if (pos < kv_len) pg[i] = pages[pos / page_size];
            }
        };
        auto load_kv = [&](int j, int stage) {
            const int ch = tid % CH;
            bf16* kd = ks + stage * PF_BN * HD;
            bf16* vd = vs + stage * PF_BN * HD;
#pragma unroll
            for (int i = 0; i < KV_ROWS; i++) {
                const int r = tid / CH + i * ROWS_PER_PASS, pos = j * PF_BN + r;
                const bool ok = pos < kv_len;
                const int64_t off =
                    kv_chunk_offset<HD>(ok, pg[i], num_pages, pos, page_size, num_kv_heads, kvh, ch);
                cp_async16(kd + swz<HD>(r, ch), k_cache + off, ok);
                cp_async16(vd + swz<HD>(r, ch), v_cache + off, ok);
            }
        };
        fetch_pages(0);
        load_kv(0, 0);
        cp_async_commit();
        if (ntiles > 1) fetch_pages(1);
        cp_async_wait<0>();
        __syncthreads();

        // This warp's 16 rows of Q as A fragments, for the whole kernel.
        unsigned qf[KT][4];
#pragma unroll
        for (int kk = 0; kk < KT; kk++) {
            const int r = warp * 16 + (lane & 15);
            ldsm_x4(qf[kk], qs + swz<HD>(r, kk * 2 + (lane >> 4)));
        }

        // The thread's two rows (g and g + 8 of the warp's 16) and the keys they may see.
        const int g = lane >> 2, t4 = lane & 3;
        int lim[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int R = min(row0 + warp * 16 + g + 8 * h, rows - 1);  // rows past the end: any valid row
            lim[h] = min(kv_len, prefix + R / group + 1);
        }
        float o[DT][4];
#pragma unroll
        for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

        for (int j = 0; j < ntiles; j++) {
            if (j + 1 < ntiles) {
                load_kv(j + 1, (j + 1) & 1);
                if (j + 2 < ntiles) fetch_pages(j + 2);
            }
            cp_async_commit();
            cp_async_wait<1>();
            __syncthreads();
            // A warp whose 16 rows all lie past the sequence's end only helps load (its output is
            // never written): a decode row of a mixed step fills `group` rows of the tile, so this
            // keeps such tiles bound by the K/V reads rather than by four warps of tensor-core work.
            if (row0 + warp * 16 >= rows) {
                __syncthreads();
                continue;
            }
            const bf16* kt = ks + (j & 1) * PF_BN * HD;
            const bf16* vt = vs + (j & 1) * PF_BN * HD;

            float s[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KT; kk++) {
#pragma unroll
                for (int nt = 0; nt < NT; nt += 2) {
                    unsigned b[4];
                    const int r = nt * 8 + (lane & 7) + ((lane >> 4) << 3);
                    ldsm_x4(b, kt + swz<HD>(r, kk * 2 + ((lane >> 3) & 1)));
                    mma_bf16(s[nt], qf[kk], b[0], b[1]);
                    mma_bf16(s[nt + 1], qf[kk], b[2], b[3]);
                }
            }

            // Scale and causal mask (only tiles that reach past kv_all need it); key 0 is in every row's
            // view, so each row has a finite score.
            const bool masked = (j + 1) * PF_BN > kv_all;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float v = s[nt][e] * scale_log2;
                    if (masked && j * PF_BN + nt * 8 + 2 * t4 + (e & 1) >= lim[e >> 1]) v = -INFINITY;
                    s[nt][e] = v;
                }
            }
            online_softmax_step(s, o, m, l);

            // O += P V: the S accumulators of n-tiles 2kk, 2kk+1 are exactly the A fragment of k-step kk.
#pragma unroll
            for (int kk = 0; kk < PF_BN / 16; kk++) {
                const unsigned a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                                       pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                       pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                       pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int d = 0; d < DT; d += 2) {
                    unsigned b[4];
                    const int r = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
                    ldsm_x4_trans(b, vt + swz<HD>(r, d + (lane >> 4)));
                    mma_bf16(o[d], a, b[0], b[1]);
                    mma_bf16(o[d + 1], a, b[2], b[3]);
                }
            }
            __syncthreads();  // all warps are done with buffer j & 1 before it is refilled
        }

#pragma unroll
        for (int h = 0; h < 2; h++) {
            l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
            l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
            const int R = row0 + warp * 16 + g + 8 * h;
            if (R >= rows) continue;
            const float inv = 1.0f / l[h];
            bf16* dst = out + (int64_t)(q0 + R / group) * num_heads * HD + (kvh * group + R % group) * HD;
#pragma unroll
            for (int d = 0; d < DT; d++) {
                *reinterpret_cast<__nv_bfloat162*>(dst + d * 8 + 2 * t4) =
                    __floats2bfloat162_rn(o[d][2 * h] * inv, o[d][2 * h + 1] * inv);
            }
        }
    }
}

#define ATTN_PREFILL_ENTRY(HD)                                                                      \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) attn_prefill_hd##HD##_bf16(           \
        bf16* out, const bf16* q, int64_t q_stride, int tokens, const bf16* k_cache,               \
        const bf16* v_cache, int num_pages, const int32_t* page_table, int max_pages,              \
        const int32_t* cu_seqlens, const int32_t* prefix_lens, int page_size, int num_heads,       \
        int num_kv_heads, float scale_log2) {                                                      \
        attn_prefill<HD>(out, q, q_stride, tokens, k_cache, v_cache, num_pages, page_table,        \
                         max_pages, cu_seqlens, prefix_lens, page_size, num_heads, num_kv_heads,   \
                         scale_log2);                                                              \
    }

ATTN_PREFILL_ENTRY(64)
ATTN_PREFILL_ENTRY(128)

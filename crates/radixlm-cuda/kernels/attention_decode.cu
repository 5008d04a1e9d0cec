// Paged attention for decode: one query token per sequence against that sequence's whole context in the
// paged KV cache (vLLM's paged_attention v1/v2, FlashInfer's BatchDecodeWithPagedKVCache, SGLang's
// triton decode_attention: the same job, our own kernel).
//
//   out[b, h, :] = sum_p softmax_p(q[b, h, :] . k[b, p, kvh, :] * scale) * v[b, p, kvh, :]
//   p = 0 .. seq_lens[b] - 1,  kvh = h / (num_heads / num_kv_heads)  (GQA; MHA when equal)
//
// q: [batch, q_stride] bf16, head h at h * HD (q_stride = qkv_width to read q straight out of the fused,
//    rotated qkv buffer); out: [batch, num_heads * HD] bf16.
// k_cache, v_cache: [num_pages, page_size, num_kv_heads, HD] bf16 (src/layout.rs); the token at position
//    p of sequence b is in page page_table[b * max_pages + p / page_size], offset p % page_size.
// seq_lens: [batch] int32, context length INCLUDING the current token (rope.cu has stored its k and v).
//    A length of 0 (padding rows of a CUDA-graph batch) gives an output row of zeros. Lengths are
//    clamped to [0, max_pages * page_size] and page ids to [0, num_pages): a bad table gives wrong
//    numbers, never an out-of-bounds read. Positions >= seq_len are never read, so unwritten slots of a
//    sequence's last page (whatever they hold, NaN included) do not matter.
// scale_log2 = softmax scale (1/sqrt(HD)) * log2(e): scores are kept in log2 units and exp2f is used.
//
// Block: one (kv head, sequence[, split]); blockDim = (HD/8, group, bdz). Thread (tx, ty, tz) holds 8
// dims (tx) of q head kvh*group + ty, so the group's q heads share each K/V row read from shared memory
// (same address across ty: a broadcast), and each K/V byte leaves HBM once per kv head. A dot product is
// 8 FMAs + log2(HD/8) shuffles. K/V tiles of bdz * TPZ tokens stream through shared memory in a
// STAGES-deep cp.async pipeline; z-slice tz takes TPZ consecutive tokens of each tile and keeps its own
// online-softmax state (max m, sum l, 8 accumulators, f32, log2 units); the bdz states are merged at the end.
// Everything is f32 except the bf16 inputs and the single bf16 rounding of each output.
//
// Split-K (flash-decoding): with few sequences, (kv heads x batch) blocks cannot fill 132 SMs nor keep
// enough bytes in flight, so the context is cut into up to `max_splits` chunks handled by separate
// blocks (grid.z); each writes its normalised partial output (f32) and log-sum-exp to a workspace, and
// attn_decode_reduce merges them: out = sum_s 2^(lse_s - lse) o_s, lse = log2 sum_s 2^lse_s. The chunk
// length is computed per sequence on the device (max(ceil(len / max_splits), min_chunk), rounded up to
// 16), so a short sequence uses fewer splits than the grid has (the extra blocks exit at once) and the
// grid does not depend on the lengths: a CUDA graph captured once per batch size serves every step.
// max_splits = 1 is the single-pass kernel: no workspace, no second launch.
#include "common.cuh"
#include "mma.cuh"

#define DEC_TPZ 4     // tokens per z-slice per tile
#define DEC_STAGES 4  // cp.async pipeline depth (tiles in flight)

// Chunk length of one split; identical in both kernels (so they agree on which splits exist).
__device__ __forceinline__ int decode_chunk(int len, int max_splits, int min_chunk) {
    if (max_splits <= 1) return max(len, 1);
    int c = max((len + max_splits - 1) / max_splits, min_chunk);
    return (c + 15) & ~15;
}

// Positions [start, end) of sequence b that split `split` attends to (empty past the sequence's end);
// the same in every decode kernel.
__device__ __forceinline__ int2 decode_range(const int32_t* seq_lens, int b, int max_len, int split,
                                             int max_splits, int min_chunk) {
    const int len = min(max(seq_lens[b], 0), max_len);
    const int chunk = decode_chunk(len, max_splits, min_chunk);
    const int start = split * chunk;
    return make_int2(start, min(len, start + chunk));
}

template <int HD>
__device__ __forceinline__ void attn_decode(bf16* __restrict__ out, float* __restrict__ part_o,
                                            float* __restrict__ part_lse, const bf16* __restrict__ q,
                                            int64_t q_stride, const bf16* __restrict__ k_cache,
                                            const bf16* __restrict__ v_cache, int num_pages,
                                            const int32_t* __restrict__ page_table, int max_pages,
                                            const int32_t* __restrict__ seq_lens, int page_size,
                                            int num_heads, int num_kv_heads, float scale_log2,
                                            int max_splits, int min_chunk) {
    constexpr int BDX = HD / 8;
    extern __shared__ uint4 smem_u4[];
    bf16* smem = reinterpret_cast<bf16*>(smem_u4);
    const int tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
    const int group = blockDim.y, bdz = blockDim.z;
    const int tid = (tz * group + ty) * BDX + tx, nthreads = BDX * group * bdz;
    const int tile = bdz * DEC_TPZ;
    const int kvh = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
    const int head = kvh * group + ty;
    const int2 range = decode_range(seq_lens, b, max_pages * page_size, split, max_splits, min_chunk);
    const int start = range.x, end = range.y;
    bf16* out_row = out + (int64_t)b * num_heads * HD + head * HD + tx * 8;
    if (start >= end) {  // block-uniform: no barrier is skipped by part of the block
        if (max_splits == 1 && tz == 0) {
            const float zero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            store8(out_row, zero);
        }
        return;  // a split past the end: attn_decode_reduce does not read it
    }

    float qv[8];
    load8(q + (int64_t)b * q_stride + head * HD + tx * 8, qv);
#pragma unroll
    for (int i = 0; i < 8; i++) qv[i] *= scale_log2;

    const int32_t* pages = page_table + (int64_t)b * max_pages;
    // Loads: a tile is tile * BDX (row, 16-byte chunk) pairs, each copied for K and for V; thread tid
    // takes pairs tid, tid + nthreads, ... (at most DEC_TPZ of them, as nthreads >= BDX * bdz).
    // Each pair needs its row's page id, a dependent global load: the ids of a tile are fetched one
    // tile ahead into `pg`, so that latency overlaps the wait and the math instead of preceding the
    // copies.
    int pg[DEC_TPZ];
    auto fetch_pages = [&](int t) {
#pragma unroll
        for (int i = 0; i < DEC_TPZ; i++) {
            const int c = tid + i * nthreads, pos = start + t * tile + c / BDX;
            if (c < tile * BDX && pos < end) pg[i] = pages[pos / page_size];
        }
    };
    auto load_tile = [&](int t, int stage) {
        bf16* ks = smem + (int64_t)stage * 2 * tile * HD;
#pragma unroll
        for (int i = 0; i < DEC_TPZ; i++) {
            const int c = tid + i * nthreads;
            if (c >= tile * BDX) break;
            const int r = c / BDX, ch = c % BDX, pos = start + t * tile + r;
            const bool ok = pos < end;
            const int64_t off = kv_chunk_offset<HD>(ok, pg[i], num_pages, pos, page_size, num_kv_heads, kvh, ch);
            cp_async16(ks + r * HD + ch * 8, k_cache + off, ok);
            cp_async16(ks + tile * HD + r * HD + ch * 8, v_cache + off, ok);
        }
    };

    float m = -INFINITY, l = 0.0f, o[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int ntiles = (end - start + tile - 1) / tile;
#pragma unroll
    for (int s = 0; s < DEC_STAGES - 1; s++) {
        if (s < ntiles) {
            fetch_pages(s);
            load_tile(s, s);
        }
        cp_async_commit();  // empty groups keep the wait count uniform
    }
    if (DEC_STAGES - 1 < ntiles) fetch_pages(DEC_STAGES - 1);
    for (int t = 0; t < ntiles; t++) {
        const int nxt = t + DEC_STAGES - 1;
        if (nxt < ntiles) {
            load_tile(nxt, nxt % DEC_STAGES);
            if (nxt + 1 < ntiles) fetch_pages(nxt + 1);
        }
        cp_async_commit();
        cp_async_wait<DEC_STAGES - 1>();  // tile t has landed (for this thread) ...
        __syncthreads();                  // ... and for every thread
        const bf16* ks = smem + (int64_t)(t % DEC_STAGES) * 2 * tile * HD + tz * DEC_TPZ * HD;
        const bf16* vs = ks + tile * HD;
        const int pos0 = start + t * tile + tz * DEC_TPZ;
        float s[DEC_TPZ];
        float mt = m;
#pragma unroll
        for (int j = 0; j < DEC_TPZ; j++) {
            float k8[8];
            load8(ks + j * HD + tx * 8, k8);
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) d += qv[i] * k8[i];
#pragma unroll
            for (int off = BDX / 2; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
            s[j] = pos0 + j < end ? d : -INFINITY;
            mt = fmaxf(mt, s[j]);
        }
        if (mt != -INFINITY) {  // else this slice has no valid token in this tile (the last, partial one)
            const float alpha = exp2f(m - mt);  // 0 on the first tile (m = -inf)
            l *= alpha;
#pragma unroll
            for (int i = 0; i < 8; i++) o[i] *= alpha;
#pragma unroll
            for (int j = 0; j < DEC_TPZ; j++) {
                const float p = exp2f(s[j] - mt);  // 0 for masked tokens, whose V rows are zero-filled
                float v8[8];
                load8(vs + j * HD + tx * 8, v8);
                l += p;
#pragma unroll
                for (int i = 0; i < 8; i++) o[i] += p * v8[i];
            }
            m = mt;
        }
        __syncthreads();  // every thread is done with stage t before it is refilled
    }
    cp_async_wait<0>();
    __syncthreads();

    // Merge the bdz slices: [bdz][group][HD] partial outputs, then [bdz][group] (m, l) pairs.
    float* red = reinterpret_cast<float*>(smem_u4);
    float* ml = red + bdz * group * HD;
    {
        float* ro = red + (tz * group + ty) * HD + tx * 8;
#pragma unroll
        for (int i = 0; i < 8; i++) ro[i] = o[i];
        if (tx == 0) {
            ml[2 * (tz * group + ty)] = m;
            ml[2 * (tz * group + ty) + 1] = l;
        }
    }
    __syncthreads();
    if (tz != 0) return;
    float mm = -INFINITY;
    for (int z = 0; z < bdz; z++) mm = fmaxf(mm, ml[2 * (z * group + ty)]);
    float lsum = 0.0f, acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int z = 0; z < bdz; z++) {
        const float mz = ml[2 * (z * group + ty)];
        if (mz == -INFINITY) continue;  // a slice that saw no valid token
        const float w = exp2f(mz - mm);
        lsum += ml[2 * (z * group + ty) + 1] * w;
        const float* ro = red + (z * group + ty) * HD + tx * 8;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] += ro[i] * w;
    }
    const float inv = 1.0f / lsum;  // lsum >= 1: the maximum's own term is exp2(0)
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] *= inv;
    if (max_splits == 1) {
        store8(out_row, acc);
    } else {
        const int64_t row = ((int64_t)b * num_heads + head) * max_splits + split;
        float4* po = reinterpret_cast<float4*>(part_o + row * HD + tx * 8);
        po[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
        po[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
        if (tx == 0) part_lse[row] = mm + log2f(lsum);
    }
}

// ---- Tensor-core variant ----------------------------------------------------------------------------
// For GQA groups of 2..16 q heads per kv head (Llama-3.1-8B: 4, Qwen2.5-0.5B: 7) the kernel above
// spends, per (q head, key, 8 dims), 8 FMAs, 8 conversions and a share of log2(HD/8) shuffles, and at
// large batch it is bound by instruction issue before HBM (FlashInfer moves its decode to tensor cores
// for groups >= 4 for the same reason). Here the group's q heads are the 16 rows of an m16n8k16 A operand
// (rows past the group are zero-filled and never stored): S = Q K^T and O += P V cost HD / 4 mma per 16
// keys per warp. The softmax is attention_prefill.cu's: f32 accumulators in log2 units, P rounded to
// bf16 for the second mma, row sums l from the unrounded values.
//
// Same arguments, grid (kv heads, batch, splits), split rule, workspace layout and reduce kernel as
// attn_decode. Block: TC_WARPS warps (blockDim.x = 32 * TC_WARPS). Warp w takes the TC_BN-key tiles
// w, w + TC_WARPS, ... of the block's range [start, end) through its own TC_STAGES-deep cp.async ring
// (no block barrier inside the loop: a warp waits for its own copies, then __syncwarp()s) and keeps its
// own online-softmax state; the warps' states are merged through shared memory at the end. Keys past
// `end` are zero-filled and masked to -inf, so a partial last tile needs no special case; the first key
// of every tile is valid, so each row's running max is finite after its first tile.
#define TC_WARPS 4
#define TC_BN 16
#define TC_STAGES 3

template <int HD>
__device__ __forceinline__ void attn_decode_tc(bf16* __restrict__ out, float* __restrict__ part_o,
                                               float* __restrict__ part_lse, const bf16* __restrict__ q,
                                               int64_t q_stride, const bf16* __restrict__ k_cache,
                                               const bf16* __restrict__ v_cache, int num_pages,
                                               const int32_t* __restrict__ page_table, int max_pages,
                                               const int32_t* __restrict__ seq_lens, int page_size,
                                               int num_heads, int num_kv_heads, float scale_log2,
                                               int max_splits, int min_chunk) {
    constexpr int CH = HD / 8;                 // 16-byte chunks per row
    constexpr int KT = HD / 16;                // k-steps of S = Q K^T
    constexpr int DT = HD / 8;                 // n-tiles of O (8 dims each)
    constexpr int LOADS = TC_BN * CH / 32;     // chunks of K (and of V) each lane copies per tile
    constexpr int TILE = 2 * TC_BN * HD;       // one ring stage: K rows then V rows
    extern __shared__ uint4 smem_u4[];
    bf16* qs = reinterpret_cast<bf16*>(smem_u4);  // [16][HD], swizzled
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    bf16* ring = qs + 16 * HD + warp * TC_STAGES * TILE;  // this warp's [TC_STAGES][2][TC_BN][HD]
    const int kvh = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
    const int group = num_heads / num_kv_heads;
    const int2 range = decode_range(seq_lens, b, max_pages * page_size, split, max_splits, min_chunk);
    const int start = range.x, end = range.y;
    bf16* out_b = out + (int64_t)b * num_heads * HD + kvh * group * HD;  // q head kvh*group + r: row r
    if (start >= end) {  // block-uniform, as in attn_decode
        if (max_splits == 1)
            for (int i = tid; i < group * HD; i += blockDim.x) out_b[i] = f2bf(0.0f);
        return;
    }

    for (int c = tid; c < 16 * CH; c += blockDim.x) {
        const int r = c / CH, ch = c % CH;
        const bool ok = r < group;
        const bf16* src = ok ? q + (int64_t)b * q_stride + (kvh * group + r) * HD + ch * 8 : q;
        cp_async16(qs + swz<HD>(r, ch), src, ok);
    }
    cp_async_commit();

    const int ntiles = (end - start + TC_BN - 1) / TC_BN;
    const int mine = ntiles > warp ? (ntiles - warp + TC_WARPS - 1) / TC_WARPS : 0;
    const int32_t* pages = page_table + (int64_t)b * max_pages;
    auto key0 = [&](int i) { return start + (warp + i * TC_WARPS) * TC_BN; };
    // Page ids of a tile's rows are dependent global loads: fetched one tile ahead into `pg`.
    int pg[LOADS];
    auto fetch_pages = [&](int i) {
#pragma unroll
        for (int j = 0; j < LOADS; j++) {
            const int pos = key0(i) + (lane + j * 32) / CH;
            if (pos < end) pg[j] = pages[pos / page_size];
        }
    };
    auto load_tile = [&](int i, int stage) {
        bf16* kd = ring + stage * TILE;
        bf16* vd = kd + TC_BN * HD;
#pragma unroll
        for (int j = 0; j < LOADS; j++) {
            const int c = lane + j * 32, r = c / CH, ch = c % CH, pos = key0(i) + r;
            const bool ok = pos < end;
            const int64_t off = kv_chunk_offset<HD>(ok, pg[j], num_pages, pos, page_size, num_kv_heads, kvh, ch);
            cp_async16(kd + swz<HD>(r, ch), k_cache + off, ok);
            cp_async16(vd + swz<HD>(r, ch), v_cache + off, ok);
        }
    };
#pragma unroll
    for (int s = 0; s < TC_STAGES - 1; s++) {
        if (s < mine) {
            fetch_pages(s);
            load_tile(s, s);
        }
        cp_async_commit();  // empty groups keep the wait count uniform
    }
    if (TC_STAGES - 1 < mine) fetch_pages(TC_STAGES - 1);
    cp_async_wait<TC_STAGES - 1>();  // the Q tile (the oldest group) has landed for this thread ...
    __syncthreads();                 // ... and for every thread

    unsigned qf[KT][4];
#pragma unroll
    for (int kk = 0; kk < KT; kk++) ldsm_x4(qf[kk], qs + swz<HD>(lane & 15, kk * 2 + (lane >> 4)));

    const int g = lane >> 2, t4 = lane & 3;  // rows g and g + 8; columns 2 * t4, 2 * t4 + 1
    float o[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int i = 0; i < mine; i++) {
        const int nxt = i + TC_STAGES - 1;
        if (nxt < mine) {
            load_tile(nxt, nxt % TC_STAGES);
            if (nxt + 1 < mine) fetch_pages(nxt + 1);
        }
        cp_async_commit();
        cp_async_wait<TC_STAGES - 1>();  // tile i has landed (for this lane) ...
        __syncwarp();                    // ... and for the whole warp
        const bf16* kt = ring + (i % TC_STAGES) * TILE;
        const bf16* vt = kt + TC_BN * HD;

        float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
        for (int kk = 0; kk < KT; kk++) {
            unsigned bk[4];
            ldsm_x4(bk, kt + swz<HD>((lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
            mma_bf16(s[0], qf[kk], bk[0], bk[1]);
            mma_bf16(s[1], qf[kk], bk[2], bk[3]);
        }
        const int k0 = key0(i);
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float v = s[nt][e] * scale_log2;
                s[nt][e] = k0 + nt * 8 + 2 * t4 + (e & 1) >= end ? -INFINITY : v;
            }
        }
        // Key k0 is valid, so every row has a finite score; masked keys get p = 0 (their V is zero-filled).
        online_softmax_step(s, o, m, l);
        // The accumulators of S's two n-tiles are exactly the A fragment of P for one 16-key k-step.
        const unsigned a[4] = {pack_bf16x2(s[0][0], s[0][1]), pack_bf16x2(s[0][2], s[0][3]),
                               pack_bf16x2(s[1][0], s[1][1]), pack_bf16x2(s[1][2], s[1][3])};
#pragma unroll
        for (int d = 0; d < DT; d += 2) {
            unsigned bv[4];
            ldsm_x4_trans(bv, vt + swz<HD>((lane & 7) + (((lane >> 3) & 1) << 3), d + (lane >> 4)));
            mma_bf16(o[d], a, bv[0], bv[1]);
            mma_bf16(o[d + 1], a, bv[2], bv[3]);
        }
        __syncwarp();  // every lane is done with this stage before the warp refills it
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with its ring: shared memory is reused for the merge

    // Merge the warps: [TC_WARPS][16][HD] unnormalised outputs, then [TC_WARPS][16] (m, l) pairs.
    float* mo = reinterpret_cast<float*>(smem_u4);
    float* ml = mo + TC_WARPS * 16 * HD;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
        const int r = warp * 16 + g + 8 * h;
#pragma unroll
        for (int d = 0; d < DT; d++) {
            mo[r * HD + d * 8 + 2 * t4] = o[d][2 * h];
            mo[r * HD + d * 8 + 2 * t4 + 1] = o[d][2 * h + 1];
        }
        if (t4 == 0) {
            ml[2 * r] = m[h];
            ml[2 * r + 1] = l[h];
        }
    }
    __syncthreads();
    // Thread tid finalises row tid / 8 (16 rows x 8 threads), HD / 8 dims of it.
    constexpr int PER = HD / 8;
    const int r = tid / 8, d0 = (tid % 8) * PER;
    if (r >= group) return;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < TC_WARPS; w++) mm = fmaxf(mm, ml[2 * (w * 16 + r)]);
    float lsum = 0.0f, acc[PER];
#pragma unroll
    for (int k = 0; k < PER; k++) acc[k] = 0.0f;
#pragma unroll
    for (int w = 0; w < TC_WARPS; w++) {
        const float mw = ml[2 * (w * 16 + r)];
        if (mw == -INFINITY) continue;  // a warp that had no tile
        const float wgt = exp2f(mw - mm);
        lsum += ml[2 * (w * 16 + r) + 1] * wgt;
        const float* src = mo + (w * 16 + r) * HD + d0;
#pragma unroll
        for (int k = 0; k < PER; k++) acc[k] += src[k] * wgt;
    }
    const float inv = 1.0f / lsum;  // lsum >= 1: the maximum's own term is exp2(0)
#pragma unroll
    for (int k = 0; k < PER; k++) acc[k] *= inv;
    if (max_splits == 1) {
#pragma unroll
        for (int k = 0; k < PER; k += 8) store8(out_b + r * HD + d0 + k, acc + k);
    } else {
        const int64_t row = ((int64_t)b * num_heads + kvh * group + r) * max_splits + split;
#pragma unroll
        for (int k = 0; k < PER; k++) part_o[row * HD + d0 + k] = acc[k];
        if (d0 == 0) part_lse[row] = mm + log2f(lsum);
    }
}

// Merges the splits of attn_decode: grid (num_heads, batch), HD threads, one output element each.
template <int HD>
__device__ __forceinline__ void attn_decode_reduce(bf16* __restrict__ out,
                                                   const float* __restrict__ part_o,
                                                   const float* __restrict__ part_lse,
                                                   const int32_t* __restrict__ seq_lens, int max_len,
                                                   int num_heads, int max_splits, int min_chunk) {
    const int head = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
    const int len = min(max(seq_lens[b], 0), max_len);
    const int chunk = decode_chunk(len, max_splits, min_chunk);
    const int used = (len + chunk - 1) / chunk;  // splits with start < len (0 for a padding row)
    const int64_t row = ((int64_t)b * num_heads + head) * max_splits;
    float mm = -INFINITY;
    for (int s = 0; s < used; s++) mm = fmaxf(mm, part_lse[row + s]);
    float wsum = 0.0f, acc = 0.0f;
    for (int s = 0; s < used; s++) {
        const float w = exp2f(part_lse[row + s] - mm);
        wsum += w;
        acc += w * part_o[(row + s) * HD + d];
    }
    out[((int64_t)b * num_heads + head) * HD + d] = f2bf(used > 0 ? acc / wsum : 0.0f);
}

#define ATTN_DECODE_ENTRY(HD)                                                                       \
    extern "C" __global__ void __launch_bounds__(1024) attn_decode_hd##HD##_bf16(                 \
        bf16* out, float* part_o, float* part_lse, const bf16* q, int64_t q_stride,                \
        const bf16* k_cache, const bf16* v_cache, int num_pages, const int32_t* page_table,        \
        int max_pages, const int32_t* seq_lens, int page_size, int num_heads, int num_kv_heads,    \
        float scale_log2, int max_splits, int min_chunk) {                                         \
        attn_decode<HD>(out, part_o, part_lse, q, q_stride, k_cache, v_cache, num_pages,           \
                        page_table, max_pages, seq_lens, page_size, num_heads, num_kv_heads,       \
                        scale_log2, max_splits, min_chunk);                                        \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32) attn_decode_tc_hd##HD##_bf16(      \
        bf16* out, float* part_o, float* part_lse, const bf16* q, int64_t q_stride,                \
        const bf16* k_cache, const bf16* v_cache, int num_pages, const int32_t* page_table,        \
        int max_pages, const int32_t* seq_lens, int page_size, int num_heads, int num_kv_heads,    \
        float scale_log2, int max_splits, int min_chunk) {                                         \
        attn_decode_tc<HD>(out, part_o, part_lse, q, q_stride, k_cache, v_cache, num_pages,        \
                           page_table, max_pages, seq_lens, page_size, num_heads, num_kv_heads,    \
                           scale_log2, max_splits, min_chunk);                                     \
    }                                                                                              \
    extern "C" __global__ void attn_decode_reduce_hd##HD##_bf16(                                   \
        bf16* out, const float* part_o, const float* part_lse, const int32_t* seq_lens,           \
        int max_len, int num_heads, int max_splits, int min_chunk) {                               \
        attn_decode_reduce<HD>(out, part_o, part_lse, seq_lens, max_len, num_heads, max_splits,   \
                               min_chunk);                                                         \
    }

ATTN_DECODE_ENTRY(64)
ATTN_DECODE_ENTRY(128)

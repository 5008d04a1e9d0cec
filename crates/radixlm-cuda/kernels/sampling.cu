// Sampling: one token per row of logits, and its logprob, with SGLang's filters in SGLang's order
// (crates/radixlm-core/src/sampling/sampler.rs is the engine's CPU version; src/cpu.rs `sample` is this
// kernel's twin).
//
//   sample_bf16: token[r], logprob[r] from logits[r, 0 .. vocab)
//
// logits: [rows, vocab] bf16, row stride = vocab. Per-row parameters, each a [rows] array: temperature
// f32, top_k i32, top_p f32, min_p f32, seed u64, step u32. Outputs: token i32 [rows], logprob f32 [rows].
// One block of SAMPLE_THREADS threads per row, `nbins` u32 of dynamic shared memory (the key histogram);
// every decision depends only on the row and its parameters, never on the other rows or the batch size.
//
// Definitions. "Valid" logits are those > -inf (NaN and -inf are never drawn). M = the largest logit.
// - Greedy rows: temperature < 1e-6 (or NaN), or top_k == 1 (the engine's `is_greedy`). token = argmax,
//   the lowest index among equal maxima; logprob = log_softmax at temperature 1 = -log(sum exp(l - M)).
// - Sampled rows: p_i = expf((l_i - M) * (1/T)) in f32 (the engine's formula), so the max has p = 1;
//   Z = sum of p_i. Candidates are the valid tokens with p_i > 0 (tokens that underflow are gone, as in
//   the engine) and, when min_p > 0, p_i >= min_p (min_p clamped to 1, so the max always stays).
//   Candidates are ranked by logit, descending (-0 just below +0), equal logits by lower index. Rank r
//   is kept iff
//       r < top_k                   (top_k <= 0 or >= vocab: no limit)    and
//       above(r) <= top_p * Z       (above(r) = sum of p over ranks < r; top_p >= 1: no limit)
//   i.e. top-k and top-p jointly on the untruncated distribution, then min-p, as SGLang; rank 0 is always
//   kept (above(0) = 0). The kept set is a prefix of the ranking: a cut inside a run of equal logits
//   keeps the lower indices. (The engine ranks by f32 probability instead of logit; the orders differ
//   only where distinct logits round to the same f32 p, -0 and +0 included, and then only in which of
//   two equally likely tokens a cut removes.)
//   The draw: u = uniform(seed, step) in [0, 1) (below), W = kept mass, target = u * W; the token is
//   the first kept rank whose running kept mass (in rank order) exceeds target, the last kept rank if
//   rounding leaves none. logprob = (l_tok - M) / T - log(Z): the log-softmax at the temperature, before
//   truncation, what the engine reports.
// - Degenerate rows: no valid logit -> token 0 (the engine's argmax of an all -inf row), logprob -inf;
//   a +inf logit -> the first +inf, logprob 0.
//
// Random numbers are a pure function of (seed, step), no generator state: two rounds of the splitmix64
// finaliser, h = mix(mix(seed) ^ step), u = (h >> 40) * 2^-24 (24 bits, exact in f32). A row's draw does
// not depend on the batch, and `step` lives on the device, so a captured CUDA graph replays correctly
// once the host (or a kernel) advances it.
//
// How, without sorting. A bf16 logit is one of 65536 16-bit keys (the bit pattern mapped to an unsigned
// that orders like the value), and all tokens with one key have the same p. So a histogram of counts
// per key, taken from the max's key downwards, holds the whole ranking: mass of a key = count * p(key),
// and a walk down the histogram applies the rule above key by key (a run of equal keys is a run of
// equal p: of its c tokens, the j-th has above + j * p above it). Steps:
// 1. One pass: the max (sampled rows, two bf16 per instruction), or the max, its first index and the
//    sum of exp against a running max (greedy rows, online softmax; done).
// 2. One pass: histogram of the candidate keys in a window of `nbins` keys below the max, by integer
//    shared-memory atomics (exact and order-independent), plus the first index of each of the top 128
//    keys. Keys with p > 0 span at most ~36K keys for logits within +-2^8 and T <= 2 (128 keys per
//    power of two; the range near zero holds most of them), so one window of 40960 holds them; wider
//    spans (huge logits or temperatures) take further windows below, one pass each (and one pass for
//    the mass below the first window, part of Z).
// 3. Walk the histogram, each thread a slice of keys, with a block scan for the (count, mass) above
//    each slice: the lowest key whose first token is kept is the cut; of its tokens, keep as many as
//    top-k and top-p allow. W follows; the same walk, with the same sums, finds the key d where the
//    running mass passes target and the tie j = floor((target - above(d)) / p(d)) within it.
// 4. The index of the j-th token (in index order) with key d: from the step-2 table when j = 0 and d is
//    one of the top 128 keys (the usual case), else one more pass that stops where it finds it.
// Sums are f32 in a fixed order (per-thread sequential, fixed block-scan trees), counts are integers,
// so a row's result is bit-for-bit reproducible.
//
// Compiled without --use_fast_math: expf and logf must be the accurate ones (probabilities meet
// thresholds, and underflow decides who is a candidate). The one exception is deliberate: the greedy
// sum of exp uses __expf (2 ulp), as it only feeds the reported logprob.
//
// Cost on an H100 (vocab 151936): greedy 48 us for 256 rows (19 us for one); sampled 116-122 us for
// 256 rows (47-50 us for one), whatever the filters. The histogram pass dominates (~20 instructions per
// element, issue-bound at one 1024-thread block per SM).
#include "common.cuh"

#define SAMPLE_THREADS 1024

constexpr int NT = SAMPLE_THREADS;
constexpr int NWARPS = NT / 32;
constexpr int U = 4;  // 16-byte loads in flight per thread in every pass over the row

__device__ __forceinline__ float f_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float bits2f(unsigned b) { return __uint_as_float(b << 16); }

// bf16 bits -> a key that orders like the value (-0 just below +0). NaN needs no case of its own:
// +NaN keys lie above +inf (so above any finite max: outside every histogram window), -NaN keys below
// -inf (below every candidate), so a NaN is never counted, drawn or located.
__device__ __forceinline__ unsigned key_of(unsigned b) {
    return (b & 0x8000u) ? (~b & 0xFFFFu) : (b | 0x8000u);
}
// Two at once: the keys of the two bf16 in a 32-bit word, in the same halves.
__device__ __forceinline__ unsigned keys2(unsigned x) {
    const unsigned neg = (x >> 15) & 0x00010001u;  // sign of each half
    return x ^ (neg * 0x7FFFu) ^ 0x80008000u;      // negative: ~b, positive: b | 0x8000
}
__device__ __forceinline__ float value_of(unsigned key) {
    return bits2f((key & 0x8000u) ? (key ^ 0x8000u) : (~key & 0xFFFFu));
}

// A logit's weight relative to the max: one formula everywhere (no FMA contraction), so a token's p is
// bit-identical whether computed from its logit or from its key.
__device__ __forceinline__ float prob(float l, float M, float inv_t) {
    return expf(__fmul_rn(__fsub_rn(l, M), inv_t));
}

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float uniform(unsigned long long seed, unsigned step) {
    return (float)(splitmix64(splitmix64(seed) ^ (unsigned long long)step) >> 40) * 0x1p-24f;
}

// ---------- block-wide helpers (every thread gets the result; safe to call repeatedly) ----------

struct Sum {
    template <class T>
    __device__ T operator()(T a, T b) const { return a + b; }
};
struct Min {
    __device__ int operator()(int a, int b) const { return min(a, b); }
};
struct Max {
    __device__ int operator()(int a, int b) const { return max(a, b); }
};
struct MaxF {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op) {
    __shared__ T part[NWARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();  // the previous call's readers are done with `part`
    if (lane == 0) part[warp] = v;
    __syncthreads();
    T r = part[0];
    for (int w = 1; w < NWARPS; w++) r = op(r, part[w]);  // the same order in every thread
    return r;
}

// Exclusive prefix sum over threads in thread order; `total` gets the sum of all.
template <class T>
__device__ __forceinline__ T block_exclusive_scan(T v, T& total) {
    __shared__ T wsum[NWARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    T inc = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const T n = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += n;
    }
    T exc = __shfl_up_sync(0xffffffffu, inc, 1);
    if (lane == 0) exc = T(0);
    __syncthreads();
    if (lane == 31) wsum[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        T w = wsum[lane];  // NWARPS == 32
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const T n = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += n;
        }
        wsum[lane] = w;
    }
    __syncthreads();
    total = wsum[NWARPS - 1];
    return warp == 0 ? exc : wsum[warp - 1] + exc;
}

// ---------- walking a row ----------

// The 8 elements [i, i + 8) as bf16 bits; past the row: -NaN bits (never counted or matched).
__device__ __forceinline__ uint4 load8_bits(const bf16* x, int i, int n, int vec) {
    if (vec) return i < n ? *reinterpret_cast<const uint4*>(x + i) : make_uint4(~0u, ~0u, ~0u, ~0u);
    unsigned short h[8];
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = i + j < n ? __bfloat16_as_ushort(x[i + j]) : 0xFFFFu;
    return make_uint4(h[0] | (unsigned)h[1] << 16, h[2] | (unsigned)h[3] << 16,
                      h[4] | (unsigned)h[5] << 16, h[6] | (unsigned)h[7] << 16);
}
// f(i, v) for every group of 8 elements [i, i + 8) (v: their bf16 bits, NaN past the row); thread t
// takes group t of each NT * 8 stretch, U stretches per step (U loads in flight), in index order.
template <class F>
__device__ __forceinline__ void for_each8(const bf16* x, int n, int vec, F f) {
    for (int base = 0; base < n; base += NT * 8 * U) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = load8_bits(x, base + (u * NT + threadIdx.x) * 8, n, vec);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = base + (u * NT + threadIdx.x) * 8;
            if (i < n) f(i, v[u]);
        }
    }
}
__device__ __forceinline__ unsigned word_of(const uint4& v, int j) {
    return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

// Smallest key in [1, kmax] whose value has p > 0 and p >= min_p (kmax, the max's key, qualifies).
__device__ unsigned lowest_key(unsigned kmax, float M, float inv_t, float min_p) {
    unsigned lo = 0, hi = kmax;  // key 0 is NaN: never a candidate
    while (hi - lo > 1) {
        const unsigned mid = lo + (hi - lo) / 2;
        const float p = prob(value_of(mid), M, inv_t);
        if (p > 0.0f && p >= min_p) hi = mid;
        else lo = mid;
    }
    return hi;
}

// The row as the histogram steps see it.
struct Row {
    const bf16* x;
    int vocab, vec;
    float M, inv_t;
    unsigned t_pos, t_lo;  // lowest key with p > 0; lowest candidate key (min-p)
};

// First index of each of the TOP_KEYS highest keys (window 0): the drawn token is usually one of
// them and alone on its key, and then step 4 is skipped.
constexpr int TOP_KEYS = 128;

// Shared-memory reductions without return value, on a 32-bit shared address, done only if
// `lane_on`: the predicate lives inside the asm, so the hot loop has no branch per element.
__device__ __forceinline__ void red_add_if(bool lane_on, unsigned addr, unsigned v) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %2, 0;\n @p red.shared.add.u32 [%0], %1;\n}" ::"r"(addr),
        "r"(v), "r"((unsigned)lane_on)
        : "memory");
}
__device__ __forceinline__ void red_min_if(bool lane_on, unsigned addr, int v) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.u32 p, %2, 0;\n @p red.shared.min.s32 [%0], %1;\n}" ::"r"(addr),
        "r"(v), "r"((unsigned)lane_on)
        : "memory");
}

// Histogram of keys [base, top] (bin r = top - key) in `hist`; with `first`, also the first index of
// the top TOP_KEYS bins. Returns, over the whole block, the number of candidates below the window
// (key in [t_lo, base)) and, when `z_below` is given, the sum of p over keys in [t_pos, base), for Z.
// The hot loop only counts the elements below the window; their mass takes a pass of its own, needed
// only when the candidate keys span more than one window. A thread whose 8 elements share one key adds
// them with one atomic (a row of one repeated logit, such as a padding row of zeros, would otherwise
// serialise every element on one address).
__device__ int build_hist(unsigned* hist, int nbins, int* first, const Row& w, unsigned top,
                          unsigned base, float* z_below) {
    for (int i = threadIdx.x * 4; i < nbins; i += NT * 4)
        *reinterpret_cast<uint4*>(hist + i) = make_uint4(0, 0, 0, 0);
    if (first)
        for (int i = threadIdx.x; i < TOP_KEYS; i += NT) first[i] = INT_MAX;
    __syncthreads();
    const unsigned span = top - base, below_span = base - w.t_pos;
    const unsigned top_lim = first ? min((unsigned)TOP_KEYS, span + 1) : 0;
    const unsigned h0 = (unsigned)__cvta_generic_to_shared(hist);
    const unsigned f0 = first ? (unsigned)__cvta_generic_to_shared(first) : 0;
    int below = 0;
    auto add = [&](unsigned key, unsigned run, int start) {
        const unsigned r = top - key;
        red_add_if(r <= span, h0 + 4 * r, run);
        red_min_if(r < top_lim, f0 + 4 * r, start);
        below += key - w.t_pos < below_span ? (int)run : 0;
    };
    for_each8(w.x, w.vocab, w.vec, [&](int i, const uint4& v) {
        const unsigned k[4] = {keys2(v.x), keys2(v.y), keys2(v.z), keys2(v.w)};
        if (k[0] == k[1] && k[0] == k[2] && k[0] == k[3] && (k[0] >> 16) == (k[0] & 0xFFFFu)) {
            add(k[0] & 0xFFFFu, 8, i);  // 8 equal keys
            return;
        }
#pragma unroll
        for (int j = 0; j < 8; j++) add((j & 1) ? k[j >> 1] >> 16 : k[j >> 1] & 0xFFFFu, 1, i + j);
    });
    below = block_reduce(below, Sum());  // its barriers also publish the histogram
    if (z_below) *z_below = 0.0f;
    if (below == 0) return 0;
    // Rare: keys with p > 0 below the window. Their mass (for Z) and how many are candidates.
    float zb = 0.0f;
    int cand = 0;
    for_each8(w.x, w.vocab, w.vec, [&](int, const uint4& v) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const unsigned k2 = keys2(word_of(v, j >> 1));
            const unsigned key = (j & 1) ? k2 >> 16 : k2 & 0xFFFFu;
            if (key - w.t_pos < below_span) {
                cand += key >= w.t_lo;
                if (z_below) zb += prob(value_of(key), w.M, w.inv_t);
            }
        }
    });
    if (z_below) *z_below = block_reduce(zb, Sum());
    return block_reduce(cand, Sum());
}

// Thread t's slice of a histogram, bins [r0, r0 + bpt), and the (count, mass) of all bins before it
// (higher keys) plus what the windows above this one hold. Slices are read 16 bytes at a time: with
// 40 words between threads, single words would hit each bank 8 times per warp.
struct Slice {
    int r0, bpt;
    unsigned top;
    int c_above;
    float m_above;
    int c_total;    // the whole window
    float m_total;
};

__device__ Slice scan_hist(const unsigned* hist, int nbins, const Row& w, unsigned top, int c_carry,
                           float m_carry) {
    Slice s;
    s.bpt = nbins / NT;
    s.r0 = threadIdx.x * s.bpt;
    s.top = top;
    int c = 0;
    float m = 0.0f;
    for (int r4 = s.r0; r4 < s.r0 + s.bpt; r4 += 4) {
        const uint4 q = *reinterpret_cast<const uint4*>(hist + r4);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const unsigned n = word_of(q, e);
            if (n) c += n, m += (float)n * prob(value_of(top - (r4 + e)), w.M, w.inv_t);
        }
    }
    int ct;
    float mt;
    const int ce = block_exclusive_scan(c, ct);
    const float me = block_exclusive_scan(m, mt);
    s.c_above = c_carry + ce;
    s.m_above = m_carry + me;
    s.c_total = ct;
    s.m_total = mt;
    return s;
}

// f(r, count, p, c_above, m_above) for the thread's non-empty bins in order; the running sums are the
// same in every walk of the same slice.
template <class F>
__device__ __forceinline__ void walk(const unsigned* hist, const Row& w, const Slice& s, F f) {
    int ca = s.c_above;
    float ma = s.m_above;
    for (int r4 = s.r0; r4 < s.r0 + s.bpt; r4 += 4) {
        const uint4 q = *reinterpret_cast<const uint4*>(hist + r4);  // see scan_hist
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const unsigned n = word_of(q, e);
            if (!n) continue;
            const int r = r4 + e;
            const float p = prob(value_of(s.top - r), w.M, w.inv_t);
            f(r, (int)n, p, ca, ma);
            ca += n;
            ma += (float)n * p;
        }
    }
}

// The last kept key: its bin, count, p, the count and mass above it, and how many of its tokens stay.
struct Cut {
    int win, r, c, m;
    float p, m_above;
    unsigned key;
};

// Window i of the row's candidate keys: [base, top], top_0 = the max's key, each below the last.
__device__ __forceinline__ unsigned window_base(unsigned top, unsigned t_pos, int nbins) {
    return top - t_pos + 1 > (unsigned)nbins ? top - nbins + 1 : t_pos;
}

extern "C" __global__ void __launch_bounds__(NT, 1)
    sample_bf16(int* __restrict__ token, float* __restrict__ logprob, const bf16* __restrict__ logits,
                int vocab, int vec, int nbins, const float* __restrict__ temperature,
                const int* __restrict__ top_k, const float* __restrict__ top_p,
                const float* __restrict__ min_p, const unsigned long long* __restrict__ seed,
                const unsigned* __restrict__ step) {
    extern __shared__ uint4 smem_raw[];
    unsigned* hist = reinterpret_cast<unsigned*>(smem_raw);
    __shared__ int first[TOP_KEYS];
    __shared__ Cut cut;
    __shared__ unsigned drawn_key;
    __shared__ int drawn_j, drawn_win, drawn_r, found;

    const int row = blockIdx.x, tid = threadIdx.x;
    const bf16* x = logits + (int64_t)row * vocab;
    const float inf = f_inf();
    const float T = temperature[row];
    const int k = top_k[row];
    const bool greedy = !(T >= 1e-6f) || k == 1;

    if (greedy) {
        // Step 1, greedy: max, its first index and sum exp(l - m) against a running per-thread max m
        // (online softmax, fast exp: this sum only feeds the logprob), rescaled to M after.
        float m = -inf, z = 0.0f;
        int at = INT_MAX;
        for_each8(x, vocab, vec, [&](int i, const uint4& v) {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const unsigned wd = word_of(v, j >> 1);
                const float l = bits2f((j & 1) ? wd >> 16 : wd & 0xFFFFu);
                if (l > m) {
                    z = z * __expf(m - l) + 1.0f;
                    m = l, at = i + j;
                } else if (l > -inf) {
                    z += __expf(l - m);
                }
            }
        });
        const float M = block_reduce(m, MaxF());
        const int tok = block_reduce(m == M ? at : INT_MAX, Min());
        const float zsum = block_reduce(m > -inf ? z * __expf(m - M) : 0.0f, Sum());
        if (tid == 0) {
            // No valid logit: token 0 (the engine's argmax), logprob -inf; +inf: its first index, 0.
            const bool none = !(M > -inf);
            token[row] = none ? 0 : tok;
            logprob[row] = none ? -inf : M == inf ? 0.0f : -logf(zsum);
        }
        return;
    }

    // Step 1, sampled: the max, two bf16 at a time (NaN loses to any number).
    float M;
    {
        __nv_bfloat162 m2 = __floats2bfloat162_rn(-inf, -inf);
        for_each8(x, vocab, vec, [&](int, const uint4& v) {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const unsigned wd = word_of(v, j);
                m2 = __hmax2(m2, *reinterpret_cast<const __nv_bfloat162*>(&wd));
            }
        });
        M = block_reduce(fmaxf(__low2float(m2), __high2float(m2)), MaxF());
    }
    if (!(M > -inf)) {  // no valid logit: the engine's argmax, token 0
        if (tid == 0) token[row] = 0, logprob[row] = -inf;
        return;
    }
    const float inv_t = 1.0f / T;
    float Z = 1.0f;
    if (M == inf) {  // +inf wins outright: step 4 finds the first one
        if (tid == 0) drawn_key = 0xFF80u, drawn_j = 0, drawn_win = -1, drawn_r = 0;
    } else {
        Row w;
        w.x = x;
        w.vocab = vocab;
        w.vec = vec;
        w.M = M;
        w.inv_t = inv_t;
        const int kmax = (k <= 0 || k >= vocab) ? INT_MAX : k;
        const float tp = top_p[row];
        const float mp = min_p[row] > 0.0f ? fminf(min_p[row], 1.0f) : 0.0f;
        const unsigned key_max = key_of(__bfloat16_as_ushort(__float2bfloat16_rn(M == 0.0f ? 0.0f : M)));  // +0: above -0
        w.t_pos = lowest_key(key_max, M, inv_t, 0.0f);
        w.t_lo = mp > 0.0f ? lowest_key(key_max, M, inv_t, mp) : w.t_pos;

        // Steps 2-3, the cut: windows of keys from the top until the cut falls inside one. `carry_*`
        // is what the windows above the current one hold.
        unsigned top = key_max, base = window_base(top, w.t_pos, nbins);
        float z_below;
        int below = build_hist(hist, nbins, first, w, top, base, &z_below);
        int win = 0, carry_c = 0;
        float carry_m = 0.0f;
        Slice sl = scan_hist(hist, nbins, w, top, carry_c, carry_m);
        Z = sl.m_total + z_below;
        const float P = tp < 1.0f ? fmaxf(tp, 0.0f) * Z : inf;
        for (;;) {
            // The last bin whose first token is kept (the rule is monotone down the ranking).
            int mine = -1, c_mine = 0, ca_mine = 0, last = -1;
            float p_mine = 0.0f, ma_mine = 0.0f;
            walk(hist, w, sl, [&](int r, int n, float p, int ca, float ma) {
                last = r;
                if (ca < kmax && ma <= P && p >= mp)
                    mine = r, c_mine = n, p_mine = p, ca_mine = ca, ma_mine = ma;
            });
            const int r_cut = block_reduce(mine, Max());
            const int r_last = block_reduce(last, Max());
            if (r_cut >= 0 && mine == r_cut) {
                int m = min(c_mine, kmax - ca_mine);  // top-k
                if (P < inf) {                         // top-p: the j-th tie has ma + j * p above it
                    const float q = (P - ma_mine) / p_mine;
                    if (q < (float)m) m = min(m, (int)q + 1);
                }
                cut = Cut{win, r_cut, c_mine, m, p_mine, ma_mine, top - r_cut};
            }
            __syncthreads();
            // Further down only if this window is kept to its last token and candidates remain below.
            if (!(r_cut >= 0 && r_cut == r_last && cut.m == cut.c && below > 0)) break;
            carry_c += sl.c_total;
            carry_m += sl.m_total;
            top = base - 1;
            base = window_base(top, w.t_pos, nbins);
            win++;
            below = build_hist(hist, nbins, nullptr, w, top, base, nullptr);
            sl = scan_hist(hist, nbins, w, top, carry_c, carry_m);
        }

        // Step 3, the draw: the same walk from the top to the bin where the running mass passes target.
        const float target = uniform(seed[row], step[row]) * (cut.m_above + (float)cut.m * cut.p);
        if (tid == 0)  // if rounding leaves none: the last kept token
            drawn_key = cut.key, drawn_j = cut.m - 1, drawn_win = cut.win, drawn_r = cut.r;
        int hist_win = win;  // the window whose histogram is in shared memory (and in `sl`)
        top = key_max;
        base = window_base(top, w.t_pos, nbins);
        carry_c = 0;
        carry_m = 0.0f;
        for (int i = 0; i <= cut.win; i++) {
            if (i != hist_win) {  // only when the candidates span several windows
                build_hist(hist, nbins, i == 0 ? first : nullptr, w, top, base, nullptr);
                sl = scan_hist(hist, nbins, w, top, carry_c, carry_m);
                hist_win = i;
            }
            const int r_end = i == cut.win ? cut.r : INT_MAX;
            int mine = INT_MAX, j_mine = 0;
            walk(hist, w, sl, [&](int r, int n, float p, int, float ma) {
                if (mine != INT_MAX || r > r_end) return;
                if (r == r_end) n = cut.m;
                if (ma + (float)n * p > target)
                    mine = r, j_mine = min(n - 1, max(0, (int)((target - ma) / p)));
            });
            const int r_d = block_reduce(mine, Min());
            if (r_d != INT_MAX) {
                if (mine == r_d) drawn_key = top - r_d, drawn_j = j_mine, drawn_win = i, drawn_r = r_d;
                break;
            }
            carry_c += sl.c_total;
            carry_m += sl.m_total;
            top = base - 1;
            base = window_base(top, w.t_pos, nbins);
        }
    }
    __syncthreads();

    // Step 4: the drawn_j-th token (in index order) with key drawn_key: known already if it is the
    // first of one of the top keys; else per stretch of NT * 8 * U elements, a count per thread and
    // load, one block scan, and the thread holding it finds it.
    const unsigned dk = drawn_key, dk2 = drawn_key * 0x10001u;
    const int dj = drawn_j;
    if (tid == 0) found = drawn_win == 0 && dj == 0 && drawn_r < TOP_KEYS ? first[drawn_r] : -1;
    __syncthreads();
    int seen = 0;  // matches in the stretches before
    for (int b0 = 0; found < 0 && b0 < vocab; b0 += NT * 8 * U) {
        uint4 v[U];
        unsigned long long packed = 0;  // 16-bit count per load: at most 8 * NT = 8192 per field
#pragma unroll
        for (int u = 0; u < U; u++) {
            v[u] = load8_bits(x, b0 + (u * NT + tid) * 8, vocab, vec);
            int c = 0;
#pragma unroll
            for (int j = 0; j < 4; j++) c += __popc(__vcmpeq2(keys2(word_of(v[u], j)), dk2));
            packed |= (unsigned long long)(c >> 4) << (16 * u);  // 16 bits set per equal half
        }
        unsigned long long totals;
        const unsigned long long before = block_exclusive_scan(packed, totals);
        int start = seen;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = (int)(packed >> (16 * u)) & 0xFFFF;
            const int at = start + (int)((before >> (16 * u)) & 0xFFFF);
            if (dj >= at && dj < at + c) {
                int q = at;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const unsigned k2 = keys2(word_of(v[u], j >> 1));
                    if (((j & 1) ? k2 >> 16 : k2 & 0xFFFFu) == dk && q++ == dj)
                        found = b0 + (u * NT + tid) * 8 + j;
                }
            }
            start += (int)((totals >> (16 * u)) & 0xFFFF);
        }
        seen = start;
        __syncthreads();
    }

    if (tid == 0) {
        token[row] = found >= 0 ? found : 0;  // not found: unreachable (the key has tokens)
        logprob[row] = M == inf ? 0.0f : __fmul_rn(__fsub_rn(value_of(dk), M), inv_t) - logf(Z);
    }
}

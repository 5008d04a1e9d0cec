//! CPU twins of the kernels: the same contract (shapes, layout, in-place updates, invalid-index
//! behaviour), written as plainly as possible. f32 math on the bf16 inputs, one bf16 rounding per
//! output, exactly where the kernel rounds; reductions accumulate in f64 so the reference does not
//! depend on summation order. The GPU tests compare every kernel against these.
//!
//! They panic on inconsistent shapes (they are references, not API).

use crate::attention::softmax_scale;
use crate::layout::{AttnShape, PagedKv};
use crate::rope::{angle, Rope, RopeFreqs, RopeStyle};
use crate::sampling::{uniform, SampleRow};
use half::bf16;

fn f(v: bf16) -> f32 {
    v.to_f32()
}
fn b(v: f32) -> bf16 {
    bf16::from_f32(v)
}

/// kernels/embedding.cu: `out[t] = table[ids[t]]`, a zero row for an id outside the table.
pub fn embedding(out: &mut [bf16], table: &[bf16], ids: &[i32], hidden: usize) {
    assert_eq!(out.len(), ids.len() * hidden);
    let vocab = table.len() / hidden;
    for (row, &id) in out.chunks_exact_mut(hidden).zip(ids) {
        match usize::try_from(id).ok().filter(|&i| i < vocab) {
            Some(i) => row.copy_from_slice(&table[i * hidden..(i + 1) * hidden]),
            None => row.fill(bf16::ZERO),
        }
    }
}

fn rstd(row: impl Iterator<Item = f32>, hidden: usize, eps: f32) -> f32 {
    let ss: f64 = row.map(|v| v as f64 * v as f64).sum();
    (1.0 / (ss / hidden as f64 + eps as f64).sqrt()) as f32
}

/// kernels/rmsnorm.cu `rmsnorm_bf16`: `out = x * rstd(x) * w`, row by row.
pub fn rmsnorm(out: &mut [bf16], x: &[bf16], w: &[bf16], eps: f32) {
    let h = w.len();
    assert_eq!(out.len(), x.len());
    for (o, xr) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
        let r = rstd(xr.iter().map(|&v| f(v)), h, eps);
        for ((o, &v), &g) in o.iter_mut().zip(xr).zip(w) {
            *o = b(f(v) * r * f(g));
        }
    }
}

/// kernels/rmsnorm.cu `fused_add_rmsnorm_bf16`: `residual = bf16(x + residual)`, then
/// `x = residual * rstd(residual) * w`, both in place.
pub fn fused_add_rmsnorm(x: &mut [bf16], residual: &mut [bf16], w: &[bf16], eps: f32) {
    let h = w.len();
    assert_eq!(x.len(), residual.len());
    for (xr, rr) in x.chunks_exact_mut(h).zip(residual.chunks_exact_mut(h)) {
        for (r, &v) in rr.iter_mut().zip(xr.iter()) {
            *r = b(f(v) + f(*r));
        }
        let s = rstd(rr.iter().map(|&v| f(v)), h, eps);
        for ((o, &v), &g) in xr.iter_mut().zip(rr.iter()).zip(w) {
            *o = b(f(v) * s * f(g));
        }
    }
}

/// kernels/activation.cu: `out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]`.
pub fn silu_and_mul(out: &mut [bf16], gate_up: &[bf16], inter: usize) {
    assert_eq!(gate_up.len(), 2 * out.len());
    for (o, gu) in out
        .chunks_exact_mut(inter)
        .zip(gate_up.chunks_exact(2 * inter))
    {
        let (gate, up) = gu.split_at(inter);
        for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
            let g = f(g);
            *o = b(g / (1.0 + (-g).exp()) * f(u));
        }
    }
}

/// kernels/rope.cu: rotate q and k of every token in place, store k and v at the token's slot.
pub fn rope_kv_write(
    qkv: &mut [bf16],
    positions: &[i32],
    slots: &[i32],
    k_cache: &mut [bf16],
    v_cache: &mut [bf16],
    shape: AttnShape,
    rope: &Rope<&[f32]>,
) {
    let AttnShape {
        num_heads,
        num_kv_heads,
        head_dim,
    } = shape;
    let (width, kv) = (shape.qkv_width(), shape.kv_width());
    let half = rope.rot_dim / 2;
    assert_eq!(qkv.len(), positions.len() * width);
    assert_eq!(slots.len(), positions.len());
    let num_slots = k_cache.len() / kv;
    for ((row, &pos), &slot) in qkv.chunks_exact_mut(width).zip(positions).zip(slots) {
        let (cos, sin): (Vec<f32>, Vec<f32>) = match rope.freqs {
            RopeFreqs::CosSin { table, max_pos } => {
                let p = pos.clamp(0, max_pos as i32 - 1) as usize;
                let r = &table[p * rope.rot_dim..(p + 1) * rope.rot_dim];
                (r[..half].to_vec(), r[half..].to_vec())
            }
            RopeFreqs::InvFreq(inv) => inv
                .iter()
                .map(|&fr| {
                    let (s, c) = (angle(pos, fr) as f64).sin_cos();
                    (c as f32, s as f32)
                })
                .unzip(),
        };
        for head in row[..(num_heads + num_kv_heads) * head_dim].chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (i0, i1) = match rope.style {
                    RopeStyle::Neox => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (a, bb) = (f(head[i0]), f(head[i1]));
                head[i0] = b(a * cos[i] - bb * sin[i]);
                head[i1] = b(bb * cos[i] + a * sin[i]);
            }
        }
        if slot < 0 || slot as usize >= num_slots {
            continue;
        }
        let s = slot as usize;
        let k = &row[num_heads * head_dim..];
        k_cache[s * kv..(s + 1) * kv].copy_from_slice(&k[..kv]);
        v_cache[s * kv..(s + 1) * kv].copy_from_slice(&k[kv..2 * kv]);
    }
}

/// One attention row: `q_head` against positions `0 .. len` of page-table row `seq`, kv head `kvh`;
/// scores and the weighted sum in f64, one rounding. Page ids are clamped into the cache, as the
/// kernels do. `len` = 0 gives zeros.
fn attend(
    out: &mut [bf16],
    q_head: &[bf16],
    kv: &PagedKv<'_, [bf16], [i32]>,
    seq: usize,
    kvh: usize,
    len: usize,
    shape: AttnShape,
) {
    let (d, kv_width) = (shape.head_dim, shape.kv_width());
    let num_pages = kv.k_cache.len() / (kv.page_size * kv_width);
    let scale = softmax_scale(d) as f64;
    let row = |cache: &'_ [bf16], p: usize| -> std::ops::Range<usize> {
        let page =
            kv.page_table[seq * kv.max_pages + p / kv.page_size].clamp(0, num_pages as i32 - 1);
        let slot = page as usize * kv.page_size + p % kv.page_size;
        let start = (slot * shape.num_kv_heads + kvh) * d;
        assert!(start + d <= cache.len());
        start..start + d
    };
    let scores: Vec<f64> = (0..len)
        .map(|p| {
            let k = &kv.k_cache[row(kv.k_cache, p)];
            let dot: f64 = q_head
                .iter()
                .zip(k)
                .map(|(&a, &b)| f(a) as f64 * f(b) as f64)
                .sum();
            dot * scale
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = vec![0f64; d];
    for (p, w) in weights.iter().enumerate() {
        for (a, &v) in acc.iter_mut().zip(&kv.v_cache[row(kv.v_cache, p)]) {
            *a += w * f(v) as f64;
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = b(if len == 0 { 0.0 } else { (a / total) as f32 });
    }
}

/// kernels/attention_decode.cu (either variant): `out[b]` = attention of q row `b` over the first
/// `seq_lens[b]` positions (clamped to the page table's reach) of sequence `b`.
pub fn attention_decode(
    out: &mut [bf16],
    q: &[bf16],
    q_stride: usize,
    kv: PagedKv<'_, [bf16], [i32]>,
    seq_lens: &[i32],
    shape: AttnShape,
) {
    let (d, width) = (shape.head_dim, shape.num_heads * shape.head_dim);
    let group = shape.num_heads / shape.num_kv_heads;
    assert_eq!(out.len(), seq_lens.len() * width);
    let cap = kv.max_pages * kv.page_size;
    for (b, (o, &len)) in out.chunks_exact_mut(width).zip(seq_lens).enumerate() {
        let len = (len.max(0) as usize).min(cap);
        for h in 0..shape.num_heads {
            let qh = &q[b * q_stride + h * d..][..d];
            attend(
                &mut o[h * d..(h + 1) * d],
                qh,
                &kv,
                b,
                h / group,
                len,
                shape,
            );
        }
    }
}

/// kernels/attention_prefill.cu: causal attention of each sequence's new tokens over its cached
/// prefix and themselves. Rows outside every sequence are left untouched.
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill(
    out: &mut [bf16],
    q: &[bf16],
    q_stride: usize,
    kv: PagedKv<'_, [bf16], [i32]>,
    cu_seqlens: &[i32],
    prefix_lens: &[i32],
    shape: AttnShape,
) {
    let (d, width) = (shape.head_dim, shape.num_heads * shape.head_dim);
    let group = shape.num_heads / shape.num_kv_heads;
    let tokens = (out.len() / width) as i32;
    let cap = kv.max_pages * kv.page_size;
    for (s, &prefix) in prefix_lens.iter().enumerate() {
        let q0 = cu_seqlens[s].clamp(0, tokens);
        let q1 = cu_seqlens[s + 1].clamp(q0, tokens);
        let prefix = prefix.max(0) as usize;
        let kv_len = (prefix + (q1 - q0) as usize).min(cap);
        for (i, t) in (q0 as usize..q1 as usize).enumerate() {
            let len = (prefix + i + 1).min(kv_len);
            for h in 0..shape.num_heads {
                let qh = &q[t * q_stride + h * d..][..d];
                let o = &mut out[t * width + h * d..][..d];
                attend(o, qh, &kv, s, h / group, len, shape);
            }
        }
    }
}

/// src/gemm.rs: `y [m, n] = x [m, k] W[n, k]^T (+ bias[n])`, f64 sums, one rounding.
pub fn linear(y: &mut [bf16], x: &[bf16], w: &[bf16], bias: Option<&[bf16]>, k: usize) {
    let n = w.len() / k;
    assert_eq!(y.len(), x.len() / k * n);
    let wf: Vec<f64> = w.iter().map(|&v| f(v) as f64).collect();
    for (yr, xr) in y.chunks_exact_mut(n).zip(x.chunks_exact(k)) {
        let xf: Vec<f64> = xr.iter().map(|&v| f(v) as f64).collect();
        for (j, o) in yr.iter_mut().enumerate() {
            let dot: f64 = xf
                .iter()
                .zip(&wf[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
            *o = b((dot + bias.map_or(0.0, |bv| f(bv[j]) as f64)) as f32);
        }
    }
}

/// The ordering key of kernels/sampling.cu: orders like the value, -0 just below +0, NaN outside.
fn order_key(v: bf16) -> u16 {
    let b = v.to_bits();
    if b & 0x8000 != 0 {
        !b
    } else {
        b | 0x8000
    }
}

/// kernels/sampling.cu: `token[r]`, `logprob[r]` for each row of `logits` ([rows, vocab], rows =
/// `params.len()`), by the kernel's definitions: ranking by logit (-0 below +0, ties by index), the kept prefix
/// (top-k, top-p on the untruncated mass, min-p), the draw in rank order with [`uniform`]. Sums are
/// f64 here, f32 in the kernel, so the two can differ where a cut or the draw lands within rounding of
/// a boundary.
pub fn sample(token: &mut [i32], logprob: &mut [f32], logits: &[bf16], params: &[SampleRow]) {
    let rows = params.len();
    assert_eq!(token.len(), rows);
    assert_eq!(logprob.len(), rows);
    if rows == 0 {
        return;
    }
    assert!(logits.len().is_multiple_of(rows) && !logits.is_empty());
    let vocab = logits.len() / rows;
    for (((x, p), t), lp) in logits
        .chunks_exact(vocab)
        .zip(params)
        .zip(token.iter_mut())
        .zip(logprob.iter_mut())
    {
        (*t, *lp) = sample_row(x, p);
    }
}

fn sample_row(x: &[bf16], p: &SampleRow) -> (i32, f32) {
    let l: Vec<f32> = x.iter().map(|&v| f(v)).collect();
    let (mut m, mut am) = (f32::NEG_INFINITY, 0usize);
    for (i, &v) in l.iter().enumerate() {
        if v > m {
            (m, am) = (v, i);
        }
    }
    if m == f32::NEG_INFINITY {
        return (0, f32::NEG_INFINITY);
    }
    if m == f32::INFINITY {
        return (am as i32, 0.0);
    }
    let valid = |i: &usize| l[*i] > f32::NEG_INFINITY;
    if p.is_greedy() {
        let z: f64 = (0..l.len())
            .filter(valid)
            .map(|i| ((l[i] - m) as f64).exp())
            .sum();
        return (am as i32, -z.ln() as f32);
    }
    let inv_t = 1.0 / p.temperature;
    let prob = |v: f32| ((v - m) * inv_t).exp(); // the kernel's (and the engine's) f32 formula
    let min_p = if p.min_p > 0.0 { p.min_p.min(1.0) } else { 0.0 };
    let z: f64 = (0..l.len()).filter(valid).map(|i| prob(l[i]) as f64).sum();
    // (key, index, p) of the candidates, in rank order.
    let mut cand: Vec<(u16, usize, f32)> = (0..l.len())
        .filter(valid)
        .map(|i| (order_key(x[i]), i, prob(l[i])))
        .filter(|c| c.2 > 0.0 && c.2 >= min_p)
        .collect();
    cand.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let k = match usize::try_from(p.top_k) {
        Ok(k) if k > 0 && k < l.len() => k,
        _ => usize::MAX,
    };
    let mass = if p.top_p < 1.0 {
        p.top_p.max(0.0) as f64 * z
    } else {
        f64::INFINITY
    };
    let (mut kept, mut above) = (0, 0.0);
    for (r, c) in cand.iter().enumerate() {
        if r >= k || (r > 0 && above > mass) {
            break;
        }
        kept += 1;
        above += c.2 as f64;
    }
    let keep = &cand[..kept];
    let w: f64 = keep.iter().map(|c| c.2 as f64).sum();
    let target = uniform(p.seed, p.step) as f64 * w;
    let mut acc = 0.0;
    let tok = keep
        .iter()
        .find(|c| {
            acc += c.2 as f64;
            acc > target
        })
        .or(keep.last())
        .map_or(am, |c| c.1);
    (tok as i32, (((l[tok] - m) * inv_t) as f64 - z.ln()) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[f32]) -> Vec<bf16> {
        xs.iter().map(|&x| b(x)).collect()
    }

    #[test]
    fn norms() {
        let mut out = v(&[0.0; 2]);
        rmsnorm(&mut out, &v(&[3.0, 4.0]), &v(&[1.0, 2.0]), 0.0);
        let r = 12.5f32.sqrt();
        assert_eq!(out, v(&[3.0 / r, 8.0 / r]));
        let (mut x, mut res) = (v(&[1.0, 1.0]), v(&[2.0, 3.0]));
        fused_add_rmsnorm(&mut x, &mut res, &v(&[1.0, 1.0]), 0.0);
        assert_eq!((res, x), (v(&[3.0, 4.0]), v(&[3.0 / r, 4.0 / r])));
    }

    #[test]
    fn silu() {
        let mut out = v(&[9.0; 3]);
        silu_and_mul(&mut out, &v(&[0.0, -1000.0, 2.0, 5.0, 5.0, 3.0]), 3);
        assert_eq!(out, v(&[0.0, -0.0, 3.0 * 2.0 / (1.0 + (-2f32).exp())]));
    }

    #[test]
    fn rope_rotates_pairs_and_stores() {
        // One q head, one kv head, head_dim 4: q = [1, 2, 3, 4], k = [5, 6, 7, 8], v = [9 .. 12].
        let shape = AttnShape {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 4,
        };
        let inv = [1.0f32, 0.5];
        for (style, pairs) in [
            (RopeStyle::Neox, [(0, 2), (1, 3)]),
            (RopeStyle::Interleaved, [(0, 1), (2, 3)]),
        ] {
            let rope = Rope {
                style,
                rot_dim: 4,
                freqs: RopeFreqs::InvFreq(&inv[..]),
            };
            let src: Vec<f32> = (1..=12).map(|i| i as f32).collect();
            let (mut qkv, mut kc, mut vc) = (v(&src), vec![bf16::NAN; 8], vec![bf16::NAN; 8]);
            rope_kv_write(&mut qkv, &[3], &[1], &mut kc, &mut vc, shape, &rope);
            for head in 0..2 {
                for (i, &(i0, i1)) in pairs.iter().enumerate() {
                    let (s, c) = (3.0 * inv[i] as f64).sin_cos();
                    let (a, bb) = (src[head * 4 + i0] as f64, src[head * 4 + i1] as f64);
                    assert_eq!(qkv[head * 4 + i0], b((a * c - bb * s) as f32), "{style:?}");
                    assert_eq!(qkv[head * 4 + i1], b((bb * c + a * s) as f32), "{style:?}");
                }
            }
            assert!(
                kc[..4].iter().chain(&vc[..4]).all(|x| x.is_nan()),
                "slot 0 untouched"
            );
            assert_eq!(&kc[4..], &qkv[4..8]);
            assert_eq!(&vc[4..], &qkv[8..]);
        }
    }

    #[test]
    fn attention_twins_on_a_tiny_cache() {
        // 1 kv head, head_dim 2, page_size 2; sequence pages [1, 0]: positions 0,1 in page 1, 2 in page 0.
        let shape = AttnShape {
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 2,
        };
        let k = v(&[0.0, 1.0, 9.0, 9.0, 1.0, 0.0, 1.0, 0.0]); // slot 0: pos 2, slot 2-3: pos 0-1
        let vv = v(&[5.0, 6.0, 9.0, 9.0, 1.0, 2.0, 3.0, 4.0]);
        let table = [1, 0];
        let kv = PagedKv {
            k_cache: &k[..],
            v_cache: &vv[..],
            page_size: 2,
            page_table: &table[..],
            max_pages: 2,
        };
        // Head 0: q = 0 -> uniform over the visible positions. Head 1: q = [0, 1000] -> pos 2 only.
        let q = v(&[0.0, 0.0, 0.0, 1000.0]);
        let mut out = v(&[7.0; 4]);
        attention_decode(&mut out, &q, 4, kv, &[3], shape);
        assert_eq!(out, v(&[3.0, 4.0, 5.0, 6.0]));
        attention_decode(&mut out, &q, 4, kv, &[0], shape);
        assert_eq!(out, v(&[0.0; 4]));
        // Prefill: 2 new tokens after a prefix of 1: token 0 sees positions 0..=1, token 1 sees 0..=2.
        let q2 = v(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1000.0]);
        let mut out2 = v(&[7.0; 12]); // a third row that no sequence owns stays untouched
        attention_prefill(&mut out2, &q2, 4, kv, &[0, 2], &[1], shape);
        let want = [2.0, 3.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0, 7.0, 7.0, 7.0, 7.0];
        assert_eq!(out2, v(&want));
    }

    #[test]
    fn linear_is_x_times_w_transposed() {
        let (x, w) = (v(&[1.0, 2.0, 3.0, 4.0]), v(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]));
        let mut y = v(&[0.0; 6]);
        linear(&mut y, &x, &w, Some(&v(&[0.5, 0.0, -1.0])), 2);
        assert_eq!(y, v(&[1.5, 2.0, 2.0, 3.5, 4.0, 6.0]));
    }
}

#[cfg(test)]
mod sampling_tests {
    //! The sampling twin: hand-computed cases, then its draws against the f64 reference
    //! (crate::sampling::reference) by chi-square, failure probability 1e-6 per test.
    use super::*;
    use crate::sampling::reference::{chi_square_p_value, distribution};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const INF: f32 = f32::INFINITY;

    fn v(xs: &[f32]) -> Vec<bf16> {
        xs.iter().map(|&x| b(x)).collect()
    }

    fn one(logits: &[f32], p: SampleRow) -> (i32, f32) {
        let (mut t, mut lp) = ([-7], [f32::NAN]);
        sample(&mut t, &mut lp, &v(logits), &[p]);
        (t[0], lp[0])
    }

    /// Tokens drawn over `n` seeds (and steps).
    fn draws(logits: &[f32], p: SampleRow, n: u64) -> Vec<u64> {
        let mut counts = vec![0u64; logits.len()];
        for s in 0..n {
            let (t, _) = one(
                logits,
                SampleRow {
                    seed: s * 7919,
                    step: (s % 13) as u32,
                    ..p
                },
            );
            counts[t as usize] += 1;
        }
        counts
    }

    fn row(t: f32, top_k: i32, top_p: f32, min_p: f32) -> SampleRow {
        SampleRow {
            top_k,
            top_p,
            min_p,
            ..SampleRow::sampled(t)
        }
    }

    #[test]
    fn greedy_takes_the_first_max_and_reports_temperature_one() {
        let l = [1.0, 3.0, 3.0, 2.0, -INF];
        let lp = 3.0 - (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp()).ln();
        for p in [
            SampleRow::greedy(),
            row(5e-7, 0, 1.0, 0.0),
            row(0.7, 1, 1.0, 0.0), // top_k 1 is greedy too
            row(f32::NAN, 0, 1.0, 0.0),
        ] {
            let (t, got) = one(&l, p);
            assert_eq!(t, 1, "{p:?}");
            assert!((got as f64 - lp).abs() < 1e-6, "{got} vs {lp}");
        }
    }

    #[test]
    fn degenerate_rows() {
        assert_eq!(one(&[-INF, -INF], SampleRow::greedy()), (0, -INF));
        assert_eq!(one(&[f32::NAN, -INF], row(1.0, 0, 1.0, 0.0)), (0, -INF));
        assert_eq!(one(&[1.0, INF, INF], row(1.0, 0, 0.5, 0.0)), (1, 0.0));
        // NaN and -inf are never drawn.
        let c = draws(
            &[f32::NAN, 0.0, -INF, 0.5, f32::NAN],
            row(1.0, 0, 1.0, 0.0),
            2000,
        );
        assert_eq!(c[0] + c[2] + c[4], 0);
        assert!(c[1] > 0 && c[3] > 0);
    }

    #[test]
    fn tiny_top_p_keeps_the_first_max_only() {
        let c = draws(&[0.0, 2.0, 2.0, 1.0], row(1.0, 0, 1e-6, 0.0), 500);
        assert_eq!(c, vec![0, 500, 0, 0]);
        let c = draws(&[0.0, 2.0, 2.0, 1.0], row(1.0, 0, 0.0, 0.0), 100);
        assert_eq!(c, vec![0, 100, 0, 0]);
    }

    #[test]
    fn top_k_cuts_ties_by_index() {
        // Ranks: 1, 2, 3 (equal logits by index), 0, 4. top_k 2 keeps 1 and 2, evenly.
        let c = draws(&[1.0, 2.0, 2.0, 2.0, 0.0], row(1.0, 2, 1.0, 0.0), 4000);
        assert_eq!((c[0], c[3], c[4]), (0, 0, 0));
        assert!(c[1].abs_diff(c[2]) < 300, "{c:?}");
    }

    #[test]
    fn top_p_counts_mass_above_each_rank() {
        // Ten equal logits: above(r) = r, Z = 10; top_p 0.35 keeps ranks with r <= 3.5.
        let c = draws(&[0.5; 10], row(1.0, 0, 0.35, 0.0), 4000);
        assert!(c[..4].iter().all(|&n| n > 800), "{c:?}");
        assert!(c[4..].iter().all(|&n| n == 0), "{c:?}");
        // p = 2^-r: top_p 0.6 keeps ranks 0 and 1 (above(2) = 1.5 of Z ~2 is past 0.6 Z).
        let l: Vec<f32> = (0..12)
            .map(|i| -(i as f32) * std::f32::consts::LN_2)
            .collect();
        let c = draws(&l, row(1.0, 0, 0.6, 0.0), 3000);
        assert!(c[2..].iter().all(|&n| n == 0) && c[1] > 800, "{c:?}");
    }

    #[test]
    fn min_p_is_relative_to_the_max() {
        // p = 1, e^-1, e^-2, e^-3 relative: min_p 0.3 keeps the first two, in ratio 1 : e^-1.
        let c = draws(&[2.0, 1.0, 0.0, -1.0], row(1.0, 0, 1.0, 0.3), 20_000);
        assert_eq!(c[2] + c[3], 0);
        let want = 20_000.0 / (1.0 + (-1f64).exp());
        assert!(
            (c[0] as f64 - want).abs() < 5.0 * (want * 0.27).sqrt(),
            "{c:?}"
        );
        // min_p above 1 keeps the max (clamped), min_p 1 too.
        assert_eq!(draws(&[2.0, 1.0], row(1.0, 0, 1.0, 7.0), 50), vec![50, 0]);
    }

    #[test]
    fn logprob_is_before_truncation() {
        // T = 0.5: logprob of any drawn token is log_softmax(l / 0.5), whatever top-k cut.
        let l = [1.0f32, 0.5, 0.0, -1.0];
        let z: f64 = l.iter().map(|&x| (x as f64 / 0.5).exp()).sum();
        for s in 0..50 {
            let (t, lp) = one(
                &l,
                SampleRow {
                    seed: s,
                    ..row(0.5, 2, 1.0, 0.0)
                },
            );
            assert!(t < 2);
            assert!((lp as f64 - (l[t as usize] as f64 / 0.5 - z.ln())).abs() < 1e-5);
        }
    }

    #[test]
    fn uniform_is_a_function_of_seed_and_step() {
        assert_eq!(uniform(42, 7), uniform(42, 7));
        assert_ne!(uniform(42, 7), uniform(42, 8));
        assert_ne!(uniform(42, 7), uniform(43, 7));
        let n = 200_000;
        let mut bins = [0u64; 10];
        for i in 0..n {
            let u = uniform(i / 100, (i % 100) as u32);
            assert!((0.0..1.0).contains(&u));
            bins[(u * 10.0) as usize] += 1;
        }
        let probs = [0.1; 10];
        assert!(chi_square_p_value(&bins, &probs) > 1e-6, "{bins:?}");
    }

    fn normal_logits(rng: &mut StdRng, n: usize, sigma: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                b((z * sigma) as f32).to_f32()
            })
            .collect()
    }

    #[test]
    fn twin_stays_in_the_reference_set() {
        let mut rng = StdRng::seed_from_u64(11);
        for case in 0..400 {
            let n = [5usize, 50, 500][case % 3];
            let mut l = normal_logits(&mut rng, n, [0.5, 2.0, 5.0][case % 3]);
            l[rng.random_range(0..n)] = -INF;
            let dup = rng.random_range(0..n);
            l[dup] = l.iter().copied().fold(-INF, f32::max); // a tie at the max
            let p = SampleRow {
                temperature: [0.0, 0.3, 0.8, 1.0, 1.7][case % 5],
                top_k: [0, 1, 3, 40, 1000][case % 7 % 5],
                top_p: [1.0, 0.9, 0.5, 0.99][case % 4],
                min_p: [0.0, 0.05, 0.2][case % 3],
                seed: case as u64,
                step: 3,
            };
            let reference = distribution(&v(&l), &p);
            let (t, lp) = one(&l, p);
            assert!(reference.allowed(t as usize), "case {case}: {t} {p:?}");
            let want = reference.logprobs[t as usize];
            assert!(
                (lp as f64 - want).abs() < 1e-4,
                "case {case}: {lp} vs {want}"
            );
        }
    }

    fn check_distribution(what: &str, l: &[f32], p: SampleRow, n: u64) {
        let reference = distribution(&v(l), &p);
        assert!(
            reference.undecided.is_empty(),
            "{what}: a cut within tolerance"
        );
        let counts = draws(l, p, n);
        let pv = chi_square_p_value(&counts, &reference.probs);
        let kept = reference.probs.iter().filter(|&&q| q > 0.0).count();
        eprintln!("{what}: {kept} kept, chi-square p = {pv:.3e}");
        assert!(pv >= 1e-6, "{what}: p-value {pv:e}");
    }

    #[test]
    fn distribution_vocab_10() {
        let l = [1.0, 2.5, 0.0, 2.0, -1.0, 1.5, 0.5, -INF, 2.0, 0.25];
        let n = 100_000;
        check_distribution("v10 temperature", &l, row(0.9, 0, 1.0, 0.0), n);
        check_distribution("v10 top-k 4", &l, row(1.3, 4, 1.0, 0.0), n);
        check_distribution("v10 top-p 0.8", &l, row(1.0, 0, 0.8, 0.0), n);
        check_distribution("v10 min-p 0.3", &l, row(0.7, 0, 1.0, 0.3), n);
        check_distribution("v10 all", &l, row(1.5, 6, 0.9, 0.1), n);
    }

    #[test]
    fn distribution_vocab_1000() {
        let mut rng = StdRng::seed_from_u64(5);
        let l = normal_logits(&mut rng, 1000, 2.0);
        let n = 20_000;
        check_distribution("v1000 temperature", &l, row(1.0, 0, 1.0, 0.0), n);
        check_distribution("v1000 top-k 50", &l, row(0.8, 50, 1.0, 0.0), n);
        check_distribution("v1000 top-p 0.9", &l, row(0.7, 0, 0.9, 0.0), n);
        check_distribution("v1000 joint", &l, row(1.2, 100, 0.95, 0.02), n);
    }
}

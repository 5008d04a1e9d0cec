//! CPU twins of the kernels: the same contract (shapes, layout, in-place updates, invalid-index
//! behaviour), written as plainly as possible. f32 math on the bf16 inputs, one bf16 rounding per
//! output, exactly where the kernel rounds; reductions accumulate in f64 so the reference does not
//! depend on summation order. The GPU tests compare every kernel against these.
//!
//! They panic on inconsistent shapes (they are references, not API).

use crate::attention::softmax_scale;
use crate::layout::{AttnShape, PagedKv};
use crate::rope::{angle, Rope, RopeFreqs, RopeStyle};
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

//! CPU twins of the kernels: the same contract (shapes, layout, in-place updates, invalid-index
//! behaviour), written as plainly as possible. f32 math on the bf16 inputs, one bf16 rounding per
//! output, exactly where the kernel rounds; reductions accumulate in f64 so the reference does not
//! depend on summation order. The GPU tests compare every kernel against these.
//!
//! They panic on inconsistent shapes (they are references, not API).

use crate::layout::AttnShape;
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
}

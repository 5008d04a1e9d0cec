//! Causal paged attention on the CPU for a packed batch of sequences (prefill chunks and decode tokens
//! mixed), with grouped-query heads. K/V of the new tokens are written into their page slots first, so a
//! token attends to its own sequence's earlier positions, cached or computed in this pass.
//! Layout: q [tokens, heads, hd]; k/v new [tokens, kv_heads, hd]; output [tokens, heads, hd].

use rayon::prelude::*;

use crate::forward_ctx::ForwardCtx;
use crate::kv_cache::{slot, LayerKv};

pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

pub fn write_kv(layer: &mut LayerKv, ctx: &ForwardCtx, tokens: &[(usize, usize)], k: &[f32], v: &[f32], width: usize) {
    for (t, &(s, pos)) in tokens.iter().enumerate() {
        let at = slot(&ctx.seqs[s].page_table, ctx.page_size, pos) * width;
        layer.k[at..at + width].copy_from_slice(&k[t * width..(t + 1) * width]);
        layer.v[at..at + width].copy_from_slice(&v[t * width..(t + 1) * width]);
    }
}

pub fn attend(layer: &LayerKv, ctx: &ForwardCtx, tokens: &[(usize, usize)], q: &[f32], shape: &AttnShape) -> Vec<f32> {
    let hd = shape.head_dim;
    let group = shape.heads / shape.kv_heads;
    let width = shape.kv_heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0f32; q.len()];
    // One work item per (token, kv head): the query heads of a GQA group are adjacent in `out`, share
    // the slot list and read the same K/V rows while they are in cache.
    let item = |(i, o): (usize, &mut [f32])| {
        let (t, g) = (i / shape.kv_heads, i % shape.kv_heads);
        let (s, pos) = tokens[t];
        let table = &ctx.seqs[s].page_table;
        let rows: Vec<usize> = (0..=pos).map(|p| slot(table, ctx.page_size, p) * width + g * hd).collect();
        let mut scores = vec![0.0f32; rows.len()];
        for (hq, oh) in o.chunks_exact_mut(hd).enumerate() {
            let h = g * group + hq;
            let qh = &q[(t * shape.heads + h) * hd..(t * shape.heads + h + 1) * hd];
            for (sc, &at) in scores.iter_mut().zip(&rows) {
                *sc = dot(qh, &layer.k[at..at + hd]) * scale;
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for x in scores.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            for (w, &at) in scores.iter().zip(&rows) {
                axpy(w * inv, &layer.v[at..at + hd], oh);
            }
        }
    };
    // Below ~256k multiply-adds a parallel region costs more than it saves (decode of a few tokens).
    let work: usize = tokens.iter().map(|&(_, p)| p + 1).sum::<usize>() * shape.heads * hd;
    if work < 1 << 18 {
        out.chunks_mut(group * hd).enumerate().for_each(item);
    } else {
        out.par_chunks_mut(group * hd).enumerate().for_each(item);
    }
    out
}

/// Eight independent accumulators so the compiler emits SIMD despite f32's non-associativity.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline]
fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += w * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward_ctx::SeqSlice;

    /// Dense reference: softmax(q k^T / sqrt(d)) v over positions 0..=pos, f64.
    fn reference(qh: &[f32], ks: &[Vec<f32>], vs: &[Vec<f32>]) -> Vec<f32> {
        let d = qh.len() as f64;
        let s: Vec<f64> = ks.iter().map(|k| k.iter().zip(qh).map(|(a, b)| (*a * *b) as f64).sum::<f64>() / d.sqrt()).collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..qh.len()).map(|j| (e.iter().zip(vs).map(|(w, v)| w * v[j] as f64).sum::<f64>() / z) as f32).collect()
    }

    #[test]
    fn matches_dense_reference_with_shuffled_pages_and_gqa() {
        let shape = AttnShape { heads: 4, kv_heads: 2, head_dim: 8 };
        let width = shape.kv_heads * shape.head_dim;
        let page_size = 2;
        let mut layer = LayerKv { k: vec![0.0; 16 * page_size * width], v: vec![0.0; 16 * page_size * width] };
        // seq0: 3 tokens already cached + 2 new; seq1: 5 new (prefill).
        let ctx = ForwardCtx {
            seqs: vec![
                SeqSlice { q_len: 2, start: 3, page_table: &[9, 4, 13] },
                SeqSlice { q_len: 5, start: 0, page_table: &[2, 11, 0] },
            ],
            page_size,
            logit_rows: vec![],
        };
        let val = |s: usize, p: usize, j: usize| ((s * 31 + p * 7 + j * 3) % 11) as f32 / 5.0 - 1.0;
        // Fill seq0's cached positions directly.
        for p in 0..3 {
            let at = slot(&ctx.seqs[0].page_table, page_size, p) * width;
            for j in 0..width {
                layer.k[at + j] = val(0, p, j);
                layer.v[at + j] = val(0, p, j + 1);
            }
        }
        let tokens = ctx.token_positions();
        let new_k: Vec<f32> = tokens.iter().flat_map(|&(s, p)| (0..width).map(move |j| val(s, p, j))).collect();
        let new_v: Vec<f32> = tokens.iter().flat_map(|&(s, p)| (0..width).map(move |j| val(s, p, j + 1))).collect();
        write_kv(&mut layer, &ctx, &tokens, &new_k, &new_v, width);
        let q: Vec<f32> = (0..tokens.len() * shape.heads * 8).map(|i| ((i * 13) % 7) as f32 / 3.0 - 1.0).collect();
        let out = attend(&layer, &ctx, &tokens, &q, &shape);
        for (t, &(s, pos)) in tokens.iter().enumerate() {
            for h in 0..shape.heads {
                let kvh = h / 2;
                let ks: Vec<Vec<f32>> = (0..=pos).map(|p| (0..8).map(|j| val(s, p, kvh * 8 + j)).collect()).collect();
                let vs: Vec<Vec<f32>> = (0..=pos).map(|p| (0..8).map(|j| val(s, p, kvh * 8 + j + 1)).collect()).collect();
                let i = t * shape.heads + h;
                let want = reference(&q[i * 8..(i + 1) * 8], &ks, &vs);
                for (a, b) in out[i * 8..(i + 1) * 8].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "t{t} h{h}: {a} vs {b}");
                }
            }
        }
    }
}

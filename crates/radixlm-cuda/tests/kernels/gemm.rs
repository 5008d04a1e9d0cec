//! cuBLASLt linear layers against the CPU twin, and their timings.
//!
//! Bound, per element: |gpu - cpu| <= 2^-7 max(|gpu|, |cpu|) + 2^-16 sum_i |x_i w_i| (+ the same
//! over the whole output in RMS, 2^-8 rms(cpu)). One bf16 ulp for the single rounding of each side, plus
//! the f32 accumulation error of cuBLAS (the twin sums in f64): a sum of k products in f32 is off by
//! ~2^-24 sum|x w| per step of an unlucky order, about 2^-24 * sqrt(k) sum|x w| in practice (split-K
//! and tree orders only help), far under 2^-16 for k <= 16384; the absolute term matters only where
//! the output cancels to near zero. A wrong row, column or transpose is off by O(|y|).

use super::attention::{pattern, time_us};
use super::{device, down, nan, rand_bf16, up};
use radixlm_cuda::{bf16, cpu, Error, Gemm};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn check_linear(what: &str, got: &[bf16], want: &[bf16], x: &[bf16], w: &[bf16], k: usize) -> f32 {
    let n = w.len() / k;
    let (mut worst, mut err2, mut ref2) = (0f32, 0f64, 0f64);
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}]: got {g}");
        let (row, col) = (i / n, i % n);
        let mag: f32 = x[row * k..(row + 1) * k]
            .iter()
            .zip(&w[col * k..(col + 1) * k])
            .map(|(a, b)| (a.to_f32() * b.to_f32()).abs())
            .sum();
        let (g, r) = (g.to_f32(), r.to_f32());
        let bound = 2f32.powi(-7) * g.abs().max(r.abs()) + 2f32.powi(-16) * mag;
        let err = (g - r).abs();
        assert!(
            err <= bound,
            "{what}[{i}] (row {row}, col {col}): got {g}, want {r}, |err| {err} > {bound}"
        );
        worst = worst.max(err / bound);
        err2 += (err as f64).powi(2);
        ref2 += (r as f64).powi(2);
    }
    assert!(
        err2.sqrt() <= 2f64.powi(-8) * ref2.sqrt(),
        "{what}: rms error {:.3e} > 2^-8 rms(ref) {:.3e}",
        err2.sqrt(),
        ref2.sqrt()
    );
    worst
}

#[test]
fn linear() {
    let Some(dev) = device("linear") else { return };
    let gemm = Gemm::new(&dev).unwrap();
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(21);
    // (m, n, k, bias): Qwen2.5-0.5B's qkv (bias) / o / down, Llama's qkv and o at small m, a tall
    // prefill-like m, odd sizes that defeat 16-byte alignment.
    let cases = [
        (1usize, 1152usize, 896usize, true),
        (7, 896, 896, false),
        (64, 1152, 896, true),
        (257, 896, 4864, false),
        (1, 6144, 4096, false),
        (33, 4096, 4096, false),
        (4096, 128, 256, true),
        (8192, 64, 64, false),
        (3, 24, 40, false),
        (5, 7, 9, true),
        (1, 1, 1, true),
    ];
    let mut worst = 0f32;
    let mut keys = std::collections::HashSet::new();
    let mut failed = vec![];
    for (m, n, k, with_bias) in cases {
        let x = rand_bf16(&mut rng, m * k, 1.0);
        let w = rand_bf16(&mut rng, n * k, 0.1);
        let bias = rand_bf16(&mut rng, n, 1.0);
        let mut want = nan(m * n);
        cpu::linear(&mut want, &x, &w, with_bias.then_some(&bias[..]), k);
        // Offset 0: 256-byte aligned buffers; offset 1: 2-byte aligned views (another plan).
        for offset in [0usize, 1] {
            let pad = |v: &[bf16]| [nan(offset), v.to_vec()].concat();
            let (x_d, w_d, b_d) = (up(s, &pad(&x)), up(s, &pad(&w)), up(s, &pad(&bias)));
            let mut y = up(s, &nan(m * n + offset));
            let mut yv = y.slice_mut(offset..);
            let (xv, wv, bv) = (
                x_d.slice(offset..),
                w_d.slice(offset..),
                b_d.slice(offset..),
            );
            // Twice: the second call reuses the cached plan.
            let what = format!("linear m{m} n{n} k{k} bias {with_bias} +{offset}");
            let r = (0..2).try_for_each(|_| {
                if with_bias {
                    gemm.linear_bias(&mut yv, &xv, &wv, &bv, k)
                } else {
                    gemm.linear(&mut yv, &xv, &wv, k)
                }
            });
            if let Err(e) = r {
                // Keep going: one run on the GPU machine reports every failing shape.
                eprintln!("  {what}: {e}");
                failed.push(what);
                continue;
            }
            let got = down(s, &y);
            assert!(got[..offset].iter().all(|v| v.is_nan()), "wrote before y");
            worst = worst.max(check_linear(&what, &got[offset..], &want, &x, &w, k));
            keys.insert((m, n, k, with_bias, offset));
        }
    }
    assert_eq!(
        gemm.cached_plans(),
        keys.len(),
        "one plan per shape and alignment"
    );
    // Shapes are checked.
    let e = |r: radixlm_cuda::Result<()>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    let (x, w) = (up(s, &nan(6)), up(s, &nan(6)));
    let mut y = up(s, &nan(4));
    e(gemm.linear(&mut up(s, &nan(5)), &x, &w, 3)); // y must be 2 x 2
    e(gemm.linear(&mut y, &x, &w, 4)); // 6 is not [rows, 4]
    e(gemm.linear_bias(&mut y, &x, &w, &up(s, &nan(3)), 3)); // bias of 3 for n = 2
    e(gemm.linear(&mut y, &x, &w, 0));
    gemm.linear(&mut y, &x, &w, 3).unwrap();
    dev.synchronize().unwrap();
    eprintln!(
        "linear: {} cases within bounds (worst {worst:.2} of bound), {} plans cached",
        keys.len(),
        gemm.cached_plans()
    );
}

/// Not a correctness test: the linear layers of both models at m = 1, 64, 256, 4096.
#[test]
fn gemm_timings() {
    let Some(dev) = device("gemm_timings") else {
        return;
    };
    let gemm = Gemm::new(&dev).unwrap();
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(22);
    // (model, layer, n, k, bias)
    let layers = [
        ("qwen2.5-0.5b", "qkv", 1152usize, 896usize, true),
        ("qwen2.5-0.5b", "o", 896, 896, false),
        ("qwen2.5-0.5b", "gate_up", 9728, 896, false),
        ("qwen2.5-0.5b", "down", 896, 4864, false),
        ("qwen2.5-0.5b", "lm_head", 151936, 896, false),
        ("llama-3.1-8b", "qkv", 6144, 4096, false),
        ("llama-3.1-8b", "o", 4096, 4096, false),
        ("llama-3.1-8b", "gate_up", 28672, 4096, false),
        ("llama-3.1-8b", "down", 4096, 14336, false),
        ("llama-3.1-8b", "lm_head", 128256, 4096, false),
    ];
    eprintln!(
        "linear y = x W^T (bf16, f32 accumulate), weights cycled past L2: us per call, \
         TFLOP/s (% of 990), GB/s moved (% of 3350)"
    );
    eprintln!(
        "{:<14} {:<8} {:>7} {:>6} {:>5} {:>10} {:>14} {:>16}",
        "model", "layer", "n", "k", "m", "us", "TFLOP/s", "GB/s"
    );
    for (model, layer, n, k, with_bias) in layers {
        // Enough weight copies to pass 256 MB, cycled, so the weights stream from HBM as in a real
        // forward pass (a single 32 MB matrix would otherwise stay in the 50 MB L2 between calls).
        let copies = ((256e6 / (2 * n * k) as f64).ceil() as usize).clamp(1, 64);
        let host_w = pattern(&mut rng, n * k, 0.05);
        let ws: Vec<_> = (0..copies).map(|_| up(s, &host_w)).collect();
        let mut which = 0;
        let bias = up(s, &rand_bf16(&mut rng, n, 0.05));
        for m in [1usize, 64, 256, 4096] {
            if layer == "lm_head" && m > 256 {
                continue; // logits are computed for the last token of each sequence only
            }
            let x = up(s, &pattern(&mut rng, m * k, 1.0));
            let mut y = up(s, &nan(m * n));
            let us = time_us(&dev, &mut || {
                which = (which + 1) % copies;
                let w = &ws[which];
                if with_bias {
                    gemm.linear_bias(&mut y, &x, w, &bias, k).unwrap()
                } else {
                    gemm.linear(&mut y, &x, w, k).unwrap()
                }
            });
            let tf = 2.0 * (m * n * k) as f64 / us / 1e6;
            let gbs = 2.0 * (n * k + m * k + m * n) as f64 / us / 1e3;
            eprintln!(
                "{model:<14} {layer:<8} {n:>7} {k:>6} {m:>5} {us:>10.1} {tf:>7.1} ({:>3.0}%) {gbs:>8.0} ({:>3.0}%)",
                100.0 * tf / 990.0,
                100.0 * gbs / 3350.0
            );
        }
    }
}

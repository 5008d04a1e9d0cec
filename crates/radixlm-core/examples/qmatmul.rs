//! Prefill-sized quantized matmuls: the panel GEMM path against the row-by-row path it replaced for
//! m >= 16, on SmolLM2-135M's shapes (Q4_1). Prints ms per call (median of 9) and GFLOP/s.
//!   cargo run --release -p radixlm-core --example qmatmul
use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use radixlm_core::layers::qmatmul::QuantMatrix;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 2001) as f32 / 1000.0 - 1.0).collect()
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..9)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[4]
}

fn main() {
    // (name, out rows, in cols): QKV (576 + 2 x 192), gate+up (2 x 1536), down, o.
    let shapes = [("qkv", 960, 576), ("gate_up", 3072, 576), ("down", 576, 1536), ("o", 576, 576)];
    println!("{:>8} {:>5} | {:>10} {:>8} | {:>10} {:>8} | speed-up", "layer", "m", "rows ms", "GF/s", "panel ms", "GF/s");
    for m in [48, 64, 512] {
        for (name, rows, cols) in shapes {
            let w = Tensor::from_vec(data(rows * cols, 7), (rows, cols), &Device::Cpu).unwrap();
            let mm = QuantMatrix::new(Arc::new(QTensor::quantize(&w, GgmlDType::Q4_1).unwrap())).unwrap();
            let x = data(m * cols, 3);
            let a = median_ms(|| drop(mm.matmul_by_rows(&x, m).unwrap()));
            let b = median_ms(|| drop(mm.matmul(&x, m).unwrap()));
            let gf = |ms: f64| 2.0 * (m * rows * cols) as f64 / ms / 1e6;
            println!("{name:>8} {m:>5} | {a:>10.3} {:>8.1} | {b:>10.3} {:>8.1} | {:.2}x", gf(a), gf(b), a / b);
        }
    }
}

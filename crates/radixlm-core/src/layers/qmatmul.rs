//! CPU matmul of activations [m, k] (f32) by a GGUF-quantized weight [n, k], giving [m, n].
//!
//! Why our own: candle's CPU quantized matmul runs on a spin-waiting barrier pool that fights rayon
//! (which attention and candle's element-wise ops use) for the cores, and its Q4_1 dot product has no
//! SIMD version. Here every quantized matmul runs on rayon, split over blocks of output rows; each
//! block quantizes nothing itself (activations are quantized once per call) and reuses its weight
//! rows for all m activation rows while they are in cache.
//!
//! Q4_1 (the default model's format) has its own AVX2 kernel against Q8_1 activations. Every other
//! GGUF type uses candle's per-type `vec_dot` (SIMD where candle has it) under the same loop.
//!
//! Block layouts (ggml):
//! ```text
//!   Q4_1: d f16 | m f16 | 16 bytes: low nibble j = element j, high nibble j = element j + 16
//!         value = d * q + m
//!   Q8_1: d f16 | s f16 (= d * sum(q)) | 32 x i8          value = d * q
//!   dot(Q4_1, Q8_1) = d_w * d_x * sum(q_w * q_x) + m_w * s_x
//! ```

use std::sync::Arc;

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Output rows per rayon task: enough work to amortise scheduling, small enough to balance 2-64 cores.
const ROWS_PER_TASK: usize = 32;

pub struct QuantMatrix {
    q: Arc<QTensor>,
    pub rows: usize,
    pub cols: usize,
}

impl QuantMatrix {
    pub fn new(q: Arc<QTensor>) -> Result<Self> {
        let dims = q.shape().dims();
        if dims.len() != 2 {
            return Err(Error::invalid_model(format!("matmul weight must be 2-D, got {dims:?}")));
        }
        let (rows, cols) = (dims[0], dims[1]);
        if cols % q.dtype().block_size() != 0 {
            return Err(Error::invalid_model(format!("weight row length {cols} is not a multiple of its block size")));
        }
        Ok(QuantMatrix { q, rows, cols })
    }

    /// x: [m, cols] row-major -> [m, rows].
    pub fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(x.len(), m * self.cols);
        let data = self.q.data()?;
        let mut out = vec![0.0f32; m * self.rows];
        match self.q.dtype() {
            GgmlDType::Q4_1 => self.own::<Q4_1>(&data, x, m, &mut out)?,
            GgmlDType::Q8_0 => self.own::<Q8_0>(&data, x, m, &mut out)?,
            GgmlDType::Q4_0 => self.generic::<k_quants::BlockQ4_0>(&data, x, m, &mut out)?,
            GgmlDType::Q5_0 => self.generic::<k_quants::BlockQ5_0>(&data, x, m, &mut out)?,
            GgmlDType::Q5_1 => self.generic::<k_quants::BlockQ5_1>(&data, x, m, &mut out)?,
            GgmlDType::Q2K => self.generic::<k_quants::BlockQ2K>(&data, x, m, &mut out)?,
            GgmlDType::Q3K => self.generic::<k_quants::BlockQ3K>(&data, x, m, &mut out)?,
            GgmlDType::Q4K => self.generic::<k_quants::BlockQ4K>(&data, x, m, &mut out)?,
            GgmlDType::Q5K => self.generic::<k_quants::BlockQ5K>(&data, x, m, &mut out)?,
            GgmlDType::Q6K => self.generic::<k_quants::BlockQ6K>(&data, x, m, &mut out)?,
            other => return Err(Error::internal(format!("no CPU matmul for {other:?} weights"))),
        }
        Ok(out)
    }

    /// Types with our own kernels, against Q8_1 activations.
    fn own<W: Kernel>(&self, data: &[u8], x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let w: &[W] = cast(data)?;
        let xq = quantize_q8_1(x, self.cols);
        let bpr = self.cols / 32;
        run_rows(out, m, self.rows, |r, dst| dot_many(&w[r * bpr..(r + 1) * bpr], &xq, dst));
        Ok(())
    }

    fn generic<T: GgmlType>(&self, data: &[u8], x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let w: &[T] = cast(data)?;
        let bpr = self.cols / T::BLCK_SIZE;
        let mut xq = vec![T::VecDotType::zeros(); m * bpr];
        for (xr, qr) in x.chunks_exact(self.cols).zip(xq.chunks_exact_mut(bpr)) {
            T::VecDotType::from_float(xr, qr);
        }
        let cols = self.cols;
        run_rows(out, m, self.rows, |r, dst| {
            let wr = &w[r * bpr..(r + 1) * bpr];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = T::vec_dot(cols, wr, &xq[i * bpr..(i + 1) * bpr]);
            }
        });
        Ok(())
    }
}

/// Fills out[i, r] for all activation rows i and weight rows r: `f(r, dst)` writes the m values of
/// weight row r. Split over weight rows.
fn run_rows(out: &mut [f32], m: usize, n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    // Tasks own disjoint column ranges of `out`; transpose through a per-task buffer.
    let tasks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|t| {
            let r0 = t * ROWS_PER_TASK;
            let r1 = (r0 + ROWS_PER_TASK).min(n);
            let mut buf = vec![0.0f32; (r1 - r0) * m];
            for (r, dst) in (r0..r1).zip(buf.chunks_exact_mut(m)) {
                f(r, dst);
            }
            (r0, buf)
        })
        .collect();
    for (r0, buf) in tasks {
        let width = buf.len() / m;
        for (j, chunk) in buf.chunks_exact(m).enumerate() {
            for (i, v) in chunk.iter().enumerate() {
                out[i * n + r0 + j] = *v;
            }
        }
        debug_assert!(r0 + width <= n);
    }
}

/// Reinterprets candle's block storage. Its CPU storage is a `Vec` of blocks, so the alignment holds;
/// checked anyway, since a wrong cast would be undefined behaviour.
fn cast<T>(data: &[u8]) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if data.len() % size != 0 || data.as_ptr() as usize % std::mem::align_of::<T>() != 0 {
        return Err(Error::internal("quantized weight storage has an unexpected layout"));
    }
    // SAFETY: length and alignment checked; T is a plain-old-data block struct (f16/u8/i8 fields).
    Ok(unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) })
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Q4_1 {
    d: u16,
    m: u16,
    qs: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Q8_0 {
    d: u16,
    qs: [i8; 32],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Q8_1 {
    d: f32,
    s: f32,
    qs: [i8; 32],
}

/// Rows of `x` (each `k` long) to Q8_1 blocks, scales kept in f32 (only used here, never stored).
fn quantize_q8_1(x: &[f32], k: usize) -> Vec<Q8_1> {
    let mut out = Vec::with_capacity(x.len() / 32);
    for row in x.chunks_exact(k) {
        for b in row.chunks_exact(32) {
            let amax = b.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; 32];
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(b) {
                *q = (v * inv).round() as i8;
                sum += *q as i32;
            }
            out.push(Q8_1 { d, s: d * sum as f32, qs });
        }
    }
    out
}

/// A weight block type with a dot product against Q8_1 activation blocks, one row or four at a time.
trait Kernel: Sized + Sync {
    fn dot(w: &[Self], x: &[Q8_1]) -> f32;
    fn dot4(w: &[Self], x: [&[Q8_1]; 4]) -> [f32; 4];
}

impl Kernel for Q4_1 {
    fn dot(w: &[Self], x: &[Q8_1]) -> f32 {
        dot_q4_1(w, x)
    }
    fn dot4(w: &[Self], x: [&[Q8_1]; 4]) -> [f32; 4] {
        dot_q4_1_x4(w, x)
    }
}

impl Kernel for Q8_0 {
    fn dot(w: &[Self], x: &[Q8_1]) -> f32 {
        dot_q8_0_x4(w, [x, x, x, x])[0]
    }
    fn dot4(w: &[Self], x: [&[Q8_1]; 4]) -> [f32; 4] {
        dot_q8_0_x4(w, x)
    }
}

/// One weight row against every activation row (`xq` holds dst.len() rows of w.len() blocks).
fn dot_many<W: Kernel>(w: &[W], xq: &[Q8_1], dst: &mut [f32]) {
    let bpr = w.len();
    let mut i = 0;
    while i + 4 <= dst.len() {
        let rows = [0, 1, 2, 3].map(|j| &xq[(i + j) * bpr..(i + j + 1) * bpr]);
        dst[i..i + 4].copy_from_slice(&W::dot4(w, rows));
        i += 4;
    }
    for (j, d) in dst.iter_mut().enumerate().skip(i) {
        *d = W::dot(w, &xq[j * bpr..(j + 1) * bpr]);
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
fn dot_q4_1(w: &[Q4_1], x: &[Q8_1]) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: the target features are enabled at compile time (see the cfg); loads are unaligned.
    unsafe {
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0.0f32;
        for (wb, xb) in w.iter().zip(x) {
            let bytes = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
            let both = _mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes);
            let q = _mm256_and_si256(both, low);
            let xs = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
            let pairs = _mm256_maddubs_epi16(q, xs);
            let sums = _mm256_madd_epi16(pairs, ones);
            let dw = f16::from_bits(wb.d).to_f32();
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(dw * xb.d), acc);
            mins += f16::from_bits(wb.m).to_f32() * xb.s;
        }
        let hi = _mm256_extractf128_ps(acc, 1);
        let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
        _mm_cvtss_f32(s1) + mins
    }
}

/// Four activation rows at once: each weight block is unpacked once and used four times.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
fn dot_q4_1_x4(w: &[Q4_1], x: [&[Q8_1]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    // SAFETY: as in `dot_q4_1`.
    unsafe {
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = [0.0f32; 4];
        for (b, wb) in w.iter().enumerate() {
            let bytes = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
            let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes), low);
            let dw = f16::from_bits(wb.d).to_f32();
            let mw = f16::from_bits(wb.m).to_f32();
            for j in 0..4 {
                let xb = &x[j][b];
                let xs = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xs), ones);
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(dw * xb.d), acc[j]);
                mins[j] += mw * xb.s;
            }
        }
        let mut out = [0.0f32; 4];
        for j in 0..4 {
            let hi = _mm256_extractf128_ps(acc[j], 1);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(acc[j]), hi);
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
            out[j] = _mm_cvtss_f32(s1) + mins[j];
        }
        out
    }
}

/// Q8_0 weights: signed x signed via the sign trick (|w| as unsigned, x with w's sign).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
fn dot_q8_0_x4(w: &[Q8_0], x: [&[Q8_1]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    // SAFETY: as in `dot_q4_1`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (b, wb) in w.iter().enumerate() {
            let qw = _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i);
            let aw = _mm256_sign_epi8(qw, qw);
            let dw = f16::from_bits(wb.d).to_f32();
            for j in 0..4 {
                let xb = &x[j][b];
                let xs = _mm256_sign_epi8(_mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i), qw);
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones);
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(dw * xb.d), acc[j]);
            }
        }
        acc.map(|a| {
            let hi = _mm256_extractf128_ps(a, 1);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(a), hi);
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
        })
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
fn dot_q8_0_x4(w: &[Q8_0], x: [&[Q8_1]; 4]) -> [f32; 4] {
    x.map(|xr| {
        w.iter()
            .zip(xr)
            .map(|(wb, xb)| {
                let isum: i32 = wb.qs.iter().zip(&xb.qs).map(|(a, b)| *a as i32 * *b as i32).sum();
                f16::from_bits(wb.d).to_f32() * xb.d * isum as f32
            })
            .sum()
    })
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
fn dot_q4_1(w: &[Q4_1], x: &[Q8_1]) -> f32 {
    dot_q4_1_scalar(w, x)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
fn dot_q4_1_x4(w: &[Q4_1], x: [&[Q8_1]; 4]) -> [f32; 4] {
    x.map(|xr| dot_q4_1_scalar(w, xr))
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"), allow(dead_code))]
fn dot_q4_1_scalar(w: &[Q4_1], x: &[Q8_1]) -> f32 {
    let mut total = 0.0f32;
    for (wb, xb) in w.iter().zip(x) {
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (wb.qs[j] & 0x0F) as i32 * xb.qs[j] as i32;
            isum += (wb.qs[j] >> 4) as i32 * xb.qs[j + 16] as i32;
        }
        total += f16::from_bits(wb.d).to_f32() * xb.d * isum as f32 + f16::from_bits(wb.m).to_f32() * xb.s;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Every dtype against the dequantized f32 product, over odd shapes (m = 1, 3; rows not a multiple
    /// of the task size). Tolerance: activation quantization (8-bit) error, relative to the row scale.
    #[test]
    fn matches_dequantized_reference() {
        let (rows, cols) = (77, 256);
        let w = Tensor::from_vec(data(rows * cols, 7), (rows, cols), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let q = Arc::new(QTensor::quantize(&w, dtype).unwrap());
            let wd = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            let mm = QuantMatrix::new(q).unwrap();
            for m in [1, 3, 9] {
                let x = data(m * cols, 11 + m as u32);
                let got = mm.matmul(&x, m).unwrap();
                for i in 0..m {
                    for r in 0..rows {
                        let want: f32 = (0..cols).map(|c| wd[r][c] * x[i * cols + c]).sum();
                        let g = got[i * rows + r];
                        assert!((g - want).abs() < 0.05 + 0.01 * want.abs(), "{dtype:?} m{m} [{i},{r}]: {g} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn q4_1_simd_equals_scalar() {
        let (rows, cols) = (4, 128);
        let w = Tensor::from_vec(data(rows * cols, 3), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let bytes = q.data().unwrap();
        let wb: &[Q4_1] = cast(&bytes).unwrap();
        let xq = quantize_q8_1(&data(cols, 5), cols);
        for r in 0..rows {
            let row = &wb[r * 4..(r + 1) * 4];
            let (a, b) = (dot_q4_1(row, &xq), dot_q4_1_scalar(row, &xq));
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

//! CPU matmul of activations [m, k] (f32) by a GGUF-quantized weight [n, k], giving [m, n].
//!
//! Why our own: candle's CPU quantized matmul runs on a spin-waiting barrier pool that fights rayon
//! (which attention and candle's element-wise ops use) for the cores, and its Q4_1 dot product has no
//! SIMD version. Here every quantized matmul runs on rayon, split over blocks of output rows, and each
//! weight block is unpacked once and used for up to eight activation rows while it is in registers.
//!
//! Activations stay f32 (llama.cpp rounds them to 8 bits first): the product then equals the one with
//! dequantized weights up to f32 summation order, so quantized mode tracks the f32 reference closely,
//! and with the unpacking shared by several rows it costs about the same as an int8 dot product.
//!
//! Q4_0, Q4_1 and Q8_0 blocks (the common small-model formats) go through these kernels; every other
//! GGUF type uses candle's per-type `vec_dot` against 8-bit activations under the same loop.
//!
//! Block layouts (ggml), 32 values each:
//! ```text
//!   Q4_0: d f16 | 16 bytes: low nibble j = q[j], high nibble j = q[j + 16]   value = d * (q - 8)
//!   Q4_1: d f16 | m f16 | 16 bytes, nibbles as Q4_0                         value = d * q + m
//!   Q8_0: d f16 | 32 x i8                                                    value = d * q
//!   each block is dequantized once (d * q + m, in f32 as the reference does) and reused by all rows
//! ```

use std::sync::Arc;

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Output rows per rayon task: enough work to amortise scheduling, small enough to balance 2-64 cores.
const ROWS_PER_TASK: usize = 32;

/// Activation rows sharing one unpacked weight block: 8 accumulators + 4 weight registers fit the 16
/// AVX registers.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
const ROWS_PER_PASS: usize = 8;

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
            GgmlDType::Q4_0 => self.own::<Q4_0>(&data, x, m, &mut out)?,
            GgmlDType::Q4_1 => self.own::<Q4_1>(&data, x, m, &mut out)?,
            GgmlDType::Q8_0 => self.own::<Q8_0>(&data, x, m, &mut out)?,
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

    /// Block types with our own kernels, against f32 activations.
    fn own<W: Block>(&self, data: &[u8], x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let w: &[W] = cast(data)?;
        let bpr = self.cols / 32;
        run_rows(out, m, self.rows, |r, dst| dot_rows(&w[r * bpr..(r + 1) * bpr], x, dst));
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
/// weight row r. Split over weight rows: tasks fill disjoint slices of a weight-row-major buffer, which
/// is already the answer when m == 1 and is transposed once otherwise.
fn run_rows(out: &mut [f32], m: usize, n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let fill = |t: usize, chunk: &mut [f32]| {
        for (j, dst) in chunk.chunks_exact_mut(m).enumerate() {
            f(t * ROWS_PER_TASK + j, dst);
        }
    };
    if m == 1 {
        out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(t, c)| fill(t, c));
        return;
    }
    let mut by_row = vec![0.0f32; n * m];
    by_row.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(t, c)| fill(t, c));
    // Sequential writes, strided reads: the cheaper direction for the cache.
    for (i, row) in out.chunks_exact_mut(n).enumerate() {
        for (r, o) in row.iter_mut().enumerate() {
            *o = by_row[r * m + i];
        }
    }
}

/// Reinterprets candle's block storage. Its CPU storage is a `Vec` of blocks, so the alignment holds;
/// checked anyway, since a wrong cast would be undefined behaviour.
fn cast<T>(data: &[u8]) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if !data.len().is_multiple_of(size) || !(data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Error::internal("quantized weight storage has an unexpected layout"));
    }
    // SAFETY: length and alignment checked; T is a plain-old-data block struct (u16/u8/i8 fields).
    Ok(unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) })
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Q4_0 {
    d: u16,
    qs: [u8; 16],
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

/// A 32-value weight block: its integer values as f32, and (scale, min) with value = scale * q + min.
trait Block: Sized + Sync {
    /// Portable form (the non-AVX `dot_rows`).
    #[cfg_attr(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"), allow(dead_code))]
    fn unpack(&self, q: &mut [f32; 32]) -> (f32, f32);
    /// The same straight into four AVX registers.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    fn unpack_avx(&self) -> ([std::arch::x86_64::__m256; 4], f32, f32);
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
fn nibbles_avx(qs: &[u8; 16]) -> [std::arch::x86_64::__m256; 4] {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 enabled at compile time; one 16-byte load from a 16-byte array.
    unsafe {
        let bytes = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(bytes, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
        [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)].map(|v| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)))
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
fn nibbles(qs: &[u8; 16], q: &mut [f32; 32]) {
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) as f32;
        q[j + 16] = (qs[j] >> 4) as f32;
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[allow(dead_code)]
fn nibbles(qs: &[u8; 16], q: &mut [f32; 32]) {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 enabled at compile time; 16-byte load from a 16-byte array, stores into 32 floats.
    unsafe {
        let bytes = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(bytes, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
        let out = q.as_mut_ptr();
        for (o, v) in [(0, lo), (8, _mm_srli_si128(lo, 8)), (16, hi), (24, _mm_srli_si128(hi, 8))] {
            _mm256_storeu_ps(out.add(o), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)));
        }
    }
}

impl Block for Q4_0 {
    fn unpack(&self, q: &mut [f32; 32]) -> (f32, f32) {
        nibbles(&self.qs, q);
        let d = f16::from_bits(self.d).to_f32();
        (d, -8.0 * d)
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    fn unpack_avx(&self) -> ([std::arch::x86_64::__m256; 4], f32, f32) {
        let d = f16::from_bits(self.d).to_f32();
        (nibbles_avx(&self.qs), d, -8.0 * d)
    }
}

impl Block for Q4_1 {
    fn unpack(&self, q: &mut [f32; 32]) -> (f32, f32) {
        nibbles(&self.qs, q);
        (f16::from_bits(self.d).to_f32(), f16::from_bits(self.m).to_f32())
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    fn unpack_avx(&self) -> ([std::arch::x86_64::__m256; 4], f32, f32) {
        (nibbles_avx(&self.qs), f16::from_bits(self.d).to_f32(), f16::from_bits(self.m).to_f32())
    }
}

impl Block for Q8_0 {
    fn unpack(&self, q: &mut [f32; 32]) -> (f32, f32) {
        for (o, v) in q.iter_mut().zip(&self.qs) {
            *o = *v as f32;
        }
        (f16::from_bits(self.d).to_f32(), 0.0)
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    fn unpack_avx(&self) -> ([std::arch::x86_64::__m256; 4], f32, f32) {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 enabled at compile time; 8-byte loads inside the 32-byte array.
        let q = unsafe {
            [0, 8, 16, 24].map(|o| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(self.qs.as_ptr().add(o) as *const __m128i))))
        };
        (q, f16::from_bits(self.d).to_f32(), 0.0)
    }
}

/// One weight row (`w`, bpr blocks) against every activation row of `x` (dst.len() rows of 32 * bpr),
/// up to `ROWS_PER_PASS` rows per pass so each unpacked block is reused that many times.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
fn dot_rows<W: Block>(w: &[W], x: &[f32], dst: &mut [f32]) {
    let k = w.len() * 32;
    let mut q = [0.0f32; 32];
    for (i, d) in dst.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for (b, blk) in w.iter().enumerate() {
            let (scale, min) = blk.unpack(&mut q);
            let xb = &x[i * k + b * 32..i * k + b * 32 + 32];
            acc += q.iter().zip(xb).map(|(q, x)| (scale * q + min) * x).sum::<f32>();
        }
        *d = acc;
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
fn dot_rows<W: Block>(w: &[W], x: &[f32], dst: &mut [f32]) {
    let k = w.len() * 32;
    assert!(x.len() >= dst.len() * k);
    let mut i = 0;
    // Fixed row counts, so the accumulators are compile-time arrays the compiler keeps in registers.
    while i < dst.len() {
        let rows = (dst.len() - i).min(ROWS_PER_PASS);
        let out = &mut dst[i..i + rows];
        let x = &x[i * k..];
        match rows {
            8 => pass::<W, 8>(w, x, out),
            7 => pass::<W, 7>(w, x, out),
            6 => pass::<W, 6>(w, x, out),
            5 => pass::<W, 5>(w, x, out),
            4 => pass::<W, 4>(w, x, out),
            3 => pass::<W, 3>(w, x, out),
            2 => pass::<W, 2>(w, x, out),
            _ => pass::<W, 1>(w, x, out),
        }
        i += rows;
    }
}

/// R activation rows (x: R rows of 32 * w.len(), checked by the caller) against one weight row. The
/// block is dequantized once (scale * q + min, as the reference does) and then costs R x 4 FMAs.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline(always)]
fn pass<W: Block, const R: usize>(w: &[W], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = w.len() * 32;
    debug_assert!(x.len() >= R * k && out.len() == R);
    // SAFETY: AVX2/FMA are enabled at compile time (cfg above); `dot_rows` asserted that x holds R
    // full rows from here, so every 8-float load at row j < R, block b < w.len() stays inside x.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for (b, blk) in w.iter().enumerate() {
            let (qv, scale, min) = blk.unpack_avx();
            let (sv, mv) = (_mm256_set1_ps(scale), _mm256_set1_ps(min));
            let wv = qv.map(|q| _mm256_fmadd_ps(q, sv, mv));
            for (j, a) in acc.iter_mut().enumerate() {
                let p = x.as_ptr().add(j * k + b * 32);
                // The block's partial sum starts fresh, so only one add per block is loop-carried
                // (a chain of four FMAs through acc would make a single row latency-bound).
                let mut t = _mm256_mul_ps(wv[0], _mm256_loadu_ps(p));
                t = _mm256_fmadd_ps(wv[1], _mm256_loadu_ps(p.add(8)), t);
                t = _mm256_fmadd_ps(wv[2], _mm256_loadu_ps(p.add(16)), t);
                t = _mm256_fmadd_ps(wv[3], _mm256_loadu_ps(p.add(24)), t);
                *a = _mm256_add_ps(*a, t);
            }
        }
        for j in 0..R {
            let hi = _mm256_extractf128_ps(acc[j], 1);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(acc[j]), hi);
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            out[j] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Every dtype against the dequantized f32 product, over odd shapes (m = 1, 3, 9; rows not a
    /// multiple of the task size). Our own kernels keep f32 activations, so they must agree to f32
    /// rounding; candle's K-quant path rounds activations to 8 bits, hence its looser bound.
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
                        let own = matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0);
                        let tol = if own { 1e-4 * (1.0 + want.abs()) } else { 0.05 + 0.01 * want.abs() };
                        assert!((g - want).abs() < tol, "{dtype:?} m{m} [{i},{r}]: {g} vs {want}");
                    }
                }
            }
        }
    }

    /// The block kernels on their own, for every row count 1..=20 (each fixed-size pass and the
    /// remainders), against the dequantized product.
    #[test]
    fn kernel_variants_agree() {
        let (rows, cols) = (5, 128);
        let w = Tensor::from_vec(data(rows * cols, 9), (rows, cols), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let wd = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            let bytes = q.data().unwrap();
            for m in 1..=20 {
                let x = data(m * cols, m as u32);
                for r in 0..rows {
                    let want: Vec<f32> = (0..m).map(|i| (0..cols).map(|c| wd[r][c] * x[i * cols + c]).sum()).collect();
                    let mut got = vec![0.0f32; m];
                    let bpr = cols / 32;
                    match dtype {
                        GgmlDType::Q4_0 => {
                            let wb: &[Q4_0] = cast(&bytes).unwrap();
                            dot_rows(&wb[r * bpr..(r + 1) * bpr], &x, &mut got);
                        }
                        GgmlDType::Q4_1 => {
                            let wb: &[Q4_1] = cast(&bytes).unwrap();
                            dot_rows(&wb[r * bpr..(r + 1) * bpr], &x, &mut got);
                        }
                        _ => {
                            let wb: &[Q8_0] = cast(&bytes).unwrap();
                            dot_rows(&wb[r * bpr..(r + 1) * bpr], &x, &mut got);
                        }
                    }
                    for i in 0..m {
                        let tol = 1e-4 * (1.0 + want[i].abs());
                        assert!((got[i] - want[i]).abs() < tol, "{dtype:?} m{m} r{r} row {i}: {} vs {}", got[i], want[i]);
                    }
                }
            }
        }
    }
}

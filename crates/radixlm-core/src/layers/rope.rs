//! Rotary position embedding on packed token rows, in place. Tables are computed per forward for the
//! positions in the batch (one sin/cos per token and pair), then reused by every layer.

use crate::config::RopeStyle;

pub struct RopeTable {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(inv_freq: &[f32], positions: &[usize]) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in inv_freq {
                // f64 angle: positions reach 10^5 and f32 loses the low bits of p * f there.
                let (s, c) = (p as f64 * f as f64).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        RopeTable { half, cos, sin }
    }

    /// Rotates `x` laid out as [tokens, heads, 2 * half].
    pub fn apply(&self, x: &mut [f32], heads: usize, style: RopeStyle) {
        let hd = 2 * self.half;
        for (t, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let cos = &self.cos[t * self.half..(t + 1) * self.half];
            let sin = &self.sin[t * self.half..(t + 1) * self.half];
            for head in row.chunks_exact_mut(hd) {
                match style {
                    RopeStyle::Half => {
                        let (a, b) = head.split_at_mut(self.half);
                        for i in 0..self.half {
                            let (x0, x1) = (a[i], b[i]);
                            a[i] = x0 * cos[i] - x1 * sin[i];
                            b[i] = x0 * sin[i] + x1 * cos[i];
                        }
                    }
                    RopeStyle::Interleaved => {
                        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                            let (x0, x1) = (pair[0], pair[1]);
                            pair[0] = x0 * cos[i] - x1 * sin[i];
                            pair[1] = x0 * sin[i] + x1 * cos[i];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let inv = [1.0f32, 0.1];
        let table = RopeTable::new(&inv, &[0, 5]);
        for style in [RopeStyle::Half, RopeStyle::Interleaved] {
            let mut x = vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
            table.apply(&mut x, 1, style);
            assert_eq!(&x[..4], &[1.0, 2.0, 3.0, 4.0]);
            let n0: f32 = x[..4].iter().map(|v| v * v).sum();
            let n1: f32 = x[4..].iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
        }
    }

    #[test]
    fn interleaved_equals_half_on_permuted_rows() {
        // Interleaved rotation of (a0,b0,a1,b1) == half rotation of (a0,a1,b0,b1), reordered back.
        let table = RopeTable::new(&[0.7, 0.2], &[3]);
        let mut inter = vec![1.0, 2.0, 3.0, 4.0];
        let mut half = vec![1.0, 3.0, 2.0, 4.0];
        table.apply(&mut inter, 1, RopeStyle::Interleaved);
        table.apply(&mut half, 1, RopeStyle::Half);
        let back = [half[0], half[2], half[1], half[3]];
        for (a, b) in inter.iter().zip(back) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}

//! Rotary embedding parameters and their host-side tables (see kernels/rope.cu for the math).
//!
//! Model code builds `inv_freq` (any rope scaling, e.g. Llama 3's, is applied to it there) and either
//! uploads it as is ([`RopeFreqs::InvFreq`]: no table, sin/cos computed per token) or expands it into
//! a cos/sin table ([`RopeFreqs::CosSin`]: one f32 row of `rot_dim` per position; attention scaling
//! such as YaRN's mscale can be multiplied into it).

/// Which dims form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (i, i + rot_dim/2): HF Llama / Qwen2 (`rotate_half`).
    Neox,
    /// Pairs (2i, 2i + 1): GPT-J, and llama.cpp's GGUF Llama (whose q/k weights are permuted for it).
    Interleaved,
}

/// Where the rotation angles come from. `T` is `&[f32]` for the CPU twin, a device view for the GPU.
#[derive(Clone, Copy, Debug)]
pub enum RopeFreqs<T> {
    /// `[max_pos, rot_dim]`: cos of the rot_dim/2 angles, then their sin. Positions are clamped into
    /// `[0, max_pos)`.
    CosSin { table: T, max_pos: usize },
    /// `[rot_dim/2]`: angle i of position p is `(p as f32) * inv_freq[i]` (f32 product, as HF).
    InvFreq(T),
}

#[derive(Clone, Copy, Debug)]
pub struct Rope<T> {
    pub style: RopeStyle,
    /// Rotated dims per head (even, <= head_dim); the rest pass through (partial rotary).
    pub rot_dim: usize,
    pub freqs: RopeFreqs<T>,
}

/// `inv_freq[i] = theta^(-2i / rot_dim)`, computed in f64 and rounded once.
pub fn inv_freq(theta: f64, rot_dim: usize) -> Vec<f32> {
    (0..rot_dim / 2)
        .map(|i| theta.powf(-2.0 * i as f64 / rot_dim as f64) as f32)
        .collect()
}

/// The angle the kernels use: an f32 product, like HF's `inv_freq @ position_ids` in float32.
pub fn angle(pos: i32, inv_freq: f32) -> f32 {
    pos as f32 * inv_freq
}

/// `[max_pos, 2 * inv_freq.len()]` table: per position, cos of every angle then sin of every angle
/// (sin/cos evaluated in f64 on the f32 angle, so the table is exact to f32 rounding).
pub fn cos_sin_table(inv_freq: &[f32], max_pos: usize) -> Vec<f32> {
    let mut table = Vec::with_capacity(max_pos * 2 * inv_freq.len());
    for p in 0..max_pos {
        let angles = inv_freq.iter().map(|&f| angle(p as i32, f) as f64);
        table.extend(angles.clone().map(|a| a.cos() as f32));
        table.extend(angles.map(|a| a.sin() as f32));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_cos_then_sin() {
        let f = inv_freq(10000.0, 4);
        assert_eq!(f, [1.0, 0.01]);
        let t = cos_sin_table(&f, 3);
        assert_eq!(t.len(), 12);
        assert_eq!(&t[0..4], &[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(t[4], 1f64.cos() as f32);
        assert_eq!(t[7], (0.01f32 as f64).sin() as f32);
    }
}

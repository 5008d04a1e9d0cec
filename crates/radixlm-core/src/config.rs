//! The architecture-independent model configuration every model file fills in, from a Hugging Face
//! `config.json` or from GGUF metadata. Frozen after load; derived values are methods.

use crate::error::{Error, Result};

/// How RoPE pairs dimensions. HF checkpoints rotate the two halves of a head (NeoX style); llama.cpp's
/// converter permutes Llama's Q/K rows so GGUF Llama weights need adjacent pairs rotated instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Half,
    Interleaved,
}

/// Llama 3.x frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    /// Per-pair divisors of the RoPE frequencies: how llama.cpp's converter stores Llama 3 scaling in a
    /// GGUF (tensor `rope_freqs.weight`, head_dim/2 values; no scaling metadata then).
    pub rope_freq_factors: Option<Vec<f32>>,
    pub rope_style: RopeStyle,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
}

/// Upper bounds that keep a hostile config from asking for absurd allocations.
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 1024;

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::invalid_model(format!("config: {what}")));
        let in_range = |v: usize| v > 0 && v <= MAX_DIM;
        if !in_range(self.vocab_size) || self.vocab_size > 1 << 24 {
            return bad("vocab_size out of range");
        }
        if !in_range(self.hidden_size) || !in_range(self.intermediate_size) {
            return bad("hidden_size/intermediate_size out of range");
        }
        if self.num_layers == 0 || self.num_layers > MAX_LAYERS {
            return bad("num_hidden_layers out of range");
        }
        if !in_range(self.num_heads) || !in_range(self.num_kv_heads) || !in_range(self.head_dim) {
            return bad("attention head counts out of range");
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad("num_attention_heads must be a multiple of num_key_value_heads");
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad("head_dim must be even for RoPE");
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad("rms_norm_eps must be positive");
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad("rope_theta must be positive");
        }
        if self.max_position_embeddings == 0 {
            return bad("max_position_embeddings must be positive");
        }
        if let Some(s) = &self.rope_scaling {
            let ok = [s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings]
                .iter()
                .all(|v| v.is_finite() && *v > 0.0)
                && s.high_freq_factor > s.low_freq_factor;
            if !ok {
                return bad("llama3 rope scaling needs positive factors with high_freq_factor > low_freq_factor");
            }
        }
        if let Some(f) = &self.rope_freq_factors {
            if f.len() != self.head_dim / 2 || self.rope_scaling.is_some() {
                return bad("rope frequency factors must be head_dim/2 values, without other rope scaling");
            }
        }
        // Whatever the source of each number, the frequencies the kernels get must be usable: a subnormal
        // divisor or a tiny theta would give inf, and inf * position 0 is NaN.
        if !self.rope_inv_freq().iter().all(|f| f.is_finite() && *f > 0.0) {
            return bad("rope frequencies are not finite and positive (rope_theta or scaling factors)");
        }
        Ok(())
    }

    pub fn q_size(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_size(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Inverse frequencies per rotated pair, with Llama 3 scaling applied when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let half = self.head_dim / 2;
        (0..half)
            .map(|i| {
                let f = 1.0 / self.rope_theta.powf(2.0 * i as f64 / self.head_dim as f64);
                let f = match &self.rope_scaling {
                    Some(s) => llama3_scale(f, s),
                    None => f,
                };
                match &self.rope_freq_factors {
                    Some(div) => (f / div[i] as f64) as f32,
                    None => f as f32,
                }
            })
            .collect()
    }
}

fn llama3_scale(freq: f64, s: &Llama3Scaling) -> f64 {
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / s.factor
    } else {
        let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama31_like(scaling: Option<Llama3Scaling>) -> ModelConfig {
        ModelConfig {
            arch: "llama".into(),
            vocab_size: 128256,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_layers: 32,
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 500000.0,
            rope_scaling: scaling,
            rope_freq_factors: None,
            rope_style: RopeStyle::Half,
            max_position_embeddings: 131072,
            tie_word_embeddings: false,
            attention_bias: false,
        }
    }

    /// Llama 3.1's scaling (factor 8, low 1, high 4, original 8192): wavelengths below 8192/4 keep
    /// their frequency, above 8192/1 are divided by 8, and in between the blend is monotonic.
    #[test]
    fn llama3_scaling_bands() {
        let s = Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 };
        let plain = llama31_like(None).rope_inv_freq();
        let scaled = llama31_like(Some(s)).rope_inv_freq();
        let mut seen = [false; 3];
        for (i, (&p, &q)) in plain.iter().zip(&scaled).enumerate() {
            let wavelen = 2.0 * std::f64::consts::PI / p as f64;
            let ratio = q as f64 / p as f64;
            if wavelen < 2048.0 {
                assert!((ratio - 1.0).abs() < 1e-6, "pair {i} should be unscaled");
                seen[0] = true;
            } else if wavelen > 8192.0 {
                assert!((ratio - 0.125).abs() < 1e-6, "pair {i} should be divided by 8");
                seen[2] = true;
            } else {
                assert!(ratio < 1.0 && ratio > 0.125, "pair {i} should be blended, ratio {ratio}");
                seen[1] = true;
            }
        }
        assert_eq!(seen, [true; 3], "head_dim 128 at theta 5e5 spans all three bands");
        // First pair is 1.0 (theta^0); the last is theta^(-126/128) / 8.
        assert_eq!(scaled[0], 1.0);
        let last = 500000f64.powf(-126.0 / 128.0) / 8.0;
        assert!((scaled[63] as f64 - last).abs() / last < 1e-5);
    }

    /// llama.cpp's form of the same scaling (frequency divisors per pair) gives the same frequencies, and
    /// divisors from a file are checked like any other untrusted field.
    #[test]
    fn rope_freq_factors_divide_and_are_validated() {
        let s = Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 };
        let plain = llama31_like(None).rope_inv_freq();
        let scaled = llama31_like(Some(s)).rope_inv_freq();
        let mut c = llama31_like(None);
        c.rope_freq_factors = Some(plain.iter().zip(&scaled).map(|(p, q)| p / q).collect());
        assert!(c.validate().is_ok());
        for (a, b) in c.rope_inv_freq().iter().zip(&scaled) {
            assert!((a - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}");
        }
        for bad in [vec![1.0; 63], { let mut v = vec![1.0; 64]; v[5] = 0.0; v }, { let mut v = vec![1.0; 64]; v[0] = f32::NAN; v }] {
            c.rope_freq_factors = Some(bad);
            assert_eq!(c.validate().unwrap_err().code(), "ERR_INVALID_MODEL");
        }
    }

    #[test]
    fn validation_rejects_inconsistent_heads() {
        let mut c = llama31_like(None);
        c.num_kv_heads = 5;
        assert_eq!(c.validate().unwrap_err().code(), "ERR_INVALID_MODEL");
        let mut c = llama31_like(None);
        c.head_dim = 0;
        assert!(c.validate().is_err());
        assert!(llama31_like(None).validate().is_ok());
    }
}

//! RoPE scaling of a GGUF file, as llama.cpp writes and reads it (`{arch}.rope.*` metadata):
//! - Llama 3 scaling: its converter stores per-pair frequency divisors as the tensor `rope_freqs.weight`
//!   and writes no scaling metadata; ignoring the tensor runs Llama 3.x with unscaled low frequencies.
//!   A `llama3` type in metadata (other writers) is read as the factors transformers uses, unless the
//!   tensor is there too (then the tensor is what llama.cpp applies).
//! - Anything else (linear, yarn, longrope; `rope.scale_linear` in old files): not implemented, so an
//!   error unless its factor is 1 (or 0, which llama.cpp reads as 1), where it changes nothing.

use crate::config::Llama3Scaling;
use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;
use candle_core::Device;

/// (llama3 scaling from metadata, per-pair frequency divisors from `rope_freqs.weight`).
pub(crate) fn gguf_rope(file: &GgufFile, arch: &str, head_dim: usize) -> Result<(Option<Llama3Scaling>, Option<Vec<f32>>)> {
    let key = |k: &str| format!("{arch}.rope.{k}");
    let factors = match file.content.tensor_infos.get("rope_freqs.weight") {
        None => None,
        Some(info) => {
            // Checked before reading: the tensor is untrusted and only head_dim/2 values are meaningful.
            if info.shape.elem_count() != head_dim / 2 {
                return Err(Error::invalid_model(format!(
                    "GGUF tensor rope_freqs.weight has {} values, want head_dim/2 = {}",
                    info.shape.elem_count(),
                    head_dim / 2
                )));
            }
            let t = file.tensor("rope_freqs.weight", &Device::Cpu)?;
            let v = t.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>());
            Some(v.map_err(|e| Error::invalid_model(format!("GGUF tensor rope_freqs.weight: {e}")))?)
        }
    };
    let kind = file.meta_str(&key("scaling.type"))?;
    let factor = match file.meta_f32(&key("scaling.factor"))? {
        Some(f) => f,
        None => file.meta_f32(&key("scale_linear"))?.unwrap_or(1.0),
    };
    let scaling = match kind.as_deref() {
        Some("llama3") if factors.is_none() => Some(Llama3Scaling {
            factor: factor as f64,
            low_freq_factor: file.meta_f32(&key("scaling.low_freq_factor"))?.unwrap_or(1.0) as f64,
            high_freq_factor: file.meta_f32(&key("scaling.high_freq_factor"))?.unwrap_or(4.0) as f64,
            original_max_position_embeddings: file.meta_u32(&key("scaling.original_context_length"))?.unwrap_or(8192) as f64,
        }),
        Some("llama3") | Some("none") => None,
        _ if factor == 1.0 || factor == 0.0 => None,
        // llama.cpp reads a factor without a type as linear scaling.
        other => {
            let name = other.unwrap_or("linear");
            return Err(Error::invalid_model(format!("GGUF rope scaling `{name}` (factor {factor}) is not supported")));
        }
    };
    Ok((scaling, factors))
}

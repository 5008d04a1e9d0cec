//! Llama family (Llama 2, Llama 3.x with `llama3` rope scaling, SmolLM2): pre-norm decoder, GQA, SwiGLU,
//! RMSNorm, RoPE. https://huggingface.co/docs/transformers/model_doc/llama

use super::{gguf_common, hf_common, Architecture, HfFields};
use crate::config::{Llama3Scaling, ModelConfig, RopeStyle};
use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;
use candle_core::Device;

pub const ARCH: Architecture = Architecture {
    gguf_name: "llama",
    hf_names: &["LlamaForCausalLM", "llama"],
    from_hf,
    from_gguf,
};

fn from_hf(json: &serde_json::Value) -> Result<ModelConfig> {
    let f = HfFields(json);
    let mut cfg = hf_common(json, "llama", 10_000.0, 4096)?;
    if let Some(hd) = f.opt_usize("head_dim")? {
        cfg.head_dim = hd;
    }
    cfg.attention_bias = f.bool_or("attention_bias", false);
    cfg.validate()?;
    Ok(cfg)
}

fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let mut cfg = gguf_common(file, "llama", RopeStyle::Interleaved)?;
    // llama.cpp's converter keeps Llama 3 scaling as per-pair frequency divisors in a tensor and writes no
    // scaling metadata for it; ignoring the tensor runs Llama 3.x with unscaled low frequencies.
    if file.has_tensor("rope_freqs.weight") {
        let t = file.tensor("rope_freqs.weight", &Device::Cpu)?;
        let f = t.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>());
        cfg.rope_freq_factors =
            Some(f.map_err(|e| Error::invalid_model(format!("GGUF tensor rope_freqs.weight: {e}")))?);
    }
    let kind = file.meta_str("llama.rope.scaling.type")?;
    let factor = file.meta_f32("llama.rope.scaling.factor")?.unwrap_or(1.0);
    match kind.as_deref() {
        Some("llama3") if cfg.rope_freq_factors.is_none() => {
            let orig = file.meta_u32("llama.rope.scaling.original_context_length")?.unwrap_or(8192);
            cfg.rope_scaling = Some(Llama3Scaling {
                factor: factor as f64,
                low_freq_factor: file.meta_f32("llama.rope.scaling.low_freq_factor")?.unwrap_or(1.0) as f64,
                high_freq_factor: file.meta_f32("llama.rope.scaling.high_freq_factor")?.unwrap_or(4.0) as f64,
                original_max_position_embeddings: orig as f64,
            });
        }
        Some("llama3") | Some("none") => {}
        // llama.cpp reads a factor without a type as linear scaling.
        None if factor == 1.0 => {}
        other => {
            let name = other.unwrap_or("linear");
            return Err(Error::invalid_model(format!("GGUF rope scaling `{name}` is not supported")));
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

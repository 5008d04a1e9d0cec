//! Llama family (Llama 2, Llama 3.x with `llama3` rope scaling, SmolLM2): pre-norm decoder, GQA, SwiGLU,
//! RMSNorm, RoPE. https://huggingface.co/docs/transformers/model_doc/llama

use super::{gguf_common, hf_common, Architecture, HfFields};
use crate::config::{Llama3Scaling, ModelConfig, RopeStyle};
use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;

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
    cfg.rope_scaling = rope_scaling(json)?;
    cfg.attention_bias = f.bool_or("attention_bias", false);
    cfg.validate()?;
    Ok(cfg)
}

fn rope_scaling(json: &serde_json::Value) -> Result<Option<Llama3Scaling>> {
    let Some(s) = json.get("rope_scaling").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|v| v.as_str());
    match kind {
        Some("llama3") => {
            let f = HfFields(s);
            let scaling = Llama3Scaling {
                factor: f.f64_or("factor", 8.0)?,
                low_freq_factor: f.f64_or("low_freq_factor", 1.0)?,
                high_freq_factor: f.f64_or("high_freq_factor", 4.0)?,
                original_max_position_embeddings: f.f64_or("original_max_position_embeddings", 8192.0)?,
            };
            if !(scaling.factor > 0.0 && scaling.high_freq_factor > scaling.low_freq_factor) {
                return Err(Error::invalid_model("rope_scaling: invalid llama3 factors"));
            }
            Ok(Some(scaling))
        }
        Some("default") | None => Ok(None),
        Some(other) => Err(Error::invalid_model(format!("rope_scaling type `{other}` is not supported"))),
    }
}

fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let mut cfg = gguf_common(file, "llama", RopeStyle::Interleaved)?;
    // llama.cpp stores Llama 3 scaling as metadata; absent for models without it.
    if let Some(factor) = file.meta_f32("llama.rope.scaling.factor")? {
        let orig = file.meta_u32("llama.rope.scaling.original_context_length")?.unwrap_or(8192);
        if file.meta_str("llama.rope.scaling.type")?.as_deref() == Some("llama3") || factor > 1.0 {
            cfg.rope_scaling = Some(Llama3Scaling {
                factor: factor as f64,
                low_freq_factor: file.meta_f32("llama.rope.scaling.low_freq_factor")?.unwrap_or(1.0) as f64,
                high_freq_factor: file.meta_f32("llama.rope.scaling.high_freq_factor")?.unwrap_or(4.0) as f64,
                original_max_position_embeddings: orig as f64,
            });
        }
    }
    Ok(cfg)
}

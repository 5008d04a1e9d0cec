//! Llama family (Llama 2, Llama 3.x with `llama3` rope scaling, SmolLM2): pre-norm decoder, GQA, SwiGLU,
//! RMSNorm, RoPE. https://huggingface.co/docs/transformers/model_doc/llama

use super::{gguf_common, hf_common, Architecture, HfFields};
use crate::config::{Llama3Scaling, ModelConfig, RopeStyle};
use crate::error::Result;
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
    cfg.attention_bias = f.bool_or("attention_bias", false);
    cfg.validate()?;
    Ok(cfg)
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

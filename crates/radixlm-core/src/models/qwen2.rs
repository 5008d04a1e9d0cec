//! Qwen2 / Qwen2.5: the Llama decoder with biases on the Q/K/V projections and (small sizes) tied
//! embeddings. https://huggingface.co/docs/transformers/model_doc/qwen2

use super::{gguf_common, Architecture, HfFields};
use crate::config::{ModelConfig, RopeStyle};
use crate::error::Result;
use crate::model::gguf::GgufFile;

pub const ARCH: Architecture = Architecture {
    gguf_name: "qwen2",
    hf_names: &["Qwen2ForCausalLM", "qwen2"],
    from_hf,
    from_gguf,
};

fn from_hf(json: &serde_json::Value) -> Result<ModelConfig> {
    let f = HfFields(json);
    let hidden_size = f.usize("hidden_size")?;
    let num_heads = f.usize("num_attention_heads")?;
    let cfg = ModelConfig {
        arch: "qwen2".into(),
        vocab_size: f.usize("vocab_size")?,
        hidden_size,
        intermediate_size: f.usize("intermediate_size")?,
        num_layers: f.usize("num_hidden_layers")?,
        num_heads,
        num_kv_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(num_heads),
        head_dim: hidden_size / num_heads.max(1),
        rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta: f.f64_or("rope_theta", 1_000_000.0)?,
        rope_scaling: None,
        rope_style: RopeStyle::Half,
        max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(32768),
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false),
        attention_bias: true,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    // llama.cpp does not permute Qwen2's Q/K, so GGUF keeps the NeoX (half) rotation.
    gguf_common(file, "qwen2", RopeStyle::Half)
}

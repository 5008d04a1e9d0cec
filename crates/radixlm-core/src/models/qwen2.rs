//! Qwen2 / Qwen2.5: the Llama decoder with biases on the Q/K/V projections and (small sizes) tied
//! embeddings. https://huggingface.co/docs/transformers/model_doc/qwen2

use super::{gguf_common, hf_common, Architecture};
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
    let mut cfg = hf_common(json, "qwen2", 1_000_000.0, 32768)?;
    cfg.attention_bias = true;
    cfg.validate()?;
    Ok(cfg)
}

fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    // llama.cpp does not permute Qwen2's Q/K, so GGUF keeps the NeoX (half) rotation.
    gguf_common(file, "qwen2", RopeStyle::Half)
}

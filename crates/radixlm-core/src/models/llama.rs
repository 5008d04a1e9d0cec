//! Llama family (Llama 2, Llama 3.x with `llama3` rope scaling, SmolLM2): pre-norm decoder, GQA, SwiGLU,
//! RMSNorm, RoPE. https://huggingface.co/docs/transformers/model_doc/llama

use super::{gguf_common, hf_common, Architecture, HfFields};
use crate::config::{ModelConfig, RopeStyle};
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
    gguf_common(file, "llama", RopeStyle::Interleaved)
}

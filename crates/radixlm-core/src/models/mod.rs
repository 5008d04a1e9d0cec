//! Architecture registry. Each architecture is one file that turns a Hugging Face `config.json` or GGUF
//! metadata into a `ModelConfig`; the decoder itself is shared (`layers::decoder`). Adding an
//! architecture = one file + one line in `REGISTRY`.

pub(crate) mod gguf_rope;
mod hf_rope;
mod llama;
mod qwen2;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;

pub struct Architecture {
    /// `general.architecture` in GGUF files.
    pub gguf_name: &'static str,
    /// `architectures[0]` / `model_type` values in `config.json`.
    pub hf_names: &'static [&'static str],
    pub from_hf: fn(&serde_json::Value) -> Result<ModelConfig>,
    pub from_gguf: fn(&GgufFile) -> Result<ModelConfig>,
}

const REGISTRY: &[&Architecture] = &[&llama::ARCH, &qwen2::ARCH];

pub fn config_from_hf(json: &serde_json::Value) -> Result<ModelConfig> {
    let names: Vec<&str> = json
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let model_type = json.get("model_type").and_then(|v| v.as_str());
    let arch = REGISTRY.iter().find(|a| {
        names.iter().any(|n| a.hf_names.contains(n)) || model_type.is_some_and(|m| a.hf_names.contains(&m))
    });
    match arch {
        Some(a) => (a.from_hf)(json),
        None => Err(Error::invalid_model(format!(
            "unsupported architecture {names:?} (model_type {model_type:?}); supported: {}",
            supported()
        ))),
    }
}

pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let name = file
        .meta_str("general.architecture")?
        .ok_or_else(|| Error::invalid_model("GGUF metadata lacks general.architecture"))?;
    match REGISTRY.iter().find(|a| a.gguf_name == name) {
        Some(a) => (a.from_gguf)(file),
        None => Err(Error::invalid_model(format!(
            "unsupported architecture `{name}`; supported: {}",
            supported()
        ))),
    }
}

fn supported() -> String {
    REGISTRY.iter().map(|a| a.gguf_name).collect::<Vec<_>>().join(", ")
}

/// Reads `config.json` fields shared by Llama-like architectures.
pub(crate) struct HfFields<'a>(pub &'a serde_json::Value);

impl HfFields<'_> {
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| Error::invalid_model(format!("config.json lacks `{key}`")))
    }
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| Error::invalid_model(format!("config.json `{key}` is not a non-negative integer"))),
        }
    }
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.0.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| Error::invalid_model(format!("config.json `{key}` is not a number"))),
        }
    }
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        self.0.get(key).and_then(|v| v.as_bool()).unwrap_or(default)
    }
}

/// `config.json` fields shared by Llama-like architectures; each architecture file then adjusts what
/// differs (biases, head_dim rules).
pub(crate) fn hf_common(json: &serde_json::Value, arch: &str, rope_theta_default: f64, max_pos_default: usize) -> Result<ModelConfig> {
    let f = HfFields(json);
    let hidden_size = f.usize("hidden_size")?;
    let num_heads = f.usize("num_attention_heads")?;
    let (rope_theta, rope_scaling) = hf_rope::hf_rope(json, rope_theta_default)?;
    Ok(ModelConfig {
        arch: arch.into(),
        vocab_size: f.usize("vocab_size")?,
        hidden_size,
        intermediate_size: f.usize("intermediate_size")?,
        num_layers: f.usize("num_hidden_layers")?,
        num_heads,
        num_kv_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(num_heads),
        head_dim: hidden_size / num_heads.max(1),
        rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta,
        rope_scaling,
        rope_freq_factors: None,
        rope_style: crate::config::RopeStyle::Half,
        max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(max_pos_default),
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false),
        attention_bias: false,
    })
}

/// GGUF metadata keys are `{arch}.{key}`; all Llama-like architectures share this set.
pub(crate) fn gguf_common(
    file: &GgufFile,
    arch: &str,
    rope_style: crate::config::RopeStyle,
) -> Result<ModelConfig> {
    let req = |key: &str| -> Result<usize> {
        file.meta_u32(&format!("{arch}.{key}"))?
            .map(|v| v as usize)
            .ok_or_else(|| Error::invalid_model(format!("GGUF metadata lacks `{arch}.{key}`")))
    };
    let hidden_size = req("embedding_length")?;
    let num_heads = req("attention.head_count")?;
    let num_kv_heads = file
        .meta_u32(&format!("{arch}.attention.head_count_kv"))?
        .map(|v| v as usize)
        .unwrap_or(num_heads);
    let head_dim = match file.meta_u32(&format!("{arch}.attention.key_length"))? {
        Some(v) => v as usize,
        None if num_heads > 0 => hidden_size / num_heads,
        None => 0,
    };
    let embd = file
        .content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims().to_vec())
        .ok_or_else(|| Error::invalid_model("missing tensor token_embd.weight"))?;
    let vocab_size = match file.meta_u32(&format!("{arch}.vocab_size"))? {
        Some(v) => v as usize,
        None => embd.first().copied().unwrap_or(0),
    };
    let (rope_scaling, rope_freq_factors) = gguf_rope::gguf_rope(file, arch, head_dim)?;
    let cfg = ModelConfig {
        arch: arch.to_string(),
        vocab_size,
        hidden_size,
        intermediate_size: req("feed_forward_length")?,
        num_layers: req("block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: file
            .meta_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5) as f64,
        rope_theta: file.meta_f32(&format!("{arch}.rope.freq_base"))?.unwrap_or(10_000.0) as f64,
        rope_scaling,
        rope_freq_factors,
        rope_style,
        max_position_embeddings: req("context_length")?,
        tie_word_embeddings: !file.has_tensor("output.weight"),
        attention_bias: file.has_tensor("blk.0.attn_q.bias"),
    };
    cfg.validate()?;
    Ok(cfg)
}

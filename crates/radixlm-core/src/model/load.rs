//! From `modelPath` to a ready model and tokenizer.

use std::path::Path;

use super::gguf::read_gguf;
use super::hub::{resolve_model, HubEnv, ModelKind, Progress};
use super::safetensors::SafetensorsWeights;
use super::tokenizer::{GenerationDefaults, TokenizerInfo};
use super::weights::{WeightMode, Weights};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::layers::transformer::Transformer;
use crate::models;
use crate::options::EngineOptions;

pub struct LoadedModel {
    pub model: Transformer,
    pub tokenizer: Option<TokenizerInfo>,
    pub eos_ids: Vec<u32>,
    pub defaults: GenerationDefaults,
    pub resolved_path: String,
}

/// The model files opened and checked, weights not yet turned into a backend's form.
pub struct ModelFiles {
    pub cfg: ModelConfig,
    pub weights: Weights,
    /// None with `skipTokenizerInit`.
    pub tokenizer: Option<TokenizerInfo>,
    /// The model's EOS ids and generation defaults: from the tokenizer, or with `skipTokenizerInit` from
    /// the same files read only for them (SGLang still stops at EOS in that mode).
    pub eos_ids: Vec<u32>,
    pub defaults: GenerationDefaults,
    /// Where the weights were found (after hub resolution).
    pub resolved_path: String,
}

/// Opens the model and builds the CPU transformer.
pub fn load(opts: &EngineOptions, progress: &mut dyn FnMut(Progress)) -> Result<LoadedModel> {
    let f = open(opts, progress)?;
    let mode = if opts.wants_f32() { WeightMode::F32 } else { WeightMode::AsStored };
    let model = Transformer::load(f.cfg, &f.weights, mode)?;
    Ok(LoadedModel { model, tokenizer: f.tokenizer, eos_ids: f.eos_ids, defaults: f.defaults, resolved_path: f.resolved_path })
}

/// Resolves `modelPath`, reads config and tokenizer, and opens the weights (memory-mapped).
pub fn open(opts: &EngineOptions, progress: &mut dyn FnMut(Progress)) -> Result<ModelFiles> {
    let resolved = resolve_model(&opts.model_path, &HubEnv::from_process_env(), progress)?;
    let (cfg, weights, tokenizer) = match resolved.kind {
        ModelKind::Gguf => {
            let file = read_gguf(&resolved.path)?;
            let cfg = models::config_from_gguf(&file)?;
            let tokenizer = match &opts.tokenizer_path {
                Some(dir) => TokenizerInfo::from_hf_dir(Path::new(dir), Path::new(dir)),
                None => TokenizerInfo::from_gguf(&file),
            };
            (cfg, Weights::Gguf(file), tokenizer)
        }
        ModelKind::HfDir => {
            let dir = &resolved.path;
            let text = std::fs::read_to_string(dir.join("config.json"))
                .map_err(|e| Error::invalid_model(format!("config.json in {}: {e}", dir.display())))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::invalid_model(format!("config.json: {e}")))?;
            let cfg = models::config_from_hf(&json)?;
            let weights = Weights::Safetensors(SafetensorsWeights::open(dir)?);
            let tdir = opts.tokenizer_path.as_deref().map(Path::new).unwrap_or(dir);
            let tokenizer = TokenizerInfo::from_hf_dir(tdir, dir);
            (cfg, weights, tokenizer)
        }
    };
    // With skipTokenizerInit a missing or broken tokenizer is no error: only EOS and defaults are lost.
    let tokenizer = match (tokenizer, opts.skip_tokenizer_init) {
        (Ok(t), _) => Some(t),
        (Err(_), true) => None,
        (Err(e), false) => return Err(e),
    };
    let (eos_ids, defaults) = tokenizer.as_ref().map(|t| (t.eos_ids.clone(), t.defaults.clone())).unwrap_or_default();
    let tokenizer = tokenizer.filter(|_| !opts.skip_tokenizer_init);
    Ok(ModelFiles { cfg, weights, tokenizer, eos_ids, defaults, resolved_path: resolved.path.display().to_string() })
}

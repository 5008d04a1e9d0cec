//! The tokenizer and the special-token facts the engine needs (EOS ids, BOS, chat template), from a
//! Hugging Face directory (tokenizer.json + tokenizer_config.json + generation_config.json) or from GGUF
//! metadata (a byte-level BPE rebuilt from `tokenizer.ggml.*`, pre-tokenizer chosen by
//! `tokenizer.ggml.pre` as llama.cpp does).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::tokenizer::SplitDelimiterBehavior;
use tokenizers::{AddedToken, Tokenizer};

use super::gguf::GgufFile;
use crate::chat_template::{ChatRequest, ChatTemplate};
use crate::error::{Error, ErrorCode, Result};

/// Sampling defaults a model ships in generation_config.json (SGLang's `sampling_defaults="model"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
}

pub struct TokenizerInfo {
    pub tokenizer: Tokenizer,
    /// Ids that end generation unless `ignoreEos`.
    pub eos_ids: Vec<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
    pub defaults: GenerationDefaults,
    /// `chat_template` compiled on first use (a broken template must not stop the model from loading).
    compiled_chat_template: OnceLock<Result<ChatTemplate>>,
}

const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(what: &str) -> impl Fn(tokenizers::Error) -> Error + '_ {
    move |e| Error::invalid_model(format!("{what}: {e}"))
}

impl TokenizerInfo {
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.meta_str("tokenizer.ggml.model")?.unwrap_or_default();
        if model != "gpt2" {
            return Err(Error::invalid_model(format!(
                "GGUF tokenizer model `{model}` is not supported (supported: gpt2-style byte-level BPE)"
            )));
        }
        let tokens = file.meta_str_array("tokenizer.ggml.tokens")?.ok_or_else(|| Error::invalid_model("GGUF lacks tokenizer.ggml.tokens"))?;
        let merges = file.meta_str_array("tokenizer.ggml.merges")?.unwrap_or_default();
        let merges = merges
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::invalid_model("GGUF tokenizer.ggml.merges has an entry without a space"))?;
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err("GGUF BPE"))?;
        let mut tk = Tokenizer::new(bpe);
        let pre = file.meta_str("tokenizer.ggml.pre")?.unwrap_or_else(|| "gpt2".into());
        tk.with_pre_tokenizer(Some(pre_tokenizer(&pre)?));
        if pre == "qwen2" {
            tk.with_normalizer(Some(NFC)).map_err(tok_err("GGUF normalizer"))?;
        }
        tk.with_decoder(Some(ByteLevelDecoder::default()));

        // Control (3) and user-defined (4) tokens are matched whole in text, like HF's added tokens.
        let types = file.meta_u32_array("tokenizer.ggml.token_type")?.unwrap_or_default();
        let added: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &ty)| ty == 3 || ty == 4)
            .filter_map(|(i, &ty)| tokens.get(i).map(|t| AddedToken::from(t.clone(), ty == 3)))
            .collect();
        tk.add_special_tokens(added).map_err(tok_err("GGUF special tokens"))?;

        let id_meta = |key: &str| -> Result<Option<u32>> {
            Ok(file.meta_u32(key)?.filter(|&id| (id as usize) < tokens.len()))
        };
        let bos = id_meta("tokenizer.ggml.bos_token_id")?;
        let eos = id_meta("tokenizer.ggml.eos_token_id")?;
        let eot = id_meta("tokenizer.ggml.eot_token_id")?;
        let name = |id: Option<u32>| id.map(|i| tokens[i as usize].clone());
        if file.meta_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false) {
            if let Some(b) = bos {
                let t = &tokens[b as usize];
                let tp = TemplateProcessing::builder()
                    .try_single(format!("{t} $0"))
                    .and_then(|b| b.try_pair(format!("{t} $A {t} $B")))
                    .map_err(|e| Error::invalid_model(format!("BOS template: {e}")))?
                    .special_tokens(vec![(t.clone(), b)])
                    .build()
                    .map_err(|e| Error::invalid_model(format!("BOS template: {e}")))?;
                tk.with_post_processor(Some(tp));
            }
        }
        let eos_ids: BTreeSet<u32> = [eos, eot].into_iter().flatten().collect();
        Ok(TokenizerInfo {
            tokenizer: tk,
            eos_ids: eos_ids.into_iter().collect(),
            bos_token: name(bos),
            eos_token: name(eos),
            chat_template: file.meta_str("tokenizer.chat_template")?,
            defaults: GenerationDefaults::default(),
            compiled_chat_template: OnceLock::new(),
        })
    }

    /// `tokenizer_dir` holds tokenizer.json (+ optional tokenizer_config.json); `model_dir` may hold
    /// generation_config.json and config.json with EOS ids.
    pub fn from_hf_dir(tokenizer_dir: &Path, model_dir: &Path) -> Result<Self> {
        let path = tokenizer_dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::invalid_model(format!("tokenizer.json not found in {}", tokenizer_dir.display())));
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| Error::invalid_model(format!("tokenizer.json: {e}")))?;
        let tc = read_json_opt(&tokenizer_dir.join("tokenizer_config.json"))?;
        let gc = read_json_opt(&model_dir.join("generation_config.json"))?;
        let cfg = read_json_opt(&model_dir.join("config.json"))?;
        let token_str = |v: Option<&serde_json::Value>| -> Option<String> {
            match v? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
                _ => None,
            }
        };
        let bos_token = token_str(tc.as_ref().and_then(|c| c.get("bos_token")));
        let eos_token = token_str(tc.as_ref().and_then(|c| c.get("eos_token")));
        let mut eos: BTreeSet<u32> = BTreeSet::new();
        for src in [gc.as_ref(), cfg.as_ref()].into_iter().flatten() {
            match src.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => eos.extend(n.as_u64().map(|v| v as u32)),
                Some(serde_json::Value::Array(a)) => eos.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32)),
                _ => {}
            }
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            eos.insert(id);
        }
        let chat_template = tc.as_ref().and_then(|c| match c.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(String::from)),
            _ => None,
        });
        let num = |k: &str| gc.as_ref().and_then(|g| g.get(k)).and_then(|v| v.as_f64());
        let defaults = GenerationDefaults {
            temperature: num("temperature"),
            top_p: num("top_p"),
            top_k: gc.as_ref().and_then(|g| g.get("top_k")).and_then(|v| v.as_i64()),
            min_p: num("min_p"),
        };
        Ok(TokenizerInfo {
            tokenizer,
            eos_ids: eos.into_iter().collect(),
            bos_token,
            eos_token,
            chat_template,
            defaults,
            compiled_chat_template: OnceLock::new(),
        })
    }

    /// Token ids of a prompt, with the model's special tokens added (e.g. a BOS where the tokenizer asks).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// `add_special_tokens = false` is what a rendered chat template needs: the template already wrote
    /// BOS and friends as text (transformers tokenizes chat templates the same way).
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| Error::invalid_input(format!("tokenization failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The model's chat template, compiled once. ERR_CHAT_TEMPLATE when the model has none or it does not
    /// compile.
    pub fn compiled_chat_template(&self) -> Result<&ChatTemplate> {
        let Some(source) = self.chat_template.as_deref() else {
            return Err(Error::new(
                ErrorCode::ChatTemplate,
                "this model has no chat template (no tokenizer.chat_template in the GGUF, no chat_template in \
                 tokenizer_config.json): format the prompt yourself and call generate()",
            ));
        };
        self.compiled_chat_template.get_or_init(|| ChatTemplate::new(source)).as_ref().map_err(Clone::clone)
    }

    /// Renders `request` with the model's chat template and its BOS / EOS token strings.
    pub fn apply_chat_template(&self, request: &ChatRequest) -> Result<String> {
        self.compiled_chat_template()?.render(request, self.bos_token.as_deref(), self.eos_token.as_deref())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.tokenizer.decode(ids, skip_special).unwrap_or_default()
    }
}

fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false)
            .map(Into::into)
            .map_err(tok_err("pre-tokenizer regex"))
    };
    Ok(match pre {
        // SmolLM: single digits, then GPT-2's byte-level split.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
        "llama3" | "llama-bpe" | "smaug-bpe" => {
            Sequence::new(vec![split(REGEX_LLAMA3)?, ByteLevel::new(false, true, false).into()]).into()
        }
        "qwen2" => Sequence::new(vec![split(REGEX_QWEN2)?, ByteLevel::new(false, false, false).into()]).into(),
        _ => ByteLevel::new(false, true, true).into(),
    })
}

fn read_json_opt(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| Error::invalid_model(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::invalid_model(format!("{}: {e}", path.display()))),
    }
}

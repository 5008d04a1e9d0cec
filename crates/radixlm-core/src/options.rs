//! Engine options (camelCase, SGLang's snake_case accepted), resolved once at start and then frozen.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::sampling::params::camel;

#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    pub model_path: String,
    pub tokenizer_path: Option<String>,
    /// "auto" keeps GGUF weights quantized (and safetensors as f32); "float32" dequantizes everything.
    pub dtype: String,
    pub device: String,
    pub context_length: Option<usize>,
    /// Unset: the backend's default (64 on the CPU, 256 on CUDA).
    pub max_running_requests: Option<usize>,
    pub max_total_tokens: Option<usize>,
    pub mem_fraction_static: Option<f64>,
    /// Unset: the backend's default (2048 on the CPU, 8192 on CUDA). `usize::MAX`: no chunking.
    pub chunked_prefill_size: Option<usize>,
    pub page_size: usize,
    pub disable_radix_cache: bool,
    /// "lpm" (longest cached prefix first) or "fcfs", as SGLang's `schedule_policy`.
    pub schedule_policy: String,
    pub random_seed: Option<u64>,
    pub skip_tokenizer_init: bool,
    pub log_level: String,
    pub enable_return_hidden_states: bool,
    pub cuda_graph_max_bs: Option<usize>,
    pub disable_cuda_graph: bool,
    /// Collect every pass before scheduling the next one (SGLang's `disable_overlap_schedule`).
    pub disable_overlap_schedule: bool,
    /// Test hook, not an option users can set: retract the youngest running request every N steps.
    pub test_retract_every: Option<u64>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            model_path: String::new(),
            tokenizer_path: None,
            dtype: "auto".into(),
            device: "auto".into(),
            context_length: None,
            max_running_requests: None,
            max_total_tokens: None,
            mem_fraction_static: None,
            chunked_prefill_size: None,
            page_size: 16,
            disable_radix_cache: false,
            schedule_policy: "fcfs".into(),
            random_seed: None,
            skip_tokenizer_init: false,
            log_level: "error".into(),
            enable_return_hidden_states: false,
            cuda_graph_max_bs: None,
            disable_cuda_graph: false,
            disable_overlap_schedule: false,
            test_retract_every: None,
        }
    }
}

fn bad(key: &str, why: &str) -> Error {
    Error::invalid_options(format!("options.{}: {why}", camel(key)))
}

fn positive(key: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .filter(|&n| (1..=(1u64 << 40)).contains(&n))
        .map(|n| n as usize)
        .ok_or_else(|| bad(key, "must be a positive integer"))
}

fn string(key: &str, v: &Value) -> Result<String> {
    v.as_str().map(String::from).ok_or_else(|| bad(key, "must be a string"))
}

fn boolean(key: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| bad(key, "must be a boolean"))
}

impl EngineOptions {
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| Error::invalid_options("options must be an object"))?;
        let mut o = EngineOptions::default();
        let mut seen = std::collections::HashSet::new();
        for (raw, val) in obj {
            let key = crate::sampling::params::snake(raw);
            if !seen.insert(key.clone()) {
                return Err(bad(&key, "given twice (camelCase and snake_case)"));
            }
            if val.is_null() {
                continue;
            }
            match key.as_str() {
                "model_path" => o.model_path = string(&key, val)?,
                "tokenizer_path" => o.tokenizer_path = Some(string(&key, val)?),
                "dtype" => {
                    o.dtype = string(&key, val)?;
                    if !["auto", "float32", "f32", "bfloat16", "bf16"].contains(&o.dtype.as_str()) {
                        return Err(bad(&key, "must be 'auto', 'float32' (the CPU backend) or 'bfloat16' (the CUDA backend)"));
                    }
                }
                "device" => {
                    o.device = string(&key, val)?;
                    if !["auto", "cpu"].contains(&o.device.as_str()) && !o.device.starts_with("cuda") {
                        return Err(bad(&key, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"));
                    }
                }
                "context_length" => o.context_length = Some(positive(&key, val)?),
                "max_running_requests" => o.max_running_requests = Some(positive(&key, val)?),
                "max_total_tokens" => o.max_total_tokens = Some(positive(&key, val)?),
                "mem_fraction_static" => {
                    let f = val.as_f64().filter(|f| *f > 0.0 && *f < 1.0);
                    o.mem_fraction_static = Some(f.ok_or_else(|| bad(&key, "must be in (0, 1)"))?);
                }
                "chunked_prefill_size" => {
                    // SGLang uses -1 for "no chunking".
                    o.chunked_prefill_size = Some(if val.as_i64() == Some(-1) { usize::MAX } else { positive(&key, val)? });
                }
                "page_size" => {
                    o.page_size = positive(&key, val)?;
                    if o.page_size > 4096 {
                        return Err(bad(&key, "must be <= 4096"));
                    }
                }
                "disable_radix_cache" => o.disable_radix_cache = boolean(&key, val)?,
                "schedule_policy" => {
                    o.schedule_policy = string(&key, val)?;
                    if !["lpm", "fcfs"].contains(&o.schedule_policy.as_str()) {
                        return Err(bad(&key, "must be 'lpm' or 'fcfs'"));
                    }
                }
                "random_seed" => o.random_seed = Some(val.as_u64().ok_or_else(|| bad(&key, "must be a non-negative integer"))?),
                "skip_tokenizer_init" => o.skip_tokenizer_init = boolean(&key, val)?,
                "log_level" => o.log_level = string(&key, val)?,
                "enable_return_hidden_states" => o.enable_return_hidden_states = boolean(&key, val)?,
                "cuda_graph_max_bs" => o.cuda_graph_max_bs = Some(positive(&key, val)?),
                "disable_cuda_graph" => o.disable_cuda_graph = boolean(&key, val)?,
                "disable_overlap_schedule" => o.disable_overlap_schedule = boolean(&key, val)?,
                k => return Err(bad(k, "unknown engine option")),
            }
        }
        if o.model_path.is_empty() {
            return Err(Error::invalid_options("options.modelPath is required"));
        }
        if o.device.starts_with("cuda") {
            if !crate::CUDA_BUILT {
                return Err(Error::invalid_options(format!(
                    "options.device '{}': this build of radixlm has no CUDA backend (use 'cpu' or 'auto')",
                    o.device
                )));
            }
            o.cuda_ordinal()?;
        }
        Ok(o)
    }

    /// The GPU index of `device` 'cuda' (0) or 'cuda:N'.
    pub fn cuda_ordinal(&self) -> Result<usize> {
        match self.device.strip_prefix("cuda") {
            Some("") => Ok(0),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")),
            None => Err(bad("device", "is not a CUDA device")),
        }
    }

    pub fn wants_f32(&self) -> bool {
        self.dtype == "float32" || self.dtype == "f32"
    }

    /// `dtype` against the backend the device resolved to: the CPU backend computes in float32 (weights as
    /// stored, or dequantized with 'float32'), the CUDA backend in bfloat16. Asking for the other one is an
    /// error rather than silently ignored.
    pub fn check_dtype(&self, cuda: bool) -> Result<()> {
        let bf16 = self.dtype == "bfloat16" || self.dtype == "bf16";
        let msg = match (cuda, bf16, self.wants_f32()) {
            (true, _, true) => "the CUDA backend computes in bfloat16: use 'auto' or 'bfloat16'",
            (false, true, _) => "the CPU backend computes in float32: use 'auto' or 'float32'",
            _ => return Ok(()),
        };
        Err(Error::invalid_options(format!("options.dtype '{}': {msg}", self.dtype)))
    }
}

//! Sampling parameters: parsed from a JSON object with camelCase keys (SGLang's snake_case accepted),
//! defaults as SGLang's (model generation_config.json supplies temperature/top_p/top_k/min_p when the
//! request leaves them unset), every value range-checked, unknown keys rejected by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::grammar::GrammarSpec;
use crate::error::{Error, Result};
use crate::model::tokenizer::GenerationDefaults;
use crate::stop_regex::StopRegexes;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// `None` = the whole vocabulary.
    pub top_k: Option<usize>,
    pub min_p: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repetition_penalty: f32,
    pub stop: Vec<String>,
    /// `stopRegex`, compiled (and so checked) when the params are parsed.
    pub stop_regex: Option<Arc<StopRegexes>>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub skip_special_tokens: bool,
    pub spaces_between_special_tokens: bool,
    pub no_stop_trim: bool,
    pub n: usize,
    pub seed: Option<u64>,
    pub logit_bias: BTreeMap<u32, f32>,
    /// Structured output: `jsonSchema`, `regex` or `ebnf` (at most one), compiled at submit time.
    pub grammar: Option<GrammarSpec>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 128,
            min_new_tokens: 0,
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            min_p: 0.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
            stop: Vec::new(),
            stop_regex: None,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            skip_special_tokens: true,
            spaces_between_special_tokens: true,
            no_stop_trim: false,
            n: 1,
            seed: None,
            logit_bias: BTreeMap::new(),
            grammar: None,
        }
    }
}

/// SGLang keys radixlm knows but does not implement yet: rejected with a clear message, not as unknown.
const NOT_YET: &[&str] = &["structural_tag", "custom_params"];

/// camelCase -> snake_case, so both spellings land on one name.
pub fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The camelCase spelling of a snake_case key, for error messages.
pub fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut up = false;
    for c in key.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn err(key: &str, why: &str) -> Error {
    Error::invalid_params(format!("samplingParams.{}: {why}", camel(key)))
}

fn num(key: &str, v: &Value) -> Result<f64> {
    let x = v.as_f64().ok_or_else(|| err(key, "must be a number"))?;
    if !x.is_finite() {
        return Err(err(key, "must be finite"));
    }
    Ok(x)
}

fn int(key: &str, v: &Value) -> Result<i64> {
    let x = num(key, v)?;
    if x.fract() != 0.0 || x.abs() > 9_007_199_254_740_991.0 {
        return Err(err(key, "must be an integer"));
    }
    Ok(x as i64)
}

fn uint(key: &str, v: &Value) -> Result<usize> {
    let x = int(key, v)?;
    usize::try_from(x).map_err(|_| err(key, "must be >= 0"))
}

/// A string or an array of strings (`stop`, `stopRegex`).
fn strings(key: &str, v: &Value) -> Result<Vec<String>> {
    let bad = || err(key, "must be a string or an array of strings");
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|s| s.as_str().map(String::from).ok_or_else(bad)).collect(),
        _ => Err(bad()),
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| err(key, "must be a boolean"))
}

fn in_range(key: &str, x: f64, lo: f64, lo_incl: bool, hi: f64, why: &str) -> Result<f32> {
    let ok_lo = if lo_incl { x >= lo } else { x > lo };
    if !ok_lo || x > hi {
        return Err(err(key, why));
    }
    Ok(x as f32)
}

fn token_id(key: &str, v: &Value, vocab: usize) -> Result<u32> {
    let id = int(key, v)?;
    if id < 0 || id as u64 >= vocab as u64 {
        return Err(err(key, &format!("token id {id} is outside the vocabulary [0, {vocab})")));
    }
    Ok(id as u32)
}

impl SamplingParams {
    /// Parses `v` (an object, or null/undefined for all defaults). `vocab` bounds every token id.
    pub fn from_json(v: &Value, defaults: &GenerationDefaults, vocab: usize) -> Result<Self> {
        let mut p = SamplingParams::default();
        if let Some(t) = defaults.temperature {
            p.temperature = t as f32;
        }
        if let Some(t) = defaults.top_p {
            p.top_p = t as f32;
        }
        if let Some(k) = defaults.top_k.filter(|&k| k > 0) {
            p.top_k = Some(k as usize);
        }
        if let Some(m) = defaults.min_p {
            p.min_p = m as f32;
        }
        let obj = match v {
            Value::Null => return Ok(p),
            Value::Object(o) => o,
            _ => return Err(Error::invalid_params("samplingParams must be an object")),
        };
        let mut seen = std::collections::HashSet::new();
        for (raw_key, val) in obj {
            let key = snake(raw_key);
            if !seen.insert(key.clone()) {
                return Err(err(&key, "given twice (camelCase and snake_case)"));
            }
            // null means "default", as in SGLang.
            if val.is_null() {
                continue;
            }
            match key.as_str() {
                "max_new_tokens" => p.max_new_tokens = uint(&key, val)?,
                "min_new_tokens" => p.min_new_tokens = uint(&key, val)?,
                "temperature" => p.temperature = in_range(&key, num(&key, val)?, 0.0, true, f64::MAX, "must be >= 0")?,
                "top_p" => p.top_p = in_range(&key, num(&key, val)?, 0.0, false, 1.0, "must be in (0, 1]")?,
                "top_k" => {
                    let k = int(&key, val)?;
                    p.top_k = match k {
                        -1 => None,
                        k if k >= 1 => Some(k as usize),
                        _ => return Err(err(&key, "must be -1 (all) or >= 1")),
                    }
                }
                "min_p" => p.min_p = in_range(&key, num(&key, val)?, 0.0, true, 1.0, "must be in [0, 1]")?,
                "frequency_penalty" => p.frequency_penalty = in_range(&key, num(&key, val)?, -2.0, true, 2.0, "must be in [-2, 2]")?,
                "presence_penalty" => p.presence_penalty = in_range(&key, num(&key, val)?, -2.0, true, 2.0, "must be in [-2, 2]")?,
                "repetition_penalty" => p.repetition_penalty = in_range(&key, num(&key, val)?, 0.0, false, 2.0, "must be in (0, 2]")?,
                "stop" => {
                    p.stop = strings(&key, val)?;
                    if p.stop.iter().any(|s| s.is_empty()) {
                        return Err(err(&key, "stop strings must not be empty"));
                    }
                }
                "stop_regex" => {
                    let patterns = strings(&key, val)?;
                    if !patterns.is_empty() {
                        p.stop_regex = Some(Arc::new(StopRegexes::new(patterns).map_err(|why| err(&key, &why))?));
                    }
                }
                "stop_token_ids" => {
                    let a = val.as_array().ok_or_else(|| err(&key, "must be an array of token ids"))?;
                    p.stop_token_ids = a.iter().filter(|v| !v.is_null()).map(|v| token_id(&key, v, vocab)).collect::<Result<_>>()?;
                }
                "ignore_eos" => p.ignore_eos = boolean(&key, val)?,
                "skip_special_tokens" => p.skip_special_tokens = boolean(&key, val)?,
                "spaces_between_special_tokens" => p.spaces_between_special_tokens = boolean(&key, val)?,
                "no_stop_trim" => p.no_stop_trim = boolean(&key, val)?,
                "n" => {
                    p.n = uint(&key, val)?;
                    if p.n == 0 || p.n > 1024 {
                        return Err(err(&key, "must be in [1, 1024]"));
                    }
                }
                "seed" | "sampling_seed" => {
                    let s = int(&key, val)?;
                    p.seed = Some(u64::try_from(s).map_err(|_| err(&key, "must be >= 0"))?);
                }
                "logit_bias" => {
                    let o = val.as_object().ok_or_else(|| err(&key, "must be an object {tokenId: bias}"))?;
                    for (id, b) in o {
                        let id_num: i64 = id.parse().map_err(|_| err(&key, &format!("key `{id}` is not a token id")))?;
                        let id = token_id(&key, &Value::from(id_num), vocab)?;
                        let b = num(&key, b)?;
                        p.logit_bias.insert(id, b as f32);
                    }
                }
                "json_schema" | "regex" | "ebnf" => {
                    if p.grammar.is_some() {
                        // SGLang: only one of regex, json_schema and ebnf may be set.
                        return Err(err(&key, "only one of jsonSchema, regex and ebnf may be given"));
                    }
                    p.grammar = Some(match (key.as_str(), val) {
                        ("json_schema", Value::String(s)) => GrammarSpec::JsonSchema(s.clone()),
                        // A schema given as an object (or true/false) rather than as JSON text.
                        ("json_schema", Value::Object(_) | Value::Bool(_)) => GrammarSpec::JsonSchema(val.to_string()),
                        ("json_schema", _) => return Err(err(&key, "must be a JSON Schema (a JSON string or an object)")),
                        ("regex", Value::String(s)) => GrammarSpec::Regex(s.clone()),
                        ("ebnf", Value::String(s)) => GrammarSpec::Ebnf(s.clone()),
                        _ => return Err(err(&key, "must be a string")),
                    });
                }
                k if NOT_YET.contains(&k) => return Err(err(k, "is not supported by this version of radixlm")),
                k => return Err(err(k, "unknown sampling parameter")),
            }
        }
        if p.min_new_tokens > p.max_new_tokens {
            return Err(err("min_new_tokens", "must be <= maxNewTokens"));
        }
        Ok(p)
    }

    /// SGLang treats temperatures below 1e-6 as greedy.
    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-6 || self.top_k == Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<SamplingParams> {
        SamplingParams::from_json(&v, &GenerationDefaults::default(), 100)
    }

    #[test]
    fn defaults_follow_sglang() {
        let p = parse(Value::Null).unwrap();
        assert_eq!(p.max_new_tokens, 128);
        assert_eq!(p.temperature, 1.0);
        assert_eq!(p.top_k, None);
        assert!(p.skip_special_tokens);
    }

    #[test]
    fn camel_and_snake_are_the_same_key() {
        assert_eq!(parse(json!({"maxNewTokens": 5})).unwrap().max_new_tokens, 5);
        assert_eq!(parse(json!({"max_new_tokens": 5})).unwrap().max_new_tokens, 5);
        let e = parse(json!({"max_new_tokens": 5, "maxNewTokens": 6})).unwrap_err();
        assert!(e.message.contains("maxNewTokens"), "{}", e.message);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (json!({"temperature": -1}), "temperature"),
            (json!({"topP": 0}), "topP"),
            (json!({"topP": 1.5}), "topP"),
            (json!({"topK": 0}), "topK"),
            (json!({"minP": 2}), "minP"),
            (json!({"maxNewTokens": -1}), "maxNewTokens"),
            (json!({"maxNewTokens": 1.5}), "maxNewTokens"),
            (json!({"minNewTokens": 9, "maxNewTokens": 2}), "minNewTokens"),
            (json!({"stopTokenIds": [100]}), "stopTokenIds"),
            (json!({"stopTokenIds": [-1]}), "stopTokenIds"),
            (json!({"stop": 3}), "stop"),
            (json!({"stop": [""]}), "stop"),
            (json!({"repetitionPenalty": 0}), "repetitionPenalty"),
            (json!({"frequencyPenalty": 3}), "frequencyPenalty"),
            (json!({"logitBias": {"100": 1}}), "logitBias"),
            (json!({"logitBias": {"x": 1}}), "logitBias"),
            (json!({"seed": -3}), "seed"),
            (json!({"n": 0}), "n"),
            (json!({"ignoreEos": "yes"}), "ignoreEos"),
            (json!({"jsonSchema": 5}), "jsonSchema"),
            (json!({"regex": ["a"]}), "regex"),
            (json!({"ebnf": 1}), "ebnf"),
            (json!({"regex": "a", "ebnf": "start: \"a\""}), "only one of jsonSchema, regex and ebnf"),
            (json!({"json_schema": "{}", "regex": "a"}), "only one of jsonSchema, regex and ebnf"),
            (json!({"structuralTag": "{}"}), "structuralTag"),
            (json!({"stopRegex": 3}), "stopRegex"),
            (json!({"stopRegex": ["a", 1]}), "stopRegex"),
            (json!({"stopRegex": "(ab"}), "stopRegex"),
            (json!({"stop_regex": ["ok", "(?<=a)b"]}), "stopRegex"),
            (json!({"stopRegex": "a?"}), "stopRegex"),
            (json!({"bogus": 1}), "bogus"),
        ];
        for (v, key) in cases {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_SAMPLING_PARAMS");
            assert!(e.message.contains(key), "{v} -> {}", e.message);
        }
    }

    #[test]
    fn grammar_keys() {
        let p = parse(json!({"jsonSchema": "{\"type\": \"string\"}"})).unwrap();
        assert_eq!(p.grammar, Some(GrammarSpec::JsonSchema("{\"type\": \"string\"}".into())));
        let p = parse(json!({"json_schema": {"type": "string"}})).unwrap();
        assert_eq!(p.grammar, Some(GrammarSpec::JsonSchema("{\"type\":\"string\"}".into())));
        assert_eq!(parse(json!({"regex": "[a-z]+"})).unwrap().grammar, Some(GrammarSpec::Regex("[a-z]+".into())));
        assert_eq!(parse(json!({"ebnf": "start: \"a\""})).unwrap().grammar, Some(GrammarSpec::Ebnf("start: \"a\"".into())));
        // null means unset, so it does not count towards "at most one".
        assert_eq!(parse(json!({"regex": "a", "jsonSchema": null})).unwrap().grammar, Some(GrammarSpec::Regex("a".into())));
    }

    #[test]
    fn stop_regex_takes_a_pattern_or_a_list_in_either_spelling() {
        let pats = |v: Value| parse(v).unwrap().stop_regex.map(|r| r.patterns().to_vec());
        assert_eq!(pats(json!({"stopRegex": r"\d+"})), Some(vec![r"\d+".to_string()]));
        assert_eq!(pats(json!({"stop_regex": ["a+b", "c"]})), Some(vec!["a+b".to_string(), "c".to_string()]));
        assert_eq!(pats(json!({"stopRegex": []})), None);
        assert_eq!(pats(json!({"stopRegex": null})), None);
        let e = parse(json!({"stopRegex": "(?=x)y"})).unwrap_err();
        assert!(e.message.contains("look-around") && e.message.contains("Rust regex syntax"), "{}", e.message);
    }

    #[test]
    fn model_defaults_apply_unless_set() {
        let d = GenerationDefaults { temperature: Some(0.2), top_p: Some(0.9), top_k: Some(50), min_p: None };
        let p = SamplingParams::from_json(&Value::Null, &d, 10).unwrap();
        assert_eq!((p.temperature, p.top_p, p.top_k), (0.2, 0.9, Some(50)));
        let p = SamplingParams::from_json(&json!({"temperature": 0}), &d, 10).unwrap();
        assert!(p.is_greedy());
    }
}

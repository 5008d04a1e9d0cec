//! What a request asks to get back besides text (SGLang's `return_logprob`, `top_logprobs_num`,
//! `logprob_start_len`, `token_ids_logprob`, `return_text_in_logprobs`, `return_hidden_states`), and the
//! per-position numbers collected for it.
//!
//! Which distribution: an output position's logprobs are those of the distribution the sampler drew from
//! before truncation: penalties, the min-new-tokens ban and logit bias applied, divided by the temperature
//! (1 for greedy), log-softmaxed over the whole vocabulary (as SGLang; top-k/top-p/min-p do not
//! renormalise them). Prompt positions use the model's raw logits.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::sampling::params::snake;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReturnOptions {
    pub logprob: bool,
    pub top_n: usize,
    /// First prompt position with logprobs; None = output positions only (SGLang's -1).
    pub start: Option<usize>,
    pub token_ids: Vec<u32>,
    pub text: bool,
    pub hidden: bool,
}

fn bad(key: &str, why: &str) -> Error {
    Error::invalid_input(format!("options.{}: {why}", crate::sampling::params::camel(key)))
}

impl ReturnOptions {
    /// Parses the generate options object (`signal`/`rid` are handled by the caller and ignored here).
    pub fn from_json(v: &Value, vocab: usize, hidden_enabled: bool) -> Result<Self> {
        let mut o = ReturnOptions::default();
        let Some(obj) = v.as_object() else {
            return if v.is_null() { Ok(o) } else { Err(Error::invalid_input("options must be an object")) };
        };
        for (raw, val) in obj {
            let key = snake(raw);
            if val.is_null() {
                continue;
            }
            let flag = || val.as_bool().ok_or_else(|| bad(&key, "must be a boolean"));
            match key.as_str() {
                "return_logprob" => o.logprob = flag()?,
                "return_text_in_logprobs" => o.text = flag()?,
                "return_hidden_states" => o.hidden = flag()?,
                "top_logprobs_num" => {
                    o.top_n = val.as_u64().filter(|&n| n as usize <= vocab).ok_or_else(|| bad(&key, "must be an integer in [0, vocab size]"))?
                        as usize
                }
                "logprob_start_len" => {
                    o.start = match val.as_i64() {
                        Some(-1) => None,
                        Some(n) if n >= 0 => Some(n as usize),
                        _ => return Err(bad(&key, "must be -1 or a non-negative integer")),
                    }
                }
                "token_ids_logprob" => {
                    let ids = val.as_array().ok_or_else(|| bad(&key, "must be an array of token ids"))?;
                    o.token_ids = ids
                        .iter()
                        .map(|x| x.as_u64().filter(|&id| (id as usize) < vocab).map(|id| id as u32))
                        .collect::<Option<Vec<u32>>>()
                        .ok_or_else(|| bad(&key, "must hold token ids below the vocabulary size"))?;
                }
                "signal" | "rid" => {}
                k => return Err(bad(k, "unknown option")),
            }
        }
        if o.hidden && !hidden_enabled {
            return Err(bad("return_hidden_states", "needs the engine option enableReturnHiddenStates"));
        }
        Ok(o)
    }

    /// First prompt position whose logprob is wanted (None: no prompt logprobs).
    pub fn prompt_start(&self, prompt_len: usize) -> Option<usize> {
        self.start.filter(|_| self.logprob).map(|s| s.min(prompt_len))
    }
}

/// Logprobs at one position: of the token that came, the `top_n` most likely, and the requested ids.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionLogprobs {
    pub logprob: f32,
    pub token: u32,
    pub top: Vec<(f32, u32)>,
    pub ids: Vec<(f32, u32)>,
}

impl PositionLogprobs {
    /// log_softmax(row / temperature) at `token`, plus the top-n and requested ids.
    pub fn of(row: &[f32], temperature: f32, token: u32, opts: &ReturnOptions) -> Self {
        let inv_t = 1.0 / temperature;
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) * inv_t;
        let sum: f64 = row.iter().map(|&l| ((l * inv_t - max) as f64).exp()).sum();
        let log_z = max + sum.ln() as f32;
        let lp = |id: u32| row[id as usize] * inv_t - log_z;
        let top = if opts.top_n == 0 {
            Vec::new()
        } else {
            let mut idx: Vec<u32> = (0..row.len() as u32).collect();
            // Highest logit first, lower id first among equals (a stable order for ties).
            let order = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
            let n = opts.top_n.min(idx.len());
            if n < idx.len() {
                idx.select_nth_unstable_by(n - 1, order);
                idx.truncate(n);
            }
            idx.sort_unstable_by(order);
            idx.into_iter().map(|id| (lp(id), id)).collect()
        };
        PositionLogprobs { logprob: lp(token), token, top, ids: opts.token_ids.iter().map(|&id| (lp(id), id)).collect() }
    }
}

/// What a request collects while it runs.
#[derive(Debug, Default)]
pub struct Collected {
    /// Prompt positions from the start position; None for position 0 (nothing predicts it).
    pub input: Vec<Option<PositionLogprobs>>,
    /// Next prompt position to record (positions are not recorded twice after a retraction).
    pub input_next: usize,
    pub output: Vec<PositionLogprobs>,
    /// Final-layer hidden states (after the final norm), one row per position fed to the model.
    pub hidden: Vec<Vec<f32>>,
    pub hidden_next: usize,
}

/// SGLang's meta_info logprob fields as camelCase JSON; `text` renders a token when asked.
pub fn meta_json(c: &Collected, opts: &ReturnOptions, prompt: &[u32], text: &dyn Fn(u32) -> Option<String>) -> Value {
    let txt = |id: u32| if opts.text { text(id).map_or(Value::Null, Value::String) } else { Value::Null };
    let triple = |lp: Option<f32>, id: u32| json!([lp.map(finite), id, txt(id)]);
    let list = |xs: &[(f32, u32)]| Value::Array(xs.iter().map(|&(lp, id)| triple(Some(lp), id)).collect());
    let mut m = serde_json::Map::new();
    let input_tokens: Vec<Value> =
        c.input.iter().map(|p| p.as_ref().map_or_else(|| triple(None, prompt[0]), |p| triple(Some(p.logprob), p.token))).collect();
    m.insert("inputTokenLogprobs".into(), Value::Array(input_tokens));
    m.insert("outputTokenLogprobs".into(), c.output.iter().map(|p| triple(Some(p.logprob), p.token)).collect());
    if opts.top_n > 0 {
        m.insert("inputTopLogprobs".into(), c.input.iter().map(|p| p.as_ref().map_or(Value::Null, |p| list(&p.top))).collect());
        m.insert("outputTopLogprobs".into(), c.output.iter().map(|p| list(&p.top)).collect());
    }
    if !opts.token_ids.is_empty() {
        m.insert("inputTokenIdsLogprobs".into(), c.input.iter().map(|p| p.as_ref().map_or(Value::Null, |p| list(&p.ids))).collect());
        m.insert("outputTokenIdsLogprobs".into(), c.output.iter().map(|p| list(&p.ids)).collect());
    }
    Value::Object(m)
}

/// JSON has no -inf: a banned token's logprob is reported as the most negative f32, as SGLang clamps.
fn finite(x: f32) -> f32 {
    if x.is_finite() {
        x
    } else {
        f32::MIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_top_and_ids_by_hand() {
        let row = [1.0f32, 3.0, 2.0, 3.0];
        let opts = ReturnOptions { logprob: true, top_n: 3, token_ids: vec![0], ..Default::default() };
        let p = PositionLogprobs::of(&row, 1.0, 2, &opts);
        let z = (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp()).ln() as f32;
        assert!((p.logprob - (2.0 - z)).abs() < 1e-6);
        // Ties keep the lower id first.
        assert_eq!(p.top.iter().map(|t| t.1).collect::<Vec<_>>(), vec![1, 3, 2]);
        assert!((p.ids[0].0 - (1.0 - z)).abs() < 1e-6);
        // Temperature 2 halves the logits before normalising.
        let p2 = PositionLogprobs::of(&row, 2.0, 0, &opts);
        let z2 = (0.5f64.exp() + 2.0 * 1.5f64.exp() + 1f64.exp()).ln() as f32;
        assert!((p2.logprob - (0.5 - z2)).abs() < 1e-6);
        let total: f32 = (0..4).map(|i| PositionLogprobs::of(&row, 2.0, i, &opts).logprob.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn options_parse_and_reject() {
        let o = ReturnOptions::from_json(&json!({"returnLogprob": true, "logprob_start_len": 3, "topLogprobsNum": 2, "tokenIdsLogprob": [1, 5]}), 10, false).unwrap();
        assert_eq!((o.logprob, o.start, o.top_n, o.token_ids.clone()), (true, Some(3), 2, vec![1, 5]));
        assert_eq!(o.prompt_start(2), Some(2));
        for bad in [
            json!({"topLogprobsNum": -1}),
            json!({"logprobStartLen": -2}),
            json!({"tokenIdsLogprob": [10]}),
            json!({"returnLogprob": 1}),
            json!({"returnHiddenStates": true}),
            json!({"bogus": 1}),
        ] {
            let e = ReturnOptions::from_json(&bad, 10, false).unwrap_err();
            assert_eq!(e.code(), "ERR_INVALID_INPUT", "{bad}");
        }
    }
}

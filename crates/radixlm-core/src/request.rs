//! Request state: counters, page table, sampler and text state. No channels (the engine keeps those).
//!
//! ```text
//!   tokens = prompt ++ output          kv_len = how many of them have K/V in the cache
//!   | prompt ............ | output .. |
//!   |<------ kv_len ----->|             the rest is computed in coming passes (prefill chunks, or
//!                                        everything again after a retraction)
//! ```

use std::borrow::Cow;
use std::time::Instant;

use tokenizers::Tokenizer;

use crate::detok::{Detokenizer, StopText};
use crate::logprobs::{Collected, PositionLogprobs, ReturnOptions};
use crate::memory::PageTable;
use crate::sampling::grammar::Grammar;
use crate::sampling::{RequestSampler, SamplingParams};

#[derive(Debug, Clone, PartialEq)]
pub enum FinishReason {
    StopToken(u32),
    StopString(String),
    /// A `stopRegex` pattern matched (SGLang's FINISHED_MATCHED_REGEX); reported like a stop string.
    StopRegex(String),
    Length(usize),
    Abort(String),
}

pub struct Request {
    pub id: u64,
    pub rid: String,
    pub prompt: Vec<u32>,
    pub output: Vec<u32>,
    pub params: SamplingParams,
    pub sampler: RequestSampler,
    pub pages: PageTable,
    pub kv_len: usize,
    /// Ids that end this request (EOS unless ignoreEos, plus stopTokenIds).
    pub stop_ids: Vec<u32>,
    /// Longest the sequence may grow (context length).
    pub max_seq_len: usize,
    pub stream: bool,
    pub detok: Option<Detokenizer>,
    pub text: StopText,
    pub finish: Option<FinishReason>,
    /// Prompt tokens served from the prefix cache when the request was first admitted.
    pub cached_tokens: usize,
    pub retractions: usize,
    /// Admitted to the running batch at least once.
    pub admitted: bool,
    /// Logprobs / hidden states asked for, and what has been collected so far.
    pub ret: ReturnOptions,
    pub collected: Collected,
    pub arrived: Instant,
    /// Structured output (`jsonSchema` / `regex` / `ebnf`): this sample's grammar state. It advances only
    /// in `accept`, once per sampled token, so a retracted request (KV recomputed, outputs kept) never
    /// feeds it a token twice.
    pub grammar: Option<Grammar>,
    /// The sampling seed (the host sampler's RNG is seeded from it; a device sampler hashes it with the
    /// output position).
    pub seed: u64,
}

impl Request {
    /// A fresh request: nothing computed, no text state (the engine adds detokenizer, stop strings,
    /// return options and grammar for what the caller asked).
    pub fn new(id: u64, rid: String, prompt: Vec<u32>, params: SamplingParams, seed: u64, stop_ids: Vec<u32>, max_seq_len: usize) -> Self {
        Request {
            id,
            rid,
            sampler: RequestSampler::new(seed, &prompt),
            detok: None,
            text: StopText::new(Vec::new()),
            prompt,
            output: Vec::new(),
            params,
            pages: PageTable::default(),
            kv_len: 0,
            stop_ids,
            max_seq_len,
            stream: false,
            finish: None,
            cached_tokens: 0,
            retractions: 0,
            admitted: false,
            ret: ReturnOptions::default(),
            collected: Collected::default(),
            arrived: Instant::now(),
            grammar: None,
            seed,
        }
    }

    /// Whether the next token can be drawn on the device from the raw logits: no state the device
    /// sampler lacks (penalty counts, grammar, bias, a min-new-tokens ban, logprobs to report).
    pub fn device_sampleable(&self) -> bool {
        let p = &self.params;
        self.grammar.is_none()
            && !self.ret.logprob
            && p.frequency_penalty == 0.0
            && p.presence_penalty == 0.0
            && p.repetition_penalty == 1.0
            && p.logit_bias.is_empty()
            && self.banned_now().is_empty()
    }

    pub fn seq_len(&self) -> usize {
        self.prompt.len() + self.output.len()
    }

    pub fn token_at(&self, i: usize) -> u32 {
        if i < self.prompt.len() {
            self.prompt[i]
        } else {
            self.output[i - self.prompt.len()]
        }
    }

    /// The first `n` tokens of prompt ++ output (borrowed while they are all prompt).
    pub fn tokens(&self, n: usize) -> Cow<'_, [u32]> {
        seq_tokens(&self.prompt, &self.output, n)
    }

    /// How many leading tokens may come from the prefix cache: positions whose prompt logprobs or hidden
    /// states are still wanted must be computed (and the last token always is).
    pub fn cacheable_prefix(&self) -> usize {
        let p = self.prompt.len();
        let mut n = self.seq_len() - 1;
        if let Some(start) = self.ret.prompt_start(p) {
            if self.collected.input_next < p {
                // Token t's logprob comes from the logits at t - 1.
                n = n.min(start.max(self.collected.input_next).saturating_sub(1));
            }
        }
        if self.ret.hidden && self.collected.hidden_next < p {
            n = n.min(self.collected.hidden_next);
        }
        n
    }

    /// Keeps the prompt logprobs and hidden states a pass produced (each position once, in order).
    pub fn record_rows(&mut self, prompt_rows: Vec<(usize, Vec<f32>)>, hidden: Vec<(usize, Vec<f32>)>) {
        if let Some(start) = self.ret.prompt_start(self.prompt.len()) {
            let c = &mut self.collected;
            c.input_next = c.input_next.max(start);
            if c.input_next == 0 {
                c.input.push(None); // nothing predicts the first token
                c.input_next = 1;
            }
            for (t, row) in prompt_rows {
                if t == c.input_next {
                    c.input.push(Some(PositionLogprobs::of(&row, 1.0, self.prompt[t], &self.ret)));
                    c.input_next += 1;
                }
            }
        }
        for (p, row) in hidden {
            if p == self.collected.hidden_next {
                self.collected.hidden.push(row);
                self.collected.hidden_next += 1;
            }
        }
    }

    /// Logprobs of a sampled token under the distribution it was drawn from (before truncation).
    pub fn record_output_logprob(&mut self, row: &[f32], token: u32) {
        if self.ret.logprob {
            let t = if self.params.is_greedy() { 1.0 } else { self.params.temperature };
            self.collected.output.push(PositionLogprobs::of(row, t, token, &self.ret));
        }
    }

    /// How many leading tokens of prompt ++ output are known to the host: all, except from a `FUTURE`
    /// placeholder on (a token a pass in flight is drawing). Only these may key the prefix cache.
    pub fn known_len(&self) -> usize {
        let unknown = self.output.iter().position(|&t| t & crate::runner::FUTURE != 0);
        self.prompt.len() + unknown.unwrap_or(self.output.len())
    }

    /// Tokens still to be run through the model before the next sample.
    pub fn pending(&self) -> usize {
        self.seq_len() - self.kv_len
    }

    /// Ids the sampler may not pick yet (stop ids before `minNewTokens`).
    pub fn banned_now(&self) -> &[u32] {
        if self.output.len() < self.params.min_new_tokens {
            &self.stop_ids
        } else {
            &[]
        }
    }

    /// Records a sampled token, updates the text and decides whether the request is finished.
    /// The text becomes visible to the caller through `release`.
    pub fn accept(&mut self, token: u32, tk: Option<&Tokenizer>) {
        self.accept_at(self.output.len(), token, tk);
    }

    /// `accept` for output index `idx`: the next one, or a `FUTURE` placeholder pushed when the pass
    /// that draws it was launched (overlap). Placeholders after it (the pass launched since) are dropped
    /// if the request ends here; their K/V, computed or not, stays within `kv_len <= seq_len`.
    pub fn accept_at(&mut self, idx: usize, token: u32, tk: Option<&Tokenizer>) {
        if idx == self.output.len() {
            self.output.push(token);
        } else {
            self.output[idx] = token;
        }
        let n = idx + 1;
        self.decide(n, token, tk);
        if self.finish.is_some() && self.output.len() > n {
            self.output.truncate(n);
            self.kv_len = self.kv_len.min(self.seq_len());
        }
    }

    /// Whether the token at output index `idx` will end the request whatever it is (length cap or
    /// context), so no pass needs to run after the one that draws it.
    pub fn ends_at(&self, idx: usize) -> bool {
        idx + 1 >= self.params.max_new_tokens || self.prompt.len() + idx + 1 >= self.max_seq_len
    }

    /// The checks of `accept` once the `n`-th output token is in place.
    fn decide(&mut self, n: usize, token: u32, tk: Option<&Tokenizer>) {
        self.sampler.observe(token);
        // Structured output: advance the grammar (the mask allowed `token`, so this fails only on an
        // internal grammar error, which ends the request).
        if let Some(Err(e)) = self.grammar.as_mut().map(|g| g.commit(token)) {
            self.finish = Some(FinishReason::Abort(e));
            return;
        }
        let may_stop = n >= self.params.min_new_tokens;
        let stop_token = may_stop && self.stop_ids.contains(&token);
        if let (Some(detok), Some(tk)) = (self.detok.as_mut(), tk) {
            // A matched stop token stays out of the text unless noStopTrim (SGLang's trim rule). A stop
            // string or regex match is cut from the text, or kept through its end with noStopTrim.
            if !stop_token || self.params.no_stop_trim {
                let piece = detok.push(tk, token);
                let hit = self.text.push(&piece);
                if let (Some(mut hit), true) = (hit, may_stop) {
                    self.text.cut(&hit, self.params.no_stop_trim);
                    let stop = std::mem::take(&mut hit.stop);
                    self.finish = Some(if hit.regex { FinishReason::StopRegex(stop) } else { FinishReason::StopString(stop) });
                }
            }
        }
        if self.finish.is_none() {
            if stop_token {
                self.finish = Some(FinishReason::StopToken(token));
            } else if let Some(eos) = self.grammar.as_ref().filter(|g| g.is_done()).map(|g| g.eos()) {
                // Structured output complete: the grammar allows nothing but EOS. End now, without a
                // pass for that EOS, as a stop at the EOS id (SGLang: a terminated grammar is a matched
                // stop token). Checked before the length cap: the output is whole.
                self.finish = Some(FinishReason::StopToken(eos));
            } else if self.ends_at(n - 1) {
                self.finish = Some(FinishReason::Length(n));
            }
        }
    }

    /// Text that can go out now; at finish, also whatever the detokenizer still held back.
    pub fn release(&mut self, tk: Option<&Tokenizer>) -> String {
        let finished = self.finish.is_some();
        if finished && !matches!(self.finish, Some(FinishReason::StopString(_) | FinishReason::StopRegex(_))) {
            if let (Some(detok), Some(tk)) = (self.detok.as_mut(), tk) {
                let rest = detok.flush(tk);
                self.text.push(&rest);
            }
        }
        self.text.take_releasable(finished)
    }
}

/// The first `n` tokens of `prompt ++ output`; a free function so callers can borrow other fields of the
/// request mutably at the same time.
pub fn seq_tokens<'a>(prompt: &'a [u32], output: &[u32], n: usize) -> Cow<'a, [u32]> {
    if n <= prompt.len() {
        Cow::Borrowed(&prompt[..n])
    } else {
        let mut v = Vec::with_capacity(n);
        v.extend_from_slice(prompt);
        v.extend_from_slice(&output[..n - prompt.len()]);
        Cow::Owned(v)
    }
}

//! Structured output: `jsonSchema`, `regex` and `ebnf` sampling params, enforced with llguidance.
//! Everything that touches llguidance lives here.
//!
//! - [`GrammarCompiler`]: built once per engine (lazily, on the first grammar request) from the
//!   engine's tokenizer: every token id's bytes in a token trie, plus llguidance's parser factory.
//! - [`GrammarCompiler::compile`]: one grammar per request, on the caller's thread; an invalid or
//!   unsupported grammar is `ERR_INVALID_SAMPLING_PARAMS` with llguidance's message.
//! - [`Grammar`]: one per sample, on the engine thread: before each sample [`Grammar::mask_logits`]
//!   sets every token the grammar cannot take next to -inf (before penalties, temperature and the
//!   top-k/top-p/min-p cuts, so the output is valid at any temperature); after it
//!   [`Grammar::commit`] advances the grammar by the drawn token; [`Grammar::is_done`] says the
//!   grammar can take nothing more but EOS, which ends the request (finish reason stop, EOS).
//!
//! Token bytes: byte-level BPE (GPT-2's byte-to-unicode alphabet mapped back to bytes) or
//! SentencePiece-style byte fallback (`<0xNN>`, `▁` for a space), chosen by the tokenizer's decoder.
//! Special tokens are marked as such (llguidance then never allows them inside text); ids the model
//! has past the tokenizer's vocabulary become unreachable special placeholders.
//!
//! `ebnf` takes llguidance's Lark-like syntax (`start: ...`, rules in lower case, TERMINALS in upper
//! case, "strings", /regexes/, `|`, `*`, `+`, `?`, `{m,n}`, `%json {...}`) and, for grammars written for
//! SGLang/xgrammar or llama.cpp, GBNF (`root ::= ...`), translated to Lark by [`gbnf_to_lark`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use tokenizers::{DecoderWrapper, Tokenizer};

use crate::error::{Error, Result};

/// The grammar a request asked for (at most one per request, as SGLang).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GrammarSpec {
    /// A JSON Schema, as JSON text.
    JsonSchema(String),
    Regex(String),
    /// Lark-like (llguidance) or GBNF grammar text.
    Ebnf(String),
}

impl GrammarSpec {
    /// The sampling-param key (camelCase) it came from, for error messages.
    pub fn key(&self) -> &'static str {
        match self {
            GrammarSpec::JsonSchema(_) => "jsonSchema",
            GrammarSpec::Regex(_) => "regex",
            GrammarSpec::Ebnf(_) => "ebnf",
        }
    }
}

/// The token environment llguidance sees: our trie plus our tokenizer (for canonical tokenization of
/// text the grammar forces).
struct TokenEnv {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for TokenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer.encode(text, false).map(|e| e.get_ids().to_vec()).unwrap_or_default()
        })
    }
}

/// Per engine: the token trie and llguidance's parser factory. Cheap to share (`Arc`).
pub struct GrammarCompiler {
    factory: ParserFactory,
    /// The EOS a finished grammar reports (the first of the model's EOS ids), and all of them.
    eos: Option<u32>,
    eos_ids: Arc<[u32]>,
    /// Fresh matchers of recently compiled grammars: a batch of thousands of prompts under one schema
    /// compiles it once and deep-copies the matcher per request (~1 ms a compile on the caller's thread
    /// otherwise). Bounded; the oldest entry goes first.
    cache: Mutex<GrammarCache>,
}

/// How many compiled grammars [`GrammarCompiler`] keeps.
const GRAMMAR_CACHE: usize = 64;

#[derive(Default)]
struct GrammarCache {
    fresh: HashMap<GrammarSpec, Matcher>,
    order: VecDeque<GrammarSpec>,
}

impl GrammarCache {
    fn get(&self, spec: &GrammarSpec) -> Option<Matcher> {
        self.fresh.get(spec).map(Matcher::deep_clone)
    }

    fn put(&mut self, spec: GrammarSpec, fresh: &Matcher) {
        if self.fresh.contains_key(&spec) {
            return;
        }
        if self.order.len() == GRAMMAR_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.fresh.remove(&old);
            }
        }
        self.order.push_back(spec.clone());
        self.fresh.insert(spec, fresh.deep_clone());
    }
}

/// GPT-2's byte-level alphabet, inverted: the char standing for each byte -> the byte.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut map = HashMap::with_capacity(256);
    for b in 0..=255u8 {
        if printable(b) {
            map.insert(char::from(b), b);
        } else {
            map.insert(char::from_u32(next).expect("valid char"), b);
            next += 1;
        }
    }
    map
}

fn has_byte_fallback(d: &DecoderWrapper) -> bool {
    match d {
        DecoderWrapper::ByteFallback(_) => true,
        DecoderWrapper::Sequence(s) => s.get_decoders().iter().any(has_byte_fallback),
        _ => false,
    }
}

/// The bytes each token id stands for; special tokens get the trie's special marker in front of their
/// name, and ids with no token (model vocab > tokenizer vocab) a special placeholder.
pub fn token_bytes(tk: &Tokenizer, vocab_size: usize) -> Vec<Vec<u8>> {
    let special = |name: &str| {
        let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        b.extend_from_slice(name.as_bytes());
        b
    };
    let added = tk.get_added_tokens_decoder();
    let fallback = tk.get_decoder().is_some_and(has_byte_fallback);
    let chars = byte_level_chars();
    (0..vocab_size as u32)
        .map(|id| {
            if let Some(a) = added.get(&id) {
                // Added tokens are matched whole in text; their content is plain text, not byte-level.
                return if a.special { special(&a.content) } else { a.content.clone().into_bytes() };
            }
            let Some(name) = tk.id_to_token(id) else { return special(&format!("<[{id}]>")) };
            if fallback {
                if let Some(hex) = name.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')) {
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        return vec![b];
                    }
                }
                name.replace('\u{2581}', " ").into_bytes()
            } else {
                // A name outside the byte alphabet cannot be produced by byte-level BPE: unreachable.
                name.chars().map(|c| chars.get(&c).copied()).collect::<Option<Vec<u8>>>().unwrap_or_else(|| special(&name))
            }
        })
        .collect()
}

fn grammar_err(spec: &GrammarSpec, msg: impl std::fmt::Display) -> Error {
    Error::invalid_params(format!("samplingParams.{}: {msg}", spec.key()))
}

impl GrammarCompiler {
    /// `vocab_size` is the model's (rows of logits); `eos_ids` the model's EOS ids.
    pub fn new(tk: &Tokenizer, vocab_size: usize, eos_ids: &[u32]) -> Result<Self> {
        let words = token_bytes(tk, vocab_size);
        let eos_ids: Vec<u32> = eos_ids.iter().copied().filter(|&e| (e as usize) < vocab_size).collect();
        let info = TokRxInfo::new(vocab_size as u32, eos_ids.first().copied().unwrap_or(0));
        let mut trie = TokTrie::from(&info, &words);
        if eos_ids.len() > 1 {
            trie = trie.with_eos_tokens(&eos_ids);
        }
        let env: TokEnv = Arc::new(TokenEnv { trie, tokenizer: tk.clone() });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| Error::internal(format!("grammar engine: {e}")))?;
        factory.quiet();
        // Errors name the problem, without a dump of the parser state and grammar.
        factory.limits_mut().verbose_errors = false;
        Ok(GrammarCompiler { factory, eos: eos_ids.first().copied(), eos_ids: eos_ids.into(), cache: Mutex::default() })
    }

    /// Compiles one request's grammar (on the caller's thread: a bad grammar fails the call, not the
    /// engine).
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Grammar> {
        let Some(eos) = self.eos else {
            return Err(grammar_err(spec, "structured output needs the model's EOS token id, and this model declares none"));
        };
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(spec);
        let matcher = match cached {
            Some(m) => m,
            None => {
                let m = self.compile_fresh(spec)?;
                self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(spec.clone(), &m);
                m
            }
        };
        Ok(Grammar { matcher, eos, eos_ids: self.eos_ids.clone(), mask_ns: 0, masks: 0 })
    }

    fn compile_fresh(&self, spec: &GrammarSpec) -> Result<Matcher> {
        let top = match spec {
            GrammarSpec::JsonSchema(text) => {
                let mut schema: Value = serde_json::from_str(text).map_err(|e| grammar_err(spec, format!("not valid JSON: {e}")))?;
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(grammar_err(spec, "a JSON Schema must be an object (or true/false)"));
                }
                if let Some(o) = schema.as_object_mut() {
                    // Compact JSON (", " and ": " between items, no other whitespace) unless the schema
                    // says otherwise with llguidance's `x-guidance` options: a small model sampled at a
                    // high temperature cannot then pad the output with whitespace until the length cap.
                    if !o.contains_key("x-guidance") {
                        o.insert(
                            "x-guidance".into(),
                            serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
                        );
                    }
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            // Rust `regex` syntax, with `\d` and `\w` ASCII-only (as in JavaScript, JSON Schema patterns
            // and xgrammar, SGLang's default backend): `\d{4}` means four digits 0-9.
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_lark(format!("start: /{}/", llguidance::regex_to_lark(rx, "dw"))),
            GrammarSpec::Ebnf(text) => {
                let lark = if is_gbnf(text) { gbnf_to_lark(text).map_err(|e| grammar_err(spec, e))? } else { text.clone() };
                TopLevelGrammar::from_lark(lark)
            }
        };
        let parser = self.factory.create_parser(top).map_err(|e| grammar_err(spec, e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(grammar_err(spec, e));
        }
        Ok(matcher)
    }

    pub fn vocab_size(&self) -> usize {
        self.factory.tok_env().tok_trie().vocab_size()
    }
}

/// One sample's grammar state (engine thread).
pub struct Grammar {
    matcher: Matcher,
    /// The EOS a finished grammar reports, and every id the grammar treats as EOS.
    eos: u32,
    eos_ids: Arc<[u32]>,
    /// Time spent computing masks, and how many (for the engine's counters and tests).
    pub mask_ns: u64,
    pub masks: u64,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar").field("done", &self.is_done()).field("error", &self.matcher.get_error()).finish()
    }
}

/// What [`Grammar::mask_logits`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// The logits of every disallowed token are now -inf; sample as usual.
    Applied,
    /// Nothing but EOS is allowed: the output is complete (end the request without sampling).
    Done,
}

impl Grammar {
    /// An independent copy (each sample of `n > 1` walks its own grammar).
    pub fn fork(&self) -> Grammar {
        Grammar { matcher: self.matcher.deep_clone(), eos: self.eos, eos_ids: self.eos_ids.clone(), mask_ns: 0, masks: 0 }
    }

    /// The allowed next tokens (bit per token id).
    pub fn mask(&mut self) -> std::result::Result<SimpleVob, String> {
        let t = std::time::Instant::now();
        let m = self.matcher.compute_mask().map_err(|e| format!("grammar: {e}"));
        self.mask_ns += t.elapsed().as_nanos() as u64;
        self.masks += 1;
        m
    }

    /// Sets the logits of every token the grammar cannot take next to -inf.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> std::result::Result<Mask, String> {
        if self.is_done() {
            return Ok(Mask::Done);
        }
        let mask = self.mask()?;
        let mut other_than_eos = false;
        let eos_ids = &self.eos_ids;
        mask.iter_set_entries(|i| other_than_eos |= !eos_ids.contains(&(i as u32)));
        if !other_than_eos {
            return Ok(Mask::Done);
        }
        mask.iter_unset_entries(|i| {
            if let Some(l) = logits.get_mut(i) {
                *l = f32::NEG_INFINITY;
            }
        });
        // Ids past the trie (should not exist: it is built with the model's vocabulary) stay banned.
        for l in logits.iter_mut().skip(mask.len()) {
            *l = f32::NEG_INFINITY;
        }
        Ok(Mask::Applied)
    }

    /// Advances the grammar by a sampled token. EOS after the end is taken as it is (a finished grammar
    /// allows nothing else).
    pub fn commit(&mut self, token: u32) -> std::result::Result<(), String> {
        if self.eos_ids.contains(&token) && self.is_done() {
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(|e| format!("grammar: {e}"))
    }

    /// The grammar can take nothing more (but EOS): the output is complete.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }

    /// The id a finished grammar reports as the matched stop token.
    pub fn eos(&self) -> u32 {
        self.eos
    }
}

/// GBNF (llama.cpp / xgrammar: `root ::= ...`) rather than Lark (`start: ...`)? Decided by the first line
/// that is not blank or a comment: `name ::= ...` is GBNF.
pub fn is_gbnf(text: &str) -> bool {
    let Some(line) = text.lines().map(str::trim_start).find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("//")) else {
        return false;
    };
    let name_len = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(line.len());
    name_len > 0 && line[name_len..].trim_start().starts_with("::=")
}

/// Translates GBNF to llguidance's Lark syntax: `name ::= body` becomes `name: body` (names
/// lower-cased, `-` -> `_`, `root` -> `start`), `[...]` classes and `.` become /regexes/, `#` comments
/// go; strings, `|`, `( )`, `*`, `+`, `?` and `{m,n}` carry over.
pub fn gbnf_to_lark(text: &str) -> std::result::Result<String, String> {
    let rule_name = |n: &str| -> String {
        if n == "root" {
            "start".into()
        } else {
            // `start` is taken by root; keep a user rule of that name apart.
            let n = n.to_ascii_lowercase().replace('-', "_");
            if n == "start" {
                "start_".into()
            } else {
                n
            }
        }
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 64);
    let mut i = 0;
    let mut defined = Vec::new();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    while i < chars.len() {
        let c = chars[i];
        match c {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                // A string literal, escapes copied as they are (GBNF and Lark share \n \t \" \\ \xHH \uHHHH).
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if i < chars.len() && chars[i] == '\n' {
                        return Err("a string literal runs past the end of the line".into());
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated string literal".into());
                }
                i += 1;
                out.extend(&chars[start..i]);
            }
            '[' => {
                let start = i;
                i += 1;
                if i < chars.len() && chars[i] == '^' {
                    i += 1;
                }
                // A `]` first in the class is a literal.
                if i < chars.len() && chars[i] == ']' {
                    i += 1;
                }
                while i < chars.len() && chars[i] != ']' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated character class".into());
                }
                i += 1;
                out.push('/');
                for &ch in &chars[start..i] {
                    if ch == '/' {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push('/');
            }
            '.' => {
                out.push_str("/./");
                i += 1;
            }
            c if is_name(c) && !c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && is_name(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                // Followed by `::=`: a rule definition, which must start a line.
                let mut j = i;
                while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
                    j += 1;
                }
                if chars[j..].starts_with(&[':', ':', '=']) {
                    if !out.trim_end_matches([' ', '\t']).is_empty() && !out.trim_end_matches([' ', '\t']).ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str(&rule_name(&name));
                    out.push_str(": ");
                    i = j + 3;
                    while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
                        i += 1;
                    }
                    defined.push(name);
                } else {
                    out.push_str(&rule_name(&name));
                }
            }
            '\n' => {
                // Rule bodies may span lines in GBNF; Lark continues a rule on lines that start with `|`
                // only, so join lines up to the next definition.
                out.push(' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if !defined.iter().any(|n| n == "root") {
        return Err("a GBNF grammar needs a `root ::= ...` rule".into());
    }
    Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
#[path = "grammar_tests.rs"]
mod tests;

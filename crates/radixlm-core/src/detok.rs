//! Incremental detokenization and stop-string matching for one request.
//!
//! `Detokenizer` turns ids into text a piece at a time without ever emitting a broken UTF-8 sequence:
//! it decodes a short window `ids[prefix..]` and releases only what extends `ids[prefix..read]`'s text
//! and does not end in U+FFFD (a code point still split across tokens). The window starts with a few
//! prompt tokens so decoders that depend on the previous token (leading-space rules) see context.
//!
//! `StopText` holds the decoded text and releases it to the caller only up to the point where it can
//! no longer turn out to be the start of a stop string, or of a stop regex match (`stop_regex.rs`).

use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::stop_regex::{RegexStop, StopRegexes};

const PROMPT_CONTEXT: usize = 5;

pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    skip_special: bool,
}

impl Detokenizer {
    pub fn new(prompt: &[u32], skip_special: bool) -> Self {
        let ids = prompt[prompt.len().saturating_sub(PROMPT_CONTEXT)..].to_vec();
        let n = ids.len();
        Detokenizer { ids, prefix: 0, read: n, skip_special }
    }

    /// Adds `id` and returns the newly complete text (possibly empty).
    pub fn push(&mut self, tk: &Tokenizer, id: u32) -> String {
        self.ids.push(id);
        self.release(tk, false)
    }

    /// Whatever is still held back (an incomplete code point at the very end), at finish.
    pub fn flush(&mut self, tk: &Tokenizer) -> String {
        self.release(tk, true)
    }

    fn release(&mut self, tk: &Tokenizer, force: bool) -> String {
        let before = tk.decode(&self.ids[self.prefix..self.read], self.skip_special).unwrap_or_default();
        let all = tk.decode(&self.ids[self.prefix..], self.skip_special).unwrap_or_default();
        if all.len() <= before.len() || (!force && all.ends_with('\u{FFFD}')) {
            return String::new();
        }
        match all.get(before.len()..) {
            Some(new) if all.starts_with(&before) => {
                let new = new.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                new
            }
            _ => String::new(),
        }
    }
}

pub struct StopText {
    pub text: String,
    /// Bytes of `text` already handed to the caller.
    pub sent: usize,
    stops: Vec<String>,
    longest: usize,
    regex: Option<RegexStop>,
}

pub struct StopHit {
    /// Byte range in `text` of the matched stop string or regex match.
    pub at: usize,
    pub end: usize,
    /// The stop string, or the pattern that matched.
    pub stop: String,
    pub regex: bool,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> Self {
        let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        StopText { text: String::new(), sent: 0, stops, longest, regex: None }
    }

    /// Adds stop regexes (each request walks its own state).
    pub fn with_regex(mut self, set: Option<Arc<StopRegexes>>) -> Self {
        self.regex = set.map(RegexStop::new);
        self
    }

    /// Appends decoded text; returns the earliest stop string that now occurs in the unsent region, else
    /// the leftmost stop regex match (SGLang checks stop strings first).
    pub fn push(&mut self, piece: &str) -> Option<StopHit> {
        let old = self.text.len();
        self.text.push_str(piece);
        if piece.is_empty() {
            return None;
        }
        // Checked even when a stop string hits, so the regex state always covers the whole text.
        let regex = self.regex.as_mut().and_then(|r| r.check(&self.text));
        let regex = regex.map(|m| StopHit { at: m.at, end: m.end, stop: m.pattern, regex: true });
        self.find_stop_string(old).or(regex)
    }

    fn find_stop_string(&self, old: usize) -> Option<StopHit> {
        if self.stops.is_empty() {
            return None;
        }
        // A match must end inside the new piece, so it starts at most `longest - 1` bytes before it.
        let mut from = old.saturating_sub(self.longest.saturating_sub(1)).max(self.sent.min(old));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hay = &self.text[from..];
        self.stops
            .iter()
            .filter_map(|s| hay.find(s.as_str()).map(|i| (from + i, s)))
            .min_by_key(|(at, s)| (*at, std::cmp::Reverse(s.len())))
            .map(|(at, s)| StopHit { at, end: at + s.len(), stop: s.clone(), regex: false })
    }

    /// Ends the text at a stop hit (keeping the matched text itself when `keep`).
    pub fn cut(&mut self, hit: &StopHit, keep: bool) {
        let end = if keep { hit.end } else { hit.at };
        self.text.truncate(end);
        self.sent = self.sent.min(end);
    }

    /// Text that can be released now: everything except a tail that is a prefix of some stop string or
    /// where a stop regex match may still start (so released text is never trimmed later).
    pub fn take_releasable(&mut self, finished: bool) -> String {
        let mut end = self.text.len();
        if !finished {
            let held = self
                .stops
                .iter()
                .map(|s| longest_suffix_prefix(&self.text[self.sent..], s))
                .max()
                .unwrap_or(0);
            end -= held;
            if let Some(r) = &self.regex {
                end = end.min(r.hold());
            }
        }
        let out = self.text[self.sent..end].to_string();
        self.sent = end;
        out
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop` (on char boundaries).
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&k| {
            let start = text.len() - k;
            text.is_char_boundary(start) && stop.is_char_boundary(k) && text[start..] == stop[..k]
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<String>, String) {
        let mut st = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for p in pieces {
            if let Some(hit) = st.push(p) {
                st.cut(&hit, false);
                out.push(st.take_releasable(true));
                return (out, Some(hit.stop), st.text);
            }
            out.push(st.take_releasable(false));
        }
        out.push(st.take_releasable(true));
        (out, None, st.text)
    }

    #[test]
    fn stop_across_pieces_is_never_streamed() {
        let (deltas, hit, text) = feed(&["</end>"], &["Hello </", "en", "d> tail"]);
        assert_eq!(hit.as_deref(), Some("</end>"));
        assert_eq!(text, "Hello ");
        assert_eq!(deltas.concat(), "Hello ");
        assert!(deltas.iter().all(|d| !d.contains('<')));
    }

    #[test]
    fn stop_inside_one_piece() {
        let (_, hit, text) = feed(&["gani"], &["the org", "anization"]);
        assert_eq!(hit.as_deref(), Some("gani"));
        assert_eq!(text, "the or");
    }

    #[test]
    fn held_prefix_is_released_when_it_diverges() {
        let (deltas, hit, text) = feed(&["STOP"], &["a ST", "ART"]);
        assert!(hit.is_none());
        assert_eq!(deltas, vec!["a ", "START", ""]);
        assert_eq!(text, "a START");
    }

    #[test]
    fn multibyte_text_and_stops() {
        let (deltas, hit, text) = feed(&["。"], &["日本", "の首都", "は東京", "。です"]);
        assert_eq!(hit.as_deref(), Some("。"));
        assert_eq!(text, "日本の首都は東京");
        assert_eq!(deltas.concat(), text);
    }
}

#[cfg(test)]
mod regex_tests {
    use rand::{Rng, SeedableRng};
    use regex::Regex;

    use super::*;

    const TEXTS: &[&str] = &[
        "I bought 12 apples and 3 pears; the end.",
        "Note: the ending is near, then the end! Done.",
        "日本の首都は東京。ですね。です",
        "xx-xxy-xxxz, then STOP. and more",
        "no match in here at all, none",
    ];
    const PATTERNS: &[&str] = &[r"\d+ apples", r"\bend\b", "。です", r"[A-Z][a-z]+:", "x{3}", r"(?i)stop\.", r"e.*!"];

    /// The oracle: the first prefix (in pieces) whose text matches, and the leftmost match in it.
    fn oracle(pieces: &[String], patterns: &[&str]) -> Option<(usize, usize, usize)> {
        let res: Vec<Regex> = patterns.iter().map(|p| Regex::new(p).unwrap()).collect();
        let mut text = String::new();
        for p in pieces {
            text.push_str(p);
            if let Some((at, _, end)) = res.iter().enumerate().filter_map(|(i, r)| r.find(&text).map(|m| (m.start(), i, m.end()))).min() {
                return Some((text.len(), at, end));
            }
        }
        None
    }

    /// Random splits of every text on char boundaries, every pattern alone and all together, trimmed or
    /// kept: the stop comes where the oracle says, and the released pieces add up to the final text.
    #[test]
    fn streamed_text_is_never_taken_back_and_matches_the_oracle() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sets: Vec<Vec<&str>> = PATTERNS.iter().map(|p| vec![*p]).chain([PATTERNS.to_vec()]).collect();
        let mut stops = 0;
        for text in TEXTS {
            let chars: Vec<char> = text.chars().collect();
            for _ in 0..40 {
                let mut pieces = Vec::new();
                let mut i = 0;
                while i < chars.len() {
                    let n = rng.random_range(0..=4).min(chars.len() - i);
                    pieces.push(chars[i..i + n].iter().collect::<String>());
                    i += n;
                }
                for set in &sets {
                    for keep in [false, true] {
                        let compiled = StopRegexes::new(set.iter().map(|s| s.to_string()).collect()).unwrap();
                        let mut st = StopText::new(Vec::new()).with_regex(Some(Arc::new(compiled)));
                        let mut released = String::new();
                        let mut hit = None;
                        for p in &pieces {
                            if let Some(h) = st.push(p) {
                                assert!(h.at >= st.sent, "{text:?} {set:?}: match at {} before released {}", h.at, st.sent);
                                st.cut(&h, keep);
                                hit = Some((st.text.len(), h));
                                break;
                            }
                            released += &st.take_releasable(false);
                        }
                        released += &st.take_releasable(true);
                        assert_eq!(released, st.text, "{text:?} {set:?} {pieces:?}");
                        let want = oracle(&pieces, set);
                        match (want, hit) {
                            (None, None) => assert_eq!(st.text, *text),
                            (Some((_, at, end)), Some((len, h))) => {
                                stops += 1;
                                assert_eq!((h.at, h.end, h.regex), (at, end, true), "{text:?} {set:?} {pieces:?}");
                                assert_eq!(len, if keep { end } else { at });
                                assert!(set.contains(&h.stop.as_str()));
                            }
                            (w, h) => panic!("{text:?} {set:?} {pieces:?}: oracle {w:?}, got {:?}", h.map(|h| h.1.at)),
                        }
                    }
                }
            }
        }
        assert!(stops > 500, "only {stops} stops");
    }

    #[test]
    fn text_that_cannot_start_a_match_streams_at_once() {
        let set = Arc::new(StopRegexes::new(vec![r"\d+ apples".into()]).unwrap());
        let mut st = StopText::new(Vec::new()).with_regex(Some(set));
        let mut step = |piece: &str| {
            assert!(st.push(piece).is_none());
            st.take_releasable(false)
        };
        assert_eq!(step("I have "), "I have ");
        assert_eq!(step("12"), "");
        assert_eq!(step(" ap"), "");
        assert_eq!(step("ricots"), "12 apricots");
    }

    #[test]
    fn stop_strings_are_checked_before_regexes() {
        let set = Arc::new(StopRegexes::new(vec!["b+".into()]).unwrap());
        let mut st = StopText::new(vec!["cd".into()]).with_regex(Some(set));
        let h = st.push("abbcd").unwrap();
        assert_eq!((h.at, h.stop.as_str(), h.regex), (3, "cd", false));
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    fn fixture(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../__test__").join(rel)
    }

    /// Streamed pieces concatenate to the one-shot decode and never contain U+FFFD unless the one-shot
    /// text has it at that point: greedy outputs of the tiny Qwen2 fixture include lone byte tokens.
    #[test]
    fn streaming_equals_one_shot_decode_on_real_outputs() {
        let tk = Tokenizer::from_file(fixture("fixtures/tiny-qwen2/tokenizer.json")).unwrap();
        let goldens: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("goldens/tiny-qwen2.json")).unwrap()).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
        let mut split_seen = false;
        for p in goldens["prompts"].as_array().unwrap() {
            let (prompt, out) = (ids(&p["inputIds"]), ids(&p["greedyIds"]));
            for skip in [true, false] {
                let mut d = Detokenizer::new(&prompt, skip);
                let mut text = String::new();
                for &t in &out {
                    let piece = d.push(&tk, t);
                    split_seen |= piece.is_empty();
                    text.push_str(&piece);
                }
                text.push_str(&d.flush(&tk));
                assert_eq!(text, tk.decode(&out, skip).unwrap(), "prompt {}", p["name"]);
            }
        }
        assert!(split_seen, "expected some token to be held back (partial UTF-8)");
    }

    #[test]
    fn multibyte_characters_split_across_byte_tokens() {
        let tk = Tokenizer::from_file(fixture("fixtures/tiny-qwen2/tokenizer.json")).unwrap();
        let text = "naïve 日本 🙂 done";
        let ids = tk.encode(text, false).unwrap().get_ids().to_vec();
        let mut d = Detokenizer::new(&[], true);
        let mut out = String::new();
        for &t in &ids {
            let piece = d.push(&tk, t);
            assert!(!piece.contains('\u{FFFD}'), "broken UTF-8 streamed: {piece:?}");
            out.push_str(&piece);
        }
        out.push_str(&d.flush(&tk));
        assert_eq!(out, text);
    }
}

//! Incremental detokenization and stop-string matching for one request.
//!
//! `Detokenizer` turns ids into text a piece at a time without ever emitting a broken UTF-8 sequence:
//! it decodes a short window `ids[prefix..]` and releases only what extends `ids[prefix..read]`'s text
//! and does not end in U+FFFD (a code point still split across tokens). The window starts with a few
//! prompt tokens so decoders that depend on the previous token (leading-space rules) see context.
//!
//! `StopText` holds the decoded text and releases it to the caller only up to the point where it can
//! no longer turn out to be the start of a stop string.

use tokenizers::Tokenizer;

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
}

pub struct StopHit {
    /// Byte offset in `text` where the stop string starts.
    pub at: usize,
    pub stop: String,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> Self {
        let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        StopText { text: String::new(), sent: 0, stops, longest }
    }

    /// Appends decoded text; returns the earliest stop string that now occurs in the unsent region.
    pub fn push(&mut self, piece: &str) -> Option<StopHit> {
        let old = self.text.len();
        self.text.push_str(piece);
        if self.stops.is_empty() || piece.is_empty() {
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
            .map(|(at, s)| StopHit { at, stop: s.clone() })
    }

    /// Ends the text at a stop hit (keeping the stop string itself when `keep`).
    pub fn cut(&mut self, hit: &StopHit, keep: bool) {
        let end = if keep { hit.at + hit.stop.len() } else { hit.at };
        self.text.truncate(end);
        self.sent = self.sent.min(end);
    }

    /// Text that can be released now: everything except a tail that is a prefix of some stop string.
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

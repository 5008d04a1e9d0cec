//! Stop regexes (`stopRegex`, SGLang's `stop_regex`): a request ends once its output text contains a match of
//! one of the patterns. Patterns use Rust `regex` syntax (no look-around, no backreferences); `^` / `\A` mean
//! the start of the output text. SGLang decodes a tail of the output ids after every token and runs Python's
//! `re.search` on it; here the text the detokenizer already produced is searched, from a point `hold`:
//!
//! ```text
//!   text:  | streamed ........ | held back ......... | new piece |
//!                               ^ hold                            ^ len
//!          no match can start    a match may still start here
//! ```
//!
//! `hold` only moves right. It passes a position p once no text appended later can make a match start at p:
//! the anchored lazy DFA of all the patterns (every match kind), run over `text[p..]`, is dead, or p lies more
//! than the longest possible match (`maximum_len` of the pattern's HIR, when finite) before the end.
//! So every match that was not already there starts at or after `hold`, and searching `text[hold..]` finds
//! it, the cost per token being the held-back text plus the new piece. Text before `hold` can never be trimmed,
//! which is what may be streamed: a stream shows nothing that a regex match later takes back. Where the lazy
//! DFA cannot decide (a Unicode `\b` next to non-ASCII text) it counts p as live: more is held, never less.
//!
//! The request ends at the first token after which a match exists (the caller, `StopText`, checks stop
//! strings first); its text ends where the leftmost match starts (ties: the earlier pattern), or where that
//! match ends with `noStopTrim`. Before `minNewTokens` a match does not stop the request; one that can
//! still grow stays held and may stop it later, as SGLang's look-back over the tail would.

use std::fmt;
use std::sync::Arc;

use regex::Regex;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

/// The compiled `stopRegex` patterns of one call, shared by its samples.
pub struct StopRegexes {
    patterns: Vec<String>,
    regexes: Vec<Regex>,
    /// All patterns at once, anchored: tells where a match can still start.
    live: DFA,
    /// Longest match of any pattern, in bytes; `None` if unbounded.
    max_len: Option<usize>,
}

impl StopRegexes {
    /// Compiles `patterns`; the error names the bad pattern (the caller adds the key).
    pub fn new(patterns: Vec<String>) -> Result<Self, String> {
        const SYNTAX: &str = "stopRegex uses Rust regex syntax: no look-around, no backreferences";
        let mut regexes = Vec::with_capacity(patterns.len());
        let mut max_len = Some(0);
        for p in &patterns {
            let invalid = |e: String| format!("invalid pattern {p:?} ({SYNTAX}): {e}");
            let re = Regex::new(p).map_err(|e| invalid(e.to_string()))?;
            let hir = regex_automata::util::syntax::parse(p).map_err(|e| invalid(e.to_string()))?;
            let props = hir.properties();
            // SGLang would stop after the first token; like an empty stop string, this is a mistake.
            if props.minimum_len() == Some(0) {
                return Err(format!("pattern {p:?} matches the empty string"));
            }
            max_len = max_len.zip(props.maximum_len()).map(|(a, b)| a.max(b));
            regexes.push(re);
        }
        let live = DFA::builder()
            .configure(DFA::config().match_kind(MatchKind::All).unicode_word_boundary(true))
            .build_many(&patterns)
            .map_err(|e| format!("patterns too large: {e}"))?;
        Ok(StopRegexes { patterns, regexes, live, max_len })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl PartialEq for StopRegexes {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl fmt::Debug for StopRegexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StopRegexes").field(&self.patterns).finish()
    }
}

/// A match: its byte range in the text and the pattern that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct RegexMatch {
    pub at: usize,
    pub end: usize,
    pub pattern: String,
}

/// One request's regex stop state.
pub struct RegexStop {
    set: Arc<StopRegexes>,
    cache: Cache,
    hold: usize,
}

impl RegexStop {
    pub fn new(set: Arc<StopRegexes>) -> Self {
        let cache = set.live.create_cache();
        RegexStop { set, cache, hold: 0 }
    }

    /// Byte offset before which no match can start, now or later (a char boundary).
    pub fn hold(&self) -> usize {
        self.hold
    }

    /// After `text` grew: the leftmost match (ties: the earlier pattern), if there is one now.
    pub fn check(&mut self, text: &str) -> Option<RegexMatch> {
        let from = self.hold;
        let hit = self
            .set
            .regexes
            .iter()
            .enumerate()
            .filter_map(|(i, re)| re.find_at(text, from).map(|m| (m.start(), i, m.end())))
            .min();
        self.advance(text);
        hit.map(|(at, i, end)| RegexMatch { at, end, pattern: self.set.patterns[i].clone() })
    }

    /// Moves `hold` past every position where no match can start any more.
    fn advance(&mut self, text: &str) {
        let mut p = self.hold;
        if let Some(max) = self.set.max_len {
            // A match still to come ends at or after the end, so it starts at most `max` bytes before it.
            p = p.max(floor_char_boundary(text, text.len().saturating_sub(max)));
        }
        while p < text.len() && !self.may_start_at(text, p) {
            p += text[p..].chars().next().map_or(1, char::len_utf8);
        }
        self.hold = p;
    }

    /// Whether some continuation of `text` has a match starting at `p`, as far as the lazy DFA can tell.
    fn may_start_at(&mut self, text: &str, p: usize) -> bool {
        let dfa = &self.set.live;
        let bytes = text.as_bytes();
        let cfg = start::Config::new().anchored(Anchored::Yes).look_behind(p.checked_sub(1).map(|i| bytes[i]));
        let Ok(mut sid) = dfa.start_state(&mut self.cache, &cfg) else { return true };
        for &b in &bytes[p..] {
            match dfa.next_state(&mut self.cache, sid, b) {
                Ok(next) if next.is_dead() => return false,
                Ok(next) if !next.is_quit() => sid = next,
                _ => return true,
            }
        }
        true
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> Arc<StopRegexes> {
        Arc::new(StopRegexes::new(patterns.iter().map(|s| s.to_string()).collect()).unwrap())
    }

    /// Feeds `pieces` one at a time; returns the first match, the piece index it came with, and the holds
    /// seen after each piece.
    fn feed(patterns: &[&str], pieces: &[&str]) -> (Option<(RegexMatch, usize)>, Vec<usize>) {
        let mut st = RegexStop::new(set(patterns));
        let mut text = String::new();
        let mut holds = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            text.push_str(p);
            let hit = st.check(&text);
            holds.push(st.hold());
            if let Some(m) = hit {
                return (Some((m, i)), holds);
            }
        }
        (None, holds)
    }

    fn hit(at: usize, end: usize, pattern: &str) -> RegexMatch {
        RegexMatch { at, end, pattern: pattern.into() }
    }

    #[test]
    fn match_ending_in_the_newest_piece() {
        let (m, _) = feed(&[r"world\s"], &["Hello", " world", " and", " more"]);
        assert_eq!(m, Some((hit(6, 12, r"world\s"), 2)));
    }

    #[test]
    fn match_spanning_pieces() {
        let (m, holds) = feed(&[r"\d+ apples"], &["I have 1", "2 ap", "ples", " today"]);
        assert_eq!(m, Some((hit(7, 16, r"\d+ apples"), 2)));
        // While "12 ap" could still become a match, it is held back; "I have " never could.
        assert_eq!(holds[..2], [7, 7]);
    }

    #[test]
    fn among_several_patterns_the_leftmost_match_wins() {
        let (m, _) = feed(&["zzz", r"b[a-z]d", "x+y"], &["a ", "xxy bad"]);
        assert_eq!(m, Some((hit(2, 5, "x+y"), 1)));
        // Same start: the earlier pattern.
        let (m, _) = feed(&["ab", "a"], &["cab"]);
        assert_eq!(m, Some((hit(1, 3, "ab"), 0)));
    }

    #[test]
    fn leftmost_start_is_where_the_text_is_cut() {
        // The earliest match start among the matches present, not the first pattern that matches.
        let (m, _) = feed(&["two", "one"], &["one two"]);
        assert_eq!(m, Some((hit(0, 3, "one"), 0)));
    }

    #[test]
    fn no_match_releases_text_that_cannot_start_one() {
        let (m, holds) = feed(&[r"END\."], &["abc", " EN", "X def", " E"]);
        assert!(m.is_none());
        // Held from "EN" until it diverges, then from the trailing "E".
        assert_eq!(holds, [3, 4, 11, 12]);
    }

    #[test]
    fn held_text_ends_where_no_match_can_start() {
        // After "xaaaaa", a match needs a 'b' within 3 more characters of its 'a': only the last 4 qualify.
        let (m, holds) = feed(&["a.{0,3}b"], &["xa", "aaaa", "aa"]);
        assert!(m.is_none());
        assert_eq!(holds, [1, 2, 4]);
    }

    #[test]
    fn bounded_patterns_never_hold_more_than_their_longest_match() {
        // The lazy DFA gives up on a Unicode `\b` next to non-ASCII bytes; the 2-byte bound still releases.
        let (m, holds) = feed(&[r"\bab\b"], &["é", "é", "é"]);
        assert!(m.is_none());
        assert_eq!(holds, [0, 2, 4]);
    }

    #[test]
    fn anchors_and_word_boundaries_see_the_whole_text() {
        // `^` is the start of the output, not of the searched window.
        let (m, _) = feed(&["^b"], &["a", "b", "b"]);
        assert!(m.is_none());
        // `\b` looks at the character before the window: "cat" in "concat" is no word.
        let (m, _) = feed(&[r"\bcat"], &["con", "cat!", " cat"]);
        assert_eq!(m, Some((hit(8, 11, r"\bcat"), 2)));
    }

    #[test]
    fn multibyte_text() {
        let (m, holds) = feed(&["。です"], &["日本", "の首都。", "です"]);
        assert_eq!(m, Some((hit(15, 24, "。です"), 2)));
        assert_eq!(holds[..2], [6, 15]);
    }

    #[test]
    fn unbounded_pattern_next_to_non_ascii_text_is_still_found() {
        let (m, holds) = feed(&[r"\bend\b.*!"], &["é", " end", " ok"]);
        assert!(m.is_none());
        assert_eq!(holds, [0, 0, 0], "undecided positions stay held");
        let (m, _) = feed(&[r"\bend\b.*!"], &["é", " end", " ok!"]);
        assert_eq!(m, Some((hit(3, 10, r"\bend\b.*!"), 2)));
    }

    #[test]
    fn invalid_patterns_are_errors() {
        let e = StopRegexes::new(vec!["(ab".into()]).unwrap_err();
        assert!(e.contains("\"(ab\"") && e.contains("Rust regex syntax"), "{e}");
        let e = StopRegexes::new(vec!["ok".into(), "a(?=b)".into()]).unwrap_err();
        assert!(e.contains("look-around"), "{e}");
        let e = StopRegexes::new(vec![r"(a)\1".into()]).unwrap_err();
        assert!(e.contains("backreferences"), "{e}");
        let e = StopRegexes::new(vec!["x*".into()]).unwrap_err();
        assert!(e.contains("empty string"), "{e}");
    }
}

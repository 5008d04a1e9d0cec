//! Grammar masks on the real default-model tokenizer (SmolLM2's byte-level BPE, read from the GGUF
//! that `npm run fetch-model` fetches): masks allow exactly the right continuations; random walks
//! inside the mask always give strings of the language.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::model::gguf::read_gguf;
use crate::model::tokenizer::TokenizerInfo;

struct Fixture {
    tk: TokenizerInfo,
    compiler: GrammarCompiler,
    bytes: Vec<Vec<u8>>,
    vocab: usize,
}

fn smollm() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::var_os("RADIXLM_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache").join("radixlm")
        });
        let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(path.is_file(), "the SmolLM2 GGUF is missing at {}: run `npm run fetch-model` first", path.display());
        let file = read_gguf(&path).unwrap();
        let tk = TokenizerInfo::from_gguf(&file).unwrap();
        let vocab = crate::models::config_from_gguf(&file).unwrap().vocab_size;
        let t = std::time::Instant::now();
        let compiler = GrammarCompiler::new(&tk.tokenizer, vocab, &tk.eos_ids).unwrap();
        eprintln!("grammar compiler for {vocab} tokens built in {:?}", t.elapsed());
        let bytes = token_bytes(&tk.tokenizer, vocab);
        Fixture { tk, compiler, bytes, vocab }
    })
}

fn compile(spec: GrammarSpec) -> Grammar {
    smollm().compiler.compile(&spec).unwrap()
}

fn is_special(b: &[u8]) -> bool {
    b.first() == Some(&TokTrie::SPECIAL_TOKEN_MARKER)
}

fn allowed(g: &mut Grammar) -> BTreeSet<u32> {
    let mut s = BTreeSet::new();
    g.mask().unwrap().iter_set_entries(|i| {
        s.insert(i as u32);
    });
    s
}

#[test]
fn token_bytes_decode_like_the_tokenizer() {
    let f = smollm();
    assert_eq!(f.bytes.len(), f.vocab);
    let mut checked = 0;
    for id in 0..f.vocab as u32 {
        let b = &f.bytes[id as usize];
        if is_special(b) {
            continue;
        }
        // Whole-character tokens decode to the same text; byte-level pieces of a character don't.
        if let Ok(s) = std::str::from_utf8(b) {
            assert_eq!(f.tk.decode(&[id], false), s, "token {id}");
            checked += 1;
        }
    }
    assert!(checked > 40_000, "only {checked} tokens checked");
    // The EOS and the chat markers are special: never allowed inside text.
    for &e in &f.tk.eos_ids {
        assert!(is_special(&f.bytes[e as usize]), "EOS {e} is not special");
    }
    let im_start = f.tk.tokenizer.token_to_id("<|im_start|>").unwrap();
    assert!(is_special(&f.bytes[im_start as usize]));
    // "Hello world" is ["Hello", " world"]: the space lives in the second token's bytes.
    let ids = f.tk.encode_with("Hello world", false).unwrap();
    let joined: Vec<u8> = ids.iter().flat_map(|&i| f.bytes[i as usize].clone()).collect();
    assert_eq!(joined, b"Hello world");
}

/// A finite language: the mask at every reachable state is exactly the set of tokens that extend the
/// text so far towards some word of the language (EOS exactly when the text is a word).
#[test]
fn masks_allow_exactly_the_right_continuations() {
    let f = smollm();
    let words: Vec<String> = ["cat", "cats", "dog", "dogs"]
        .into_iter()
        .map(String::from)
        .chain((0..100).map(|i| format!("{i:02}")))
        .collect();
    let expected = |prefix: &[u8]| -> BTreeSet<u32> {
        let mut s = BTreeSet::new();
        for (id, b) in f.bytes.iter().enumerate() {
            if b.is_empty() || is_special(b) {
                continue;
            }
            let mut t = prefix.to_vec();
            t.extend_from_slice(b);
            if words.iter().any(|w| w.as_bytes().starts_with(&t)) {
                s.insert(id as u32);
            }
        }
        if words.iter().any(|w| w.as_bytes() == prefix) {
            s.extend(f.tk.eos_ids.iter().copied());
        }
        s
    };
    let root = compile(GrammarSpec::Regex(r"(cat|dog)s?|[0-9]{2}".into()));
    // Depth-first over every token path (the language is small), checking the mask at each state.
    let mut stack = vec![(root, Vec::<u8>::new())];
    let mut states = 0;
    while let Some((mut g, prefix)) = stack.pop() {
        states += 1;
        if g.is_done() {
            assert!(words.iter().any(|w| w.as_bytes() == prefix), "done at {:?}", String::from_utf8_lossy(&prefix));
            // Only EOS can follow a finished grammar; nothing to sample.
            assert_eq!(g.mask_logits(&mut vec![0.0; f.vocab]).unwrap(), Mask::Done);
            continue;
        }
        let got = allowed(&mut g);
        let want = expected(&prefix);
        assert_eq!(got, want, "mask after {:?}", String::from_utf8_lossy(&prefix));
        for &t in &got {
            if f.tk.eos_ids.contains(&t) {
                continue;
            }
            let mut next = g.fork();
            next.commit(t).unwrap();
            let mut p = prefix.clone();
            p.extend_from_slice(&f.bytes[t as usize]);
            stack.push((next, p));
        }
    }
    assert!(states > 100, "only {states} states visited");
    // The logits the sampler sees: exactly the allowed ids stay finite.
    let mut g = compile(GrammarSpec::Regex(r"(cat|dog)s?|[0-9]{2}".into()));
    let want = allowed(&mut g.fork());
    let mut logits = vec![1.0f32; f.vocab];
    assert_eq!(g.mask_logits(&mut logits).unwrap(), Mask::Applied);
    let finite: BTreeSet<u32> = logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, _)| i as u32).collect();
    assert_eq!(finite, want);
}

/// Walks `walks` random token paths inside the mask (uniform over allowed tokens, EOS when allowed
/// with probability `p_eos`), and returns the texts.
fn random_walks(spec: GrammarSpec, walks: usize, p_eos: f64, seed: u64) -> Vec<String> {
    let f = smollm();
    let root = compile(spec);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut mask_ns, mut masks) = (0u64, 0u64);
    let mut out = Vec::new();
    for _ in 0..walks {
        let mut g = root.fork();
        let mut text = Vec::new();
        for step in 0.. {
            assert!(step < 2000, "walk did not end: {:?}", String::from_utf8_lossy(&text));
            let mut logits = vec![0.0f32; f.vocab];
            if g.mask_logits(&mut logits).unwrap() == Mask::Done {
                break;
            }
            let ok: Vec<u32> = (0..f.vocab as u32).filter(|&i| logits[i as usize].is_finite()).collect();
            let eos_ok = ok.iter().any(|t| f.tk.eos_ids.contains(t));
            if eos_ok && rng.random_bool(p_eos) {
                break;
            }
            let body: Vec<u32> = ok.into_iter().filter(|t| !f.tk.eos_ids.contains(t)).collect();
            let t = body[rng.random_range(0..body.len())];
            g.commit(t).unwrap();
            text.extend_from_slice(&f.bytes[t as usize]);
        }
        mask_ns += g.mask_ns;
        masks += g.masks;
        out.push(String::from_utf8(text).expect("utf-8"));
    }
    eprintln!("{} masks, {:.1} us each", masks, mask_ns as f64 / masks.max(1) as f64 / 1000.0);
    out
}

#[test]
fn random_walks_match_the_regex() {
    let cases = [
        r"[a-z]{3,8}",
        r"\d{4}-\d{2}-\d{2}",
        r"\(\d{3}\) \d{3}-\d{4}",
        r"(red|green|blue)( and (red|green|blue))*",
        r"(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])",
        r"[A-Z][a-z]{1,10}, [A-Z]{2} \d{5}",
    ];
    for (k, rx) in cases.iter().enumerate() {
        let full = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
        let texts = random_walks(GrammarSpec::Regex(rx.to_string()), 40, 0.3, k as u64);
        for t in &texts {
            assert!(full.is_match(t), "{rx}: {t:?} does not match");
        }
        let distinct: BTreeSet<&String> = texts.iter().collect();
        assert!(distinct.len() > 5, "{rx}: walks are not random: {distinct:?}");
    }
}

#[test]
fn random_walks_give_schema_valid_json() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "n": {"type": "integer", "minimum": -5, "maximum": 120},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,4}$"}, "maxItems": 3},
        },
        "required": ["color", "n", "ok"],
        "additionalProperties": false,
    });
    let texts = random_walks(GrammarSpec::JsonSchema(schema.to_string()), 40, 0.5, 7);
    for t in texts {
        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        let o = v.as_object().unwrap_or_else(|| panic!("not an object: {t:?}"));
        assert!(["red", "green", "blue"].contains(&o["color"].as_str().unwrap()), "{t}");
        // JSON Schema integers include `-0` (which serde_json reads as a float).
        let n = o["n"].as_f64().unwrap();
        assert!(n.fract() == 0.0 && (-5.0..=120.0).contains(&n), "{t}");
        assert!(o["ok"].is_boolean(), "{t}");
        if let Some(tags) = o.get("tags") {
            let tags = tags.as_array().unwrap();
            assert!(tags.len() <= 3, "{t}");
            assert!(tags.iter().all(|s| (1..=4).contains(&s.as_str().unwrap().len())), "{t}");
        }
        assert!(o.keys().all(|k| ["color", "n", "ok", "tags"].contains(&k.as_str())), "{t}");
        // Compact separators, no stray whitespace.
        assert!(!t.contains("  ") && !t.contains('\n'), "{t:?}");
    }
}

#[test]
fn lark_and_gbnf_grammars() {
    let lark = r#"
start: item (", " item)*
item: NUMBER " " UNIT
NUMBER: /[1-9][0-9]{0,2}/
UNIT: "kg" | "g" | "lb"
"#;
    let gbnf = r#"
# a GBNF grammar as SGLang / llama.cpp users write it
root ::= greeting " " name ("!" | ".")
greeting ::= "hello" | "hi"
name ::= [A-Z] [a-z]{1,6}
"#;
    let lark_rx = regex::Regex::new(r"^[1-9][0-9]{0,2} (kg|g|lb)(, [1-9][0-9]{0,2} (kg|g|lb))*$").unwrap();
    for t in random_walks(GrammarSpec::Ebnf(lark.into()), 30, 0.3, 1) {
        assert!(lark_rx.is_match(&t), "{t:?}");
    }
    let gbnf_rx = regex::Regex::new(r"^(hello|hi) [A-Z][a-z]{1,6}[!.]$").unwrap();
    for t in random_walks(GrammarSpec::Ebnf(gbnf.into()), 30, 0.3, 2) {
        assert!(gbnf_rx.is_match(&t), "{t:?}");
    }
}

#[test]
fn gbnf_translation() {
    let l = gbnf_to_lark("root ::= a-b \"x\\\"y\" [^\\]/] .\na-b ::= \"q\"\n  | \"r\" # comment\n").unwrap();
    assert_eq!(l, "start: a_b \"x\\\"y\" /[^\\]\\/]/ /./\na_b: \"q\"   | \"r\"");
    assert!(gbnf_to_lark("item ::= \"x\"").unwrap_err().contains("root"));
    assert!(gbnf_to_lark("root ::= \"x").is_err());
    assert!(is_gbnf("root ::= \"a\"") && !is_gbnf("start: \"a\""));
    assert!(is_gbnf("# comment\n\n  my-rule::= \"a\"\nroot ::= my-rule"));
    assert!(!is_gbnf("// lark\nstart: \"::=\""));
}

#[test]
fn bad_grammars_are_invalid_sampling_params() {
    let f = smollm();
    let cases = [
        GrammarSpec::JsonSchema("{not json".into()),
        GrammarSpec::JsonSchema("[1, 2]".into()),
        GrammarSpec::JsonSchema(r#"{"type": "frobnicate"}"#.into()),
        GrammarSpec::Regex("(unclosed".into()),
        GrammarSpec::Regex("[z-a]".into()),
        GrammarSpec::Ebnf("start: undefined_rule".into()),
        GrammarSpec::Ebnf("this is not a grammar".into()),
        GrammarSpec::Ebnf("item ::= \"x\"".into()),
    ];
    for spec in cases {
        let e = f.compiler.compile(&spec).unwrap_err();
        assert_eq!(e.code(), "ERR_INVALID_SAMPLING_PARAMS", "{spec:?}");
        assert!(e.message.starts_with(&format!("samplingParams.{}: ", spec.key())), "{}", e.message);
    }
    // Still compiles good grammars afterwards.
    compile(GrammarSpec::Regex("ok".into()));
}

#[test]
fn forks_are_independent() {
    let mut a = compile(GrammarSpec::Regex("(ab|cd)".into()));
    let mut b = a.fork();
    let f = smollm();
    let id = |s: &str| f.bytes.iter().position(|b| b == s.as_bytes()).unwrap() as u32;
    a.commit(id("ab")).unwrap();
    assert!(a.is_done());
    assert!(!b.is_done());
    b.commit(id("c")).unwrap();
    assert!(!b.is_done());
    assert!(b.commit(id("x")).is_err(), "a token outside the grammar must be refused");
}

#[test]
fn digit_and_word_classes_are_ascii() {
    let f = smollm();
    for rx in [r"\d+", r"\w+"] {
        let mut g = compile(GrammarSpec::Regex(rx.into()));
        let ok = allowed(&mut g);
        assert!(!ok.is_empty());
        for t in ok {
            let b = &f.bytes[t as usize];
            assert!(b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_'), "{rx} allows {:?}", String::from_utf8_lossy(b));
        }
    }
}

#[test]
fn a_cached_grammar_starts_fresh_and_is_independent() {
    // The second compile of the same spec is a copy of the cached fresh matcher: advancing the first
    // grammar must not move the second, and both start where a grammar compiled alone starts.
    let spec = GrammarSpec::Regex("(cat|dog) [0-9]{2}".into());
    let mut first = compile(spec.clone());
    let start = allowed(&mut first);
    let f = smollm();
    let cat = f.tk.tokenizer.token_to_id("cat").expect("a `cat` token");
    assert!(start.contains(&cat));
    first.commit(cat).unwrap();
    assert!(!allowed(&mut first).contains(&cat), "`catcat` is not in the language");
    let mut second = compile(spec.clone());
    assert_eq!(allowed(&mut second), start, "the cached copy starts fresh");
    second.commit(cat).unwrap();
    // A spec that differs only in its kind is a different grammar, not a cache hit.
    let mut other = compile(GrammarSpec::Ebnf("start: \"dog\"".into()));
    assert!(!allowed(&mut other).contains(&cat));
}

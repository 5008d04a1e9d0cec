//! Engine-level behaviour on the tiny Qwen2 fixture (fast on a CPU): chunked prefill, retraction under
//! memory pressure and page accounting give the same greedy outputs as the plain path.

mod common;

use radixlm_core::{EngineHandle, EngineOptions, Event, FinishReason, PromptInput};
use serde_json::{json, Value};

fn fixture() -> String {
    format!("{}/../../__test__/fixtures/tiny-qwen2", env!("CARGO_MANIFEST_DIR"))
}

fn engine(extra: Value) -> EngineHandle {
    let mut opts = json!({"modelPath": fixture(), "randomSeed": 1});
    for (k, v) in extra.as_object().unwrap() {
        opts[k] = v.clone();
    }
    EngineHandle::start(EngineOptions::from_json(&opts).unwrap(), &mut |_| {}).unwrap()
}

fn prompts() -> Vec<String> {
    (0..8).map(|i| format!("Request {i}: the quick brown fox jumps over the lazy dog and {i} more")).collect()
}

/// Submits every prompt at once and collects the output ids in order.
fn run(e: &EngineHandle, params: Value) -> Vec<Vec<u32>> {
    common::outputs(e, prompts().into_iter().map(PromptInput::Text), &params)
}

fn greedy(n: usize) -> Value {
    json!({"temperature": 0, "maxNewTokens": n, "ignoreEos": true})
}

#[test]
fn chunked_prefill_matches_one_shot() {
    let plain = run(&engine(json!({"chunkedPrefillSize": -1})), greedy(12));
    let chunked = run(&engine(json!({"chunkedPrefillSize": 3, "pageSize": 4})), greedy(12));
    assert_eq!(plain, chunked);
    assert!(plain.iter().all(|o| o.len() == 12));
}

#[test]
fn retraction_under_memory_pressure_keeps_outputs() {
    let alone: Vec<Vec<u32>> = {
        let e = engine(json!({}));
        prompts()
            .into_iter()
            .map(|p| {
                let mut h = e.submit(PromptInput::Text(p), &greedy(40), None, false).unwrap().remove(0);
                match h.next_blocking() {
                    Some(Event::Done(o)) => o.output_ids,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    };
    // 8 requests x (~20 prompt + 40 output) tokens in a 160-token pool: decode must retract.
    let e = engine(json!({"maxTotalTokens": 160, "pageSize": 4}));
    let squeezed = run(&e, greedy(40));
    let info = e.server_info().unwrap();
    assert!(info["retractions"].as_u64().unwrap() > 0, "no retraction happened: {info}");
    assert_eq!(alone, squeezed);
    assert_eq!(info["pagesUsed"], 0, "pages leaked: {info}");
    assert_eq!(info["integrityFailures"], 0);
}

#[test]
fn abort_frees_pages_and_reports_abort() {
    let e = engine(json!({"pageSize": 4}));
    let mut hs = e.submit(PromptInput::Text("a long story".into()), &greedy(100_000), None, true).unwrap();
    let h = &mut hs[0];
    for _ in 0..3 {
        assert!(matches!(h.next_blocking(), Some(Event::Chunk(_))));
    }
    h.abort("test");
    let out = loop {
        match h.next_blocking() {
            Some(Event::Done(o)) => break o,
            Some(Event::Chunk(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(out.finish, FinishReason::Abort(_)));
    assert!(out.output_ids.len() >= 3);
    let info = e.server_info().unwrap();
    assert_eq!(info["pagesUsed"], 0, "{info}");
    // The engine keeps serving.
    assert_eq!(run(&e, greedy(2)).len(), 8);
}

#[test]
fn abort_all_ends_every_request_and_not_later_ones() {
    let e = engine(json!({"pageSize": 4, "maxRunningRequests": 2}));
    // Two running, three queued (maxRunningRequests 2), one stream among them.
    let mut hs: Vec<_> = (0..5).flat_map(|i| e.submit(PromptInput::Text(format!("story {i}")), &greedy(100_000), None, i == 0).unwrap()).collect();
    assert!(matches!(hs[0].next_blocking(), Some(Event::Chunk(_))));
    e.abort_all().unwrap();
    let mut later = e.submit(PromptInput::Text("after".into()), &greedy(3), None, false).unwrap().remove(0);
    for h in &mut hs {
        let out = common::final_output(h);
        assert!(matches!(&out.finish, FinishReason::Abort(m) if m == "aborted by abortAll"), "{:?}", out.finish);
    }
    let out = common::final_output(&mut later);
    assert!(matches!(out.finish, FinishReason::Length(3)), "{:?}", out.finish);
    let info = e.server_info().unwrap();
    assert_eq!(info["pagesUsed"], 0, "{info}");
    e.shutdown();
    assert_eq!(e.abort_all().unwrap_err().code(), "ERR_ENGINE_SHUTDOWN");
}

#[test]
fn shutdown_settles_in_flight_requests() {
    let e = engine(json!({}));
    let mut hs = e.submit(PromptInput::Text("x".into()), &greedy(100_000), None, false).unwrap();
    e.shutdown();
    e.shutdown();
    match hs[0].next_blocking() {
        Some(Event::Error(err)) => assert_eq!(err.code(), "ERR_ENGINE_SHUTDOWN"),
        other => panic!("{other:?}"),
    }
    let again = e.submit(PromptInput::Text("x".into()), &greedy(1), None, false);
    assert_eq!(again.err().unwrap().code(), "ERR_ENGINE_SHUTDOWN");
}

/// Token-id prompts drawn from a random prefix tree: 6 roots, children extending their parent, so that
/// prompts share prefixes of many lengths (and page boundaries fall everywhere).
fn tree_prompts(n: usize, seed: u64) -> Vec<(Vec<u32>, usize)> {
    let mut x = seed;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut nodes: Vec<Vec<u32>> = Vec::new();
    for _ in 0..6 {
        let len = 10 + rnd(40) as usize;
        nodes.push((0..len).map(|_| rnd(2000) as u32 + 10).collect());
    }
    for _ in 0..30 {
        let parent = nodes[rnd(nodes.len() as u64) as usize].clone();
        let mut child = parent;
        let extra = 1 + rnd(30) as usize;
        child.extend((0..extra).map(|_| rnd(2000) as u32 + 10));
        child.truncate(400);
        nodes.push(child);
    }
    (0..n).map(|_| (nodes[rnd(nodes.len() as u64) as usize].clone(), 1 + rnd(24) as usize)).collect()
}

/// Submits every prompt at once (each with its own maxNewTokens) and returns outputs in order.
fn run_ids(e: &EngineHandle, prompts: &[(Vec<u32>, usize)]) -> Vec<(Vec<u32>, usize)> {
    let mut hs: Vec<_> = prompts
        .iter()
        .map(|(ids, n)| e.submit(PromptInput::Ids(ids.clone()), &greedy(*n), None, false).unwrap().remove(0))
        .collect();
    hs.iter_mut()
        .map(|h| loop {
            match h.next_blocking() {
                Some(Event::Done(o)) => break (o.output_ids, o.cached_tokens),
                Some(Event::Chunk(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

#[test]
fn radix_cache_on_off_and_forced_retraction_give_identical_outputs() {
    let prompts = tree_prompts(200, 7);
    // A pool of 1,200 tokens for up to 64 running requests of up to ~420 tokens: eviction and retraction.
    let base = json!({"maxTotalTokens": 1200, "pageSize": 4, "chunkedPrefillSize": 256});
    let with = |extra: Value| {
        let mut o = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        engine(o)
    };
    let off = with(json!({"disableRadixCache": true}));
    let want = run_ids(&off, &prompts);
    assert!(want.iter().all(|(_, c)| *c == 0), "cache disabled but tokens reported cached");

    for policy in ["fcfs", "lpm"] {
        let on = with(json!({"schedulePolicy": policy}));
        let got = run_ids(&on, &prompts);
        let info = on.server_info().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.0, w.0, "{policy}: request {i} differs with the radix cache on");
        }
        let cached: usize = got.iter().map(|(_, c)| c).sum();
        assert!(cached > 5000, "{policy}: only {cached} prompt tokens came from the cache: {info}");
        assert_eq!(info["cachedTokensTotal"], cached as u64);
        assert!(info["pagesEvictedTotal"].as_u64().unwrap() > 0, "{policy}: nothing was evicted: {info}");
        assert_eq!(info["integrityFailures"], 0, "{info}");
        on.flush_cache().unwrap();
        let info = on.server_info().unwrap();
        assert_eq!(info["pagesFree"], info["poolPages"], "pool not all free after flushCache: {info}");
    }

    // A hook that retracts the youngest running request every 2 steps changes nothing either.
    let mut opts = EngineOptions::from_json(&json!({"modelPath": fixture(), "randomSeed": 1, "maxTotalTokens": 1200, "pageSize": 4, "chunkedPrefillSize": 256})).unwrap();
    opts.test_retract_every = Some(2);
    let forced = EngineHandle::start(opts, &mut |_| {}).unwrap();
    let got = run_ids(&forced, &prompts[..60]);
    let info = forced.server_info().unwrap();
    assert!(info["retractions"].as_u64().unwrap() >= 8, "{info}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.0, w.0, "request {i} differs under forced retraction");
    }
}

#[test]
fn cached_tokens_are_exact_including_previous_answers() {
    let e = engine(json!({"pageSize": 4}));
    let prompt: Vec<u32> = (100..150).collect(); // 50 tokens
    let first = run_ids(&e, &[(prompt.clone(), 10)]);
    assert_eq!(first[0].1, 0);
    // Same prompt: every whole page but the one holding the last token (always recomputed).
    let again = run_ids(&e, &[(prompt.clone(), 10)]);
    assert_eq!(again[0].1, 48);
    assert_eq!(again[0].0, first[0].0);
    // Multi-turn: prompt ++ answer ++ more. The answer's KV (all but its last token) was cached too.
    let mut turn2 = prompt.clone();
    turn2.extend(&first[0].0);
    turn2.extend(300..320);
    let kv_cached = (50 + 10 - 1) / 4 * 4;
    let t2 = run_ids(&e, &[(turn2, 5)]);
    assert_eq!(t2[0].1, kv_cached);
    let info = e.server_info().unwrap();
    assert_eq!(info["cachedTokensTotal"], (48 + kv_cached) as u64, "{info}");
    e.flush_cache().unwrap();
    let after = run_ids(&e, &[(prompt, 10)]);
    assert_eq!(after[0].1, 0, "flushCache left cached pages");
}

#[test]
fn memory_pressure_every_request_makes_progress() {
    // ~1,500 tokens for 4 requests that would each grow to the 512-token context.
    let e = engine(json!({"maxTotalTokens": 1500, "pageSize": 16}));
    let prompts: Vec<(Vec<u32>, usize)> = (0..4).map(|i| ((1000 + i * 50..1030 + i * 50).collect(), 10_000)).collect();
    let out = run_ids(&e, &prompts);
    for (i, (ids, _)) in out.iter().enumerate() {
        assert!(ids.len() > 100, "request {i} made too little progress: {} tokens", ids.len());
    }
    let info = e.server_info().unwrap();
    assert_eq!(info["integrityFailures"], 0, "{info}");
    assert_eq!(info["running"], 0);
}

#[test]
fn samples_of_one_prompt_share_its_prefill() {
    let e = engine(json!({"pageSize": 4}));
    let prompt: Vec<u32> = (500..530).collect(); // 30 tokens: 7 whole pages before the last token
    let params = json!({"temperature": 1.0, "maxNewTokens": 4, "n": 4, "seed": 5, "ignoreEos": true});
    let hs = e.submit(PromptInput::Ids(prompt), &params, None, false).unwrap();
    let cached: Vec<usize> = hs
        .into_iter()
        .map(|mut h| match h.next_blocking() {
            Some(Event::Done(o)) => o.cached_tokens,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(cached, vec![0, 28, 28, 28], "samples 2..n must reuse the first sample's prompt pages");
}

/// Structured output through the engine: every sample of `n` walks its own grammar, outputs match the
/// regex / schema at temperature 1, a finished grammar ends the request as a stop at EOS, and forced
/// retraction (KV recomputed, grammar state kept) changes nothing: the grammar never sees a token twice.
#[test]
fn grammar_outputs_survive_retraction_and_n() {
    let run = |retract: Option<u64>| -> Vec<(String, Vec<u32>, FinishReason)> {
        let mut opts = EngineOptions::from_json(&json!({"modelPath": fixture(), "randomSeed": 1, "maxTotalTokens": 400, "pageSize": 4})).unwrap();
        opts.test_retract_every = retract;
        let e = EngineHandle::start(opts, &mut |_| {}).unwrap();
        let specs = [
            json!({"regex": "[a-z]{2,6}( [a-z]{2,6}){1,4}"}),
            json!({"jsonSchema": {"type": "object", "properties": {"k": {"enum": ["ab", "cd"]}, "v": {"type": "integer", "minimum": 0, "maximum": 999}}, "required": ["k", "v"], "additionalProperties": false}}),
            json!({"ebnf": "root ::= \"(\" [0-9]{1,3} (\",\" [0-9]{1,3}){0,3} \")\""}),
        ];
        let mut hs = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let mut p = json!({"temperature": 1.0, "maxNewTokens": 64, "n": 3, "seed": 11 + i});
            for (k, v) in spec.as_object().unwrap() {
                p[k] = v.clone();
            }
            for j in 0..3 {
                hs.extend(e.submit(PromptInput::Text(format!("prompt {i} {j}: some words to start from")), &p, None, j == 1).unwrap());
            }
        }
        let out = hs
            .into_iter()
            .map(|mut h| loop {
                match h.next_blocking() {
                    Some(Event::Done(o)) => break (o.text, o.output_ids, o.finish),
                    Some(Event::Chunk(_)) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect();
        if retract.is_some() {
            let info = e.server_info().unwrap();
            assert!(info["retractions"].as_u64().unwrap() >= 5, "{info}");
            assert_eq!(info["integrityFailures"], 0, "{info}");
        }
        out
    };
    let plain = run(None);
    let regex = regex_lite(r"^[a-z]{2,6}( [a-z]{2,6}){1,4}$");
    let tuple = regex_lite(r"^\([0-9]{1,3}(,[0-9]{1,3}){0,3}\)$");
    for (i, (text, _, finish)) in plain.iter().enumerate() {
        // A stop at one of the model's EOS ids (sampled while the grammar accepted, or the grammar done).
        assert!(matches!(finish, FinishReason::StopToken(2000 | 2002)), "{i}: {text:?} {finish:?}");
        match i / 9 {
            0 => assert!(regex.is_match(text), "{text:?}"),
            1 => {
                let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
                assert!(["ab", "cd"].contains(&v["k"].as_str().unwrap()) && v["v"].as_u64().unwrap() <= 999, "{text}");
            }
            _ => assert!(tuple.is_match(text), "{text:?}"),
        }
    }
    // The samples differ from one another (own grammar, own seed).
    assert!(plain[0].0 != plain[1].0 || plain[1].0 != plain[2].0, "{plain:?}");
    assert_eq!(run(Some(2)), plain, "forced retraction changed grammar-constrained outputs");
}

fn regex_lite(rx: &str) -> regex::Regex {
    regex::Regex::new(rx).unwrap()
}

/// Streams or waits for one request; returns (output ids, text, finish), checking on the way that the
/// streamed chunks add up to the final output.
fn settle(mut h: radixlm_core::RequestHandle) -> (Vec<u32>, String, FinishReason) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    loop {
        match h.next_blocking() {
            Some(Event::Chunk(c)) => {
                ids.extend(c.ids);
                text.push_str(&c.delta);
                assert_eq!(ids.len(), c.completion_tokens);
            }
            Some(Event::Done(o)) => {
                ids.extend(&o.delta_ids);
                text.push_str(&o.delta);
                if !ids.is_empty() {
                    assert_eq!((&ids, &text), (&o.output_ids, &o.text), "streamed chunks differ from the result");
                }
                return (o.output_ids, o.text, o.finish);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn overlap_schedule_changes_no_output() {
    // Greedy requests (drawn by the backend: the next pass is launched before their tokens are seen),
    // seeded sampling (host rows: collected before the next pass), stop strings and EOS (found one
    // pass late with overlap), mixed lengths, streaming, and a pool small enough to retract.
    let params: Vec<Value> = (0..16)
        .map(|i| match i % 4 {
            0 => json!({"temperature": 0, "maxNewTokens": 5 + i * 3}),
            1 => json!({"temperature": 0, "maxNewTokens": 30, "ignoreEos": true}),
            2 => json!({"temperature": 0.8, "seed": i, "maxNewTokens": 20, "ignoreEos": true}),
            _ => json!({"temperature": 0, "maxNewTokens": 25, "stop": ["e", "o "]}),
        })
        .collect();
    let run = |e: &EngineHandle| -> Vec<(Vec<u32>, String, FinishReason)> {
        let hs: Vec<_> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let prompt = format!("Request {i}: the quick brown fox jumps over the lazy dog and {i} more");
                e.submit(PromptInput::Text(prompt), p, None, i % 2 == 0).unwrap().remove(0)
            })
            .collect();
        hs.into_iter().map(settle).collect()
    };
    // Retractions: from the pool's size when enough requests are in at once (timing), and forced.
    let start = |overlap: bool| {
        let opts = json!({"modelPath": fixture(), "randomSeed": 1, "maxTotalTokens": 192, "pageSize": 4,
            "chunkedPrefillSize": 64, "disableOverlapSchedule": !overlap});
        let mut opts = EngineOptions::from_json(&opts).unwrap();
        opts.test_retract_every = Some(7);
        EngineHandle::start(opts, &mut |_| {}).unwrap()
    };
    let (on, off) = (start(true), start(false));
    let (got, want) = (run(&on), run(&off));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "request {i} differs with the overlap schedule");
    }
    assert!(want.iter().any(|o| matches!(o.2, FinishReason::StopString(_))), "no stop string hit: {want:?}");
    let info = on.server_info().unwrap();
    assert!(info["overlapSteps"].as_u64().unwrap() > 20, "{info}");
    assert!(info["retractions"].as_u64().unwrap() > 0, "no retraction: {info}");
    assert_eq!(info["pagesUsed"], 0, "pages leaked: {info}");
    assert_eq!(info["integrityFailures"], 0, "{info}");
    assert_eq!(off.server_info().unwrap()["overlapSteps"], 0);
    // The engine keeps serving after all that.
    assert_eq!(run(&on), want);
}

/// Overlap corner cases found in review: a request retracted and re-admitted while its next token is
/// still being drawn (prompt lengths around page boundaries), and one ended by the pool's size while its
/// last token is in flight, give what collecting every pass first gives, with clean page accounting.
#[test]
fn overlap_survives_retraction_and_pool_exhaustion_mid_flight() {
    let start = |overlap: bool, retract: Option<u64>, pool: usize| {
        let mut opts = EngineOptions::from_json(&json!({
            "modelPath": fixture(), "randomSeed": 1, "pageSize": 4, "maxTotalTokens": pool,
            "disableOverlapSchedule": !overlap,
        }))
        .unwrap();
        opts.test_retract_every = retract;
        EngineHandle::start(opts, &mut |_| {}).unwrap()
    };
    let check = |e: &EngineHandle| {
        let info = e.server_info().unwrap();
        assert_eq!(info["pagesUsed"], 0, "{info}");
        assert_eq!(info["integrityFailures"], 0, "{info}");
        info
    };
    for every in [2u64, 3] {
        for len in [5usize, 6, 7, 11] {
            let prompt: Vec<u32> = (0..len as u32).map(|i| 100 + 7 * i).collect();
            let run = |e: &EngineHandle| run_ids(e, &[(prompt.clone(), 20), (prompt[1..].to_vec(), 13)]);
            let on = start(true, Some(every), 4096);
            let got = run(&on);
            let info = check(&on);
            assert!(info["retractions"].as_u64().unwrap() > 0 && info["overlapSteps"].as_u64().unwrap() > 0, "{info}");
            let off = start(false, Some(every), 4096);
            assert_eq!(got, run(&off), "retract every {every}, prompt of {len}");
            check(&off);
            // Again, now from the prefix cache the first run filled.
            assert_eq!(run(&on).iter().map(|o| &o.0).collect::<Vec<_>>(), got.iter().map(|o| &o.0).collect::<Vec<_>>());
            check(&on);
        }
    }
    // Alone in a 32-token pool, a 10-token prompt grows until the pool is full: the token drawn in the
    // pass in flight when that happens is still part of the output.
    let full = |overlap: bool| {
        let e = start(overlap, None, 32);
        let mut h = e.submit(PromptInput::Ids((100..110).collect()), &greedy(1000), None, false).unwrap().remove(0);
        let out = match h.next_blocking() {
            Some(Event::Done(o)) => o,
            other => panic!("{other:?}"),
        };
        check(&e);
        (out.output_ids, out.finish)
    };
    let (on, off) = (full(true), full(false));
    assert!(matches!(off.1, FinishReason::Length(n) if n == off.0.len()), "{off:?}");
    assert_eq!(on, off);
}

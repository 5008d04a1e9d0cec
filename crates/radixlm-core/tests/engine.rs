//! Engine-level behaviour on the tiny Qwen2 fixture (fast on a CPU): chunked prefill, retraction under
//! memory pressure and page accounting give the same greedy outputs as the plain path.

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
    let mut handles: Vec<_> = prompts()
        .into_iter()
        .map(|p| e.submit(PromptInput::Text(p), &params, None, false).unwrap().remove(0))
        .collect();
    handles
        .iter_mut()
        .map(|h| loop {
            match h.next_blocking() {
                Some(Event::Done(o)) => break o.output_ids,
                Some(Event::Chunk(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
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

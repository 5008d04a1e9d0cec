//! Core values -> JSON for JS, and core errors -> napi errors.

use radixlm_core::{Error, Event, FinishReason, Output};
use serde_json::{json, Value};

pub fn to_napi(e: Error) -> napi::Error {
    napi::Error::from_reason(format!("[{}] {}", e.code(), e.message))
}

fn finish_json(f: &FinishReason) -> Value {
    match f {
        FinishReason::StopToken(id) => json!({"type": "stop", "matched": id}),
        FinishReason::StopString(s) | FinishReason::StopRegex(s) => json!({"type": "stop", "matched": s}),
        FinishReason::Length(n) => json!({"type": "length", "length": n}),
        FinishReason::Abort(m) => json!({"type": "abort", "message": m}),
    }
}

pub fn output_json(o: &Output) -> Value {
    let mut v = json!({
        "kind": "done",
        "rid": o.rid,
        "delta": o.delta,
        "deltaIds": o.delta_ids,
        "text": o.text,
        "outputIds": o.output_ids,
        "metaInfo": {
            "id": o.rid,
            "finishReason": finish_json(&o.finish),
            "promptTokens": o.prompt_tokens,
            "completionTokens": o.completion_tokens,
            "cachedTokens": o.cached_tokens,
            "numRetractions": o.retractions,
            "e2eLatency": o.e2e_latency,
        }
    });
    if let Some(Value::Object(lp)) = &o.logprobs {
        let meta = v["metaInfo"].as_object_mut().expect("object");
        meta.extend(lp.iter().map(|(k, x)| (k.clone(), x.clone())));
    }
    if let Some(h) = &o.hidden_states {
        v["hiddenStates"] = json!(h);
    }
    v
}

/// An event as JSON; errors become a thrown napi error.
pub fn event_json(ev: Option<Event>) -> napi::Result<Option<Value>> {
    match ev {
        None => Ok(None),
        Some(Event::Chunk(c)) => Ok(Some(json!({
            "kind": "chunk",
            "delta": c.delta,
            "ids": c.ids,
            "promptTokens": c.prompt_tokens,
            "completionTokens": c.completion_tokens,
            "cachedTokens": c.cached_tokens,
        }))),
        Some(Event::Done(o)) => Ok(Some(output_json(&o))),
        Some(Event::Error(e)) => Err(to_napi(e)),
    }
}

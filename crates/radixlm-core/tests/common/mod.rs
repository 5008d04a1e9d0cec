//! Helpers shared by the engine-level test files.

use radixlm_core::{EngineHandle, Event, Output, PromptInput, RequestHandle};
use serde_json::Value;

/// Submits every input at once and collects the output ids in submission order.
pub fn outputs(e: &EngineHandle, inputs: impl IntoIterator<Item = PromptInput>, params: &Value) -> Vec<Vec<u32>> {
    outputs_each(e, inputs.into_iter().map(|p| (p, params.clone())))
}

/// `outputs` with each input's own sampling parameters.
pub fn outputs_each(e: &EngineHandle, inputs: impl IntoIterator<Item = (PromptInput, Value)>) -> Vec<Vec<u32>> {
    let mut handles: Vec<_> = inputs.into_iter().map(|(p, params)| e.submit(p, &params, None, false).unwrap().remove(0)).collect();
    handles.iter_mut().map(|h| final_output(h).output_ids).collect()
}

/// Waits for a request's final output, skipping stream chunks.
pub fn final_output(h: &mut RequestHandle) -> Output {
    loop {
        match h.next_blocking() {
            Some(Event::Done(o)) => return o,
            Some(Event::Chunk(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

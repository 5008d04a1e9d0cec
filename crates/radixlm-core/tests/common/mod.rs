//! Helpers shared by the engine-level test files.

use radixlm_core::{EngineHandle, Event, PromptInput};
use serde_json::Value;

/// Submits every input at once and collects the output ids in submission order.
pub fn outputs(e: &EngineHandle, inputs: impl IntoIterator<Item = PromptInput>, params: &Value) -> Vec<Vec<u32>> {
    let mut handles: Vec<_> = inputs.into_iter().map(|p| e.submit(p, params, None, false).unwrap().remove(0)).collect();
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

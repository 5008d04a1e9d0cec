//! One request's output stream as a JS object with `next()` (async), `nextSync()`, `result()` and
//! `abort()`. index.ts wraps it in iterators whose `finally` aborts, so `break` frees the request.

use std::sync::Arc;

use napi_derive::napi;
use radixlm_core::{Aborter, Event, RequestHandle};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::convert::{event_json, to_napi};

#[napi]
pub struct NativeRequest {
    handle: Arc<Mutex<RequestHandle>>,
    aborter: Aborter,
    rid: String,
}

impl NativeRequest {
    pub fn new(h: RequestHandle) -> Self {
        let rid = h.rid.clone();
        let aborter = h.aborter();
        NativeRequest { handle: Arc::new(Mutex::new(h)), aborter, rid }
    }
}

fn drain_to_end(mut next: impl FnMut() -> Option<Event>) -> napi::Result<Value> {
    loop {
        match next() {
            Some(Event::Chunk(_)) => continue,
            Some(Event::Done(o)) => return Ok(crate::convert::output_json(&o)),
            Some(Event::Error(e)) => return Err(to_napi(e)),
            None => return Err(napi::Error::from_reason("[ERR_INTERNAL] the request already ended")),
        }
    }
}

#[napi]
impl NativeRequest {
    #[napi(getter)]
    pub fn rid(&self) -> String {
        self.rid.clone()
    }

    /// The next event (`{kind: 'chunk' | 'done', ...}`), or null after the end.
    #[napi]
    pub async fn next(&self) -> napi::Result<Option<Value>> {
        let h = self.handle.clone();
        let mut h = h.lock().await;
        event_json(h.next().await)
    }

    #[napi]
    pub fn next_sync(&self) -> napi::Result<Option<Value>> {
        let mut h = self.handle.blocking_lock();
        event_json(h.next_blocking())
    }

    /// Waits for the final output, skipping chunks.
    #[napi]
    pub async fn result(&self) -> napi::Result<Value> {
        let h = self.handle.clone();
        let mut h = h.lock().await;
        let mut out = None;
        while out.is_none() {
            match h.next().await {
                Some(Event::Chunk(_)) => {}
                other => out = Some(other),
            }
        }
        let mut it = out.into_iter().flatten();
        drain_to_end(|| it.next())
    }

    #[napi]
    pub fn result_sync(&self) -> napi::Result<Value> {
        let mut h = self.handle.blocking_lock();
        drain_to_end(|| h.next_blocking())
    }

    /// Aborts the request; it ends with finishReason `abort`. No-op once it has ended.
    #[napi]
    pub fn abort(&self) {
        self.aborter.abort("aborted by the caller");
    }
}

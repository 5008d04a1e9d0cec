//! The engine object JS holds. Loading blocks in the constructor (like `sgl.Engine`) or runs on a
//! libuv worker for `createEngine`; everything else forwards to the core handle.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{AsyncTask, Either};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, Task};
use napi_derive::napi;
use radixlm_core::{EngineHandle, EngineOptions, PromptInput};
use serde_json::Value;

use crate::convert::to_napi;
use crate::request::NativeRequest;

#[napi]
pub struct NativeEngine {
    inner: Arc<EngineHandle>,
}

fn start(options: &Value, progress: &mut dyn FnMut(radixlm_core::model::hub::Progress)) -> napi::Result<EngineHandle> {
    let opts = EngineOptions::from_json(options).map_err(to_napi)?;
    EngineHandle::start(opts, progress).map_err(to_napi)
}

/// Progress of loading: a model file downloading, or the weights loading into the backend.
#[napi(object)]
pub struct LoadProgress {
    /// `download` (from the hub) or `load` (weights into the backend).
    #[napi(ts_type = "'download' | 'load'")]
    pub stage: String,
    pub file: String,
    pub downloaded: f64,
    pub total: Option<f64>,
}

/// How long loading waits for JS to have heard every progress event before the promise settles.
const PROGRESS_DRAIN: Duration = Duration::from_secs(10);

type ProgressFn = ThreadsafeFunction<LoadProgress, (), LoadProgress, Status, false>;

pub struct LoadTask {
    options: Value,
    on_progress: Option<ProgressFn>,
}

impl Task for LoadTask {
    type Output = EngineHandle;
    type JsValue = NativeEngine;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        // Taken so the JS callback is released when loading ends and cannot keep Node alive.
        let tsfn = self.on_progress.take();
        let (delivered, heard) = mpsc::channel::<()>();
        let mut sent = 0usize;
        let out = start(&self.options, &mut |p| {
            if let Some(f) = &tsfn {
                let ev = LoadProgress { stage: p.stage.into(), file: p.file, downloaded: p.downloaded as f64, total: p.total.map(|t| t as f64) };
                let delivered = delivered.clone();
                // The callback's result passes on: an exception thrown by onProgress still reaches JS.
                let status = f.call_with_return_value(ev, ThreadsafeFunctionCallMode::NonBlocking, move |r, _| {
                    let _ = delivered.send(());
                    r
                });
                sent += usize::from(status == Status::Ok);
            }
        });
        // The promise settles through a different libuv handle than the progress calls, so without this
        // wait the last events could reach JS after `await Engine.create(...)` returns. Bounded: a callback
        // that never returns must not hang loading.
        let deadline = Instant::now() + PROGRESS_DRAIN;
        for _ in 0..sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if heard.recv_timeout(left).is_err() {
                break;
            }
        }
        out
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(NativeEngine { inner: Arc::new(output) })
    }
}

/// Loads a model off the JS thread; `onProgress` hears about hub downloads.
#[napi(ts_return_type = "Promise<NativeEngine>")]
pub fn create_engine(
    options: Value,
    #[napi(ts_arg_type = "((progress: LoadProgress) => void) | undefined | null")] on_progress: Option<ProgressFn>,
) -> AsyncTask<LoadTask> {
    AsyncTask::new(LoadTask { options, on_progress })
}

#[napi]
impl NativeEngine {
    /// Loads the model, blocking the calling thread.
    #[napi(constructor)]
    pub fn new(options: Value) -> napi::Result<Self> {
        Ok(NativeEngine { inner: Arc::new(start(&options, &mut |_| {})?) })
    }

    /// Queues one prompt (text or token ids); returns one request per sample (`n`).
    #[napi]
    pub fn submit(
        &self,
        prompt: Either<String, Vec<u32>>,
        params: Option<Value>,
        rid: Option<String>,
        stream: bool,
        options: Option<Value>,
    ) -> napi::Result<Vec<NativeRequest>> {
        let input = match prompt {
            Either::A(text) => PromptInput::Text(text),
            Either::B(ids) => PromptInput::Ids(ids),
        };
        let params = params.unwrap_or(Value::Null);
        let options = options.unwrap_or(Value::Null);
        let handles = self.inner.submit_with(input, &params, rid, stream, &options).map_err(to_napi)?;
        Ok(handles.into_iter().map(NativeRequest::new).collect())
    }

    #[napi]
    pub fn tokenize(&self, text: String) -> napi::Result<Vec<u32>> {
        let tk = self.inner.tokenizer().ok_or_else(no_tokenizer)?;
        tk.encode(&text).map_err(to_napi)
    }

    /// Renders the model's chat template. `request` is the JSON text of `{ messages, tools?, documents?,
    /// chatTemplateKwargs?, addGenerationPrompt? }` (text, so object key order survives); with `tokenize`,
    /// returns the token ids of the rendered text, special tokens not added again.
    #[napi(ts_return_type = "string | Array<number>")]
    pub fn apply_chat_template(&self, request: String, tokenize: bool) -> napi::Result<Either<String, Vec<u32>>> {
        let tk = self.inner.tokenizer().ok_or_else(no_tokenizer)?;
        let req = radixlm_core::chat_template::ChatRequest::from_json(&request).map_err(to_napi)?;
        let text = tk.apply_chat_template(&req).map_err(to_napi)?;
        if tokenize {
            Ok(Either::B(tk.encode_with(&text, false).map_err(to_napi)?))
        } else {
            Ok(Either::A(text))
        }
    }

    #[napi]
    pub fn detokenize(&self, ids: Vec<u32>, skip_special_tokens: Option<bool>) -> napi::Result<String> {
        let tk = self.inner.tokenizer().ok_or_else(no_tokenizer)?;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.inner.vocab_size()) {
            return Err(napi::Error::from_reason(format!("[ERR_INVALID_INPUT] token id {bad} is outside the vocabulary")));
        }
        Ok(tk.decode(&ids, skip_special_tokens.unwrap_or(true)))
    }

    #[napi]
    pub fn server_info(&self) -> napi::Result<Value> {
        self.inner.server_info().map_err(to_napi)
    }

    #[napi]
    pub fn flush_cache(&self) -> napi::Result<()> {
        self.inner.flush_cache().map_err(to_napi)
    }

    /// Ends every request submitted so far as an abort (their outputs so far, finish reason abort).
    #[napi]
    pub fn abort_all(&self) -> napi::Result<()> {
        self.inner.abort_all().map_err(to_napi)
    }

    /// Idempotent; in-flight requests end with ERR_ENGINE_SHUTDOWN.
    #[napi]
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

fn no_tokenizer() -> napi::Error {
    napi::Error::from_reason("[ERR_INVALID_INPUT] this engine has no tokenizer (skipTokenizerInit)")
}

//! The engine: a handle that validates and tokenizes on the caller's thread, and one engine thread that
//! owns scheduler, KV and model and talks to the world over channels. Each request's events go back on
//! its own channel; dropping a `RequestHandle` before its end aborts the request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::detok::{Detokenizer, StopText};
use crate::error::{Error, ErrorCode, Result};
use crate::backend;
use crate::logprobs::ReturnOptions;
use crate::memory::KvMemory;
use crate::model::hub::Progress;
use crate::model::load::open;
use crate::model::tokenizer::{GenerationDefaults, TokenizerInfo};
use crate::options::EngineOptions;
use crate::request::{FinishReason, Request};
use crate::sampling::grammar::GrammarCompiler;
use crate::sampling::SamplingParams;
use crate::scheduler::{Policy, Scheduler, SchedulerConfig};
use crate::worker::Worker;

pub enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub delta: String,
    pub ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache (known once the request was admitted).
    pub cached_tokens: usize,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub rid: String,
    /// Text released with this final event (the tail not yet streamed).
    pub delta: String,
    /// Ids not yet sent in a chunk.
    pub delta_ids: Vec<u32>,
    pub text: String,
    pub output_ids: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
    pub retractions: usize,
    pub e2e_latency: f64,
    /// Logprob fields for metaInfo (camelCase keys), when asked for.
    pub logprobs: Option<Value>,
    /// Final hidden states, one row per position fed to the model, when asked for.
    pub hidden_states: Option<Vec<Vec<f32>>>,
}

#[derive(Debug, Clone)]
pub enum Event {
    Chunk(Chunk),
    Done(Output),
    Error(Error),
}

pub(crate) enum Command {
    Add(Box<Request>, UnboundedSender<Event>),
    Abort(u64, String),
    /// Every request the engine holds (waiting or running) ends as an abort with this message.
    AbortAll(String),
    /// Acknowledged once the cache is flushed and the counters published.
    Flush(Sender<()>),
    Shutdown,
}

/// What the caller-side handle knows without asking the engine thread.
struct Shared {
    tokenizer: Option<Arc<TokenizerInfo>>,
    /// Known even without a tokenizer (skipTokenizerInit).
    eos_ids: Vec<u32>,
    defaults: GenerationDefaults,
    vocab_size: usize,
    context_length: usize,
    pool_tokens: usize,
    /// Resolved for the backend in use (the options may leave them unset).
    max_running: usize,
    chunk_budget: usize,
    /// `cpu`, or the GPU's name and compute capability.
    device: String,
    opts: EngineOptions,
    resolved_path: String,
    /// Structured output: built on the first request with a grammar, then shared by all.
    grammar: OnceLock<Result<Arc<GrammarCompiler>>>,
}

pub struct EngineHandle {
    shared: Arc<Shared>,
    cmd: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    closed: Arc<AtomicBool>,
    /// Counters published by the engine thread (see `Worker::deliver`).
    snapshot: Arc<Mutex<Value>>,
    next_id: AtomicU64,
    seed_base: u64,
}

fn shut_down() -> Error {
    Error::new(ErrorCode::EngineShutdown, "the engine has been shut down")
}

impl EngineHandle {
    /// Loads the model (blocking) and starts the engine thread.
    pub fn start(opts: EngineOptions, progress: &mut dyn FnMut(Progress)) -> Result<Self> {
        // Before any download: a dtype the chosen backend does not compute in fails at once.
        let ordinal = backend::cuda_ordinal(&opts)?;
        opts.check_dtype(ordinal.is_some())?;
        let mut files = open(&opts, progress)?;
        let cfg = files.cfg.clone();
        let context_length = opts.context_length.unwrap_or(cfg.max_position_embeddings);
        let page_size = opts.page_size;
        let (tokenizer, eos_ids, defaults, resolved_path) =
            (files.tokenizer.take(), std::mem::take(&mut files.eos_ids), files.defaults.clone(), files.resolved_path.clone());
        let chosen = backend::create(&opts, ordinal, files, context_length, progress)?;
        let num_pages = chosen.num_pages;
        let runner = chosen.backend;
        let sched = Scheduler::new(
            SchedulerConfig {
                max_running: chosen.max_running,
                chunk_budget: chosen.chunk_budget,
                policy: if opts.schedule_policy == "lpm" { Policy::LongestPrefix } else { Policy::Fcfs },
                retract_every: opts.test_retract_every,
            },
            KvMemory::new(num_pages, page_size, !opts.disable_radix_cache),
        );
        let tokenizer = tokenizer.map(Arc::new);
        let shared = Arc::new(Shared {
            tokenizer: tokenizer.clone(),
            eos_ids,
            defaults,
            max_running: chosen.max_running,
            chunk_budget: chosen.chunk_budget,
            device: runner.device(),
            vocab_size: cfg.vocab_size,
            context_length,
            pool_tokens: num_pages * page_size,
            opts: opts.clone(),
            resolved_path,
            grammar: OnceLock::new(),
        });
        let (tx, rx) = channel();
        let closed = Arc::new(AtomicBool::new(false));
        let snapshot = Arc::new(Mutex::new(Value::Null));
        let worker = Worker::new(sched, runner, tokenizer, rx, closed.clone(), snapshot.clone(), opts.disable_overlap_schedule);
        let thread = std::thread::Builder::new()
            .name("radixlm-engine".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::internal(format!("cannot start the engine thread: {e}")))?;
        let seed_base = opts.random_seed.unwrap_or_else(rand::random);
        Ok(EngineHandle { shared, cmd: tx, thread: Mutex::new(Some(thread)), closed, snapshot, next_id: AtomicU64::new(1), seed_base })
    }
}

impl EngineHandle {
    fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(shut_down());
        }
        Ok(())
    }

    pub fn tokenizer(&self) -> Option<&TokenizerInfo> {
        self.shared.tokenizer.as_deref()
    }

    pub fn vocab_size(&self) -> usize {
        self.shared.vocab_size
    }

    /// Validates, tokenizes and queues one prompt; returns one handle per sample (`n`).
    pub fn submit(&self, input: PromptInput, params: &Value, rid: Option<String>, stream: bool) -> Result<Vec<RequestHandle>> {
        self.submit_with(input, params, rid, stream, &Value::Null)
    }

    /// `submit` with the generate options object (logprobs, hidden states; see `logprobs.rs`).
    pub fn submit_with(
        &self,
        input: PromptInput,
        params: &Value,
        rid: Option<String>,
        stream: bool,
        options: &Value,
    ) -> Result<Vec<RequestHandle>> {
        self.ensure_open()?;
        let ret = ReturnOptions::from_json(options, self.shared.vocab_size, self.shared.opts.enable_return_hidden_states)?;
        let tk = self.shared.tokenizer.as_deref();
        let params = SamplingParams::from_json(params, &self.shared.defaults, self.shared.vocab_size)?;
        let needs_text = !params.stop.is_empty() || params.stop_regex.is_some();
        if tk.is_none() && (needs_text || params.min_new_tokens > 0 && !params.ignore_eos && params.stop_token_ids.is_empty()) {
            return Err(Error::invalid_params("samplingParams.stop / stopRegex / minNewTokens need a tokenizer (skipTokenizerInit is set)"));
        }
        let prompt = match input {
            PromptInput::Ids(ids) => {
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.shared.vocab_size) {
                    return Err(Error::invalid_input(format!(
                        "inputIds: token id {bad} is outside the vocabulary [0, {})",
                        self.shared.vocab_size
                    )));
                }
                ids
            }
            PromptInput::Text(text) => match tk {
                Some(t) => t.encode(&text)?,
                None => return Err(Error::invalid_input("text prompts need a tokenizer (skipTokenizerInit is set): pass inputIds")),
            },
        };
        if prompt.is_empty() {
            return Err(Error::invalid_input("the prompt is empty (no tokens)"));
        }
        let limit = self.shared.context_length.min(self.shared.pool_tokens);
        if prompt.len() >= limit {
            return Err(Error::new(
                ErrorCode::PromptTooLong,
                format!(
                    "the prompt has {} tokens; the limit is {} (context length {}, KV pool {} tokens)",
                    prompt.len(),
                    limit - 1,
                    self.shared.context_length,
                    self.shared.pool_tokens
                ),
            ));
        }
        // Structured output: the grammar compiles here, on the caller's thread; a bad one fails this call.
        let grammar = match &params.grammar {
            None => None,
            Some(spec) => {
                let Some(t) = tk else {
                    return Err(Error::invalid_params(format!(
                        "samplingParams.{} needs a tokenizer (skipTokenizerInit is set)",
                        spec.key()
                    )));
                };
                let compiler = self
                    .shared
                    .grammar
                    .get_or_init(|| GrammarCompiler::new(&t.tokenizer, self.shared.vocab_size, &self.shared.eos_ids).map(Arc::new))
                    .as_ref()
                    .map_err(Clone::clone)?;
                Some(compiler.compile(spec)?)
            }
        };
        let mut eos: Vec<u32> = if params.ignore_eos { Vec::new() } else { self.shared.eos_ids.clone() };
        eos.extend(params.stop_token_ids.iter().copied());
        let base_rid = rid.unwrap_or_default();
        let mut handles = Vec::with_capacity(params.n);
        for sample in 0..params.n {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let rid = match (base_rid.is_empty(), params.n) {
                (true, _) => format!("req-{id}"),
                (false, 1) => base_rid.clone(),
                (false, _) => format!("{base_rid}-{sample}"),
            };
            let seed = params.seed.map(|s| s.wrapping_add(sample as u64)).unwrap_or_else(|| mix(self.seed_base, id));
            let mut req = Request::new(id, rid.clone(), prompt.clone(), params.clone(), seed, eos.clone(), self.shared.context_length);
            req.detok = tk.map(|_| Detokenizer::new(&prompt, params.skip_special_tokens));
            req.text = StopText::new(params.stop.clone()).with_regex(params.stop_regex.clone());
            req.stream = stream;
            req.ret = ret.clone();
            // Each sample walks its own copy of the grammar.
            req.grammar = grammar.as_ref().map(|g| g.fork());
            let (tx, rx) = unbounded_channel();
            self.cmd
                .send(Command::Add(Box::new(req), tx))
                .map_err(|_| shut_down())?;
            handles.push(RequestHandle { id, rid, rx, cmd: self.cmd.clone(), done: false });
        }
        Ok(handles)
    }

    /// Drops every unused cached page; returns once done (after the engine's step in progress).
    pub fn flush_cache(&self) -> Result<()> {
        self.ensure_open()?;
        let (tx, rx) = channel();
        self.cmd.send(Command::Flush(tx)).map_err(|_| shut_down())?;
        rx.recv().map_err(|_| shut_down())
    }

    /// Ends every request submitted so far (queued or running) as an abort: each settles with its output
    /// so far and finish reason `{ type: 'abort', message }`, and its KV pages return. Requests submitted
    /// after this call are not affected. Returns at once; the engine keeps serving.
    pub fn abort_all(&self) -> Result<()> {
        self.ensure_open()?;
        self.cmd.send(Command::AbortAll("aborted by abortAll".into())).map_err(|_| shut_down())
    }

    /// Resolved options, pool and counters, as JSON (camelCase keys).
    pub fn server_info(&self) -> Result<Value> {
        self.ensure_open()?;
        // The engine thread publishes these after every step: reading never waits for a step to end.
        let mut info = self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if info.is_null() {
            info = json!({});
        }
        let o = &self.shared.opts;
        info["modelPath"] = json!(o.model_path);
        info["resolvedModelPath"] = json!(self.shared.resolved_path);
        info["contextLength"] = json!(self.shared.context_length);
        info["maxTotalTokens"] = json!(self.shared.pool_tokens);
        // The bound `submit` enforces (a prompt of this many tokens still leaves room for one more).
        info["maxReqInputLen"] = json!(self.shared.context_length.min(self.shared.pool_tokens) - 1);
        info["version"] = json!(env!("CARGO_PKG_VERSION"));
        info["pageSize"] = json!(o.page_size);
        info["maxRunningRequests"] = json!(self.shared.max_running);
        info["chunkedPrefillSize"] = json!(if self.shared.chunk_budget == usize::MAX { -1i64 } else { self.shared.chunk_budget as i64 });
        info["schedulePolicy"] = json!(o.schedule_policy);
        info["disableRadixCache"] = json!(o.disable_radix_cache);
        info["dtype"] = json!(if self.shared.device == "cpu" { o.dtype.as_str() } else { "bfloat16" });
        info["device"] = json!(self.shared.device);
        info["vocabSize"] = json!(self.shared.vocab_size);
        Ok(info)
    }

    /// Idempotent. Every in-flight request ends with `ERR_ENGINE_SHUTDOWN`; returns once the engine
    /// thread has exited and dropped the model and KV memory.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.cmd.send(Command::Shutdown);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// splitmix64: per-request seeds from the engine seed and a counter.
fn mix(base: u64, n: u64) -> u64 {
    let mut z = base.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct RequestHandle {
    pub id: u64,
    pub rid: String,
    rx: UnboundedReceiver<Event>,
    cmd: Sender<Command>,
    done: bool,
}

impl RequestHandle {
    fn settle(&mut self, ev: Option<Event>) -> Option<Event> {
        match ev {
            Some(Event::Chunk(c)) => Some(Event::Chunk(c)),
            Some(end) => {
                self.done = true;
                Some(end)
            }
            None if self.done => None,
            None => {
                // The engine dropped the sender without a final event: it is gone.
                self.done = true;
                Some(Event::Error(shut_down()))
            }
        }
    }

    /// Next event; `None` after the final one.
    pub async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let ev = self.rx.recv().await;
        self.settle(ev)
    }

    /// Blocking variant for the `*Sync` API (never call from inside an async runtime).
    pub fn next_blocking(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let ev = self.rx.blocking_recv();
        self.settle(ev)
    }

    pub fn abort(&self, why: &str) {
        if !self.done {
            let _ = self.cmd.send(Command::Abort(self.id, why.to_string()));
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A detached abort capability, usable while another thread waits in `next()`.
    pub fn aborter(&self) -> Aborter {
        Aborter { id: self.id, cmd: self.cmd.clone() }
    }
}

#[derive(Clone)]
pub struct Aborter {
    id: u64,
    cmd: Sender<Command>,
}

impl Aborter {
    /// Ends the request with finish reason `abort`; a no-op if it has already ended.
    pub fn abort(&self, why: &str) {
        let _ = self.cmd.send(Command::Abort(self.id, why.to_string()));
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.abort("request handle dropped");
    }
}

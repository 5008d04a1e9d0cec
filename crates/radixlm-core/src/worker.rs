//! The engine thread: owns scheduler, KV and model by value, drains commands, takes steps
//! (schedule -> forward -> sample -> postprocess) and sends each request's events on its channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::{Chunk, Command, Event, Output};
use crate::error::{Error, ErrorCode};
use crate::logprobs::meta_json;
use crate::model::tokenizer::TokenizerInfo;
use crate::request::{FinishReason, Request};
use crate::runner::{Backend, Sampled, FUTURE};
use crate::sampling::grammar::Mask;
use crate::scheduler::Scheduler;

/// The engine thread's state. Owns everything by value.
pub(crate) struct Worker {
    sched: Scheduler,
    runner: Box<dyn Backend>,
    tokenizer: Option<Arc<TokenizerInfo>>,
    /// Output channel and user-visible rid of every request not yet finished.
    outputs: HashMap<u64, (UnboundedSender<Event>, String)>,
    /// Request ids (user-visible) of requests not yet finished; duplicates are rejected as SGLang does.
    live_rids: HashMap<String, u64>,
    rx: Receiver<Command>,
    closed: Arc<AtomicBool>,
    /// What `getServerInfo()` reads, published before final events go out (so a caller that got its
    /// result sees counters that include it) without ever waiting for a step to end.
    snapshot: Arc<Mutex<Value>>,
    /// Final events of this iteration, sent after the snapshot is published.
    done: Vec<(UnboundedSender<Event>, Event)>,
    steps: u64,
    overlap_steps: u64,
    failures: u64,
    /// Structured output: token masks computed, and the time they took.
    grammar_masks: u64,
    grammar_mask_ns: u64,
    /// The pass launched last, when it was left in flight while the next is scheduled (overlap).
    inflight: Option<InFlight>,
    /// `disableOverlapSchedule`: every pass is collected before the next is scheduled.
    no_overlap: bool,
    /// Requests the scheduler ended (out of pool) while a pass in flight draws their next token.
    parked: Vec<Request>,
}

/// A launched pass, as the engine thread remembers it until it is collected.
struct InFlight {
    /// Per batch entry: the request id, its index in `running` at launch and, when a placeholder stands
    /// for its token, that output index.
    entries: Vec<(u64, usize, Option<usize>)>,
}

impl Worker {
    pub(crate) fn new(
        sched: Scheduler,
        runner: Box<dyn Backend>,
        tokenizer: Option<Arc<TokenizerInfo>>,
        rx: Receiver<Command>,
        closed: Arc<AtomicBool>,
        snapshot: Arc<Mutex<Value>>,
        no_overlap: bool,
    ) -> Self {
        let mut w = Worker {
            sched,
            runner,
            tokenizer,
            outputs: HashMap::new(),
            live_rids: HashMap::new(),
            rx,
            closed,
            snapshot,
            done: Vec::new(),
            steps: 0,
            overlap_steps: 0,
            failures: 0,
            grammar_masks: 0,
            grammar_mask_ns: 0,
            inflight: None,
            no_overlap,
            parked: Vec::new(),
        };
        // Counters exist from the start.
        w.deliver();
        w
    }

    pub(crate) fn run(mut self) {
        loop {
            // Block while idle; otherwise drain what arrived and take a step.
            let mut arrived = false;
            if self.sched.is_idle() && self.inflight.is_none() {
                match self.rx.recv() {
                    Ok(c) => {
                        arrived = true;
                        if !self.handle(c) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut stop = false;
            while let Ok(c) = self.rx.try_recv() {
                arrived = true;
                if !self.handle(c) {
                    stop = true;
                    break;
                }
            }
            if stop {
                break;
            }
            // Also before the step when commands came in: a long prefill step should not hide the
            // requests that just arrived (or the result of an abort). Steady decode publishes once a step.
            if arrived {
                self.deliver();
            }
            if !self.sched.is_idle() || self.inflight.is_some() {
                self.step();
            }
            self.deliver();
        }
        self.deliver();
        self.fail_all(ErrorCode::EngineShutdown, "the engine has been shut down");
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Returns false on shutdown.
    fn handle(&mut self, c: Command) -> bool {
        match c {
            Command::Add(mut r, tx) => {
                if self.live_rids.contains_key(&r.rid) {
                    let msg = format!("rid `{}` is already in use by a running request", r.rid);
                    let _ = tx.send(Event::Error(Error::invalid_input(msg)));
                    return true;
                }
                self.live_rids.insert(r.rid.clone(), r.id);
                self.outputs.insert(r.id, (tx, r.rid.clone()));
                if r.params.max_new_tokens == 0 {
                    r.finish = Some(FinishReason::Length(0));
                    self.finish(*r);
                } else {
                    self.sched.waiting.push_back(*r);
                }
            }
            Command::Abort(id, why) => self.abort(id, why),
            Command::AbortAll(why) => {
                // Every request added before this command (the channel is ordered): the live ones.
                let ids: Vec<u64> = self.live_rids.values().copied().collect();
                for id in ids {
                    self.abort(id, why.clone());
                }
            }
            Command::Flush(ack) => {
                self.sched.mem.flush();
                self.deliver();
                let _ = ack.send(());
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn info(&self) -> Value {
        let mem = &self.sched.mem;
        let stats = &self.sched.stats;
        let evictable = mem.cache.as_ref().map_or(0, |c| c.evictable_pages());
        json!({
            "poolPages": mem.total_pages(),
            "pagesFree": mem.pool.free_pages(),
            // Held by running requests (private pages, or cached pages they lock).
            "pagesUsed": mem.total_pages() - mem.pool.free_pages() - evictable,
            "pagesCached": mem.cached_pages(),
            "pagesEvictable": evictable,
            "pagesEvictedTotal": mem.evicted,
            "radixCache": mem.cache.is_some(),
            "promptTokensTotal": stats.prompt_tokens,
            "cachedTokensTotal": stats.cached_tokens,
            "cacheHitRate": if stats.prompt_tokens == 0 { 0.0 } else { stats.cached_tokens as f64 / stats.prompt_tokens as f64 },
            "running": self.sched.running.len(),
            "waiting": self.sched.waiting.len(),
            "steps": self.steps,
            // Passes left in flight while the next one was scheduled (overlap).
            "overlapSteps": self.overlap_steps,
            "retractions": self.sched.retractions,
            "integrityFailures": self.failures,
            "grammarMasks": self.grammar_masks,
            "grammarMaskSeconds": self.grammar_mask_ns as f64 * 1e-9,
            "backend": self.runner.info(),
        })
    }

    /// One iteration: schedules and launches the next pass, then collects the one launched before it (if
    /// any), so that with overlap the host's work for a pass runs while the device computes the next.
    fn step(&mut self) {
        let next = if self.sched.is_idle() { None } else { self.launch() };
        if let Some(prev) = self.inflight.take() {
            self.collect(prev);
        }
        // Ended by the pool's size while their last token was being drawn: that token is theirs.
        for mut r in std::mem::take(&mut self.parked) {
            r.finish.get_or_insert(FinishReason::Length(r.output.len()));
            self.finish(r);
        }
        match next {
            Some((f, true)) => {
                self.overlap_steps += 1;
                self.inflight = Some(f);
            }
            Some((f, _)) => self.collect(f),
            None => {}
        }
        if self.sched.is_idle() && self.inflight.is_none() {
            if let Err(e) = self.sched.check_integrity() {
                self.failures += 1;
                debug_assert!(false, "{e}");
            }
        }
    }

    /// Schedules and launches a pass. Its K/V counts as computed from here on (the device runs passes in
    /// launch order, so whatever reads those pages later comes after). Returns the pass and whether it
    /// may stay in flight while the next one is scheduled; if so, every sequence it samples that can go
    /// on gets a `FUTURE` placeholder for its token, so it is in the next pass already.
    fn launch(&mut self) -> Option<(InFlight, bool)> {
        let (batch, rejected, never_fit) = self.sched.schedule();
        for mut r in rejected {
            if r.known_len() < r.seq_len() {
                // Its token from the pass in flight comes with the collect below; it ends after that.
                r.finish = None;
                self.parked.push(r);
            } else {
                self.finish(r);
            }
        }
        for r in never_fit {
            let e = Error::new(ErrorCode::PromptTooLong, format!("the prompt ({} tokens) does not fit the KV pool", r.prompt.len()));
            self.send(r.id, Event::Error(e), true);
        }
        if batch.is_empty() {
            return None;
        }
        self.steps += 1;
        let tokens_only = match self.runner.launch(&self.sched.running, &batch) {
            Ok(t) => t && !self.no_overlap,
            Err(e) => {
                let ids: Vec<u64> = batch.iter().map(|&(i, _)| self.sched.running[i].id).collect();
                self.fail(&ids, e);
                return None;
            }
        };
        let mut entries = Vec::with_capacity(batch.len());
        for (k, &(i, q)) in batch.iter().enumerate() {
            let r = &mut self.sched.running[i];
            let was_prefill = r.kv_len < r.prompt.len();
            let sample = r.kv_len + q == r.seq_len();
            r.kv_len += q;
            if was_prefill {
                self.sched.cache_prefill_progress(i);
            }
            let r = &mut self.sched.running[i];
            let idx = r.output.len();
            let placeholder = (tokens_only && sample && !r.ends_at(idx)).then(|| {
                r.output.push(FUTURE | k as u32);
                idx
            });
            entries.push((r.id, i, placeholder));
        }
        Some((InFlight { entries }, tokens_only))
    }

    /// Fails the requests of a pass that could not run; the engine keeps serving the rest.
    fn fail(&mut self, ids: &[u64], e: Error) {
        for &id in ids {
            // Their KV may be incomplete: nothing of theirs goes to the cache.
            if let Some(r) = self.sched.take(id, false) {
                self.send(r.id, Event::Error(e.clone()), true);
            }
        }
    }

    /// Takes a pass's results into its requests (those still there: an abort may have ended one since
    /// the launch, a retraction moved it back to the queue) and ends the finished ones.
    fn collect(&mut self, f: InFlight) {
        let outs = match self.runner.collect() {
            Ok(o) => o,
            Err(e) => {
                let ids: Vec<u64> = f.entries.iter().map(|&(id, _, _)| id).collect();
                self.fail(&ids, e);
                // Pages of this pass went to the prefix cache at launch, as if computed; they were not.
                self.sched.mem.flush();
                return;
            }
        };
        let tk = self.tokenizer.clone();
        let mut finished = Vec::new();
        for (&(id, hint, placeholder), out) in f.entries.iter().zip(outs) {
            let parked = self.parked.iter_mut().find(|r| r.id == id);
            let Some(r) = parked.or(self.sched.find_mut(id, hint)) else { continue };
            r.record_rows(out.prompt_rows, out.hidden);
            let idx = placeholder.unwrap_or(r.output.len());
            let mut row = match out.sample {
                None => continue,
                Some(Sampled::Logits(row)) => row,
                Some(Sampled::Token(token)) => {
                    Self::emit(&mut finished, &mut self.outputs, r, idx, token, tk.as_ref());
                    continue;
                }
            };
            // Structured output: tokens the grammar cannot take next go to -inf first, so that no
            // penalty, temperature or top-k/top-p/min-p cut can bring them back. When nothing but EOS
            // is left, EOS is the token (drawn from a one-token distribution; no ban applies).
            let mut forced = None;
            if let Some(g) = r.grammar.as_mut() {
                let t = std::time::Instant::now();
                let mask = g.mask_logits(&mut row);
                self.grammar_mask_ns += t.elapsed().as_nanos() as u64;
                self.grammar_masks += 1;
                match mask {
                    Ok(Mask::Applied) => {}
                    Ok(Mask::Done) => {
                        let eos = g.eos();
                        row.iter_mut().enumerate().for_each(|(i, l)| if i != eos as usize { *l = f32::NEG_INFINITY });
                        forced = Some(eos);
                    }
                    Err(e) => {
                        r.finish = Some(FinishReason::Abort(e));
                        finished.push(r.id);
                        continue;
                    }
                }
            }
            let token = match forced {
                Some(t) => t,
                None => {
                    let banned = r.banned_now().to_vec();
                    r.sampler.sample(&mut row, &r.params, &banned)
                }
            };
            // `row` now holds the logits the token was drawn from (penalties, ban and bias applied).
            r.record_output_logprob(&row, token);
            Self::emit(&mut finished, &mut self.outputs, r, idx, token, tk.as_ref());
        }
        for id in finished {
            if let Some(r) = self.sched.take(id, true) {
                self.finish(r);
            }
        }
    }

    /// Takes `token` into `r` at output index `idx`: a finished request is noted in `finished`, a
    /// streaming one gets its chunk.
    fn emit(
        finished: &mut Vec<u64>,
        outputs: &mut HashMap<u64, (UnboundedSender<Event>, String)>,
        r: &mut Request,
        idx: usize,
        token: u32,
        tk: Option<&Arc<TokenizerInfo>>,
    ) {
        r.accept_at(idx, token, tk.map(|t| &t.tokenizer));
        if r.finish.is_some() {
            finished.push(r.id);
        } else if r.stream {
            let delta = r.release(tk.map(|t| &t.tokenizer));
            let chunk = Chunk { delta, ids: vec![token], prompt_tokens: r.prompt.len(), completion_tokens: idx + 1, cached_tokens: r.cached_tokens };
            if let Some((tx, _)) = outputs.get(&r.id) {
                let _ = tx.send(Event::Chunk(chunk));
            }
        }
    }

    /// Sends the final event of a request whose pages are already returned.
    fn finish(&mut self, mut r: Request) {
        let tk = self.tokenizer.clone();
        // Ended (aborted, or out of room) while a pass that draws its next token was in flight: that
        // token is not part of the output.
        if let Some(p) = r.output.iter().position(|&t| t & FUTURE != 0) {
            r.output.truncate(p);
            if let Some(FinishReason::Length(n)) = r.finish.as_mut() {
                *n = p;
            }
        }
        let finish = r.finish.clone().unwrap_or(FinishReason::Abort("unknown".into()));
        let tail = r.release(tk.as_ref().map(|t| &t.tokenizer));
        let last_id = if r.stream { r.output.last().copied().into_iter().collect() } else { Vec::new() };
        // The request ends here: its text and ids move into the output.
        let out = Output {
            delta: tail,
            delta_ids: if matches!(finish, FinishReason::Abort(_)) { Vec::new() } else { last_id },
            prompt_tokens: r.prompt.len(),
            completion_tokens: r.output.len(),
            cached_tokens: r.cached_tokens,
            retractions: r.retractions,
            e2e_latency: r.arrived.elapsed().as_secs_f64(),
            logprobs: r.ret.logprob.then(|| {
                let text = |id: u32| tk.as_ref().and_then(|t| t.tokenizer.decode(&[id], false).ok());
                meta_json(&r.collected, &r.ret, &r.prompt, &text)
            }),
            hidden_states: r.ret.hidden.then(|| std::mem::take(&mut r.collected.hidden)),
            rid: std::mem::take(&mut r.rid),
            text: std::mem::take(&mut r.text.text),
            output_ids: std::mem::take(&mut r.output),
            finish,
        };
        self.send(r.id, Event::Done(out), true);
    }

    /// Publishes the counters, then sends the final events held back until now.
    fn deliver(&mut self) {
        let info = self.info();
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = info;
        for (tx, ev) in self.done.drain(..) {
            let _ = tx.send(ev);
        }
    }

    fn abort(&mut self, id: u64, why: String) {
        if let Some(mut r) = self.sched.take(id, true) {
            r.finish = Some(FinishReason::Abort(why));
            self.finish(r);
        }
    }

    fn send(&mut self, id: u64, ev: Event, last: bool) {
        if last {
            if let Some((tx, rid)) = self.outputs.remove(&id) {
                self.live_rids.remove(&rid);
                self.done.push((tx, ev));
            }
        } else if let Some((tx, _)) = self.outputs.get(&id) {
            let _ = tx.send(ev);
        }
    }

    fn fail_all(&mut self, code: ErrorCode, msg: &str) {
        let ids: Vec<u64> = self.sched.running.iter().chain(self.sched.waiting.iter()).map(|r| r.id).collect();
        for id in ids {
            self.sched.take(id, true);
        }
        self.live_rids.clear();
        for (_, (tx, _)) in self.outputs.drain() {
            let _ = tx.send(Event::Error(Error::new(code, msg)));
        }
    }
}

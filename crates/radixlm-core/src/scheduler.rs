//! Policy: which requests run in the next forward pass and how many tokens each computes. Decides and
//! allocates pages (through `KvMemory`); never touches tensors.
//!
//! Each step, under a token budget (`chunkedPrefillSize`):
//! 1. running requests first, oldest first: 1 token for a decode, a chunk for an unfinished prompt. When
//!    pages run out (after evicting cached leaves), the youngest running request is retracted: its
//!    computed tokens go to the prefix cache, it goes back to the head of the queue and is recomputed
//!    later (mostly from the cache) with its output so far, so the result is the same.
//! 2. then waiting requests are admitted (FCFS, or longest cached prefix first with `lpm`) while budget,
//!    running slots and pages last: each starts from its cached prefix and gets its first chunk at once.
//!    A prompt sharing a long prefix with one still being prefilled waits a step or more, so that it
//!    reuses that prefix instead of computing it a second time (SGLang's in-batch prefix check).
//!
//! Admission keeps pages in reserve for the decode tokens the running requests may still produce
//! (an estimate that starts cautious and relaxes while nothing is retracted, as SGLang's new-token
//! ratio), so that admitting does not immediately force a retraction.

use std::collections::VecDeque;

use crate::memory::{KvMemory, PageTable};
use crate::request::{seq_tokens, FinishReason, Request};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Policy {
    Fcfs,
    LongestPrefix,
}

pub struct SchedulerConfig {
    pub max_running: usize,
    pub chunk_budget: usize,
    pub policy: Policy,
    /// Test hook: retract the youngest running request every N steps.
    pub retract_every: Option<u64>,
}

/// Running totals for `getServerInfo()`.
#[derive(Default)]
pub struct CacheStats {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
}

pub struct Scheduler {
    pub cfg: SchedulerConfig,
    pub waiting: VecDeque<Request>,
    pub running: Vec<Request>,
    pub mem: KvMemory,
    pub retractions: u64,
    pub stats: CacheStats,
    steps: u64,
    /// Fraction of each running request's remaining `maxNewTokens` kept in reserve at admission.
    new_token_ratio: f64,
}

/// (index into `running`, tokens to compute this pass).
pub type Batch = Vec<(usize, usize)>;

/// Only this much extra sharing makes a waiting prompt wait for a running prefill.
const IN_BATCH_SHARE_MIN: usize = 32;
/// Above this queue length `lpm` falls back to FCFS (matching every waiting prompt costs time).
const LPM_MAX_QUEUE: usize = 128;
const RATIO_INIT: f64 = 0.7;
const RATIO_MIN: f64 = 0.1;
const RATIO_DECAY: f64 = 0.001;
/// A single request's reserve is capped: very long `maxNewTokens` should not block all admission.
const RESERVE_CAP_TOKENS: usize = 4096;

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, mem: KvMemory) -> Self {
        Scheduler {
            cfg,
            waiting: VecDeque::new(),
            running: Vec::new(),
            mem,
            retractions: 0,
            stats: CacheStats::default(),
            steps: 0,
            new_token_ratio: RATIO_INIT,
        }
    }

    fn pages_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.mem.page_size())
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Returns the batch, requests finished by the pool's size (`length`), and waiting prompts that
    /// can never fit the pool (`ERR_PROMPT_TOO_LONG` upstream).
    pub fn schedule(&mut self) -> (Batch, Vec<Request>, Vec<Request>) {
        self.steps += 1;
        self.new_token_ratio = (self.new_token_ratio - RATIO_DECAY).max(RATIO_MIN);
        if let Some(n) = self.cfg.retract_every {
            if self.steps % n == 0 && !self.running.is_empty() {
                self.retract_youngest();
            }
        }
        let mut rejected = Vec::new();
        let mut never_fit = Vec::new();
        let mut batch = Vec::new();
        let mut budget = self.cfg.chunk_budget;
        self.schedule_running(&mut batch, &mut budget, &mut rejected);
        self.admit(&mut batch, &mut budget, &mut rejected, &mut never_fit);
        (batch, rejected, never_fit)
    }

    fn schedule_running(&mut self, batch: &mut Batch, budget: &mut usize, rejected: &mut Vec<Request>) {
        let mut i = 0;
        while i < self.running.len() {
            let pending = self.running[i].pending();
            let q = if pending <= 1 { pending } else { pending.min(*budget) };
            if q == 0 {
                i += 1;
                continue;
            }
            let r = &self.running[i];
            let need = self.pages_for(r.kv_len + q).saturating_sub(r.pages.ids.len());
            if !self.mem.grow(&mut self.running[i].pages, need) {
                if self.running.len() == 1 {
                    // Alone and out of pages: it cannot grow any further.
                    let mut r = self.running.remove(i);
                    self.release(&mut r, true);
                    r.finish = Some(FinishReason::Length(r.output.len()));
                    rejected.push(r);
                    continue;
                }
                self.retract_youngest();
                continue; // retry i (or stop if it was i that got retracted)
            }
            *budget = budget.saturating_sub(q);
            batch.push((i, q));
            i += 1;
        }
    }

    /// Pages to keep free for the decode tokens running requests may still produce.
    fn reserve_pages(&self) -> usize {
        let tokens: f64 = self
            .running
            .iter()
            .map(|r| {
                let left = (r.params.max_new_tokens.saturating_sub(r.output.len()))
                    .min(r.max_seq_len.saturating_sub(r.seq_len()))
                    .min(RESERVE_CAP_TOKENS);
                left as f64 * self.new_token_ratio
            })
            .sum();
        self.pages_for(tokens as usize)
    }

    /// Whether `tokens` would reuse at least `IN_BATCH_SHARE_MIN` more tokens than `cached` once a
    /// running prompt that is still being prefilled has been cached.
    /// The samples of one prompt (`n` > 1) share it whole: one page of gain is enough for them, so the
    /// prompt is prefilled once.
    fn should_wait_for_running_prefill(&self, tokens: &[u32], cached: usize) -> bool {
        let page = self.mem.page_size();
        self.mem.cache.is_some()
            && self.running.iter().any(|o| {
                let common = o.prompt.iter().zip(tokens).take_while(|(a, b)| a == b).count();
                let same_prompt = common == tokens.len() && o.prompt.len() > tokens.len();
                let min_gain = if same_prompt { page } else { IN_BATCH_SHARE_MIN };
                o.kv_len < o.prompt.len() && common >= cached + min_gain
            })
    }

    fn admit(&mut self, batch: &mut Batch, budget: &mut usize, rejected: &mut Vec<Request>, never_fit: &mut Vec<Request>) {
        if self.cfg.policy == Policy::LongestPrefix && self.mem.cache.is_some() && self.waiting.len() <= LPM_MAX_QUEUE {
            let mem = &self.mem;
            // Stable: equal matches keep arrival order.
            self.waiting.make_contiguous().sort_by_cached_key(|r| {
                std::cmp::Reverse(mem.peek_prefix(&r.tokens(r.cacheable_prefix())))
            });
        }
        let mut reserve = self.reserve_pages();
        let mut idx = 0;
        while idx < self.waiting.len() && *budget > 0 && self.running.len() < self.cfg.max_running {
            let r = &self.waiting[idx];
            if self.pages_for(r.seq_len() + 1) > self.mem.total_pages() {
                let mut r = self.waiting.remove(idx).expect("index checked");
                if r.output.is_empty() {
                    never_fit.push(r);
                } else {
                    // Retracted after growing to the pool's size: it ends like any request out of room.
                    r.finish = Some(FinishReason::Length(r.output.len()));
                    rejected.push(r);
                }
                continue;
            }
            // The last token is always computed, even for a fully cached prompt: its logits are needed.
            let tokens = r.tokens(r.cacheable_prefix());
            if self.should_wait_for_running_prefill(&tokens, self.mem.peek_prefix(&tokens)) {
                idx += 1;
                continue;
            }
            let mut table = PageTable::default();
            let matched = self.mem.attach_prefix(&mut table, &tokens);
            drop(tokens);
            let need = self.pages_for(self.waiting[idx].seq_len() + 1) - table.ids.len();
            let room = self.mem.available();
            if need > room || (!self.running.is_empty() && need + reserve > room) {
                self.mem.release(&mut table, None);
                break;
            }
            let mut r = self.waiting.remove(idx).expect("index checked");
            r.pages = table;
            r.kv_len = matched;
            if !r.admitted {
                r.admitted = true;
                r.cached_tokens = matched.min(r.prompt.len());
                self.stats.prompt_tokens += r.prompt.len() as u64;
                self.stats.cached_tokens += r.cached_tokens as u64;
            }
            let q = r.pending().min(*budget);
            let grow = self.pages_for(r.kv_len + q) - r.pages.ids.len();
            let grown = self.mem.grow(&mut r.pages, grow);
            debug_assert!(grown, "admission checked the room");
            *budget -= q;
            reserve += self.pages_for((r.params.max_new_tokens.min(RESERVE_CAP_TOKENS) as f64 * self.new_token_ratio) as usize);
            self.running.push(r);
            batch.push((self.running.len() - 1, q));
        }
    }

    /// Gives a request's pages back: to the prefix cache (when `cache` and its KV is valid) and the
    /// free list.
    fn release(&mut self, r: &mut Request, cache: bool) {
        let known = r.kv_len.min(r.known_len());
        let tokens = cache.then(|| seq_tokens(&r.prompt, &r.output, known));
        self.mem.release(&mut r.pages, tokens.as_deref());
    }

    fn retract_youngest(&mut self) {
        let mut r = self.running.pop().expect("running is not empty");
        self.release(&mut r, true);
        r.kv_len = 0;
        r.retractions += 1;
        self.retractions += 1;
        self.new_token_ratio = RATIO_INIT;
        self.waiting.push_front(r);
    }

    /// After a pass: hands the computed whole pages of prompts still being prefilled to the cache, so
    /// that waiting requests with the same prefix can start from them.
    pub fn cache_prefill_progress(&mut self, i: usize) {
        let r = &mut self.running[i];
        let tokens = seq_tokens(&r.prompt, &r.output, r.kv_len.min(r.known_len()));
        self.mem.cache_prefix(&mut r.pages, &tokens);
    }

    /// Removes a finished or aborted request from wherever it is, returning its pages (to the cache
    /// with `cache`: only when its KV is known good).
    pub fn take(&mut self, id: u64, cache: bool) -> Option<Request> {
        let mut r = if let Some(i) = self.running.iter().position(|r| r.id == id) {
            self.running.remove(i)
        } else {
            let i = self.waiting.iter().position(|r| r.id == id)?;
            self.waiting.remove(i)?
        };
        self.release(&mut r, cache);
        Some(r)
    }

    /// A request still in the engine (running, or back in the queue after a retraction); `hint` is
    /// where it was in `running` (right unless requests before it have left since).
    pub fn find_mut(&mut self, id: u64, hint: usize) -> Option<&mut Request> {
        if self.running.get(hint).is_some_and(|r| r.id == id) {
            return Some(&mut self.running[hint]);
        }
        match self.running.iter().position(|r| r.id == id) {
            Some(i) => Some(&mut self.running[i]),
            None => self.waiting.iter_mut().find(|r| r.id == id),
        }
    }

    pub fn check_integrity(&self) -> Result<(), String> {
        self.mem.check_integrity(self.running.iter().chain(self.waiting.iter()).map(|r| &r.pages))
    }
}

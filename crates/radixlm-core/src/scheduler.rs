//! Policy: which requests run in the next forward pass and how many tokens each computes. Decides and
//! allocates pages; never touches tensors.
//!
//! Each step: admit waiting requests (FCFS) while there is room (running slots, pages for the prompt),
//! then give every running request its tokens: 1 for a decode, a chunk of at most the remaining prefill
//! budget for a prompt. When pages run out, the youngest running request is retracted (pages freed, put
//! back at the head of the queue, recomputed later with its output so far) so older ones progress.

use std::collections::VecDeque;

use crate::kv_cache::PagePool;
use crate::request::{FinishReason, Request};

pub struct SchedulerConfig {
    pub max_running: usize,
    pub chunk_budget: usize,
    pub page_size: usize,
}

pub struct Scheduler {
    pub cfg: SchedulerConfig,
    pub waiting: VecDeque<Request>,
    pub running: Vec<Request>,
    pub pool: PagePool,
    pub retractions: u64,
}

/// (index into `running`, tokens to compute this pass).
pub type Batch = Vec<(usize, usize)>;

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, pool: PagePool) -> Self {
        Scheduler { cfg, waiting: VecDeque::new(), running: Vec::new(), pool, retractions: 0 }
    }

    fn pages_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.cfg.page_size)
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Pages held by requests (for the integrity check).
    pub fn pages_in_use(&self) -> usize {
        self.running.iter().chain(self.waiting.iter()).map(|r| r.pages.len()).sum()
    }

    /// Returns the batch, requests finished by the pool's size (`length`), and waiting prompts that
    /// can never fit the pool (`ERR_PROMPT_TOO_LONG` upstream).
    pub fn schedule(&mut self) -> (Batch, Vec<Request>, Vec<Request>) {
        let mut rejected = Vec::new();
        let mut never_fit = Vec::new();
        while let Some(front) = self.waiting.front() {
            if self.pages_for(front.seq_len() + 1) > self.pool.total() {
                let mut r = self.waiting.pop_front().unwrap();
                if r.output.is_empty() {
                    never_fit.push(r);
                } else {
                    // Retracted after growing to the pool's size: it ends like any request out of room.
                    r.finish = Some(FinishReason::Length(r.output.len()));
                    rejected.push(r);
                }
                continue;
            }
            if self.running.len() >= self.cfg.max_running
                || self.pages_for(front.seq_len() + 1) > self.pool.free_pages()
            {
                break;
            }
            let r = self.waiting.pop_front().unwrap();
            self.running.push(r);
        }

        let mut batch = Vec::new();
        let mut budget = self.cfg.chunk_budget;
        let mut i = 0;
        while i < self.running.len() {
            let pending = self.running[i].pending();
            let q = if pending <= 1 { pending } else { pending.min(budget) };
            if q == 0 {
                i += 1;
                continue;
            }
            let need = self.pages_for(self.running[i].kv_len + q).saturating_sub(self.running[i].pages.len());
            if need > self.pool.free_pages() {
                if self.running.len() == 1 {
                    // Alone and out of pages: it cannot grow any further.
                    let mut r = self.running.remove(i);
                    r.finish = Some(FinishReason::Length(r.output.len()));
                    rejected.push(r);
                    continue;
                }
                self.retract_youngest();
                continue; // retry i (or stop if it was i that got retracted)
            }
            let r = &mut self.running[i];
            r.pages.extend(self.pool.alloc(need).expect("checked free pages"));
            budget = budget.saturating_sub(q);
            batch.push((i, q));
            i += 1;
        }
        (batch, rejected, never_fit)
    }

    fn retract_youngest(&mut self) {
        let mut r = self.running.pop().expect("running is not empty");
        self.pool.release(&mut r.pages);
        r.kv_len = 0;
        r.retractions += 1;
        self.retractions += 1;
        self.waiting.push_front(r);
    }

    /// Removes a finished or aborted request from wherever it is, returning its pages.
    pub fn take(&mut self, id: u64) -> Option<Request> {
        let mut r = if let Some(i) = self.running.iter().position(|r| r.id == id) {
            self.running.remove(i)
        } else {
            let i = self.waiting.iter().position(|r| r.id == id)?;
            self.waiting.remove(i)?
        };
        self.pool.release(&mut r.pages);
        Some(r)
    }

    pub fn check_integrity(&self) -> Result<(), String> {
        self.pool.check_integrity(self.pages_in_use())
    }
}

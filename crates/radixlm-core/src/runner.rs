//! Compute: turns a scheduled batch into the packed ids + `ForwardCtx`, runs the model, and hands back
//! for every sequence whose pending tokens are now all computed either its logits row (sampled on the
//! host) or, on a backend that samples on the device, the token itself.
//!
//! `Backend` is what the engine thread drives; `ModelRunner` is the CPU one, the CUDA one lives in
//! `cuda_backend.rs` (built with the `cuda` feature).
//!
//! Passes are launched and collected in order. When a launched pass hands back nothing but tokens the
//! backend draws itself, the engine schedules and launches the next pass before collecting it (overlap):
//! a token not known yet stands in the next pass's ids as `FUTURE | k`, "the token drawn for entry k of
//! the previous launched pass", which the backend resolves where that token is (on the GPU, the sampler's
//! output buffer).

use std::collections::VecDeque;

use crate::error::Result;
use crate::forward_ctx::{ForwardCtx, SeqSlice};
use crate::kv_cache::KvCache;
use crate::layers::transformer::Transformer;
use crate::request::Request;
use crate::sampling::sampler::argmax;
use crate::scheduler::Batch;

/// Marks a token id as a reference to the previous pass's draw for batch entry `id & !FUTURE`
/// (vocabularies are far below 2^31).
pub const FUTURE: u32 = 0x8000_0000;

/// A compute backend: owns the weights and the KV storage the page ids index into.
pub trait Backend: Send {
    /// Starts the pass of `batch` over `running` (ids may hold `FUTURE` references into the previous
    /// launch). Returns whether its results will be tokens only (every sampled entry drawn by the
    /// backend, no prompt or hidden rows): only then may the next pass be launched before `collect`.
    fn launch(&mut self, running: &[Request], batch: &Batch) -> Result<bool>;
    /// Per batch entry of the oldest pass not yet collected: what to sample from (or what was sampled)
    /// when its pending tokens are now all computed, plus the rows it asked for.
    fn collect(&mut self) -> Result<Vec<EntryOut>>;
    /// What `getServerInfo()` reports as the device, e.g. `cpu` or `NVIDIA H100 80GB HBM3 (sm_90)`.
    fn device(&self) -> String;
    /// Backend counters for `getServerInfo()` (e.g. CUDA graphs captured).
    fn info(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Whether the backend draws `r`'s next token itself: the device sampler's case on CUDA; on the CPU,
/// greedy rows (an argmax, the same as the host sampler's for such a request).
pub fn draws_greedy(r: &Request) -> bool {
    r.device_sampleable() && r.params.is_greedy()
}

pub struct ModelRunner {
    pub model: Transformer,
    pub kv: KvCache,
    /// Launched passes, computed when collected (in order), so a result goes out as soon as it exists.
    pub queue: VecDeque<Prepared>,
    /// The previous computed pass's drawn token per batch entry (what `FUTURE` references resolve to).
    pub prev: Vec<u32>,
}

impl ModelRunner {
    pub fn new(model: Transformer, kv: KvCache) -> Self {
        ModelRunner { model, kv, queue: VecDeque::new(), prev: Vec::new() }
    }
}

/// A pass with everything it needs copied out of the requests (they change before it is computed).
pub struct Prepared {
    ids: Vec<u32>,
    /// (q_len, start, page table) per sequence.
    seqs: Vec<(usize, usize, Vec<u32>)>,
    logit_rows: Vec<usize>,
    hidden_rows: Vec<usize>,
    entries: Vec<EntryRows>,
    /// Per entry: its sample row is drawn here (greedy) instead of going back as logits.
    draw: Vec<bool>,
}

impl Backend for ModelRunner {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn launch(&mut self, running: &[Request], batch: &Batch) -> Result<bool> {
        let pass = Pass::prepare(running, batch, self.kv.page_size);
        let draw: Vec<bool> = batch.iter().zip(&pass.entries).map(|(&(i, _), e)| e.sample && draws_greedy(&running[i])).collect();
        let tokens_only = pass.hidden_rows.is_empty()
            && pass.entries.iter().zip(&draw).all(|(e, &d)| e.prompt_targets.is_empty() && (d || !e.sample));
        self.queue.push_back(Prepared {
            seqs: pass.ctx.seqs.iter().map(|s| (s.q_len, s.start, s.page_table.to_vec())).collect(),
            ids: pass.ids,
            logit_rows: pass.ctx.logit_rows,
            hidden_rows: pass.hidden_rows,
            entries: pass.entries,
            draw,
        });
        Ok(tokens_only)
    }

    fn collect(&mut self) -> Result<Vec<EntryOut>> {
        let mut p = self.queue.pop_front().ok_or_else(|| crate::error::Error::internal("collect without a launched pass"))?;
        // (A reference into a pass that failed reads 0: the requests it names have been failed.)
        for id in p.ids.iter_mut().filter(|id| **id & FUTURE != 0) {
            *id = self.prev.get((*id & !FUTURE) as usize).copied().unwrap_or(0);
        }
        self.prev.clear();
        let seqs = p.seqs.iter().map(|(q_len, start, t)| SeqSlice { q_len: *q_len, start: *start, page_table: t }).collect();
        let ctx = ForwardCtx { seqs, page_size: self.kv.page_size, logit_rows: p.logit_rows };
        let (logits, hidden) = self.model.forward_with_hidden(&p.ids, &ctx, &mut self.kv, &p.hidden_rows)?;
        let vocab = self.model.cfg.vocab_size;
        let width = self.model.cfg.hidden_size;
        let mut logit_rows = logits.chunks_exact(vocab);
        let mut hidden_rows = hidden.chunks_exact(width);
        let mut out = Vec::with_capacity(p.entries.len());
        for (e, draw) in p.entries.into_iter().zip(p.draw) {
            let prompt_rows = e.prompt_targets.map(|t| (t, logit_rows.next().expect("row").to_vec())).collect();
            let sample = e.sample.then(|| {
                let row = logit_rows.next().expect("row");
                if draw { Sampled::Token(argmax(row)) } else { Sampled::Logits(row.to_vec()) }
            });
            self.prev.push(match sample {
                Some(Sampled::Token(t)) => t,
                _ => 0,
            });
            let hidden = e.hidden_positions.map(|p| (p, hidden_rows.next().expect("row").to_vec())).collect();
            out.push(EntryOut { sample, prompt_rows, hidden });
        }
        Ok(out)
    }
}

/// The next token of a sequence, as the backend hands it over.
pub enum Sampled {
    /// Logits (f32, vocab wide) for the host sampler: penalties, grammar masks, logprobs.
    Logits(Vec<f32>),
    /// Drawn on the device (only for requests with `Request::device_sampleable`).
    Token(u32),
}

/// What a pass produced for one batch entry.
pub struct EntryOut {
    /// The next token or its logits, when the sequence is now fully computed.
    pub sample: Option<Sampled>,
    /// (prompt position t, logits predicting token t) for the prompt logprobs asked for.
    pub prompt_rows: Vec<(usize, Vec<f32>)>,
    /// (position, final hidden state) for the hidden states asked for.
    pub hidden: Vec<(usize, Vec<f32>)>,
}

/// Which packed rows one batch entry wants back.
pub struct EntryRows {
    pub sample: bool,
    pub prompt_targets: std::ops::Range<usize>,
    pub hidden_positions: std::ops::Range<usize>,
}

/// The host-side inputs of one forward pass.
pub struct Pass<'a> {
    pub ids: Vec<u32>,
    pub ctx: ForwardCtx<'a>,
    pub hidden_rows: Vec<usize>,
    pub entries: Vec<EntryRows>,
}

impl<'a> Pass<'a> {
    pub fn prepare(running: &'a [Request], batch: &Batch, page_size: usize) -> Pass<'a> {
        let mut ids = Vec::new();
        let mut seqs = Vec::with_capacity(batch.len());
        let mut logit_rows = Vec::new();
        let mut hidden_rows = Vec::new();
        let mut entries = Vec::with_capacity(batch.len());
        for &(i, q) in batch {
            let r = &running[i];
            let base = ids.len(); // packed row of position r.kv_len
            let (from, to) = (r.kv_len, r.kv_len + q);
            ids.extend((from..to).map(|p| r.token_at(p)));
            // Prompt token t is predicted by the row of position t - 1.
            let p_len = r.prompt.len();
            let prompt_targets = match r.ret.prompt_start(p_len) {
                Some(start) => {
                    let first = start.max(r.collected.input_next).max(1).max(from + 1);
                    first..(to + 1).min(p_len).max(first)
                }
                None => 0..0,
            };
            logit_rows.extend(prompt_targets.clone().map(|t| base + t - 1 - from));
            let sample = to == r.seq_len();
            if sample {
                logit_rows.push(base + q - 1);
            }
            let hidden_positions = if r.ret.hidden { from.max(r.collected.hidden_next).min(to)..to } else { 0..0 };
            hidden_rows.extend(hidden_positions.clone().map(|p| base + p - from));
            entries.push(EntryRows { sample, prompt_targets, hidden_positions });
            seqs.push(SeqSlice { q_len: q, start: r.kv_len, page_table: &r.pages.ids });
        }
        Pass { ids, ctx: ForwardCtx { seqs, page_size, logit_rows }, hidden_rows, entries }
    }
}

//! Compute: turns a scheduled batch into the packed ids + `ForwardCtx`, runs the model, and hands back
//! for every sequence whose pending tokens are now all computed either its logits row (sampled on the
//! host) or, on a backend that samples on the device, the token itself.
//!
//! `Backend` is what the engine thread drives; `ModelRunner` is the CPU one, the CUDA one lives in
//! `cuda_backend.rs` (built with the `cuda` feature).

use crate::error::Result;
use crate::forward_ctx::{ForwardCtx, SeqSlice};
use crate::kv_cache::KvCache;
use crate::layers::transformer::Transformer;
use crate::request::Request;
use crate::scheduler::Batch;

/// A compute backend: owns the weights and the KV storage the page ids index into.
pub trait Backend: Send {
    /// Per batch entry: what to sample from (or what was sampled) when its pending tokens are now all
    /// computed, plus the rows it asked for (prompt logprobs, hidden states).
    fn run(&mut self, running: &[Request], batch: &Batch) -> Result<Vec<EntryOut>>;
    /// What `getServerInfo()` reports as the device, e.g. `cpu` or `NVIDIA H100 80GB HBM3 (sm_90)`.
    fn device(&self) -> String;
    /// Backend counters for `getServerInfo()` (e.g. CUDA graphs captured).
    fn info(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

pub struct ModelRunner {
    pub model: Transformer,
    pub kv: KvCache,
}

impl Backend for ModelRunner {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn run(&mut self, running: &[Request], batch: &Batch) -> Result<Vec<EntryOut>> {
        let pass = Pass::prepare(running, batch, self.kv.page_size);
        let (logits, hidden) = self.model.forward_with_hidden(&pass.ids, &pass.ctx, &mut self.kv, &pass.hidden_rows)?;
        let vocab = self.model.cfg.vocab_size;
        let width = self.model.cfg.hidden_size;
        let mut logit_rows = logits.chunks_exact(vocab);
        let mut hidden_rows = hidden.chunks_exact(width);
        let mut out = Vec::with_capacity(pass.entries.len());
        for e in pass.entries {
            let prompt_rows = e.prompt_targets.map(|t| (t, logit_rows.next().expect("row").to_vec())).collect();
            let sample = e.sample.then(|| Sampled::Logits(logit_rows.next().expect("row").to_vec()));
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

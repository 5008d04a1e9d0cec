//! Compute: turns a scheduled batch into the packed ids + `ForwardCtx`, runs the model, and hands back
//! one logits row for every sequence whose pending tokens are now all computed.

use crate::error::Result;
use crate::forward_ctx::{ForwardCtx, SeqSlice};
use crate::kv_cache::KvCache;
use crate::layers::transformer::Transformer;
use crate::request::Request;
use crate::scheduler::Batch;

pub struct ModelRunner {
    pub model: Transformer,
    pub kv: KvCache,
}

impl ModelRunner {
    /// Per batch entry: the logits to sample from when its pending tokens are now all computed, plus
    /// the rows it asked for (prompt logprobs, hidden states).
    pub fn run(&mut self, running: &[Request], batch: &Batch) -> Result<Vec<EntryOut>> {
        let pass = Pass::prepare(running, batch, self.kv.page_size);
        let (logits, hidden) = self.model.forward_with_hidden(&pass.ids, &pass.ctx, &mut self.kv, &pass.hidden_rows)?;
        let vocab = self.model.cfg.vocab_size;
        let width = self.model.cfg.hidden_size;
        let mut logit_rows = logits.chunks_exact(vocab);
        let mut hidden_rows = hidden.chunks_exact(width);
        let mut out = Vec::with_capacity(pass.entries.len());
        for e in pass.entries {
            let prompt_rows = e.prompt_targets.map(|t| (t, logit_rows.next().expect("row").to_vec())).collect();
            let sample = e.sample.then(|| logit_rows.next().expect("row").to_vec());
            let hidden = e.hidden_positions.map(|p| (p, hidden_rows.next().expect("row").to_vec())).collect();
            out.push(EntryOut { sample, prompt_rows, hidden });
        }
        Ok(out)
    }
}

/// What a pass produced for one batch entry.
pub struct EntryOut {
    /// Logits of the next token, when the sequence is now fully computed.
    pub sample: Option<Vec<f32>>,
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

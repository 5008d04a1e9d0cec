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
    /// Logits (vocab-sized) per batch entry that reaches the end of its sequence; None for a prefill
    /// chunk that leaves more of the prompt for later passes.
    pub fn run(&mut self, running: &[Request], batch: &Batch) -> Result<Vec<Option<Vec<f32>>>> {
        let pass = Pass::prepare(running, batch, self.kv.page_size);
        let logits = self.model.forward(&pass.ids, &pass.ctx, &mut self.kv)?;
        let vocab = self.model.cfg.vocab_size;
        let mut rows = logits.chunks_exact(vocab).map(|r| r.to_vec());
        Ok(pass.wants.into_iter().map(|w| if w { rows.next() } else { None }).collect())
    }
}

/// The host-side inputs of one forward pass.
pub struct Pass {
    pub ids: Vec<u32>,
    pub ctx: ForwardCtx,
    /// Per batch entry: whether its logits come back.
    pub wants: Vec<bool>,
}

impl Pass {
    pub fn prepare(running: &[Request], batch: &Batch, page_size: usize) -> Pass {
        let mut ids = Vec::new();
        let mut seqs = Vec::with_capacity(batch.len());
        let mut logit_rows = Vec::new();
        let mut wants = Vec::with_capacity(batch.len());
        for &(i, q) in batch {
            let r = &running[i];
            ids.extend((r.kv_len..r.kv_len + q).map(|p| r.token_at(p)));
            let done = r.kv_len + q == r.seq_len();
            if done {
                logit_rows.push(ids.len() - 1);
            }
            wants.push(done);
            seqs.push(SeqSlice { q_len: q, start: r.kv_len, page_table: r.pages.ids.clone() });
        }
        Pass { ids, ctx: ForwardCtx { seqs, page_size, logit_rows }, wants }
    }
}

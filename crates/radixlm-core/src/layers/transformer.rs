//! The pre-norm decoder shared by Llama-like architectures: embedding, N x (RMSNorm, GQA attention with
//! RoPE, residual, RMSNorm, SwiGLU MLP, residual), final norm, LM head. `forward` is pure with respect
//! to request state: everything per-sequence comes in through `ForwardCtx`, the KV through `KvCache`.
//!
//! Activations are plain row-major `Vec<f32>` [tokens, width]: at CPU batch sizes the element-wise work
//! is tiny next to the matmuls, and plain loops avoid a tensor allocation per op.

use candle_core::Device;

use super::attention::{attend, write_kv, AttnShape};
use super::rope::RopeTable;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::forward_ctx::ForwardCtx;
use crate::kv_cache::KvCache;
use crate::model::weights::{MatWeight, WeightMode, Weights};

/// A matmul plus optional bias, possibly several projections stacked (see `MatWeight::stacked`).
struct Linear {
    w: MatWeight,
    bias: Option<Vec<f32>>,
}

impl Linear {
    fn load(w: &Weights, names: &[(&str, usize)], in_dim: usize, bias: bool, mode: WeightMode) -> Result<Self> {
        let mut parts = Vec::new();
        let mut biases = Vec::new();
        for &(name, out) in names {
            let (q, b) = w.linear_parts(name, out, in_dim, bias)?;
            parts.push(q);
            biases.extend(b.unwrap_or_default());
        }
        Ok(Linear { w: MatWeight::stacked(parts, mode)?, bias: bias.then_some(biases) })
    }

    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let mut y = self.w.forward(x, m)?;
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len()) {
                for (v, bv) in row.iter_mut().zip(b) {
                    *v += bv;
                }
            }
        }
        Ok(y)
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    qkv: Linear,
    o: Linear,
    mlp_norm: Vec<f32>,
    gate_up: Linear,
    down: Linear,
}

pub struct Transformer {
    pub cfg: ModelConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: MatWeight,
    inv_freq: Vec<f32>,
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(w.len()) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, g)| v * inv * g));
    }
    out
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

impl Transformer {
    pub fn load(cfg: ModelConfig, w: &Weights, mode: WeightMode) -> Result<Self> {
        Self::load_with_progress(cfg, w, mode, &mut |_, _| {})
    }

    /// As `load`, calling `on_layer(done, total)` after each decoder layer.
    pub fn load_with_progress(cfg: ModelConfig, w: &Weights, mode: WeightMode, on_layer: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (qs, kvs) = (cfg.q_size(), cfg.kv_size());
        let embed_q = w.qtensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let embed = embed_q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let vec = |name: &str| -> Result<Vec<f32>> { Ok(w.vector(name, h)?.to_vec1::<f32>()?) };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let (q, k, v) = (p("self_attn.q_proj"), p("self_attn.k_proj"), p("self_attn.v_proj"));
            let (g, u) = (p("mlp.gate_proj"), p("mlp.up_proj"));
            layers.push(Layer {
                attn_norm: vec(&p("input_layernorm.weight"))?,
                qkv: Linear::load(w, &[(&q, qs), (&k, kvs), (&v, kvs)], h, cfg.attention_bias, mode)?,
                o: Linear::load(w, &[(&p("self_attn.o_proj"), h)], qs, false, mode)?,
                mlp_norm: vec(&p("post_attention_layernorm.weight"))?,
                gate_up: Linear::load(w, &[(&g, i), (&u, i)], h, false, mode)?,
                down: Linear::load(w, &[(&p("mlp.down_proj"), h)], i, false, mode)?,
            });
            on_layer(l + 1, cfg.num_layers);
        }
        let norm = vec("model.norm.weight")?;
        let head_q = if cfg.tie_word_embeddings || !w.has("lm_head.weight") {
            embed_q
        } else {
            w.qtensor("lm_head.weight", &[cfg.vocab_size, h])?
        };
        let lm_head = MatWeight::new(head_q, mode)?;
        let inv_freq = cfg.rope_inv_freq();
        Ok(Transformer { cfg, embed, layers, norm, lm_head, inv_freq })
    }

    /// Runs the packed batch `ids` through the model, writing its K/V into `kv`, and returns the
    /// logits of `ctx.logit_rows` as [rows * vocab] f32, row-major.
    pub fn forward(&self, ids: &[u32], ctx: &ForwardCtx, kv: &mut KvCache) -> Result<Vec<f32>> {
        Ok(self.forward_with_hidden(ids, ctx, kv, &[])?.0)
    }

    /// As `forward`, plus the final-layer hidden states (after the final norm) of `hidden_rows`, as
    /// [rows * hidden] f32.
    pub fn forward_with_hidden(
        &self,
        ids: &[u32],
        ctx: &ForwardCtx,
        kv: &mut KvCache,
        hidden_rows: &[usize],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = ids.len();
        if n != ctx.num_tokens() || n == 0 {
            return Err(Error::internal(format!("batch has {n} ids for {} positions", ctx.num_tokens())));
        }
        let cfg = &self.cfg;
        let (h, qs, kvs, inter) = (cfg.hidden_size, cfg.q_size(), cfg.kv_size(), cfg.intermediate_size);
        let eps = cfg.rms_norm_eps as f32;
        let shape = AttnShape { heads: cfg.num_heads, kv_heads: cfg.num_kv_heads, head_dim: cfg.head_dim };
        let tokens = ctx.token_positions();
        let positions: Vec<usize> = tokens.iter().map(|&(_, p)| p).collect();
        let rope = RopeTable::new(&self.inv_freq, &positions);

        let mut x = Vec::with_capacity(n * h);
        for &id in ids {
            let id = id as usize;
            if id >= cfg.vocab_size {
                return Err(Error::internal(format!("token id {id} reached the model unchecked")));
            }
            x.extend_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        let (mut q, mut k, mut v) = (Vec::with_capacity(n * qs), Vec::with_capacity(n * kvs), Vec::with_capacity(n * kvs));
        for (layer, cache) in self.layers.iter().zip(kv.layers.iter_mut()) {
            let hn = rms_norm(&x, &layer.attn_norm, eps);
            let qkv = layer.qkv.forward(&hn, n)?;
            q.clear(); k.clear(); v.clear();
            for row in qkv.chunks_exact(qs + 2 * kvs) {
                q.extend_from_slice(&row[..qs]);
                k.extend_from_slice(&row[qs..qs + kvs]);
                v.extend_from_slice(&row[qs + kvs..]);
            }
            rope.apply(&mut q, cfg.num_heads, cfg.rope_style);
            rope.apply(&mut k, cfg.num_kv_heads, cfg.rope_style);
            write_kv(cache, ctx, &tokens, &k, &v, kvs);
            let attn = attend(cache, ctx, &tokens, &q, &shape);
            add_into(&mut x, &layer.o.forward(&attn, n)?);
            let hn = rms_norm(&x, &layer.mlp_norm, eps);
            let gu = layer.gate_up.forward(&hn, n)?;
            let mut act = Vec::with_capacity(n * inter);
            for row in gu.chunks_exact(2 * inter) {
                let (g, u) = row.split_at(inter);
                act.extend(g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u));
            }
            add_into(&mut x, &layer.down.forward(&act, n)?);
        }
        let rows = |which: &[usize]| {
            let mut out = Vec::with_capacity(which.len() * h);
            for &r in which {
                out.extend_from_slice(&x[r * h..(r + 1) * h]);
            }
            rms_norm(&out, &self.norm, eps)
        };
        let hidden = if hidden_rows.is_empty() { Vec::new() } else { rows(hidden_rows) };
        if ctx.logit_rows.is_empty() {
            // A pass of prefill chunks only: nothing to sample yet.
            return Ok((Vec::new(), hidden));
        }
        let last = rows(&ctx.logit_rows);
        Ok((self.lm_head.forward(&last, ctx.logit_rows.len())?, hidden))
    }
}

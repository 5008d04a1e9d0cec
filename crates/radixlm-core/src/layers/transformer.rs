//! The pre-norm decoder shared by Llama-like architectures: embedding, N x (RMSNorm, GQA attention with
//! RoPE, residual, RMSNorm, SwiGLU MLP, residual), final norm, LM head. `forward` is pure with respect
//! to request state: everything per-sequence comes in through `ForwardCtx`, the KV through `KvCache`.

use candle_core::{Device, Tensor};

use super::attention::{attend, write_kv, AttnShape};
use super::rope::RopeTable;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::forward_ctx::ForwardCtx;
use crate::kv_cache::KvCache;
use crate::model::weights::{LinearWeight, MatWeight, WeightMode, Weights};

struct Linear(LinearWeight);

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.0.w.forward(x)?;
        Ok(match &self.0.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Transformer {
    pub cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: MatWeight,
    inv_freq: Vec<f32>,
}

impl Transformer {
    pub fn load(cfg: ModelConfig, w: &Weights, mode: WeightMode) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (qs, kvs) = (cfg.q_size(), cfg.kv_size());
        let embed_q = w.qtensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let embed = embed_q.dequantize(&Device::Cpu)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            let lin = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                Ok(Linear(w.linear(&format!("{p}.{name}"), out, inp, bias, mode)?))
            };
            let bias = cfg.attention_bias;
            layers.push(Layer {
                attn_norm: w.vector(&format!("{p}.input_layernorm.weight"), h)?,
                q: lin("self_attn.q_proj", qs, h, bias)?,
                k: lin("self_attn.k_proj", kvs, h, bias)?,
                v: lin("self_attn.v_proj", kvs, h, bias)?,
                o: lin("self_attn.o_proj", h, qs, false)?,
                mlp_norm: w.vector(&format!("{p}.post_attention_layernorm.weight"), h)?,
                gate: lin("mlp.gate_proj", i, h, false)?,
                up: lin("mlp.up_proj", i, h, false)?,
                down: lin("mlp.down_proj", h, i, false)?,
            });
        }
        let norm = w.vector("model.norm.weight", h)?;
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
    /// logits of `ctx.logit_rows` as [rows, vocab] f32.
    pub fn forward(&self, ids: &[u32], ctx: &ForwardCtx, kv: &mut KvCache) -> Result<Tensor> {
        let n = ids.len();
        if n != ctx.num_tokens() || n == 0 {
            return Err(Error::internal(format!("batch has {n} ids for {} positions", ctx.num_tokens())));
        }
        let cfg = &self.cfg;
        let eps = cfg.rms_norm_eps as f32;
        let shape = AttnShape { heads: cfg.num_heads, kv_heads: cfg.num_kv_heads, head_dim: cfg.head_dim };
        let tokens = ctx.token_positions();
        let positions: Vec<usize> = tokens.iter().map(|&(_, p)| p).collect();
        let rope = RopeTable::new(&self.inv_freq, &positions);
        let ids_t = Tensor::from_slice(ids, n, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids_t, 0)?;
        for (layer, cache) in self.layers.iter().zip(kv.layers.iter_mut()) {
            let hn = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let mut q = layer.q.forward(&hn)?.flatten_all()?.to_vec1::<f32>()?;
            let mut k = layer.k.forward(&hn)?.flatten_all()?.to_vec1::<f32>()?;
            let v = layer.v.forward(&hn)?.flatten_all()?.to_vec1::<f32>()?;
            rope.apply(&mut q, cfg.num_heads, cfg.rope_style);
            rope.apply(&mut k, cfg.num_kv_heads, cfg.rope_style);
            write_kv(cache, ctx, &tokens, &k, &v, cfg.kv_size());
            let attn = attend(cache, ctx, &tokens, &q, &shape);
            let attn = Tensor::from_vec(attn, (n, cfg.q_size()), &Device::Cpu)?;
            x = (x + layer.o.forward(&attn)?)?;
            let hn = candle_nn::ops::rms_norm(&x, &layer.mlp_norm, eps)?;
            let act = (candle_nn::ops::silu(&layer.gate.forward(&hn)?)? * layer.up.forward(&hn)?)?;
            x = (x + layer.down.forward(&act)?)?;
        }
        let rows: Vec<u32> = ctx.logit_rows.iter().map(|&r| r as u32).collect();
        let rows = Tensor::from_vec(rows, ctx.logit_rows.len(), &Device::Cpu)?;
        let last = x.index_select(&rows, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        self.lm_head.forward(&last)
    }
}

//! A Llama-family decoder (Llama 2/3, SmolLM2, Qwen2/2.5) on the GPU: bf16 weights, one forward pass
//! of a packed batch as a fixed sequence of launches over buffers sized once at start.
//!
//! ```text
//!   embedding -> residual                       rmsnorm(residual) -> h
//!   per layer:  qkv = h Wqkv^T (+b)             rope + paged KV write (qkv in place)
//!               attn = attention(qkv, cache)    h = attn Wo^T
//!               residual += h; h = norm(residual)            (fused_add_rmsnorm)
//!               gate_up = h Wgu^T; act = silu(gate) * up;  h = act Wd^T
//!               residual += h; h = norm(residual)  (next layer's input norm, or the final norm)
//!   gather the rows whose logits are wanted -> lm_head
//! ```
//! Every buffer is allocated here, before the first step, at the engine's limits ([`Limits`]), and a
//! step only takes views at fixed offsets: no allocation during a step, so a decode step can be
//! captured as a CUDA graph ([`crate::graph`]) and replayed with new inputs written into the same
//! buffers.
//!
//! The integer inputs of a step travel in one upload into one i32 buffer, at offsets fixed by the
//! limits (so the captured graphs' pointers stay valid). Decode steps (one token per sequence) use a
//! compact block at the start, so that a small batch uploads a few kilobytes in one copy, the device
//! sampler's parameters included; other steps use the block after it:
//! ```text
//!   decode: [sampler: 7R][ids: S][positions: S][slots: S][lens: S][cu: S+1][rows: S][page table: S * stride]
//!   extend: [ids: T][positions: T][slots: T][lens: S][cu: S+1][rows: max(T, R)][page table: S * stride]
//! ```
//! `lens` is each sequence's context length after this step (decode rows) or its cached prefix (extend
//! rows). In a mixed step the first `decode_seqs` sequences have one token each and run through the
//! decode kernel; the rest through the prefill kernel, with `cu` counting from their first token.

use crate::attention::{decode_splits, decode_workspace_len, DECODE_MAX_SPLITS};
use crate::layout::{AttnShape, PagedKv};
use crate::rope::{Rope, RopeFreqs, RopeStyle};
use crate::{Device, Error, Gemm, Result};
use cudarc::driver::{CudaSlice, CudaView};
use half::bf16;

/// Architecture numbers the forward pass needs.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub vocab: usize,
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub shape: AttnShape,
    pub eps: f32,
    pub rope_style: RopeStyle,
    /// `[rot_dim / 2]`, any scaling (Llama 3) already applied.
    pub inv_freq: Vec<f32>,
    pub qkv_bias: bool,
    /// LM head shares the embedding matrix.
    pub tied: bool,
}

/// Where weights come from: a Hugging Face tensor name and its expected `[rows, cols]` (`cols` = 1
/// for vectors) -> row-major bf16. The engine implements it over safetensors and GGUF files.
pub trait WeightSource {
    fn fetch(&mut self, name: &str, rows: usize, cols: usize) -> std::result::Result<Vec<bf16>, String>;
}

struct Layer {
    attn_norm: CudaSlice<bf16>,
    qkv: CudaSlice<bf16>,
    qkv_bias: Option<CudaSlice<bf16>>,
    o: CudaSlice<bf16>,
    mlp_norm: CudaSlice<bf16>,
    gate_up: CudaSlice<bf16>,
    down: CudaSlice<bf16>,
}

/// The engine's limits, which size every buffer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Tokens in one forward pass.
    pub max_tokens: usize,
    /// Sequences in one forward pass.
    pub max_seqs: usize,
    /// Rows of logits computed per lm_head launch (more rows run in several launches).
    pub max_logit_rows: usize,
    /// Widest page table (pages of the longest context).
    pub max_pages: usize,
    pub page_size: usize,
}

/// Per layer K and V caches, `[num_pages * page_size, kv_heads * head_dim]` bf16 each.
pub struct KvPool {
    pub k: Vec<CudaSlice<bf16>>,
    pub v: Vec<CudaSlice<bf16>>,
    pub page_size: usize,
    pub num_pages: usize,
}

impl KvPool {
    pub fn bytes_per_page(spec: &ModelSpec, page_size: usize) -> usize {
        2 * spec.layers * page_size * spec.shape.kv_width() * 2
    }

    pub fn new(dev: &Device, spec: &ModelSpec, num_pages: usize, page_size: usize) -> Result<KvPool> {
        let len = num_pages * page_size * spec.shape.kv_width();
        let s = dev.stream();
        let mut k = Vec::with_capacity(spec.layers);
        let mut v = Vec::with_capacity(spec.layers);
        for _ in 0..spec.layers {
            // Zeroed: a slot is always written before it is read, but zero beats stale NaNs in a dump.
            k.push(s.alloc_zeros::<bf16>(len)?);
            v.push(s.alloc_zeros::<bf16>(len)?);
        }
        Ok(KvPool { k, v, page_size, num_pages })
    }
}

/// Activations and inputs of one step, at the limits.
pub struct Buffers {
    pub limits: Limits,
    pub ints: CudaSlice<i32>,
    residual: CudaSlice<bf16>,
    h: CudaSlice<bf16>,
    qkv: CudaSlice<bf16>,
    attn: CudaSlice<bf16>,
    gate_up: CudaSlice<bf16>,
    act: CudaSlice<bf16>,
    /// Final hidden rows gathered for the LM head (or for returned hidden states).
    pub gathered: CudaSlice<bf16>,
    /// `[max_logit_rows, vocab]` f32: logits the host reads (logprobs, penalties, grammar masks).
    pub logits: CudaSlice<f32>,
    /// `[max_logit_rows, vocab]` bf16: logits the device sampler reads (as a bf16 model's lm_head
    /// produces them).
    pub logits_bf16: CudaSlice<bf16>,
    workspace: CudaSlice<f32>,
    /// `[max_logit_rows]`: the tokens the device sampler drew last. A step's input id `i32::MIN + j`
    /// reads `drawn[j]` (overlap scheduling: the next step is launched before the host sees them).
    pub drawn: CudaSlice<i32>,
}

/// Offsets of the step inputs inside [`Buffers::ints`] (absolute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntLayout {
    pub ids: usize,
    pub positions: usize,
    pub slots: usize,
    pub lens: usize,
    pub cu: usize,
    pub rows: usize,
    pub pages: usize,
    /// End of this block.
    pub end: usize,
}

/// Words of device sampler parameters per row (seed u64, temperature, top_k, top_p, min_p, step).
pub const SAMPLER_WORDS: usize = 7;

impl IntLayout {
    fn at(base: usize, tokens: usize, seqs: usize, rows: usize, max_pages: usize) -> IntLayout {
        let ids = base;
        let positions = ids + tokens;
        let slots = positions + tokens;
        let lens = slots + tokens;
        let cu = lens + seqs;
        let rows_at = cu + seqs + 1;
        let pages = rows_at + rows;
        IntLayout { ids, positions, slots, lens, cu, rows: rows_at, pages, end: pages + seqs * max_pages }
    }

    /// The decode block; the sampler's parameters take `[0, SAMPLER_WORDS * max_logit_rows)` before it.
    pub fn decode(l: &Limits) -> IntLayout {
        IntLayout::at(SAMPLER_WORDS * l.max_logit_rows, l.max_seqs, l.max_seqs, l.max_seqs, l.max_pages)
    }

    /// The extend block, after the decode block. Row indices can name every token of a step.
    pub fn extend(l: &Limits) -> IntLayout {
        IntLayout::at(IntLayout::decode(l).end, l.max_tokens, l.max_seqs, l.max_tokens.max(l.max_logit_rows), l.max_pages)
    }

    /// Length of the whole buffer.
    pub fn total(l: &Limits) -> usize {
        IntLayout::extend(l).end
    }
}

/// The shape of one step; the inputs themselves are already in [`Buffers::ints`] at `lay`.
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    pub tokens: usize,
    pub seqs: usize,
    /// The first `decode_seqs` sequences have one new token each (the decode kernel, context cut in
    /// `splits` chunks); the others run through the prefill kernel, `max_new` being the longest run.
    pub decode_seqs: usize,
    pub splits: usize,
    pub max_new: usize,
    /// Page-table row width this step was packed with.
    pub stride: usize,
    pub lay: IntLayout,
}

pub struct GpuModel {
    pub spec: ModelSpec,
    embed: CudaSlice<bf16>,
    layers: Vec<Layer>,
    norm: CudaSlice<bf16>,
    lm_head: Option<CudaSlice<bf16>>,
    inv_freq: CudaSlice<f32>,
}

impl GpuModel {
    /// Uploads every weight (Q/K/V and gate/up stacked into one matrix each, one GEMM apiece),
    /// calling `on_layer(done, total)` after each decoder layer.
    pub fn load(dev: &Device, spec: ModelSpec, src: &mut dyn WeightSource, on_layer: &mut dyn FnMut(usize, usize)) -> Result<GpuModel> {
        let s = dev.stream();
        let (h, i) = (spec.hidden, spec.inter);
        let AttnShape { num_heads, num_kv_heads, head_dim } = spec.shape;
        let (qs, kvs) = (num_heads * head_dim, num_kv_heads * head_dim);
        let mut get = |name: &str, rows: usize, cols: usize| -> Result<Vec<bf16>> {
            let v = src.fetch(name, rows, cols).map_err(Error::Load)?;
            if v.len() != rows * cols {
                return Err(Error::Load(format!("{name}: {} values, want {rows} x {cols}", v.len())));
            }
            Ok(v)
        };
        let up = |v: Vec<bf16>| -> Result<CudaSlice<bf16>> { Ok(s.clone_htod(&v)?) };
        let embed = up(get("model.embed_tokens.weight", spec.vocab, h)?)?;
        let mut layers = Vec::with_capacity(spec.layers);
        for l in 0..spec.layers {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            let mut qkv = get(&p("self_attn.q_proj.weight"), qs, h)?;
            qkv.extend(get(&p("self_attn.k_proj.weight"), kvs, h)?);
            qkv.extend(get(&p("self_attn.v_proj.weight"), kvs, h)?);
            let qkv_bias = if spec.qkv_bias {
                let mut b = get(&p("self_attn.q_proj.bias"), qs, 1)?;
                b.extend(get(&p("self_attn.k_proj.bias"), kvs, 1)?);
                b.extend(get(&p("self_attn.v_proj.bias"), kvs, 1)?);
                Some(up(b)?)
            } else {
                None
            };
            let mut gate_up = get(&p("mlp.gate_proj.weight"), i, h)?;
            gate_up.extend(get(&p("mlp.up_proj.weight"), i, h)?);
            layers.push(Layer {
                attn_norm: up(get(&p("input_layernorm.weight"), h, 1)?)?,
                qkv: up(qkv)?,
                qkv_bias,
                o: up(get(&p("self_attn.o_proj.weight"), h, qs)?)?,
                mlp_norm: up(get(&p("post_attention_layernorm.weight"), h, 1)?)?,
                gate_up: up(gate_up)?,
                down: up(get(&p("mlp.down_proj.weight"), h, i)?)?,
            });
            on_layer(l + 1, spec.layers);
        }
        let norm = up(get("model.norm.weight", h, 1)?)?;
        let lm_head = if spec.tied { None } else { Some(up(get("lm_head.weight", spec.vocab, h)?)?) };
        let inv_freq = s.clone_htod(&spec.inv_freq)?;
        Ok(GpuModel { spec, embed, layers, norm, lm_head, inv_freq })
    }

    /// Allocates the step buffers for `limits`.
    pub fn buffers(&self, dev: &Device, limits: Limits) -> Result<Buffers> {
        let s = dev.stream();
        let sp = &self.spec;
        let t = limits.max_tokens;
        let ws = (1..=limits.max_seqs)
            .map(|b| {
                let max_len = limits.max_pages * limits.page_size;
                let splits = decode_splits(b, sp.shape.num_kv_heads, max_len, dev.sm_count());
                decode_workspace_len(b, sp.shape, splits.min(DECODE_MAX_SPLITS))
            })
            .max()
            .unwrap_or(0);
        // SAFETY (the unsafe allocs): every buffer is written before it is read within a step.
        unsafe {
            Ok(Buffers {
                limits,
                ints: s.alloc_zeros(IntLayout::total(&limits))?,
                residual: s.alloc(t * sp.hidden)?,
                h: s.alloc(t * sp.hidden)?,
                qkv: s.alloc(t * sp.shape.qkv_width())?,
                attn: s.alloc(t * sp.shape.num_heads * sp.shape.head_dim)?,
                gate_up: s.alloc(t * 2 * sp.inter)?,
                act: s.alloc(t * sp.inter)?,
                gathered: s.alloc(limits.max_logit_rows * sp.hidden)?,
                logits: s.alloc(limits.max_logit_rows * sp.vocab)?,
                logits_bf16: s.alloc(limits.max_logit_rows * sp.vocab)?,
                workspace: s.alloc(ws.max(1))?,
                drawn: s.alloc_zeros(limits.max_logit_rows)?,
            })
        }
    }

    /// Bytes the step buffers for `limits` take (to size the KV pool before allocating them).
    pub fn buffer_bytes(&self, limits: &Limits) -> usize {
        let sp = &self.spec;
        let t = limits.max_tokens;
        let bf = t * (2 * sp.hidden + sp.shape.qkv_width() + sp.shape.num_heads * sp.shape.head_dim + 3 * sp.inter)
            + limits.max_logit_rows * (sp.hidden + sp.vocab);
        2 * bf + 4 * (IntLayout::total(limits) + limits.max_logit_rows * sp.vocab) + (64 << 20)
    }

    /// Runs the layers over the step in `b.ints`, writing K/V into `kv`; leaves the final-normed
    /// hidden state of every token in `h` (see [`GpuModel::gather`] and [`GpuModel::logits`]).
    pub fn forward(&self, dev: &Device, gemm: &Gemm, b: &mut Buffers, kv: &mut KvPool, step: &StepShape) -> Result<()> {
        let sp = &self.spec;
        let lay = step.lay;
        let (t, n, d) = (step.tokens, step.seqs, step.decode_seqs);
        if t == 0 || t > b.limits.max_tokens || n > b.limits.max_seqs || d > n || step.stride > b.limits.max_pages {
            return Err(Error::Shape { op: "forward", msg: format!("step {step:?} outside the limits {:?}", b.limits) });
        }
        let (h, qkv_w, q_w) = (sp.hidden, sp.shape.qkv_width(), sp.shape.num_heads * sp.shape.head_dim);
        let ints = &b.ints;
        let view = |off: usize, len: usize| -> CudaView<'_, i32> { ints.slice(off..off + len) };
        let ids = view(lay.ids, t);
        let positions = view(lay.positions, t);
        let slots = view(lay.slots, t);
        // Decode rows: sequences 0..d, tokens 0..d. Extend rows: the rest.
        let dec_lens = view(lay.lens, d);
        let dec_pages = view(lay.pages, d * step.stride);
        let ext_lens = view(lay.lens + d, n - d);
        let ext_cu = view(lay.cu + d, n - d + 1);
        let ext_pages = view(lay.pages + d * step.stride, (n - d) * step.stride);
        let rope = Rope { style: sp.rope_style, rot_dim: 2 * sp.inv_freq.len(), freqs: RopeFreqs::InvFreq(&self.inv_freq) };

        let mut residual = b.residual.slice_mut(0..t * h);
        let mut hid = b.h.slice_mut(0..t * h);
        let mut qkv = b.qkv.slice_mut(0..t * qkv_w);
        let mut attn = b.attn.slice_mut(0..t * q_w);
        let mut gate_up = b.gate_up.slice_mut(0..t * 2 * sp.inter);
        let mut act = b.act.slice_mut(0..t * sp.inter);
        let eps = sp.eps;

        dev.embedding_resolving(&mut residual, &self.embed, &ids, &b.drawn, h)?;
        dev.rmsnorm(&mut hid, &residual, &self.layers[0].attn_norm, eps)?;
        for (l, layer) in self.layers.iter().enumerate() {
            match &layer.qkv_bias {
                Some(bias) => gemm.linear_bias(&mut qkv, &hid, &layer.qkv, bias, h)?,
                None => gemm.linear(&mut qkv, &hid, &layer.qkv, h)?,
            }
            let (kc, vc) = (&mut kv.k[l], &mut kv.v[l]);
            dev.rope_kv_write(&mut qkv, &positions, &slots, kc, vc, sp.shape, &rope)?;
            if d > 0 {
                let paged = PagedKv { k_cache: &kv.k[l], v_cache: &kv.v[l], page_size: kv.page_size, page_table: &dec_pages, max_pages: step.stride };
                let q = qkv.slice(0..d * qkv_w);
                let mut out = attn.slice_mut(0..d * q_w);
                dev.attention_decode_split(&mut out, &q, qkv_w, paged, &dec_lens, sp.shape, step.splits, &mut b.workspace)?;
            }
            if d < n {
                let paged = PagedKv { k_cache: &kv.k[l], v_cache: &kv.v[l], page_size: kv.page_size, page_table: &ext_pages, max_pages: step.stride };
                let q = qkv.slice(d * qkv_w..t * qkv_w);
                let mut out = attn.slice_mut(d * q_w..t * q_w);
                dev.attention_prefill(&mut out, &q, qkv_w, paged, &ext_cu, &ext_lens, step.max_new, sp.shape)?;
            }
            gemm.linear(&mut hid, &attn, &layer.o, q_w)?;
            dev.fused_add_rmsnorm(&mut hid, &mut residual, &layer.mlp_norm, eps)?;
            gemm.linear(&mut gate_up, &hid, &layer.gate_up, h)?;
            dev.silu_and_mul(&mut act, &gate_up, sp.inter)?;
            gemm.linear(&mut hid, &act, &layer.down, sp.inter)?;
            let next = self.layers.get(l + 1).map_or(&self.norm, |n| &n.attn_norm);
            dev.fused_add_rmsnorm(&mut hid, &mut residual, next, eps)?;
        }
        Ok(())
    }

    /// Copies the final hidden rows named by `ints[rows_off .. rows_off + rows]` (packed token
    /// indices) into `b.gathered[0 .. rows]`; `rows` <= `max_logit_rows`.
    pub fn gather(&self, dev: &Device, b: &mut Buffers, tokens: usize, rows_off: usize, rows: usize) -> Result<()> {
        let h = self.spec.hidden;
        if rows > b.limits.max_logit_rows || tokens > b.limits.max_tokens {
            return Err(Error::Shape { op: "gather", msg: format!("{rows} rows of {tokens} tokens, limits {:?}", b.limits) });
        }
        let idx = b.ints.slice(rows_off..rows_off + rows);
        let table = b.h.slice(0..tokens * h);
        let mut out = b.gathered.slice_mut(0..rows * h);
        dev.embedding(&mut out, &table, &idx, h)
    }

    /// `b.logits[0 .. rows] = b.gathered[0 .. rows] lm_head^T`.
    pub fn logits(&self, gemm: &Gemm, b: &mut Buffers, rows: usize) -> Result<()> {
        let (h, v) = (self.spec.hidden, self.spec.vocab);
        if rows > b.limits.max_logit_rows {
            return Err(Error::Shape { op: "logits", msg: format!("{rows} rows, limit {}", b.limits.max_logit_rows) });
        }
        let x = b.gathered.slice(0..rows * h);
        let mut y = b.logits.slice_mut(0..rows * v);
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        gemm.linear_f32(&mut y, &x, w, h)
    }

    /// `b.logits_bf16[0 .. rows] = b.gathered[0 .. rows] lm_head^T`, rounded to bf16.
    pub fn logits_bf16(&self, gemm: &Gemm, b: &mut Buffers, rows: usize) -> Result<()> {
        let (h, v) = (self.spec.hidden, self.spec.vocab);
        if rows > b.limits.max_logit_rows {
            return Err(Error::Shape { op: "logits", msg: format!("{rows} rows, limit {}", b.limits.max_logit_rows) });
        }
        let x = b.gathered.slice(0..rows * h);
        let mut y = b.logits_bf16.slice_mut(0..rows * v);
        gemm.linear(&mut y, &x, self.lm_head.as_ref().unwrap_or(&self.embed), h)
    }

    /// Final hidden state rows `b.gathered[0 .. rows]` (after [`GpuModel::gather`]).
    pub fn gathered_view<'a>(&self, b: &'a Buffers, rows: usize) -> CudaView<'a, bf16> {
        b.gathered.slice(0..rows * self.spec.hidden)
    }
}

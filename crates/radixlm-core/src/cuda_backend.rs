//! The CUDA backend (built with the `cuda` feature): the engine's side of `radixlm-cuda`. It turns a
//! scheduled batch into the packed integer inputs the GPU model reads, runs the step (a captured CUDA
//! graph for decode batches up to `cudaGraphMaxBs`, eager launches otherwise) and hands back sampled
//! tokens or logits rows.
//!
//! Memory: weights in bf16, then the step buffers at the engine's limits, then the KV pool takes what
//! `memFractionStatic` of the GPU's memory leaves (SGLang's rule: pool = free - total * (1 - f)), unless
//! `maxTotalTokens` fixes it.

use half::bf16;
use radixlm_cuda::graph::Graphs;
use radixlm_cuda::model::{Attn, Buffers, GpuModel, IntLayout, KvPool, Limits, ModelSpec, StepShape, WeightSource};
use radixlm_cuda::sampling::SampleParams;
use radixlm_cuda::{attention, AttnShape, Device, Gemm, RopeStyle};
use radixlm_cuda::cudarc::driver::{CudaSlice, DriverError};
use serde_json::json;

use crate::config::{ModelConfig, RopeStyle as CoreRope};
use crate::error::{Error, ErrorCode, Result};
use crate::model::weights::Weights;
use crate::options::EngineOptions;
use crate::request::Request;
use crate::runner::{Backend, EntryOut, Pass, Sampled};
use crate::scheduler::Batch;

/// SGLang's default static memory fraction on an 80 GB card.
const DEFAULT_MEM_FRACTION: f64 = 0.85;
/// Decode batch sizes with their own graph; a batch runs in the smallest bucket that holds it.
fn graph_buckets(max_bs: usize) -> Vec<usize> {
    let mut b: Vec<usize> = [1, 2, 4, 8, 12, 16].into_iter().filter(|&x| x <= max_bs).collect();
    b.extend((24..=max_bs).step_by(8));
    if b.last() != Some(&max_bs) {
        b.push(max_bs);
    }
    b
}

fn cuda_err(e: radixlm_cuda::Error) -> Error {
    Error::new(ErrorCode::Internal, format!("CUDA: {e}"))
}

/// Weights from safetensors or GGUF, dequantized to f32 on the host and rounded once to bf16.
struct Source<'a>(&'a Weights);

impl WeightSource for Source<'_> {
    fn fetch(&mut self, name: &str, rows: usize, cols: usize) -> std::result::Result<Vec<bf16>, String> {
        let dims: &[usize] = if cols == 1 { &[rows] } else { &[rows, cols] };
        if let Weights::Safetensors(st) = self.0 {
            let (v, shape) = st.get_bf16(name).map_err(|e| e.to_string())?;
            if shape != dims {
                return Err(format!("tensor {name} has shape {shape:?}, expected {dims:?}"));
            }
            return Ok(v);
        }
        let t = self.0.qtensor(name, dims).map_err(|e| e.to_string())?;
        let v = t
            .dequantize(&candle_core::Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(v.into_iter().map(bf16::from_f32).collect())
    }
}

/// Graph key: padded batch size and page-table width (the decode split count follows from both).
type GraphKey = (usize, usize);

/// How one row of logits is consumed.
#[derive(Clone, Copy)]
enum Row {
    /// The host needs the f32 logits (prompt logprobs, penalties, grammar, logprobs to report).
    Host,
    /// Drawn on the device with these parameters.
    Device(Draw),
}

#[derive(Clone, Copy)]
struct Draw {
    temperature: f32,
    top_k: i32,
    top_p: f32,
    min_p: f32,
    seed: u64,
    step: u32,
}

impl Draw {
    /// Padding rows of a graph batch: greedy, result dropped.
    const PAD: Draw = Draw { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 0, step: 0 };

    fn of(r: &Request) -> Draw {
        let p = &r.params;
        Draw {
            temperature: if p.is_greedy() { 0.0 } else { p.temperature },
            top_k: p.top_k.map_or(0, |k| k.min(i32::MAX as usize) as i32),
            top_p: p.top_p,
            min_p: p.min_p,
            seed: r.seed,
            step: r.output.len() as u32,
        }
    }
}

/// Device sampler inputs and outputs, `[max_logit_rows]` each, refilled per launch.
struct SamplerBufs {
    temperature: CudaSlice<f32>,
    top_k: CudaSlice<i32>,
    top_p: CudaSlice<f32>,
    min_p: CudaSlice<f32>,
    seed: CudaSlice<u64>,
    step: CudaSlice<u32>,
    token: CudaSlice<i32>,
    logprob: CudaSlice<f32>,
}

impl SamplerBufs {
    fn new(dev: &Device, rows: usize) -> radixlm_cuda::Result<SamplerBufs> {
        let s = dev.stream();
        Ok(SamplerBufs {
            temperature: s.alloc_zeros(rows)?,
            top_k: s.alloc_zeros(rows)?,
            top_p: s.alloc_zeros(rows)?,
            min_p: s.alloc_zeros(rows)?,
            seed: s.alloc_zeros(rows)?,
            step: s.alloc_zeros(rows)?,
            token: s.alloc_zeros(rows)?,
            logprob: s.alloc_zeros(rows)?,
        })
    }

    /// Uploads the parameters of `draws` into rows 0.. (they must fit).
    fn upload(&mut self, dev: &Device, draws: &[Draw]) -> radixlm_cuda::Result<()> {
        let s = dev.stream();
        let n = draws.len();
        macro_rules! put {
            ($buf:ident, $f:ident) => {{
                let v: Vec<_> = draws.iter().map(|d| d.$f).collect();
                s.memcpy_htod(&v, &mut self.$buf.slice_mut(0..n))?;
            }};
        }
        put!(temperature, temperature);
        put!(top_k, top_k);
        put!(top_p, top_p);
        put!(min_p, min_p);
        put!(seed, seed);
        put!(step, step);
        Ok(())
    }

    /// Enqueues the sampler over rows 0..n of `logits` (bf16, vocab wide).
    fn sample(&mut self, dev: &Device, logits: &CudaSlice<half::bf16>, vocab: usize, n: usize) -> radixlm_cuda::Result<()> {
        let (temperature, top_k, top_p) = (self.temperature.slice(0..n), self.top_k.slice(0..n), self.top_p.slice(0..n));
        let (min_p, seed, step) = (self.min_p.slice(0..n), self.seed.slice(0..n), self.step.slice(0..n));
        let params = SampleParams { temperature: &temperature, top_k: &top_k, top_p: &top_p, min_p: &min_p, seed: &seed, step: &step };
        dev.sample(&mut self.token.slice_mut(0..n), &mut self.logprob.slice_mut(0..n), &logits.slice(0..n * vocab), vocab, &params)
    }
}

pub struct CudaBackend {
    dev: Device,
    gemm: Gemm,
    model: GpuModel,
    kv: KvPool,
    bufs: Buffers,
    sampler: SamplerBufs,
    lay: IntLayout,
    /// Host staging of the integer inputs (same layout as `bufs.ints`).
    ints: Vec<i32>,
    buckets: Vec<usize>,
    graphs: Graphs<GraphKey>,
    graph_steps: u64,
    eager_steps: u64,
    host_f32: Vec<f32>,
    host_bf16: Vec<bf16>,
    name: String,
}

// SAFETY: the backend is built on the caller's thread and then moved into the engine thread, which is
// the only one that uses it afterwards (CUDA graphs and the cuBLASLt handle are not shared).
unsafe impl Send for CudaBackend {}

pub struct Built {
    pub backend: CudaBackend,
    pub num_pages: usize,
}

impl CudaBackend {
    pub fn new(opts: &EngineOptions, cfg: &ModelConfig, weights: &Weights, ordinal: usize, limits: (usize, usize, usize)) -> Result<Built> {
        let (max_tokens, max_seqs, context_len) = limits;
        let dev = Device::new(ordinal).map_err(|e| Error::invalid_options(format!("options.device: {e}")))?;
        let name = dev.describe().map_err(cuda_err)?;
        let spec = ModelSpec {
            vocab: cfg.vocab_size,
            hidden: cfg.hidden_size,
            inter: cfg.intermediate_size,
            layers: cfg.num_layers,
            shape: AttnShape { num_heads: cfg.num_heads, num_kv_heads: cfg.num_kv_heads, head_dim: cfg.head_dim },
            eps: cfg.rms_norm_eps as f32,
            rope_style: match cfg.rope_style {
                CoreRope::Half => RopeStyle::Neox,
                CoreRope::Interleaved => RopeStyle::Interleaved,
            },
            inv_freq: cfg.rope_inv_freq(),
            qkv_bias: cfg.attention_bias,
            tied: cfg.tie_word_embeddings || !weights.has("lm_head.weight"),
        };
        if !radixlm_cuda::attention::HEAD_DIMS.contains(&cfg.head_dim) {
            return Err(Error::invalid_model(format!("the CUDA backend supports head_dim 64 and 128, not {}", cfg.head_dim)));
        }
        let gemm = Gemm::new(&dev).map_err(cuda_err)?;
        let model = GpuModel::load(&dev, spec, &mut Source(weights)).map_err(|e| match e {
            radixlm_cuda::Error::Load(m) => Error::invalid_model(m),
            e => cuda_err(e),
        })?;
        let page_size = opts.page_size;
        let graph_max = if opts.disable_cuda_graph { 0 } else { opts.cuda_graph_max_bs.unwrap_or(256).min(max_seqs) };
        let limits = Limits {
            max_tokens,
            max_seqs,
            max_logit_rows: max_seqs.max(graph_max).max(1),
            max_pages: context_len.div_ceil(page_size),
            page_size,
        };
        let bufs = model.buffers(&dev, limits).map_err(cuda_err)?;
        dev.synchronize().map_err(cuda_err)?;
        let per_page = KvPool::bytes_per_page(&model.spec, page_size);
        let num_pages = match opts.max_total_tokens {
            Some(t) => t.div_ceil(page_size),
            None => {
                let (free, total) = dev.context().mem_get_info().map_err(|e| cuda_err(e.into()))?;
                let frac = opts.mem_fraction_static.unwrap_or(DEFAULT_MEM_FRACTION);
                let budget = free as f64 - total as f64 * (1.0 - frac);
                if budget < per_page as f64 * 16.0 {
                    return Err(Error::invalid_options(format!(
                        "the GPU has {:.1} GiB free after the weights: no room for a KV pool at memFractionStatic {frac}",
                        free as f64 / (1u64 << 30) as f64
                    )));
                }
                (budget / per_page as f64) as usize
            }
        };
        let kv = KvPool::new(&dev, &model.spec, num_pages, page_size).map_err(cuda_err)?;
        let sampler = SamplerBufs::new(&dev, limits.max_logit_rows).map_err(cuda_err)?;
        let lay = IntLayout::new(&limits);
        Ok(Built {
            backend: CudaBackend {
                dev,
                gemm,
                ints: vec![0; lay.len],
                lay,
                model,
                kv,
                bufs,
                sampler,
                buckets: graph_buckets(graph_max),
                graphs: Graphs::default(),
                graph_steps: 0,
                eager_steps: 0,
                host_f32: Vec::new(),
                host_bf16: Vec::new(),
                name,
            },
            num_pages,
        })
    }

    /// Writes the step's integer inputs into `self.ints`; returns the step shape. Sequences past
    /// `pass.ctx.seqs` up to `padded` are padding: no tokens stored, zero context, row 0.
    fn pack(&mut self, pass: &Pass, padded: usize, stride: usize, attn: Attn) -> StepShape {
        let lay = self.lay;
        let ps = self.kv.page_size;
        let decode = matches!(attn, Attn::Decode { .. });
        let ints = &mut self.ints;
        let mut t = 0;
        ints[lay.cu] = 0;
        for (s, seq) in pass.ctx.seqs.iter().enumerate() {
            for j in 0..seq.q_len {
                let pos = seq.start + j;
                ints[lay.ids + t] = pass.ids[t] as i32;
                ints[lay.positions + t] = pos as i32;
                ints[lay.slots + t] = (seq.page_table[pos / ps] as usize * ps + pos % ps) as i32;
                t += 1;
            }
            ints[lay.lens + s] = (if decode { seq.start + 1 } else { seq.start }) as i32;
            ints[lay.cu + s + 1] = t as i32;
            let row = &mut ints[lay.pages + s * stride..lay.pages + (s + 1) * stride];
            let used = (seq.start + seq.q_len).div_ceil(ps);
            for (d, &p) in row.iter_mut().zip(&seq.page_table[..used]) {
                *d = p as i32;
            }
        }
        let real = pass.ctx.seqs.len();
        for s in real..padded {
            ints[lay.ids + s] = 0;
            ints[lay.positions + s] = 0;
            ints[lay.slots + s] = -1;
            ints[lay.lens + s] = 0;
            ints[lay.cu + s + 1] = s as i32 + 1;
        }
        let rows = pass.ctx.logit_rows.iter().chain(&pass.hidden_rows);
        for (d, &r) in ints[lay.rows..].iter_mut().zip(rows) {
            *d = r as i32;
        }
        // Padded decode rows sample too (their results are dropped).
        for s in real..padded {
            ints[lay.rows + s] = s as i32;
        }
        StepShape { tokens: t + (padded - real), seqs: padded, stride, attn }
    }

    fn upload(&mut self, step: &StepShape, rows: usize) -> Result<()> {
        let lay = self.lay;
        let s = self.dev.stream();
        let segs = [
            (lay.ids, step.tokens),
            (lay.positions, step.tokens),
            (lay.slots, step.tokens),
            (lay.lens, step.seqs),
            (lay.cu, step.seqs + 1),
            (lay.rows, rows),
            (lay.pages, step.seqs * step.stride),
        ];
        for (off, len) in segs {
            if len > 0 {
                s.memcpy_htod(&self.ints[off..off + len], &mut self.bufs.ints.slice_mut(off..off + len))
                    .map_err(|e| cuda_err(e.into()))?;
            }
        }
        Ok(())
    }

    /// Gathers `rows` rows starting at `self.lay.rows + first`; with `logits` runs the LM head over
    /// them. Copies the results to the host as f32 rows.
    fn rows_to_host(&mut self, tokens: usize, first: usize, rows: usize, logits: bool) -> Result<Vec<Vec<f32>>> {
        let width = if logits { self.model.spec.vocab } else { self.model.spec.hidden };
        let mut out = Vec::with_capacity(rows);
        let max = self.bufs.limits.max_logit_rows;
        let mut done = 0;
        while done < rows {
            let n = (rows - done).min(max);
            self.model.gather(&self.dev, &mut self.bufs, tokens, self.lay.rows + first + done, n).map_err(cuda_err)?;
            let s = self.dev.stream();
            if logits {
                self.model.logits(&self.gemm, &mut self.bufs, n).map_err(cuda_err)?;
                self.host_f32.resize(n * width, 0.0);
                s.memcpy_dtoh(&self.bufs.logits.slice(0..n * width), &mut self.host_f32[..]).map_err(|e| cuda_err(e.into()))?;
                self.dev.synchronize().map_err(cuda_err)?;
                out.extend(self.host_f32.chunks_exact(width).map(|r| r.to_vec()));
            } else {
                self.host_bf16.resize(n * width, bf16::ZERO);
                s.memcpy_dtoh(&self.model.gathered_view(&self.bufs, n), &mut self.host_bf16[..]).map_err(|e| cuda_err(e.into()))?;
                self.dev.synchronize().map_err(cuda_err)?;
                out.extend(self.host_bf16.chunks_exact(width).map(|r| r.iter().map(|v| v.to_f32()).collect::<Vec<f32>>()));
            }
            done += n;
        }
        Ok(out)
    }

    /// Runs the forward pass. A decode batch in a graph bucket also draws its tokens (the graph holds
    /// the LM head and the sampler): returns true then, with `draws` uploaded for rows 0..bucket.
    fn step(&mut self, pass: &Pass, rows: &[Row]) -> Result<bool> {
        let seqs = &pass.ctx.seqs;
        let ps = self.kv.page_size;
        let max_pages_used = seqs.iter().map(|s| (s.start + s.q_len).div_ceil(ps)).max().unwrap_or(1);
        let limits = self.bufs.limits;
        let decode = seqs.iter().all(|s| s.q_len == 1);
        let bucket = if decode { self.buckets.iter().copied().find(|&b| b >= seqs.len()) } else { None };
        // Decode page tables are padded to a power-of-two width, graphs or not: the split count follows
        // from the width, so eager and replayed steps of one batch size compute the very same thing.
        let decode_stride = max_pages_used.next_power_of_two().max(8).min(limits.max_pages);
        let n_rows = pass.ctx.logit_rows.len() + pass.hidden_rows.len();
        match bucket {
            Some(bs) => {
                // Power-of-two widths keep the number of graphs small as contexts grow.
                let stride = decode_stride;
                let splits = attention::decode_splits(bs, self.model.spec.shape.num_kv_heads, stride * ps, self.dev.sm_count());
                let step = self.pack(pass, bs, stride, Attn::Decode { splits });
                self.upload(&step, n_rows.max(bs))?;
                let mut draws: Vec<Draw> = rows.iter().map(|r| if let Row::Device(d) = r { *d } else { Draw::PAD }).collect();
                draws.resize(bs, Draw::PAD);
                self.sampler.upload(&self.dev, &draws).map_err(cuda_err)?;
                let key = (bs, stride);
                let (dev, gemm, model, bufs, kv, sampler) = (&self.dev, &self.gemm, &self.model, &mut self.bufs, &mut self.kv, &mut self.sampler);
                let lay = self.lay;
                let enqueue = |bufs: &mut Buffers, kv: &mut KvPool, sampler: &mut SamplerBufs| -> radixlm_cuda::Result<()> {
                    model.forward(dev, gemm, bufs, kv, &step)?;
                    model.gather(dev, bufs, step.tokens, lay.rows, bs)?;
                    model.logits_bf16(gemm, bufs, bs)?;
                    sampler.sample(dev, &bufs.logits_bf16, model.spec.vocab, bs)
                };
                if self.graphs.get(&key).is_none() {
                    // The first step of a shape runs eagerly (building cuBLASLt plans), then is captured.
                    self.eager_steps += 1;
                    enqueue(bufs, kv, sampler).map_err(cuda_err)?;
                    self.graphs.capture(dev, key, || enqueue(bufs, kv, sampler)).map_err(cuda_err)?;
                    return Ok(true);
                }
                self.graphs.get(&key).expect("captured").launch().map_err(|e| cuda_err(e.into()))?;
                self.graph_steps += 1;
                Ok(true)
            }
            None => {
                let stride = if decode { decode_stride } else { max_pages_used.min(limits.max_pages) };
                let max_new = seqs.iter().map(|s| s.q_len).max().unwrap_or(1);
                let attn = if decode {
                    Attn::Decode { splits: attention::decode_splits(seqs.len(), self.model.spec.shape.num_kv_heads, stride * ps, self.dev.sm_count()) }
                } else {
                    Attn::Extend { max_new }
                };
                let step = self.pack(pass, seqs.len(), stride, attn);
                self.upload(&step, n_rows)?;
                self.eager(&step)?;
                Ok(false)
            }
        }
    }

    /// Turns every logit row into a token (device rows) or f32 logits (host rows), chunk by chunk of
    /// `max_logit_rows`. With `drawn`, the device rows were already sampled by the step's graph.
    fn consume_rows(&mut self, tokens: usize, rows: &[Row], drawn: bool) -> Result<Vec<Sampled>> {
        let vocab = self.model.spec.vocab;
        let max = self.bufs.limits.max_logit_rows;
        let dl = |e: DriverError| cuda_err(e.into());
        let mut out = Vec::with_capacity(rows.len());
        for (c, chunk) in rows.chunks(max).enumerate() {
            let first = c * max;
            let n = chunk.len();
            let device = chunk.iter().any(|r| matches!(r, Row::Device(_)));
            let host = chunk.iter().any(|r| matches!(r, Row::Host));
            if (device && !drawn) || host {
                self.model.gather(&self.dev, &mut self.bufs, tokens, self.lay.rows + first, n).map_err(cuda_err)?;
            }
            let mut ids = Vec::new();
            if device {
                if !drawn {
                    let draws: Vec<Draw> = chunk.iter().map(|r| if let Row::Device(d) = r { *d } else { Draw::PAD }).collect();
                    self.sampler.upload(&self.dev, &draws).map_err(cuda_err)?;
                    self.model.logits_bf16(&self.gemm, &mut self.bufs, n).map_err(cuda_err)?;
                    self.sampler.sample(&self.dev, &self.bufs.logits_bf16, vocab, n).map_err(cuda_err)?;
                }
                ids = self.dev.stream().clone_dtoh(&self.sampler.token.slice(0..n)).map_err(dl)?;
            }
            if host {
                self.model.logits(&self.gemm, &mut self.bufs, n).map_err(cuda_err)?;
            }
            self.dev.synchronize().map_err(cuda_err)?;
            for (j, r) in chunk.iter().enumerate() {
                out.push(match r {
                    Row::Device(_) => Sampled::Token(ids[j] as u32),
                    Row::Host => {
                        self.host_f32.resize(vocab, 0.0);
                        let src = self.bufs.logits.slice(j * vocab..(j + 1) * vocab);
                        self.dev.stream().memcpy_dtoh(&src, &mut self.host_f32[..]).map_err(dl)?;
                        self.dev.synchronize().map_err(cuda_err)?;
                        Sampled::Logits(self.host_f32.clone())
                    }
                });
            }
        }
        Ok(out)
    }

    fn eager(&mut self, step: &StepShape) -> Result<()> {
        self.eager_steps += 1;
        self.model.forward(&self.dev, &self.gemm, &mut self.bufs, &mut self.kv, step).map_err(cuda_err)
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> String {
        self.name.clone()
    }

    fn info(&self) -> serde_json::Value {
        json!({
            "kvPoolPages": self.kv.num_pages,
            "cudaGraphs": self.graphs.len(),
            "graphSteps": self.graph_steps,
            "eagerSteps": self.eager_steps,
        })
    }

    fn run(&mut self, running: &[Request], batch: &Batch) -> Result<Vec<EntryOut>> {
        let pass = Pass::prepare(running, batch, self.kv.page_size);
        let limits = self.bufs.limits;
        if pass.ids.len() > limits.max_tokens || pass.ctx.seqs.len() > limits.max_seqs {
            return Err(Error::internal(format!("step of {} tokens / {} sequences exceeds the CUDA limits", pass.ids.len(), pass.ctx.seqs.len())));
        }
        // One entry per logit row, in the pass's row order (each entry's prompt rows, then its sample).
        let mut rows = Vec::with_capacity(pass.ctx.logit_rows.len());
        for (&(i, _), e) in batch.iter().zip(&pass.entries) {
            rows.extend(e.prompt_targets.clone().map(|_| Row::Host));
            if e.sample {
                let r = &running[i];
                rows.push(if r.device_sampleable() { Row::Device(Draw::of(r)) } else { Row::Host });
            }
        }
        let drawn = self.step(&pass, &rows)?;
        let tokens = pass.ids.len().max(pass.ctx.seqs.len());
        let mut results = self.consume_rows(tokens, &rows, drawn)?.into_iter();
        let mut hidden_rows = self.rows_to_host(tokens, rows.len(), pass.hidden_rows.len(), false)?.into_iter();
        let mut out = Vec::with_capacity(pass.entries.len());
        for e in pass.entries {
            let prompt_rows = e
                .prompt_targets
                .map(|t| match results.next() {
                    Some(Sampled::Logits(l)) => (t, l),
                    _ => unreachable!("prompt rows are host rows"),
                })
                .collect();
            let sample = e.sample.then(|| results.next().expect("row"));
            let hidden = e.hidden_positions.map(|p| (p, hidden_rows.next().expect("row"))).collect();
            out.push(EntryOut { sample, prompt_rows, hidden });
        }
        Ok(out)
    }
}

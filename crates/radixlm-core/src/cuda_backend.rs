//! The CUDA backend (built with the `cuda` feature): the engine's side of `radixlm-cuda`. It turns a
//! scheduled batch into the packed integer inputs the GPU model reads, runs the step (a captured CUDA
//! graph for decode batches up to `cudaGraphMaxBs`, eager launches otherwise) and hands back sampled
//! tokens or logits rows.
//!
//! Memory: weights in bf16, then the step buffers at the engine's limits, then the KV pool takes what
//! `memFractionStatic` of the GPU's memory leaves (SGLang's rule: pool = free - total * (1 - f)), unless
//! `maxTotalTokens` fixes it.

use std::collections::VecDeque;

use half::bf16;
use radixlm_cuda::graph::Graphs;
use radixlm_cuda::model::{Buffers, GpuModel, IntLayout, KvPool, Limits, ModelSpec, StepShape, WeightSource, SAMPLER_WORDS};
use radixlm_cuda::sampling::SampleParams;
use radixlm_cuda::{attention, AttnShape, DecodeKernel, Device, Gemm, RopeStyle};
use radixlm_cuda::cudarc::driver::sys::CUevent_flags;
use radixlm_cuda::cudarc::driver::{CudaEvent, CudaSlice, DriverError, PinnedHostSlice};
use serde_json::json;

use crate::config::{ModelConfig, RopeStyle as CoreRope};
use crate::error::{Error, ErrorCode, Result};
use crate::model::weights::Weights;
use crate::options::EngineOptions;
use crate::request::Request;
use crate::runner::{Backend, EntryOut, EntryRows, Pass, Sampled, FUTURE};
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

/// Writes the sampler parameters of `draws` (rows 0..) into the staging copy of the ints buffer:
/// `[seed lo, seed hi: 2R][temperature: R][top_k: R][top_p: R][min_p: R][step: R]` (f32 as bits).
fn put_draws(ints: &mut [i32], r: usize, draws: &[Draw]) {
    for (j, d) in draws.iter().enumerate() {
        ints[2 * j] = d.seed as u32 as i32;
        ints[2 * j + 1] = (d.seed >> 32) as u32 as i32;
        ints[2 * r + j] = d.temperature.to_bits() as i32;
        ints[3 * r + j] = d.top_k;
        ints[4 * r + j] = d.top_p.to_bits() as i32;
        ints[5 * r + j] = d.min_p.to_bits() as i32;
        ints[6 * r + j] = d.step as i32;
    }
}

/// Enqueues the sampler over rows 0..n of `logits_bf16`, parameters read from the ints buffer; the
/// tokens go to `bufs.drawn` (where the next step's placeholders read them), their logprobs to
/// `logprob`.
fn sample(dev: &Device, bufs: &mut Buffers, logprob: &mut CudaSlice<f32>, vocab: usize, n: usize) -> radixlm_cuda::Result<()> {
    let r = bufs.limits.max_logit_rows;
    let ints = &bufs.ints;
    let w = |k: usize, len: usize| ints.slice(k * r..k * r + len);
    // SAFETY: the regions hold the bit patterns `put_draws` wrote (seed as two LE words at an 8-byte
    // aligned offset 0, the rest 4-byte values); reinterpreting i32 storage as f32/u32/u64 is plain data.
    let (seed, temperature, top_k, top_p, min_p, step) = unsafe {
        let bad = || radixlm_cuda::Error::Shape { op: "sample", msg: "sampler region".into() };
        (
            w(0, 2 * n).transmute::<u64>(n).ok_or_else(bad)?,
            w(2, n).transmute::<f32>(n).ok_or_else(bad)?,
            w(3, n),
            w(4, n).transmute::<f32>(n).ok_or_else(bad)?,
            w(5, n).transmute::<f32>(n).ok_or_else(bad)?,
            w(6, n).transmute::<u32>(n).ok_or_else(bad)?,
        )
    };
    let params = SampleParams { temperature: &temperature, top_k: &top_k, top_p: &top_p, min_p: &min_p, seed: &seed, step: &step };
    dev.sample(&mut bufs.drawn.slice_mut(0..n), &mut logprob.slice_mut(0..n), &bufs.logits_bf16.slice(0..n * vocab), vocab, &params)
}

/// Writes one step's inputs into `ints` at `lay`. The first `d` sequences of `pass` have one token
/// each (decode rows); `padded` > n adds padding sequences (graph buckets: no KV stored, zero context,
/// row s). Rows: `rows` (logits, then hidden states). Returns the step's token count.
fn pack(ints: &mut [i32], lay: &IntLayout, pass: &Pass, d: usize, padded: usize, stride: usize, ps: usize) -> usize {
    let mut t = 0;
    ints[lay.cu + d] = 0;
    for (s, seq) in pass.ctx.seqs.iter().enumerate() {
        for j in 0..seq.q_len {
            let pos = seq.start + j;
            ints[lay.ids + t] = pass.ids[t] as i32;
            ints[lay.positions + t] = pos as i32;
            ints[lay.slots + t] = (seq.page_table[pos / ps] as usize * ps + pos % ps) as i32;
            t += 1;
        }
        if s < d {
            debug_assert_eq!(seq.q_len, 1);
            ints[lay.lens + s] = (seq.start + 1) as i32;
        } else {
            ints[lay.lens + s] = seq.start as i32;
            ints[lay.cu + s + 1] = (t - d) as i32;
        }
        let row = &mut ints[lay.pages + s * stride..lay.pages + (s + 1) * stride];
        let used = (seq.start + seq.q_len).div_ceil(ps);
        for (dst, &p) in row.iter_mut().zip(&seq.page_table[..used]) {
            *dst = p as i32;
        }
    }
    let real = pass.ctx.seqs.len();
    for s in real..padded {
        ints[lay.ids + s] = 0;
        ints[lay.positions + s] = 0;
        ints[lay.slots + s] = -1;
        ints[lay.lens + s] = 0;
    }
    let rows = pass.ctx.logit_rows.iter().chain(&pass.hidden_rows);
    for (dst, &r) in ints[lay.rows..].iter_mut().zip(rows) {
        *dst = r as i32;
    }
    for s in real..padded {
        ints[lay.rows + s] = s as i32;
    }
    t + (padded - real)
}

pub struct CudaBackend {
    dev: Device,
    gemm: Gemm,
    model: GpuModel,
    kv: KvPool,
    bufs: Buffers,
    /// The device sampler's logprob output (`[max_logit_rows]`).
    logprob: CudaSlice<f32>,
    /// Launched steps not yet collected (at most two: the engine launches one ahead).
    flights: VecDeque<Flight>,
    launches: usize,
    /// Per ring slot: where a step's drawn tokens are copied for the host.
    pinned: Vec<PinnedHostSlice<i32>>,
    /// Batch entry k of the previous launch -> its row in `bufs.drawn` (for `FUTURE | k` ids).
    prev_rows: Vec<u32>,
    /// The decode and extend blocks of the ints buffer.
    dec: IntLayout,
    ext: IntLayout,
    /// Host staging of the integer inputs (same layout as `bufs.ints`).
    ints: Vec<i32>,
    buckets: Vec<usize>,
    graphs: Graphs<GraphKey>,
    graph_steps: u64,
    eager_steps: u64,
    host_bf16: Vec<bf16>,
    name: String,
    busy: Busy,
}

/// Ring slots for per-step events and pinned buffers: a step is collected after the next one is
/// launched, and its busy-time gap needs the step before it, so three are in use at once.
const RING: usize = 3;

/// GPU busy fraction during steady decode, measured on the GPU's own clock: for consecutive steps
/// that hand back only device-drawn tokens, the time from an event recorded before each step's upload
/// to one after its last copy, against that plus the idle gap since the previous step ended. Other
/// steps (prefill, host rows) break the chain; gaps over 100 ms (no work) are not counted.
struct Busy {
    start: Vec<CudaEvent>,
    end: Vec<CudaEvent>,
    /// Launch number of the previous step in the chain.
    prev: Option<usize>,
    gpu_s: f64,
    wall_s: f64,
    /// GPU time of every step (upload to last copy, host readback excluded), split into pure decode
    /// steps and steps with prefill/extend sequences: where the device's time goes.
    decode_s: f64,
    extend_s: f64,
}

impl Busy {
    /// Books the GPU time of launch `seq` (complete by now); a step that draws only on the device
    /// extends the chain when it directly follows the previous one. Timing is best effort: an event
    /// that cannot be read skips the step (it never fails a request).
    fn account(&mut self, seq: usize, decode: bool, chained: bool) {
        let slot = seq % RING;
        let Ok(ms) = self.start[slot].elapsed_ms(&self.end[slot]) else {
            self.prev = None;
            return;
        };
        let gpu = ms as f64 * 1e-3;
        *(if decode { &mut self.decode_s } else { &mut self.extend_s }) += gpu;
        if !(chained && decode) {
            self.prev = None;
            return;
        }
        if let Some(p) = self.prev.filter(|&p| p + 1 == seq) {
            if let Ok(gap) = self.end[p % RING].elapsed_ms(&self.start[slot]) {
                let gap = gap as f64 * 1e-3;
                if (0.0..0.1).contains(&gap) {
                    self.gpu_s += gpu;
                    self.wall_s += gpu + gap;
                }
            }
        }
        self.prev = Some(seq);
    }
}

/// A launched step, until it is collected.
struct Flight {
    /// Launch number (its ring slot is `seq % RING`).
    seq: usize,
    /// Every sequence had one new token (no prefill).
    decode: bool,
    /// Batch entry k -> its index in the pass's sequence order (decode rows first).
    order: Vec<usize>,
    /// In the pass's sequence order.
    entries: Vec<EntryRows>,
    kind: FlightKind,
}

enum FlightKind {
    /// Every sampled entry drawn on the device: `n` tokens on their way to `pinned[slot]`.
    Tokens { n: usize },
    /// Host rows or hidden states, read back when collected (the engine launches nothing in between).
    Rows { tokens: usize, rows_at: usize, rows: Vec<Row>, drawn: bool, hidden: usize },
}

// SAFETY: the backend is built on the caller's thread and then moved into the engine thread, which is
// the only one that uses it afterwards (CUDA graphs and the cuBLASLt handle are not shared).
unsafe impl Send for CudaBackend {}

pub struct Built {
    pub backend: CudaBackend,
    pub num_pages: usize,
}

impl CudaBackend {
    pub fn new(
        opts: &EngineOptions,
        cfg: &ModelConfig,
        weights: &Weights,
        ordinal: usize,
        limits: (usize, usize, usize),
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Built> {
        let (max_tokens, max_seqs, context_len) = limits;
        let mut dev = Device::new(ordinal).map_err(|e| Error::invalid_options(format!("options.device: {e}")))?;
        // Developer switch for A/B runs of the decode attention kernels (bench/gpu_run.sh tc); tensor cores
        // are the default. Deliberately not an engine option: nothing public depends on the choice.
        match std::env::var("RADIXLM_DECODE_KERNEL").as_deref() {
            Ok("simt") => dev.set_decode_kernel(DecodeKernel::Simt),
            Ok("tensor-cores") => dev.set_decode_kernel(DecodeKernel::TensorCores),
            _ => {}
        }
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
        let model = GpuModel::load(&dev, spec, &mut Source(weights), on_layer).map_err(|e| match e {
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
        let dl = |e: DriverError| cuda_err(e.into());
        let timing = || dev.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(dl);
        let busy = Busy {
            start: (0..RING).map(|_| timing()).collect::<Result<_>>()?,
            end: (0..RING).map(|_| timing()).collect::<Result<_>>()?,
            prev: None,
            gpu_s: 0.0,
            wall_s: 0.0,
            decode_s: 0.0,
            extend_s: 0.0,
        };
        let logprob = dev.stream().alloc_zeros(limits.max_logit_rows).map_err(dl)?;
        // SAFETY: plain page-locked host memory (no write-combining: the host reads it); each slot is
        // written by a copy before it is read.
        let pinned = (0..RING)
            .map(|_| unsafe { dev.context().alloc_pinned_with_flags::<i32>(limits.max_logit_rows, 0) }.map_err(dl))
            .collect::<Result<_>>()?;
        Ok(Built {
            backend: CudaBackend {
                dev,
                gemm,
                ints: vec![0; IntLayout::total(&limits)],
                dec: IntLayout::decode(&limits),
                ext: IntLayout::extend(&limits),
                model,
                kv,
                bufs,
                logprob,
                flights: VecDeque::new(),
                launches: 0,
                pinned,
                prev_rows: Vec::new(),
                buckets: graph_buckets(graph_max),
                graphs: Graphs::default(),
                graph_steps: 0,
                eager_steps: 0,
                host_bf16: Vec::new(),
                name,
                busy,
            },
            num_pages,
        })
    }

    /// Uploads `ints[from..to]` in one copy.
    fn upload(&mut self, from: usize, to: usize) -> Result<()> {
        if to > from {
            self.dev
                .stream()
                .memcpy_htod(&self.ints[from..to], &mut self.bufs.ints.slice_mut(from..to))
                .map_err(|e| cuda_err(e.into()))?;
        }
        Ok(())
    }

    /// Final hidden states of the `rows` rows named at `rows_at + first`, as f32 rows on the host.
    fn hidden_to_host(&mut self, tokens: usize, rows_at: usize, first: usize, rows: usize) -> Result<Vec<Vec<f32>>> {
        let width = self.model.spec.hidden;
        let mut out = Vec::with_capacity(rows);
        let max = self.bufs.limits.max_logit_rows;
        let mut done = 0;
        while done < rows {
            let n = (rows - done).min(max);
            self.model.gather(&self.dev, &mut self.bufs, tokens, rows_at + first + done, n).map_err(cuda_err)?;
            self.host_bf16.resize(n * width, bf16::ZERO);
            let src = self.model.gathered_view(&self.bufs, n);
            self.dev.stream().memcpy_dtoh(&src, &mut self.host_bf16[..]).map_err(|e| cuda_err(e.into()))?;
            self.dev.synchronize().map_err(cuda_err)?;
            out.extend(self.host_bf16.chunks_exact(width).map(|r| r.iter().map(|v| v.to_f32()).collect::<Vec<f32>>()));
            done += n;
        }
        Ok(out)
    }

    /// Runs the forward pass of `pass`, whose first `d` sequences have one new token each. A decode
    /// step (d = n, one logit row per sequence, nothing else asked) in a graph bucket also draws its
    /// tokens (the graph holds the LM head and the sampler): returns the layout used and whether the
    /// device rows were drawn.
    /// GPU time counts from just before the upload (event `start[slot]`).
    fn step(&mut self, pass: &Pass, rows: &[Row], d: usize, slot: usize) -> Result<(IntLayout, bool)> {
        let seqs = &pass.ctx.seqs;
        let n = seqs.len();
        let ps = self.kv.page_size;
        let limits = self.bufs.limits;
        let max_pages_used = seqs.iter().map(|s| (s.start + s.q_len).div_ceil(ps)).max().unwrap_or(1);
        let n_rows = pass.ctx.logit_rows.len() + pass.hidden_rows.len();
        let pure_decode = d == n && n_rows == n && pass.hidden_rows.is_empty();
        let kvh = self.model.spec.shape.num_kv_heads;
        // Decode page tables are padded to a power-of-two width, graphs or not: the split count follows
        // from the width, so eager and replayed steps of one batch size compute the same thing, and
        // the number of graphs grows only with log(context).
        let stride = if d > 0 { max_pages_used.next_power_of_two().max(8).min(limits.max_pages) } else { max_pages_used.min(limits.max_pages) };
        let bucket = if pure_decode { self.buckets.iter().copied().find(|&b| b >= n) } else { None };
        let Some(bs) = bucket else {
            let lay = if pure_decode { self.dec } else { self.ext };
            let tokens = pack(&mut self.ints, &lay, pass, d, n, stride, ps);
            let splits = attention::decode_splits(d, kvh, stride * ps, self.dev.sm_count());
            let max_new = seqs[d..].iter().map(|s| s.q_len).max().unwrap_or(0);
            let step = StepShape { tokens, seqs: n, decode_seqs: d, splits, max_new, stride, lay };
            self.busy.start[slot].record(self.dev.stream()).map_err(|e| cuda_err(e.into()))?;
            self.upload(lay.ids, lay.pages + n * stride)?;
            self.eager_steps += 1;
            self.model.forward(&self.dev, &self.gemm, &mut self.bufs, &mut self.kv, &step).map_err(cuda_err)?;
            return Ok((lay, false));
        };
        let lay = self.dec;
        let tokens = pack(&mut self.ints, &lay, pass, bs, bs, stride, ps);
        let splits = attention::decode_splits(bs, kvh, stride * ps, self.dev.sm_count());
        let step = StepShape { tokens, seqs: bs, decode_seqs: bs, splits, max_new: 0, stride, lay };
        let mut draws: Vec<Draw> = rows.iter().map(|r| if let Row::Device(d) = r { *d } else { Draw::PAD }).collect();
        draws.resize(bs, Draw::PAD);
        put_draws(&mut self.ints, limits.max_logit_rows, &draws);
        // Sampler parameters and inputs in one copy.
        self.busy.start[slot].record(self.dev.stream()).map_err(|e| cuda_err(e.into()))?;
        self.upload(0, lay.pages + bs * stride)?;
        let key = (bs, stride);
        let (dev, gemm, model, bufs, kv, logprob) = (&self.dev, &self.gemm, &self.model, &mut self.bufs, &mut self.kv, &mut self.logprob);
        let enqueue = |bufs: &mut Buffers, kv: &mut KvPool, logprob: &mut CudaSlice<f32>| -> radixlm_cuda::Result<()> {
            model.forward(dev, gemm, bufs, kv, &step)?;
            model.gather(dev, bufs, step.tokens, lay.rows, bs)?;
            model.logits_bf16(gemm, bufs, bs)?;
            sample(dev, bufs, logprob, model.spec.vocab, bs)
        };
        if self.graphs.get(&key).is_none() {
            // The first step of a shape runs eagerly (building cuBLASLt plans), then is captured. The
            // capture records the same work again without running it, and the first step's placeholders
            // must be read before its own draw overwrites `drawn`: so eager first, then capture.
            self.eager_steps += 1;
            enqueue(bufs, kv, logprob).map_err(cuda_err)?;
            self.graphs.capture(dev, key, || enqueue(bufs, kv, logprob)).map_err(cuda_err)?;
            return Ok((lay, true));
        }
        self.graphs.get(&key).expect("captured").launch().map_err(|e| cuda_err(e.into()))?;
        self.graph_steps += 1;
        Ok((lay, true))
    }

    /// Turns every logit row into a token (device rows) or f32 logits (host rows), chunk by chunk of
    /// `max_logit_rows`. With `drawn`, the device rows were already sampled by the step's graph.
    fn consume_rows(&mut self, tokens: usize, rows_at: usize, rows: &[Row], drawn: bool) -> Result<Vec<Sampled>> {
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
                self.model.gather(&self.dev, &mut self.bufs, tokens, rows_at + first, n).map_err(cuda_err)?;
            }
            let mut ids = Vec::new();
            if device {
                if !drawn {
                    let draws: Vec<Draw> = chunk.iter().map(|r| if let Row::Device(d) = r { *d } else { Draw::PAD }).collect();
                    put_draws(&mut self.ints, max, &draws);
                    self.upload(0, SAMPLER_WORDS * max)?;
                    self.model.logits_bf16(&self.gemm, &mut self.bufs, n).map_err(cuda_err)?;
                    sample(&self.dev, &mut self.bufs, &mut self.logprob, vocab, n).map_err(cuda_err)?;
                }
                ids = self.dev.stream().clone_dtoh(&self.bufs.drawn.slice(0..n)).map_err(dl)?;
            }
            if host {
                self.model.logits(&self.gemm, &mut self.bufs, n).map_err(cuda_err)?;
            }
            // Host rows go straight into their own vectors; one synchronisation covers the chunk.
            let mut chunk_out = Vec::with_capacity(n);
            for (j, r) in chunk.iter().enumerate() {
                chunk_out.push(match r {
                    Row::Device(_) => Sampled::Token(ids[j] as u32),
                    Row::Host => {
                        let mut row = vec![0.0f32; vocab];
                        let src = self.bufs.logits.slice(j * vocab..(j + 1) * vocab);
                        self.dev.stream().memcpy_dtoh(&src, &mut row).map_err(dl)?;
                        Sampled::Logits(row)
                    }
                });
            }
            self.dev.synchronize().map_err(cuda_err)?;
            out.extend(chunk_out);
        }
        Ok(out)
    }

}

impl Backend for CudaBackend {
    fn device(&self) -> String {
        self.name.clone()
    }

    fn info(&self) -> serde_json::Value {
        json!({
            "kvPoolPages": self.kv.num_pages,
            "decodeKernel": format!("{:?}", self.dev.decode_kernel()),
            "cudaGraphs": self.graphs.len(),
            "graphSteps": self.graph_steps,
            "eagerSteps": self.eager_steps,
            "decodeGpuSeconds": self.busy.decode_s,
            "extendGpuSeconds": self.busy.extend_s,
            "chainGpuSeconds": self.busy.gpu_s,
            "chainWallSeconds": self.busy.wall_s,
            "gpuBusy": if self.busy.wall_s > 0.0 { self.busy.gpu_s / self.busy.wall_s } else { 0.0 },
        })
    }

    fn launch(&mut self, running: &[Request], batch: &Batch) -> Result<bool> {
        // One-token sequences first: they run through the decode kernel, the rest through prefill.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&k| batch[k].1 != 1);
        let d = order.iter().take_while(|&&k| batch[k].1 == 1).count();
        let sorted: Batch = order.iter().map(|&k| batch[k]).collect();
        let mut pass = Pass::prepare(running, &sorted, self.kv.page_size);
        let limits = self.bufs.limits;
        if pass.ids.len() > limits.max_tokens || pass.ctx.seqs.len() > limits.max_seqs {
            return Err(Error::internal(format!("step of {} tokens / {} sequences exceeds the CUDA limits", pass.ids.len(), pass.ctx.seqs.len())));
        }
        // Tokens the previous step draws read its sampler's output row on the device.
        for id in pass.ids.iter_mut().filter(|id| **id & FUTURE != 0) {
            let row = self.prev_rows.get((*id & !FUTURE) as usize).copied();
            *id = FUTURE | row.ok_or_else(|| Error::internal("a placeholder token names no entry of the previous step"))?;
        }
        // One entry per logit row, in the pass's row order (each entry's prompt rows, then its sample).
        let mut rows = Vec::with_capacity(pass.ctx.logit_rows.len());
        let mut sample_row = vec![u32::MAX; batch.len()];
        for ((&(i, _), e), &k) in sorted.iter().zip(&pass.entries).zip(&order) {
            rows.extend(e.prompt_targets.clone().map(|_| Row::Host));
            if e.sample {
                let r = &running[i];
                sample_row[k] = rows.len() as u32;
                rows.push(if r.device_sampleable() { Row::Device(Draw::of(r)) } else { Row::Host });
            }
        }
        let seq = self.launches;
        let slot = seq % RING;
        let dl = |e: DriverError| cuda_err(e.into());
        let (lay, drawn) = self.step(&pass, &rows, d, slot)?;
        let tokens = pass.ids.len().max(pass.ctx.seqs.len());
        let tokens_only = pass.hidden_rows.is_empty() && rows.iter().all(|r| matches!(r, Row::Device(_)));
        let kind = if tokens_only {
            let n = rows.len();
            if !drawn && n > 0 {
                // Eager step (no graph bucket): LM head and sampler now, on the same stream.
                self.model.gather(&self.dev, &mut self.bufs, tokens, lay.rows, n).map_err(cuda_err)?;
                let draws: Vec<Draw> = rows.iter().map(|r| if let Row::Device(d) = r { *d } else { Draw::PAD }).collect();
                put_draws(&mut self.ints, limits.max_logit_rows, &draws);
                self.upload(0, SAMPLER_WORDS * limits.max_logit_rows)?;
                self.model.logits_bf16(&self.gemm, &mut self.bufs, n).map_err(cuda_err)?;
                sample(&self.dev, &mut self.bufs, &mut self.logprob, self.model.spec.vocab, n).map_err(cuda_err)?;
            }
            if n > 0 {
                self.dev.stream().memcpy_dtoh(&self.bufs.drawn.slice(0..n), &mut self.pinned[slot]).map_err(dl)?;
            }
            self.busy.end[slot].record(self.dev.stream()).map_err(dl)?;
            FlightKind::Tokens { n }
        } else {
            self.busy.end[slot].record(self.dev.stream()).map_err(dl)?;
            FlightKind::Rows { tokens, rows_at: lay.rows, rows, drawn, hidden: pass.hidden_rows.len() }
        };
        self.prev_rows = sample_row;
        let decode = d == pass.ctx.seqs.len();
        self.launches += 1;
        self.flights.push_back(Flight { seq, decode, order, entries: pass.entries, kind });
        Ok(tokens_only)
    }

    fn collect(&mut self) -> Result<Vec<EntryOut>> {
        let f = self.flights.pop_front().ok_or_else(|| Error::internal("collect without a launched step"))?;
        let dl = |e: DriverError| cuda_err(e.into());
        let chained = matches!(f.kind, FlightKind::Tokens { .. });
        let (mut results, hidden_rows) = match f.kind {
            FlightKind::Tokens { n } => {
                let slot = f.seq % RING;
                self.busy.end[slot].synchronize().map_err(dl)?;
                let tokens: Vec<Sampled> = self.pinned[slot].as_slice().map_err(dl)?[..n].iter().map(|&t| Sampled::Token(t as u32)).collect();
                (tokens.into_iter(), Vec::new().into_iter())
            }
            FlightKind::Rows { tokens, rows_at, rows, drawn, hidden } => {
                let results = self.consume_rows(tokens, rows_at, &rows, drawn)?;
                let hidden = self.hidden_to_host(tokens, rows_at, rows.len(), hidden)?;
                (results.into_iter(), hidden.into_iter())
            }
        };
        self.busy.account(f.seq, f.decode, chained);
        let mut hidden_rows = hidden_rows;
        let mut out: Vec<Option<EntryOut>> = (0..f.order.len()).map(|_| None).collect();
        for (e, &k) in f.entries.into_iter().zip(&f.order) {
            let prompt_rows = e
                .prompt_targets
                .map(|t| match results.next() {
                    Some(Sampled::Logits(l)) => (t, l),
                    _ => unreachable!("prompt rows are host rows"),
                })
                .collect();
            let sample = e.sample.then(|| results.next().expect("row"));
            let hidden = e.hidden_positions.map(|p| (p, hidden_rows.next().expect("row"))).collect();
            out[k] = Some(EntryOut { sample, prompt_rows, hidden });
        }
        Ok(out.into_iter().map(|o| o.expect("every entry")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward_ctx::{ForwardCtx, SeqSlice};
    use crate::runner::EntryRows;

    fn limits() -> Limits {
        Limits { max_tokens: 16, max_seqs: 4, max_logit_rows: 4, max_pages: 8, page_size: 4 }
    }

    #[test]
    fn mixed_step_packs_decode_rows_first_and_counts_extend_tokens_from_zero() {
        // Two decode sequences (contexts 5 and 9 before this token), then one extend of 3 tokens
        // after 4 cached ones.
        let (t0, t1, t2) = ([3u32, 1], [0u32, 6, 2], [7u32, 5]);
        let seqs = vec![
            SeqSlice { q_len: 1, start: 5, page_table: &t0 },
            SeqSlice { q_len: 1, start: 9, page_table: &t1 },
            SeqSlice { q_len: 3, start: 4, page_table: &t2 },
        ];
        let pass = Pass {
            ids: vec![11, 12, 13, 14, 15],
            ctx: ForwardCtx { seqs, page_size: 4, logit_rows: vec![0, 1, 4] },
            hidden_rows: vec![],
            entries: (0..3).map(|_| EntryRows { sample: true, prompt_targets: 0..0, hidden_positions: 0..0 }).collect(),
        };
        let l = limits();
        let lay = IntLayout::extend(&l);
        let mut ints = vec![-7; IntLayout::total(&l)];
        let tokens = pack(&mut ints, &lay, &pass, 2, 3, 8, 4);
        assert_eq!(tokens, 5);
        assert_eq!(&ints[lay.ids..lay.ids + 5], &[11, 12, 13, 14, 15]);
        assert_eq!(&ints[lay.positions..lay.positions + 5], &[5, 9, 4, 5, 6]);
        // slot = page * 4 + pos % 4: pos 5 -> page t0[1] = 1; pos 9 -> t1[2] = 2; pos 4,5,6 -> t2[1] = 5.
        assert_eq!(&ints[lay.slots..lay.slots + 5], &[5, 9, 20, 21, 22]);
        // Decode rows hold their context after this step, extend rows their cached prefix.
        assert_eq!(&ints[lay.lens..lay.lens + 3], &[6, 10, 4]);
        // The prefill kernel's cu_seqlens view starts at sequence 2: [0, 3].
        assert_eq!(&ints[lay.cu + 2..lay.cu + 4], &[0, 3]);
        assert_eq!(&ints[lay.rows..lay.rows + 3], &[0, 1, 4]);
        assert_eq!(&ints[lay.pages..lay.pages + 2], &[3, 1]);
        assert_eq!(&ints[lay.pages + 8..lay.pages + 11], &[0, 6, 2]);
        assert_eq!(&ints[lay.pages + 16..lay.pages + 18], &[7, 5]);
    }

    #[test]
    fn padded_decode_rows_store_nothing_and_attend_to_nothing() {
        let t0 = [2u32];
        let pass = Pass {
            ids: vec![9],
            ctx: ForwardCtx { seqs: vec![SeqSlice { q_len: 1, start: 2, page_table: &t0 }], page_size: 4, logit_rows: vec![0] },
            hidden_rows: vec![],
            entries: vec![EntryRows { sample: true, prompt_targets: 0..0, hidden_positions: 0..0 }],
        };
        let l = limits();
        let lay = IntLayout::decode(&l);
        let mut ints = vec![-7; IntLayout::total(&l)];
        assert_eq!(pack(&mut ints, &lay, &pass, 4, 4, 8, 4), 4);
        assert_eq!(&ints[lay.slots..lay.slots + 4], &[10, -1, -1, -1]);
        assert_eq!(&ints[lay.lens..lay.lens + 4], &[3, 0, 0, 0]);
        assert_eq!(&ints[lay.rows..lay.rows + 4], &[0, 1, 2, 3]);
        // The decode block leaves room for the sampler's parameters before it and ends before the
        // extend block.
        assert_eq!(lay.ids, SAMPLER_WORDS * l.max_logit_rows);
        assert!(lay.end <= IntLayout::extend(&l).ids);
    }

    #[test]
    fn sampler_parameters_are_bit_patterns_in_fixed_regions() {
        let mut ints = vec![0; 7 * 4];
        let d = Draw { temperature: 0.7, top_k: 40, top_p: 0.9, min_p: 0.05, seed: 0x1234_5678_9abc_def0, step: 17 };
        put_draws(&mut ints, 4, &[Draw::PAD, d]);
        assert_eq!((ints[2] as u32, ints[3] as u32), (0x9abc_def0, 0x1234_5678));
        assert_eq!(f32::from_bits(ints[2 * 4 + 1] as u32), 0.7);
        assert_eq!(ints[3 * 4 + 1], 40);
        assert_eq!(f32::from_bits(ints[4 * 4 + 1] as u32), 0.9);
        assert_eq!(f32::from_bits(ints[5 * 4 + 1] as u32), 0.05);
        assert_eq!(ints[6 * 4 + 1], 17);
        assert_eq!(f32::from_bits(ints[2 * 4] as u32), 0.0);
    }
}

//! Paged decode and prefill attention against their CPU twins, and their timings.
//!
//! Inputs: the KV cache is filled with NaN, then only the slots of positions a sequence has written
//! get random values; page tables come from a shuffled page pool, and a row's unused entries point at a
//! spare page that is all NaN. So a kernel that reads a position past a sequence's length, an unwritten
//! slot of its last page or a wrong page shows up as NaN. Outputs (and the split-K workspace) are NaN
//! before every launch; rows no sequence owns must still hold those NaN bits afterwards.
//!
//! Bounds, per element: |gpu - cpu| <= 2^-7 max(|gpu|, |cpu|) + abs, and over the whole output
//! rms(gpu - cpu) <= 2^-8 rms(cpu).
//! - 2^-7 max(..) is one bf16 ulp: the twin sums in f64, the GPU in f32 in another order, and both round
//!   once, so results may straddle a rounding boundary.
//! - abs covers the f32 error before that rounding, relative to vmax, the largest |v|: decode
//!   (all f32) 2^-12 vmax, from scores of up to ~250 in log2 units whose f32 rounding (~2^-24 * 250) moves
//!   the weights by ~2^-16 relative, with margin. Prefill (and the tensor-core decode kernel) rounds each
//!   probability p <= 1 to bf16 before the P V tensor-core product: at most 2^-9 absolute per weight, of
//!   random sign, so the output moves by well under 2^-9 vmax (2^-8 vmax would need every rounding to go
//!   the same way); hence 2^-9 vmax.
//! - the RMS bound (bf16 output rounding alone gives ~2^-10) catches what the loose per-element bound
//!   would let through when outputs are small: a missed or doubled token among 1000 shifts the
//!   output by ~vmax/1000, which is below abs but many times the RMS budget.

use super::{device, down, nan, rand_bf16, up};
use cudarc::driver::{CudaSlice, CudaStream};
use radixlm_cuda::attention::{
    decode_splits, decode_workspace_len, softmax_scale, DECODE_MAX_SPLITS,
};
use radixlm_cuda::{bf16, cpu, AttnShape, DecodeKernel, Device, Error, PagedKv};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::Arc;

fn shape(num_heads: usize, num_kv_heads: usize, head_dim: usize) -> AttnShape {
    AttnShape {
        num_heads,
        num_kv_heads,
        head_dim,
    }
}

/// (name, shape): real models first, then other GQA ratios and MHA.
fn shapes() -> Vec<(&'static str, AttnShape)> {
    vec![
        ("qwen2.5-0.5b", shape(14, 2, 64)),
        ("llama-3.1-8b", shape(32, 8, 128)),
        ("smollm2-135m", shape(9, 3, 64)),
        ("mha-d128", shape(4, 4, 128)),
        ("mha-d64", shape(2, 2, 64)),
        ("g2-d64", shape(8, 4, 64)),
        ("g8-d128", shape(16, 2, 128)),
        ("g16-d64", shape(16, 1, 64)),
        ("g16-d128", shape(32, 2, 128)),
        ("g12-d128", shape(24, 2, 128)),
    ]
}

/// A host-side paged cache holding `lens[i]` written positions for sequence i.
struct Cache {
    k: Vec<bf16>,
    v: Vec<bf16>,
    table: Vec<i32>,
    max_pages: usize,
    page_size: usize,
}

impl Cache {
    fn new(rng: &mut StdRng, lens: &[usize], page_size: usize, sh: AttnShape, scale: f32) -> Cache {
        let need: Vec<usize> = lens.iter().map(|l| l.div_ceil(page_size)).collect();
        let max_pages = need.iter().max().copied().unwrap_or(0) + 1;
        let spare = 3;
        let num_pages = need.iter().sum::<usize>() + spare;
        let mut pool: Vec<i32> = (0..num_pages as i32).collect();
        pool.shuffle(rng);
        let nan_page = pool.pop().unwrap(); // never written: all NaN
        let kvw = sh.kv_width();
        let (mut k, mut v) = (
            nan(num_pages * page_size * kvw),
            nan(num_pages * page_size * kvw),
        );
        let mut table = vec![nan_page; lens.len() * max_pages];
        for (s, (&len, &n)) in lens.iter().zip(&need).enumerate() {
            for i in 0..n {
                table[s * max_pages + i] = pool.pop().unwrap();
            }
            for p in 0..len {
                let page = table[s * max_pages + p / page_size] as usize;
                let slot = page * page_size + p % page_size;
                let row = slot * kvw..(slot + 1) * kvw;
                k[row.clone()].copy_from_slice(&rand_bf16(rng, kvw, 1.0));
                v[row].copy_from_slice(&rand_bf16(rng, kvw, scale));
            }
        }
        Cache {
            k,
            v,
            table,
            max_pages,
            page_size,
        }
    }

    fn host(&self) -> PagedKv<'_, [bf16], [i32]> {
        PagedKv {
            k_cache: &self.k,
            v_cache: &self.v,
            page_size: self.page_size,
            page_table: &self.table,
            max_pages: self.max_pages,
        }
    }

    fn upload(&self, s: &Arc<CudaStream>) -> DevCache {
        DevCache {
            k: up(s, &self.k),
            v: up(s, &self.v),
            table: up(s, &self.table),
            max_pages: self.max_pages,
            page_size: self.page_size,
        }
    }
}

struct DevCache {
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    table: CudaSlice<i32>,
    max_pages: usize,
    page_size: usize,
}

impl DevCache {
    fn kv(&self) -> PagedKv<'_, CudaSlice<bf16>, CudaSlice<i32>> {
        PagedKv {
            k_cache: &self.k,
            v_cache: &self.v,
            page_size: self.page_size,
            page_table: &self.table,
            max_pages: self.max_pages,
        }
    }
}

/// Worst per-element error as a fraction of its bound, and rms error as a fraction of its bound.
#[derive(Default, Clone, Copy)]
struct Stats {
    elem: f32,
    rms: f32,
}

impl Stats {
    fn max(self, o: Stats) -> Stats {
        Stats {
            elem: self.elem.max(o.elem),
            rms: self.rms.max(o.rms),
        }
    }
}

/// The bounds in the header. A NaN in `want` means "must not be written".
fn check_attn(what: &str, got: &[bf16], want: &[bf16], abs: f32) -> Stats {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut err2, mut ref2) = (0f32, 0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{what}[{i}]: written, should be untouched"
            );
            continue;
        }
        assert!(
            g.is_finite() && w.is_finite(),
            "{what}[{i}]: got {g}, want {w}"
        );
        let (g, w) = (g.to_f32(), w.to_f32());
        let bound = 2f32.powi(-7) * g.abs().max(w.abs()) + abs;
        let err = (g - w).abs();
        assert!(
            err <= bound,
            "{what}[{i}]: got {g}, want {w}, |err| {err} > {bound}"
        );
        worst = worst.max(err / bound);
        err2 += (err as f64).powi(2);
        ref2 += (w as f64).powi(2);
    }
    let (rms_err, rms_ref) = (err2.sqrt(), ref2.sqrt());
    let rms_bound = 2f64.powi(-8) * rms_ref;
    assert!(
        rms_err <= rms_bound,
        "{what}: rms error {rms_err:.3e} > 2^-8 rms(ref) = {rms_bound:.3e}"
    );
    Stats {
        elem: worst,
        rms: if rms_ref > 0.0 {
            (rms_err / rms_bound) as f32
        } else {
            0.0
        },
    }
}

#[test]
fn attention_decode() {
    let Some(mut dev) = device("attention_decode") else {
        return;
    };
    for kernel in [DecodeKernel::Simt, DecodeKernel::TensorCores] {
        dev.set_decode_kernel(kernel);
        let (n, stats) = decode_cases(&dev, kernel);
        eprintln!(
            "attention_decode ({kernel:?}): {n} cases within bounds (worst element {:.2}, worst rms {:.2} of bound)",
            stats.elem, stats.rms
        );
    }
}

/// Every decode case on `dev` (whose decode kernel is `kernel`): returns (cases, worst stats).
fn decode_cases(dev: &Device, kernel: DecodeKernel) -> (usize, Stats) {
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(11);
    let (mut n, mut stats) = (0, Stats::default());
    for (name, sh) in shapes() {
        // The tensor-core kernel rounds each probability to bf16 before P V, as prefill does (see the
        // bounds above); groups it does not take run the CUDA-core kernel.
        let group = sh.num_heads / sh.num_kv_heads;
        let rounds_p = kernel == DecodeKernel::TensorCores && (2..=16).contains(&group);
        for (pi, page_size) in [1usize, 16, 64].into_iter().enumerate() {
            let p = page_size;
            // Batch 1 alone, then a mixed batch: page boundaries, odd lengths, a padding row (0).
            let batches: [Vec<usize>; 2] = [
                vec![300 + 7 * p],
                vec![1, 0, (p - 1).max(2), p, p + 1, 2 * p + 3, 517, 1100, 77],
            ];
            for lens in batches {
                let batch = lens.len();
                // Flat softmax, peaky softmax (scores up to ~100), large values.
                let (q_scale, v_scale) = [(1.0, 1.0), (6.0, 1.0), (16.0, 8.0)][(pi + batch) % 3];
                let cache = Cache::new(&mut rng, &lens, p, sh, v_scale);
                let width = sh.num_heads * sh.head_dim;
                // q straight out of a fused qkv buffer, or packed.
                let q_stride = if pi == 1 { sh.qkv_width() } else { width };
                let q = rand_bf16(&mut rng, batch * q_stride, q_scale);
                let lens_i: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
                let mut want = nan(batch * width);
                cpu::attention_decode(&mut want, &q, q_stride, cache.host(), &lens_i, sh);

                let dc = cache.upload(s);
                let (q_d, lens_d) = (up(s, &q), up(s, &lens_i));
                let abs = 2f32.powi(if rounds_p { -9 } else { -12 }) * v_scale;
                let tag = format!("{kernel:?} {name} p{p} b{batch}");
                let mut out = up(s, &nan(batch * width));
                dev.attention_decode(&mut out, &q_d, q_stride, dc.kv(), &lens_d, sh)
                    .unwrap();
                stats = stats.max(check_attn(
                    &format!("decode {tag}"),
                    &down(s, &out),
                    &want,
                    abs,
                ));
                n += 1;
                let max_len = *lens.iter().max().unwrap();
                let auto = decode_splits(batch, sh.num_kv_heads, max_len, dev.sm_count());
                for splits in [2, 7, DECODE_MAX_SPLITS, auto] {
                    let mut ws = up(s, &vec![f32::NAN; decode_workspace_len(batch, sh, splits)]);
                    let mut out = up(s, &nan(batch * width));
                    dev.attention_decode_split(
                        &mut out,
                        &q_d,
                        q_stride,
                        dc.kv(),
                        &lens_d,
                        sh,
                        splits,
                        &mut ws,
                    )
                    .unwrap();
                    let what = format!("decode split {splits} {tag}");
                    stats = stats.max(check_attn(&what, &down(s, &out), &want, abs));
                    n += 1;
                }
            }
        }
    }
    // A batch of padding rows only: zeros from both variants.
    let sh = shape(14, 2, 64);
    let cache = Cache::new(&mut rng, &[0, 0, 0], 16, sh, 1.0);
    let dc = cache.upload(s);
    let lens_d = up(s, &[0i32; 3]);
    let q_d = up(s, &rand_bf16(&mut rng, 3 * 14 * 64, 1.0));
    let mut out = up(s, &nan(3 * 14 * 64));
    dev.attention_decode(&mut out, &q_d, 14 * 64, dc.kv(), &lens_d, sh)
        .unwrap();
    assert!(down(s, &out).iter().all(|x| x.to_bits() == 0));
    let mut ws = up(s, &vec![f32::NAN; decode_workspace_len(3, sh, 4)]);
    let mut out = up(s, &nan(3 * 14 * 64));
    dev.attention_decode_split(&mut out, &q_d, 14 * 64, dc.kv(), &lens_d, sh, 4, &mut ws)
        .unwrap();
    assert!(down(s, &out).iter().all(|x| x.to_bits() == 0));
    (n, stats)
}

#[test]
fn attention_prefill() {
    let Some(dev) = device("attention_prefill") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(12);
    let (mut n, mut stats) = (0, Stats::default());
    for (name, sh) in shapes() {
        for (pi, page_size) in [1usize, 16, 64].into_iter().enumerate() {
            let p = page_size;
            // (cached prefix, new tokens): fresh prompts, radix hits on and off page boundaries, a
            // decode-like single token, an empty sequence, several row and key tiles.
            let seqs: Vec<(usize, usize)> = vec![
                (0, 1),
                (0, 37),
                (5, 1),
                (p, p),
                (3 * p - 1, 66),
                (7, 0),
                (0, 300),
                (100, 9),
                (2 * p + 1, 130),
            ];
            let lens: Vec<usize> = seqs.iter().map(|&(a, b)| a + b).collect();
            let (q_scale, v_scale) = [(1.0, 1.0), (6.0, 1.0), (16.0, 8.0)][pi];
            let cache = Cache::new(&mut rng, &lens, p, sh, v_scale);
            let width = sh.num_heads * sh.head_dim;
            let mut cu = vec![0i32];
            for &(_, new) in &seqs {
                cu.push(cu.last().unwrap() + new as i32);
            }
            let tokens = *cu.last().unwrap() as usize + 1; // one trailing row that no sequence owns
            let q_stride = if pi == 1 { width } else { sh.qkv_width() };
            let q = rand_bf16(&mut rng, tokens * q_stride, q_scale);
            let prefix: Vec<i32> = seqs.iter().map(|&(a, _)| a as i32).collect();
            let mut want = nan(tokens * width);
            cpu::attention_prefill(&mut want, &q, q_stride, cache.host(), &cu, &prefix, sh);
            assert!(want[..(tokens - 1) * width].iter().all(|x| !x.is_nan()));

            let dc = cache.upload(s);
            let (q_d, cu_d, prefix_d) = (up(s, &q), up(s, &cu), up(s, &prefix));
            let max_new = seqs.iter().map(|&(_, b)| b).max().unwrap();
            // The grid sized for the longest sequence, and a too-small grid (the tile loop covers it).
            for grid_tokens in [max_new, 1] {
                let mut out = up(s, &nan(tokens * width));
                dev.attention_prefill(
                    &mut out,
                    &q_d,
                    q_stride,
                    dc.kv(),
                    &cu_d,
                    &prefix_d,
                    grid_tokens,
                    sh,
                )
                .unwrap();
                let what = format!("prefill {name} p{p} grid{grid_tokens}");
                stats = stats.max(check_attn(
                    &what,
                    &down(s, &out),
                    &want,
                    2f32.powi(-9) * v_scale,
                ));
                n += 1;
            }
        }
    }
    eprintln!(
        "attention_prefill: {n} cases within bounds (worst element {:.2}, worst rms {:.2} of bound)",
        stats.elem, stats.rms
    );
}

#[test]
fn attention_shape_errors() {
    let Some(dev) = device("attention_shape_errors") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(13);
    let sh = shape(4, 2, 64);
    let cache = Cache::new(&mut rng, &[5, 9], 4, sh, 1.0);
    let dc = cache.upload(s);
    let lens = up(s, &[5i32, 9]);
    let q = up(s, &rand_bf16(&mut rng, 2 * 256 + 8, 1.0));
    let mut out = up(s, &nan(2 * 256));
    let err = |r: radixlm_cuda::Result<()>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    err(dev.attention_decode(&mut out, &q, 256, dc.kv(), &lens, shape(4, 2, 80))); // head_dim
    err(dev.attention_decode(&mut out, &q, 256, dc.kv(), &lens, shape(5, 2, 64))); // group
    err(dev.attention_decode(&mut out, &q, 252, dc.kv(), &lens, sh)); // q_stride < width
    err(dev.attention_decode(&mut out, &q, 260, dc.kv(), &lens, sh)); // not a multiple of 8
    err(dev.attention_decode(&mut out, &q.slice(1..), 256, dc.kv(), &lens, sh)); // misaligned
    err(dev.attention_decode(&mut out, &q, 256, dc.kv(), &up(s, &[5i32]), sh)); // table rows
    let mut small = up(s, &[0f32; 8]);
    err(dev.attention_decode_split(&mut out, &q, 256, dc.kv(), &lens, sh, 2, &mut small));
    let mut ws = up(s, &vec![0f32; decode_workspace_len(2, sh, 2)]);
    err(dev.attention_decode_split(&mut out, &q, 256, dc.kv(), &lens, sh, 0, &mut ws));
    let cu = up(s, &[0i32, 1, 2]);
    err(dev.attention_prefill(&mut out, &q, 256, dc.kv(), &cu, &up(s, &[0i32]), 1, sh));
    dev.attention_decode(&mut out, &q, 256, dc.kv(), &lens, sh)
        .unwrap();
    dev.attention_prefill(&mut out, &q, 256, dc.kv(), &cu, &up(s, &[4i32, 8]), 1, sh)
        .unwrap();
    dev.synchronize().unwrap();
    assert!((softmax_scale(64) - 0.125).abs() < 1e-9);
}

/// Cheap stand-in data for timings (values do not change the speed): a random block of 4099 values,
/// repeated.
pub(super) fn pattern(rng: &mut StdRng, n: usize, scale: f32) -> Vec<bf16> {
    let block = rand_bf16(rng, 4099, scale);
    block.iter().cycle().take(n).copied().collect()
}

/// A timing cache: `batch` sequences of `len` tokens in shuffled pages, all slots filled.
fn timing_cache(
    rng: &mut StdRng,
    s: &Arc<CudaStream>,
    batch: usize,
    len: usize,
    page_size: usize,
    sh: AttnShape,
) -> DevCache {
    let max_pages = len.div_ceil(page_size);
    let mut table: Vec<i32> = (0..(batch * max_pages) as i32).collect();
    table.shuffle(rng);
    let n = batch * max_pages * page_size * sh.kv_width();
    DevCache {
        k: up(s, &pattern(rng, n, 1.0)),
        v: up(s, &pattern(rng, n, 1.0)),
        table: up(s, &table),
        max_pages,
        page_size,
    }
}

/// Mean microseconds per call of `f` over enough calls to pass ~20 ms (at least 10), by CUDA events.
pub(super) fn time_us(dev: &Device, f: &mut dyn FnMut()) -> f64 {
    let s = dev.stream();
    let ev = || {
        dev.context()
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap()
    };
    f();
    let (a, b) = (ev(), ev());
    a.record(s).unwrap();
    f();
    b.record(s).unwrap();
    b.synchronize().unwrap();
    let once = (a.elapsed_ms(&b).unwrap() as f64).max(1e-3);
    let iters = ((20.0 / once) as usize).clamp(10, 2000);
    a.record(s).unwrap();
    for _ in 0..iters {
        f();
    }
    b.record(s).unwrap();
    b.synchronize().unwrap();
    a.elapsed_ms(&b).unwrap() as f64 * 1000.0 / iters as f64
}

const HBM_TBPS: f64 = 3.35;
const BF16_TFLOPS: f64 = 990.0;

/// Not a correctness test: decode and prefill attention at model shapes (page size 16, pages shuffled).
#[test]
fn attention_timings() {
    let Some(mut dev) = device("attention_timings") else {
        return;
    };
    let s = &dev.stream().clone();
    let mut rng = StdRng::seed_from_u64(14);
    let models = [
        ("qwen2.5-0.5b", shape(14, 2, 64)),
        ("llama-3.1-8b", shape(32, 8, 128)),
    ];
    let ctx = 1024;
    eprintln!(
        "decode attention, context {ctx}, page 16, caches rotated past L2 (at batch 1 at most 16 copies: partly L2-resident): \
         us per call (KV read TB/s, % of {HBM_TBPS} TB/s)"
    );
    eprintln!(
        "{:<14} {:>5} {:>22} {:>26} {:>30} {:>22}",
        "model", "batch", "single pass", "split (auto)", "split 2/4/8/16 (us)", "prefill kernel"
    );
    for (name, sh) in models {
        for batch in [1usize, 64, 256] {
            let page = 16;
            // One cache per "layer", enough of them to pass 256 MB, so that the timed reads come
            // from HBM, not from the 50 MB L2 (as in a real decode step over all layers).
            let bytes = (batch * ctx * sh.kv_width() * 2 * 2) as f64;
            let layers = ((256e6 / bytes).ceil() as usize).clamp(1, 16);
            let caches: Vec<DevCache> = (0..layers)
                .map(|_| timing_cache(&mut rng, s, batch, ctx, page, sh))
                .collect();
            let mut layer = 0;
            let width = sh.num_heads * sh.head_dim;
            let q = up(s, &rand_bf16(&mut rng, batch * sh.qkv_width(), 1.0));
            let lens = up(s, &vec![ctx as i32; batch]);
            let mut out = up(s, &nan(batch * width));
            let mut ws = up(
                s,
                &vec![0f32; decode_workspace_len(batch, sh, DECODE_MAX_SPLITS)],
            );
            let tbps = |us: f64| bytes / us / 1e6;
            let mut run = |dev: &mut Device, kernel: DecodeKernel, splits: usize| {
                dev.set_decode_kernel(kernel);
                let dev = &*dev;
                time_us(dev, &mut || {
                    layer = (layer + 1) % layers;
                    let dc = &caches[layer];
                    if splits == 1 {
                        dev.attention_decode(&mut out, &q, sh.qkv_width(), dc.kv(), &lens, sh)
                    } else {
                        dev.attention_decode_split(
                            &mut out,
                            &q,
                            sh.qkv_width(),
                            dc.kv(),
                            &lens,
                            sh,
                            splits,
                            &mut ws,
                        )
                    }
                    .unwrap()
                })
            };
            let simt = DecodeKernel::Simt;
            let single = run(&mut dev, simt, 1);
            let auto = decode_splits(batch, sh.num_kv_heads, ctx, dev.sm_count());
            let t_auto = run(&mut dev, simt, auto);
            let sweep: Vec<String> = [2, 4, 8, 16]
                .iter()
                .map(|&k| format!("{:.1}", run(&mut dev, simt, k)))
                .collect();
            let tc = DecodeKernel::TensorCores;
            let (tc_single, tc_auto) = (run(&mut dev, tc, 1), run(&mut dev, tc, auto));
            dev.set_decode_kernel(simt);
            // For comparison: the tensor-core prefill kernel on the same step (one new token per
            // sequence after a cached prefix of ctx - 1), which has no split-K.
            let cu = up(s, &(0..=batch as i32).collect::<Vec<_>>());
            let pre = up(s, &vec![ctx as i32 - 1; batch]);
            let t_pf = time_us(&dev, &mut || {
                layer = (layer + 1) % layers;
                let dc = &caches[layer];
                dev.attention_prefill(&mut out, &q, sh.qkv_width(), dc.kv(), &cu, &pre, 1, sh)
                    .unwrap()
            });
            eprintln!(
                "{name:<14} {batch:>5} {:>9.1} ({:.2}, {:>3.0}%) {:>9.1} x{auto:<2} ({:.2}, {:>3.0}%) {:>30} {:>9.1} ({:.2}, {:>3.0}%)",
                single,
                tbps(single),
                100.0 * tbps(single) / HBM_TBPS,
                t_auto,
                tbps(t_auto),
                100.0 * tbps(t_auto) / HBM_TBPS,
                sweep.join(" / "),
                t_pf,
                tbps(t_pf),
                100.0 * tbps(t_pf) / HBM_TBPS,
            );
            eprintln!(
                "{:<14} {batch:>5} tensor cores: {:>9.1} ({:.2}, {:>3.0}%) {:>9.1} x{auto:<2} ({:.2}, {:>3.0}%)",
                "",
                tc_single,
                tbps(tc_single),
                100.0 * tbps(tc_single) / HBM_TBPS,
                tc_auto,
                tbps(tc_auto),
                100.0 * tbps(tc_auto) / HBM_TBPS,
            );
        }
    }

    eprintln!("prefill attention, page 16: us per call (TFLOP/s causal, % of {BF16_TFLOPS})");
    for (name, sh) in models {
        // (sequences, cached prefix, new tokens each)
        for (seqs, prefix, new) in [
            (1usize, 0usize, 4096usize),
            (8, 0, 512),
            (4, 3072, 1024),
            (32, 0, 128),
        ] {
            let dc = timing_cache(&mut rng, s, seqs, prefix + new, 16, sh);
            let tokens = seqs * new;
            let q = up(s, &rand_bf16(&mut rng, tokens * sh.qkv_width(), 1.0));
            let cu = up(
                s,
                &(0..=seqs as i32)
                    .map(|i| i * new as i32)
                    .collect::<Vec<_>>(),
            );
            let pre = up(s, &vec![prefix as i32; seqs]);
            let mut out = up(s, &nan(tokens * sh.num_heads * sh.head_dim));
            let us = time_us(&dev, &mut || {
                dev.attention_prefill(&mut out, &q, sh.qkv_width(), dc.kv(), &cu, &pre, new, sh)
                    .unwrap()
            });
            // 2 matmuls of 2 flops per (query, visible key, dim), per q head.
            let visible: usize = (0..new).map(|i| prefix + i + 1).sum::<usize>() * seqs;
            let flops = 4.0 * (visible * sh.head_dim * sh.num_heads) as f64;
            let tf = flops / us / 1e6;
            eprintln!(
                "{name:<14} {seqs:>3} x (prefix {prefix:>4} + new {new:>4}): {us:>9.1} us  {tf:>6.1} TFLOP/s ({:.0}%)",
                100.0 * tf / BF16_TFLOPS
            );
        }
    }
}

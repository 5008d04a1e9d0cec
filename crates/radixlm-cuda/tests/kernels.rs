//! Every kernel against its CPU twin (src/cpu.rs) on random inputs over many shapes.
//!
//! Runs on a machine with an NVIDIA GPU:  RADIXLM_CUDA_TESTS=1 cargo test -p radixlm-cuda --release
//! Without the variable each GPU test prints SKIPPED (and checks that the variable really is unset,
//! so a typo such as RADIXLM_CUDA_TESTS=yes fails instead of passing without testing anything).
//!
//! Every output buffer is filled with NaN before the launch, so an element the kernel forgot to
//! write shows up; in the KV cache, slots that no token maps to must still hold the NaN afterwards.
//!
//! Error bounds, GPU vs twin: both compute in f32 from the same bf16 inputs and round once, so
//! results agree except where the two f32 values straddle a bf16 rounding boundary:
//! - pure copies (embedding, v cache, fused residual sum) are bit-exact;
//! - everything else: |gpu - cpu| <= 2^-7 * max(|gpu|, |cpu|) + 1e-6 * scale, i.e. at most one bf16
//!   ulp, plus an absolute term for RoPE's cancellation a*cos - b*sin (FMA vs separate products
//!   differ by ~1e-7 * |input|; `scale` is the largest input magnitude);
//! - and at most 1% (+2) of the elements may differ at all, which catches systematic double
//!   rounding that the per-element bound alone would let through.
//!
//! Attention and GEMM (tests/kernels/{attention,gemm}.rs) sum many terms in a different order (and
//! prefill rounds its probabilities to bf16 for the tensor cores), so their bounds carry an absolute
//! term sized to that, and an RMS bound over the whole output instead of the 1% rule; each module's
//! header says what and why.

// In tests/kernels/ so that cargo does not build them as test binaries of their own.
#[path = "kernels/attention.rs"]
mod attention;
#[path = "kernels/gemm.rs"]
mod gemm;
#[path = "kernels/sampling.rs"]
mod sampling;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use radixlm_cuda::{bf16, cpu, layout, rope, AttnShape, Device, Error, Rope, RopeFreqs, RopeStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const VAR: &str = "RADIXLM_CUDA_TESTS";

fn device(test: &str) -> Option<Device> {
    match std::env::var_os(VAR) {
        None => {
            eprintln!("{test}: SKIPPED (set {VAR}=1 on a machine with an NVIDIA GPU to run it)");
            assert!(std::env::var_os(VAR).is_none());
            None
        }
        Some(v) => {
            assert_eq!(v, "1", "{VAR} must be 1 or unset");
            let dev = Device::new(0).unwrap_or_else(|e| panic!("{VAR}=1 but no usable GPU: {e}"));
            eprintln!("{test}: on {}", dev.describe().unwrap());
            Some(dev)
        }
    }
}

fn rand_bf16(rng: &mut StdRng, n: usize, scale: f32) -> Vec<bf16> {
    (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-scale..scale)))
        .collect()
}

fn up<T: cudarc::driver::DeviceRepr>(s: &Arc<CudaStream>, v: &[T]) -> CudaSlice<T> {
    s.clone_htod(v).unwrap()
}

fn down<T: cudarc::driver::DeviceRepr + Default + Clone>(
    s: &Arc<CudaStream>,
    d: &impl DevicePtr<T>,
) -> Vec<T> {
    s.synchronize().unwrap();
    s.clone_dtoh(d).unwrap()
}

fn nan(n: usize) -> Vec<bf16> {
    vec![bf16::NAN; n]
}

/// Per-element comparison under the bounds in the header. A NaN in `want` means "must not be
/// written": `got` must hold the very same NaN bits.
fn check(what: &str, got: &[bf16], want: &[bf16], scale: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut differ, mut worst) = (0usize, 0f32);
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
            g.is_finite() == w.is_finite(),
            "{what}[{i}]: got {g}, want {w} (poison left?)"
        );
        let (g, w) = (g.to_f32(), w.to_f32());
        if g == w {
            continue;
        }
        differ += 1;
        let err = (g - w).abs();
        let bound = 2f32.powi(-7) * g.abs().max(w.abs()) + 1e-6 * scale;
        assert!(
            err <= bound,
            "{what}[{i}]: got {g}, want {w}, |err| {err} > {bound}"
        );
        worst = worst.max(err / bound);
    }
    let n = got.len();
    assert!(
        differ <= n / 100 + 2,
        "{what}: {differ} of {n} elements differ (more than 1%)"
    );
    if differ > 0 {
        eprintln!(
            "  {what}: {differ}/{n} differ by <= 1 ulp (worst {:.2} of bound)",
            worst
        );
    }
}

fn check_exact(what: &str, got: &[bf16], want: &[bf16]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn device_new_is_an_error_not_a_crash() {
    match Device::new(0) {
        Ok(dev) => eprintln!("GPU: {}", dev.describe().unwrap()),
        Err(e) => {
            eprintln!("no GPU here, as an error: {e}");
            assert!(std::env::var_os(VAR).is_none(), "{VAR} is set but: {e}");
        }
    }
}

#[test]
fn embedding() {
    let Some(dev) = device("embedding") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(1);
    let mut cases = 0;
    for hidden in [576, 896, 4096, 1000, 7, 8] {
        for vocab in [1usize, 50, 2048] {
            let table = rand_bf16(&mut rng, vocab * hidden, 2.0);
            let table_d = up(s, &table);
            for tokens in [1usize, 3, 129] {
                let mut ids: Vec<i32> = (0..tokens)
                    .map(|_| rng.random_range(0..vocab as i32))
                    .collect();
                if tokens > 3 {
                    // Out-of-range ids give zero rows, not out-of-bounds reads.
                    ids[1] = -1;
                    ids[2] = vocab as i32;
                    ids[3] = i32::MAX;
                }
                let mut want = nan(tokens * hidden);
                cpu::embedding(&mut want, &table, &ids, hidden);
                // Offset 0 takes the 8-wide path where hidden allows; offset 1 breaks alignment.
                for offset in [0usize, 1] {
                    let mut out = up(s, &nan(tokens * hidden + offset));
                    let mut view = out.slice_mut(offset..);
                    dev.embedding(&mut view, &table_d, &up(s, &ids), hidden)
                        .unwrap();
                    let got = down(s, &out);
                    check_exact(
                        &format!("embedding h{hidden} v{vocab} t{tokens} +{offset}"),
                        &got[offset..],
                        &want,
                    );
                    cases += 1;
                }
            }
        }
    }
    eprintln!("embedding: {cases} cases bit-exact");
}

#[test]
fn embedding_reads_future_ids_from_the_previous_draw() {
    let Some(dev) = device("embedding_reads_future_ids_from_the_previous_draw") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(2);
    let (vocab, hidden) = (50usize, 64usize);
    let table = rand_bf16(&mut rng, vocab * hidden, 2.0);
    let drawn = [7i32, 41, 3];
    // Placeholders i32::MIN + j read drawn[j]; past drawn's end (and plain negatives) give zero rows.
    let ids = [5, i32::MIN + 1, i32::MIN, -1, i32::MIN + 3, i32::MIN + 2];
    let resolved = [5, 41, 7, -1, -1, 3];
    let mut want = nan(ids.len() * hidden);
    cpu::embedding(&mut want, &table, &resolved, hidden);
    let mut out = up(s, &nan(ids.len() * hidden));
    dev.embedding_resolving(&mut out, &up(s, &table), &up(s, &ids), &up(s, &drawn), hidden)
        .unwrap();
    check_exact("embedding with future ids", &down(s, &out), &want);
}

#[test]
fn rmsnorm_and_fused_add() {
    let Some(dev) = device("rmsnorm_and_fused_add") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(2);
    let mut cases = 0;
    for hidden in [576, 896, 1000, 1536, 2048, 3584, 4096, 5120, 8192, 7, 33, 8] {
        for rows in [1usize, 2, 17, 257] {
            let eps = if rows % 2 == 0 { 1e-5 } else { 1e-6 };
            let scale = [0.01f32, 1.0, 30.0][rows % 3];
            let x = rand_bf16(&mut rng, rows * hidden, scale);
            let res = rand_bf16(&mut rng, rows * hidden, scale);
            let w = rand_bf16(&mut rng, hidden, 2.0);
            let (x_d, w_d) = (up(s, &x), up(s, &w));
            let tag = format!("h{hidden} r{rows}");

            let mut want = nan(x.len());
            cpu::rmsnorm(&mut want, &x, &w, eps);
            let mut out = up(s, &nan(x.len()));
            dev.rmsnorm(&mut out, &x_d, &w_d, eps).unwrap();
            check(&format!("rmsnorm {tag}"), &down(s, &out), &want, 0.0);

            let (mut want_x, mut want_r) = (x.clone(), res.clone());
            cpu::fused_add_rmsnorm(&mut want_x, &mut want_r, &w, eps);
            // In place, and through views that are 16-byte aligned (offset 0) or not (offset 1).
            for offset in [0usize, 1] {
                let pad = |v: &[bf16]| [nan(offset), v.to_vec()].concat();
                let (mut xb, mut rb) = (up(s, &pad(&x)), up(s, &pad(&res)));
                dev.fused_add_rmsnorm(
                    &mut xb.slice_mut(offset..),
                    &mut rb.slice_mut(offset..),
                    &w_d,
                    eps,
                )
                .unwrap();
                let (gx, gr) = (down(s, &xb), down(s, &rb));
                check_exact(
                    &format!("fused residual {tag} +{offset}"),
                    &gr[offset..],
                    &want_r,
                );
                check(
                    &format!("fused out {tag} +{offset}"),
                    &gx[offset..],
                    &want_x,
                    0.0,
                );
                cases += 1;
            }
            cases += 1;
        }
    }
    eprintln!("rmsnorm/fused_add_rmsnorm: {cases} cases within bounds");
}

#[test]
fn silu_and_mul() {
    let Some(dev) = device("silu_and_mul") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(3);
    let mut cases = 0;
    for inter in [4864, 8960, 11008, 14336, 18944, 1000, 7, 8, 3] {
        for tokens in [1usize, 3, 64] {
            let mut gate_up = rand_bf16(&mut rng, tokens * 2 * inter, 8.0);
            // Saturating inputs: silu(-100) = -0, silu(-1000) = -0, silu(100) = 100.
            for (i, v) in [-100.0f32, -1000.0, 100.0, 20.0].into_iter().enumerate() {
                if i < inter {
                    gate_up[i] = bf16::from_f32(v);
                }
            }
            let mut want = nan(tokens * inter);
            cpu::silu_and_mul(&mut want, &gate_up, inter);
            let mut out = up(s, &nan(tokens * inter));
            dev.silu_and_mul(&mut out, &up(s, &gate_up), inter).unwrap();
            check(
                &format!("silu_and_mul i{inter} t{tokens}"),
                &down(s, &out),
                &want,
                0.0,
            );
            cases += 1;
        }
    }
    eprintln!("silu_and_mul: {cases} cases within bounds");
}

struct RopeCase {
    name: &'static str,
    shape: AttnShape,
    rot_dim: usize,
    theta: f64,
}

/// A mixed batch as the scheduler would send it: chunked prefills that start and end on and off page
/// boundaries, decodes at far positions, and padding rows; every request's pages drawn from a
/// shuffled pool. Returns (positions, slots, num_pages).
fn rope_batch(rng: &mut StdRng, page_size: usize, max_pos: usize) -> (Vec<i32>, Vec<i32>, usize) {
    let p = page_size;
    // (first position, tokens) per request: prefix already cached before `first`.
    let reqs = [
        (0, 1),
        (0, p - 1),
        (0, p),
        (0, p + 1),
        (p - 1, 2),
        (2 * p, 3 * p + 5),
        (5, 1),
    ];
    let pages_needed: usize = reqs
        .iter()
        .map(|&(a, n)| (a + n).div_ceil(p))
        .sum::<usize>()
        + 1;
    let num_pages = pages_needed + 3; // three pages no token maps to: must stay poisoned
    let mut pool: Vec<u32> = (0..num_pages as u32).collect();
    pool.shuffle(rng);
    let (mut positions, mut slots) = (vec![], vec![]);
    for (first, n) in reqs {
        let table: Vec<u32> = pool.drain(..(first + n).div_ceil(p)).collect();
        positions.extend((first..first + n).map(|q| q as i32));
        slots.extend(layout::slot_mapping(&table, p, first..first + n));
    }
    // A decode at the last position the rope covers (its earlier pages are not needed here).
    let far = max_pos - 1;
    positions.push(far as i32);
    slots.push((pool.pop().unwrap() as usize * p + far % p) as i32);
    // Padding rows of a graph batch: no store (slot -1, or past the cache).
    positions.extend([0, 7]);
    slots.extend([-1, (num_pages * p) as i32]);
    // Shuffle the token order too: the kernel must not assume sorted slots.
    let mut order: Vec<usize> = (0..positions.len()).collect();
    order.shuffle(rng);
    (
        order.iter().map(|&i| positions[i]).collect(),
        order.iter().map(|&i| slots[i]).collect(),
        num_pages,
    )
}

fn make_rope<T>(style: RopeStyle, rot_dim: usize, table: bool, max_pos: usize, t: T) -> Rope<T> {
    let freqs = if table {
        RopeFreqs::CosSin { table: t, max_pos }
    } else {
        RopeFreqs::InvFreq(t)
    };
    Rope {
        style,
        rot_dim,
        freqs,
    }
}

#[test]
fn rope_kv_write() {
    let Some(dev) = device("rope_kv_write") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(4);
    let shape = |num_heads, num_kv_heads, head_dim| AttnShape {
        num_heads,
        num_kv_heads,
        head_dim,
    };
    let cases = [
        RopeCase {
            name: "smollm2-135m",
            shape: shape(9, 3, 64),
            rot_dim: 64,
            theta: 1e5,
        },
        RopeCase {
            name: "qwen2.5-0.5b",
            shape: shape(14, 2, 64),
            rot_dim: 64,
            theta: 1e6,
        },
        RopeCase {
            name: "llama-3.1-8b",
            shape: shape(32, 8, 128),
            rot_dim: 128,
            theta: 5e5,
        },
        RopeCase {
            name: "partial-rotary",
            shape: shape(4, 2, 128),
            rot_dim: 64,
            theta: 1e4,
        },
        RopeCase {
            name: "odd-head-dim",
            shape: shape(3, 1, 40),
            rot_dim: 40,
            theta: 1e4,
        },
    ];
    let mut n = 0;
    for case in &cases {
        let sh = case.shape;
        let inv = rope::inv_freq(case.theta, case.rot_dim);
        for page_size in [1usize, 7, 16] {
            for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
                for use_table in [true, false] {
                    let max_pos = if use_table { 300 } else { 131_072 };
                    let (mut positions, slots, num_pages) =
                        rope_batch(&mut rng, page_size, max_pos);
                    if use_table {
                        // Clamped, not read out of bounds. (Their slots are valid: they store.)
                        positions[0] = -5;
                        positions[1] = max_pos as i32 + 10;
                    }
                    let tokens = positions.len();
                    let qkv = rand_bf16(&mut rng, tokens * sh.qkv_width(), 4.0);
                    let cache_len = num_pages * page_size * sh.kv_width();
                    let table = rope::cos_sin_table(&inv, if use_table { max_pos } else { 1 });
                    let freqs_host: &[f32] = if use_table { &table } else { &inv };
                    let mk = |t| make_rope(style, case.rot_dim, use_table, max_pos, t);
                    let mk_d = |t| make_rope(style, case.rot_dim, use_table, max_pos, t);

                    let (mut want_qkv, mut want_k, mut want_v) =
                        (qkv.clone(), nan(cache_len), nan(cache_len));
                    cpu::rope_kv_write(
                        &mut want_qkv,
                        &positions,
                        &slots,
                        &mut want_k,
                        &mut want_v,
                        sh,
                        &mk(freqs_host),
                    );

                    let freqs_d = up(s, freqs_host);
                    let (mut qkv_d, mut k_d, mut v_d) =
                        (up(s, &qkv), up(s, &nan(cache_len)), up(s, &nan(cache_len)));
                    let (pos_d, slots_d) = (up(s, &positions), up(s, &slots));
                    dev.rope_kv_write(
                        &mut qkv_d,
                        &pos_d,
                        &slots_d,
                        &mut k_d,
                        &mut v_d,
                        sh,
                        &mk_d(&freqs_d),
                    )
                    .unwrap();
                    let tag = format!(
                        "{} p{page_size} {style:?} {}",
                        case.name,
                        if use_table { "table" } else { "inv_freq" }
                    );
                    check(&format!("rope qkv {tag}"), &down(s, &qkv_d), &want_qkv, 4.0);
                    check(&format!("rope k_cache {tag}"), &down(s, &k_d), &want_k, 4.0);
                    check_exact(&format!("rope v_cache {tag}"), &down(s, &v_d), &want_v);
                    n += 1;
                }
            }
        }
    }
    eprintln!("rope_kv_write: {n} cases within bounds");
}

#[test]
fn shape_errors_are_errors() {
    let Some(dev) = device("shape_errors_are_errors") else {
        return;
    };
    let s = dev.stream();
    let x = up(s, &nan(12));
    let w = up(s, &nan(5));
    let mut out = up(s, &nan(12));
    let shape_err =
        |r: radixlm_cuda::Result<()>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    shape_err(dev.rmsnorm(&mut out, &x, &w, 1e-6)); // 12 is not [rows, 5]
    shape_err(dev.silu_and_mul(&mut out, &x, 5));
    shape_err(dev.embedding(&mut out, &x, &up(s, &[0i32; 5]), 4));
    let sh = AttnShape {
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 4,
    };
    let inv = up(s, &[1.0f32; 2]);
    let (mut k, mut v) = (up(s, &nan(8)), up(s, &nan(8)));
    let pos = up(s, &[0i32]);
    let odd = Rope {
        style: RopeStyle::Neox,
        rot_dim: 3,
        freqs: RopeFreqs::InvFreq(&inv),
    };
    shape_err(dev.rope_kv_write(&mut out, &pos, &pos, &mut k, &mut v, sh, &odd));
    let ok = Rope { rot_dim: 4, ..odd };
    let mut short_v = up(s, &nan(4));
    shape_err(dev.rope_kv_write(&mut out, &pos, &pos, &mut k, &mut short_v, sh, &ok));
    dev.rope_kv_write(&mut out, &pos, &pos, &mut k, &mut v, sh, &ok)
        .unwrap();
    dev.synchronize().unwrap();
}

/// Not a correctness test: per-launch times at decode shapes, for the next steps' planning.
#[test]
fn timings() {
    let Some(dev) = device("timings") else { return };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(5);
    let ev = || {
        dev.context()
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap()
    };
    // (name, hidden, inter, shape)
    let models = [
        (
            "qwen2.5-0.5b",
            896,
            4864,
            AttnShape {
                num_heads: 14,
                num_kv_heads: 2,
                head_dim: 64,
            },
        ),
        (
            "llama-3.1-8b",
            4096,
            14336,
            AttnShape {
                num_heads: 32,
                num_kv_heads: 8,
                head_dim: 128,
            },
        ),
    ];
    eprintln!(
        "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10} (us per launch, mean of 200)",
        "model", "batch", "embed", "add+norm", "silu*up", "rope+kv"
    );
    for (name, hidden, inter, sh) in models {
        for batch in [1usize, 64, 256] {
            let table = up(s, &rand_bf16(&mut rng, 4096 * hidden, 1.0));
            let ids = up(s, &(0..batch as i32).collect::<Vec<_>>());
            let mut x = up(s, &rand_bf16(&mut rng, batch * hidden, 1.0));
            let mut r = up(s, &rand_bf16(&mut rng, batch * hidden, 1.0));
            let w = up(s, &rand_bf16(&mut rng, hidden, 1.0));
            let gu = up(s, &rand_bf16(&mut rng, batch * 2 * inter, 1.0));
            let mut act = up(s, &nan(batch * inter));
            let mut qkv = up(s, &rand_bf16(&mut rng, batch * sh.qkv_width(), 1.0));
            let pos = up(s, &vec![1000i32; batch]);
            let slots = up(s, &(0..batch as i32).collect::<Vec<_>>());
            let (mut kc, mut vc) = (
                up(s, &nan(batch * sh.kv_width())),
                up(s, &nan(batch * sh.kv_width())),
            );
            let inv = up(s, &rope::inv_freq(1e6, sh.head_dim));
            let rope_p = Rope {
                style: RopeStyle::Neox,
                rot_dim: sh.head_dim,
                freqs: RopeFreqs::InvFreq(&inv),
            };
            let time = |f: &mut dyn FnMut()| {
                f();
                let (a, b) = (ev(), ev());
                a.record(s).unwrap();
                for _ in 0..200 {
                    f();
                }
                b.record(s).unwrap();
                b.synchronize().unwrap();
                a.elapsed_ms(&b).unwrap() * 1000.0 / 200.0
            };
            let t_embed = time(&mut || dev.embedding(&mut x, &table, &ids, hidden).unwrap());
            let t_norm = time(&mut || dev.fused_add_rmsnorm(&mut x, &mut r, &w, 1e-6).unwrap());
            let t_act = time(&mut || dev.silu_and_mul(&mut act, &gu, inter).unwrap());
            let t_rope = time(&mut || {
                dev.rope_kv_write(&mut qkv, &pos, &slots, &mut kc, &mut vc, sh, &rope_p)
                    .unwrap()
            });
            eprintln!(
                "{name:<14} {batch:>5} {t_embed:>10.2} {t_norm:>10.2} {t_act:>10.2} {t_rope:>10.2}"
            );
        }
    }
}

//! GPU sampling (kernels/sampling.cu) against its twin and the f64 reference
//! (radixlm_cuda::sampling::reference), and its timing.
//!
//! - greedy rows: the token equals the twin's exactly (argmax, first index on ties);
//! - sampled rows: the token is in the reference's kept set (tokens within tolerance of a cut
//!   allowed), and the draw is the one the row's uniform asks for: the token's interval of cumulative
//!   probability, in rank order, contains u (within 1e-4 plus any undecided mass). Equality with the
//!   twin (same uniform and rules, f64 sums) is reported, not asserted: with 10^5 kept tokens each
//!   holds ~1e-5 of the mass, near f32's resolution, so a few such rows legitimately differ;
//! - every logprob within 1e-3 of the reference log-softmax (f64) of the token drawn;
//! - distributions: 20,000 draws (1,000 rows x 20 steps) of one row against the reference, chi-square
//!   p-value >= 1e-6;
//! - determinism: a row's token and logprob (bits) do not depend on its position or the batch;
//! - outputs are poisoned (token -7, logprob NaN) before every launch.
//!
//! Row shapes cover the kernel's cases: model-like rows (a few strong tokens, masked ids, a NaN, a tie
//! at the max), flat rows (nuclei of most of the vocabulary), rows of one repeated logit (every cut
//! inside a run of ties, and the histogram's one-key warps), and rows whose candidate keys span more
//! than one histogram window (logits from +-2^-133 to +-2^61 at temperature 1e18, every token with
//! p > 0.01), which take the kernel's multi-window passes for the cut and the draw.

use super::attention::time_us;
use super::{device, down, up};
use cudarc::driver::{CudaSlice, CudaStream};
use radixlm_cuda::sampling::reference::{chi_square_p_value, distribution};
use radixlm_cuda::{bf16, cpu, Device, Error, SampleParams, SampleRow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const INF: f32 = f32::INFINITY;

struct DevParams {
    temperature: CudaSlice<f32>,
    top_k: CudaSlice<i32>,
    top_p: CudaSlice<f32>,
    min_p: CudaSlice<f32>,
    seed: CudaSlice<u64>,
    step: CudaSlice<u32>,
}

impl DevParams {
    fn new(s: &Arc<CudaStream>, rows: &[SampleRow]) -> Self {
        DevParams {
            temperature: up(s, &rows.iter().map(|r| r.temperature).collect::<Vec<_>>()),
            top_k: up(s, &rows.iter().map(|r| r.top_k).collect::<Vec<_>>()),
            top_p: up(s, &rows.iter().map(|r| r.top_p).collect::<Vec<_>>()),
            min_p: up(s, &rows.iter().map(|r| r.min_p).collect::<Vec<_>>()),
            seed: up(s, &rows.iter().map(|r| r.seed).collect::<Vec<_>>()),
            step: up(s, &rows.iter().map(|r| r.step).collect::<Vec<_>>()),
        }
    }
    fn view(&self) -> SampleParams<'_> {
        SampleParams {
            temperature: &self.temperature,
            top_k: &self.top_k,
            top_p: &self.top_p,
            min_p: &self.min_p,
            seed: &self.seed,
            step: &self.step,
        }
    }
}

/// One launch on poisoned outputs; returns (tokens, logprobs).
fn run(
    dev: &Device,
    logits: &CudaSlice<bf16>,
    vocab: usize,
    rows: &[SampleRow],
) -> (Vec<i32>, Vec<f32>) {
    let s = dev.stream();
    let params = DevParams::new(s, rows);
    let mut token = up(s, &vec![-7i32; rows.len()]);
    let mut logprob = up(s, &vec![f32::NAN; rows.len()]);
    dev.sample(&mut token, &mut logprob, logits, vocab, &params.view())
        .unwrap();
    (down(s, &token), down(s, &logprob))
}

fn normal(rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Rows of logits shaped like a model's: N(0, sigma^2) with a few strong tokens, masked (-inf) ids,
/// the odd NaN, and a tie at the maximum; `kind` picks the other shapes of the header.
pub(super) fn logits_row(rng: &mut StdRng, vocab: usize, kind: usize) -> Vec<bf16> {
    let mut l: Vec<f32> = match kind {
        // flat: the nucleus is most of the vocabulary
        1 => (0..vocab).map(|_| rng.random_range(-1.0..1.0)).collect(),
        // all equal: every cut falls inside one run of ties
        2 => vec![0.75; vocab],
        // +-2^e, e in [-133, 61]: about 50K keys between the extremes (sample at temperature 1e18)
        3 => (0..vocab)
            .map(|_| {
                let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
                sign * 2f32.powi(rng.random_range(-133..62)) * rng.random_range(1.0..2.0)
            })
            .collect(),
        _ => {
            let sigma = [1.0, 2.5, 4.0][rng.random_range(0..3)];
            (0..vocab).map(|_| (normal(rng) * sigma) as f32).collect()
        }
    };
    if kind == 0 {
        for _ in 0..5 {
            l[rng.random_range(0..vocab)] += rng.random_range(4.0..12.0);
        }
        for _ in 0..vocab / 100 {
            l[rng.random_range(0..vocab)] = -INF;
        }
        l[rng.random_range(0..vocab)] = f32::NAN;
        let max = l.iter().copied().fold(-INF, f32::max);
        l[rng.random_range(0..vocab)] = max;
    }
    l.into_iter().map(bf16::from_f32).collect()
}

/// Where a sampled token sits in the reference's kept tokens, in rank order (logit descending, ties
/// by index): the interval of cumulative probability it covers must contain the row's uniform, up to
/// `tol` (f32 sums in the kernel, plus the mass of undecided tokens the kernel may or may not keep).
/// Rank order as the kernel's: logit descending, -0 below +0, ties by index.
fn check_draw(what: &str, x: &[bf16], p: &SampleRow, probs: &[f64], undecided: usize, t: usize) {
    let l: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let mut kept: Vec<usize> = (0..x.len()).filter(|&i| probs[i] > 0.0).collect();
    kept.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    let Some(rank) = kept.iter().position(|&i| i == t) else {
        return; // an undecided token: allowed, no position to check
    };
    let before: f64 = kept[..rank].iter().map(|&i| probs[i]).sum();
    let after = before + probs[t];
    let top = probs.iter().copied().fold(0.0, f64::max);
    let tol = 1e-4 + undecided as f64 * top;
    let u = radixlm_cuda::sampling::uniform(p.seed, p.step) as f64;
    assert!(
        before - tol <= u && u <= after + tol,
        "{what}: token {t} covers [{before}, {after}) of the kept mass, u = {u}, {p:?}"
    );
}

fn check_rows(
    what: &str,
    logits: &[bf16],
    vocab: usize,
    rows: &[SampleRow],
    got: (&[i32], &[f32]),
) -> usize {
    let (mut want_t, mut want_lp) = (vec![0; rows.len()], vec![0.0; rows.len()]);
    cpu::sample(&mut want_t, &mut want_lp, logits, rows);
    let mut same = 0;
    for (r, p) in rows.iter().enumerate() {
        let (t, lp) = (got.0[r], got.1[r]);
        let x = &logits[r * vocab..(r + 1) * vocab];
        assert!(
            t >= 0 && (t as usize) < vocab,
            "{what} row {r}: token {t} (poison left?)"
        );
        let reference = distribution(x, p);
        if p.is_greedy() {
            assert_eq!(t, want_t[r], "{what} row {r}: greedy {p:?}");
        } else {
            assert!(
                reference.allowed(t as usize),
                "{what} row {r}: token {t} not allowed, {p:?}"
            );
            let tag = format!("{what} row {r}");
            check_draw(
                &tag,
                x,
                p,
                &reference.probs,
                reference.undecided.len(),
                t as usize,
            );
        }
        let want = reference.logprobs[t as usize];
        assert!(
            (lp as f64 - want).abs() <= 1e-3 || lp as f64 == want,
            "{what} row {r}: logprob {lp}, want {want}"
        );
        same += (t == want_t[r]) as usize;
    }
    same
}

#[test]
fn sampling_greedy_matches_twin() {
    let Some(dev) = device("sampling_greedy_matches_twin") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(21);
    for vocab in [151_936usize, 32_000, 1001] {
        for n in [1usize, 2, 37, 300] {
            let mut logits: Vec<bf16> = (0..n)
                .flat_map(|_| logits_row(&mut rng, vocab, 0))
                .collect();
            if n > 1 {
                // An all-masked row and a +inf row.
                logits[..vocab].fill(bf16::NEG_INFINITY);
                logits[vocab + 7] = bf16::INFINITY;
                logits[vocab + 9] = bf16::INFINITY;
            }
            let rows: Vec<SampleRow> = (0..n)
                .map(|r| match r % 3 {
                    0 => SampleRow::greedy(),
                    1 => SampleRow {
                        top_k: 1,
                        ..SampleRow::sampled(0.8)
                    },
                    _ => SampleRow {
                        top_p: 0.5,
                        ..SampleRow::sampled(1e-7)
                    },
                })
                .collect();
            let (t, lp) = run(&dev, &up(s, &logits), vocab, &rows);
            check_rows(
                &format!("greedy v{vocab} r{n}"),
                &logits,
                vocab,
                &rows,
                (&t, &lp),
            );
            if n > 1 {
                assert_eq!((t[0], lp[0]), (0, -INF));
                assert_eq!((t[1], lp[1]), (7, 0.0));
            }
        }
    }
    eprintln!("greedy: tokens equal to the twin's");
}

/// Parameters across the range the engine sends, on every shape of row.
fn mixed_rows(rng: &mut StdRng, n: usize, vocab: usize) -> (Vec<bf16>, Vec<SampleRow>) {
    let (mut logits, mut rows) = (Vec::new(), Vec::new());
    for r in 0..n {
        let kind = [0, 0, 0, 1, 2, 0, 3][r % 7];
        logits.extend(logits_row(rng, vocab, kind));
        let p = match kind {
            1 => SampleRow {
                top_p: [0.95, 0.5, 1.0][r % 3],
                top_k: [0, 20_000, 0, 3000][r % 4],
                ..SampleRow::sampled(1.5)
            },
            2 => SampleRow {
                top_k: [50_000, 0, 10][r % 3],
                top_p: [1.0, 0.5, 0.9][r % 3],
                ..SampleRow::sampled(1.0)
            },
            3 => SampleRow {
                top_k: [0, 20_000, 0, 100][r % 4],
                top_p: [1.0, 1.0, 0.6][r % 3],
                min_p: [0.0, 0.5][r % 2],
                ..SampleRow::sampled(1e18)
            },
            _ => SampleRow {
                temperature: [0.3, 0.7, 1.0, 1.3, 2.0][r % 5],
                top_k: [0, 20, 50, 1000, 5000, vocab as i32][r % 6],
                top_p: [1.0, 0.9, 0.95, 0.5, 1e-6][r % 5],
                min_p: [0.0, 0.0, 0.05, 0.2][r % 4],
                ..SampleRow::greedy()
            },
        };
        rows.push(SampleRow {
            seed: rng.random(),
            step: rng.random_range(0..10_000),
            ..p
        });
    }
    (logits, rows)
}

#[test]
fn sampling_sampled_rows() {
    let Some(dev) = device("sampling_sampled_rows") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(22);
    for vocab in [151_936usize, 32_000, 5003] {
        for n in [1usize, 5, 300] {
            let (logits, rows) = mixed_rows(&mut rng, n, vocab);
            let (t, lp) = run(&dev, &up(s, &logits), vocab, &rows);
            let same = check_rows(
                &format!("sampled v{vocab} r{n}"),
                &logits,
                vocab,
                &rows,
                (&t, &lp),
            );
            eprintln!("sampled v{vocab} r{n}: all allowed, {same}/{n} equal to the twin");
        }
    }
}

/// 20,000 draws of one row (1,000 rows x 20 steps), chi-square against the reference.
fn distribution_check(dev: &Device, what: &str, row: &[bf16], p: SampleRow) {
    let s = dev.stream();
    let vocab = row.len();
    let reference = distribution(row, &p);
    assert!(
        reference.undecided.is_empty(),
        "{what}: a cut within tolerance"
    );
    let logits = up(s, &row.repeat(1000));
    let mut counts = vec![0u64; vocab];
    for step in 0..20u32 {
        let rows: Vec<SampleRow> = (0..1000u64)
            .map(|i| SampleRow {
                seed: i * 0x9E37 + 5,
                step: step * 31 + 1,
                ..p
            })
            .collect();
        let (t, _) = run(dev, &logits, vocab, &rows);
        for &x in &t {
            counts[x as usize] += 1;
        }
    }
    let pv = chi_square_p_value(&counts, &reference.probs);
    let kept = reference.probs.iter().filter(|&&q| q > 0.0).count();
    eprintln!("{what}: {kept} kept, chi-square p = {pv:.3e}");
    assert!(pv >= 1e-6, "{what}: p-value {pv:e}");
}

#[test]
fn sampling_distribution() {
    let Some(dev) = device("sampling_distribution") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(23);
    let row: Vec<bf16> = (0..1000)
        .map(|_| bf16::from_f32((normal(&mut rng) * 2.0) as f32))
        .collect();
    let p = |t, top_k, top_p, min_p| SampleRow {
        top_k,
        top_p,
        min_p,
        ..SampleRow::sampled(t)
    };
    distribution_check(&dev, "v1000 temperature", &row, p(1.0, 0, 1.0, 0.0));
    distribution_check(&dev, "v1000 top-k 50", &row, p(0.8, 50, 1.0, 0.0));
    distribution_check(&dev, "v1000 top-p 0.9", &row, p(0.7, 0, 0.9, 0.0));
    distribution_check(&dev, "v1000 joint", &row, p(1.2, 100, 0.95, 0.02));
    distribution_check(&dev, "v1000 min-p", &row, p(1.0, 0, 1.0, 0.1));
    // 6000 kept of 8192, many ties.
    let flat: Vec<bf16> = (0..8192)
        .map(|_| bf16::from_f32(rng.random_range(-0.5..0.5)))
        .collect();
    distribution_check(&dev, "v8192 top-k 6000", &flat, p(1.0, 6000, 1.0, 0.0));
    // ... and a cut inside a run of ties: 5000 of 8192 equal logits.
    let equal = vec![bf16::from_f32(1.0); 8192];
    distribution_check(
        &dev,
        "v8192 ties top-k 5000",
        &equal,
        p(1.0, 5000, 1.0, 0.0),
    );
    // Candidate keys spanning two histogram windows, for the cut and for the draw.
    let wide = logits_row(&mut rng, 8192, 3);
    distribution_check(&dev, "v8192 wide temperature", &wide, p(1e18, 0, 1.0, 0.0));
    distribution_check(
        &dev,
        "v8192 wide top-k 6000",
        &wide,
        p(1e18, 6000, 1.0, 0.0),
    );
}

#[test]
fn sampling_is_deterministic_per_row() {
    let Some(dev) = device("sampling_is_deterministic_per_row") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(24);
    let vocab = 32_000;
    let (logits, rows) = mixed_rows(&mut rng, 40, vocab);
    let (t, lp) = run(&dev, &up(s, &logits), vocab, &rows);
    assert_eq!((t.clone(), bits(&lp)), {
        let (t2, lp2) = run(&dev, &up(s, &logits), vocab, &rows);
        (t2, bits(&lp2))
    });
    // The same rows reversed and inside a larger batch of other rows: each row's result unchanged.
    let (other_logits, other_rows) = mixed_rows(&mut rng, 25, vocab);
    let mut order: Vec<usize> = (0..rows.len()).rev().collect();
    order.insert(0, usize::MAX);
    order.insert(17, usize::MAX);
    let (mut big_logits, mut big_rows) = (Vec::new(), Vec::new());
    for (j, &i) in order.iter().enumerate() {
        if i == usize::MAX {
            big_logits.extend_from_slice(&other_logits[j * vocab..(j + 1) * vocab]);
            big_rows.push(other_rows[j]);
        } else {
            big_logits.extend_from_slice(&logits[i * vocab..(i + 1) * vocab]);
            big_rows.push(rows[i]);
        }
    }
    let (t3, lp3) = run(&dev, &up(s, &big_logits), vocab, &big_rows);
    for (j, &i) in order.iter().enumerate() {
        if i != usize::MAX {
            assert_eq!(
                (t3[j], lp3[j].to_bits()),
                (t[i], lp[i].to_bits()),
                "row {i} at {j}"
            );
        }
    }
    // Alone, each row also gives the same.
    for i in [0, 3, 4, 39] {
        let (t1, lp1) = run(
            &dev,
            &up(s, &logits[i * vocab..(i + 1) * vocab]),
            vocab,
            &rows[i..i + 1],
        );
        assert_eq!(
            (t1[0], lp1[0].to_bits()),
            (t[i], lp[i].to_bits()),
            "row {i} alone"
        );
    }
    eprintln!("sampling: results independent of batch position and size");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn sampling_shape_errors() {
    let Some(dev) = device("sampling_shape_errors") else {
        return;
    };
    let s = dev.stream();
    let rows = vec![SampleRow::greedy(); 3];
    let params = DevParams::new(s, &rows);
    let logits = up(s, &[bf16::ZERO; 30]);
    let (mut t, mut lp) = (up(s, &[0i32; 3]), up(s, &[0f32; 3]));
    let err = |r: radixlm_cuda::Result<()>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    err(dev.sample(&mut t, &mut lp, &logits, 11, &params.view()));
    err(dev.sample(&mut t, &mut lp, &logits, 0, &params.view()));
    let short = DevParams::new(s, &rows[..2]);
    err(dev.sample(&mut t, &mut lp, &logits, 10, &short.view()));
    let mut lp2 = up(s, &[0f32; 2]);
    err(dev.sample(&mut t, &mut lp2, &logits, 10, &params.view()));
    dev.sample(&mut t, &mut lp, &logits, 10, &params.view())
        .unwrap();
    dev.synchronize().unwrap();
}

/// Not a correctness test: per-launch time at 256 rows x Qwen's vocabulary.
#[test]
fn sampling_timing() {
    let Some(dev) = device("sampling_timing") else {
        return;
    };
    let s = dev.stream();
    let mut rng = StdRng::seed_from_u64(25);
    let (rows, vocab) = (256usize, 151_936usize);
    let model: Vec<bf16> = (0..rows)
        .flat_map(|_| logits_row(&mut rng, vocab, 0))
        .collect();
    let flat: Vec<bf16> = (0..rows)
        .flat_map(|_| logits_row(&mut rng, vocab, 1))
        .collect();
    let (model, flat) = (up(s, &model), up(s, &flat));
    let mut token = up(s, &vec![0i32; rows]);
    let mut logprob = up(s, &vec![0f32; rows]);
    let cases = [
        ("greedy", SampleRow::greedy(), &model),
        ("temperature 0.7", SampleRow::sampled(0.7), &model),
        (
            "top-k 50 top-p 0.9 T 0.7",
            SampleRow {
                top_k: 50,
                top_p: 0.9,
                ..SampleRow::sampled(0.7)
            },
            &model,
        ),
        (
            "top-p 0.95 T 1",
            SampleRow {
                top_p: 0.95,
                ..SampleRow::sampled(1.0)
            },
            &model,
        ),
        (
            "min-p 0.05 T 1",
            SampleRow {
                min_p: 0.05,
                ..SampleRow::sampled(1.0)
            },
            &model,
        ),
        (
            "flat top-p 0.95",
            SampleRow {
                top_p: 0.95,
                ..SampleRow::sampled(1.0)
            },
            &flat,
        ),
    ];
    eprintln!("sampling, vocab {vocab}, us per launch at {rows} rows and at 1 row:");
    for (name, p, logits) in cases {
        let params = DevParams::new(s, &vec![p; rows]);
        let us = time_us(&dev, &mut || {
            dev.sample(&mut token, &mut logprob, logits, vocab, &params.view())
                .unwrap()
        });
        // The same at batch 1: one block, the latency floor of a decode step.
        let one = DevParams::new(s, &[p]);
        let us1 = time_us(&dev, &mut || {
            dev.sample(
                &mut token.slice_mut(0..1),
                &mut logprob.slice_mut(0..1),
                &logits.slice(0..vocab),
                vocab,
                &one.view(),
            )
            .unwrap()
        });
        eprintln!("  {name:<34} {us:>8.1} {us1:>8.1}");
    }
}

//! Sampling on the GPU (kernels/sampling.cu): one token and its logprob per row of logits, with the
//! engine's temperature / top-k / top-p / min-p semantics; the kernel's header defines them exactly.
//!
//! The launch is graph-friendly: parameters are device arrays (fixed buffers the host refills per
//! step), the random number of a row is a pure function of its `(seed, step)` read on the device, and
//! the launch allocates nothing and never synchronises.
//!
//! Also here, for the tests: [`SampleRow`] (one row's parameters on the host), [`uniform`] (the
//! kernel's random number), and [`reference`], the exact truncated distribution in f64 straight from
//! the definitions plus a chi-square test.

use crate::ops::{cfg, to_i32};
use crate::{Device, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use half::bf16;

/// Threads per row (SAMPLE_THREADS in kernels/sampling.cu).
const THREADS: u32 = 1024;

/// Keys per histogram window (kernels/sampling.cu): one window holds every key with p > 0 for logits
/// within +-2^8 at temperatures up to ~2 (~36K keys); wider spans cost one more pass per window.
/// A multiple of [`THREADS`].
const BINS: usize = 40 * 1024;

/// Dynamic shared memory of the kernel: the histogram, u32 per key (160 KiB: one block per SM).
pub(crate) const SMEM_BYTES: usize = BINS * 4;

/// Temperatures below this are greedy (the engine's `SamplingParams::is_greedy`), as is top_k 1.
pub const GREEDY_BELOW: f32 = 1e-6;

/// Per-row parameters of [`Device::sample`], each a device array of `rows` elements (a `CudaSlice` or
/// a view of a larger fixed buffer).
pub struct SampleParams<'a> {
    /// Greedy below [`GREEDY_BELOW`] (or NaN).
    pub temperature: &'a dyn DevicePtr<f32>,
    /// <= 0 or >= vocab: no limit; 1: greedy.
    pub top_k: &'a dyn DevicePtr<i32>,
    /// >= 1: off.
    pub top_p: &'a dyn DevicePtr<f32>,
    /// <= 0: off; relative to the most likely token.
    pub min_p: &'a dyn DevicePtr<f32>,
    pub seed: &'a dyn DevicePtr<u64>,
    /// The row's uniform is [`uniform`]`(seed, step)`: advance it every step.
    pub step: &'a dyn DevicePtr<u32>,
}

/// One row's parameters on the host (tests, the CPU twin).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRow {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
    pub step: u32,
}

impl SampleRow {
    pub fn greedy() -> Self {
        SampleRow {
            temperature: 0.0,
            ..Self::sampled(1.0)
        }
    }
    /// Temperature only: no top-k, top-p or min-p.
    pub fn sampled(temperature: f32) -> Self {
        SampleRow {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
            step: 0,
        }
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature < GREEDY_BELOW || self.top_k == 1
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The kernel's random number for a row: 24 bits of `mix(mix(seed) ^ step)`, in [0, 1).
pub fn uniform(seed: u64, step: u32) -> f32 {
    (splitmix64(splitmix64(seed) ^ step as u64) >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

impl Device {
    /// `token[r]`, `logprob[r]` sampled from `logits[r, ..vocab]` (kernels/sampling.cu).
    /// `logits`: [rows, vocab] with rows = `token.len()`; `logprob` and every parameter array: [rows].
    pub fn sample(
        &self,
        token: &mut impl DevicePtrMut<i32>,
        logprob: &mut impl DevicePtrMut<f32>,
        logits: &impl DevicePtr<bf16>,
        vocab: usize,
        params: &SampleParams<'_>,
    ) -> Result<()> {
        const OP: &str = "sample";
        let rows = token.len();
        ensure!(vocab > 0, OP, "vocab is 0");
        let vocab_i = to_i32(OP, "vocab", vocab)?;
        ensure!(
            logits.len() == rows * vocab,
            OP,
            "logits has {}, want {rows} x {vocab}",
            logits.len()
        );
        ensure!(
            logprob.len() == rows,
            OP,
            "logprob has {}, want {rows}",
            logprob.len()
        );
        let lens = [
            ("temperature", params.temperature.len()),
            ("top_k", params.top_k.len()),
            ("top_p", params.top_p.len()),
            ("min_p", params.min_p.len()),
            ("seed", params.seed.len()),
            ("step", params.step.len()),
        ];
        for (name, len) in lens {
            ensure!(len == rows, OP, "{name} has {len}, want {rows}");
        }
        if rows == 0 {
            return Ok(());
        }
        let grid = to_i32(OP, "rows", rows)? as u32;
        let s = &self.stream;
        let (t, _t) = token.device_ptr_mut(s);
        let (lp, _lp) = logprob.device_ptr_mut(s);
        let (x, _x) = logits.device_ptr(s);
        let (temp, _temp) = params.temperature.device_ptr(s);
        let (k, _k) = params.top_k.device_ptr(s);
        let (p, _p) = params.top_p.device_ptr(s);
        let (mp, _mp) = params.min_p.device_ptr(s);
        let (seed, _seed) = params.seed.device_ptr(s);
        let (step, _step) = params.step.device_ptr(s);
        let vec = (vocab.is_multiple_of(8) && x % 16 == 0) as i32;
        let bins = BINS as i32;
        let mut b = s.launch_builder(&self.k.sample);
        b.arg(&t)
            .arg(&lp)
            .arg(&x)
            .arg(&vocab_i)
            .arg(&vec)
            .arg(&bins);
        b.arg(&temp).arg(&k).arg(&p).arg(&mp).arg(&seed).arg(&step);
        // SAFETY: the arguments mirror sample_bf16's signature; every array was checked to hold `rows`
        // (logits rows x vocab) elements and the kernel reads row blockIdx.x < rows only.
        unsafe { b.launch(cfg((grid, 1), THREADS, SMEM_BYTES as u32)) }?;
        Ok(())
    }
}

/// The exact sampling distribution from the definitions, in f64, for the tests; independent of the
/// kernel's algorithm (a full sort, probabilities normalised from the start).
pub mod reference {
    use super::SampleRow;
    use half::bf16;

    /// Decisions closer than this to a cut are "undecided": f32 sums in the kernel may fall either
    /// side. top-p: in normalised mass; min-p: relative to min_p.
    pub const TOL_P: f64 = 1e-4;
    pub const TOL_MIN_P: f64 = 1e-5;

    pub struct Reference {
        /// Sampling probability of each token (renormalised over the surely kept tokens).
        pub probs: Vec<f64>,
        /// Tokens whose inclusion is within tolerance of a cut: allowed, left out of `probs`.
        pub undecided: Vec<u32>,
        /// log-softmax of each token at the temperature the engine reports (1 for greedy rows).
        pub logprobs: Vec<f64>,
    }

    impl Reference {
        pub fn allowed(&self, token: usize) -> bool {
            self.probs.get(token).is_some_and(|&p| p > 0.0)
                || self.undecided.contains(&(token as u32))
        }
    }

    pub fn distribution(row: &[bf16], p: &SampleRow) -> Reference {
        let l: Vec<f64> = row.iter().map(|v| v.to_f64()).collect();
        let valid = |x: f64| x > f64::NEG_INFINITY; // NaN fails too
        let max = l
            .iter()
            .copied()
            .filter(|&x| valid(x))
            .fold(f64::NEG_INFINITY, f64::max);
        let first_max = l.iter().position(|&x| x == max).unwrap_or(0);
        let n = l.len();
        let one_hot = |i: usize| (0..n).map(|j| (j == i) as u8 as f64).collect::<Vec<_>>();
        if !max.is_finite() {
            let lp = if max > 0.0 { 0.0 } else { f64::NEG_INFINITY };
            return Reference {
                probs: one_hot(if max > 0.0 { first_max } else { 0 }),
                undecided: vec![],
                logprobs: vec![lp; n],
            };
        }
        let t = if p.is_greedy() {
            1.0
        } else {
            p.temperature as f64
        };
        let q: Vec<f64> = l
            .iter()
            .map(|&x| if valid(x) { ((x - max) / t).exp() } else { 0.0 })
            .collect();
        let z: f64 = q.iter().sum();
        let logprobs = l.iter().map(|&x| (x - max) / t - z.ln()).collect();
        if p.is_greedy() {
            return Reference {
                probs: one_hot(first_max),
                undecided: vec![],
                logprobs,
            };
        }
        let mut order: Vec<usize> = (0..n).filter(|&i| valid(l[i])).collect();
        // Logit descending (-0 below +0, as the kernel), equal logits by lower index.
        order.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        let k = if p.top_k <= 0 || p.top_k as usize >= n {
            usize::MAX
        } else {
            p.top_k as usize
        };
        let top_p = if p.top_p < 1.0 {
            p.top_p as f64
        } else {
            f64::INFINITY
        };
        let min_p = if p.min_p > 0.0 {
            (p.min_p as f64).min(1.0)
        } else {
            0.0
        };
        let (mut sure, mut maybe) = (vec![false; n], vec![false; n]);
        let mut above = 0.0;
        for (r, &i) in order.iter().enumerate() {
            let frac = above / z;
            let (k_ok, first) = (r < k, r == 0);
            let p_sure = first || frac < top_p - TOL_P;
            let p_maybe = first || frac <= top_p + TOL_P;
            let (m_sure, m_maybe) = if min_p > 0.0 {
                (
                    q[i] > min_p * (1.0 + TOL_MIN_P),
                    q[i] >= min_p * (1.0 - TOL_MIN_P),
                )
            } else {
                (true, true)
            };
            sure[i] = k_ok && p_sure && m_sure;
            maybe[i] = k_ok && p_maybe && m_maybe && q[i] > 0.0;
            above += q[i];
        }
        let kept: f64 = (0..n).filter(|&i| sure[i]).map(|i| q[i]).sum();
        Reference {
            probs: (0..n)
                .map(|i| if sure[i] { q[i] / kept } else { 0.0 })
                .collect(),
            undecided: (0..n)
                .filter(|&i| maybe[i] && !sure[i])
                .map(|i| i as u32)
                .collect(),
            logprobs,
        }
    }

    /// p-value of a chi-square goodness-of-fit test of `counts` (draws per token) against `probs`.
    /// Cells have expected count >= 20: each token that reaches it alone, the rest grouped in
    /// descending-probability order. Panics if a token of probability 0 was drawn.
    pub fn chi_square_p_value(counts: &[u64], probs: &[f64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let n = total as f64;
        for (i, (&c, &q)) in counts.iter().zip(probs).enumerate() {
            assert!(
                q > 0.0 || c == 0,
                "token {i} of probability 0 drawn {c} times"
            );
        }
        let mut idx: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] > 0.0).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let (mut cells, mut e, mut o) = (Vec::new(), 0.0, 0.0);
        for i in idx {
            e += probs[i] * n;
            o += counts[i] as f64;
            if e >= 20.0 {
                cells.push((o, e));
                (e, o) = (0.0, 0.0);
            }
        }
        if e > 0.0 {
            // The remainder joins the last cell.
            match cells.last_mut() {
                Some(c) => (c.0, c.1) = (c.0 + o, c.1 + e),
                None => cells.push((o, e)),
            }
        }
        if cells.len() < 2 {
            return 1.0;
        }
        let x: f64 = cells.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
        gamma_q((cells.len() - 1) as f64 / 2.0, x / 2.0)
    }

    /// Regularised upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above).
    fn gamma_q(a: f64, x: f64) -> f64 {
        if x <= 0.0 {
            return 1.0;
        }
        let lg = ln_gamma(a);
        if x < a + 1.0 {
            let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
            for _ in 0..10_000 {
                ap += 1.0;
                term *= x / ap;
                sum += term;
                if term < sum * 1e-16 {
                    break;
                }
            }
            1.0 - sum * (-x + a * x.ln() - lg).exp()
        } else {
            // Lentz's method.
            let tiny = 1e-300;
            let mut b = x + 1.0 - a;
            let (mut c, mut d) = (1.0 / tiny, 1.0 / b);
            let mut h = d;
            for i in 1..10_000 {
                let an = -(i as f64) * (i as f64 - a);
                b += 2.0;
                d = an * d + b;
                d = if d.abs() < tiny { tiny } else { d };
                c = b + an / c;
                c = if c.abs() < tiny { tiny } else { c };
                d = 1.0 / d;
                let del = d * c;
                h *= del;
                if (del - 1.0).abs() < 1e-16 {
                    break;
                }
            }
            (-x + a * x.ln() - lg).exp() * h
        }
    }

    /// Lanczos approximation (g = 7, 9 terms), |error| < 1e-13 for a > 0.
    fn ln_gamma(a: f64) -> f64 {
        const C: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let x = a - 1.0;
        let t = x + 7.5;
        let s = C[1..]
            .iter()
            .enumerate()
            .fold(C[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn gamma_q_matches_known_values() {
            // chi-square survival: P(X > x) for dof k is Q(k/2, x/2).
            let sf = |x: f64, k: f64| gamma_q(k / 2.0, x / 2.0);
            assert!((sf(3.841_458_8, 1.0) - 0.05).abs() < 1e-6);
            assert!((sf(18.307_038, 10.0) - 0.05).abs() < 1e-6);
            assert!((sf(23.209_251, 10.0) - 0.01).abs() < 1e-6);
            // Values from mpmath's regularised gammainc.
            assert!((sf(1_118.948_4, 999.0) / 0.004_691_322_766 - 1.0).abs() < 1e-6);
            assert!((sf(100.0, 50.0) / 3.454_931_383e-5 - 1.0).abs() < 1e-6);
            assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        }

        #[test]
        fn chi_square_accepts_exact_counts_and_rejects_skew() {
            let probs = [0.5, 0.25, 0.125, 0.125];
            assert!(chi_square_p_value(&[5000, 2500, 1250, 1250], &probs) > 0.99);
            assert!(chi_square_p_value(&[5300, 2400, 1150, 1150], &probs) < 1e-6);
        }
    }
}

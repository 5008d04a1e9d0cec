//! Turns one row of logits into the next token for one request, in SGLang's order:
//!
//! 1. additive penalties: frequency and presence (generated tokens only), and the min-new-tokens ban
//!    (stop ids set to -inf until `minNewTokens` tokens exist);
//! 2. the scaling penalty: repetition (prompt and generated tokens; positive logits divided, negative
//!    ones multiplied);
//! 3. logit bias (added last, as SGLang's `apply_logits_bias`);
//! 4. greedy argmax (temperature < 1e-6 or topK 1), or temperature -> softmax -> top-k and top-p applied
//!    jointly to that distribution (a token stays if it is among the k most likely and the mass of the
//!    tokens ranked above it is <= topP) -> min-p (drop p < minP * max p) -> renormalise -> draw.
//!
//! Each request owns its RNG, seeded from its `seed`, and draws exactly one uniform per non-greedy step,
//! so its samples do not depend on what else is in the batch.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::params::SamplingParams;

pub struct RequestSampler {
    rng: StdRng,
    /// Counts of generated tokens (frequency/presence penalties use outputs only, as SGLang).
    output_counts: HashMap<u32, u32>,
    /// Tokens seen in prompt or output (repetition penalty).
    seen: HashMap<u32, ()>,
}

impl RequestSampler {
    pub fn new(seed: u64, prompt: &[u32]) -> Self {
        RequestSampler {
            rng: StdRng::seed_from_u64(seed),
            output_counts: HashMap::new(),
            seen: prompt.iter().map(|&t| (t, ())).collect(),
        }
    }

    pub fn observe(&mut self, token: u32) {
        *self.output_counts.entry(token).or_insert(0) += 1;
        self.seen.insert(token, ());
    }

    /// Applies penalties, the ban and logit bias to `logits` in place, then picks the next token.
    /// `banned` are ids that may not be drawn now (stop ids before `minNewTokens`).
    pub fn sample(&mut self, logits: &mut [f32], p: &SamplingParams, banned: &[u32]) -> u32 {
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&id, &c) in &self.output_counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
                }
            }
        }
        for &id in banned {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if p.repetition_penalty != 1.0 {
            for &id in self.seen.keys() {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        for (&id, &b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += b;
            }
        }
        if p.is_greedy() {
            return argmax(logits);
        }
        let u: f32 = self.rng.random();
        sample_filtered(logits, p.temperature, p.top_k, p.top_p, p.min_p, u)
    }
}

/// First index of the maximum (torch.argmax's tie rule). NaN never wins.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_x = f32::NEG_INFINITY;
    for (i, &x) in xs.iter().enumerate() {
        if x > best_x {
            best = i;
            best_x = x;
        }
    }
    best as u32
}

/// Temperature softmax over `logits`, restricted by top-k, top-p and min-p, then the token at `u`
/// (uniform in [0, 1)) of the renormalised distribution.
pub fn sample_filtered(logits: &[f32], temperature: f32, top_k: Option<usize>, top_p: f32, min_p: f32, u: f32) -> u32 {
    Candidates::new(logits, temperature, top_k, top_p, min_p).draw(u)
}

/// The tokens a non-greedy step may draw, with their cumulative unnormalised weights: the filtering
/// half of [`sample_filtered`] (O(vocab) per row: exp, then quickselects for top-k and top-p), apart
/// from the draw (a binary search), so one row can be drawn from many times (distribution tests).
#[derive(Debug, Clone)]
pub struct Candidates {
    /// (cumulative weight up to and including this token, token id), in draw order.
    cum: Vec<(f32, u32)>,
}

impl Candidates {
    pub fn new(logits: &[f32], temperature: f32, top_k: Option<usize>, top_p: f32, min_p: f32) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            // A +inf logit wins outright; with every logit -inf or NaN nothing is drawable. Either way
            // the argmax rule decides.
            return Candidates { cum: vec![(1.0, argmax(logits))] };
        }
        let inv_t = 1.0 / temperature;
        // Weights relative to the most likely token (whose weight is exp(0) = 1).
        let mut probs: Vec<(f32, u32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (((l - max) * inv_t).exp(), i as u32))
            .filter(|&(p, _)| p > 0.0)
            .collect();
        // Top-k and top-p jointly (SGLang): top-p compares against the mass of the whole distribution.
        let total: f32 = if top_p < 1.0 { probs.iter().map(|x| x.0).sum() } else { 0.0 };
        let k = top_k.unwrap_or(usize::MAX).min(probs.len());
        if k < probs.len() {
            probs.select_nth_unstable_by(k - 1, rank_order);
            probs.truncate(k);
        }
        if top_p < 1.0 {
            let kept = nucleus(&mut probs, top_p * total);
            probs.truncate(kept);
        }
        if min_p > 0.0 {
            // Relative to the most likely token, whose weight is 1 (SGLang: probs_sort[:, 0] * min_p).
            probs.retain(|&(p, _)| p >= min_p);
        }
        let mut acc = 0.0f32;
        for x in probs.iter_mut() {
            acc += x.0;
            x.0 = acc;
        }
        Candidates { cum: probs }
    }

    /// The token at `u` in [0, 1): the first whose cumulative weight exceeds `u` times the total.
    pub fn draw(&self, u: f32) -> u32 {
        let mass = self.cum.last().map_or(0.0, |x| x.0);
        let target = u * mass;
        let i = self.cum.partition_point(|x| x.0 <= target);
        self.cum.get(i).or(self.cum.last()).map_or(0, |x| x.1)
    }
}

/// Descending probability, ties broken by the lower id: the rank order of every cut.
fn rank_order(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Moves the top-p nucleus of `probs` to its front and returns its length: every token whose
/// higher-ranked weight is <= `mass` (SGLang drops a token when `probs_sum - probs_sort > top_p`), so
/// the most likely token always stays. A quickselect on the cut, expected O(n); only the last few
/// candidates are sorted.
fn nucleus(probs: &mut [(f32, u32)], mass: f32) -> usize {
    // Invariant: probs[..lo] hold the `lo` highest ranks (weight `above`), all kept, and rank `lo` is
    // kept too; the last kept rank lies in [lo, hi).
    let (mut lo, mut hi, mut above) = (0usize, probs.len(), 0.0f32);
    while hi - lo > 32 {
        let mid = lo + (hi - lo) / 2;
        probs[lo..hi].select_nth_unstable_by(mid - lo, rank_order);
        let upper = above + probs[lo..mid].iter().map(|x| x.0).sum::<f32>();
        if upper > mass {
            hi = mid;
        } else {
            above = upper;
            lo = mid;
        }
    }
    probs[lo..hi].sort_unstable_by(rank_order);
    let mut kept = lo;
    for x in &probs[lo..hi] {
        if kept > 0 && above > mass {
            break;
        }
        above += x.0;
        kept += 1;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_max() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
    }

    #[test]
    fn filters_never_return_excluded_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        for i in 0..200 {
            let u = i as f32 / 200.0;
            let t = sample_filtered(&logits, 1.0, Some(5), 1.0, 0.0, u) as usize;
            assert!(order[..5].contains(&t), "top-k 5 gave {t}");
            let t = sample_filtered(&logits, 0.7, None, 1.0, 0.5, u) as usize;
            assert!(logits[t] >= 10.0 + 0.7 * 0.5f32.ln() - 1e-4, "min-p gave logit {}", logits[t]);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probs ~ [0.5, 0.25, 0.125, ...]: top_p 0.6 keeps the first two tokens only.
        let logits: Vec<f32> = (0..20).map(|i| -(i as f32) * std::f32::consts::LN_2).collect();
        for i in 0..100 {
            let t = sample_filtered(&logits, 1.0, None, 0.6, 0.0, i as f32 / 100.0);
            assert!(t < 2, "got {t}");
        }
        // Sampling is proportional within the nucleus: u < 2/3 -> token 0.
        assert_eq!(sample_filtered(&logits, 1.0, None, 0.6, 0.0, 0.6), 0);
        assert_eq!(sample_filtered(&logits, 1.0, None, 0.6, 0.0, 0.7), 1);
    }

    #[test]
    fn seeded_samplers_repeat() {
        let p = SamplingParams { temperature: 1.0, ..Default::default() };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32).collect();
        let draw = |seed| {
            let mut s = RequestSampler::new(seed, &[]);
            (0..20).map(|_| s.sample(&mut logits.clone(), &p, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}

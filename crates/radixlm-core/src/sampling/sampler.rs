//! Turns one row of logits into the next token for one request: logit bias, penalties, the min-new-tokens
//! ban on stop ids, then greedy argmax or temperature -> softmax -> top-k -> top-p -> min-p -> draw
//! (SGLang's order; min-p is relative to the most likely token). Each request owns its RNG, seeded from
//! its `seed`, so its samples do not depend on what else is in the batch.

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

    /// `banned` are ids that may not be drawn now (stop ids before `minNewTokens`).
    pub fn sample(&mut self, logits: &mut [f32], p: &SamplingParams, banned: &[u32]) -> u32 {
        for (&id, &b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += b;
            }
        }
        if p.repetition_penalty != 1.0 {
            for &id in self.seen.keys() {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
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
        if p.is_greedy() {
            return argmax(logits);
        }
        let u: f32 = self.rng.random();
        sample_filtered(logits, p.temperature, p.top_k, p.top_p, p.min_p, u)
    }
}

/// First index of the maximum (torch.argmax's tie rule).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Temperature softmax over `logits`, restricted by top-k, top-p and min-p, then the token at `u`
/// (uniform in [0, 1)) of the renormalised distribution.
pub fn sample_filtered(logits: &[f32], temperature: f32, top_k: Option<usize>, top_p: f32, min_p: f32, u: f32) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / temperature;
    let mut probs: Vec<(f32, u32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (((l - max) * inv_t).exp(), i as u32))
        .filter(|&(p, _)| p > 0.0)
        .collect();
    let total: f32 = probs.iter().map(|x| x.0).sum();
    let keep_k = top_k.unwrap_or(usize::MAX).min(probs.len());
    let need_order = keep_k < probs.len() || top_p < 1.0;
    if need_order {
        sort_top(&mut probs, keep_k, top_p * total);
    }
    // Keep the top-k, then the smallest prefix whose mass before each token is < top_p.
    let mut kept = 0;
    let mut cum = 0.0f32;
    for &(p, _) in probs.iter().take(keep_k) {
        if need_order && cum > top_p * total {
            break;
        }
        cum += p;
        kept += 1;
    }
    probs.truncate(kept.max(1));
    if min_p > 0.0 {
        // The max probability is the first entry when ordered; otherwise (no ordering) the global max,
        // whose unnormalised weight is exp(0) = 1.
        let top = if need_order { probs[0].0 } else { 1.0 };
        let cut = top * min_p;
        probs.retain(|&(p, _)| p >= cut);
    }
    let mass: f32 = probs.iter().map(|x| x.0).sum();
    let target = u * mass;
    let mut acc = 0.0;
    for &(p, id) in &probs {
        acc += p;
        if acc > target {
            return id;
        }
    }
    probs.last().map(|x| x.1).unwrap_or(0)
}

/// Orders the front of `probs` by descending probability: enough of it to hold the top `k` and the
/// top-p nucleus of unnormalised mass `mass`. Sorting a few hundred candidates is usually enough.
fn sort_top(probs: &mut [(f32, u32)], k: usize, mass: f32) {
    let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let want = k.min(probs.len());
    let mut m = want.clamp(1, 256);
    loop {
        if m < probs.len() {
            probs.select_nth_unstable_by(m - 1, desc);
        }
        probs[..m].sort_unstable_by(desc);
        let covered: f32 = probs[..m].iter().map(|x| x.0).sum();
        if m >= want || covered > mass {
            return;
        }
        m = (m * 4).min(want);
    }
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

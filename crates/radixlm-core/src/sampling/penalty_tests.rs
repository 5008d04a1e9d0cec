//! Penalties, logit bias, minNewTokens and seeds, against hand-computed values.
//!
//! SGLang's order (sampling_batch_info.py `apply_logits_bias`): additive penalties (frequency,
//! presence, the min-new-tokens ban) -> scaling penalty (repetition) -> grammar mask -> logit bias.
//! Frequency and presence count generated tokens only. Repetition here covers prompt and generated
//! tokens (HF / vLLM semantics; see the note on `repetition_covers_prompt_and_output`).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::params::SamplingParams;
use super::sampler::RequestSampler;
use crate::request::{FinishReason, Request};

const L: [f32; 6] = [2.0, -1.0, 0.5, 3.0, -2.0, 0.0];
const NEG: f32 = f32::NEG_INFINITY;

fn bias(pairs: &[(u32, f32)]) -> BTreeMap<u32, f32> {
    pairs.iter().copied().collect()
}

/// The row after penalties, ban and bias (greedy, so no filtering), and the token picked.
fn penalised(p: SamplingParams, prompt: &[u32], outputs: &[u32], banned: &[u32]) -> (Vec<f32>, u32) {
    let mut s = RequestSampler::new(0, prompt);
    for &t in outputs {
        s.observe(t);
    }
    let mut row = L.to_vec();
    let tok = s.sample(&mut row, &SamplingParams { temperature: 0.0, ..p }, banned);
    (row, tok)
}

// prompt [0, 4, 4], generated [3, 3, 2]: counts {3: 2, 2: 1}; seen {0, 2, 3, 4}.
const PROMPT: &[u32] = &[0, 4, 4];
const OUT: &[u32] = &[3, 3, 2];

#[test]
fn frequency_penalty_counts_generated_tokens() {
    let (row, _) = penalised(SamplingParams { frequency_penalty: 0.5, ..Default::default() }, PROMPT, OUT, &[]);
    assert_eq!(row, [2.0, -1.0, 0.0, 2.0, -2.0, 0.0]);
    let (row, _) = penalised(SamplingParams { frequency_penalty: -0.5, ..Default::default() }, PROMPT, OUT, &[]);
    assert_eq!(row, [2.0, -1.0, 1.0, 4.0, -2.0, 0.0]);
}

#[test]
fn presence_penalty_is_once_per_generated_token() {
    let (row, _) = penalised(SamplingParams { presence_penalty: 0.25, ..Default::default() }, PROMPT, OUT, &[]);
    assert_eq!(row, [2.0, -1.0, 0.25, 2.75, -2.0, 0.0]);
    let (row, _) = penalised(SamplingParams { presence_penalty: 0.25, frequency_penalty: 0.5, ..Default::default() }, PROMPT, OUT, &[]);
    assert_eq!(row, [2.0, -1.0, -0.25, 1.75, -2.0, 0.0]);
}

/// Prompt tokens are not "generated": a prompt full of token 3 leaves frequency and presence
/// penalties without effect, while the repetition penalty applies to it.
///
/// Note: SGLang main's `BatchedRepetitionPenalizer` (penaltylib/repetition_penalty.py) accumulates
/// generated tokens only; its older `penalizers/repetition_penalty.py`, HF transformers and vLLM also
/// count the prompt. radixlm counts prompt + output, which this test pins.
#[test]
fn repetition_covers_prompt_and_output() {
    let freq_pres = SamplingParams { frequency_penalty: 2.0, presence_penalty: 2.0, ..Default::default() };
    assert_eq!(penalised(freq_pres.clone(), &[3, 3, 3, 2], &[], &[]).0, L);
    assert_eq!(penalised(freq_pres, &[3, 3, 3, 2], &[5], &[]).0, [2.0, -1.0, 0.5, 3.0, -2.0, -4.0]);
    let rep = SamplingParams { repetition_penalty: 2.0, ..Default::default() };
    assert_eq!(penalised(rep.clone(), &[3, 3, 3], &[], &[]).0, [2.0, -1.0, 0.5, 1.5, -2.0, 0.0]);
    // Positive logits are divided, negative multiplied; prompt and generated alike.
    assert_eq!(penalised(rep, PROMPT, OUT, &[]).0, [1.0, -1.0, 0.25, 1.5, -4.0, 0.0]);
    let rep_half = SamplingParams { repetition_penalty: 0.5, ..Default::default() };
    assert_eq!(penalised(rep_half, PROMPT, OUT, &[]).0, [4.0, -1.0, 1.0, 6.0, -1.0, 0.0]);
}

#[test]
fn logit_bias_adds_and_ignores_ids_outside_the_row() {
    let p = SamplingParams { logit_bias: bias(&[(1, 1.5), (5, -0.25), (6, 9.0), (u32::MAX, 9.0)]), ..Default::default() };
    let (row, tok) = penalised(p, PROMPT, OUT, &[]);
    assert_eq!(row, [2.0, 0.5, 0.5, 3.0, -2.0, -0.25]);
    assert_eq!(tok, 3);
    let (_, tok) = penalised(SamplingParams { logit_bias: bias(&[(4, 5.5)]), ..Default::default() }, &[], &[], &[]);
    assert_eq!(tok, 4, "a bias moves the greedy pick");
}

/// The full chain in SGLang's order: additive, then repetition, then bias.
#[test]
fn penalties_then_repetition_then_bias() {
    let p = SamplingParams {
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        repetition_penalty: 2.0,
        logit_bias: bias(&[(3, 1.0), (1, -0.5)]),
        ..Default::default()
    };
    // additive: l3 = 3 - (2 * 0.5 + 0.25) = 1.75, l2 = 0.5 - 0.75 = -0.25
    // repetition (seen 0, 2, 3, 4): l0 = 1, l2 = -0.5, l3 = 0.875, l4 = -4
    // bias: l3 = 1.875, l1 = -1.5
    let (row, tok) = penalised(p, PROMPT, OUT, &[]);
    assert_eq!(row, [1.0, -1.5, -0.5, 1.875, -4.0, 0.0]);
    assert_eq!(tok, 3);
    // (The previous order, bias -> repetition -> additive, gave l3 = (3 + 1) / 2 - 1.25 = 0.75.)
}

#[test]
fn banned_ids_stay_banned_whatever_the_bias_or_penalty() {
    let p = SamplingParams { repetition_penalty: 0.5, logit_bias: bias(&[(3, 100.0), (5, 100.0)]), ..Default::default() };
    let (row, tok) = penalised(p, PROMPT, OUT, &[3, 5]);
    assert_eq!((row[3], row[5]), (NEG, NEG));
    assert_eq!(tok, 0);
}

fn request(prompt: Vec<u32>, params: SamplingParams, stop_ids: Vec<u32>, seed: u64) -> Request {
    Request::new(1, "r".into(), prompt, params, seed, stop_ids, 10_000)
}

/// Runs decode steps the way the worker does (banned_now -> sample -> accept) on `logits(step)`.
fn decode(r: &mut Request, logits: impl Fn(usize) -> Vec<f32>) {
    let mut step = 0;
    while r.finish.is_none() {
        let banned = r.banned_now().to_vec();
        let mut row = logits(step);
        let t = r.sampler.sample(&mut row, &r.params, &banned);
        r.accept(t, None);
        step += 1;
    }
}

#[test]
fn min_new_tokens_masks_eos_and_stop_ids_until_reached() {
    const EOS: u32 = 3;
    const STOP: u32 = 1;
    // Greedy; EOS is the argmax, then the stop id (with the bias), then token 0.
    let p = SamplingParams { temperature: 0.0, min_new_tokens: 3, max_new_tokens: 10, logit_bias: bias(&[(STOP, 5.0)]), ..Default::default() };
    let mut r = request(vec![2, 2], p, vec![EOS, STOP], 0);
    decode(&mut r, |_| L.to_vec());
    assert_eq!(r.output, [0, 0, 0, STOP]);
    assert_eq!(r.finish, Some(FinishReason::StopToken(STOP)));

    // Without the bias EOS ends it right after the minimum.
    let p = SamplingParams { temperature: 0.0, min_new_tokens: 3, max_new_tokens: 10, ..Default::default() };
    let mut r = request(vec![2], p, vec![EOS, STOP], 0);
    decode(&mut r, |_| L.to_vec());
    assert_eq!(r.output, [0, 0, 0, EOS]);
    assert_eq!(r.finish, Some(FinishReason::StopToken(EOS)));

    // minNewTokens 0: EOS at once.
    let mut r = request(vec![2], SamplingParams { temperature: 0.0, ..Default::default() }, vec![EOS], 0);
    decode(&mut r, |_| L.to_vec());
    assert_eq!((r.output.as_slice(), r.finish.clone()), (&[EOS][..], Some(FinishReason::StopToken(EOS))));

    // Sampling, with EOS holding ~99.9% of the mass: never drawn during the first 40 tokens.
    for seed in 0..20 {
        let p = SamplingParams { temperature: 1.0, min_new_tokens: 40, max_new_tokens: 200, ..Default::default() };
        let mut r = request(vec![2], p, vec![EOS, STOP], seed);
        decode(&mut r, |_| {
            let mut row = vec![0.0f32; 16];
            row[EOS as usize] = 10.0;
            row
        });
        assert!(r.output[..40].iter().all(|t| *t != EOS && *t != STOP), "seed {seed}: {:?}", r.output);
        assert!(r.output.len() > 40 && r.output.len() < 200);
        assert_eq!(r.finish, Some(FinishReason::StopToken(EOS)));
    }
}

/// A deterministic "model": logits for a request depend on the step and on its own last token.
fn model(vocab: usize) -> impl Fn(usize, Option<u32>) -> Vec<f32> {
    move |step, last| {
        let mut rng = StdRng::seed_from_u64((step as u64) << 32 | last.map_or(0xffff_ffff, u64::from));
        (0..vocab).map(|_| rng.random::<f32>() * 6.0 - 3.0).collect()
    }
}

struct Sim {
    sampler: RequestSampler,
    params: SamplingParams,
    out: Vec<u32>,
}

impl Sim {
    fn new(seed: u64, params: SamplingParams) -> Self {
        Sim { sampler: RequestSampler::new(seed, &[1, 2, 3]), params, out: Vec::new() }
    }
    fn step(&mut self, f: &impl Fn(usize, Option<u32>) -> Vec<f32>) {
        let mut row = f(self.out.len(), self.out.last().copied());
        let t = self.sampler.sample(&mut row, &self.params, &[]);
        self.sampler.observe(t);
        self.out.push(t);
    }
}

#[test]
fn same_seed_same_tokens_whatever_the_batch() {
    const STEPS: usize = 64;
    let f = model(1000);
    let a_params = SamplingParams { temperature: 1.0, top_p: 0.9, frequency_penalty: 0.3, ..Default::default() };
    let mut alone = Sim::new(42, a_params.clone());
    for _ in 0..STEPS {
        alone.step(&f);
    }

    // A in a batch whose composition and order change every step: B joins at step 5, C (greedy,
    // consumes no randomness) leaves at step 20, D is A's twin (same seed and params), E has A's seed
    // but other params, F joins late with another seed.
    let mut batch: Vec<(char, Sim)> = vec![
        ('A', Sim::new(42, a_params.clone())),
        ('C', Sim::new(42, SamplingParams { temperature: 0.0, ..Default::default() })),
        ('D', Sim::new(42, a_params.clone())),
        ('E', Sim::new(42, SamplingParams { temperature: 1.7, top_k: Some(30), min_p: 0.05, ..Default::default() })),
    ];
    for step in 0..STEPS {
        if step == 5 {
            batch.insert(0, ('B', Sim::new(43, SamplingParams { temperature: 0.7, top_k: Some(20), ..Default::default() })));
        }
        if step == 20 {
            batch.retain(|(n, _)| *n != 'C');
        }
        if step == 33 {
            batch.push(('F', Sim::new(7, SamplingParams { temperature: 1.2, top_p: 0.5, ..Default::default() })));
        }
        let n = batch.len();
        batch.rotate_left(step % n);
        if step % 3 == 0 {
            batch.reverse();
        }
        for (_, s) in batch.iter_mut() {
            if s.out.len() < STEPS {
                s.step(&f);
            }
        }
    }
    let get = |name: char| &batch.iter().find(|(n, _)| *n == name).unwrap().1.out;
    assert_eq!(get('A'), &alone.out, "A in a batch");
    assert_eq!(get('D'), &alone.out, "A's twin");
    assert_ne!(get('E'), &alone.out);
    let mut other = Sim::new(44, a_params);
    for _ in 0..STEPS {
        other.step(&f);
    }
    assert_ne!(other.out, alone.out, "another seed gives other tokens");
}

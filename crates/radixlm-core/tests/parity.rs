//! Parity with Hugging Face transformers on the committed goldens (`__test__/goldens/*.json`, format in
//! scripts/README.md): token ids and top-5 logprobs of SmolLM2-135M-Instruct (from the Q4_1 GGUF) and of
//! the random-weight tiny Qwen2 fixture.
//!
//! - f32 (dequantized) weights: every golden top-5 logprob within 1e-3, teacher-forced at every prompt
//!   and generated position; greedy 32-token outputs through the engine identical (a divergence is only
//!   tolerated where the golden top-1/top-2 gap is below 2e-3, i.e. a near tie inside the tolerance).
//! - One-shot, incremental (prefill + token by token) and unevenly chunked passes over a shuffled page
//!   table give the same logits.
//! - Quantized (default `dtype: auto`, Q4_1 kernels): greedy outputs identical on most prompts and, at a
//!   divergence, each side's token within the other's top 5; teacher-forced argmax always in the golden
//!   top 5.
//! - The tokenizers reproduce the golden `inputIds` and decode them back to the text.
//!
//! Comparisons are teacher-forced on the golden sequences, so near ties cannot make them flaky. The
//! SmolLM2 GGUF must be present (`npm run fetch-model`); its absence fails the tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use radixlm_core::forward_ctx::{ForwardCtx, SeqSlice};
use radixlm_core::kv_cache::KvCache;
use radixlm_core::layers::transformer::Transformer;
use radixlm_core::model::load::{load, LoadedModel};
use radixlm_core::{EngineHandle, EngineOptions, Event, PromptInput};
use serde_json::{json, Value};
use tokenizers::{NormalizedString, Normalizer};

/// Golden top-5 logprob tolerance with f32 weights.
const TOL_F32: f64 = 1e-3;
/// A greedy divergence in f32 mode is only acceptable where the golden top-1/top-2 gap is below this.
const NEAR_TIE: f64 = 2e-3;
/// One-shot vs incremental / chunked logits.
const TOL_CHUNK: f32 = 1e-4;

// ---------------------------------------------------------------------------------------------------
// Goldens

type Top5 = Vec<(u32, f64)>;

struct GoldenPrompt {
    name: String,
    kind: String,
    text: String,
    input_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    /// `top5[k]`: after inputIds + greedyIds[..k].
    top5: Vec<Top5>,
    /// `prompt_top5[i]`: after inputIds[..=i].
    prompt_top5: Vec<Top5>,
}

impl GoldenPrompt {
    /// The teacher-forced sequence: inputIds + greedyIds[..31]. Its row r predicts the golden row
    /// `rows()[r]`.
    fn tf_ids(&self) -> Vec<u32> {
        let mut ids = self.input_ids.clone();
        ids.extend_from_slice(&self.greedy_ids[..self.greedy_ids.len() - 1]);
        ids
    }

    /// Golden top-5 per row of `tf_ids()`: promptTop5[..len-1] then top5[0..32] (promptTop5's last row
    /// is top5[0]).
    fn rows(&self) -> Vec<&Top5> {
        let n = self.input_ids.len();
        self.prompt_top5[..n - 1].iter().chain(self.top5.iter()).collect()
    }

    /// Index into `rows()` of generated step k.
    fn gen_row(&self, k: usize) -> usize {
        self.input_ids.len() - 1 + k
    }

    /// Describes row r as a prompt or generated position.
    fn where_(&self, r: usize) -> String {
        let n = self.input_ids.len();
        if r + 1 < n {
            format!("prompt position {r} (after inputIds[..={r}])")
        } else {
            format!("generated step {}", r + 1 - n)
        }
    }
}

struct Golden {
    file: &'static str,
    prompts: Vec<GoldenPrompt>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn top5_rows(v: &Value) -> Vec<Top5> {
    v.as_array()
        .expect("top5 rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("top5 row")
                .iter()
                .map(|e| (e[0].as_u64().expect("top5 id") as u32, e[1].as_f64().expect("top5 logprob")))
                .collect()
        })
        .collect()
}

fn read_golden(file: &'static str) -> Golden {
    let path = format!("{}/../../__test__/goldens/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let prompts: Vec<GoldenPrompt> = v["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| GoldenPrompt {
            name: p["name"].as_str().expect("name").to_string(),
            kind: p["kind"].as_str().expect("kind").to_string(),
            text: p["text"].as_str().expect("text").to_string(),
            input_ids: ids(&p["inputIds"]),
            greedy_ids: ids(&p["greedyIds"]),
            top5: top5_rows(&p["top5"]),
            prompt_top5: top5_rows(&p["promptTop5"]),
        })
        .collect();
    for p in &prompts {
        assert_eq!(p.greedy_ids.len(), 32, "{file} {}", p.name);
        assert_eq!(p.top5.len(), 32, "{file} {}", p.name);
        assert_eq!(p.prompt_top5.len(), p.input_ids.len(), "{file} {}", p.name);
        assert_eq!(p.prompt_top5.last(), p.top5.first(), "{file} {}: promptTop5's last row must be top5[0]", p.name);
        for (k, row) in p.top5.iter().enumerate() {
            assert_eq!(row[0].0, p.greedy_ids[k], "{file} {}: greedy id {k} is not the golden top-1", p.name);
        }
    }
    assert!(!prompts.is_empty());
    Golden { file, prompts }
}

fn smollm_golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| read_golden("smollm2-135m-instruct.json"))
}

fn qwen_golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| read_golden("tiny-qwen2.json"))
}

fn llama3_golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| read_golden("tiny-llama3.json"))
}

// ---------------------------------------------------------------------------------------------------
// Models

fn smollm_path() -> String {
    let dir = std::env::var_os("RADIXLM_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache").join("radixlm")
    });
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "the SmolLM2 GGUF is missing at {}: run `npm run fetch-model` first (the parity tests need it)",
        path.display()
    );
    path.display().to_string()
}

fn qwen_path() -> String {
    format!("{}/../../__test__/fixtures/tiny-qwen2", env!("CARGO_MANIFEST_DIR"))
}

/// Saved by transformers itself (scripts/make_tiny_llama3.py): rope_theta and the llama3 scaling live
/// under `rope_parameters`, as in every checkpoint saved by transformers >= 5.
fn llama3_path() -> String {
    format!("{}/../../__test__/fixtures/tiny-llama3", env!("CARGO_MANIFEST_DIR"))
}

/// The same weights as llama.cpp's converter writes a Llama 3 GGUF: Llama 3 scaling only as the
/// per-pair frequency divisors of tensor rope_freqs.weight. No tokenizer inside: tokenizerPath supplies it.
fn llama3_gguf() -> Value {
    json!({"modelPath": format!("{}.gguf", llama3_path()), "tokenizerPath": llama3_path()})
}

fn at(path: String) -> Value {
    json!({ "modelPath": path })
}

fn load_model(src: Value, dtype: &str) -> LoadedModel {
    let mut o = src.clone();
    o["dtype"] = json!(dtype);
    let opts = EngineOptions::from_json(&o).expect("options");
    load(&opts, &mut |_| {}).unwrap_or_else(|e| panic!("loading {src} ({dtype}): {e:?}"))
}

fn smollm_f32() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load_model(at(smollm_path()), "float32"))
}

fn smollm_quant() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load_model(at(smollm_path()), "auto"))
}

fn qwen_f32() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load_model(at(qwen_path()), "float32"))
}

fn llama3_f32() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load_model(at(llama3_path()), "float32"))
}

fn llama3_gguf_f32() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load_model(llama3_gguf(), "float32"))
}

// ---------------------------------------------------------------------------------------------------
// Forward passes

/// Runs `ids` as one sequence through `model` in passes of the given sizes (summing to ids.len()),
/// reusing one KV cache with the given page size and page order. Returns the logits of every position,
/// [ids.len() * vocab].
fn forward_chunks(model: &Transformer, ids: &[u32], chunks: &[usize], page_size: usize, reverse_pages: bool) -> Vec<f32> {
    assert_eq!(chunks.iter().sum::<usize>(), ids.len());
    let cfg = &model.cfg;
    let pages = ids.len().div_ceil(page_size);
    // A few spare pages so the table does not simply cover the whole buffer.
    let total_pages = pages + 3;
    let mut table: Vec<u32> = (0..total_pages as u32).collect();
    if reverse_pages {
        table.reverse();
    }
    table.truncate(pages);
    let mut kv = KvCache::new(cfg.num_layers, total_pages, page_size, cfg.kv_size());
    let mut out = Vec::with_capacity(ids.len() * cfg.vocab_size);
    let mut start = 0;
    for &q in chunks {
        let ctx = ForwardCtx {
            seqs: vec![SeqSlice { q_len: q, start, page_table: &table[..(start + q).div_ceil(page_size)] }],
            page_size,
            logit_rows: (0..q).collect(),
        };
        let logits = model.forward(&ids[start..start + q], &ctx, &mut kv).expect("forward");
        assert_eq!(logits.len(), q * cfg.vocab_size);
        out.extend_from_slice(&logits);
        start += q;
    }
    out
}

/// One pass over the whole sequence, page size 16, pages 0..n in order.
fn forward_one_shot(model: &Transformer, ids: &[u32]) -> Vec<f32> {
    forward_chunks(model, ids, &[ids.len()], 16, false)
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
    let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// Top-k (id, logprob), highest first, lower id on ties.
fn top_k(lp: &[f64], k: usize) -> Top5 {
    let mut idx: Vec<u32> = (0..lp.len() as u32).collect();
    idx.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, lp[i as usize])).collect()
}

/// What a teacher-forced row yields, kept small: our top 5 and our logprob of each golden top-5 id.
struct TfRow {
    ours_top5: Top5,
    /// Our logprob of golden's top-5 ids, in golden's order.
    at_golden: Vec<f64>,
}

/// Teacher-forced rows of `p` (one per `p.rows()`), one forward of the golden sequence.
fn teacher_forced(model: &Transformer, p: &GoldenPrompt) -> Vec<TfRow> {
    let ids = p.tf_ids();
    let logits = forward_one_shot(model, &ids);
    let vocab = model.cfg.vocab_size;
    p.rows()
        .iter()
        .zip(logits.chunks_exact(vocab))
        .map(|(g, row)| {
            let lp = log_softmax(row);
            TfRow { ours_top5: top_k(&lp, 5), at_golden: g.iter().map(|&(id, _)| lp[id as usize]).collect() }
        })
        .collect()
}

fn tf_cached(key: &'static OnceLock<Vec<Vec<TfRow>>>, model: &Transformer, g: &Golden) -> &'static Vec<Vec<TfRow>> {
    key.get_or_init(|| g.prompts.iter().map(|p| teacher_forced(model, p)).collect())
}

fn smollm_quant_tf() -> &'static Vec<Vec<TfRow>> {
    static T: OnceLock<Vec<Vec<TfRow>>> = OnceLock::new();
    tf_cached(&T, &smollm_quant().model, smollm_golden())
}

// ---------------------------------------------------------------------------------------------------
// 1. Teacher-forced logprobs, f32 weights

fn check_teacher_forced_f32(model: &Transformer, g: &Golden) {
    let mut max_dev = 0.0f64;
    let mut worst = String::new();
    let mut failures = Vec::new();
    let mut compared = 0usize;
    for p in &g.prompts {
        let rows = teacher_forced(model, p);
        let golden = p.rows();
        assert_eq!(rows.len(), golden.len());
        let mut prompt_max = 0.0f64;
        for (r, (ours, gold)) in rows.iter().zip(&golden).enumerate() {
            for (&(id, glp), &olp) in gold.iter().zip(&ours.at_golden) {
                let d = (olp - glp).abs();
                compared += 1;
                prompt_max = prompt_max.max(d);
                if d > max_dev {
                    max_dev = d;
                    worst = format!("{} {} id {id}: ours {olp:.6} golden {glp:.6}", p.name, p.where_(r));
                }
                if d > TOL_F32 {
                    failures.push(format!("{} {} id {id}: ours {olp:.6} golden {glp:.6} (|d| {d:.2e})", p.name, p.where_(r)));
                }
            }
        }
        println!("[{}] {:<20} max |dlogprob| over golden top-5: {prompt_max:.3e}", g.file, p.name);
    }
    println!("[{}] teacher-forced f32: {compared} logprobs compared, max |d| {max_dev:.3e} at {worst}", g.file);
    assert!(
        failures.is_empty(),
        "[{}] {} golden top-5 logprobs off by more than {TOL_F32}:\n{}",
        g.file,
        failures.len(),
        failures.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn smollm2_f32_teacher_forced_top5_logprobs() {
    check_teacher_forced_f32(&smollm_f32().model, smollm_golden());
}

#[test]
fn tiny_qwen2_f32_teacher_forced_top5_logprobs() {
    check_teacher_forced_f32(&qwen_f32().model, qwen_golden());
}

#[test]
fn tiny_llama3_f32_teacher_forced_top5_logprobs() {
    check_teacher_forced_f32(&llama3_f32().model, llama3_golden());
}

#[test]
fn tiny_llama3_gguf_rope_freqs_teacher_forced_top5_logprobs() {
    let m = llama3_gguf_f32();
    assert!(m.model.cfg.rope_freq_factors.is_some() && m.model.cfg.rope_scaling.is_none());
    check_teacher_forced_f32(&m.model, llama3_golden());
}

// ---------------------------------------------------------------------------------------------------
// 2. One-shot vs incremental vs chunked (page size 4, reversed page table)

/// Max |logit difference| between two [rows * vocab] buffers, and the row where it is.
fn max_diff(a: &[f32], b: &[f32], vocab: usize) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut best = (0.0f32, 0usize);
    for (r, (ra, rb)) in a.chunks_exact(vocab).zip(b.chunks_exact(vocab)).enumerate() {
        let d = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(d.is_finite(), "non-finite logits at row {r}");
        if d > best.0 {
            best = (d, r);
        }
    }
    best
}

fn check_chunked(model: &Transformer, g: &Golden, which: &[&str]) {
    let vocab = model.cfg.vocab_size;
    let mut failures = Vec::new();
    for p in g.prompts.iter().filter(|p| which.is_empty() || which.contains(&p.name.as_str())) {
        let ids = p.tf_ids();
        let n = ids.len();
        let one_shot = forward_one_shot(model, &ids);
        // Prefill of the prompt, then one token per pass.
        let mut incremental = vec![p.input_ids.len()];
        incremental.extend(std::iter::repeat(1).take(n - p.input_ids.len()));
        // Three uneven chunks, none aligned to the page size.
        let a = (n / 5).max(1);
        let b = (n / 2 + 3).min(n - a - 1);
        let uneven = vec![a, b, n - a - b];
        for (label, chunks) in [("prefill + 1-token decode", incremental), ("3 uneven chunks", uneven)] {
            let got = forward_chunks(model, &ids, &chunks, 4, true);
            let (d, r) = max_diff(&one_shot, &got, vocab);
            println!("[{}] {:<20} {label:<25} chunks {:?}: max |dlogit| {d:.2e} (row {r})", g.file, p.name, &chunks[..chunks.len().min(3)]);
            if d > TOL_CHUNK {
                failures.push(format!("{} {label}: max |dlogit| {d:.3e} at {}", p.name, p.where_(r)));
            }
        }
    }
    assert!(failures.is_empty(), "[{}] chunked / incremental logits differ from one-shot:\n{}", g.file, failures.join("\n"));
}

#[test]
fn smollm2_f32_chunked_and_incremental_match_one_shot() {
    // Two prompts keep the token-by-token decode (one f32 weight sweep per token) cheap.
    check_chunked(&smollm_f32().model, smollm_golden(), &["code", "chat_single"]);
}

#[test]
fn tiny_qwen2_f32_chunked_and_incremental_match_one_shot() {
    check_chunked(&qwen_f32().model, qwen_golden(), &[]);
}

#[test]
fn tiny_llama3_f32_chunked_and_incremental_match_one_shot() {
    check_chunked(&llama3_f32().model, llama3_golden(), &[]);
}

// ---------------------------------------------------------------------------------------------------
// 3. Greedy through the engine

/// Submits every golden prompt as ids (greedy, 32 tokens, EOS ignored) and returns the output ids.
fn engine_greedy(src: &Value, dtype: &str, g: &Golden) -> Vec<Vec<u32>> {
    let mut o = src.clone();
    o["dtype"] = json!(dtype);
    o["randomSeed"] = json!(0);
    o["maxTotalTokens"] = json!(8192);
    let opts = EngineOptions::from_json(&o).expect("options");
    let engine = EngineHandle::start(opts, &mut |_| {}).unwrap_or_else(|e| panic!("engine start ({src}, {dtype}): {e:?}"));
    let params = json!({"temperature": 0, "maxNewTokens": 32, "ignoreEos": true});
    let mut handles: Vec<_> = g
        .prompts
        .iter()
        .map(|p| engine.submit(PromptInput::Ids(p.input_ids.clone()), &params, None, false).expect("submit").remove(0))
        .collect();
    let outs = handles
        .iter_mut()
        .zip(&g.prompts)
        .map(|(h, p)| loop {
            match h.next_blocking() {
                Some(Event::Done(o)) => break o.output_ids,
                Some(Event::Chunk(_)) => continue,
                other => panic!("{}: unexpected event {other:?}", p.name),
            }
        })
        .collect();
    engine.shutdown();
    outs
}

fn first_divergence(a: &[u32], b: &[u32]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

fn check_greedy_f32(src: &Value, g: &Golden) {
    let outs = engine_greedy(src, "float32", g);
    let mut identical = 0;
    let mut failures = Vec::new();
    for (p, out) in g.prompts.iter().zip(&outs) {
        let Some(k) = first_divergence(out, &p.greedy_ids) else {
            identical += 1;
            continue;
        };
        assert_eq!(out.len(), 32, "{}: {} tokens generated", p.name, out.len());
        let gold = &p.top5[k];
        let margin = gold[0].1 - gold[1].1;
        let ours_lp = gold.iter().find(|&&(id, _)| id == out[k]).map(|&(_, lp)| lp);
        let msg = format!(
            "{}: diverges at step {k}: ours {} (golden logprob {:?}), golden {} ({:.6}); golden top-1/top-2 margin {margin:.2e}",
            p.name, out[k], ours_lp, gold[0].0, gold[0].1
        );
        println!("[{}] {msg}", g.file);
        if ours_lp.is_none() || margin >= NEAR_TIE {
            failures.push(msg);
        }
    }
    println!("[{}] f32 greedy through the engine: {identical}/{} prompts identical to transformers", g.file, g.prompts.len());
    assert!(failures.is_empty(), "[{}] f32 greedy divergences outside near ties:\n{}", g.file, failures.join("\n"));
}

#[test]
fn smollm2_f32_engine_greedy_matches_transformers() {
    check_greedy_f32(&at(smollm_path()), smollm_golden());
}

#[test]
fn tiny_qwen2_f32_engine_greedy_matches_transformers() {
    check_greedy_f32(&at(qwen_path()), qwen_golden());
}

#[test]
fn tiny_llama3_f32_engine_greedy_matches_transformers() {
    check_greedy_f32(&at(llama3_path()), llama3_golden());
}

#[test]
fn tiny_llama3_gguf_rope_freqs_engine_greedy_matches_transformers() {
    check_greedy_f32(&llama3_gguf(), llama3_golden());
}

/// Quantized (dtype auto) greedy outputs of the SmolLM2 prompts through the engine, run once.
fn smollm_quant_greedy() -> &'static Vec<Vec<u32>> {
    static O: OnceLock<Vec<Vec<u32>>> = OnceLock::new();
    O.get_or_init(|| engine_greedy(&at(smollm_path()), "auto", smollm_golden()))
}

/// Greedy output ids diverge from transformers' only where either token is in the other side's top 5
/// (vLLM's `check_logprobs_close`). Ours is the golden top 5 at that step; golden's is in our top 5,
/// teacher-forced on the golden sequence (same prefix, so the same logits the engine saw).
#[test]
fn smollm2_quantized_engine_greedy_divergences_within_top5() {
    let g = smollm_golden();
    let outs = smollm_quant_greedy();
    let tf = smollm_quant_tf();
    let mut identical = 0;
    let mut failures = Vec::new();
    for ((p, out), rows) in g.prompts.iter().zip(outs).zip(tf) {
        assert_eq!(out.len(), 32, "{}: {} tokens generated", p.name, out.len());
        let Some(k) = first_divergence(out, &p.greedy_ids) else {
            identical += 1;
            println!("[quantized] {:<20} identical", p.name);
            continue;
        };
        let gold = &p.top5[k];
        let ours = &rows[p.gen_row(k)].ours_top5;
        let ours_in_golden = gold.iter().any(|&(id, _)| id == out[k]);
        let golden_in_ours = ours.iter().any(|&(id, _)| id == p.greedy_ids[k]);
        // The engine (batched, paged, incremental) must pick what our own one-shot forward ranks first,
        // unless that forward itself has a near tie.
        let engine_is_tf_top1 = ours[0].0 == out[k] || ours[0].1 - ours[1].1 < 1e-2;
        let msg = format!(
            "{:<20} diverges at step {k}: ours {} (in golden top-5: {ours_in_golden}), golden {} (in our teacher-forced top-5: \
             {golden_in_ours}); golden margin {:.4}, our teacher-forced top-1 {} ({:.4}) vs our logprob of golden's {:.4}",
            p.name,
            out[k],
            p.greedy_ids[k],
            gold[0].1 - gold[1].1,
            ours[0].0,
            ours[0].1,
            rows[p.gen_row(k)].at_golden[0],
        );
        println!("[quantized] {msg}");
        if !ours_in_golden || !golden_in_ours || !engine_is_tf_top1 {
            failures.push(msg);
        }
    }
    println!("[quantized] greedy through the engine: {identical}/{} prompts identical to transformers (f32 reference)", g.prompts.len());
    assert!(failures.is_empty(), "quantized greedy divergences outside top-5 containment:\n{}", failures.join("\n"));
}

/// The project's claim: in the default quantized mode, greedy 32-token outputs identical on most
/// prompts (here: at least half).
#[test]
fn smollm2_quantized_engine_greedy_identical_on_most_prompts() {
    let g = smollm_golden();
    let outs = smollm_quant_greedy();
    let same: Vec<&str> =
        g.prompts.iter().zip(outs).filter(|(p, out)| **out == p.greedy_ids).map(|(p, _)| p.name.as_str()).collect();
    println!("[quantized] identical greedy outputs: {}/{} {same:?}", same.len(), g.prompts.len());
    assert!(
        2 * same.len() >= g.prompts.len(),
        "only {}/{} quantized greedy outputs equal the transformers golden ({same:?}). The golden is f32 math on the \
         dequantized GGUF weights, so the quantized path's only error source is how it treats activations: kernels \
         that round activations to 8 bits (Q8_1, as llama.cpp does) diverge on most prompts (llama.cpp 3.21.1 on \
         this GGUF, scripts/compare_llamacpp.mjs: argmax flips in 7 of 9 prompts, i.e. 2/9 identical).",
        same.len(),
        g.prompts.len()
    );
}

/// Median, p90 and max of `v` (sorted copy).
fn quantiles(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |x: f64| s[((s.len() as f64 * x) as usize).min(s.len() - 1)];
    (at(0.5), at(0.9), at(1.0))
}

#[test]
fn smollm2_quantized_teacher_forced_top1_in_golden_top5() {
    let g = smollm_golden();
    let tf = smollm_quant_tf();
    // Over all positions, and over the generated steps only (what compare_llamacpp.mjs measures).
    let (mut top1_all, mut top1_gen, mut top5_gen) = (Vec::new(), Vec::new(), Vec::new());
    let mut top5_max = 0.0f64;
    let (mut flips_all, mut flips_gen, mut flip_margins) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    let mut positions = 0;
    for (p, rows) in g.prompts.iter().zip(tf) {
        let mut prompt_flips = Vec::new();
        for (r, (ours, gold)) in rows.iter().zip(p.rows()).enumerate() {
            let generated = r >= p.gen_row(0);
            positions += 1;
            let d1 = (ours.at_golden[0] - gold[0].1).abs();
            let d5 = gold.iter().zip(&ours.at_golden).map(|(&(_, glp), &olp)| (olp - glp).abs()).fold(0.0, f64::max);
            top5_max = top5_max.max(d5);
            top1_all.push(d1);
            let top1 = ours.ours_top5[0].0;
            if top1 != gold[0].0 {
                flips_all += 1;
            }
            if generated {
                top1_gen.push(d1);
                top5_gen.push(d5);
                if top1 != gold[0].0 {
                    flips_gen += 1;
                    prompt_flips.push(r - p.gen_row(0));
                    flip_margins.push(format!("{:.3}", gold[0].1 - gold[1].1));
                }
            }
            if !gold.iter().any(|&(id, _)| id == top1) {
                failures.push(format!(
                    "{} {}: our top-1 {top1} ({:.4}) not in golden top-5 {:?}",
                    p.name,
                    p.where_(r),
                    ours.ours_top5[0].1,
                    gold
                ));
            }
        }
        println!("[quantized] {:<20} teacher-forced argmax != golden at generated steps {prompt_flips:?}", p.name);
    }
    let (m, p90, max) = quantiles(&top1_all);
    println!(
        "[quantized] teacher-forced, all {positions} positions: golden top-1 |dlogprob| median {m:.3e}, p90 {p90:.3e}, \
         max {max:.3e}; top-5 max {top5_max:.3e}; argmax differs at {flips_all}"
    );
    let (m, p90, max) = quantiles(&top1_gen);
    let (m5, _, max5) = quantiles(&top5_gen);
    println!(
        "[quantized] teacher-forced, {} generated steps: top-1 |dlogprob| median {m:.3e}, p90 {p90:.3e}, max {max:.3e}; \
         top-5 max per step: median {m5:.3e} max {max5:.3e}; argmax flips {flips_gen}/{} at golden margins {}",
        top1_gen.len(),
        top1_gen.len(),
        flip_margins.join(" ")
    );
    assert!(failures.is_empty(), "quantized teacher-forced argmax outside golden top-5:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------------
// 4. Tokenizers

fn check_tokenizer(m: &LoadedModel, g: &Golden) {
    let tk = m.tokenizer.as_ref().expect("tokenizer");
    let mut failures = Vec::new();
    for p in &g.prompts {
        let enc = tk.encode(&p.text).expect("encode");
        if enc != p.input_ids {
            let at = first_divergence(&enc, &p.input_ids).unwrap_or(0);
            failures.push(format!(
                "{} ({}): encode differs at {at}: ours {:?} golden {:?}",
                p.name,
                p.kind,
                &enc[at..enc.len().min(at + 6)],
                &p.input_ids[at..p.input_ids.len().min(at + 6)]
            ));
        }
        // Decoding gives back the text as the tokenizer's normalizer left it (tiny-qwen2 has NFC and a
        // prompt with a decomposed 'e' + U+0301, which comes back composed).
        let want = match tk.tokenizer.get_normalizer() {
            Some(n) => {
                let mut ns = NormalizedString::from(p.text.as_str());
                n.normalize(&mut ns).expect("normalize");
                ns.get().to_string()
            }
            None => p.text.clone(),
        };
        let dec = tk.decode(&p.input_ids, false);
        if dec != want {
            failures.push(format!("{} ({}): decode(inputIds) = {dec:?}, normalized text {want:?}", p.name, p.kind));
        }
        if want != p.text {
            println!("[{}] {}: text changed by the normalizer; decode compared with the normalized text", g.file, p.name);
        }
    }
    println!("[{}] tokenizer: {}/{} prompts checked, {} mismatches", g.file, g.prompts.len(), g.prompts.len(), failures.len());
    assert!(failures.is_empty(), "[{}] tokenizer parity:\n{}", g.file, failures.join("\n"));
}

#[test]
fn smollm2_gguf_tokenizer_matches_golden_ids() {
    check_tokenizer(smollm_quant(), smollm_golden());
}

#[test]
fn tiny_qwen2_tokenizer_matches_golden_ids() {
    check_tokenizer(qwen_f32(), qwen_golden());
}

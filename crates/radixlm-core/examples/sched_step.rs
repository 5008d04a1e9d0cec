//! Host time of one engine step without the model: schedule (radix match, page allocation, budgets),
//! build the pass inputs (packed ids, per-sequence page tables), then the post-pass bookkeeping
//! (KV length, caching of prefill progress, accepting the sampled token). DESIGN.md's target is about
//! 100 us at batch 256, far below a GPU decode step.
//!
//! `cargo run --release -p radixlm-core --example sched_step [batch] [prompt_len] [steps]`

use std::time::Instant;

use radixlm_core::memory::KvMemory;
use radixlm_core::request::Request;
use radixlm_core::runner::Pass;
use radixlm_core::sampling::SamplingParams;
use radixlm_core::scheduler::{Policy, Scheduler, SchedulerConfig};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let batch = *args.first().unwrap_or(&256);
    let prompt_len = *args.get(1).unwrap_or(&512);
    let steps = *args.get(2).unwrap_or(&2000);
    let page_size = 16;
    for policy in [Policy::Fcfs, Policy::LongestPrefix] {
        let tokens = batch * (prompt_len + steps + 64);
        let mem = KvMemory::new(tokens.div_ceil(page_size), page_size, true);
        let cfg = SchedulerConfig { max_running: batch, chunk_budget: 8192, policy, retract_every: None };
        let mut s = Scheduler::new(cfg, mem);
        for i in 0..batch {
            // 16 groups share a system prompt of 3/4 of the length; the rest is the request's own.
            let shared = prompt_len * 3 / 4;
            let prompt: Vec<u32> =
                (0..prompt_len).map(|p| if p < shared { (i % 16 * 1000 + p) as u32 } else { (i * 7919 + p) as u32 }).collect();
            let params = SamplingParams { max_new_tokens: 1 << 30, ignore_eos: true, ..SamplingParams::default() };
            s.waiting.push_back(Request::new(i as u64, format!("r{i}"), prompt, params, i as u64, vec![2], 1 << 30));
        }
        let mut times = Vec::with_capacity(steps);
        let mut total = 0usize;
        let mut step = 0;
        while times.len() < steps {
            let t = Instant::now();
            let (b, rejected, never) = s.schedule();
            assert!(rejected.is_empty() && never.is_empty());
            let packed = Pass::prepare(&s.running, &b, page_size).ids.len();
            for &(i, q) in &b {
                let r = &mut s.running[i];
                let was_prefill = r.kv_len < r.prompt.len();
                r.kv_len += q;
                if was_prefill {
                    s.cache_prefill_progress(i);
                }
                let r = &mut s.running[i];
                if r.kv_len == r.seq_len() {
                    r.accept((step % 5000) as u32 + 3, None);
                }
            }
            let dt = t.elapsed();
            total += packed;
            step += 1;
            // Time steady decode only: every request admitted and past its prompt.
            if s.running.len() == batch && b.iter().all(|&(_, q)| q == 1) && b.len() == batch {
                times.push(dt.as_secs_f64() * 1e6);
            }
        }
        s.check_integrity().expect("integrity");
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        println!(
            "{policy:?}: batch {batch}, prompt {prompt_len}, {steps} decode steps: host time per step median {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us ({} tokens packed in all; cache hit {:.1}%)",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0),
            total,
            100.0 * s.stats.cached_tokens as f64 / s.stats.prompt_tokens as f64
        );
    }
}

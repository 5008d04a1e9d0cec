#!/usr/bin/env python3
"""How far transformers' own bfloat16 run of SmolLM2-135M-Instruct (the Q4_1 GGUF, dequantized) lands
from its float32 run, on the prompts of the GPU test `smollm_gpu_matches_cpu_f32`
(crates/radixlm-core/tests/cuda_engine.rs): the noise scale of bf16 inference on this model, which the
GPU engine (bf16) is measured against.

  python3 scripts/smollm_bf16_noise.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

Writes __test__/goldens/smollm2-bf16-noise.json. Same statistics as the test: each prompt plus its 24
greedy float32 tokens, teacher-forced; at every position the float32 top-5 ids, and the bf16 run's
logprobs of those ids; "top1" is the max |d| on the top-1 id, "mean5" the mean |d| over all top-5 ids.
CPU, 1 thread; bf16 matmuls accumulate in float32 as the GPU's do.
"""

import json
import os
import sys

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_goldens import fixed_tokenizer  # noqa: E402  (llama.cpp's 'smollm' pre-tokenizer, as ours)

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,", "1, 2, 3, 5, 8,"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "__test__", "goldens", "smollm2-bf16-noise.json")


def main():
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf")
    torch.set_num_threads(1)
    d, f = os.path.split(path)
    tok = fixed_tokenizer(AutoTokenizer.from_pretrained(d, gguf_file=f))
    f32 = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    b16 = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval().to(torch.bfloat16)
    rows, all_d, worst1 = [], [], 0.0
    for text in PROMPTS:
        ids = tok(text).input_ids
        with torch.no_grad():
            for _ in range(24):  # greedy, no EOS stop (the test's ignoreEos)
                ids.append(int(f32(torch.tensor([ids])).logits[0, -1].argmax()))
            x = torch.tensor([ids])
            lp32 = torch.log_softmax(f32(x).logits[0].double(), -1)
            lp16 = torch.log_softmax(b16(x).logits[0].double(), -1)
        top = lp32.topk(5, -1).indices
        d5 = (lp16.gather(1, top) - lp32.gather(1, top)).abs()
        t1 = float(d5[:, 0].max())
        worst1 = max(worst1, t1)
        all_d.append(d5.flatten())
        rows.append({"prompt": text, "top1": round(t1, 4), "mean5": round(float(d5.mean()), 4)})
        print(rows[-1])
    mean5 = float(torch.cat(all_d).mean())
    out = {"model": f, "torch": torch.__version__, "transformers": transformers.__version__,
           "script": "scripts/smollm_bf16_noise.py", "prompts": rows,
           "top1": round(worst1, 4), "mean5": round(mean5, 4)}
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(f"HF bf16 vs f32: top-1 max {worst1:.4f}, mean over top-5 {mean5:.4f} -> {OUT}")


if __name__ == "__main__":
    main()

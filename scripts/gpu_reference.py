"""Reference for the CUDA parity test (crates/radixlm-core/tests/cuda_engine.rs), run on the GPU machine.

Builds a random-weight checkpoint of a real architecture (bench/models/<name>/config.json) in bf16 with
Hugging Face transformers, then writes teacher-forced top-k log-probabilities of random token-id prompts:

    python3 scripts/gpu_reference.py --config bench/models/qwen2.5-0.5b --out /tmp/qwen05 [--seed 0]

--out gets the checkpoint (config.json + model.safetensors, bf16) and reference.json:
    {"prompts": [[ids...]], "top": [[[[id, logprob] x k] per position] per prompt],
     "top_bf16": same from the bf16 model, "bf16_at_top": the bf16 model's logprobs of top's ids}
where top[i][p] is the distribution predicting prompts[i][p + 1] (and, at the last position, the first
generated token). `top` comes from the same weights run in float32 (the weights are bf16 values, so
this is the exact model without bf16 activations): the truth a bf16 engine is measured against.
`top_bf16` is transformers' own bf16 run (its own top-k), and `bf16_at_top` that run's logprobs of exactly
`top`'s ids: its distance to `top` is the noise scale of bf16 inference on this checkpoint.
"""

import argparse
import json
import os

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lens", default="1,37,128,300,700")
    ap.add_argument("--top", type=int, default=5)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    cfg = AutoConfig.from_pretrained(a.config)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.eval()
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)

    g = torch.Generator().manual_seed(a.seed + 1)
    prompts = [torch.randint(0, cfg.vocab_size, (int(n),), generator=g) for n in a.lens.split(",")]

    def logprobs(m):
        out = []
        for ids in prompts:
            with torch.no_grad():
                out.append(torch.log_softmax(m(ids[None].cuda()).logits[0].float(), dim=-1).cpu())
        return out

    def pairs(ids, lps):
        return [[[int(t), float(x)] for t, x in zip(ti, vi)] for ti, vi in zip(ids.tolist(), lps.tolist())]

    lp_bf16 = logprobs(model)
    lp_f32 = logprobs(model.float())
    top_f32, top_bf16, bf16_at_top = [], [], []
    for f32, b16 in zip(lp_f32, lp_bf16):
        v, i = f32.topk(a.top, dim=-1)
        top_f32.append(pairs(i, v))
        vb, ib = b16.topk(a.top, dim=-1)
        top_bf16.append(pairs(ib, vb))
        bf16_at_top.append(pairs(i, b16.gather(-1, i)))
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(
            {
                "prompts": [p.tolist() for p in prompts],
                "top": top_f32,
                "top_bf16": top_bf16,
                "bf16_at_top": bf16_at_top,
            },
            f,
        )
    print(f"wrote {a.out}: {len(prompts)} prompts, lengths {[len(p) for p in prompts]}")


if __name__ == "__main__":
    main()

"""Baseline for bench/RESULTS.md: Hugging Face transformers' generate() on the GPU machine, same card and
call as the radixlm run it is compared with. Random-weight checkpoint (scripts/gpu_reference.py makes
one), bf16, greedy, EOS ignored (min_new_tokens = max_new_tokens), random token-id prompts of one length.

    python3 bench/hf_baseline.py --model /tmp/qwen05 --batch 1,64 --input-len 256 --output-len 128

Prints one JSON line per batch size: {"batch", "input_len", "output_len", "seconds", "output_tok_s"}.
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=128)
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    for bs in (int(b) for b in a.batch.split(",")):
        ids = torch.randint(0, vocab, (bs, a.input_len), generator=g).cuda()
        kw = dict(max_new_tokens=a.output_len, min_new_tokens=a.output_len, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(ids[:, :16], **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = model.generate(ids, **kw)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
        n = (out.shape[1] - a.input_len) * bs
        print(json.dumps({"engine": "transformers", "batch": bs, "input_len": a.input_len, "output_len": a.output_len,
                          "seconds": round(dt, 3), "output_tok_s": round(n / dt, 1)}))


if __name__ == "__main__":
    main()

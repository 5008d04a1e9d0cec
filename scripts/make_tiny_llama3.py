#!/usr/bin/env python3
"""A tiny random-weight Llama 3.1-style checkpoint, saved by transformers itself, and its goldens.

Writes
  __test__/fixtures/tiny-llama3/   config.json + generation_config.json exactly as transformers'
                                   save_pretrained writes them (transformers >= 5 puts rope_theta and the
                                   llama3 scaling under `rope_parameters`), model.safetensors (float32,
                                   untied lm_head), and tiny-qwen2's tokenizer files (copied)
  __test__/goldens/tiny-llama3.json  goldens in the format of scripts/golden_util.py, float64 on CPU
  __test__/fixtures/tiny-llama3.gguf  the same float32 weights as llama.cpp's converter lays them out for
                                   a Llama: q/k rows permuted for its interleaved RoPE, and Llama 3 scaling
                                   as per-pair frequency divisors in the tensor rope_freqs.weight (no
                                   scaling metadata); no tokenizer (the tests feed ids); same goldens

How to rerun (CPU, seconds; needs tiny-qwen2's fixture for the tokenizer; see scripts/README.md):
  python3 scripts/make_tiny_llama3.py

Why this fixture: everything that makes a Llama 3.x checkpoint differ from the others, at a size the
CPU tests afford: RoPE theta 500000 with llama3 frequency scaling (original_max_position_embeddings 32,
so the scaled and smoothed bands fall inside a short prompt: a loader that ignores either the theta or
the scaling fails within a few positions), head_dim 32 set explicitly (hidden / heads would be 16), GQA
4 q heads / 2 kv heads, no biases, an untied lm_head, RMSNorm eps 1e-5. Weights use tiny-qwen2's gains
(real top-1/top-2 margins, attention that depends on position).
"""

import json
import os
import shutil
import sys

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_util import (  # noqa: E402
    N_GREEDY, check_finite, dump_golden, fmt_margin, greedy_full_forward, min_margin, sha256_file, topk_rows,
)
from make_tiny_qwen2 import GAIN, TEXT_PROMPTS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QWEN_DIR = os.path.join(ROOT, "__test__", "fixtures", "tiny-qwen2")
OUT_DIR = os.path.join(ROOT, "__test__", "fixtures", "tiny-llama3")
OUT_GOLDEN = os.path.join(ROOT, "__test__", "goldens", "tiny-llama3.json")
OUT_GGUF = os.path.join(ROOT, "__test__", "fixtures", "tiny-llama3.gguf")


def llama3_freq_divisors(cfg):
    """Per rotated pair, how much Llama 3 scaling divides the frequency (1 = unscaled): the llama3 rule of
    transformers' _compute_llama3_parameters, expressed as the divisor llama.cpp's converter stores."""
    import math

    rp = cfg.rope_parameters
    d, base = cfg.head_dim, rp["rope_theta"]
    factor, lo, hi, orig = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    out = []
    for i in range(d // 2):
        wavelen = 2 * math.pi * base ** (2 * i / d)
        if wavelen < orig / hi:
            out.append(1.0)
        elif wavelen > orig / lo:
            out.append(factor)
        else:
            smooth = (orig / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


def write_gguf(model, cfg):
    """The checkpoint as a llama-architecture GGUF, float32, laid out as llama.cpp's converter does."""
    import gguf
    import numpy as np

    def interleave_rows(w, heads):  # HF half-rotation rows -> llama.cpp's interleaved pairs
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = gguf.GGUFWriter(OUT_GGUF, "llama")
    w.add_name("tiny-llama3")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("rope_freqs.weight", np.array(llama3_freq_divisors(cfg), dtype=np.float32))
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", interleave_rows(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", interleave_rows(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def init_weights(model, n_tok):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("model.embed_tokens.weight", "lm_head.weight"):
                w = torch.randn(p.shape, generator=g) * (1.0 if name.startswith("model") else 1.0 / p.shape[1] ** 0.5)
                w[n_tok:] = 0.0  # padding ids: never picked by greedy
            elif name.endswith("norm.weight"):
                w = 1.0 + 0.25 * (torch.rand(p.shape, generator=g) * 2 - 1)
            elif name.endswith("proj.weight"):
                kind = name.split(".")[-2].split("_")[0]
                w = torch.randn(p.shape, generator=g) * (GAIN[kind] / p.shape[1] ** 0.5)
            else:
                raise SystemExit(f"no init rule for {name}")
            p.copy_(w)


def main():
    import safetensors
    import tokenizers
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    os.makedirs(OUT_DIR)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(QWEN_DIR, f), os.path.join(OUT_DIR, f))
    htok = AutoTokenizer.from_pretrained(OUT_DIR)
    n_tok = len(htok)
    eos, bos = htok.convert_tokens_to_ids("<|im_end|>"), htok.convert_tokens_to_ids("<|endoftext|>")

    cfg = LlamaConfig(
        vocab_size=(n_tok + 63) // 64 * 64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False, attention_bias=False,
        mlp_bias=False, bos_token_id=bos, eos_token_id=eos,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32},
    )
    model = LlamaForCausalLM(cfg)
    init_weights(model, n_tok)
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    written = json.load(open(os.path.join(OUT_DIR, "config.json")))
    rp = written.get("rope_parameters") or {}
    if rp.get("rope_theta") != 500000.0 or rp.get("rope_type") != "llama3" or "rope_theta" in written:
        raise SystemExit(f"expected transformers to write rope_parameters, got {written}")

    model = AutoModelForCausalLM.from_pretrained(OUT_DIR, dtype=torch.float32, attn_implementation="eager").eval()
    if model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr():
        raise SystemExit("lm_head is tied")
    write_gguf(model, model.config)
    model = model.double()

    prompts = []
    for name, text in TEXT_PROMPTS:
        input_ids = htok(text).input_ids
        greedy, gen_logits, prompt_logits = greedy_full_forward(model, input_ids, N_GREEDY)
        check_finite(gen_logits, name)
        mg, _ = min_margin(gen_logits)
        mp, _ = min_margin(prompt_logits)
        prompts.append({
            "name": name, "kind": "text", "text": text, "inputIds": input_ids,
            "idsNoSpecial": htok(text, add_special_tokens=False).input_ids, "greedyIds": greedy,
            "greedyText": htok.decode(greedy, skip_special_tokens=False),
            "minMarginGen": round(mg, 6), "minMarginPrompt": round(mp, 6),
            "top5": topk_rows(gen_logits), "promptTop5": topk_rows(prompt_logits),
        })
        print(f"{name:16s} prompt {len(input_ids):3d} tok  min margin gen {fmt_margin(mg)} prompt {fmt_margin(mp)}"
              f"  distinct {len(set(greedy)):2d}/32  -> {prompts[-1]['greedyText'][:50]!r}")

    header = {
        "model": "tiny-llama3 (random weights, __test__/fixtures/tiny-llama3)",
        "sha256": sha256_file(os.path.join(OUT_DIR, "model.safetensors")),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
        "dtype": "float64 (model.double() of the float32 checkpoint)",
        "logprobs": "log_softmax in float64, rounded to 6 decimals",
        "device": "cpu, 1 thread, eager attention, full forward per greedy step (no KV cache)",
        "script": "scripts/make_tiny_llama3.py", "nGreedy": N_GREEDY, "vocabSize": cfg.vocab_size,
    }
    size = dump_golden(OUT_GOLDEN, header, prompts)
    print(f"wrote {OUT_GOLDEN} ({size} bytes) and {OUT_DIR}")


if __name__ == "__main__":
    main()

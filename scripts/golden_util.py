"""Shared helpers for scripts/make_goldens.py and scripts/make_tiny_qwen2.py.

Golden format (one JSON file per model, see __test__/goldens/README.md):
  top level: model, sha256, torch, transformers, tokenizers, dtype, ..., prompts: [...]
  each prompt:
    name, kind ("text" | "chat"), messages (chat only), text (the exact string that was tokenized),
    inputIds      ids fed to the model = tokenizer(text).input_ids (add_special_tokens default)
    idsNoSpecial  tokenizer(text, add_special_tokens=False).input_ids
    greedyIds     32 greedy tokens (argmax, no EOS stopping)
    greedyText    tokenizer.decode(greedyIds) (special tokens kept), for humans
    top5          for step k in 0..31: top-5 of log_softmax(logits) for the token after
                  inputIds + greedyIds[:k], as [[tokenId, logprob], ...] sorted by logprob desc
    promptTop5    for every prompt position i in 0..len(inputIds)-1: top-5 for the token after
                  inputIds[:i+1] (the last entry predicts greedyIds[0], and equals top5[0])
    minMarginGen / minMarginPrompt   smallest top1 - top2 logprob gap over top5 / promptTop5
"""

import hashlib
import json
import math

import torch

N_GREEDY = 32
TOPK = 5
ROUND = 6


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def topk_rows(logits):
    """logits: [T, V] (any float dtype) -> list of T rows [[id, logprob] x TOPK], log_softmax in float64.

    Ties are broken by the lower token id (stable sort), so the output is deterministic."""
    lp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    out = []
    for row in lp:
        # stable descending sort: equal values keep ascending id order
        order = torch.sort(row, descending=True, stable=True).indices[:TOPK]
        out.append([[int(i), round(float(row[i]), ROUND)] for i in order])
    return out


def margins(rows_lp_full):
    """rows_lp_full: [T, V] float64 log-probs -> list of top1-top2 gaps (unrounded)."""
    top2 = torch.topk(rows_lp_full, 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


@torch.no_grad()
def greedy_full_forward(model, input_ids, n_new=N_GREEDY):
    """Greedy decode with a full (cache-free) forward per step.

    Returns (greedy_ids, gen_logits [n_new, V], prompt_logits [len(input_ids), V]); the logits are the
    model's own dtype. gen_logits[k] is the last-position logits of the forward over
    input_ids + greedy_ids[:k], i.e. teacher-forced on the greedy sequence."""
    seq = list(input_ids)
    gen_logits = []
    prompt_logits = None
    for k in range(n_new):
        ids = torch.tensor([seq], dtype=torch.long)
        logits = model(input_ids=ids, use_cache=False).logits[0]
        if k == 0:
            prompt_logits = logits.clone()
        last = logits[-1]
        gen_logits.append(last.clone())
        # argmax in float64 of the same values, lowest id on ties (torch.argmax returns the first max)
        seq.append(int(torch.argmax(last.to(torch.float64)).item()))
    return seq[len(input_ids):], torch.stack(gen_logits), prompt_logits


def min_margin(logits):
    lp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    m = margins(lp)
    return min(m), m


def dump_golden(path, header, prompts):
    """Write JSON with one key per line and each value compact (diff-friendly, small)."""
    lines = ["{"]
    for k, v in header.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "prompts": [')
    for pi, p in enumerate(prompts):
        lines.append("    {")
        items = list(p.items())
        for i, (k, v) in enumerate(items):
            comma = "," if i + 1 < len(items) else ""
            lines.append(f"      {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'))}{comma}")
        lines.append("    }" + ("," if pi + 1 < len(prompts) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # sanity
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return len(text.encode("utf-8"))


def check_finite(x, what):
    if not torch.isfinite(x).all():
        raise SystemExit(f"non-finite values in {what}")


def fmt_margin(m):
    return "n/a" if m is None or math.isnan(m) else f"{m:.4g}"

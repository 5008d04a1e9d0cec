#!/usr/bin/env python3
"""A tiny random-weight Qwen2 checkpoint with a trained byte-level BPE tokenizer, and its goldens.

Writes
  __test__/fixtures/tiny-qwen2/   config.json, generation_config.json, model.safetensors (float32, tied
                                  embeddings, no lm_head tensor), tokenizer.json, tokenizer_config.json
  __test__/goldens/tiny-qwen2.json   token ids + top-5 logprobs (format: scripts/golden_util.py), computed
                                  in float64 (model.double()) on CPU, full forward per greedy step

How to rerun (CPU, under a minute; see scripts/README.md):
  /tmp/refenv/bin/python scripts/make_tiny_qwen2.py
Deterministic: the corpus is generated here from a fixed seed, the BPE trainer is deterministic, and the
weights come from torch.manual_seed(0); a rerun with the same package versions rewrites identical files.

The model: Qwen2 (QKV bias, GQA 4 q heads / 2 kv heads, head_dim 16, RoPE theta 10000, RMSNorm eps 1e-6,
SwiGLU MLP, tied embeddings), 2 layers, hidden 64, intermediate 128. vocab_size = len(tokenizer) rounded
up to a multiple of 64; the padding rows of the embedding are zero, so greedy never picks an id the
tokenizer lacks. The weights are not HF's N(0, 0.02) init, which gives near-uniform logits whose argmax
flips on rounding: embeddings ~ N(0, 1), projections ~ N(0, gain^2/fan_in), non-zero q/k/v biases and
norm weights around 1, chosen so top-1/top-2 logit gaps are real (the script prints the minimum) and the
residual branches outweigh the token's own embedding (with tied embeddings that would otherwise make
greedy repeat the last input token forever).

The tokenizer is configured like Qwen2's tokenizer.json: NFC normalizer; Split(Qwen2 regex, Isolated)
then ByteLevel(add_prefix_space=false, use_regex=false); ByteLevel post-processor and decoder; BPE with
no unk, 2000 tokens incl. the 256 byte symbols, then the added special tokens <|endoftext|>, <|im_start|>,
<|im_end|>. tokenizer_config.json carries Qwen2.5-Instruct's ChatML chat template (tools branch included).
"""

import json
import os
import random
import sys

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the repo
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_util import (  # noqa: E402
    N_GREEDY, check_finite, dump_golden, fmt_margin, greedy_full_forward, min_margin, sha256_file, topk_rows,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "__test__", "fixtures", "tiny-qwen2")
OUT_GOLDEN = os.path.join(ROOT, "__test__", "goldens", "tiny-qwen2.json")

BPE_VOCAB = 2000
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2.5-Instruct's chat template (the ChatML one with the tools branch and a default system prompt).
CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# ---------------------------------------------------------------------------------------------------------
# Training corpus: fixed prose plus sentences drawn with a seeded RNG (no files, no downloads).
PROSE = """\
The river runs through the old town, past the market and the stone bridge, and then out into the fields.
In the morning the bakers open their shops early, and the smell of fresh bread fills the narrow streets.
Children walk to school in small groups, talking about games, homework and the weather.
A good engine must be fast, but it must also be correct: every token it returns should be the one the model chose.
When the cache is full, the scheduler evicts the least recently used pages and keeps the ones that are locked.
The capital of France is Paris. The capital of Japan is Tokyo. The capital of Italy is Rome.
Water boils at one hundred degrees Celsius at sea level, and it freezes at zero degrees.
The three primary colors are red, yellow and blue; mixing them gives orange, green and purple.
Once upon a time, there was a little robot who wanted to learn how to paint the sky.
She said: "I'm sure they'll come back tomorrow, and we've got plenty of time." He didn't agree.
It's a simple idea. You're right. We'd better go. They've left. I'll call you. She'd know.
Numbers like 3, 14, 159, 2024 and 1,000,000 appear in text; so do dates such as 2024-11-25 and times like 09:30.
Prices: $4.99, 12.50 EUR, 100% and 3/4 of a cup. Versions: v1.2.3, 0.11.1, 2.15.0.
Questions? Answers! Lists: apples, pears, plums... and (parentheses), [brackets], {braces} and <angles>.
Café, naïve, résumé, façade and Ångström keep their accents. Straße, smørrebrød, jalapeño.
Unicode text: 日本の首都は東京です。你好，世界！안녕하세요. Привет, мир. مرحبا. 🚀 🙂 ✨ 🐍.
def add(a, b):
    \"\"\"Return the sum of a and b.\"\"\"
    return a + b

for i in range(10):
    if i % 2 == 0:
        print(i, "is even")
    else:
        print(i, "is odd")

class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

import json
data = json.loads('{"name": "tiny", "layers": 2, "hidden": 64}')
print(data["name"])
"""

WORDS = """the of and to in is was that for it with as on be at by this had not are but from or have an they
which one you were her all she there would their we him been has when who will more no if out so said what up its
about into than them can only other new some could time these two may then do first any my now such like our over
man me even most made after also did many before must through back years where much your way well down should
because each just those people how too little state good very make world still own see men work long get here
between both life being under never day same another know while last might us great old year off come since
against go came right used take three states himself few house use during without again place around however home
small found thought went say part once general high upon school every don't does got united left number course war
until always away something fact though water less public put think almost hand enough far took head yet
government system better set told nothing night end why called didn't eyes find going look asked later point
knew city next program business give group toward young days let room president side social given present
several order national possible rather second face per among form important often things looked early white
case john become large big need four within felt along children saw best church ever least power development
light thing seemed family interest want members mind country area others done turned although open god service
certain kind problem began different door thus help sense means whole matter perhaps itself york times law human
line above name example action company hands local show whether five history gave today either act feet across
taken past quite anything seen having death week experience body word half really field am car words already
themselves i'm information tell together college shall money period held keep sure probably free seems political
real cannot behind miss question air office making brought whose special major heard problems ago became federal
study available known result street economic boy position reason change south board individual job society areas
west close turn love community true court force full seem am value front voice woman policy engine token model
cache page tensor kernel batch request prompt stream decode sample layer weight matrix vector attention""".split()


def corpus():
    rng = random.Random(0)
    lines = PROSE.splitlines() * 8
    for _ in range(6000):
        n = rng.randint(4, 14)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randint(0, n), str(rng.randint(0, 99999)))
        s = " ".join(words)
        s = s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ",", ";", ":"])
        lines.append(s)
    rng.shuffle(lines)
    return lines


def build_tokenizer():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = BpeTrainer(vocab_size=BPE_VOCAB, min_frequency=2, show_progress=False, special_tokens=[],
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    if tok.get_vocab_size() != BPE_VOCAB:
        raise SystemExit(f"trained vocab is {tok.get_vocab_size()}, wanted {BPE_VOCAB}: corpus too small")
    tok.add_special_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                       special=True) for t in SPECIAL])
    return tok


def save_tokenizer_json(tok, path):
    """Save in the layout of Qwen2.5's own tokenizer.json: merges as "a b" strings (the legacy form that
    the hub files use; the trained tokenizer would write [a, b] pairs), "" prefixes/suffixes, and a
    ByteLevel decoder with all flags false (the Python binding writes its defaults). Then check that the
    rewritten file encodes exactly like the trained tokenizer."""
    from tokenizers import Tokenizer

    j = json.loads(tok.to_str())
    m = j["model"]
    for a, b in m["merges"]:
        if " " in a or " " in b:
            raise SystemExit(f"merge {a!r} {b!r} cannot be written as a string")
    m["merges"] = [f"{a} {b}" for a, b in m["merges"]]
    m["continuing_subword_prefix"] = ""
    m["end_of_word_suffix"] = ""
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, indent=2, ensure_ascii=False)
        f.write("\n")
    back = Tokenizer.from_file(path)
    probe = PROSE + "".join(t for _, t in TEXT_PROMPTS) + "<|im_start|>user\nhi<|im_end|>\n"
    if back.encode(probe).ids != tok.encode(probe).ids:
        raise SystemExit("rewritten tokenizer.json encodes differently")
    ids = back.encode(probe).ids
    if back.decode(ids, skip_special_tokens=False) != tok.normalizer.normalize_str(probe):
        raise SystemExit("rewritten tokenizer.json does not round-trip")


def tokenizer_config(tok):
    added = {}
    for t in SPECIAL:
        added[str(tok.token_to_id(t))] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 512,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def model_config(n_tok, ids):
    vocab = (n_tok + 63) // 64 * 64
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "max_window_layers": 2,
        "model_type": "qwen2",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "sliding_window": 512,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab,
    }


# Init gains (see the module docstring), picked by a small sweep. q/k gain 2 gives attention scores of
# std ~4: attention depends on content and position (RoPE) without being one-hot, so a wrong softmax scale
# still shows. o/down gain 10 makes the residual branches outweigh the token's own embedding: at gain 3,
# 70% of greedy steps repeated the previous token (useless for KV-cache tests); at 10, about 10%.
GAIN = {"q": 2.0, "k": 2.0, "v": 1.0, "o": 10.0, "gate": 1.0, "up": 1.0, "down": 10.0}
BIAS_STD = 0.5


def init_weights(model, n_tok):
    g = torch.Generator().manual_seed(0)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    with torch.no_grad():
        for name, p in model.named_parameters():  # named_parameters order is fixed by the module tree
            if name == "model.embed_tokens.weight":
                w = normal(p.shape, 1.0)
                w[n_tok:] = 0.0
            elif name.endswith("norm.weight"):
                w = 1.0 + 0.25 * (torch.rand(p.shape, generator=g) * 2 - 1)
            elif name.endswith(".bias"):
                w = normal(p.shape, BIAS_STD)
            elif name.endswith("proj.weight"):
                kind = name.split(".")[-2].split("_")[0]
                w = normal(p.shape, GAIN[kind] / p.shape[1] ** 0.5)
            else:
                raise SystemExit(f"no init rule for {name}")
            p.copy_(w)


TEXT_PROMPTS = [
    ("capital", "The capital of France is"),
    ("story", "Once upon a time, there was a little robot who"),
    ("code", "def add(a, b):\n    \"\"\"Return the sum.\"\"\"\n    return a + b\n\nfor i in range(3):\n"),
    # 'e' + U+0301 must be NFC-normalized to 'é' before the split; digits are split one by one
    ("digits_unicode", "In 2024, 12345 + 678 = 13023. Cafe\u0301 naïve 日本の首都 🚀  end"),
    ("paragraph",
     "When the cache is full, the scheduler evicts the least recently used pages and keeps the ones that are "
     "locked. A good engine must be fast, but it must also be correct: every token it returns should be the "
     "one the model chose. The river runs through the old town, past the market and the stone bridge."),
]
CHAT_PROMPTS = [
    ("chat_default_system", [{"role": "user", "content": "What is the capital of France?"}]),
    ("chat_multi", [
        {"role": "system", "content": "You are a tiny test model."},
        {"role": "user", "content": "Name a primary color."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "And another one?"},
    ]),
]


def main():
    import safetensors
    import tokenizers
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)

    # --- tokenizer ---
    tok = build_tokenizer()
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    save_tokenizer_json(tok, os.path.join(OUT_DIR, "tokenizer.json"))
    with open(os.path.join(OUT_DIR, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(tok), f, indent=2, ensure_ascii=False)
        f.write("\n")

    # --- model ---
    cfg = model_config(n_tok, ids)
    with open(os.path.join(OUT_DIR, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT_DIR, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
                   "pad_token_id": ids["<|endoftext|>"]}, f, indent=2)
        f.write("\n")
    hf_cfg = Qwen2Config.from_pretrained(OUT_DIR)
    model = Qwen2ForCausalLM(hf_cfg)
    init_weights(model, n_tok)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, os.path.join(OUT_DIR, "model.safetensors"), metadata={"format": "pt"})

    # --- reload exactly what was written, as a user of the fixture would ---
    htok = AutoTokenizer.from_pretrained(OUT_DIR)
    model = AutoModelForCausalLM.from_pretrained(OUT_DIR, dtype=torch.float32, attn_implementation="eager").eval()
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise SystemExit("lm_head is not tied")
    for n, p in model.named_parameters():
        if n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")) and not p.abs().gt(0).all():
            raise SystemExit(f"{n} has zeros")
    model = model.double()

    entries = [(n, "text", None, t) for n, t in TEXT_PROMPTS]
    for n, msgs in CHAT_PROMPTS:
        text = htok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids_tmpl = list(htok.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"])
        if ids_tmpl != htok(text).input_ids:
            raise SystemExit(f"{n}: apply_chat_template ids differ from tokenizing the rendered text")
        entries.append((n, "chat", msgs, text))

    prompts, gen_m, prompt_m, all_margins = [], [], [], []
    repeats = steps = 0
    bos_added = False
    for name, kind, msgs, text in entries:
        input_ids = htok(text).input_ids
        no_special = htok(text, add_special_tokens=False).input_ids
        bos_added |= input_ids != no_special
        if tok.encode(text).ids != input_ids:
            raise SystemExit(f"{name}: tokenizers and transformers disagree")
        greedy, gen_logits, prompt_logits = greedy_full_forward(model, input_ids, N_GREEDY)
        check_finite(gen_logits, name)
        mg, mgl = min_margin(gen_logits)
        mp, mpl = min_margin(prompt_logits)
        gen_m.append(mg)
        prompt_m.append(mp)
        all_margins += mgl + mpl
        seq = input_ids + greedy
        repeats += sum(seq[i] == seq[i - 1] for i in range(len(input_ids), len(seq)))
        steps += N_GREEDY
        p = {"name": name, "kind": kind}
        if msgs is not None:
            p["messages"] = msgs
        p.update({
            "text": text,
            "inputIds": input_ids,
            "idsNoSpecial": no_special,
            "greedyIds": greedy,
            "greedyText": htok.decode(greedy, skip_special_tokens=False),
            "minMarginGen": round(mg, 6),
            "minMarginPrompt": round(mp, 6),
            "top5": topk_rows(gen_logits),
            "promptTop5": topk_rows(prompt_logits),
        })
        prompts.append(p)
        print(f"{name:20s} prompt {len(input_ids):3d} tok  min margin gen {fmt_margin(mg)} prompt {fmt_margin(mp)}"
              f"  distinct {len(set(greedy)):2d}/32  -> {p['greedyText'][:50]!r}")

    # float32 vs float64 drift of this model, for choosing test tolerances
    model32 = AutoModelForCausalLM.from_pretrained(OUT_DIR, dtype=torch.float32, attn_implementation="eager").eval()
    drift = 0.0
    flips = 0
    with torch.no_grad():
        for p in prompts:
            full = torch.tensor([p["inputIds"] + p["greedyIds"][:-1]])
            lp = torch.log_softmax(model32(input_ids=full, use_cache=False).logits[0].double(), -1)
            for pos, row in enumerate(p["promptTop5"][:-1] + p["top5"]):
                for tid, ref in row:
                    drift = max(drift, abs(lp[pos, tid].item() - ref))
            n = len(p["inputIds"])
            flips += int((lp[n - 1:].argmax(-1) != torch.tensor(p["greedyIds"])).sum())

    small = {t: sum(m < t for m in all_margins) for t in (1e-3, 1e-2, 1e-1)}
    header = {
        "model": "tiny-qwen2 (random weights, __test__/fixtures/tiny-qwen2)",
        "sha256": sha256_file(os.path.join(OUT_DIR, "model.safetensors")),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "dtype": "float64 (model.double() of the float32 checkpoint)",
        "logprobs": "log_softmax in float64, rounded to 6 decimals",
        "device": "cpu, 1 thread, eager attention, full forward per greedy step (no KV cache)",
        "script": "scripts/make_tiny_qwen2.py",
        "nGreedy": N_GREEDY,
        "bosAdded": bos_added,
        "specialTokens": ids,
        "eosTokenIds": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "vocabSize": cfg["vocab_size"],
        "tokenizerSize": n_tok,
        "referenceCheck": {
            "f32MaxAbsDiff": round(drift, 8), "f32GreedyFlips": flips,
            "note": "max |logprob difference| over the golden top-5 ids at every position between these float64 "
                    "goldens and one teacher-forced float32 forward of the whole sequence",
        },
        "marginsBelow": {f"{t:g}": c for t, c in small.items()},
        "nPositions": len(all_margins),
        "minMarginGen": round(min(gen_m), 6),
        "minMarginPrompt": round(min(prompt_m), 6),
    }
    size = dump_golden(OUT_GOLDEN, header, prompts)
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR))
    print(f"tokenizer: {n_tok} tokens (BPE {BPE_VOCAB} + {len(SPECIAL)} special {ids}), model vocab {cfg['vocab_size']}")
    print(f"greedy steps repeating the previous token: {repeats}/{steps}")
    print(f"positions {len(all_margins)}, margins below 1e-3/1e-2/1e-1: {small[1e-3]}/{small[1e-2]}/{small[1e-1]}")
    print(f"min margin gen {fmt_margin(min(gen_m))} prompt {fmt_margin(min(prompt_m))}; "
          f"float32 drift {drift:.3g}, {flips} greedy flips")
    print(f"wrote {OUT_DIR}/ ({total} bytes) and {OUT_GOLDEN} ({size} bytes)")


if __name__ == "__main__":
    main()

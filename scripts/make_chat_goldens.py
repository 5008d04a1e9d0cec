#!/usr/bin/env python3
"""Chat-template goldens: what Hugging Face transformers' `apply_chat_template` renders, and the token ids it
produces, for a set of conversations under three templates.

Writes
  __test__/goldens/chat-templates.json

Templates (two from models, two synthetic)
  smollm2   SmolLM2-135M-Instruct's template, read from the GGUF metadata (`tokenizer.chat_template`) with
            gguf-py; tokenized with __test__/fixtures/smollm2-tokenizer (the tokenizer transformers builds from
            that GGUF, see make_goldens.py). The script checks the fixture carries the same template.
  qwen2     Qwen2.5-Instruct's ChatML template with tool support, from
            __test__/fixtures/tiny-qwen2/tokenizer_config.json; tokenized with that fixture's tokenizer.
  features  A synthetic template written for this file (no model ships it). It exercises what real chat
            templates lean on and the two simple templates above do not: trim_blocks / lstrip_blocks around
            indented tags, namespace(), slicing, Python string and dict methods (.strip(), .split(),
            .lstrip(), .startswith(), .get(), .items()), `tojson` with indent / sort_keys / ensure_ascii /
            separators, printing of dicts, lists, booleans, None and floats (Python's str()), tools and
            documents, chat_template_kwargs, bos/eos tokens, content given as a list of parts,
            {% generation %} blocks, raise_exception() and strftime_now(). Rendered only (no ids): it
            is the rendering engine under test, not a tokenizer.
  strict    Synthetic too, in the style of templates that enforce turn order (Gemma, Mistral): role
            alternation checked with raise_exception, `x | trim + '...'` precedence, conditional expressions,
            '-' whitespace control on both sides, tojson(indent=4), a kwarg read with a default. Rendered only.

Each case: `name`, `template`, `request` (exactly what a radixlm user passes: `messages` plus optional
`tools`, `documents`, `chatTemplateKwargs`, `addGenerationPrompt`), then either `text` (the rendered
string) and, for smollm2 / qwen2, `ids` (transformers' token ids of that text, add_special_tokens=False,
which is what `apply_chat_template(tokenize=True)` does), or `error` (the message of the exception
transformers raised, and `errorType`, its class name).

Rendering calls `tokenizer.apply_chat_template(messages, tools=..., documents=..., add_generation_prompt=...,
tokenize=False, chat_template=<template>, **chat_template_kwargs)`, the same call a transformers user makes.
Floats in the conversations are never integral (3.0 would reach a JavaScript caller as 3) and integers stay
below 2**53.

How to rerun (CPU, a few seconds; see scripts/README.md):
  /tmp/refenv/bin/pip install -r scripts/requirements-ref.txt
  /tmp/refenv/bin/python scripts/make_chat_goldens.py [--gguf ~/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf]
Deterministic: rerunning with the pinned versions rewrites a byte-identical file.
"""

import argparse
import hashlib
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the repo

import gguf  # noqa: E402
import jinja2  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GGUF = os.path.join(
    os.environ.get("RADIXLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "radixlm"),
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
SMOL_TOK = os.path.join(ROOT, "__test__", "fixtures", "smollm2-tokenizer")
QWEN_DIR = os.path.join(ROOT, "__test__", "fixtures", "tiny-qwen2")
OUT = os.path.join(ROOT, "__test__", "goldens", "chat-templates.json")

# The synthetic template. Indented tags without '-' check trim_blocks / lstrip_blocks; '{{- ... }}' and
# '{%- ... %}' check explicit whitespace control.
FEATURES_TEMPLATE = """{#- Synthetic: exercises the Jinja features real chat templates use. -#}
{{- bos_token }}
{%- set ns = namespace(system='', last_user=-1, n=0) %}
{%- for m in messages %}
    {%- if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}
{%- endfor %}
{%- if messages[0].role == 'system' %}
    {%- set ns.system = messages[0].content | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if ns.system %}
<<SYS>>{{ ns.system }}<</SYS>>
{% endif %}
{%- if tools is not none %}
TOOLS {{ tools | length }}:
    {%- for t in tools %}
{{ t | tojson }}
{{ t.function | tojson(indent=2) }}
{{ t.function.parameters | tojson(sort_keys=true) }}
    {%- endfor %}

{% endif %}
{%- if documents %}
    {%- for d in documents %}
[doc {{ loop.index }}/{{ loop.length }}] {{ d.title }}: {{ d.text }}
    {%- endfor %}

{% endif %}
{% for m in loop_messages %}
  {% if m.role not in ['user', 'assistant', 'tool'] %}
    {{ raise_exception('Unknown role: ' ~ m.role) }}
  {% endif %}
  {% set ns.n = ns.n + 1 %}
<{{ m.role | upper }} {{ ns.n }}{% if loop.last %} last{% endif %}{% if loop.index0 + 1 == ns.last_user %} (last user){% endif %}>
  {% if m.content is string %}
    {% if m.role == 'assistant' %}
{% generation %}{{ m.content.split('</think>')[-1].lstrip() }}{% endgeneration %}
    {% else %}
{{ m.content.strip() }}
    {% endif %}
  {% elif m.content is iterable %}
    {% for part in m.content %}
      {% if part.type == 'text' %}[text]{{ part.text }}{% elif part.type == 'image' %}[image]{% else %}[{{ part.type }}]{% endif %}
    {% endfor %}

  {% endif %}
  {% if m.reasoning_content is defined %}
(reasoning: {{ m.reasoning_content }} / thinking: {{ m.thinking }})
  {% endif %}
  {% if m.tool_calls %}
    {% for tc in m.tool_calls %}
call {{ tc.function.name }} {{ tc.function.arguments | tojson(ensure_ascii=true) }}
{{ tc.function.arguments | tojson(separators=(',', ':')) }}
      {%- for k, v in tc.function.arguments.items() %} {{ k }}={{ v }}{% endfor %}

    {% endfor %}
  {% endif %}
{{ m | tojson }}
{% endfor %}
meta: {{ messages[0] }} | {{ true }} {{ none }} {{ 1.5 }} {{ 10 / 4 }} {{ 7 // 2 }} {{ 1e-7 }} {{ messages | length }}
{{ messages[-1].get('name', 'anon') }} {{ messages[0].role.startswith('sys') }} {{ 'a,b,,c'.split(',') }} {{ (1, 'two', 3.25, none, false) | list }} {{ strftime_now('%Y') | length }}
{%- if extra is defined %}
extra: {{ extra }} / {{ extra | tojson }} /{% for k, v in extra.items() %} {{ k }}->{{ v }}{% endfor %}
{%- endif %}
{%- if add_generation_prompt %}

<ASSISTANT>
    {%- if enable_thinking is defined and enable_thinking is false %}
<think>

</think>

    {%- endif %}
{%- else %}
{{ eos_token }}
{%- endif %}
"""

# A second synthetic template in the style of templates that enforce turn order (Gemma, Mistral): role
# alternation checked with raise_exception, filters binding tighter than `+`, conditional expressions,
# whitespace control with '-' on both sides, a tool list with tojson(indent=4).
STRICT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] | trim + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- set tools_first = true if tools_first is not defined else tools_first -%}
{%- if tools is not none and tools_first -%}
    {{- '<tools>\n' }}{% for t in tools %}{{ t | tojson(indent=4) }}{{ '\n' }}{% endfor %}{{ '</tools>\n' -}}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<turn>model\n' }}
{%- endif -%}
"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location (°C or °F) — e.g. \"Paris\" & <Lyon>",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and country, e.g. San Francisco, US"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {
                "tz": {"type": "string", "description": "IANA zone like Europe/Paris"},
                "precision": {"type": "number", "minimum": 0.5, "maximum": 60.25},
            },
            "required": ["tz"],
        },
    },
}

SPECIAL = 'Is 5 > 3 && 2 < 4? <b>"Tom" & \'Jerry\'</b> naïve café, 日本語, emoji 🦀🚀👍🏽, tab\there\\n literal'

SYSTEM_MULTI = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name a primary color."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another one?"},
]
SYSTEM_MULTI_DONE = SYSTEM_MULTI + [{"role": "assistant", "content": "Blue."}]

TOOL_CALL_CHAT = [
    {"role": "user", "content": "What's the weather in Paris and the time there?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_current_weather", "arguments": {"location": "Paris, FR", "unit": "celsius"}}},
            {"type": "function", "function": {"name": "get_time", "arguments": {"tz": "Europe/Paris", "precision": 0.5}}},
        ],
    },
    {"role": "tool", "name": "get_current_weather", "content": '{"temperature": 21.5, "sky": "clear"}'},
    {"role": "tool", "name": "get_time", "content": "14:05"},
]


def cases():
    """(name, template, request). `request` uses radixlm's camelCase keys."""
    out = []
    for tpl in ("smollm2", "qwen2"):
        out += [
            (f"{tpl}/single_user", tpl, {"messages": [{"role": "user", "content": "What is the capital of France?"}]}),
            (f"{tpl}/system_multi_turn", tpl, {"messages": SYSTEM_MULTI}),
            (f"{tpl}/multi_turn_no_generation_prompt", tpl, {"messages": SYSTEM_MULTI_DONE, "addGenerationPrompt": False}),
            (f"{tpl}/special_characters", tpl, {"messages": [
                {"role": "system", "content": "Reply with <xml> & \"json\"."},
                {"role": "user", "content": SPECIAL},
                {"role": "assistant", "content": "Ça va 😀 </s> <|endoftext|> done"},
                {"role": "user", "content": "Again:\n\n  indented\n"},
            ]}),
            # null keys are dropped before rendering (transformers' _normalize_chat_messages); `name` is ignored
            # by both templates.
            (f"{tpl}/extra_and_null_keys", tpl, {"messages": [
                {"role": "user", "content": "hi", "name": "alice", "tool_calls": None},
            ]}),
        ]
    out += [
        # SmolLM2's template concatenates message['content']: a missing content is a jinja2 UndefinedError.
        ("smollm2/error_missing_content", "smollm2", {"messages": [{"role": "user"}]}),
        ("qwen2/tools", "qwen2", {
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [WEATHER_TOOL, TIME_TOOL],
        }),
        ("qwen2/tools_with_system", "qwen2", {
            "messages": [{"role": "system", "content": "You are a weather bot."}, {"role": "user", "content": "Weather in Lyon?"}],
            "tools": [WEATHER_TOOL],
        }),
        ("qwen2/tool_calls_and_replies", "qwen2", {"messages": TOOL_CALL_CHAT, "tools": [WEATHER_TOOL, TIME_TOOL]}),
        ("qwen2/tool_calls_with_content_no_tools", "qwen2", {"messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"function": {"name": "get_current_weather", "arguments": '{"location": "Oslo"}'}},
            ]},
            {"role": "tool", "content": "cold"},
            {"role": "assistant", "content": "It is cold in Oslo."},
        ], "addGenerationPrompt": False}),
        ("features/basic", "features", {"messages": [
            {"role": "system", "content": "  Be brief.  "},
            {"role": "user", "content": "  Hello there!  ", "name": "bob"},
            {"role": "assistant", "content": "<think>plan</think>\n\nHi Bob."},
            {"role": "user", "content": SPECIAL},
        ]}),
        ("features/tools_documents_kwargs", "features", {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Describe this"}, {"type": "image"}, {"type": "audio"}]},
                {"role": "assistant", "content": "On it.", "reasoning_content": "user wants a description", "tool_calls": [
                    {"type": "function", "function": {"name": "get_time", "arguments": {"tz": "Asia/Tōkyō", "precision": 0.25, "ok": True, "n": None, "tags": ["a", "b"]}}},
                ]},
                {"role": "tool", "content": "12:00"},
            ],
            "tools": [TIME_TOOL],
            "documents": [{"title": "Doc <A>", "text": "First & foremost."}, {"title": "B", "text": "Second."}],
            "chatTemplateKwargs": {"enable_thinking": False, "extra": {"k": "v'q", "x": [1, 2.5, True, None], "s": "it's \"q\""}},
        }),
        ("features/no_generation_prompt", "features", {"messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "thinking": "greet back"},
        ], "addGenerationPrompt": False}),
        ("strict/alternating", "strict", {"messages": [
            {"role": "system", "content": "  Be exact.  "},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  What is this?  "}]},
            {"role": "assistant", "content": "A cat. "},
            {"role": "user", "content": "Sure?"},
        ], "tools": [TIME_TOOL]}),
        ("strict/tools_after_kwarg", "strict", {"messages": [{"role": "user", "content": "hi"}], "tools": [TIME_TOOL],
                                                "chatTemplateKwargs": {"tools_first": False}, "addGenerationPrompt": False}),
        ("strict/not_alternating", "strict", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
        ("strict/invalid_content", "strict", {"messages": [{"role": "user", "content": 42}]}),
        ("features/raise_exception", "features", {"messages": [{"role": "user", "content": "x"}, {"role": "bogus", "content": "y"}]}),
    ]
    return out


def read_gguf_template(path):
    reader = gguf.GGUFReader(path)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    args = ap.parse_args()

    smol_template = read_gguf_template(args.gguf)
    smol_tok = AutoTokenizer.from_pretrained(SMOL_TOK)
    if smol_tok.chat_template != smol_template:
        sys.exit("the smollm2-tokenizer fixture's chat template differs from the GGUF's")
    qwen_tok = AutoTokenizer.from_pretrained(QWEN_DIR)
    with open(os.path.join(QWEN_DIR, "tokenizer_config.json"), encoding="utf-8") as f:
        qwen_template = json.load(f)["chat_template"]

    templates = {
        "smollm2": {
            "source": "GGUF metadata tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf",
            "ggufSha256": sha256_file(args.gguf),
            "tokenizer": "__test__/fixtures/smollm2-tokenizer",
            "template": smol_template,
        },
        "qwen2": {
            "source": "__test__/fixtures/tiny-qwen2/tokenizer_config.json chat_template (Qwen2.5-Instruct)",
            "tokenizer": "__test__/fixtures/tiny-qwen2",
            "template": qwen_template,
        },
        "features": {
            "source": "synthetic, written in scripts/make_chat_goldens.py; rendered with the smollm2 tokenizer's special tokens",
            "tokenizer": "__test__/fixtures/smollm2-tokenizer",
            "template": FEATURES_TEMPLATE,
        },
    }
    templates["strict"] = {
        "source": "synthetic, written in scripts/make_chat_goldens.py; rendered with the smollm2 tokenizer's special tokens",
        "tokenizer": "__test__/fixtures/smollm2-tokenizer",
        "template": STRICT_TEMPLATE,
    }
    tok_for = {"smollm2": smol_tok, "qwen2": qwen_tok, "features": smol_tok, "strict": smol_tok}
    for name, t in templates.items():
        tok = tok_for[name]
        t["bosToken"] = tok.bos_token
        t["eosToken"] = tok.eos_token

    out_cases = []
    for name, tpl, request in cases():
        tok = tok_for[tpl]
        kwargs = dict(request.get("chatTemplateKwargs") or {})
        call = dict(
            tools=request.get("tools"),
            documents=request.get("documents"),
            add_generation_prompt=request.get("addGenerationPrompt", True),
            chat_template=templates[tpl]["template"],
            **kwargs,
        )
        case = {"name": name, "template": tpl, "request": request}
        try:
            text = tok.apply_chat_template(request["messages"], tokenize=False, **call)
        except Exception as e:  # the golden records what transformers raised
            case["error"] = str(e)
            case["errorType"] = type(e).__name__
            out_cases.append(case)
            print(f"{name}: raises {type(e).__name__}: {e}")
            continue
        case["text"] = text
        if tpl in ("smollm2", "qwen2"):
            ids = tok.apply_chat_template(request["messages"], tokenize=True, return_dict=False, **call)
            if ids != tok(text, add_special_tokens=False)["input_ids"]:
                sys.exit(f"{name}: tokenize=True disagrees with tokenizing the text without special tokens")
            case["ids"] = ids
        out_cases.append(case)
        print(f"{name}: {len(text)} chars" + (f", {len(case['ids'])} ids" if "ids" in case else ""))

    header = {
        "_comment": "Written by scripts/make_chat_goldens.py from Hugging Face transformers' apply_chat_template; see its docstring.",
        "versions": {
            "transformers": transformers.__version__,
            "jinja2": jinja2.__version__,
            "tokenizers": tokenizers.__version__,
            "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        },
        "addGenerationPromptDefault": True,
        "templates": templates,
    }
    lines = ["{"]
    for k, v in header.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "cases": [')
    for i, c in enumerate(out_cases):
        comma = "," if i + 1 < len(out_cases) else ""
        lines.append(f"    {json.dumps(c, ensure_ascii=False)}{comma}")
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT} ({len(out_cases)} cases, {len(text.encode('utf-8'))} bytes)")


def _dist_version(name):
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()

"""Write variant configs of a base config.json for bisecting a parity gap (one dir per variant)."""
import json, os, sys
base = json.load(open(sys.argv[1]))
out = sys.argv[2]
V = {
    "A-2l": dict(num_hidden_layers=2, vocab_size=32768),
    "B-2l-norope": dict(num_hidden_layers=2, vocab_size=32768, rope_scaling=None),
    "C-2l-mha": dict(num_hidden_layers=2, vocab_size=32768, num_key_value_heads=32),
    "D-2l-narrow": dict(num_hidden_layers=2, vocab_size=32768, hidden_size=1024, intermediate_size=3584,
                        num_attention_heads=8, num_key_value_heads=2),
    "E-8l": dict(num_hidden_layers=8, vocab_size=32768),
    "F-8l-norope": dict(num_hidden_layers=8, vocab_size=32768, rope_scaling=None),
}
for name, d in V.items():
    c = dict(base); c.update(d)
    os.makedirs(f"{out}/{name}", exist_ok=True)
    json.dump(c, open(f"{out}/{name}/config.json", "w"), indent=1)
    print(name)

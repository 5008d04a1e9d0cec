// Compare llama.cpp (node-llama-cpp, CPU) with the transformers goldens of SmolLM2-135M-Instruct Q4_1:
// tokenization of every golden text, and teacher-forced next-token log-probs along the golden greedy
// sequence. Not a test: it measures how far a real Q4_1 engine (quantized matmuls, activations rounded to
// Q8_1) sits from the dequantized float32 reference, which is what test tolerances must allow for.
//
//   mkdir -p /tmp/nlc && (cd /tmp/nlc && npm init -y && npm install node-llama-cpp@3.21.1)
//   node scripts/compare_llamacpp.mjs /tmp/nlc [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [modDir = "/tmp/nlc", gguf = "/root/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf"] = process.argv.slice(2);
const { getLlama } = await import(pathToFileURL(path.join(modDir, "node_modules/node-llama-cpp/dist/index.js")));
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const golden = JSON.parse(fs.readFileSync(path.join(root, "__test__/goldens/smollm2-135m-instruct.json"), "utf8"));

const llama = await getLlama({ gpu: false, build: "never" });
const model = await llama.loadModel({ modelPath: gguf });
const ctx = await model.createContext({ contextSize: 512, threads: 1 });
const top1 = [], top5 = [];
let flips = 0, steps = 0, flipMargins = [];
for (const p of golden.prompts) {
  const ids = Array.from(model.tokenize(p.text, true));
  const tokOk = JSON.stringify(ids) === JSON.stringify(p.inputIds);
  const seq = ctx.getSequence();
  // temperature 1 and no filtering: `probabilities` is then the full softmax; each step is fed the
  // golden token (teacher forcing), whatever was sampled
  const it = seq.evaluateWithMetadata(p.inputIds, { probabilities: true },
    { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1, yieldEogToken: true });
  let r = await it.next(), f = 0, d5 = 0;
  for (let k = 0; k < p.greedyIds.length; k++) {
    const probs = r.value.probabilities;
    let best = -1, bp = -1;
    for (const [t, q] of probs) if (q > bp) { bp = q; best = t; }
    const row = p.top5[k];
    if (best !== p.greedyIds[k]) { f++; flipMargins.push(row[0][1] - row[1][1]); }
    top1.push(Math.abs(Math.log(probs.get(row[0][0])) - row[0][1]));
    let s5 = 0;
    for (const [t, lp] of row) s5 = Math.max(s5, Math.abs(Math.log(probs.get(t) ?? 1e-30) - lp));
    top5.push(s5);
    d5 = Math.max(d5, s5);
    if (k + 1 < p.greedyIds.length) r = await it.next(p.greedyIds[k]);
  }
  await it.return();
  seq.dispose();
  flips += f; steps += p.greedyIds.length;
  console.log(`${p.name.padEnd(18)} tokens==golden ${String(tokOk).padEnd(5)} argmax!=golden ${f}/${p.greedyIds.length}` +
    `  max|dlogprob| top5 ${d5.toFixed(4)}`);
  if (!tokOk) console.log(`  llama.cpp ${JSON.stringify(ids)}\n  golden    ${JSON.stringify(p.inputIds)}`);
}
const q = (a, x) => [...a].sort((u, v) => u - v)[Math.min(a.length - 1, Math.floor(a.length * x))].toFixed(4);
console.log(`top-1 |dlogprob|: median ${q(top1, 0.5)} p90 ${q(top1, 0.9)} max ${q(top1, 1)}; ` +
  `top-5 max per step: median ${q(top5, 0.5)} max ${q(top5, 1)}; argmax flips ${flips}/${steps} ` +
  `at golden margins ${flipMargins.map((m) => m.toFixed(3)).join(" ")}`);
process.exit(0);

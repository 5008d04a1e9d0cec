// Per-position teacher-forced error of our engine against reference.json (scripts/gpu_reference.py):
// for each prompt, the max |d| over the reference's top-5 ids at each position, printed as a profile.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const { Engine } = createRequire(import.meta.url)('../../dist/index.js');
const dir = process.argv[2];
const ref = JSON.parse(readFileSync(`${dir}/reference.json`, 'utf8'));
const engine = await Engine.create({ modelPath: dir, device: process.env.DEV ?? 'cuda', skipTokenizerInit: true, contextLength: 4096 });
for (const [i, ids] of ref.prompts.entries()) {
  if (ids.length < 2) continue;
  const out = await engine.generate({ inputIds: ids }, { maxNewTokens: 1, temperature: 0 },
    { returnLogprob: true, logprobStartLen: 0, topLogprobsNum: 20 });
  const top = out.metaInfo.inputTopLogprobs;
  const errs = [];
  for (let p = 1; p < ids.length; p++) {
    // inputTopLogprobs[p] is the distribution that predicted ids[p], i.e. reference position p-1.
    const want = ref.top[i][p - 1];
    const got = new Map(top[p].map(([lp, id]) => [id, lp]));
    let e = 0;
    for (const [id, lp] of want) e = Math.max(e, got.has(id) ? Math.abs(got.get(id) - lp) : 9);
    errs.push(e);
  }
  const q = (f) => errs.map((e) => e.toFixed(2)).filter((_, k) => f(k)).join(' ');
  console.log(`prompt ${i} (${ids.length}): first 12 ${q((k) => k < 12)} | max ${Math.max(...errs).toFixed(3)} mean ${(errs.reduce((a, b) => a + b, 0) / errs.length).toFixed(3)}`);
}
engine.shutdown();

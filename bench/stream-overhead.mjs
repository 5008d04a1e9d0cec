// JS-side cost of streaming a large batch: `generateStream` over N prompts against `generate` over the same
// prompts, on the tiny Qwen2 fixture (so the model costs little and the JS layer shows). Run from the
// repository root after `npm run build`:  node bench/stream-overhead.mjs [N ...]
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Engine } from '../dist/index.js'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const sizes = process.argv.slice(2).map(Number)
const llm = new Engine({ modelPath: path.join(root, '__test__', 'fixtures', 'tiny-qwen2'), maxRunningRequests: 4096, maxTotalTokens: 200000 })
const params = { temperature: 0, maxNewTokens: 8, ignoreEos: true }
await llm.generate('warm up', params)
for (const n of sizes.length ? sizes : [250, 1000, 2000]) {
  const prompts = Array.from({ length: n }, (_, i) => `prompt ${i}`)
  let t0 = performance.now()
  await llm.generate(prompts, params)
  const gen = performance.now() - t0
  t0 = performance.now()
  let chunks = 0
  for await (const _ of llm.generateStream(prompts, params)) chunks++
  const stream = performance.now() - t0
  console.log(`${n} prompts x 8 tokens: generate ${gen.toFixed(0)} ms, generateStream ${stream.toFixed(0)} ms (${chunks} chunks, ${(stream / gen).toFixed(2)}x)`)
}
llm.shutdown()

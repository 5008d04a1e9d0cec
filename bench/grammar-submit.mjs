// JS-thread time of submitting a batch under one grammar (the synchronous part of `generate`: validation,
// tokenization and grammar compilation happen on the caller's thread), against the same batch without one.
// Default model (SmolLM2-135M-Instruct Q4_1). Run from the repository root after `npm run build`:
//   node bench/grammar-submit.mjs
import * as os from 'node:os'
import * as path from 'node:path'
import { Engine } from '../dist/index.js'

const model = process.env.RADIXLM_MODEL ?? path.join(os.homedir(), '.cache', 'radixlm', 'SmolLM2-135M-Instruct.Q4_1.gguf')
const llm = new Engine({ modelPath: model })
const schema = JSON.stringify({
  type: 'object',
  properties: { name: { type: 'string' }, age: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' } } },
  required: ['name', 'age'],
})
const kinds = [
  ['plain', {}],
  ['jsonSchema', { jsonSchema: schema }],
  ['regex', { regex: '[a-z]+ [0-9]{3}' }],
]
await llm.generate('warm up', { maxNewTokens: 0, jsonSchema: schema }) // builds the token trie once
for (const n of [100, 400]) {
  const prompts = Array.from({ length: n }, (_, i) => `Person ${i} as JSON:`)
  for (const [label, extra] of kinds) {
    const t0 = performance.now()
    const pending = llm.generate(prompts, { maxNewTokens: 0, ...extra })
    const ms = performance.now() - t0
    await pending
    console.log(`${n} prompts, ${label}: ${ms.toFixed(1)} ms on the JS thread (${(ms / n).toFixed(3)} ms a prompt)`)
  }
}
llm.shutdown()

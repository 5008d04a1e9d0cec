// Errors: every failure radixlm reports on purpose is a RadixLMError with a stable `code`; test the code,
// not the message. The engine keeps serving after a request fails.
//   node examples/offline-errors.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 16).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine, RadixLMError } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 16)

async function attempt(what, f) {
  try {
    await f()
    console.log(`${what}: ok`)
  } catch (e) {
    if (!(e instanceof RadixLMError)) throw e // a bug, not a reported failure
    console.log(`${what}: ${e.code}: ${e.message.split('\n')[0]}`)
  }
}

await attempt('a missing model', () => new Engine({ modelPath: '/nowhere/model.gguf' }))
await attempt('an unknown engine option', () => new Engine({ modelPath, maxRunningRequest: 8 }))

// A small context so that a long prompt is easy to make.
const llm = await Engine.create({ modelPath, contextLength: 256 })

await attempt('a misspelt sampling parameter', () => llm.generate('Hi', { temprature: 0.5 }))
await attempt('a value out of range', () => llm.generate('Hi', { top_p: 1.5 }))
await attempt('a bad prompt', () => llm.generate(42))
await attempt('a prompt longer than the context', () => llm.generate('word '.repeat(400)))
await attempt('a bad grammar', () => llm.generate('Hi', { regex: '(unclosed' }))
await attempt('a deadline (AbortSignal.timeout)', () =>
  llm.generate('Write a long story.', { maxNewTokens: 100_000, ignoreEos: true }, { signal: AbortSignal.timeout(50) }),
)

// After all of that, the engine still serves.
const prompt = 'The capital of France is'
const out = await llm.generate(prompt, { temperature: 0, maxNewTokens })
console.log(`\nPrompt: ${prompt}\nGenerated text: ${out.text}\n`)

llm.shutdown()
await attempt('a call after shutdown()', () => llm.generate('Hi'))

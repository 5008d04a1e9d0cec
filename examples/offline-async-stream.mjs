// Streaming, asynchronous (SGLang's "Streaming Asynchronous Generation"): print each new piece of text as it
// arrives, with asyncStreamAndMerge.
//   node examples/offline-async-stream.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 64).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine, asyncStreamAndMerge } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 64)

const llm = await Engine.create({ modelPath })

const prompts = ['Write a short, neutral self-introduction for a fictional character. Hello, my name is', 'Provide a concise factual statement about France’s capital city. The capital of France is', 'Explain possible future trends in artificial intelligence. The future of AI is']
const samplingParams = { temperature: 0.8, topP: 0.95, maxNewTokens }

console.log('\n=== Asynchronous streaming generation (no repeats) ===')
for (const prompt of prompts) {
  console.log(`\nPrompt: ${prompt}`)
  process.stdout.write('Generated text: ')
  for await (const piece of asyncStreamAndMerge(llm, prompt, samplingParams)) process.stdout.write(piece)
  console.log()
}

llm.shutdown()

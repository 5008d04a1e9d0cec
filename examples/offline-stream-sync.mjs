// Streaming, synchronous (SGLang's "Streaming Synchronous Generation"): the blocking iterator, merged with
// streamAndMerge, and read chunk by chunk.
//   node examples/offline-stream-sync.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 64).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine, streamAndMerge } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 64)

const llm = new Engine({ modelPath })

const prompts = ['Write a short, neutral self-introduction for a fictional character. Hello, my name is', 'Provide a concise factual statement about France’s capital city. The capital of France is', 'Explain possible future trends in artificial intelligence. The future of AI is']
const samplingParams = { temperature: 0.2, topP: 0.9, maxNewTokens }

console.log('\n=== Synchronous streaming generation, merged with streamAndMerge ===\n')
for (const prompt of prompts) {
  console.log(`Prompt: ${prompt}`)
  const merged = streamAndMerge(llm, prompt, samplingParams)
  console.log('Generated text:', merged)
  console.log()
}

console.log('=== The same stream, chunk by chunk ===\n')
process.stdout.write(`Prompt: ${prompts[1]}\nGenerated text: `)
for (const chunk of llm.generateStreamSync(prompts[1], samplingParams)) {
  process.stdout.write(chunk.delta)
  if (chunk.metaInfo.finishReason) {
    console.log(`\n[finish: ${JSON.stringify(chunk.metaInfo.finishReason)}, ${chunk.metaInfo.completionTokens} tokens]`)
  }
}

llm.shutdown()

// Offline batch inference: non-streaming, synchronous (SGLang's "Non-streaming Synchronous Generation").
//   node examples/offline-batch.mjs
// Env: RADIXLM_MODEL (model file or directory), RADIXLM_MAX_NEW_TOKENS (default 64).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 64)

const llm = new Engine({ modelPath })

const prompts = ['Hello, my name is', 'The president of the United States is', 'The capital of France is', 'The future of AI is']
const samplingParams = { temperature: 0.8, topP: 0.95, maxNewTokens }

const outputs = llm.generateSync(prompts, samplingParams)
prompts.forEach((prompt, i) => {
  console.log('===============================')
  console.log(`Prompt: ${prompt}\nGenerated text: ${outputs[i].text}`)
})

llm.shutdown()

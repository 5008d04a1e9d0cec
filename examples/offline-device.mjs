// Choosing the device: the same code runs on the CPU or on an NVIDIA GPU. With the CUDA build installed
// (npm install radixlm radixlm-linux-x64-gnu-cuda) and a GPU present, 'auto' picks the GPU; RADIXLM_DEVICE
// forces one ('cpu', 'cuda', 'cuda:1'). The CUDA backend runs Llama / Qwen2-family models (head size 64 or
// 128, weights converted to bf16 at load) on H100 / H200 GPUs; see docs/gpu.md.
//   node examples/offline-device.mjs
//   RADIXLM_DEVICE=cuda RADIXLM_MODEL=/path/to/hf-model node examples/offline-device.mjs
// Env: RADIXLM_MODEL, RADIXLM_DEVICE (default auto), RADIXLM_MAX_NEW_TOKENS (default 64).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const device = process.env.RADIXLM_DEVICE || 'auto'
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 64)

const llm = await Engine.create({
  modelPath,
  device,
  // GPU-only options (ignored on the CPU), at their defaults: the share of GPU memory weights + KV pool may
  // fill, and the largest decode batch replayed as a CUDA graph.
  memFractionStatic: 0.85,
  cudaGraphMaxBs: 256,
})
const info = llm.getServerInfo()
console.log(`device ${info.device}, dtype ${info.dtype}, KV pool ${info.maxTotalTokens} tokens, ${info.maxRunningRequests} running requests at most`)

const prompts = Array.from({ length: 16 }, (_, i) => `Write a short line about the number ${i + 1}:`)
const t0 = performance.now()
const outputs = await llm.generate(prompts, { temperature: 0.8, maxNewTokens, seed: 7 })
const seconds = (performance.now() - t0) / 1000
const tokens = outputs.reduce((n, o) => n + o.metaInfo.completionTokens, 0)
prompts.slice(0, 2).forEach((prompt, i) => console.log(`\nPrompt: ${prompt}\nGenerated text: ${outputs[i].text.trim()}`))
console.log(`\n[${prompts.length} prompts, ${tokens} tokens in ${seconds.toFixed(2)} s: ${(tokens / seconds).toFixed(0)} tokens/s]`)

llm.shutdown()

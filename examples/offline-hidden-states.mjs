// Hidden states and logprobs next to the generated text (SGLang's "hidden_states" and "logprobs" examples).
//   node examples/offline-hidden-states.mjs
// Env: RADIXLM_MODEL (model file or directory), RADIXLM_MAX_NEW_TOKENS (default 16).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 16)

// Hidden states must be enabled when the engine starts; each request then asks for them.
const llm = new Engine({ modelPath, enableReturnHiddenStates: true })

const prompts = ['Hello, my name is', 'The capital of France is']
const outputs = llm.generateSync(prompts, { temperature: 0, maxNewTokens }, { returnHiddenStates: true, returnLogprob: true, topLogprobsNum: 3 })

prompts.forEach((prompt, i) => {
  const out = outputs[i]
  // One Float32Array per position fed to the model: the prompt tokens, then every generated token but the last.
  const rows = out.hiddenStates
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))
  console.log('===============================')
  console.log(`Prompt: ${prompt}\nGenerated text: ${out.text}`)
  console.log(`Hidden states: ${rows.length} rows of ${rows[0].length} (prompt ${out.metaInfo.promptTokens} + generated ${out.metaInfo.completionTokens} - 1)`)
  console.log(`  norm of the last prompt row: ${norm(rows[out.metaInfo.promptTokens - 1]).toFixed(3)}`)
  const [lp, id] = out.metaInfo.outputTokenLogprobs[0]
  const top = out.metaInfo.outputTopLogprobs[0].map(([l, t]) => `${JSON.stringify(llm.detokenize([t]))} ${l.toFixed(3)}`)
  console.log(`  first token ${JSON.stringify(llm.detokenize([id]))}: logprob ${lp.toFixed(3)}; top 3: ${top.join(', ')}`)
})

llm.shutdown()

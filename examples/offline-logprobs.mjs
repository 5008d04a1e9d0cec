// Logprobs: the probability of each generated token and its top alternatives, and the logprobs of chosen
// tokens at a position (label scoring, as SGLang's token_ids_logprob), here to classify sentiment.
//   node examples/offline-logprobs.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 8).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 8)

const llm = await Engine.create({ modelPath })
const show = (id) => JSON.stringify(llm.detokenize([id]))

// 1. Output logprobs with the top 3 alternatives per position.
const prompt = 'The capital of France is'
const out = await llm.generate(prompt, { temperature: 0, maxNewTokens }, { returnLogprob: true, topLogprobsNum: 3 })
console.log('===============================')
console.log(`Prompt: ${prompt}\nGenerated text: ${out.text}`)
out.metaInfo.outputTokenLogprobs.forEach(([logprob, id], i) => {
  const top = out.metaInfo.outputTopLogprobs[i].map(([lp, t]) => `${show(t)} ${lp.toFixed(2)}`).join(', ')
  console.log(`  ${show(id).padEnd(12)} p=${Math.exp(logprob).toFixed(3)}   top: ${top}`)
})

// 2. Label scoring: the logprob of each label's first token right after the prompt (one new token).
const labels = [' positive', ' negative']
const labelIds = labels.map((l) => llm.tokenize(l)[0])
const reviews = ['I loved this film, the acting was wonderful.', 'A boring, far too long film. I walked out.']
const scored = await llm.generate(
  reviews.map((r) => `Review: ${r}\nSentiment (positive or negative):`),
  { temperature: 0, maxNewTokens: 1 },
  { returnLogprob: true, tokenIdsLogprob: labelIds },
)
reviews.forEach((review, i) => {
  const [pos, neg] = scored[i].metaInfo.outputTokenIdsLogprobs[0].map(([lp]) => lp)
  console.log('===============================')
  console.log(`Prompt: ${review}\nGenerated text: ${pos > neg ? 'positive' : 'negative'} (logprob positive ${pos.toFixed(2)}, negative ${neg.toFixed(2)})`)
})

llm.shutdown()

// The prefix cache: requests that start with the same tokens (a shared system prompt, the next turn of a
// conversation) reuse the KV pages already computed. metaInfo.cachedTokens says how many prompt tokens a
// request skipped; getServerInfo() reports the pool and the hit rate.
//   node examples/offline-prefix-cache.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 16).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 16)

// The scheduling options, with their defaults spelled out ('lpm' admits the longest cached prefix first).
const llm = await Engine.create({ modelPath, pageSize: 16, schedulePolicy: 'fcfs', disableRadixCache: false })

const system = {
  role: 'system',
  content:
    'You are a museum guide. Answer visitors in one friendly sentence and mention the room to go to. ' +
    'The museum has three rooms: the north gallery (paintings), the east hall (sculpture) and the garden ' +
    'court (modern installations). Benches are in every room.',
}
const ask = (question) => [system, { role: 'user', content: question }]
const questions = ['Where are the paintings?', 'Is there any sculpture?', 'What is in the garden court?']
const samplingParams = { temperature: 0, maxNewTokens }

const report = (prompt, out) => {
  console.log('===============================')
  console.log(`Prompt: ${prompt}\nGenerated text: ${out.text.trim()}`)
  console.log(`[prompt ${out.metaInfo.promptTokens} tokens, ${out.metaInfo.cachedTokens} from the cache]`)
}

// A batch: the first prompt computes the shared system prompt; the others wait one step and reuse it.
const outs = await llm.chat(questions.map(ask), samplingParams)
questions.forEach((q, i) => report(q, outs[i]))

// Later requests find the system prompt in the cache too (so would the next turn of a conversation).
const later = 'Where can I sit down?'
report(later, await llm.chat(ask(later), samplingParams))

const { poolPages, pagesCached, pagesEvictable, cacheHitRate } = llm.getServerInfo()
console.log(`\n[pool ${poolPages} pages, ${pagesCached} cached (${pagesEvictable} evictable), hit rate ${(cacheHitRate * 100).toFixed(0)}%]`)

// flushCache() drops every cached page no running request uses: the next request computes in full.
llm.flushCache()
report(later, await llm.chat(ask(later), samplingParams))

llm.shutdown()

// Sampling parameters: seeds, greedy, stop strings, stop token ids, length limits, snake_case keys.
import test from 'ava'
import { Engine, RadixLMError, type GenerateOutput, type StreamChunk } from '../index'

void Engine
import { chatPrompt, useEngine } from './helpers'

void RadixLMError
const engine = useEngine(test)

const PROMPT = 'Once upon a time'
const GREEDY = { temperature: 0, maxNewTokens: 16 }
// "What is 2+2?" gets a short answer that ends with EOS well before 12 tokens.
const SHORT_CHAT = chatPrompt('What is 2+2?')

let greedy: GenerateOutput
let pieces: string[] // detokenized text of each greedy output token
test.before(() => {
  const llm = engine()
  greedy = llm.generateSync(PROMPT, GREEDY)
  pieces = greedy.outputIds.map((id) => llm.detokenize([id]))
})

/**
 * A stop string in the middle of the greedy output that spans a token boundary: the last 2 characters of
 * token j plus the whole of token j + 1, occurring nowhere earlier. Returns it with the text before it
 * (the trimmed output) and the text through it (the untrimmed output).
 */
function middleStop() {
  const text = greedy.text
  if (pieces.join('') === text) {
    for (let j = Math.max(1, Math.floor(pieces.length / 2) - 2); j < pieces.length - 2; j++) {
      if (pieces[j].trim().length < 2 || pieces[j + 1].length < 2) continue
      const before = pieces.slice(0, j + 1).join('')
      const stop = before.slice(-2) + pieces[j + 1]
      if (text.indexOf(stop) !== before.length - 2) continue // occurs earlier
      return { stop, trimmed: before.slice(0, -2), untrimmed: before + pieces[j + 1] }
    }
  }
  throw new Error(`no usable token boundary in greedy output ${JSON.stringify(text)} (pieces ${JSON.stringify(pieces)})`)
}

test('greedy output is long enough to pick stops from', (t) => {
  t.is(greedy.outputIds.length, 16)
  t.deepEqual(greedy.metaInfo.finishReason, { type: 'length', length: 16 })
  t.is(pieces.join(''), greedy.text, 'greedy text decodes token by token')
})

test('same seed gives the same output; different seeds differ', async (t) => {
  const llm = engine()
  const seeds = [1, 2, 3, 4]
  const sp = (seed: number) => ({ temperature: 1, maxNewTokens: 16, seed })
  const first = await Promise.all(seeds.map((s) => llm.generate(PROMPT, sp(s))))
  const again = await Promise.all(seeds.map((s) => llm.generate(PROMPT, sp(s))))
  seeds.forEach((s, i) => t.deepEqual(again[i].outputIds, first[i].outputIds, `seed ${s} reproduces`))
  const distinct = new Set(first.map((o) => JSON.stringify(o.outputIds)))
  t.true(distinct.size > 1, `different seeds gave the same output: ${JSON.stringify(first[0].text)}`)
})

test('seeded sampling does not depend on what else is in the batch', async (t) => {
  const llm = engine()
  const sp = { temperature: 1, maxNewTokens: 12, seed: 42 }
  const alone = llm.generateSync(PROMPT, sp)
  const [, inBatch] = await Promise.all([llm.generate('The capital of France is', { temperature: 1, maxNewTokens: 12 }), llm.generate(PROMPT, sp)])
  t.deepEqual(inBatch.outputIds, alone.outputIds)
})

test('temperature 0 ignores the seed', async (t) => {
  const llm = engine()
  const outs = await Promise.all([7, 8].map((seed) => llm.generate(PROMPT, { ...GREEDY, seed })))
  for (const o of outs) t.deepEqual(o.outputIds, greedy.outputIds)
})

test('stop string across a token boundary: output ends right before it', (t) => {
  const llm = engine()
  const { stop, trimmed } = middleStop()
  t.log(`stop ${JSON.stringify(stop)} in ${JSON.stringify(greedy.text)}`)
  const o = llm.generateSync(PROMPT, { ...GREEDY, stop })
  t.is(o.text, trimmed)
  t.false(o.text.includes(stop))
  t.deepEqual(o.metaInfo.finishReason, { type: 'stop', matched: stop })
  t.is(o.metaInfo.completionTokens, o.outputIds.length)
  t.true(o.outputIds.length < 16)
  t.deepEqual(o.outputIds, greedy.outputIds.slice(0, o.outputIds.length), 'a prefix of the greedy ids')
})

test('stop string with noStopTrim: output ends with it', (t) => {
  const llm = engine()
  const { stop, untrimmed } = middleStop()
  const o = llm.generateSync(PROMPT, { ...GREEDY, stop: [stop], noStopTrim: true })
  t.true(o.text.endsWith(stop), `${JSON.stringify(o.text)} ends with ${JSON.stringify(stop)}`)
  t.is(o.text, untrimmed)
  t.deepEqual(o.metaInfo.finishReason, { type: 'stop', matched: stop })
})

test('stop string: among several, the one that occurs is reported', (t) => {
  const llm = engine()
  const { stop, trimmed } = middleStop()
  const o = llm.generateSync(PROMPT, { ...GREEDY, stop: ['@@never@@', stop, 'zzzqqq'] })
  t.is(o.text, trimmed)
  t.deepEqual(o.metaInfo.finishReason, { type: 'stop', matched: stop })
})

test('stop string: no streamed chunk ever shows it (sync and async streams)', async (t) => {
  const llm = engine()
  const { stop, trimmed } = middleStop()
  const check = (chunks: StreamChunk[]) => {
    for (const c of chunks) t.false(c.text.includes(stop), `chunk text ${JSON.stringify(c.text)} shows the stop string`)
    t.is(chunks.map((c) => c.delta).join(''), trimmed)
    t.is(chunks[chunks.length - 1].text, trimmed)
    t.deepEqual(chunks[chunks.length - 1].metaInfo.finishReason, { type: 'stop', matched: stop })
  }
  check([...llm.generateStreamSync(PROMPT, { ...GREEDY, stop })])
  const chunks: StreamChunk[] = []
  for await (const c of llm.generateStream(PROMPT, { ...GREEDY, stop })) chunks.push(c)
  check(chunks)
})

test('stop string inside a single token stops too', (t) => {
  const llm = engine()
  // 4 characters strictly inside one word-token of the greedy output (e.g. "etro" in " metropolis").
  let stop = ''
  let start = -1
  for (let k = 1; k < pieces.length && start < 0; k++) {
    const word = pieces[k].trim()
    if (word.length < 6) continue
    const at = pieces.slice(0, k).join('').length + pieces[k].indexOf(word) + 1
    if (greedy.text.indexOf(word.slice(1, 5)) === at) [stop, start] = [word.slice(1, 5), at]
  }
  t.true(start > 0, `no long token in ${JSON.stringify(pieces)}`)
  const o = llm.generateSync(PROMPT, { ...GREEDY, stop })
  t.is(o.text, greedy.text.slice(0, start))
  t.deepEqual(o.metaInfo.finishReason, { type: 'stop', matched: stop })
})

test('stopTokenIds: stops at that token; text excludes it, noStopTrim keeps it', (t) => {
  const llm = engine()
  // A token in the middle of the greedy output that does not occur earlier.
  const m = greedy.outputIds.findIndex((id, i) => i >= 5 && !greedy.outputIds.slice(0, i).includes(id))
  t.true(m >= 5)
  const id = greedy.outputIds[m]
  const o = llm.generateSync(PROMPT, { ...GREEDY, stopTokenIds: [id] })
  t.deepEqual(o.metaInfo.finishReason, { type: 'stop', matched: id })
  t.deepEqual(o.outputIds, greedy.outputIds.slice(0, m + 1), 'outputIds end with the stop token')
  t.is(o.metaInfo.completionTokens, m + 1)
  t.is(o.text, llm.detokenize(greedy.outputIds.slice(0, m)), 'text excludes the stop token')
  const kept = llm.generateSync(PROMPT, { ...GREEDY, stopTokenIds: [id], noStopTrim: true })
  t.deepEqual(kept.metaInfo.finishReason, { type: 'stop', matched: id })
  t.is(kept.text, llm.detokenize(greedy.outputIds.slice(0, m + 1)), 'noStopTrim keeps the stop token text')
})

test('maxNewTokens: finishReason length with exactly that many tokens', async (t) => {
  const llm = engine()
  for (const n of [1, 5]) {
    const o = await llm.generate(PROMPT, { temperature: 0, maxNewTokens: n })
    t.deepEqual(o.metaInfo.finishReason, { type: 'length', length: n })
    t.is(o.outputIds.length, n)
    t.is(o.metaInfo.completionTokens, n)
    t.deepEqual(o.outputIds, greedy.outputIds.slice(0, n))
  }
})

test('maxNewTokens 0 generates nothing', async (t) => {
  const o = await engine().generate(PROMPT, { temperature: 0, maxNewTokens: 0 })
  t.is(o.text, '')
  t.deepEqual(o.outputIds, [])
  t.is(o.metaInfo.finishReason.type, 'length')
})

test('EOS ends a chat answer early (baseline for minNewTokens / ignoreEos)', (t) => {
  const llm = engine()
  const o = llm.generateSync(SHORT_CHAT, { temperature: 0, maxNewTokens: 16 })
  t.is(o.metaInfo.finishReason.type, 'stop')
  t.true(o.outputIds.length < 12, `answer has ${o.outputIds.length} tokens`)
  t.false(o.text.includes('<|im_end|>'))
})

test('minNewTokens forces at least that many tokens even when EOS would come', (t) => {
  const llm = engine()
  const o = llm.generateSync(SHORT_CHAT, { temperature: 0, minNewTokens: 12, maxNewTokens: 14 })
  t.true(o.metaInfo.completionTokens >= 12, `${o.metaInfo.completionTokens} tokens: ${JSON.stringify(o.text)}`)
  t.is(o.outputIds.length, o.metaInfo.completionTokens)
})

test('ignoreEos runs to maxNewTokens', (t) => {
  const llm = engine()
  const o = llm.generateSync(SHORT_CHAT, { temperature: 0, ignoreEos: true, maxNewTokens: 12 })
  t.deepEqual(o.metaInfo.finishReason, { type: 'length', length: 12 })
  t.is(o.outputIds.length, 12)
})

test('snake_case keys work like camelCase', async (t) => {
  const llm = engine()
  const camel = await llm.generate(SHORT_CHAT, { temperature: 0, maxNewTokens: 5, ignoreEos: true })
  const snake = await llm.generate(SHORT_CHAT, { temperature: 0, max_new_tokens: 5, ignore_eos: true })
  t.deepEqual(snake.outputIds, camel.outputIds)
  t.deepEqual(snake.metaInfo.finishReason, { type: 'length', length: 5 })
  const minSnake = llm.generateSync(SHORT_CHAT, { temperature: 0, min_new_tokens: 12, max_new_tokens: 14 })
  t.true(minSnake.metaInfo.completionTokens >= 12)
  const id = greedy.outputIds[3]
  const stopSnake = llm.generateSync(PROMPT, { temperature: 0, max_new_tokens: 16, stop_token_ids: [id], no_stop_trim: true })
  t.deepEqual(stopSnake.metaInfo.finishReason, { type: 'stop', matched: id })
  t.is(stopSnake.text, llm.detokenize(greedy.outputIds.slice(0, greedy.outputIds.indexOf(id) + 1)))
  const seeded = (p: Record<string, unknown>) => llm.generateSync(PROMPT, { temperature: 0.8, top_p: 0.9, top_k: 20, max_new_tokens: 8, ...p }).outputIds
  t.deepEqual(seeded({ seed: 5 }), llm.generateSync(PROMPT, { temperature: 0.8, topP: 0.9, topK: 20, maxNewTokens: 8, seed: 5 }).outputIds)
})

test('logitBias steers greedy decoding to the biased token', (t) => {
  const llm = engine()
  const target = llm.tokenize(' banana')
  t.is(target.length, 1)
  const o = llm.generateSync(PROMPT, { temperature: 0, maxNewTokens: 3, logitBias: { [String(target[0])]: 100 } })
  t.deepEqual(o.outputIds, [target[0], target[0], target[0]])
})

test('repetitionPenalty / frequencyPenalty change a greedy output that repeats', (t) => {
  const llm = engine()
  const prompt = '1 1 1 1 1 1 1 1'
  const plain = llm.generateSync(prompt, { temperature: 0, maxNewTokens: 8 })
  const pen = llm.generateSync(prompt, { temperature: 0, maxNewTokens: 8, repetitionPenalty: 2 })
  const freq = llm.generateSync(prompt, { temperature: 0, maxNewTokens: 8, frequencyPenalty: 2 })
  t.notDeepEqual(pen.outputIds, plain.outputIds)
  t.notDeepEqual(freq.outputIds, plain.outputIds)
})


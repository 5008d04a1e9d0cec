// The four generation modes agree with each other, and their outputs / chunks have the documented shapes.
import test from 'ava'
import { Engine, streamAndMerge, asyncStreamAndMerge, RadixLMError, type GenerateOutput, type StreamChunk } from '../index'
import { useEngine } from './helpers'

void RadixLMError
const engine = useEngine(test)

const PROMPT = 'The capital of France is'
const PROMPTS = ['The capital of France is', 'Once upon a time', 'def fibonacci(n):']
const MAX = 12
const GREEDY = { temperature: 0, maxNewTokens: MAX }

// Reference: each prompt run alone, blocking, greedy.
let ref: GenerateOutput
let refs: GenerateOutput[]
test.before(() => {
  const llm = engine()
  refs = PROMPTS.map((p) => llm.generateSync(p, GREEDY))
  ref = refs[0]
})

function assertFinalOutput(t: any, o: GenerateOutput, promptTokens: number, max = MAX) {
  t.is(typeof o.text, 'string')
  t.true(Array.isArray(o.outputIds))
  t.true(o.outputIds.every((x) => Number.isInteger(x) && x >= 0))
  t.is(typeof o.metaInfo.id, 'string')
  t.is(o.metaInfo.promptTokens, promptTokens)
  t.is(o.metaInfo.completionTokens, o.outputIds.length)
  t.true(o.metaInfo.completionTokens <= max)
  t.truthy(o.metaInfo.finishReason)
  if (o.metaInfo.finishReason.type === 'length') t.is(o.metaInfo.finishReason.length, o.metaInfo.completionTokens)
  t.is(typeof o.metaInfo.e2eLatency, 'number')
  t.true(o.metaInfo.e2eLatency! > 0)
  t.is(typeof o.metaInfo.cachedTokens, 'number')
}

/** Checks one request's chunk sequence against its non-stream output; returns the merged text. */
function assertChunks(t: any, chunks: StreamChunk[], expected: GenerateOutput, index = 0) {
  t.true(chunks.length > 0, 'at least one chunk')
  let text = ''
  const ids: number[] = []
  chunks.forEach((c, i) => {
    t.is(c.index, index)
    t.is(typeof c.delta, 'string')
    text += c.delta
    t.is(c.text, text, `chunk ${i}: text is cumulative (the concatenated deltas so far)`)
    ids.push(...c.outputIds)
    if (i < chunks.length - 1) {
      t.is(c.metaInfo.finishReason, null, `chunk ${i} of ${chunks.length}: finishReason is null until the last chunk`)
    }
    if (i > 0) t.is(c.metaInfo.id, chunks[0].metaInfo.id, 'one request id per stream')
  })
  const last = chunks[chunks.length - 1]
  t.deepEqual(last.metaInfo.finishReason, expected.metaInfo.finishReason)
  t.is(last.metaInfo.promptTokens, expected.metaInfo.promptTokens)
  t.is(last.metaInfo.completionTokens, expected.metaInfo.completionTokens)
  t.is(typeof last.metaInfo.e2eLatency, 'number')
  t.true(last.metaInfo.e2eLatency! > 0)
  t.is(text, expected.text, 'concatenated deltas === non-stream text')
  t.is(last.text, expected.text, 'last chunk text === non-stream text')
  t.deepEqual(ids, expected.outputIds, 'concatenated chunk outputIds === non-stream outputIds')
  return text
}

test('generateSync: a single string returns one output object with metaInfo', (t) => {
  const llm = engine()
  const o = llm.generateSync(PROMPT, GREEDY)
  t.false(Array.isArray(o))
  assertFinalOutput(t, o, llm.tokenize(PROMPT).length)
  t.true(o.text.length > 0)
  t.is(o.text, ref.text)
  t.deepEqual(o.outputIds, ref.outputIds)
  t.is(o.text, llm.detokenize(o.outputIds), 'text is the detokenized outputIds')
})

test('generate (async) gives the same greedy output as generateSync', async (t) => {
  const llm = engine()
  const o = await llm.generate(PROMPT, GREEDY)
  t.false(Array.isArray(o))
  assertFinalOutput(t, o, llm.tokenize(PROMPT).length)
  t.is(o.text, ref.text)
  t.deepEqual(o.outputIds, ref.outputIds)
  t.deepEqual(o.metaInfo.finishReason, ref.metaInfo.finishReason)
  t.not(o.metaInfo.id, ref.metaInfo.id, 'each request gets its own id')
})

test('generateStreamSync: chunk shapes, merged text and ids equal the non-stream output', (t) => {
  const llm = engine()
  const chunks = [...llm.generateStreamSync(PROMPT, GREEDY)]
  assertChunks(t, chunks, ref)
})

test('generateStream: chunk shapes, merged text and ids equal the non-stream output', async (t) => {
  const llm = engine()
  const chunks: StreamChunk[] = []
  for await (const c of llm.generateStream(PROMPT, GREEDY)) chunks.push(c)
  assertChunks(t, chunks, ref)
})

test('streamAndMerge returns the greedy text', (t) => {
  t.is(streamAndMerge(engine(), PROMPT, GREEDY), ref.text)
})

test('asyncStreamAndMerge yields non-empty pieces that join to the greedy text', async (t) => {
  const pieces: string[] = []
  for await (const piece of asyncStreamAndMerge(engine(), PROMPT, GREEDY)) pieces.push(piece)
  t.true(pieces.length > 0)
  t.true(pieces.every((p) => typeof p === 'string' && p.length > 0), 'no empty pieces')
  t.is(pieces.join(''), ref.text)
})

test('{inputIds: number[]} equals the text input and returns one object', async (t) => {
  const llm = engine()
  const ids = llm.tokenize(PROMPT)
  t.true(ids.length > 0)
  const o = await llm.generate({ inputIds: ids }, GREEDY)
  t.false(Array.isArray(o))
  t.is(o.text, ref.text)
  t.deepEqual(o.outputIds, ref.outputIds)
  t.is(o.metaInfo.promptTokens, ids.length)
})

test('{inputIds: number[][]} returns an array in input order', async (t) => {
  const llm = engine()
  const ids = PROMPTS.slice(0, 2).map((p) => llm.tokenize(p))
  const outs = await llm.generate({ inputIds: ids }, GREEDY)
  t.true(Array.isArray(outs))
  t.is(outs.length, 2)
  outs.forEach((o, i) => {
    t.is(o.metaInfo.promptTokens, ids[i].length)
    t.is(o.text, refs[i].text)
  })
})

test('batch (sync): an array in input order, equal to the prompts run one by one', (t) => {
  const llm = engine()
  const outs = llm.generateSync(PROMPTS, GREEDY)
  t.true(Array.isArray(outs))
  t.is(outs.length, PROMPTS.length)
  outs.forEach((o, i) => {
    assertFinalOutput(t, o, llm.tokenize(PROMPTS[i]).length)
    t.is(o.text, refs[i].text, `prompt ${i}`)
    t.deepEqual(o.outputIds, refs[i].outputIds, `prompt ${i}`)
  })
  t.is(new Set(outs.map((o) => o.metaInfo.id)).size, outs.length, 'distinct ids')
})

test('batch (async): an array in input order, equal to the prompts run one by one', async (t) => {
  const llm = engine()
  const outs = await llm.generate(PROMPTS, GREEDY)
  t.true(Array.isArray(outs))
  t.deepEqual(
    outs.map((o) => o.text),
    refs.map((o) => o.text),
  )
})

test('a one-element batch still returns an array', async (t) => {
  const llm = engine()
  const outs = await llm.generate([PROMPT], { temperature: 0, maxNewTokens: 2 })
  t.true(Array.isArray(outs))
  t.is(outs.length, 1)
})

test('per-prompt samplingParams array applies to each prompt in order', async (t) => {
  const llm = engine()
  const outs = await llm.generate(PROMPTS.slice(0, 2), [
    { temperature: 0, maxNewTokens: 3 },
    { temperature: 0, max_new_tokens: 5 },
  ])
  t.is(outs.length, 2)
  t.deepEqual(outs[0].metaInfo.finishReason, { type: 'length', length: 3 })
  t.deepEqual(outs[1].metaInfo.finishReason, { type: 'length', length: 5 })
  t.deepEqual(outs[0].outputIds, refs[0].outputIds.slice(0, 3))
  t.deepEqual(outs[1].outputIds, refs[1].outputIds.slice(0, 5))
})

test('batch generateStream interleaves chunks tagged with index, each index in order', async (t) => {
  const llm = engine()
  const prompts = PROMPTS.slice(0, 2)
  const chunks: StreamChunk[] = []
  for await (const c of llm.generateStream(prompts, GREEDY)) chunks.push(c)
  const seen = chunks.map((c) => c.index)
  t.deepEqual([...new Set(seen)].sort(), [0, 1])
  // Interleaved, not one request after the other: index 1 shows up before index 0's last chunk.
  const lastOf0 = seen.lastIndexOf(0)
  const firstOf1 = seen.indexOf(1)
  t.true(firstOf1 < lastOf0, `chunks interleave (order: ${seen.join(',')})`)
  prompts.forEach((_, i) => {
    const mine = chunks.filter((c) => c.index === i)
    // Per-index order: completionTokens grow, only the last chunk is finished.
    for (let k = 1; k < mine.length; k++) t.true(mine[k].metaInfo.completionTokens > mine[k - 1].metaInfo.completionTokens)
    assertChunks(t, mine, refs[i], i)
  })
})

test('batch generateStreamSync yields every index, each in order, equal to the non-stream outputs', (t) => {
  const llm = engine()
  const prompts = PROMPTS.slice(0, 2)
  const chunks = [...llm.generateStreamSync(prompts, GREEDY)]
  prompts.forEach((_, i) => assertChunks(t, chunks.filter((c) => c.index === i), refs[i], i))
})

test('n: 2 with a seed gives 2 outputs for one prompt, reproducibly', async (t) => {
  const llm = engine()
  const sp = { n: 2, seed: 7, temperature: 1, maxNewTokens: 8 }
  const a = (await llm.generate(PROMPT, sp)) as unknown as GenerateOutput[]
  t.true(Array.isArray(a), 'n > 1 turns a single prompt into a batch')
  t.is(a.length, 2)
  t.not(a[0].metaInfo.id, a[1].metaInfo.id)
  t.notDeepEqual(a[0].outputIds, a[1].outputIds, 'the samples of one prompt differ (each gets its own stream of randomness)')
  const b = (await llm.generate(PROMPT, sp)) as unknown as GenerateOutput[]
  t.deepEqual(
    b.map((o) => o.outputIds),
    a.map((o) => o.outputIds),
    'same seed, same samples',
  )
})

test('2 prompts x n: 2 give 4 outputs, prompt-major', async (t) => {
  const llm = engine()
  // Prompts of different token lengths, so promptTokens tells which prompt each output belongs to.
  const prompts = ['Hello', 'The capital of France is']
  const lens = prompts.map((p) => llm.tokenize(p).length)
  t.not(lens[0], lens[1])
  const outs = await llm.generate(prompts, { n: 2, seed: 3, maxNewTokens: 4 })
  t.is(outs.length, 4)
  t.deepEqual(
    outs.map((o) => o.metaInfo.promptTokens),
    [lens[0], lens[0], lens[1], lens[1]],
  )
  // Greedy n = 2: every sample equals the prompt's greedy output.
  const g = await llm.generate(prompts, { n: 2, temperature: 0, maxNewTokens: 4 })
  t.deepEqual(
    g.map((o) => o.outputIds),
    [refsFor(llm, prompts[0]), refsFor(llm, prompts[0]), refsFor(llm, prompts[1]), refsFor(llm, prompts[1])],
  )
})

const greedy4 = new Map<string, number[]>()
function refsFor(llm: Engine, p: string): number[] {
  if (!greedy4.has(p)) greedy4.set(p, llm.generateSync(p, { temperature: 0, maxNewTokens: 4 }).outputIds)
  return greedy4.get(p)!
}

test('n: 2 streams two indices', async (t) => {
  const llm = engine()
  const chunks: StreamChunk[] = []
  for await (const c of llm.generateStream(PROMPT, { n: 2, seed: 1, maxNewTokens: 4 })) chunks.push(c)
  t.deepEqual([...new Set(chunks.map((c) => c.index))].sort(), [0, 1])
  for (const i of [0, 1]) {
    const mine = chunks.filter((c) => c.index === i)
    t.deepEqual(mine[mine.length - 1].metaInfo.finishReason, { type: 'length', length: 4 })
  }
})

test('an empty batch returns an empty array', async (t) => {
  const llm = engine()
  t.deepEqual(llm.generateSync([], GREEDY), [])
  t.deepEqual(await llm.generate([], GREEDY), [])
})

test('options.rid sets metaInfo.id (single, batch, stream)', async (t) => {
  const llm = engine()
  const one = await llm.generate(PROMPT, { temperature: 0, maxNewTokens: 2 }, { rid: 'modes-rid-one' })
  t.is(one.metaInfo.id, 'modes-rid-one')
  const two = await llm.generate(PROMPTS.slice(0, 2), { temperature: 0, maxNewTokens: 2 }, { rid: ['modes-rid-a', 'modes-rid-b'] })
  t.deepEqual(
    two.map((o) => o.metaInfo.id),
    ['modes-rid-a', 'modes-rid-b'],
  )
  const chunks = [...llm.generateStreamSync(PROMPT, { temperature: 0, maxNewTokens: 2 }, { rid: 'modes-rid-stream' })]
  t.true(chunks.every((c) => c.metaInfo.id === 'modes-rid-stream'))
})

test('multi-byte text streams without broken characters: deltas join to the final text', async (t) => {
  const llm = engine()
  const prompts = [
    '<|im_start|>user\nTranslate to Chinese: I love you<|im_end|>\n<|im_start|>assistant\n',
    '日本語: こんにちは、',
    'Emoji: 😀😃😄',
  ]
  for (const p of prompts) {
    const sp = { temperature: 0, maxNewTokens: 16 }
    const whole = llm.generateSync(p, sp)
    t.is(whole.text, llm.detokenize(whole.outputIds), 'text is the one-shot decode of outputIds')
    const chunks: StreamChunk[] = []
    for await (const c of llm.generateStream(p, sp)) chunks.push(c)
    t.is(chunks.map((c) => c.delta).join(''), whole.text)
    // A replacement character may only appear at the very end (generation stopped inside a code point),
    // never in the middle of a stream because a code point was split across chunks.
    chunks.slice(0, -1).forEach((c, i) => t.false(c.delta.includes('\uFFFD'), `chunk ${i} of ${JSON.stringify(p)}: ${JSON.stringify(c.delta)}`))
    t.false(whole.text.slice(0, -1).includes('\uFFFD'), JSON.stringify(whole.text))
  }
})

test.serial('stream chunks report cachedTokens from the first chunk, equal to the final count', async (t) => {
  const llm = engine()
  // A prompt long enough to span whole pages, run once to fill the prefix cache, then streamed.
  const prompt = 'In a quiet village by the sea, an old fisherman mended his nets every morning. '.repeat(4)
  await llm.generate(prompt, { temperature: 0, maxNewTokens: 1 })
  const chunks: StreamChunk[] = []
  for await (const c of llm.generateStream(prompt, { temperature: 0, maxNewTokens: 6, ignoreEos: true })) chunks.push(c)
  const final = chunks.at(-1)!.metaInfo.cachedTokens
  t.true(final > 0, 'the second run hits the cache')
  t.deepEqual(
    chunks.map((c) => c.metaInfo.cachedTokens),
    chunks.map(() => final),
  )
})

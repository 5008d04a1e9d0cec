// skipTokenizerInit (SGLang's skip_tokenizer_init): token ids in, token ids out, no tokenizer loaded.
// Also: token-id validation on both kinds of engine, and that each keeps serving after a rejection.
//
// SGLang leaves `text` out of the output in this mode; radixlm keeps `text: string` in its output type and
// returns '' (and '' deltas in streams).
import test, { type ExecutionContext } from 'ava'
import { Engine, RadixLMError, type GenerateOutput } from '../index'
import { chatPrompt, modelPath } from './helpers'

let normal: Engine
let bare: Engine
let ids: number[] // a chat prompt, tokenized by the normal engine
let vocab: number
let greedy: GenerateOutput // the normal engine's greedy output for `ids`

const GREEDY = { temperature: 0, maxNewTokens: 12, ignoreEos: true }

test.before(() => {
  normal = new Engine({ modelPath: modelPath() })
  bare = new Engine({ modelPath: modelPath(), skipTokenizerInit: true })
  ids = normal.tokenize(chatPrompt('Name three colours.'))
  vocab = bare.getServerInfo().vocabSize as number
  greedy = normal.generateSync({ inputIds: ids }, GREEDY)
})

test.after.always(() => {
  normal?.shutdown()
  bare?.shutdown()
})

function thrown(f: () => unknown): unknown {
  try {
    f()
  } catch (e) {
    return e
  }
  return undefined
}

async function rejected(f: () => Promise<unknown>): Promise<unknown> {
  try {
    await f()
  } catch (e) {
    return e
  }
  return undefined
}

function isCode(t: ExecutionContext, e: unknown, code: string, mentions?: RegExp) {
  t.true(e instanceof RadixLMError, `expected RadixLMError ${code}, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`)
  const err = e as RadixLMError
  t.is(err.code, code, err.message)
  if (mentions) t.regex(err.message, mentions)
}

/** The engine still answers a valid id prompt, with the reference greedy ids. */
async function stillServes(t: ExecutionContext, llm: Engine) {
  t.deepEqual(llm.generateSync({ inputIds: ids }, GREEDY).outputIds, greedy.outputIds)
  t.deepEqual((await llm.generate({ inputIds: ids }, GREEDY)).outputIds, greedy.outputIds)
}

test('the model and tokenizer agree on the vocabulary size', (t) => {
  t.is(normal.getServerInfo().vocabSize, vocab)
  t.true(vocab > 1000)
  t.true(greedy.outputIds.length === 12 && greedy.text.length > 0)
})

test('inputIds in -> outputIds out, text empty; greedy ids equal the normal engine', async (t) => {
  const out = bare.generateSync({ inputIds: ids }, GREEDY)
  t.deepEqual(out.outputIds, greedy.outputIds)
  t.is(out.text, '')
  t.deepEqual(out.metaInfo.finishReason, { type: 'length', length: 12 })
  t.is(out.metaInfo.promptTokens, ids.length)
  t.is(out.metaInfo.completionTokens, 12)
  // async, batched, one prompt twice
  const outs = await bare.generate({ inputIds: [ids, ids.slice(0, -1)] }, GREEDY)
  t.deepEqual(outs[0].outputIds, greedy.outputIds)
  t.deepEqual(outs[1].outputIds, normal.generateSync({ inputIds: ids.slice(0, -1) }, GREEDY).outputIds)
  t.true(outs.every((o) => o.text === ''))
})

test('seeded sampling gives the same ids on both engines', async (t) => {
  const sp = { temperature: 1, topP: 0.9, seed: 1234, maxNewTokens: 10, ignoreEos: true }
  const a = await normal.generate({ inputIds: ids }, sp)
  const b = await bare.generate({ inputIds: ids }, sp)
  t.deepEqual(b.outputIds, a.outputIds)
})

test('without ignoreEos both engines stop at the model EOS (as SGLang does without a tokenizer)', async (t) => {
  const sp = { temperature: 0, maxNewTokens: 48 }
  const a = await normal.generate({ inputIds: ids }, sp)
  const b = await bare.generate({ inputIds: ids }, sp)
  t.is(a.metaInfo.finishReason.type, 'stop', 'the prompt must end at EOS within 48 tokens for this test to mean anything')
  t.deepEqual(b.outputIds, a.outputIds)
  t.deepEqual(b.metaInfo.finishReason, a.metaInfo.finishReason)
})

test('stream: outputIds chunks concatenate to the greedy ids; text and deltas are empty', async (t) => {
  const got: number[] = []
  let last
  for await (const c of bare.generateStream({ inputIds: ids }, GREEDY)) {
    got.push(...c.outputIds)
    t.is(c.delta, '')
    t.is(c.text, '')
    last = c
  }
  t.deepEqual(got, greedy.outputIds)
  t.deepEqual(last?.metaInfo.finishReason, { type: 'length', length: 12 })
  const sync: number[] = []
  for (const c of bare.generateStreamSync({ inputIds: ids }, GREEDY)) sync.push(...c.outputIds)
  t.deepEqual(sync, greedy.outputIds)
})

test('stopTokenIds end a bare request on the id (kept in outputIds, as SGLang)', async (t) => {
  const stopAt = greedy.outputIds[4]
  const first = greedy.outputIds.indexOf(stopAt)
  const out = await bare.generate({ inputIds: ids }, { ...GREEDY, stopTokenIds: [stopAt] })
  t.deepEqual(out.outputIds, greedy.outputIds.slice(0, first + 1))
  t.deepEqual(out.metaInfo.finishReason, { type: 'stop', matched: stopAt })
  // minNewTokens masks the stop id until reached.
  const late = await bare.generate({ inputIds: ids }, { ...GREEDY, stopTokenIds: [stopAt], minNewTokens: first + 2 })
  t.true(late.outputIds.length >= first + 2)
  t.false(late.outputIds.slice(0, first + 1).includes(stopAt))
})

test('text prompts, stop strings and regexes, minNewTokens without stop ids, tokenize/detokenize: clear errors', async (t) => {
  isCode(t, thrown(() => bare.generateSync('Hello', GREEDY)), 'ERR_INVALID_INPUT', /tokenizer/)
  isCode(t, await rejected(() => bare.generate(['Hello', 'there'], GREEDY)), 'ERR_INVALID_INPUT', /tokenizer/)
  isCode(t, thrown(() => bare.generateStreamSync('Hello', GREEDY).next()), 'ERR_INVALID_INPUT', /tokenizer/)
  isCode(t, await rejected(() => bare.generateStream('Hello', GREEDY).next()), 'ERR_INVALID_INPUT', /tokenizer/)
  isCode(t, thrown(() => bare.generateSync({ inputIds: ids }, { ...GREEDY, stop: ['.'] })), 'ERR_INVALID_SAMPLING_PARAMS', /stop/)
  isCode(t, thrown(() => bare.generateSync({ inputIds: ids }, { ...GREEDY, stopRegex: '\\.' })), 'ERR_INVALID_SAMPLING_PARAMS', /stopRegex.*tokenizer/)
  isCode(t, thrown(() => bare.generateSync({ inputIds: ids }, { temperature: 0, minNewTokens: 2 })), 'ERR_INVALID_SAMPLING_PARAMS', /minNewTokens/)
  isCode(t, thrown(() => bare.tokenize('Hello')), 'ERR_INVALID_INPUT', /tokenizer/)
  isCode(t, thrown(() => bare.detokenize(ids)), 'ERR_INVALID_INPUT', /tokenizer/)
  // The same requests are fine on the normal engine.
  t.is(normal.generateSync({ inputIds: ids }, { ...GREEDY, stop: ['\u0000never'] }).outputIds.length, 12)
  t.is(normal.generateSync({ inputIds: ids }, { ...GREEDY, stopRegex: '\\x00never' }).outputIds.length, 12)
  await stillServes(t, bare)
})

// [title, bad id] for ids the engines must refuse up front.
const BAD_IDS: [string, () => number][] = [
  ['vocab size', () => vocab],
  ['vocab size + 1000', () => vocab + 1000],
  ['2**32', () => 2 ** 32],
  ['-1', () => -1],
  ['1.5', () => 1.5],
  ['NaN', () => NaN],
  ['Infinity', () => Infinity],
  ["'5' (a string)", () => '5' as unknown as number],
]

for (const [name, which] of [['normal', () => normal] as const, ['skipTokenizerInit', () => bare] as const]) {
  for (const [title, bad] of BAD_IDS) {
    test(`${name} engine: input id ${title} -> ERR_INVALID_INPUT, then keeps serving`, async (t) => {
      const llm = which()
      const badIds = [...ids.slice(0, 3), bad(), ...ids.slice(3)]
      isCode(t, thrown(() => llm.generateSync({ inputIds: badIds }, GREEDY)), 'ERR_INVALID_INPUT')
      isCode(t, await rejected(() => llm.generate({ inputIds: badIds }, GREEDY)), 'ERR_INVALID_INPUT')
      isCode(t, thrown(() => llm.generateStreamSync({ inputIds: badIds }, GREEDY).next()), 'ERR_INVALID_INPUT')
      isCode(t, await rejected(() => llm.generateStream({ inputIds: badIds }, GREEDY).next()), 'ERR_INVALID_INPUT')
      // One bad prompt rejects the whole batch.
      isCode(t, await rejected(() => llm.generate({ inputIds: [ids, badIds] }, GREEDY)), 'ERR_INVALID_INPUT')
      await stillServes(t, llm)
    })
  }
}

test('the largest valid id (vocab size - 1) is accepted by both engines', async (t) => {
  const edge = [...ids, vocab - 1]
  const a = await normal.generate({ inputIds: edge }, { ...GREEDY, maxNewTokens: 3 })
  const b = await bare.generate({ inputIds: edge }, { ...GREEDY, maxNewTokens: 3 })
  t.is(a.outputIds.length, 3)
  t.deepEqual(b.outputIds, a.outputIds)
})

test('out-of-range ids in stopTokenIds and logitBias are rejected on the bare engine too', (t) => {
  isCode(t, thrown(() => bare.generateSync({ inputIds: ids }, { ...GREEDY, stopTokenIds: [vocab] })), 'ERR_INVALID_SAMPLING_PARAMS', /stopTokenIds/)
  isCode(t, thrown(() => bare.generateSync({ inputIds: ids }, { ...GREEDY, stopTokenIds: [-1] })), 'ERR_INVALID_SAMPLING_PARAMS', /stopTokenIds/)
  isCode(t, thrown(() => bare.generateSync({ inputIds: ids }, { ...GREEDY, logitBias: { [String(vocab)]: 1 } })), 'ERR_INVALID_SAMPLING_PARAMS', /logitBias/)
})

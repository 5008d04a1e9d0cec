// Bad input is rejected with a RadixLMError whose code is stable and whose message names the key; the
// engine keeps serving afterwards.
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { Engine, RadixLMError, type EngineOptions, type SamplingParams } from '../index'
import { modelPath, useEngine } from './helpers'

const engine = useEngine(test)
const PROMPT = 'Hello'
const OK_PARAMS = { temperature: 0, maxNewTokens: 2 }

let okText: string
test.before(() => {
  okText = engine().generateSync(PROMPT, OK_PARAMS).text
})

/** The same engine still serves a valid request (sync and async) after a rejected one. */
async function stillServes(t: ExecutionContext) {
  const llm = engine()
  t.is(llm.generateSync(PROMPT, OK_PARAMS).text, okText)
  t.is((await llm.generate(PROMPT, OK_PARAMS)).text, okText)
}

function expectError(t: ExecutionContext, f: () => unknown, code: string, mentions?: string | RegExp): RadixLMError | undefined {
  let thrown: unknown
  try {
    f()
  } catch (e) {
    thrown = e
  }
  return checkError(t, thrown, code, mentions)
}

async function expectRejection(t: ExecutionContext, f: () => Promise<unknown>, code: string, mentions?: string | RegExp) {
  let thrown: unknown
  try {
    await f()
  } catch (e) {
    thrown = e
  }
  return checkError(t, thrown, code, mentions)
}

function checkError(t: ExecutionContext, e: unknown, code: string, mentions?: string | RegExp): RadixLMError | undefined {
  if (e === undefined) {
    t.fail(`expected ${code}, but nothing was thrown`)
    return undefined
  }
  t.true(e instanceof RadixLMError, `expected a RadixLMError, got ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}`)
  t.true(e instanceof Error)
  const err = e as RadixLMError
  t.is(err.code, code, err.message)
  t.is(err.name, 'RadixLMError')
  if (typeof mentions === 'string') t.true(err.message.includes(mentions), `message ${JSON.stringify(err.message)} names ${mentions}`)
  else if (mentions) t.regex(err.message, mentions)
  return err
}

// [title, params, key the message must name]
const BAD_PARAMS: [string, Record<string, unknown>, string][] = [
  ['temperature -1', { temperature: -1 }, 'temperature'],
  ['temperature NaN', { temperature: NaN }, 'temperature'],
  ['temperature Infinity', { temperature: Infinity }, 'temperature'],
  ["temperature 'x'", { temperature: 'x' }, 'temperature'],
  ['topP 0', { topP: 0 }, 'topP'],
  ['topP 1.5', { topP: 1.5 }, 'topP'],
  ['topK 0', { topK: 0 }, 'topK'],
  ['topK -2', { topK: -2 }, 'topK'],
  ['topK 1.5', { topK: 1.5 }, 'topK'],
  ['minP -0.1', { minP: -0.1 }, 'minP'],
  ['minP 1.1', { minP: 1.1 }, 'minP'],
  ['maxNewTokens -1', { maxNewTokens: -1 }, 'maxNewTokens'],
  ['maxNewTokens 1.5', { maxNewTokens: 1.5 }, 'maxNewTokens'],
  ['minNewTokens > maxNewTokens', { minNewTokens: 5, maxNewTokens: 2 }, 'minNewTokens'],
  ['stop 5', { stop: 5 }, 'stop'],
  ["stop ['']", { stop: [''] }, 'stop'],
  ['stopRegex 5', { stopRegex: 5 }, 'stopRegex'],
  ['stopRegex that does not compile', { stopRegex: '(ab' }, 'stopRegex'],
  ['stop_regex with look-behind (not in Rust regex syntax)', { stop_regex: ['ok', '(?<=a)b'] }, 'stopRegex'],
  ['stopRegex that matches the empty string', { stopRegex: 'a*' }, 'stopRegex'],
  ['stopTokenIds [-1]', { stopTokenIds: [-1] }, 'stopTokenIds'],
  ['stopTokenIds [999999]', { stopTokenIds: [999999] }, 'stopTokenIds'],
  ['frequencyPenalty 3', { frequencyPenalty: 3 }, 'frequencyPenalty'],
  ['presencePenalty -3', { presencePenalty: -3 }, 'presencePenalty'],
  ['repetitionPenalty 0', { repetitionPenalty: 0 }, 'repetitionPenalty'],
  ['repetitionPenalty 3', { repetitionPenalty: 3 }, 'repetitionPenalty'],
  ["logitBias {'999999': 1}", { logitBias: { '999999': 1 } }, 'logitBias'],
  ['logitBias value NaN', { logitBias: { '5': NaN } }, 'logitBias'],
  ['seed -1', { seed: -1 }, 'seed'],
  ['n 0', { n: 0 }, 'n'],
  ["ignoreEos 'yes'", { ignoreEos: 'yes' }, 'ignoreEos'],
  ["unknown key 'bogus'", { bogus: 1 }, 'bogus'],
  ['jsonSchema not valid JSON', { jsonSchema: '{"type":' }, 'jsonSchema'],
  ['regex that does not compile', { regex: '(ab' }, 'regex'],
  ['jsonSchema and regex together', { jsonSchema: '{"type":"object"}', regex: 'a' }, 'regex'],
  ['structuralTag (not supported yet)', { structuralTag: '{}' }, 'structuralTag'],
  ['both max_new_tokens and maxNewTokens', { max_new_tokens: 2, maxNewTokens: 2 }, 'maxNewTokens'],
  ['snake_case key with a bad value names the camelCase key', { top_p: 2 }, 'topP'],
]

for (const [title, params, key] of BAD_PARAMS) {
  test(`samplingParams ${title} -> ERR_INVALID_SAMPLING_PARAMS naming ${key}`, async (t) => {
    const llm = engine()
    // A small budget unless the case sets the length itself (in either spelling).
    const sp = ('max_new_tokens' in params ? { ...params } : { maxNewTokens: 2, ...params }) as SamplingParams
    const err = expectError(t, () => llm.generateSync(PROMPT, sp), 'ERR_INVALID_SAMPLING_PARAMS', key)
    if (err) t.regex(err.message, new RegExp(`\\b${key}\\b`), 'names the key as a word')
    // Every mode rejects it the same way.
    await expectRejection(t, () => llm.generate(PROMPT, sp), 'ERR_INVALID_SAMPLING_PARAMS', key)
    expectError(t, () => llm.generateStreamSync(PROMPT, sp).next(), 'ERR_INVALID_SAMPLING_PARAMS', key)
    await expectRejection(t, () => llm.generateStream(PROMPT, sp).next(), 'ERR_INVALID_SAMPLING_PARAMS', key)
    // In a batch, one bad entry rejects the whole call.
    await expectRejection(t, () => llm.generate([PROMPT, PROMPT], [OK_PARAMS, sp]), 'ERR_INVALID_SAMPLING_PARAMS', key)
    await stillServes(t)
  })
}

test('a rejected batch leaves nothing running', async (t) => {
  const llm = engine()
  await expectRejection(t, () => llm.generate([PROMPT, PROMPT, PROMPT], [OK_PARAMS, OK_PARAMS, { topP: 7 }]), 'ERR_INVALID_SAMPLING_PARAMS', 'topP')
  await stillServes(t)
})

test('inputIds containing -1, 1.5 or 10**9 -> ERR_INVALID_INPUT', async (t) => {
  const llm = engine()
  for (const bad of [-1, 1.5, 10 ** 9]) {
    const ids = [...llm.tokenize(PROMPT), bad]
    expectError(t, () => llm.generateSync({ inputIds: ids }, OK_PARAMS), 'ERR_INVALID_INPUT')
    await expectRejection(t, () => llm.generate({ inputIds: [llm.tokenize(PROMPT), ids] }, OK_PARAMS), 'ERR_INVALID_INPUT')
  }
  await stillServes(t)
})

test("empty prompt '' -> ERR_INVALID_INPUT", async (t) => {
  const llm = engine()
  expectError(t, () => llm.generateSync('', OK_PARAMS), 'ERR_INVALID_INPUT')
  await expectRejection(t, () => llm.generate('', OK_PARAMS), 'ERR_INVALID_INPUT')
  await expectRejection(t, () => llm.generate([PROMPT, ''], OK_PARAMS), 'ERR_INVALID_INPUT')
  expectError(t, () => llm.generateSync({ inputIds: [] }, OK_PARAMS), 'ERR_INVALID_INPUT')
  await stillServes(t)
})

test('prompts of the wrong type -> ERR_INVALID_INPUT', async (t) => {
  const llm = engine()
  for (const bad of [5, null, undefined, { text: 'x' }, [PROMPT, 5]]) {
    expectError(t, () => llm.generateSync(bad as any, OK_PARAMS), 'ERR_INVALID_INPUT')
  }
  await stillServes(t)
})

test('samplingParams array length mismatch -> ERR_INVALID_SAMPLING_PARAMS', async (t) => {
  const llm = engine()
  expectError(t, () => llm.generateSync([PROMPT, PROMPT], [OK_PARAMS]), 'ERR_INVALID_SAMPLING_PARAMS')
  await expectRejection(t, () => llm.generate([PROMPT], [OK_PARAMS, OK_PARAMS]), 'ERR_INVALID_SAMPLING_PARAMS')
  await stillServes(t)
})

test('per-prompt samplingParams with different n -> ERR_INVALID_SAMPLING_PARAMS naming n (as SGLang)', async (t) => {
  const llm = engine()
  expectError(t, () => llm.generateSync([PROMPT, PROMPT], [{ ...OK_PARAMS, n: 2 }, OK_PARAMS]), 'ERR_INVALID_SAMPLING_PARAMS', 'n must be the same')
  await expectRejection(t, () => llm.generate([PROMPT, PROMPT], [{ ...OK_PARAMS, n: 1 }, { ...OK_PARAMS, n: 3 }]), 'ERR_INVALID_SAMPLING_PARAMS')
  // The same n everywhere (explicit or by default) is a batch of prompts x n.
  t.is(llm.generateSync([PROMPT, PROMPT], [{ ...OK_PARAMS, n: 2 }, { ...OK_PARAMS, n: 2 }]).length, 4)
  t.is(llm.generateSync([PROMPT, PROMPT], [{ ...OK_PARAMS, n: 1 }, OK_PARAMS]).length, 2)
  await stillServes(t)
})

test('unknown generate option / unsupported option -> ERR_INVALID_INPUT naming it', async (t) => {
  const llm = engine()
  await expectRejection(t, () => llm.generate(PROMPT, OK_PARAMS, { bogus: 1 } as any), 'ERR_INVALID_INPUT', 'bogus')
  await expectRejection(t, () => llm.generate(PROMPT, OK_PARAMS, { rid: ['a', 'b'] }), 'ERR_INVALID_INPUT', 'rid')
  await stillServes(t)
})

// SGLang rejects a rid that is already in use; radixlm's DESIGN keeps `rid` for the caller to name
// requests, which only works if a live rid is unique.
test('a rid already in flight is rejected (ERR_INVALID_INPUT)', async (t) => {
  const llm = engine()
  const first = llm.generate(PROMPT, { temperature: 0, maxNewTokens: 24, ignoreEos: true }, { rid: 'validation-dup-rid' })
  try {
    await expectRejection(t, () => llm.generate(PROMPT, OK_PARAMS, { rid: 'validation-dup-rid' }), 'ERR_INVALID_INPUT', 'rid')
  } finally {
    await first
  }
  // Once the first has finished, the rid may be used again.
  t.is((await llm.generate(PROMPT, OK_PARAMS, { rid: 'validation-dup-rid' })).metaInfo.id, 'validation-dup-rid')
  await stillServes(t)
})

test('a prompt longer than the context -> ERR_PROMPT_TOO_LONG', async (t) => {
  const small = new Engine({ modelPath: modelPath(), contextLength: 64 })
  t.teardown(() => small.shutdown())
  const long = 'hello '.repeat(100)
  t.true(small.tokenize(long).length > 64)
  const err = expectError(t, () => small.generateSync(long, OK_PARAMS), 'ERR_PROMPT_TOO_LONG')
  t.log(err?.message)
  await expectRejection(t, () => small.generate({ inputIds: small.tokenize(long) }, OK_PARAMS), 'ERR_PROMPT_TOO_LONG')
  // getServerInfo's maxReqInputLen is the exact bound: that many tokens pass, one more fails.
  const info = small.getServerInfo()
  t.is(info.maxReqInputLen, 63)
  const ids = small.tokenize(long)
  t.is(small.generateSync({ inputIds: ids.slice(0, info.maxReqInputLen) }, { maxNewTokens: 1 }).outputIds.length, 1)
  expectError(t, () => small.generateSync({ inputIds: ids.slice(0, info.maxReqInputLen + 1) }, OK_PARAMS), 'ERR_PROMPT_TOO_LONG')
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'))
  t.is(info.version, pkg.version, 'the native version is the package version')
  // The small engine still serves a short prompt, and the default engine is unaffected.
  t.is(small.generateSync(PROMPT, OK_PARAMS).text, okText)
  await stillServes(t)
})

test('engine options: unknown option -> ERR_INVALID_OPTIONS naming it', async (t) => {
  expectError(t, () => new Engine({ modelPath: modelPath(), bogusOption: 1 } as unknown as EngineOptions), 'ERR_INVALID_OPTIONS', 'bogusOption')
  await expectRejection(t, () => Engine.create({ modelPath: modelPath(), bogusOption: 1 } as unknown as EngineOptions), 'ERR_INVALID_OPTIONS', 'bogusOption')
  await stillServes(t)
})

test('engine options: non-finite number -> ERR_INVALID_OPTIONS naming it', (t) => {
  expectError(t, () => new Engine({ modelPath: modelPath(), memFractionStatic: NaN }), 'ERR_INVALID_OPTIONS', 'memFractionStatic')
})

test('engine options: missing modelPath file -> ERR_MODEL_NOT_FOUND', async (t) => {
  const missing = path.join(os.tmpdir(), `radixlm-missing-${process.pid}`, 'nope.gguf')
  expectError(t, () => new Engine({ modelPath: missing }), 'ERR_MODEL_NOT_FOUND', missing)
  await expectRejection(t, () => Engine.create({ modelPath: missing }), 'ERR_MODEL_NOT_FOUND')
  await stillServes(t)
})

test("engine options: device 'cuda' on this CPU build -> ERR_INVALID_OPTIONS", async (t) => {
  expectError(t, () => new Engine({ modelPath: modelPath(), device: 'cuda' }), 'ERR_INVALID_OPTIONS', 'device')
  await stillServes(t)
})

test("engine options: dtype 'bfloat16' on the CPU backend, or an unknown dtype -> ERR_INVALID_OPTIONS naming dtype", async (t) => {
  expectError(t, () => new Engine({ modelPath: modelPath(), device: 'cpu', dtype: 'bfloat16' }), 'ERR_INVALID_OPTIONS', 'dtype')
  expectError(t, () => new Engine({ modelPath: modelPath(), dtype: 'float16' }), 'ERR_INVALID_OPTIONS', 'dtype')
  // 'float32' and 'auto' load on the CPU.
  const f32 = new Engine({ modelPath: modelPath(), device: 'cpu', dtype: 'float32' })
  t.is(f32.getServerInfo().dtype, 'float32')
  f32.shutdown()
  await stillServes(t)
})

test('corrupt model files -> ERR_INVALID_MODEL (garbage, truncated GGUF)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-bad-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const garbage = path.join(dir, 'x.gguf')
  // Deterministic garbage that does not start with the GGUF magic.
  const bytes = Buffer.alloc(1024)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + 7) & 0xff
  fs.writeFileSync(garbage, bytes)
  expectError(t, () => new Engine({ modelPath: garbage }), 'ERR_INVALID_MODEL')
  await expectRejection(t, () => Engine.create({ modelPath: garbage }), 'ERR_INVALID_MODEL')

  const real = modelPath()
  if (real.endsWith('.gguf')) {
    const truncated = path.join(dir, 'truncated.gguf')
    const fd = fs.openSync(real, 'r')
    const head = Buffer.alloc(1024 * 1024)
    fs.readSync(fd, head, 0, head.length, 0)
    fs.closeSync(fd)
    fs.writeFileSync(truncated, head)
    expectError(t, () => new Engine({ modelPath: truncated }), 'ERR_INVALID_MODEL')
    await expectRejection(t, () => Engine.create({ modelPath: truncated }), 'ERR_INVALID_MODEL')
    // Header intact but the tensor data cut short: the whole metadata, and only a little of the weights.
    const partial = path.join(dir, 'partial.gguf')
    const size = fs.statSync(real).size
    fs.copyFileSync(real, partial)
    fs.truncateSync(partial, Math.floor(size * 0.9))
    expectError(t, () => new Engine({ modelPath: partial }), 'ERR_INVALID_MODEL')
    // An empty file.
    const empty = path.join(dir, 'empty.gguf')
    fs.writeFileSync(empty, '')
    expectError(t, () => new Engine({ modelPath: empty }), 'ERR_INVALID_MODEL')
  }
  await stillServes(t)
})

// Cancellation (AbortSignal, leaving a stream loop) and shutdown. Serial: the idle checks read the shared
// engine's counters, which other requests would disturb.
import test, { type ExecutionContext } from 'ava'
import { Engine, RadixLMError, type GenerateOutput, type StreamChunk } from '../index'
import { idle, modelPath, sleep, useEngine, waitFor, withTimeout } from './helpers'

const engine = useEngine(test)
const PROMPT = 'Write a long story about a dragon.'
// Long enough that it cannot finish before we abort it.
const LONG = { temperature: 0, maxNewTokens: 2000, ignoreEos: true }
const SHORT = { temperature: 0, maxNewTokens: 4 }

function isCode(t: ExecutionContext, e: unknown, code: string) {
  t.true(e instanceof RadixLMError, `expected RadixLMError ${code}, got ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}`)
  t.is((e as RadixLMError).code, code)
}

async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: string) {
  try {
    await p
    t.fail(`expected a rejection with ${code}, but it resolved`)
  } catch (e) {
    isCode(t, e, code)
  }
}

function throwsWith(t: ExecutionContext, f: () => unknown, code: string) {
  try {
    f()
    t.fail(`expected ${code} to be thrown`)
  } catch (e) {
    isCode(t, e, code)
  }
}

/** Asserts the engine drains (nothing running or waiting, no pages in use) within `ms`. */
async function assertIdle(t: ExecutionContext, llm: Engine, ms = 1000) {
  const ok = await waitFor(() => idle(llm), ms)
  t.true(ok, `engine not idle ${ms} ms after the abort: ${JSON.stringify(llm.getServerInfo())}`)
}

async function stillServes(t: ExecutionContext, llm: Engine) {
  const o = await llm.generate('Hello', SHORT)
  t.deepEqual(o.metaInfo.finishReason, { type: 'length', length: 4 })
}

/** Resolves once the engine has started generating for some request (so an abort hits a running request). */
async function untilRunning(llm: Engine) {
  await waitFor(() => (llm.getServerInfo().running as number) > 0, 5000, 5)
  await sleep(100)
}

test.serial('AbortSignal on generate rejects with ERR_ABORTED; the engine keeps serving', async (t) => {
  const llm = engine()
  const ac = new AbortController()
  const p = llm.generate(PROMPT, LONG, { signal: ac.signal })
  await untilRunning(llm)
  const t0 = Date.now()
  ac.abort()
  await rejectsWith(t, p, 'ERR_ABORTED')
  t.true(Date.now() - t0 < 1000, 'rejects promptly')
  await assertIdle(t, llm)
  await stillServes(t, llm)
})

test.serial('AbortSignal on a batch generate aborts every request', async (t) => {
  const llm = engine()
  const ac = new AbortController()
  const p = llm.generate([PROMPT, 'Tell me about cats.', 'Count to a thousand.'], LONG, { signal: ac.signal })
  await untilRunning(llm)
  ac.abort()
  await rejectsWith(t, p, 'ERR_ABORTED')
  await assertIdle(t, llm)
})

test.serial('ERR_ABORTED from a batch generate carries the outputs as they stood (err.partial)', async (t) => {
  const llm = engine()
  const ac = new AbortController()
  const prompts = ['Hello', PROMPT, 'Tell me about cats.']
  const p = llm.generate(prompts, [SHORT, LONG, LONG], { signal: ac.signal })
  await untilRunning(llm)
  await waitFor(() => (llm.getServerInfo().running as number) === 2, 5000, 5) // the short one is done
  ac.abort()
  let err: unknown
  try {
    await p
  } catch (e) {
    err = e
  }
  isCode(t, err, 'ERR_ABORTED')
  const partial = (err as RadixLMError).partial as GenerateOutput[]
  t.true(Array.isArray(partial) && partial.length === 3, `partial: ${JSON.stringify(partial)?.slice(0, 200)}`)
  t.deepEqual(partial[0].metaInfo.finishReason, { type: 'length', length: 4 })
  for (const o of partial.slice(1)) {
    t.is(o.metaInfo.finishReason?.type, 'abort')
    t.true(o.outputIds.length > 0 && o.outputIds.length < 2000, `${o.outputIds.length} tokens before the abort`)
    t.is(o.metaInfo.completionTokens, o.outputIds.length)
    t.is(o.text, llm.detokenize(o.outputIds))
  }
  // A single prompt: partial is the one output.
  const ac2 = new AbortController()
  const q = llm.generate(PROMPT, LONG, { signal: ac2.signal })
  await untilRunning(llm)
  ac2.abort()
  const e2 = await q.then(
    () => null,
    (e) => e,
  )
  isCode(t, e2, 'ERR_ABORTED')
  t.is(((e2 as RadixLMError).partial as GenerateOutput).metaInfo.finishReason?.type, 'abort')
  await assertIdle(t, llm)
})

test.serial('abortAll ends every request as an abort with its output so far; calls resolve; the engine keeps serving', async (t) => {
  const llm = engine()
  llm.abortAll() // nothing in flight: a no-op
  const batch = llm.generate([PROMPT, 'Tell me about cats.', 'Count to a thousand.'], LONG)
  const chunks: StreamChunk[] = []
  const stream = (async () => {
    for await (const c of llm.generateStream('Write a poem about the sea.', LONG)) chunks.push(c)
  })()
  await untilRunning(llm)
  await waitFor(() => chunks.length >= 2, 5000, 5)
  const t0 = Date.now()
  llm.abortAll()
  const outs = await withTimeout(batch, 2000)
  t.not(await withTimeout(stream, 2000), 'timeout')
  t.not(outs, 'timeout')
  t.true(Date.now() - t0 < 1000, `settled in ${Date.now() - t0} ms`)
  for (const o of outs as GenerateOutput[]) {
    t.deepEqual(o.metaInfo.finishReason, { type: 'abort', message: 'aborted by abortAll' })
    t.true(o.outputIds.length < 2000)
    t.is(o.text, llm.detokenize(o.outputIds))
  }
  const last = chunks.at(-1)!
  t.deepEqual(last.metaInfo.finishReason, { type: 'abort', message: 'aborted by abortAll' })
  t.is(last.text, chunks.map((c) => c.delta).join(''))
  await assertIdle(t, llm)
  // Requests submitted after abortAll run normally.
  await stillServes(t, llm)
})

test.serial('AbortSignal.timeout works as a deadline', async (t) => {
  const llm = engine()
  await rejectsWith(t, llm.generate(PROMPT, LONG, { signal: AbortSignal.timeout(300) }), 'ERR_ABORTED')
  await assertIdle(t, llm)
})

test.serial('an already-aborted signal rejects at once, in every mode, without queueing work', async (t) => {
  const llm = engine()
  const signal = AbortSignal.abort()
  const before = llm.getServerInfo().steps
  const t0 = Date.now()
  await rejectsWith(t, llm.generate(PROMPT, LONG, { signal }), 'ERR_ABORTED')
  throwsWith(t, () => llm.generateSync(PROMPT, LONG, { signal }), 'ERR_ABORTED')
  throwsWith(t, () => llm.generateStreamSync(PROMPT, LONG, { signal }).next(), 'ERR_ABORTED')
  await rejectsWith(t, llm.generateStream(PROMPT, LONG, { signal }).next(), 'ERR_ABORTED')
  t.true(Date.now() - t0 < 200, `took ${Date.now() - t0} ms`)
  t.is(llm.getServerInfo().steps, before, 'no engine step ran')
  t.true(idle(llm))
  await stillServes(t, llm)
})

test.serial('AbortSignal on generateStream: the loop throws ERR_ABORTED', async (t) => {
  const llm = engine()
  const ac = new AbortController()
  let n = 0
  try {
    for await (const c of llm.generateStream(PROMPT, LONG, { signal: ac.signal })) {
      void c
      if (++n === 2) setTimeout(() => ac.abort(), 50)
    }
    t.fail('the stream ended without an error')
  } catch (e) {
    isCode(t, e, 'ERR_ABORTED')
  }
  t.true(n >= 2)
  await assertIdle(t, llm)
})

test.serial('AbortSignal on generateStream frees the requests at once, while the caller still holds a chunk', async (t) => {
  const llm = engine()
  const ac = new AbortController()
  const it = llm.generateStream([PROMPT, 'Tell me about cats.'], LONG, { signal: ac.signal })
  t.false((await it.next()).done)
  ac.abort() // the loop is paused: nothing calls next() until the engine has drained
  await assertIdle(t, llm)
  await rejectsWith(t, it.next(), 'ERR_ABORTED')
})

test.serial('AbortSignal on generateStreamSync (aborted from inside the loop): the loop throws ERR_ABORTED', async (t) => {
  const llm = engine()
  const ac = new AbortController()
  let n = 0
  throwsWith(
    t,
    () => {
      for (const c of llm.generateStreamSync(PROMPT, LONG, { signal: ac.signal })) {
        void c
        if (++n === 2) ac.abort()
      }
    },
    'ERR_ABORTED',
  )
  t.is(n, 2)
  await assertIdle(t, llm)
})

test.serial('breaking out of for await after 2 chunks stops the request', async (t) => {
  const llm = engine()
  let n = 0
  for await (const c of llm.generateStream(PROMPT, LONG)) {
    t.is(c.metaInfo.finishReason, null)
    if (++n === 2) break
  }
  t.is(n, 2)
  await assertIdle(t, llm)
  await stillServes(t, llm)
})

test.serial('breaking out of a batch generateStream stops every request', async (t) => {
  const llm = engine()
  let n = 0
  for await (const c of llm.generateStream([PROMPT, 'Tell me about cats.'], LONG)) {
    void c
    if (++n === 3) break
  }
  await assertIdle(t, llm)
})

test.serial('breaking out of generateStreamSync after 2 chunks stops the request', async (t) => {
  const llm = engine()
  let n = 0
  for (const c of llm.generateStreamSync(PROMPT, LONG)) {
    t.is(c.metaInfo.finishReason, null)
    if (++n === 2) break
  }
  t.is(n, 2)
  await assertIdle(t, llm)
  await stillServes(t, llm)
})

test.serial('an exception thrown inside a stream loop also stops the request', async (t) => {
  const llm = engine()
  await t.throwsAsync(async () => {
    for await (const c of llm.generateStream(PROMPT, LONG)) {
      void c
      throw new Error('consumer failed')
    }
  }, { message: 'consumer failed' })
  await assertIdle(t, llm)
})

test.serial('50 concurrent requests with 20 aborted at random times all settle', async (t) => {
  const llm = engine()
  // Deterministic "random" abort times and choice of victims.
  let seed = 12345
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const N = 50
  const MAX = 12
  const victims = new Set<number>()
  while (victims.size < 20) victims.add(Math.floor(rand() * N))
  const controllers = Array.from({ length: N }, () => new AbortController())
  const prompts = Array.from({ length: N }, (_, i) => `Request number ${i}: tell me a fact about the number ${i}.`)
  const promises = prompts.map((p, i) =>
    llm.generate(p, { temperature: 0, maxNewTokens: MAX, ignoreEos: true }, { signal: controllers[i].signal }),
  )
  const timers = [...victims].map((i) => setTimeout(() => controllers[i].abort(), Math.floor(rand() * 1500)))
  const settled = await withTimeout(Promise.allSettled(promises), 120_000)
  timers.forEach(clearTimeout)
  if (settled === 'timeout') return t.fail(`not all requests settled: ${JSON.stringify(llm.getServerInfo())}`)
  let aborted = 0
  settled.forEach((r, i) => {
    if (r.status === 'rejected') {
      t.true(victims.has(i), `request ${i} (not aborted) rejected: ${r.reason}`)
      isCode(t, r.reason, 'ERR_ABORTED')
      aborted++
    } else {
      const o = r.value as GenerateOutput
      // Unaborted requests (and victims that finished before their abort fired) got every token.
      t.deepEqual(o.metaInfo.finishReason, { type: 'length', length: MAX }, `request ${i}`)
      t.is(o.outputIds.length, MAX)
    }
  })
  t.log(`${aborted} of 20 victims were aborted before finishing`)
  t.true(aborted > 0, 'at least one abort landed while its request was in flight')
  await assertIdle(t, llm, 2000)
  await stillServes(t, llm)
})

test.serial('shutdown(): in-flight requests reject with ERR_ENGINE_SHUTDOWN; idempotent; later calls throw', async (t) => {
  const llm = await Engine.create({ modelPath: modelPath() }) // async load
  t.true(llm instanceof Engine)
  t.is((await llm.generate('Hello', SHORT)).outputIds.length, 4)

  const inflight = [llm.generate(PROMPT, LONG), llm.generate([PROMPT, 'Hi'], LONG)]
  const stream = llm.generateStream(PROMPT, LONG)
  const first = await stream.next()
  t.false(first.done)
  await untilRunning(llm)
  llm.shutdown()
  for (const p of inflight) await rejectsWith(t, p, 'ERR_ENGINE_SHUTDOWN')
  await rejectsWith(t, (async () => {
    for (;;) if ((await stream.next()).done) return
  })(), 'ERR_ENGINE_SHUTDOWN')

  t.notThrows(() => llm.shutdown(), 'shutdown is idempotent')
  t.notThrows(() => llm.shutdown())
  await t.notThrowsAsync(async () => llm[Symbol.asyncDispose]())
  t.notThrows(() => llm[Symbol.dispose]())

  await rejectsWith(t, llm.generate('Hello', SHORT), 'ERR_ENGINE_SHUTDOWN')
  throwsWith(t, () => llm.generateSync('Hello', SHORT), 'ERR_ENGINE_SHUTDOWN')
  throwsWith(t, () => llm.generateStreamSync('Hello', SHORT).next(), 'ERR_ENGINE_SHUTDOWN')
  await rejectsWith(t, llm.generateStream('Hello', SHORT).next(), 'ERR_ENGINE_SHUTDOWN')
  throwsWith(t, () => llm.tokenize('Hello'), 'ERR_ENGINE_SHUTDOWN')
  throwsWith(t, () => llm.detokenize([1]), 'ERR_ENGINE_SHUTDOWN')
  throwsWith(t, () => llm.getServerInfo(), 'ERR_ENGINE_SHUTDOWN')
  throwsWith(t, () => llm.flushCache(), 'ERR_ENGINE_SHUTDOWN')
  throwsWith(t, () => llm.abortAll(), 'ERR_ENGINE_SHUTDOWN')
})

test.serial('shutdown() while a generateStreamSync loop is paused: the next step throws ERR_ENGINE_SHUTDOWN', async (t) => {
  const llm = new Engine({ modelPath: modelPath() })
  const it = llm.generateStreamSync(PROMPT, LONG)
  t.false(it.next().done)
  llm.shutdown()
  throwsWith(t, () => {
    for (;;) if (it.next().done) return
  }, 'ERR_ENGINE_SHUTDOWN')
})

test.serial('Symbol.asyncDispose shuts the engine down (await using)', async (t) => {
  const llm = await Engine.create({ modelPath: modelPath() })
  await llm[Symbol.asyncDispose]()
  throwsWith(t, () => llm.tokenize('x'), 'ERR_ENGINE_SHUTDOWN')
})

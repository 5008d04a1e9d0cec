// Abort storm (issue 3): a thousand concurrent requests through every async API mode, 30% of them cancelled
// at random times (AbortSignal while queued / prefilling / decoding, `break` out of stream loops), against
// the radix prefix cache. Everything must settle, survivors must be complete and (greedy) identical to a
// solo run, and the engine must end idle with every KV page and request id accounted for. Then the storm in
// four quarters, to see that process memory does not grow with the number of requests served.
// Serial: both tests read engine counters that concurrent requests would disturb.
import test, { type ExecutionContext } from 'ava'
import * as v8 from 'node:v8'
import * as vm from 'node:vm'
import { Engine, RadixLMError, type FinishReason, type SamplingParams } from '../index'
import { idle, modelPath, sleep, useEngine, waitFor, withTimeout } from './helpers'

const engine = useEngine(test)

// --- A deterministic workload ---

function mulberry32(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32
  }
}

// System-prompt-like prefixes shared by many requests, of exactly 32 or 16 tokens so that whole 16-token
// pages are shared through the radix cache (which also keeps prefill cheap enough for a 2-core machine),
// and '' for prompts of a few tokens with nothing shared. Prompts are 2..40 tokens.
const PREFIXES = [
  '<|im_start|>system\nYou are a helpful assistant. You answer briefly, in plain words, and you never make up any facts or numbers.<|im_end|>\n<|im_start|>user\n',
  'You are an old pirate captain. Answer every question in character, in one short sentence, and always mention the sea and your two old ships.\nQuestion:',
  'The following is a conversation between a curious child and a patient teacher about the natural world, the moon, the sun and all the many stars.\nChild:',
  'Continue the list below with one more item of the very same kind. List:',
  'Translate these English words into French, and keep them in their original order:',
  '',
]
// One token each.
const WORDS = (
  'apple river mountain seven blue engine quietly history dragon cloud number paper garden music light ' +
  'stone winter coffee planet window silver forest ocean yellow train honey castle north whisper bread'
).split(' ')

interface Req {
  id: number
  rid: string
  prompt: string
  params: SamplingParams & { maxNewTokens: number; ignoreEos: boolean }
  greedy: boolean
}
type Kind = 'batch' | 'single' | 'stream' | 'streamBatch'
interface Call {
  kind: Kind
  reqs: Req[]
  /** signal: AbortController.abort() `at` ms after submission; chunkSignal: abort() on stream chunk `at`;
   * break: leave the loop on chunk `at`. Chunks count from 1, and `at` is always before the last chunk. */
  abort: 'none' | 'signal' | 'chunkSignal' | 'break'
  at: number
}

// Share of requests per kind, and calls' sizes: 40% in generate batches (2..8 prompts), 30% in streams (a
// few of them batches of 2..3), 30% single generate calls. A call is picked with probability share / size.
const MIX: { kind: Kind; share: number; size: [number, number] }[] = [
  { kind: 'batch', share: 0.4, size: [2, 8] },
  { kind: 'stream', share: 0.25, size: [1, 1] },
  { kind: 'streamBatch', share: 0.05, size: [2, 3] },
  { kind: 'single', share: 0.3, size: [1, 1] },
]
const ABORTED = 0.3
// Timed aborts fire 0..2 s after submission. On this 2-core machine the first decode steps of a
// 1000-request storm come ~5 s in, so timed aborts find requests queued or prefilling; aborts while
// decoding come from stream loops (a signal aborted, or a `break`, on a chunk).
const ABORT_WINDOW_MS = 2000

/** `n` requests in calls of every kind; 30% of the calls (so of the requests, on average) get aborted. */
function workload(n: number, seed: number, ridPrefix: string): Call[] {
  const rand = mulberry32(seed)
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1))
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]
  const weights = MIX.map((m) => m.share / ((m.size[0] + m.size[1]) / 2))
  const total = weights.reduce((a, b) => a + b)
  let id = 0
  const req = (): Req => {
    const prefix = pick(PREFIXES)
    const words = Array.from({ length: prefix ? int(1, 8) : int(2, 5) }, () => pick(WORDS))
    const greedy = rand() < 0.7
    const params: Req['params'] = { maxNewTokens: int(1, 12), ignoreEos: rand() < 0.3 }
    if (greedy) params.temperature = 0
    else Object.assign(params, { temperature: 0.8, topP: 0.95, seed: int(1, 1e6) })
    const rid = `${ridPrefix}${id}`
    return { id: id++, rid, prompt: prefix + ' ' + words.join(' '), params, greedy }
  }
  const calls: Call[] = []
  while (id < n) {
    let x = rand() * total
    const m = MIX.find((_, i) => (x -= weights[i]) < 0) ?? MIX[0]
    const reqs = Array.from({ length: Math.min(int(...m.size), n - id) }, req)
    const call: Call = { kind: m.kind, reqs, abort: 'none', at: 0 }
    if (rand() < ABORTED) {
      // Aborted generate calls use a timed signal; aborted streams a timed signal, a signal on a chunk or a
      // `break` on a chunk, a third each.
      const isStream = m.kind === 'stream' || m.kind === 'streamBatch'
      const chunks = reqs.reduce((s, q) => s + q.params.maxNewTokens, 0)
      const how = isStream && chunks >= 2 ? Math.floor(rand() * 3) : 0
      if (how === 0) Object.assign(call, { abort: 'signal', at: int(0, ABORT_WINDOW_MS) })
      else Object.assign(call, { abort: how === 1 ? 'chunkSignal' : 'break', at: int(1, chunks - 1) })
    }
    calls.push(call)
  }
  return calls
}

// --- Running it ---

interface Result {
  id: string
  outputIds: number[]
  text: string
  finishReason: FinishReason
  completionTokens: number
  promptTokens: number
}
type Outcome =
  | { status: 'ok'; result: Result }
  | { status: 'aborted' } // ERR_ABORTED after its signal fired
  | { status: 'left' } // the loop was left with `break`
  | { status: 'error'; error: string }

interface Storm {
  outcomes: (Outcome | undefined)[]
  /** Requests whose call neither resolved nor rejected before the guard. */
  unsettled: number
  ms: number
  /** ms from `abort()` to the call settling, for signal-aborted calls that ended in ERR_ABORTED. */
  abortLatency: number[]
  /** Timed signal aborts of streams that had chunks when the abort fired (aborted while decoding). */
  abortedDecoding: number
  /** Signal-aborted streams that still delivered chunks after abort(), and those that then even ended
   * normally (see runCall). */
  chunksAfterAbort: number
  endedAfterAbort: number
  /** ms from submission to the first stream chunk of the storm. */
  firstChunkMs: number
  /** The queues at `sampleAt`. */
  sample?: { running: number; waiting: number }
}

const describe = (e: unknown) =>
  e instanceof RadixLMError ? `${e.code}: ${e.message}` : e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)
const isAbortError = (e: unknown) => e instanceof RadixLMError && e.code === 'ERR_ABORTED'

/** Stream chunks of one request -> its result; a string says what is wrong with the sequence. */
function fromChunks(chunks: any[]): Result | string {
  let text = ''
  const ids: number[] = []
  for (const [i, c] of chunks.entries()) {
    if (c.text !== text + c.delta) return `chunk ${i}: text is not the previous text + delta`
    text = c.text
    ids.push(...c.outputIds)
    if ((c.metaInfo.finishReason !== null) !== (i === chunks.length - 1)) return `chunk ${i} of ${chunks.length}: finishReason ${JSON.stringify(c.metaInfo.finishReason)}`
  }
  const last = chunks.at(-1)
  if (!last) return 'no chunks'
  return { id: last.metaInfo.id, outputIds: ids, text, finishReason: last.metaInfo.finishReason, completionTokens: last.metaInfo.completionTokens, promptTokens: last.metaInfo.promptTokens }
}

function fromOutput(o: any): Result {
  return { id: o.metaInfo.id, outputIds: o.outputIds, text: o.text, finishReason: o.metaInfo.finishReason, completionTokens: o.metaInfo.completionTokens, promptTokens: o.metaInfo.promptTokens }
}

/** Runs one call to its end; never rejects (the outcome of each of its requests goes into `storm`). */
async function runCall(llm: Engine, call: Call, storm: Storm, t0: number): Promise<void> {
  const set = (o: Outcome) => call.reqs.forEach((r) => (storm.outcomes[r.id] = o))
  const ac = new AbortController()
  let abortedAt = 0
  let received = 0
  let receivedAtAbort = 0
  let afterAbort = 0 // stream chunks delivered after abort()
  // A stream whose signal has fired hands out no further chunk, even one that had already arrived: the
  // loop's next step throws ERR_ABORTED (index.ts checks the signal after every wait).
  const strict = (call.kind === 'stream' || call.kind === 'streamBatch') && (call.abort === 'chunkSignal' || call.abort === 'signal')
  const timer =
    call.abort === 'signal'
      ? setTimeout(() => {
          abortedAt = Date.now()
          receivedAtAbort = received
          ac.abort()
        }, call.at)
      : undefined
  const prompts = call.reqs.map((r) => r.prompt)
  const params = call.reqs.map((r) => r.params)
  const rids = call.reqs.map((r) => r.rid)
  const signal = call.abort === 'signal' || call.abort === 'chunkSignal' ? { signal: ac.signal } : {}
  try {
    if (call.kind === 'batch' || call.kind === 'single') {
      const outs =
        call.kind === 'batch'
          ? await llm.generate(prompts, params, { ...signal, rid: rids })
          : [await llm.generate(prompts[0], params[0], { ...signal, rid: rids[0] })]
      // generate() checks the signal once its results are in: it never resolves after abort().
      if (ac.signal.aborted) set({ status: 'error', error: 'generate resolved although its signal was aborted' })
      else call.reqs.forEach((r, i) => (storm.outcomes[r.id] = { status: 'ok', result: fromOutput(outs[i]) }))
    } else {
      const per: any[][] = call.reqs.map(() => [])
      let left = false
      const stream =
        call.kind === 'stream'
          ? llm.generateStream(prompts[0], params[0], { ...signal, rid: rids[0] })
          : llm.generateStream(prompts, params, { ...signal, rid: rids })
      for await (const c of stream) {
        if (ac.signal.aborted) afterAbort++
        if (received++ === 0) storm.firstChunkMs = Math.min(storm.firstChunkMs, Date.now() - t0)
        per[c.index].push(c)
        if (received !== call.at || c.metaInfo.finishReason !== null) continue
        if (call.abort === 'chunkSignal') {
          abortedAt = Date.now()
          ac.abort()
        } else if (call.abort === 'break') {
          left = true
          break
        }
      }
      if (afterAbort > 0) storm.chunksAfterAbort++
      if (ac.signal.aborted) storm.endedAfterAbort++
      if (strict && afterAbort > 0) set({ status: 'error', error: `${afterAbort} chunks after abort() in the loop body` })
      else if (strict && ac.signal.aborted) set({ status: 'error', error: 'the loop ended normally after abort() in its body' })
      else if (left) set({ status: 'left' })
      else
        call.reqs.forEach((r, i) => {
          const res = fromChunks(per[i])
          storm.outcomes[r.id] = typeof res === 'string' ? { status: 'error', error: `stream: ${res}` } : { status: 'ok', result: res }
        })
    }
  } catch (e) {
    if (afterAbort > 0) storm.chunksAfterAbort++
    if (strict && afterAbort > 0) set({ status: 'error', error: `${afterAbort} chunks after abort() in the loop body, then ${describe(e)}` })
    else if (isAbortError(e) && ac.signal.aborted) {
      storm.abortLatency.push(Date.now() - abortedAt)
      if (call.abort === 'signal' && receivedAtAbort > 0) storm.abortedDecoding++
      set({ status: 'aborted' })
    } else set({ status: 'error', error: describe(e) })
  } finally {
    clearTimeout(timer)
  }
}

/** Submits every call at once; waits until all settle or `guardMs` pass. */
async function storm(llm: Engine, calls: Call[], guardMs: number, sampleAt?: number): Promise<Storm> {
  const n = calls.reduce((s, c) => s + c.reqs.length, 0)
  const s: Storm = { outcomes: new Array(n).fill(undefined), unsettled: 0, ms: 0, abortLatency: [], abortedDecoding: 0, chunksAfterAbort: 0, endedAfterAbort: 0, firstChunkMs: Infinity }
  const t0 = Date.now()
  const all = Promise.all(calls.map((c) => runCall(llm, c, s, t0)))
  // One look at the queues. getServerInfo() blocks this thread until the engine's step in progress ends
  // (seconds, early in the storm), which would hold back abort timers: look only after they have fired.
  const sampler = (async () => {
    if (sampleAt === undefined) return
    await sleep(sampleAt)
    const info = llm.getServerInfo()
    s.sample = { running: info.running as number, waiting: info.waiting as number }
  })()
  await withTimeout(all, guardMs)
  s.ms = Date.now() - t0
  await sampler
  s.unsettled = s.outcomes.filter((o) => o === undefined).length
  return s
}

/** Checks every outcome of a storm; returns counts. */
function checkStorm(t: ExecutionContext, llm: Engine, label: string, calls: Call[], s: Storm, promptLens: number[]) {
  const n = s.outcomes.length
  t.is(s.unsettled, 0, `${label}: ${s.unsettled} of ${n} requests never settled (${s.ms} ms): ${JSON.stringify(llm.getServerInfo())}`)
  const count = { ok: 0, aborted: 0, abortedOnChunk: 0, left: 0, error: 0, victims: 0, victimsFinished: 0, stop: 0 }
  for (const call of calls) {
    for (const r of call.reqs) {
      const o = s.outcomes[r.id]
      if (call.abort !== 'none') count.victims++
      if (!o) continue
      count[o.status]++
      const what = `${label}: request ${r.id} (${call.kind}, abort: ${call.abort}${call.abort === 'none' ? '' : ` at ${call.at}`}, ${JSON.stringify(r.params)})`
      if (o.status === 'error') {
        t.fail(`${what} failed: ${o.error}`)
        continue
      }
      if (o.status === 'aborted') t.true(call.abort === 'signal' || call.abort === 'chunkSignal', `${what}: ERR_ABORTED without an abort`)
      if (o.status === 'aborted' && call.abort === 'chunkSignal') count.abortedOnChunk++
      if (o.status === 'left') t.is(call.abort, 'break', `${what}: left without a break`)
      if (o.status !== 'ok') continue
      if (call.abort !== 'none') count.victimsFinished++
      // Not aborted (or finished before its abort): the whole output.
      const { finishReason: f, completionTokens, outputIds, promptTokens } = o.result
      const max = r.params.maxNewTokens
      t.is(o.result.id, r.rid, `${what}: another request's output`)
      t.is(promptTokens, promptLens[r.id], `${what}: promptTokens`)
      t.is(outputIds.length, completionTokens, `${what}: outputIds vs completionTokens`)
      if (f.type === 'length') {
        t.is(f.length, max, `${what}: finishReason.length`)
        t.is(completionTokens, max, `${what}: completionTokens`)
      } else if (f.type === 'stop') {
        // Only EOS can stop these requests (no stop strings or ids are set).
        count.stop++
        t.false(r.params.ignoreEos, `${what}: stopped (${JSON.stringify(f)}) despite ignoreEos`)
        t.true(completionTokens >= 1 && completionTokens <= max, `${what}: ${completionTokens} tokens`)
        t.is(f.matched as unknown, outputIds.at(-1) as unknown, `${what}: stop matched ${JSON.stringify(f.matched)}, last id ${outputIds.at(-1)}`)
      } else t.fail(`${what}: resolved with finishReason ${JSON.stringify(f)}`)
    }
  }
  // The aborts have to land on requests in flight, or this test would prove nothing about them.
  t.true(count.aborted + count.left >= count.victims / 2, `${label}: only ${count.aborted + count.left} of ${count.victims} aborts landed`)
  return count
}

const pct = (xs: number[], p: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] : NaN)

/** The engine is idle with every page accounted for; after flushCache() every page is free. */
async function assertDrained(t: ExecutionContext, llm: Engine, label: string) {
  const drained = await waitFor(() => idle(llm), 5000)
  const info = llm.getServerInfo()
  t.true(drained, `${label}: not idle 5 s after the storm: ${JSON.stringify(info)}`)
  t.is(info.running, 0, `${label}: running`)
  t.is(info.waiting, 0, `${label}: waiting`)
  t.is(info.pagesUsed, 0, `${label}: pagesUsed`)
  t.is(info.integrityFailures, 0, `${label}: integrityFailures`)
  t.is((info.pagesFree as number) + (info.pagesCached as number), info.poolPages, `${label}: free + cached == pool: ${JSON.stringify(info)}`)
  llm.flushCache()
  const after = llm.getServerInfo()
  t.is(after.pagesFree, after.poolPages, `${label}: pagesFree after flushCache(): ${JSON.stringify(after)}`)
  t.is(after.pagesCached, 0, `${label}: pagesCached after flushCache()`)
  return info
}

/**
 * Every request id of the storm is free again: the engine rejects a rid still held by a live request, so a
 * request whose bookkeeping (output channel, rid) outlived its end would show here. Costs no forward pass.
 */
async function assertRidsReleased(t: ExecutionContext, llm: Engine, label: string, calls: Call[]) {
  // The probe itself: a rid held by a running request is refused.
  const ac = new AbortController()
  const held = llm.generate('Count to a thousand:', { maxNewTokens: 500, ignoreEos: true }, { rid: 'held-rid', signal: ac.signal }).catch(() => {})
  const err = await llm.generate('x', { maxNewTokens: 0 }, { rid: 'held-rid' }).then(() => null, (e) => e)
  ac.abort()
  await held
  t.true(err instanceof RadixLMError && err.code === 'ERR_INVALID_INPUT', `reusing a live rid: ${describe(err)}`)
  const reqs = calls.flatMap((c) => c.reqs)
  for (let i = 0; i < reqs.length; i += 100) {
    const part = reqs.slice(i, i + 100)
    try {
      const outs = await llm.generate(part.map((r) => r.prompt), { maxNewTokens: 0 }, { rid: part.map((r) => r.rid) })
      t.true(outs.every((o) => o.outputIds.length === 0), `${label}: maxNewTokens 0 produced tokens`)
    } catch (e) {
      t.fail(`${label}: reusing the storm's rids ${part[0].rid}..${part[part.length - 1].rid} failed: ${describe(e)}`)
    }
  }
}

test.serial('abort storm: 1000 concurrent requests, 30% aborted, all settle; survivors complete and match solo runs', async (t) => {
  t.timeout(150_000)
  const llm = engine()
  const before = llm.getServerInfo()
  const calls = workload(1000, 20260325, 'storm-')
  const reqs = calls.flatMap((c) => c.reqs)
  const lens = reqs.map((r) => llm.tokenize(r.prompt).length)
  const s = await storm(llm, calls, 120_000, ABORT_WINDOW_MS + 50)
  const c = checkStorm(t, llm, 'storm', calls, s, lens)
  if (s.unsettled > 0) return // failed above, with the count; the engine's shutdown settles the rest
  const byKind: Record<string, number> = {}
  for (const call of calls) byKind[call.kind] = (byKind[call.kind] ?? 0) + call.reqs.length
  t.log(`1000 requests (${JSON.stringify(byKind)}), prompts ${Math.min(...lens)}..${Math.max(...lens)} tokens: settled in ${s.ms} ms, unsettled ${s.unsettled}`)
  t.log(`outcomes: ${c.ok} complete (${c.stop} stopped at EOS), ${c.aborted} ERR_ABORTED, ${c.left} left by break, ${c.error} errors; ${c.victims} aborted, ${c.victimsFinished} of them finished before their abort`)
  t.log(`first stream chunk after ${s.firstChunkMs} ms; aborted while decoding: ${s.abortedDecoding} streams by a timed signal, ${c.abortedOnChunk} by a signal on a chunk, ${c.left} by break; ${s.chunksAfterAbort} streams got chunks after abort(), ${s.endedAfterAbort} of them ended normally; abort -> settled: p50 ${pct(s.abortLatency, 0.5)} ms, p90 ${pct(s.abortLatency, 0.9)} ms, max ${pct(s.abortLatency, 1)} ms; queues once all aborts fired: ${JSON.stringify(s.sample)}`)

  // Every abort fired while requests were still queued (nothing is submitted later, so the queue only
  // shrinks): aborts hit queued requests, and some hit requests while they decoded.
  t.true((s.sample?.waiting ?? 0) > 0, `nothing was waiting once the aborts had fired: ${JSON.stringify(s.sample)}`)
  t.true(c.abortedOnChunk > 0 && c.left > 0, 'no abort hit a request while it was decoding')
  // An abort takes effect between engine steps; it must not wait for the queued request's turn to run
  // (the queue takes ~40 s to drain here). The slowest waited for the step in progress: the first big
  // prefill step takes ~5 s on 2 cores.
  t.true(pct(s.abortLatency, 1) < 20_000, `an abort took ${pct(s.abortLatency, 1)} ms to settle its call`)
  const info = await assertDrained(t, llm, 'storm')
  // Queued requests aborted before their turn never run: at least half the aborted prompts never reach the
  // engine's prompt-token count (the count is taken when a request is first scheduled).
  const admitted = (info.promptTokensTotal as number) - (before.promptTokensTotal as number)
  const all = lens.reduce((a, b) => a + b)
  const abortedTokens = reqs.filter((r) => s.outcomes[r.id]?.status === 'aborted').reduce((a, r) => a + lens[r.id], 0)
  t.true(admitted <= all - abortedTokens / 2, `${admitted} of ${all} prompt tokens were scheduled, ${abortedTokens} of them in aborted requests`)
  const cached = (info.cachedTokensTotal as number) - (before.cachedTokensTotal as number)
  t.log(`engine: ${admitted} of ${all} prompt tokens scheduled (${cached} from the radix cache), ${abortedTokens} in aborted requests; ${JSON.stringify({ retractions: info.retractions, steps: info.steps, pagesCached: info.pagesCached })}`)
  t.true(cached > admitted / 2, 'the shared prefixes were served from the radix cache')
  await assertRidsReleased(t, llm, 'storm', calls)

  // Greedy survivors equal the same prompt run alone (after the storm, cache warm), sampled across modes.
  const survivors = calls.flatMap((call) => call.reqs.filter((r) => r.greedy && s.outcomes[r.id]?.status === 'ok').map((r) => ({ r, kind: call.kind })))
  const sample: typeof survivors = []
  for (const kind of ['batch', 'single', 'stream', 'streamBatch']) {
    const xs = survivors.filter((x) => x.kind === kind)
    sample.push(...xs.filter((_, i) => i % Math.ceil(xs.length / 8) === 0))
  }
  t.true(sample.length >= 28, `only ${sample.length} greedy survivors to compare`)
  let same = 0
  for (const { r, kind } of sample) {
    const got = (s.outcomes[r.id] as { result: Result }).result
    const solo = await llm.generate(r.prompt, r.params)
    const ok = JSON.stringify(solo.outputIds) === JSON.stringify(got.outputIds) && solo.text === got.text
    t.true(ok, `request ${r.id} (${kind}, ${JSON.stringify(r.params)}) in the storm: ${JSON.stringify(got.outputIds)} ${JSON.stringify(got.text)}; alone: ${JSON.stringify(solo.outputIds)} ${JSON.stringify(solo.text)}`)
    t.deepEqual(solo.metaInfo.finishReason, got.finishReason, `request ${r.id}: finishReason`)
    if (ok) same++
  }
  t.log(`${same} of ${sample.length} greedy survivors equal their solo run`)
  await assertDrained(t, llm, 'after the solo runs')
})

/** `gc()`: from --expose-gc when given, else by setting the flag at run time (as jest's leak detector does:
 * ava's nodeArguments here carry only --import=tsx); undefined if neither works. */
function gcFunction(): (() => void) | undefined {
  if (typeof (globalThis as any).gc === 'function') return (globalThis as any).gc
  try {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc')
    return typeof gc === 'function' ? gc : undefined
  } catch {
    return undefined
  }
}

// Growth bounds from quarter 1's end to quarter 4's end, i.e. over 750 requests. Measured on this machine
// (2 cores, SmolLM2-135M Q4_1, 12 runs): heapUsed after gc moved by -191..+128 KiB; rss by -7.7..+8.3 MiB,
// in steps (allocator arenas and high-water marks of the engine's threads) with flat stretches between,
// not per request: a 10-quarter run went +1, +0.2, +7, -0.1, +0.1, +0.6, +2, -0.1, +0.1 MiB.
// - heapUsed < 512 KiB: a JS-side leak of 0.7 KB per request (a retained closure, listener, promise or
//   NativeRequest wrapper per call) fails it.
// - rss < 24 MiB: below that rss cannot tell a leak from noise; a native leak of 32 KB per request fails
//   it (a request's logits/probability buffer alone is 192 KB at this vocabulary, a KV page 737 KB), and the
//   smaller native bookkeeping (output channel, rid) is checked exactly by reusing the request ids.
const HEAP_GROWTH_MAX = 512 * 2 ** 10
const RSS_GROWTH_MAX = 24 * 2 ** 20

test.serial('abort storm in four quarters: process memory does not grow with requests served', async (t) => {
  t.timeout(120_000)
  // Its own engine with a small KV pool (128 pages, 94 MB): the pool is committed as pages are first
  // touched, so the default 4096-page pool (3 GB) can add rss in 737 KB steps whenever a quarter holds
  // more pages at once (running + cached) than any before it; 128 pages bound that.
  const llm = new Engine({ modelPath: modelPath(), maxTotalTokens: 2048 })
  t.teardown(() => llm.shutdown())
  const gc = gcFunction()
  const marks: NodeJS.MemoryUsage[] = []
  for (let q = 1; q <= 4; q++) {
    // The same request ids every quarter: one still held by the engine from an earlier quarter (a leaked
    // output channel) would fail its request here.
    const calls = workload(250, 777 + q, 'q-')
    const lens = calls.flatMap((c) => c.reqs.map((r) => llm.tokenize(r.prompt).length))
    const s = await storm(llm, calls, 60_000)
    const c = checkStorm(t, llm, `quarter ${q}`, calls, s, lens)
    if (s.unsettled > 0) return
    await assertDrained(t, llm, `quarter ${q}`) // flushes the cache
    for (let i = 0; i < 3; i++) {
      gc?.()
      await sleep(20)
    }
    const m = process.memoryUsage()
    marks.push(m)
    t.log(`quarter ${q}: ${s.ms} ms, ${c.ok} complete, ${c.aborted + c.left} aborted; rss ${(m.rss / 2 ** 20).toFixed(1)} MiB, heapUsed ${(m.heapUsed / 2 ** 20).toFixed(2)} MiB, external ${(m.external / 2 ** 20).toFixed(2)} MiB`)
  }
  const rssGrowth = marks[3].rss - marks[0].rss
  const heapGrowth = marks[3].heapUsed - marks[0].heapUsed
  t.log(`growth from quarter 1 to quarter 4 (750 requests): rss ${(rssGrowth / 2 ** 10).toFixed(0)} KiB, heapUsed ${(heapGrowth / 2 ** 10).toFixed(0)} KiB (gc ${gc ? 'available' : 'unavailable: rss only'})`)
  t.true(rssGrowth < RSS_GROWTH_MAX, `rss grew by ${(rssGrowth / 2 ** 20).toFixed(1)} MiB over 750 requests`)
  if (gc) t.true(heapGrowth < HEAP_GROWTH_MAX, `heapUsed grew by ${(heapGrowth / 2 ** 10).toFixed(0)} KiB over 750 requests`)
})

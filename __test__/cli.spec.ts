// The `radixlm` command line (dist/cli.js, run as a child process) and the `progress` generate option.
// Serial: each child loads its own engine, and on a small machine parallel children only slow each other.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import test from 'ava'
import { randomRequests, sharedPrefixRequests, type BenchResult } from '../bench'
import { isRadixError, modelPath, REPO_ROOT, runNode, useEngine, type ChildExit } from './helpers'

const CLI = path.join(REPO_ROOT, 'dist', 'cli.js')
const getLlm = useEngine(test)
let tmp = ''

test.before(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build:ts\` first`)
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-cli-'))
})
test.after.always(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

function cli(args: string[], ms = 60_000): Promise<ChildExit> {
  return runNode([CLI, ...args], process.env, ms)
}

function ok(t: any, r: ChildExit) {
  t.false(r.timedOut, 'the CLI did not exit in time')
  t.is(r.code, 0, `exit code ${r.code}; stderr: ${r.stderr}`)
  // stderr is not a TTY here: no progress bars, no load lines.
  t.is(r.stderr, '')
}

const jsonl = (s: string) =>
  s
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l))

test.serial('generate --prompt: one JSONL line, greedy text as Engine.generateSync', async (t) => {
  const prompt = 'The capital of France is'
  const r = await cli(['generate', '--model', modelPath(), '--prompt', prompt, '--temperature', '0', '--max-new-tokens', '12'])
  ok(t, r)
  const lines = jsonl(r.stdout)
  t.is(lines.length, 1)
  const ref = getLlm().generateSync(prompt, { temperature: 0, maxNewTokens: 12 })
  t.deepEqual(Object.keys(lines[0]), ['text', 'output_ids', 'meta_info'])
  t.is(lines[0].text, ref.text)
  t.deepEqual(lines[0].output_ids, ref.outputIds)
  t.deepEqual(lines[0].meta_info.finish_reason, { type: 'length', length: 12 })
  t.is(lines[0].meta_info.prompt_tokens, ref.metaInfo.promptTokens)
  t.is(lines[0].meta_info.completion_tokens, 12)
})

test.serial('generate --input JSONL (prompt, messages, input_ids) --output: input order, per-line params', async (t) => {
  const llm = getLlm()
  const messages = [{ role: 'user', content: 'What is the capital of France?' }]
  const inputIds = llm.tokenize('Once upon a time')
  const input = path.join(tmp, 'in.jsonl')
  const output = path.join(tmp, 'out.jsonl')
  fs.writeFileSync(
    input,
    [
      JSON.stringify({ prompt: 'The capital of France is', sampling_params: { max_new_tokens: 6 } }),
      '',
      JSON.stringify({ messages }),
      JSON.stringify({ input_ids: inputIds, sampling_params: { maxNewTokens: 4 } }),
    ].join('\n'),
  )
  const r = await cli(['generate', '--model', modelPath(), '--input', input, '--output', output, '--temperature', '0', '--max-new-tokens', '10'])
  ok(t, r)
  t.is(r.stdout, '', 'with --output nothing goes to stdout')
  const lines = jsonl(fs.readFileSync(output, 'utf8'))
  t.is(lines.length, 3)
  const refs = [
    llm.generateSync('The capital of France is', { temperature: 0, maxNewTokens: 6 }),
    llm.chatSync(messages, { temperature: 0, maxNewTokens: 10 }),
    llm.generateSync({ inputIds }, { temperature: 0, maxNewTokens: 4 }),
  ]
  lines.forEach((line, i) => {
    t.deepEqual(Object.keys(line), ['text', 'output_ids', 'meta_info'], `line ${i}`)
    t.is(line.text, refs[i].text, `line ${i}`)
    t.deepEqual(line.output_ids, refs[i].outputIds, `line ${i}`)
    t.is(line.meta_info.prompt_tokens, refs[i].metaInfo.promptTokens, `line ${i}`)
    t.is(typeof line.meta_info.e2e_latency, 'number')
  })
  t.deepEqual(
    lines.map((l) => l.output_ids.length),
    [6, refs[1].outputIds.length, 4],
  )
})

test.serial('generate: a line the engine rejects becomes an error line, the rest still run, exit 1', async (t) => {
  const input = path.join(tmp, 'bad-params.jsonl')
  fs.writeFileSync(input, `{"prompt": "Hi", "sampling_params": {"temperature": -1}}\n{"prompt": "Hi", "sampling_params": {"max_new_tokens": 2}}\n`)
  const r = await cli(['generate', '--model', modelPath(), '--input', input])
  t.is(r.code, 1)
  const lines = jsonl(r.stdout)
  t.is(lines[0].error.code, 'ERR_INVALID_SAMPLING_PARAMS')
  t.regex(lines[0].error.message, /temperature/)
  t.is(lines[1].output_ids.length, 2)
  t.regex(r.stderr, /1 of 2 requests failed/)
})

function readResult(file: string): BenchResult {
  return JSON.parse(fs.readFileSync(file, 'utf8'))
}

test.serial('bench --dataset random: JSON result consistent with the drawn lengths', async (t) => {
  const out = path.join(tmp, 'random.json')
  const r = await cli(['bench', '--model', modelPath(), '--dataset', 'random', '--num-prompts', '8', '--random-input-len', '32', '--random-output-len', '8', '--output-json', out])
  ok(t, r)
  t.regex(r.stdout, /Output token throughput \(tok\/s\):\s+\d/)
  const res = readResult(out)
  // The same seeded draw the benchmark made: lengths uniform in [1, len] (range ratio 0, SGLang's default).
  const drawn = randomRequests({ numPrompts: 8, inputLen: 32, outputLen: 8, rangeRatio: 0, vocabSize: res.serverInfo.vocabSize, seed: 1 })
  t.is(res.completed, 8)
  t.is(res.mode, 'throughput')
  t.is(res.totalOutputTokens, drawn.reduce((s, q) => s + q.outputLen, 0))
  t.is(res.totalInputTokens, drawn.reduce((s, q) => s + q.inputIds.length, 0))
  t.true(drawn.every((q) => q.inputIds.length >= 1 && q.inputIds.length <= 32 && q.outputLen >= 1 && q.outputLen <= 8))
  for (const k of ['requestThroughput', 'inputThroughput', 'outputThroughput', 'totalThroughput', 'duration'] as const) t.true(res[k] > 0, k)
  t.true(Math.abs(res.outputThroughput - res.totalOutputTokens / res.duration) < 1e-6)
  t.true(Math.abs(res.totalThroughput - res.inputThroughput - res.outputThroughput) < 1e-6)
  for (const s of [res.ttftMs, res.itlMs, res.e2eMs]) {
    t.true(s.mean > 0 && s.median > 0 && s.p99 >= s.median && s.max >= s.p99)
  }
  t.true(res.e2eMs.max <= res.duration * 1000 + 1)
  t.is(res.args.numPrompts, 8)
  t.is(res.args.randomInputLen, 32)
  t.is(res.modelPath, path.resolve(modelPath()))
  t.is(res.device, 'cpu')
  t.false(Number.isNaN(Date.parse(res.date)))
  t.is(res.counters.promptTokens, res.totalInputTokens, 'the warm-up is not in the counters')
  t.true(res.serverInfo.steps > 0)
  t.is(res.serverInfo.integrityFailures, 0)
})

test.serial('bench --latency: one request at a time, per-token decode latency and TTFT', async (t) => {
  const out = path.join(tmp, 'latency.json')
  const r = await cli(['bench', '--model', modelPath(), '--latency', '--input-len', '32', '--output-len', '4', '--runs', '2', '--warmup', '1', '--output-json', out])
  ok(t, r)
  t.regex(r.stdout, /Median TTFT/)
  const res = readResult(out)
  t.is(res.mode, 'latency')
  t.is(res.completed, 2)
  t.is(res.totalInputTokens, 64)
  t.is(res.totalOutputTokens, 8)
  t.is(res.counters.cachedTokens, 0, 'every run starts from a cold cache')
  t.true(res.ttftMs.mean > 0)
  t.true(res.itlMs.median > 0)
  t.true(res.decodeTokPerSec! > 0)
})

test.serial('bench --dataset generated-shared-prefix: the cache serves the shared system prompts', async (t) => {
  const out = path.join(tmp, 'gsp.json')
  const args = ['--gsp-num-groups', '2', '--gsp-prompts-per-group', '4', '--gsp-system-prompt-len', '64', '--gsp-question-len', '8', '--gsp-output-len', '4']
  const r = await cli(['bench', '--model', modelPath(), '--dataset', 'generated-shared-prefix', ...args, '--output-json', out])
  ok(t, r)
  const res = readResult(out)
  t.is(res.completed, 8)
  t.is(res.totalInputTokens, 8 * 72)
  t.is(res.totalOutputTokens, 8 * 4)
  t.true(res.counters.cacheHitRate > 0, `hit rate ${res.counters.cacheHitRate}`)
  t.true(res.serverInfo.cachedTokensTotal > 0)
  // The dataset itself: 2 system prompts, each shared by 4 prompts.
  const reqs = sharedPrefixRequests({ numGroups: 2, promptsPerGroup: 4, systemPromptLen: 64, questionLen: 8, outputLen: 4, vocabSize: 1000, seed: 1 })
  t.is(new Set(reqs.map((q) => q.inputIds.slice(0, 64).join())).size, 2)
})

test.serial('bad command lines exit non-zero with a clear message, before loading anything', async (t) => {
  const m = modelPath()
  const cases: [string[], RegExp][] = [
    [['bench', '--model', m, '--bogus'], /unknown flag --bogus/],
    [['bench', '--model', m, '--num-prompts', 'lots'], /--num-prompts expects an integer; got 'lots'/],
    [['bench', '--model', m, '--num-prompts', '0'], /--num-prompts must be a positive integer/],
    [['bench', '--model', m, '--random-range-ratio', '2'], /--random-range-ratio must be in \[0, 1\]/],
    [['bench', '--model', m, '--dataset', 'sharegpt'], /--dataset must be one of random, generated-shared-prefix/],
    [['bench', '--model', m, '--device', 'tpu'], /--device must be auto, cpu, cuda/],
    [['bench', '--num-prompts', '4'], /missing --model/],
    [['generate', '--model', m], /give --prompt TEXT or --input/],
    [['generate', '--model', m, '--input', path.join(tmp, 'nope.jsonl')], /cannot read --input/],
    [['generate', '--model', m, '--temperature'], /--temperature needs a value/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [[], /usage: radixlm <command>/],
  ]
  for (const [args, re] of cases) {
    const r = await cli(args, 20_000)
    t.is(r.code, 2, `${args.join(' ')}: exit ${r.code}, stderr ${r.stderr}`)
    t.regex(r.stderr, re, args.join(' '))
  }
  // A runtime failure (here: the model) is exit 1 with the error code.
  const r = await cli(['generate', '--model', path.join(tmp, 'missing.gguf'), '--prompt', 'hi'])
  t.is(r.code, 1)
  t.regex(r.stderr, /ERR_MODEL_NOT_FOUND/)
})

test.serial('--help lists each subcommand and its flags', async (t) => {
  const top = await cli(['--help'])
  t.is(top.code, 0)
  for (const c of ['generate', 'bench', 'serve']) t.regex(top.stdout, new RegExp(`\\b${c}\\b`))
  const bench = await cli(['bench', '--help'])
  t.is(bench.code, 0)
  for (const f of ['--random-range-ratio', '--gsp-system-prompt-len', '--latency', '--max-running-requests', '--output-json']) t.true(bench.stdout.includes(f), f)
})

test.serial('serve: prints its URL, answers, and exits 0 on SIGTERM', async (t) => {
  const child = spawn(process.execPath, [CLI, 'serve', '--model', modelPath(), '--port', '0', '--served-model-name', 'smol'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        stdout += d
        const m = /^(http:\/\/\S+)\n/.exec(stdout)
        if (m) resolve(m[1])
      })
      exited.then(() => reject(new Error(`serve exited early; stderr: ${stderr}`)))
    })
    t.regex(url, /^http:\/\/127\.0\.0\.1:\d+$/)
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] }
    t.is(models.data[0].id, 'smol')
    child.kill('SIGTERM')
    t.is(await exited, 0, `stderr: ${stderr}`)
  } finally {
    clearTimeout(killer)
    child.kill('SIGKILL')
  }
})

test.serial('generate / generateSync progress callback: called once per output, last done == total', async (t) => {
  const llm = getLlm()
  const prompts = ['One', 'Two', 'Three', 'Four', 'Five']
  const seen: { done: number; total: number }[] = []
  const outs = await llm.generate(prompts, { maxNewTokens: 3, n: 2 }, { progress: (p) => seen.push(p) })
  t.is(outs.length, 10)
  t.deepEqual(
    seen.map((p) => p.done),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  )
  t.true(seen.every((p) => p.total === 10))

  const seenSync: { done: number; total: number }[] = []
  llm.generateSync(prompts, { maxNewTokens: 3 }, { progress: (p) => seenSync.push(p) })
  t.is(seenSync.length, 5)
  t.deepEqual(seenSync.at(-1), { done: 5, total: 5 })

  // `true` draws only on a TTY; this worker's stderr is not one, so it is accepted and silent.
  t.is(llm.generateSync('Hi', { maxNewTokens: 2 }, { progress: true }).outputIds.length, 2)
  const bad = t.throws(() => llm.generateSync('Hi', {}, { progress: 'yes' as any }))
  t.true(isRadixError(bad, 'ERR_INVALID_INPUT'))
})

#!/usr/bin/env node
// The `radixlm` command: generate (JSONL in, JSONL out), bench (SGLang's bench_offline_throughput and a
// batch-1 latency mode) and serve (the OpenAI-compatible server in server.ts). Flags are declared once in
// tables below; parsing, validation and --help all come from those tables.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { parseArgs } from 'node:util'
import { Engine, RadixLMError, type CamelEngineOptions, type Conversation, type GenerateOutput, type LoadProgress, type SamplingParams } from './index'
import { BenchOptionError, formatBenchResult, benchEngine, resolveBenchOptions, type BenchOptions, type BenchDataset } from './bench'
import { ProgressBar } from './progress'

/** Bad command line: exit 2 with the message and a pointer to --help (nothing was loaded). */
class UsageError extends Error {}

type Kind = 'string' | 'int' | 'number' | 'boolean'
interface Flag {
  kind: Kind
  help: string
  /** Another spelling (SGLang's), merged into this flag. */
  alias?: string
  choices?: readonly string[]
  multiple?: boolean
  /** The value's name in --help. */
  metavar?: string
  /** Shown in --help; the value itself comes from the library's defaults. */
  default?: string
}
type Flags = Record<string, Flag>
type Values = Record<string, string | number | boolean | string[] | undefined>

const ENGINE_FLAGS: Flags = {
  model: { kind: 'string', metavar: 'PATH', alias: 'model-path', help: 'a .gguf file, a Hugging Face model directory, or a repo id (required)' },
  'tokenizer-path': { kind: 'string', metavar: 'PATH', help: 'tokenizer, when not beside the model' },
  device: { kind: 'string', metavar: 'auto|cpu|cuda[:N]', help: 'where to run', default: 'auto' },
  dtype: { kind: 'string', choices: ['auto', 'float32'], help: 'auto keeps GGUF weights quantized', default: 'auto' },
  'context-length': { kind: 'int', help: 'maximum prompt + output tokens' },
  'max-running-requests': { kind: 'int', help: 'requests decoded together (default: 64 on the CPU, 256 on CUDA)' },
  'max-total-tokens': { kind: 'int', help: 'KV pool size in tokens' },
  'mem-fraction-static': { kind: 'number', help: 'share of GPU memory for weights + KV pool' },
  'chunked-prefill-size': { kind: 'int', help: 'prefill token budget per step, -1: no chunking (default: 2048 on the CPU, 8192 on CUDA)' },
  'skip-tokenizer-init': { kind: 'boolean', help: 'token ids in and out only (a checkpoint without a tokenizer)' },
  'page-size': { kind: 'int', help: 'KV page size in tokens', default: '16' },
  'disable-radix-cache': { kind: 'boolean', help: 'no prefix sharing' },
  'schedule-policy': { kind: 'string', choices: ['fcfs', 'lpm'], help: 'admission order', default: 'fcfs' },
  'cuda-graph-max-bs': { kind: 'int', help: 'largest batch captured in a CUDA graph' },
  'disable-cuda-graph': { kind: 'boolean', help: 'run decode steps without CUDA graphs' },
  'disable-overlap-schedule': { kind: 'boolean', help: 'collect each step before scheduling the next' },
}

const GENERATE_FLAGS: Flags = {
  prompt: { kind: 'string', multiple: true, help: 'a prompt (repeatable)' },
  input: { kind: 'string', metavar: 'FILE', help: 'JSONL file ("-" for stdin), one request a line: {"prompt" | "messages" | "input_ids", "sampling_params"?}' },
  output: { kind: 'string', metavar: 'FILE', help: 'JSONL file for the outputs (default stdout), in input order' },
  chat: { kind: 'boolean', help: "format prompts with the model's chat template, as a user message" },
  'max-new-tokens': { kind: 'int', help: 'default for every request', default: '128' },
  temperature: { kind: 'number', help: '0 = greedy', default: '1.0' },
  'top-p': { kind: 'number', help: 'nucleus sampling' },
  'top-k': { kind: 'int', help: 'top-k sampling (-1: off)' },
  seed: { kind: 'int', help: 'sampling seed, per request' },
}

const BENCH_FLAGS: Flags = {
  dataset: { kind: 'string', alias: 'dataset-name', choices: ['random', 'generated-shared-prefix'], help: 'workload', default: 'random' },
  'num-prompts': { kind: 'int', help: 'random: number of requests', default: '1000' },
  'random-input-len': { kind: 'int', help: 'random: prompt tokens (at most)', default: '1024' },
  'random-output-len': { kind: 'int', help: 'random: output tokens (at most)', default: '1024' },
  'random-range-ratio': { kind: 'number', help: 'random: lengths drawn uniformly in [len*ratio, len]', default: '0' },
  'gsp-num-groups': { kind: 'int', help: 'shared prefix: groups (one system prompt each)', default: '64' },
  'gsp-prompts-per-group': { kind: 'int', help: 'shared prefix: prompts per group', default: '16' },
  'gsp-system-prompt-len': { kind: 'int', help: 'shared prefix: system prompt tokens', default: '2048' },
  'gsp-question-len': { kind: 'int', help: 'shared prefix: question tokens', default: '128' },
  'gsp-output-len': { kind: 'int', help: 'shared prefix: output tokens', default: '256' },
  latency: { kind: 'boolean', help: 'batch-1 latency: one request at a time, cold cache' },
  'input-len': { kind: 'int', help: 'latency: prompt tokens', default: '1024' },
  'output-len': { kind: 'int', help: 'latency: output tokens', default: '16' },
  runs: { kind: 'int', help: 'latency: requests', default: '3' },
  seed: { kind: 'int', help: 'seed of the token ids and lengths', default: '1' },
  warmup: { kind: 'int', help: 'short untimed requests first', default: '4' },
  'skip-warmup': { kind: 'boolean', help: 'same as --warmup 0' },
  'output-json': { kind: 'string', metavar: 'FILE', help: 'write the result (args, metrics, engine counters) here' },
}

const SERVE_FLAGS: Flags = {
  host: { kind: 'string', metavar: 'ADDR', help: 'address to listen on', default: '127.0.0.1' },
  port: { kind: 'int', help: 'port (0: any free one)', default: '30000' },
  'served-model-name': { kind: 'string', metavar: 'NAME', help: 'the model id in /v1/models and responses (default: the file name)' },
}

const COMMANDS: Record<string, { summary: string; flags: Flags; run: (v: Values) => Promise<number> }> = {
  generate: { summary: 'generate from prompts or a JSONL file, JSONL out', flags: { ...ENGINE_FLAGS, ...GENERATE_FLAGS }, run: generateCommand },
  bench: { summary: 'offline throughput / batch-1 latency benchmark (SGLang bench_offline_throughput)', flags: { ...ENGINE_FLAGS, ...BENCH_FLAGS }, run: benchCommand },
  serve: { summary: 'OpenAI-compatible HTTP server', flags: { ...ENGINE_FLAGS, ...SERVE_FLAGS }, run: serveCommand },
}

const camel = (k: string) => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
const kebab = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

function usage(cmd?: string): string {
  if (!cmd) {
    const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`)
    return `usage: radixlm <command> [flags]\n\ncommands:\n${lines.join('\n')}\n\nradixlm <command> --help lists its flags; radixlm --version prints the version.`
  }
  const flags = Object.entries(COMMANDS[cmd].flags).map(([name, f]) => {
    const arg = f.kind === 'boolean' ? '' : ` ${f.metavar ?? f.choices?.join('|') ?? (f.kind === 'string' ? 'TEXT' : f.kind === 'int' ? 'N' : 'X')}`
    const alias = f.alias ? ` (or --${f.alias})` : ''
    const def = f.default !== undefined ? ` [${f.default}]` : ''
    return `  --${name}${arg}${alias}\n      ${f.help}${def}`
  })
  return `usage: radixlm ${cmd} --model PATH [flags]\n\n${COMMANDS[cmd].summary}\n\nflags:\n${flags.join('\n')}\n  -h, --help`
}

/** parseArgs with the table's types and aliases; numbers checked here so that errors name the flag. */
function parse(cmd: string, argv: string[]): Values | 'help' {
  const flags = COMMANDS[cmd].flags
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { help: { type: 'boolean', short: 'h' } }
  for (const [name, f] of Object.entries(flags)) {
    const o = { type: f.kind === 'boolean' ? ('boolean' as const) : ('string' as const), ...(f.multiple ? { multiple: true } : {}) }
    options[name] = o
    if (f.alias) options[f.alias] = o
  }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: false, strict: true })
  } catch (e) {
    if (!String((e as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')) throw e
    // Node's messages carry a paragraph about positionals; the first sentence is the useful part.
    const msg = (e as Error).message
    const unknown = /^Unknown option '([^']+)'/.exec(msg)
    if (unknown) throw new UsageError(`unknown flag ${unknown[1]}`)
    const positional = /^Unexpected argument '([^']+)'/.exec(msg)
    if (positional) throw new UsageError(`unexpected argument '${positional[1]}' (flags take the form --name value)`)
    const missing = /^Option '(?:-\w, )?(--[\w-]+)[^']*' argument missing/.exec(msg)
    if (missing) throw new UsageError(`${missing[1]} needs a value`)
    throw new UsageError(msg.split('. ')[0].replace(/ <value>/, ''))
  }
  const raw = parsed.values as Record<string, string | boolean | string[] | undefined>
  if (raw.help) return 'help'
  const out: Values = {}
  for (const [name, f] of Object.entries(flags)) {
    const a = raw[name]
    const b = f.alias ? raw[f.alias] : undefined
    if (a !== undefined && b !== undefined) throw new UsageError(`--${name} and --${f.alias} are the same flag; give one`)
    const v = a ?? b
    if (v === undefined) continue
    if (f.kind === 'boolean' || f.multiple) {
      out[name] = v
      continue
    }
    const s = v as string
    if (f.choices && !f.choices.includes(s)) throw new UsageError(`--${name} must be one of ${f.choices.join(', ')}; got '${s}'`)
    if (f.kind === 'int') {
      if (!/^-?\d+$/.test(s.trim())) throw new UsageError(`--${name} expects an integer; got '${s}'`)
      out[name] = Number(s)
    } else if (f.kind === 'number') {
      const n = Number(s)
      if (s.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} expects a number; got '${s}'`)
      out[name] = n
    } else {
      out[name] = s
    }
  }
  return out
}

function engineOptions(v: Values): Partial<CamelEngineOptions> & { modelPath: string } {
  if (typeof v.model !== 'string' || v.model === '') throw new UsageError('missing --model PATH (a .gguf file, a Hugging Face model directory, or a repo id)')
  if (v.device !== undefined && !/^(auto|cpu|cuda(:\d+)?)$/.test(v.device as string)) {
    throw new UsageError(`--device must be auto, cpu, cuda or cuda:N; got '${v.device}'`)
  }
  const opts: Record<string, unknown> = { modelPath: v.model }
  for (const name of Object.keys(ENGINE_FLAGS)) {
    if (name !== 'model' && v[name] !== undefined) opts[camel(name)] = v[name]
  }
  return opts as Partial<CamelEngineOptions> & { modelPath: string }
}

/**
 * Model loading feedback on a TTY (silent otherwise): a line, a bar per file downloaded from the hub, then
 * one for the weights loading into the backend.
 */
function loadFeedback(modelPath: string) {
  if (!process.stderr.isTTY) return { onProgress: undefined, done: (_info?: { device: string; dtype: string }) => {} }
  process.stderr.write(`loading ${modelPath}\n`)
  const t0 = performance.now()
  let bar: ProgressBar | null = null
  let file = ''
  return {
    onProgress: (p: LoadProgress) => {
      const key = `${p.stage}:${p.file}`
      if (key !== file) {
        bar?.end()
        file = key
        bar = new ProgressBar(p.total, { label: p.stage === 'load' ? 'loading weights' : path.basename(p.file), bytes: true })
      }
      bar?.update(p.downloaded, p.total)
    },
    done: (info?: { device: string; dtype: string }) => {
      bar?.end()
      if (info) process.stderr.write(`loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s (device ${info.device}, dtype ${info.dtype})\n`)
    },
  }
}

async function loadEngine(opts: Partial<CamelEngineOptions> & { modelPath: string }): Promise<Engine> {
  const feedback = loadFeedback(opts.modelPath)
  let llm: Engine | undefined
  try {
    llm = await Engine.create({ ...opts, onProgress: feedback.onProgress })
    return llm
  } finally {
    feedback.done(llm?.getServerInfo())
  }
}

// --- generate ---

/** One request of the input: exactly one of the three prompt forms. */
interface Job {
  prompt?: string
  messages?: Conversation
  inputIds?: number[]
  params: SamplingParams
}

function samplingFromFlags(v: Values): SamplingParams {
  const params: Record<string, unknown> = {}
  for (const k of ['max-new-tokens', 'temperature', 'top-p', 'top-k', 'seed']) if (v[k] !== undefined) params[camel(k)] = v[k]
  return params
}

/** Parses the JSONL input up front, so that a bad line fails before the model loads. */
function readJobs(file: string, defaults: SamplingParams): Job[] {
  let text: string
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8')
  } catch (e) {
    throw new UsageError(`cannot read --input ${file}: ${(e as Error).message}`)
  }
  const jobs: Job[] = []
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return
    const where = `${file === '-' ? 'stdin' : file}:${i + 1}`
    let obj
    try {
      obj = JSON.parse(line)
    } catch (e) {
      throw new UsageError(`${where}: not JSON (${(e as Error).message})`)
    }
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new UsageError(`${where}: each line must be a JSON object`)
    const prompt = obj.prompt ?? obj.text
    const forms = [prompt, obj.messages, obj.input_ids].filter((x) => x !== undefined).length
    if (forms !== 1) throw new UsageError(`${where}: give exactly one of "prompt", "messages", "input_ids"`)
    if (prompt !== undefined && typeof prompt !== 'string') throw new UsageError(`${where}: "prompt" must be a string`)
    if (obj.messages !== undefined && !Array.isArray(obj.messages)) throw new UsageError(`${where}: "messages" must be an array of {role, content}`)
    if (obj.input_ids !== undefined && !(Array.isArray(obj.input_ids) && obj.input_ids.every((t: unknown) => Number.isInteger(t)))) {
      throw new UsageError(`${where}: "input_ids" must be an array of integers`)
    }
    const sp = obj.sampling_params ?? {}
    if (!sp || typeof sp !== 'object' || Array.isArray(sp)) throw new UsageError(`${where}: "sampling_params" must be an object`)
    // Per-line params override the flags; both spellings are accepted, so merge under one.
    const params = { ...defaults, ...Object.fromEntries(Object.entries(sp).map(([k, val]) => [camel(k.replace(/_/g, '-')), val])) }
    jobs.push({ prompt, messages: obj.messages, inputIds: obj.input_ids, params })
  })
  if (jobs.length === 0) throw new UsageError(`--input ${file} has no requests`)
  return jobs
}

/** SGLang's output shape: snake_case keys, `meta_info` included. */
function outputRecord(o: GenerateOutput) {
  const meta = Object.fromEntries(Object.entries(o.metaInfo).map(([k, v]) => [snake(k), v]))
  return { text: o.text, output_ids: o.outputIds, meta_info: meta }
}

async function generateCommand(v: Values): Promise<number> {
  const opts = engineOptions(v)
  const prompts = (v.prompt as string[] | undefined) ?? []
  if (prompts.length > 0 && v.input !== undefined) throw new UsageError('give --prompt or --input, not both')
  if (prompts.length === 0 && v.input === undefined) throw new UsageError('nothing to generate: give --prompt TEXT or --input FILE.jsonl')
  const defaults = samplingFromFlags(v)
  const jobs = v.input !== undefined ? readJobs(v.input as string, defaults) : prompts.map((prompt) => ({ prompt, params: defaults }))
  let fd: number | undefined
  if (v.output !== undefined) {
    try {
      fd = fs.openSync(v.output as string, 'w')
    } catch (e) {
      throw new UsageError(`cannot write --output ${v.output}: ${(e as Error).message}`)
    }
  }
  const write = (s: string) => (fd !== undefined ? fs.writeSync(fd, s) : process.stdout.write(s))

  const llm = await loadEngine(opts)
  const bar = process.stderr.isTTY ? new ProgressBar(jobs.length, { label: 'generate' }) : null
  let failed = 0
  try {
    // Every request is submitted at once (the engine batches them); lines are written in input order as
    // soon as all earlier ones are done, so a long file streams out instead of piling up in memory.
    const ready: (string | undefined)[] = new Array(jobs.length)
    let next = 0
    const finish = (i: number, lines: string) => {
      ready[i] = lines
      while (next < jobs.length && ready[next] !== undefined) {
        write(ready[next]!)
        ready[next++] = undefined
      }
    }
    const run = (j: Job): Promise<GenerateOutput | GenerateOutput[]> => {
      if (j.messages) return llm.chat(j.messages, j.params)
      if (j.inputIds) return llm.generate({ inputIds: j.inputIds }, j.params)
      if (v.chat) return llm.chat([{ role: 'user', content: j.prompt! }], j.params)
      return llm.generate(j.prompt!, j.params)
    }
    await Promise.all(
      jobs.map((j, i) =>
        run(j).then(
          (out) => {
            // n > 1 gives several outputs for one line: one output line each, kept together.
            const outs = Array.isArray(out) ? out : [out]
            bar?.tick(outs.reduce((s, o) => s + o.metaInfo.completionTokens, 0))
            finish(i, outs.map((o) => JSON.stringify(outputRecord(o)) + '\n').join(''))
          },
          (e: Error) => {
            failed++
            bar?.tick()
            const code = e instanceof RadixLMError ? e.code : 'ERR_INTERNAL'
            finish(i, JSON.stringify({ error: { code, message: e.message } }) + '\n')
          },
        ),
      ),
    )
  } finally {
    bar?.end()
    llm.shutdown()
    if (fd !== undefined) fs.closeSync(fd)
  }
  if (failed > 0) {
    process.stderr.write(`radixlm generate: ${failed} of ${jobs.length} requests failed (their lines hold {"error": ...})\n`)
    return 1
  }
  return 0
}

// --- bench ---

async function benchCommand(v: Values): Promise<number> {
  const engine = engineOptions(v)
  const { modelPath, ...rest } = engine
  const num = (k: string) => v[k] as number | undefined
  const opts: BenchOptions = {
    modelPath,
    engine: rest,
    dataset: v.dataset as BenchDataset | undefined,
    numPrompts: num('num-prompts'),
    randomInputLen: num('random-input-len'),
    randomOutputLen: num('random-output-len'),
    randomRangeRatio: num('random-range-ratio'),
    gspNumGroups: num('gsp-num-groups'),
    gspPromptsPerGroup: num('gsp-prompts-per-group'),
    gspSystemPromptLen: num('gsp-system-prompt-len'),
    gspQuestionLen: num('gsp-question-len'),
    gspOutputLen: num('gsp-output-len'),
    latency: v.latency as boolean | undefined,
    inputLen: num('input-len'),
    outputLen: num('output-len'),
    runs: num('runs'),
    seed: num('seed'),
    warmup: v['skip-warmup'] ? 0 : num('warmup'),
    progress: true,
  }
  try {
    resolveBenchOptions(opts)
  } catch (e) {
    if (e instanceof BenchOptionError) throw new UsageError(`--${kebab(e.key)} ${e.problem}`)
    throw e
  }
  const outFile = v['output-json'] as string | undefined
  if (outFile !== undefined && !fs.existsSync(path.dirname(path.resolve(outFile)))) {
    throw new UsageError(`--output-json ${outFile}: the folder does not exist`)
  }
  const llm = await loadEngine(engine)
  let result
  try {
    result = await benchEngine(llm, opts)
  } finally {
    llm.shutdown()
  }
  process.stdout.write(formatBenchResult(result) + '\n')
  if (outFile !== undefined) {
    fs.writeFileSync(outFile, JSON.stringify({ ...result, command: ['radixlm', 'bench', ...process.argv.slice(3)] }, null, 2) + '\n')
    if (process.stderr.isTTY) process.stderr.write(`wrote ${outFile}\n`)
  }
  return 0
}

// --- serve ---

async function serveCommand(v: Values): Promise<number> {
  const opts = engineOptions(v)
  // Loaded here only, so generate and bench never pay for the HTTP stack at start-up.
  const { serve } = await import('./server')
  const feedback = loadFeedback(opts.modelPath)
  let server: Awaited<ReturnType<typeof serve>> | undefined
  try {
    server = await serve({
      ...opts,
      host: v.host as string | undefined,
      port: v.port as number | undefined,
      modelName: v['served-model-name'] as string | undefined,
      onProgress: feedback.onProgress,
    })
  } finally {
    feedback.done(server?.engine.getServerInfo())
  }
  process.stdout.write(`${server.url}\n`)
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      if (process.stderr.isTTY) process.stderr.write('shutting down\n')
      resolve()
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
  await server.close()
  return 0
}

// --- main ---

function version(): string {
  for (const p of [path.join(__dirname, '..', 'package.json'), path.join(__dirname, 'package.json')]) {
    if (fs.existsSync(p)) return JSON.parse(fs.readFileSync(p, 'utf8')).version
  }
  return 'unknown'
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    const out = cmd === undefined ? process.stderr : process.stdout
    out.write(usage() + '\n')
    return cmd === undefined ? 2 : 0
  }
  if (cmd === '--version' || cmd === '-v') {
    process.stdout.write(`radixlm ${version()}\n`)
    return 0
  }
  const command = COMMANDS[cmd]
  if (!command) {
    process.stderr.write(`radixlm: unknown command '${cmd}'\n\n${usage()}\n`)
    return 2
  }
  try {
    const values = parse(cmd, rest)
    if (values === 'help') {
      process.stdout.write(usage(cmd) + '\n')
      return 0
    }
    return await command.run(values)
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`radixlm ${cmd}: ${e.message}\nRun 'radixlm ${cmd} --help' for the flags.\n`)
      return 2
    }
    const code = e instanceof RadixLMError ? ` [${e.code}]` : ''
    process.stderr.write(`radixlm ${cmd}:${code} ${(e as Error)?.message ?? e}\n`)
    return 1
  }
}

// `radixlm generate ... | head` closes the pipe early: that is the reader's choice, not an error to report.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e
  process.exit(0)
})

main(process.argv.slice(2)).then((code) => {
  // exitCode rather than exit(): stdout may still be draining into a pipe.
  process.exitCode = code
})

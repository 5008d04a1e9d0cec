// The examples run as documented (child processes, small token budget) and print what they promise.
import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as path from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { modelPath, REPO_ROOT, runNode, sleep, useEngine, waitFor, withTimeout } from './helpers'

const engine = useEngine(test)
const EXAMPLES = path.join(REPO_ROOT, 'examples')
const MAX_NEW_TOKENS = 8

test.before(() => {
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'index.js'))) throw new Error('dist/index.js is missing: run `npm run build:ts` first')
})

function childEnv(extra: Record<string, string> = {}) {
  return { ...process.env, RADIXLM_MODEL: modelPath(), RADIXLM_MAX_NEW_TOKENS: String(MAX_NEW_TOKENS), ...extra }
}

function runExample(file: string, ms = 60_000) {
  return runNode([path.join(EXAMPLES, file)], childEnv(), ms)
}

/** The generated text printed after each "Generated text:" (up to the next prompt / separator / blank block). */
function generatedTexts(stdout: string): string[] {
  return stdout
    .split(/^Prompt: /m)
    .slice(1)
    .map((section) => {
      const m = /Generated text: ?([\s\S]*?)(?=^=====|^\[finish|^=== |$(?![\s\S]))/m.exec(section)
      return m ? m[1].trim() : ''
    })
}

const OFFLINE: [string, number][] = [
  ['offline-batch.mjs', 4],
  ['offline-stream-sync.mjs', 4],
  ['offline-async.mjs', 3],
  ['offline-async-stream.mjs', 3],
  ['offline-chat.mjs', 4],
  ['offline-hidden-states.mjs', 2],
  ['offline-structured-output.mjs', 3],
  ['offline-logprobs.mjs', 3],
  ['offline-prefix-cache.mjs', 5],
  ['offline-errors.mjs', 1],
  ['offline-device.mjs', 2],
]

for (const [file, prompts] of OFFLINE) {
  test(`examples/${file} runs and prints generated text for each prompt`, async (t) => {
    const r = await runExample(file)
    t.false(r.timedOut, `${file} did not finish (or exit) in time; stdout: ${r.stdout}`)
    t.is(r.code, 0, `exit code ${r.code}; stderr: ${r.stderr}`)
    t.is(r.stderr, '', 'nothing on stderr')
    const texts = generatedTexts(r.stdout)
    t.is(texts.length, prompts, `one "Generated text" per prompt in:\n${r.stdout}`)
    texts.forEach((text, i) => t.true(text.length > 0, `prompt ${i}: empty generated text in:\n${r.stdout}`))
  })
}

test('examples/offline-stream-sync.mjs reports the finish reason of the chunk-by-chunk stream', async (t) => {
  const r = await runExample('offline-stream-sync.mjs')
  t.is(r.code, 0)
  t.regex(r.stdout, /\[finish: \{.*"type":"(length|stop)".*\}, \d+ tokens\]/)
})

test('examples/offline-chat.mjs prints the rendered chat template, ending with the assistant turn', async (t) => {
  const r = await runExample('offline-chat.mjs')
  t.is(r.code, 0, `exit code ${r.code}; stderr: ${r.stderr}`)
  t.regex(r.stdout, /<\|im_start\|>user\nWhat is the capital of France\?<\|im_end\|>\n<\|im_start\|>assistant\n/)
})

test('examples/offline-hidden-states.mjs prints hidden-state rows and first-token logprobs', async (t) => {
  const r = await runExample('offline-hidden-states.mjs')
  t.is(r.code, 0, `exit code ${r.code}; stderr: ${r.stderr}`)
  const rows = [...r.stdout.matchAll(/Hidden states: (\d+) rows of 576 \(prompt (\d+) \+ generated (\d+) - 1\)/g)]
  t.is(rows.length, 2, r.stdout)
  for (const [, n, p, g] of rows) t.is(Number(n), Number(p) + Number(g) - 1)
  t.regex(r.stdout, /first token ".*": logprob -?\d+\.\d+; top 3: /)
})

// --- custom-server.mjs ---

interface Server {
  child: ChildProcess
  url: string
  exited: Promise<number | null>
  output: () => string
}

async function startServer(t: ExecutionContext): Promise<Server> {
  const child = spawn(process.execPath, [path.join(EXAMPLES, 'custom-server.mjs')], {
    cwd: REPO_ROOT,
    env: childEnv({ PORT: '0', RADIXLM_MAX_NEW_TOKENS: '12' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  child.stderr!.on('data', (d) => (out += d))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const ok = await waitFor(() => /http:\/\/\S+/.test(out) || child.exitCode !== null, 30_000, 20)
  const url = /http:\/\/\S+/.exec(out)?.[0]
  if (!ok || !url) throw new Error(`the server did not print its URL: ${out}`)
  return { child, url, exited, output: () => out }
}

/** POSTs JSON; resolves with the status, the body pieces in arrival order, and the headers. */
function post(url: string, body: unknown): Promise<{ status: number; pieces: string[]; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const pieces: string[] = []
      res.setEncoding('utf8')
      res.on('data', (d: string) => pieces.push(d))
      res.on('end', () => resolve({ status: res.statusCode!, pieces, headers: res.headers }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

function getJson(url: string): Promise<any> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let s = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (s += d))
        res.on('end', () => resolve(JSON.parse(s)))
      })
      .on('error', reject)
  })
}

test('examples/custom-server.mjs streams the greedy text, aborts on disconnect, exits on SIGTERM', async (t) => {
  const server = await startServer(t)
  const prompt = 'The capital of France is'
  const sp = { temperature: 0, max_new_tokens: 12 }

  // Streamed text equals the in-process non-streaming result for the same greedy params.
  const expected = engine().generateSync(prompt, sp).text
  t.true(expected.length > 0)
  const streamed = await post(`${server.url}/generate`, { prompt, sampling_params: sp })
  t.is(streamed.status, 200)
  t.regex(String(streamed.headers['content-type']), /^text\/plain/)
  t.is(streamed.headers['transfer-encoding'], 'chunked')
  const text = streamed.pieces.join('')
  t.true(text.length > 0, 'non-empty streamed text')
  t.is(text, expected)

  // The server's own non-streaming mode agrees.
  const whole = await post(`${server.url}/generate`, { prompt, sampling_params: sp, stream: false })
  t.is(whole.status, 200)
  const json = JSON.parse(whole.pieces.join(''))
  t.is(json.text, expected)
  t.deepEqual(json.meta_info.finishReason, { type: 'length', length: 12 })

  // Bad params: a 400 naming the key, before any streaming.
  const bad = await post(`${server.url}/generate`, { prompt, sampling_params: { top_p: 9 } })
  t.is(bad.status, 400)
  t.is(JSON.parse(bad.pieces.join('')).code, 'ERR_INVALID_SAMPLING_PARAMS')

  // A client that disconnects mid-stream: the server aborts its request.
  await new Promise<void>((resolve, reject) => {
    const req = http.request(`${server.url}/generate`, { method: 'POST' }, (res) => {
      res.once('data', () => {
        req.destroy()
        resolve()
      })
    })
    req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? resolve() : reject(e)))
    req.end(JSON.stringify({ prompt, sampling_params: { temperature: 0, max_new_tokens: 5000, ignore_eos: true } }))
  })
  let info: any
  const drained = await (async () => {
    const end = Date.now() + 2000
    while (Date.now() < end) {
      info = await getJson(`${server.url}/server_info`)
      if (info.running === 0 && info.waiting === 0 && info.pagesUsed === 0) return true
      await sleep(50)
    }
    return false
  })()
  t.true(drained, `the server kept generating after the client left: ${JSON.stringify(info)}`)

  // SIGTERM: it shuts the engine down and exits by itself.
  server.child.kill('SIGTERM')
  const code = await withTimeout(server.exited, 15_000)
  t.is(code, 0, `server exit after SIGTERM: ${code}; output: ${server.output()}`)
})

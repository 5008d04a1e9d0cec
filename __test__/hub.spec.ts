// modelPath as a Hugging Face repo id: downloaded from a hub endpoint (a local server in the hub's URL
// layout, serving the tiny Qwen2 fixture) into the HF cache layout, then served from the cache offline.
import test from 'ava'
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as os from 'node:os'
import * as path from 'node:path'
import type { AddressInfo } from 'node:net'
import { Engine, type LoadProgress } from '../index'
import { REPO_ROOT } from './helpers'

const FIXTURE = path.join(REPO_ROOT, '__test__', 'fixtures', 'tiny-qwen2')
const COMMIT = '0123456789abcdef0123456789abcdef01234567'

function serve(): Promise<{ url: string; hits: string[]; close: () => void }> {
  const hits: string[] = []
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? '')
    const m = /^\/acme\/tiny-qwen2\/resolve\/[^/]+\/([^/]+)$/.exec(req.url ?? '')
    const file = m && path.join(FIXTURE, m[1])
    if (!file || !fs.existsSync(file)) {
      res.writeHead(404).end('not found')
      return
    }
    const body = fs.readFileSync(file)
    res.writeHead(200, { 'content-length': body.length, 'x-repo-commit': COMMIT, etag: `"${m![1]}-etag"` })
    res.end(body)
  })
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      resolve({ url: `http://127.0.0.1:${port}`, hits, close: () => server.close() })
    }),
  )
}

test.serial('a repo id downloads into the HF cache with progress, then loads offline from it', async (t) => {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-hub-'))
  const hub = await serve()
  const saved = { ...process.env }
  try {
    process.env.HF_ENDPOINT = hub.url
    process.env.HF_HUB_CACHE = cache
    delete process.env.HF_HUB_OFFLINE
    const progress: LoadProgress[] = []
    const llm = await Engine.create({ modelPath: 'acme/tiny-qwen2', onProgress: (p) => progress.push(p) })
    const params = { temperature: 0, maxNewTokens: 8, ignoreEos: true }
    const fromHub = llm.generateSync('The capital of France is', params)
    llm.shutdown()

    const snapshot = path.join(cache, 'models--acme--tiny-qwen2', 'snapshots', COMMIT)
    t.true(fs.existsSync(path.join(snapshot, 'model.safetensors')))
    t.is(fs.readFileSync(path.join(cache, 'models--acme--tiny-qwen2', 'refs', 'main'), 'utf8').trim(), COMMIT)
    const weights = progress.filter((p) => p.file === 'model.safetensors')
    t.true(weights.length >= 1, 'progress reported for the weights')
    t.is(weights.at(-1)!.downloaded, fs.statSync(path.join(FIXTURE, 'model.safetensors')).size)
    t.true(weights.every((p) => p.stage === 'download'))
    // Then the weights load layer by layer, in bytes of the weight files, ending at the total.
    const load = progress.filter((p) => p.stage === 'load')
    t.true(load.length >= 2, `load progress per layer: ${JSON.stringify(load)}`)
    t.is(load.at(-1)!.downloaded, fs.statSync(path.join(FIXTURE, 'model.safetensors')).size)
    t.is(load.at(-1)!.total, load.at(-1)!.downloaded)
    t.true(load.every((p, i) => i === 0 || p.downloaded >= load[i - 1].downloaded))

    const local = new Engine({ modelPath: FIXTURE })
    t.deepEqual(local.generateSync('The capital of France is', params).outputIds, fromHub.outputIds)
    local.shutdown()

    const before = hub.hits.length
    process.env.HF_HUB_OFFLINE = '1'
    const offline = await Engine.create({ modelPath: 'acme/tiny-qwen2' })
    t.deepEqual(offline.generateSync('The capital of France is', params).outputIds, fromHub.outputIds)
    offline.shutdown()
    t.is(hub.hits.length, before, 'the cached copy needs no request')

    const err = await t.throwsAsync(Engine.create({ modelPath: 'acme/not-there' }))
    t.is((err as any).code, 'ERR_MODEL_NOT_FOUND')
  } finally {
    process.env = saved
    hub.close()
    fs.rmSync(cache, { recursive: true, force: true })
  }
})

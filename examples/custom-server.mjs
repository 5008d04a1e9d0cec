// A tiny HTTP server around one in-process engine (SGLang's custom_server.py, with node:http).
//   node examples/custom-server.mjs                 # PORT=8000 to pick the port; it prints its URL
//   curl -N localhost:8000/generate -d '{"prompt": "The capital of France is", "sampling_params": {"temperature": 0}}'
//
// POST /generate  {prompt, sampling_params, stream = true}
//   stream: text/plain, chunked: each piece of text as it is generated. The request is aborted when the
//           client disconnects.
//   stream: false: application/json {text, output_ids, meta_info}.
// GET /server_info: the engine's counters (running / waiting requests, KV pages).
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default max_new_tokens, 128), PORT (default 0: any free port).
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine, RadixLMError } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const defaultMaxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 128)

const llm = await Engine.create({ modelPath })

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

async function readJson(req) {
  let body = ''
  for await (const chunk of req) body += chunk
  return JSON.parse(body || '{}')
}

async function generate(req, res) {
  let body
  try {
    body = await readJson(req)
  } catch {
    return sendJson(res, 400, { error: 'the body must be JSON: {"prompt": ..., "sampling_params": {...}}' })
  }
  const { prompt, sampling_params: params = {}, stream = true } = body
  const samplingParams = { ...params }
  if (samplingParams.max_new_tokens === undefined && samplingParams.maxNewTokens === undefined) {
    samplingParams.max_new_tokens = defaultMaxNewTokens
  }

  // Abort the generation if the client goes away before the response is complete.
  const ac = new AbortController()
  res.on('close', () => {
    if (!res.writableFinished) ac.abort()
  })

  try {
    if (!stream) {
      const out = await llm.generate(prompt, samplingParams, { signal: ac.signal })
      return sendJson(res, 200, { text: out.text, output_ids: out.outputIds, meta_info: out.metaInfo })
    }
    const chunks = llm.generateStream(prompt, samplingParams, { signal: ac.signal })
    // Pull the first chunk before answering, so a bad request still gets a 400.
    let next = await chunks.next()
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' })
    while (!next.done) {
      if (next.value.delta) res.write(next.value.delta)
      next = await chunks.next()
    }
    res.end()
  } catch (e) {
    if (ac.signal.aborted) return // the client left; nothing to answer
    const status = e instanceof RadixLMError && e.code !== 'ERR_ENGINE_SHUTDOWN' ? 400 : 500
    if (!res.headersSent) sendJson(res, status, { error: e.message, code: e.code })
    else res.destroy(e)
  }
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/generate') return void generate(req, res)
  if (req.method === 'GET' && req.url === '/server_info') return sendJson(res, 200, llm.getServerInfo())
  sendJson(res, 404, { error: 'POST /generate or GET /server_info' })
})

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address()
  console.log(`radixlm server listening on http://127.0.0.1:${port}`)
})

// Ctrl-C / SIGTERM: stop accepting connections, end in-flight requests, free the model; Node then exits.
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    server.close()
    server.closeAllConnections()
    llm.shutdown()
  })
}

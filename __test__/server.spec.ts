// The OpenAI-compatible server (server.ts) driven by the official `openai` client, as users will: completions
// and chat (JSON and SSE streams, n, stop, logprobs, structured output), /v1/models, /health, /metrics, the
// error shape, 200 concurrent streams, and clients that leave mid-stream (their requests must be aborted,
// leaving the engine idle with no KV pages held).
import test from 'ava'
import Ajv from 'ajv'
import OpenAI from 'openai'
import { serve, type ServeHandle } from '../server'
import { idle, modelPath, sleep, waitFor } from './helpers'

const MODEL = 'smollm2-test'
let handle: ServeHandle | undefined
let client: OpenAI

test.before(async () => {
  handle = await serve({ modelPath: modelPath(), port: 0, modelName: MODEL })
  // No retries: a failure must show, not be papered over.
  client = new OpenAI({ baseURL: `${handle.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 })
})
test.after.always(async () => {
  await handle?.close()
})

const h = () => {
  if (!handle) throw new Error('the server did not start (did test.before fail?)')
  return handle
}
const engine = () => h().engine
const greedy = { temperature: 0, max_tokens: 12 }
const question = [{ role: 'user' as const, content: 'What is the capital of France?' }]

async function metricsText(): Promise<string> {
  const r = await fetch(`${h().url}/metrics`)
  return r.text()
}

/** Prometheus text format: `name{labels} value` samples, each name announced by # HELP and # TYPE. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>()
  const typed = new Set<string>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const meta = /^# (HELP|TYPE) (\w+) (.+)$/.exec(line)
    if (meta) {
      if (meta[1] === 'TYPE') {
        if (!['gauge', 'counter'].includes(meta[3])) throw new Error(`bad TYPE line: ${line}`)
        typed.add(meta[2])
      }
      continue
    }
    const m = /^(\w+)(\{(?:\w+="(?:[^"\\]|\\.)*",?)*\})? (-?[\d.e+-]+|NaN)$/.exec(line)
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`)
    if (!typed.has(m[1])) throw new Error(`${m[1]} has no # TYPE line before it`)
    samples.set(m[1] + (m[2] ?? ''), Number(m[3]))
  }
  return samples
}

test('completions: greedy text equals the engine, with usage and finish_reason', async (t) => {
  const prompt = 'The capital of France is'
  const expected = await engine().generate(prompt, { temperature: 0, maxNewTokens: 12 })
  const r = await client.completions.create({ model: MODEL, prompt, ...greedy })
  t.is(r.object, 'text_completion')
  t.is(r.model, MODEL)
  t.is(r.choices.length, 1)
  t.is(r.choices[0].text, expected.text)
  t.is(r.choices[0].finish_reason, expected.metaInfo.finishReason.type === 'length' ? 'length' : 'stop')
  t.deepEqual(r.usage, { prompt_tokens: expected.metaInfo.promptTokens, completion_tokens: expected.metaInfo.completionTokens, total_tokens: expected.metaInfo.promptTokens + expected.metaInfo.completionTokens })

  // A batch of prompts (and token ids) with n = 2: choices prompt-major, prompt tokens counted once per prompt.
  const ids = engine().tokenize('Once upon a time')
  const b = await client.completions.create({ model: MODEL, prompt: [ids, engine().tokenize(prompt)], n: 2, ...greedy, max_tokens: 4 })
  t.deepEqual(b.choices.map((c) => c.index), [0, 1, 2, 3])
  t.is(b.choices[2].text, (await engine().generate(prompt, { temperature: 0, maxNewTokens: 4 })).text)
  t.is(b.usage!.prompt_tokens, ids.length + expected.metaInfo.promptTokens)
  t.is(b.usage!.completion_tokens, 16)
})

test('completions: a stream concatenates to the same text, then reports usage', async (t) => {
  const prompt = 'The capital of France is'
  const whole = await client.completions.create({ model: MODEL, prompt, ...greedy })
  const stream = await client.completions.create({ model: MODEL, prompt, ...greedy, stream: true, stream_options: { include_usage: true } })
  let text = ''
  const finishes: (string | null)[] = []
  let usage: OpenAI.CompletionUsage | null | undefined
  let chunks = 0
  for await (const c of stream) {
    chunks++
    if (c.usage) usage = c.usage
    for (const ch of c.choices) {
      text += ch.text
      finishes.push(ch.finish_reason)
    }
  }
  t.true(chunks > 2, 'the text arrives in pieces')
  t.is(text, whole.choices[0].text)
  t.is(finishes.at(-1), whole.choices[0].finish_reason)
  t.true(finishes.slice(0, -1).every((f) => f === null))
  t.deepEqual(usage, whole.usage)
})

test('completions: logprobs with top alternatives', async (t) => {
  const r = await client.completions.create({ model: MODEL, prompt: 'The capital of France is', ...greedy, logprobs: 3 })
  const lp = r.choices[0].logprobs!
  // An EOS ending the text is not part of it, nor of its logprobs.
  t.is(lp.tokens!.length, r.usage!.completion_tokens - (r.choices[0].finish_reason === 'stop' ? 1 : 0))
  t.is(lp.tokens!.join(''), r.choices[0].text)
  lp.top_logprobs!.forEach((top, i) => {
    t.is(Object.keys(top).length <= 3 && Object.keys(top).length >= 1, true)
    // Greedy: the chosen token is the most likely one.
    t.is(Math.max(...Object.values(top)), lp.token_logprobs![i])
  })
  t.deepEqual(lp.text_offset![0], 0)
})

test('chat: greedy reply equals engine.chat, with usage', async (t) => {
  const expected = await engine().chat(question, { temperature: 0, maxNewTokens: 12 })
  const r = await client.chat.completions.create({ model: MODEL, messages: question, ...greedy })
  t.is(r.object, 'chat.completion')
  t.is(r.choices[0].message.role, 'assistant')
  t.is(r.choices[0].message.content, expected.text)
  t.is(r.usage!.prompt_tokens, engine().applyChatTemplate(question, { tokenize: true }).length)
  t.is(r.usage!.completion_tokens, expected.metaInfo.completionTokens)
  // max_completion_tokens wins over max_tokens; text parts and the 'developer' role are understood.
  const parts = await client.chat.completions.create({
    model: MODEL,
    messages: [
      { role: 'developer', content: 'You are a helpful assistant.' },
      { role: 'user', content: [{ type: 'text', text: 'What is the capital of France?' }] },
    ],
    temperature: 0,
    max_tokens: 50,
    max_completion_tokens: 3,
  })
  t.is(parts.usage!.completion_tokens, 3)
  const system = [{ role: 'system', content: 'You are a helpful assistant.' }, ...question]
  t.is(parts.usage!.prompt_tokens, engine().applyChatTemplate(system, { tokenize: true }).length)
})

test('chat: a stream opens with the role, concatenates to the reply, ends with usage', async (t) => {
  const whole = await client.chat.completions.create({ model: MODEL, messages: question, ...greedy })
  const stream = await client.chat.completions.create({ model: MODEL, messages: question, ...greedy, stream: true, stream_options: { include_usage: true } })
  const chunks: OpenAI.ChatCompletionChunk[] = []
  for await (const c of stream) chunks.push(c)
  t.is(chunks[0].choices[0].delta.role, 'assistant')
  t.true(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id && c.model === MODEL))
  const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? '')).join('')
  t.is(text, whole.choices[0].message.content!)
  const last = chunks.at(-1)!
  t.deepEqual(last.choices, [])
  t.deepEqual(last.usage, whole.usage)
  t.is(chunks.at(-2)!.choices[0].finish_reason, whole.choices[0].finish_reason)
})

test('chat: n = 2, streamed and not', async (t) => {
  const params = { model: MODEL, messages: question, n: 2, temperature: 1, seed: 7, max_tokens: 8 }
  const r = await client.chat.completions.create(params)
  t.deepEqual(r.choices.map((c) => c.index), [0, 1])
  t.true(r.choices.every((c) => c.finish_reason !== null && c.message.content!.length > 0))
  // The prompt is counted once; both samples' tokens are.
  t.is(r.usage!.prompt_tokens, engine().applyChatTemplate(question, { tokenize: true }).length)
  t.true(r.usage!.completion_tokens >= 2 && r.usage!.completion_tokens <= 16)

  const texts = ['', '']
  const finished = [false, false]
  const roles = [0, 0]
  for await (const c of await client.chat.completions.create({ ...params, stream: true })) {
    for (const ch of c.choices) {
      if (ch.delta.role) roles[ch.index]++
      texts[ch.index] += ch.delta.content ?? ''
      if (ch.finish_reason) finished[ch.index] = true
    }
  }
  t.deepEqual(roles, [1, 1])
  t.deepEqual(finished, [true, true])
  // Same seed, same samples: the stream carries the same two replies.
  t.deepEqual(texts, r.choices.map((c) => c.message.content))
})

test('chat: stop strings end the reply before the match', async (t) => {
  const free = await client.chat.completions.create({ model: MODEL, messages: question, temperature: 0, max_tokens: 16 })
  const text = free.choices[0].message.content!
  const words = text.split(' ').filter((w) => w.length > 2)
  t.true(words.length >= 2, `a reply with words to stop at: ${JSON.stringify(text)}`)
  const stop = words[1]
  const r = await client.chat.completions.create({ model: MODEL, messages: question, temperature: 0, max_tokens: 16, stop: [stop, 'zzzz'] })
  t.is(r.choices[0].finish_reason, 'stop')
  t.is(r.choices[0].message.content, text.slice(0, text.indexOf(stop)))
  // Streamed: same cut.
  let streamed = ''
  for await (const c of await client.chat.completions.create({ model: MODEL, messages: question, temperature: 0, max_tokens: 16, stop, stream: true })) {
    streamed += c.choices[0]?.delta.content ?? ''
  }
  t.is(streamed, r.choices[0].message.content!)
})

test('chat: stop_regex (SGLang\'s extension) ends the reply where the match starts', async (t) => {
  const free = await client.chat.completions.create({ model: MODEL, messages: question, temperature: 0, max_tokens: 16 })
  const text = free.choices[0].message.content!
  const word = text.split(' ').filter((w) => /^[A-Za-z]{3,}$/.test(w))[1]
  t.truthy(word, `a reply with words to stop at: ${JSON.stringify(text)}`)
  // The word as a regex: its first letter as a class, the rest literal.
  const pattern = `[${word[0]}]${word.slice(1)}`
  const body = { model: MODEL, messages: question, temperature: 0, max_tokens: 16, stop_regex: pattern }
  const r = await client.chat.completions.create(body as Parameters<typeof client.chat.completions.create>[0] & { stream?: false })
  t.is(r.choices[0].finish_reason, 'stop')
  t.is(r.choices[0].message.content, text.slice(0, text.search(new RegExp(pattern))))
  const bad = await fetch(`${h().url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stop_regex: '(a' }) })
  t.is(bad.status, 400)
})

test('chat: logprobs and top_logprobs, streamed and not', async (t) => {
  const r = await client.chat.completions.create({ model: MODEL, messages: question, ...greedy, logprobs: true, top_logprobs: 3 })
  const content = r.choices[0].logprobs!.content!
  t.is(r.choices[0].finish_reason, 'stop', 'the reply ends with EOS')
  t.is(content.length, r.usage!.completion_tokens - 1, 'one entry per token of the text (EOS is not in it)')
  t.is(content.map((c) => c.token).join(''), r.choices[0].message.content!)
  for (const c of content) {
    t.is(c.top_logprobs.length, 3)
    t.is(c.top_logprobs[0].logprob, c.logprob) // greedy: the chosen token leads
    t.true(c.top_logprobs[0].logprob >= c.top_logprobs[1].logprob && c.top_logprobs[1].logprob >= c.top_logprobs[2].logprob)
    t.deepEqual(c.bytes, [...Buffer.from(c.token, 'utf8')])
    t.true(c.logprob <= 0)
  }
  const plain = await client.chat.completions.create({ model: MODEL, messages: question, ...greedy })
  t.is(plain.choices[0].logprobs, null)

  // A stream's chunks carry the same logprobs, concatenated.
  const streamed: OpenAI.ChatCompletionTokenLogprob[] = []
  for await (const c of await client.chat.completions.create({ model: MODEL, messages: question, ...greedy, logprobs: true, top_logprobs: 3, stream: true })) {
    streamed.push(...(c.choices[0]?.logprobs?.content ?? []))
  }
  t.deepEqual(streamed, content)
})

test('chat: response_format json_schema output parses and validates; json_object gives an object', async (t) => {
  const schema = {
    type: 'object',
    properties: { name: { type: 'string', maxLength: 20 }, age: { type: 'integer', minimum: 0, maximum: 120 } },
    required: ['name', 'age'],
    additionalProperties: false,
  }
  const validate = new Ajv().compile(schema)
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Invent a person. Answer in JSON.' }],
    response_format: { type: 'json_schema', json_schema: { name: 'person', schema, strict: true } },
    n: 3,
    temperature: 1,
    seed: 3,
    max_tokens: 96,
  })
  t.is(r.choices.length, 3)
  for (const c of r.choices) {
    const value = JSON.parse(c.message.content!)
    t.true(validate(value), `${c.message.content} fails the schema: ${JSON.stringify(validate.errors)}`)
    t.is(c.finish_reason, 'stop')
  }
  const o = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Describe a cat in JSON.' }],
    response_format: { type: 'json_object' },
    temperature: 0,
    max_tokens: 96,
  })
  if (o.choices[0].finish_reason === 'stop') {
    const value = JSON.parse(o.choices[0].message.content!)
    t.true(value !== null && typeof value === 'object' && !Array.isArray(value))
  } else {
    t.regex(o.choices[0].message.content!, /^\{/) // ran out of tokens mid-object: still an object so far
  }
})

test('GET /v1/models, /v1/models/:id and /health', async (t) => {
  const models = []
  for await (const m of client.models.list()) models.push(m)
  t.is(models.length, 1)
  t.is(models[0].id, MODEL)
  t.is(models[0].object, 'model')
  t.is(models[0].owned_by, 'radixlm')
  t.is((await client.models.retrieve(MODEL)).id, MODEL)
  const missing = await fetch(`${h().url}/v1/models/nope`)
  t.is(missing.status, 404)
  const health = await fetch(`${h().url}/health`)
  t.is(health.status, 200)
  t.deepEqual(await health.json(), { status: 'ok' })
})

test('GET /metrics parses as Prometheus text and counts engine and HTTP work', async (t) => {
  await client.completions.create({ model: MODEL, prompt: 'Hello', max_tokens: 2 })
  const r = await fetch(`${h().url}/metrics`)
  t.is(r.status, 200)
  t.regex(r.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/)
  const m = parseMetrics(await r.text())
  for (const name of [
    'radixlm_num_running_reqs',
    'radixlm_num_waiting_reqs',
    'radixlm_kv_pages_total',
    'radixlm_kv_pages_used',
    'radixlm_kv_pages_free',
    'radixlm_cache_hit_rate',
    'radixlm_prompt_tokens_total',
    'radixlm_cached_tokens_total',
    'radixlm_generation_tokens_total',
    'radixlm_http_requests_in_flight',
  ]) {
    t.true(m.has(name), name)
  }
  const info = engine().getServerInfo()
  t.is(m.get('radixlm_kv_pages_total'), info.poolPages)
  t.true(m.get('radixlm_prompt_tokens_total')! > 0)
  t.true(m.get('radixlm_generation_tokens_total')! >= 2)
  t.true(m.get('radixlm_http_requests_total{route="/v1/completions",code="200"}')! >= 1)
  t.true(m.get('radixlm_http_requests_in_flight')! >= 1) // this very request
})

test('bad requests get 400 (404 for unknown routes) with an OpenAI error body', async (t) => {
  const failure = async (p: Promise<unknown>) => {
    const e = await t.throwsAsync(p, { instanceOf: OpenAI.APIError })
    return e as InstanceType<typeof OpenAI.APIError>
  }
  // The engine's validation, named by the request's field.
  const topP = await failure(client.chat.completions.create({ model: MODEL, messages: question, top_p: 5 }))
  t.is(topP.status, 400)
  t.is(topP.type, 'invalid_request_error')
  t.is(topP.code, 'ERR_INVALID_SAMPLING_PARAMS')
  t.is(topP.param, 'top_p')
  t.regex(topP.message, /top_p/)
  // A stream with bad params: a plain 400, before any event.
  const streamed = await failure(client.completions.create({ model: MODEL, prompt: 'x', stream: true, temperature: -1 }))
  t.is(streamed.status, 400)
  t.is(streamed.code, 'ERR_INVALID_SAMPLING_PARAMS')
  // A bad schema.
  const schema = await failure(
    client.chat.completions.create({ model: MODEL, messages: question, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'nonsense' } } } }),
  )
  t.is(schema.status, 400)
  t.is(schema.param, 'response_format')
  // Shape errors caught before the engine.
  const empty = await failure(client.chat.completions.create({ model: MODEL, messages: [] }))
  t.is(empty.status, 400)
  t.is(empty.param, 'messages')
  const negative = await failure(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: -1 }))
  t.is(negative.status, 400)
  t.is(negative.param, 'max_tokens')
  const image = await failure(
    client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] }),
  )
  t.is(image.status, 400)
  // Not JSON at all; an unknown route.
  const raw = await fetch(`${h().url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"messages": [' })
  t.is(raw.status, 400)
  const body = (await raw.json()) as { error: { message: string; type: string; code: string } }
  t.is(body.error.type, 'invalid_request_error')
  t.is(typeof body.error.message, 'string')
  t.is(typeof body.error.code, 'string')
  const unknown = await fetch(`${h().url}/v1/embeddings`, { method: 'POST', body: '{}' })
  t.is(unknown.status, 404)
  t.is(((await unknown.json()) as { error: { type: string } }).error.type, 'invalid_request_error')
  // The server still serves.
  t.is((await client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 1 })).choices.length, 1)
})

// --- Load: many concurrent streams; clients that leave ---

const CLIENTS = 200
const prompts = Array.from({ length: CLIENTS }, (_, i) => `Write one sentence about the number ${i}.`)

test.serial(`${CLIENTS} concurrent streaming clients all complete`, async (t) => {
  const t0 = Date.now()
  const results = await Promise.all(
    prompts.map(async (content, i) => {
      const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: 8, temperature: 0.7, seed: i, stream: true })
      let text = ''
      let finish: string | null = null
      for await (const c of stream) {
        text += c.choices[0]?.delta.content ?? ''
        finish = c.choices[0]?.finish_reason ?? finish
      }
      return { text, finish }
    }),
  )
  t.log(`${CLIENTS} streams in ${Date.now() - t0} ms`)
  t.is(results.length, CLIENTS)
  results.forEach((r, i) => {
    t.true(r.finish === 'length' || r.finish === 'stop', `client ${i} finished with ${r.finish}`)
    t.true(r.text.length > 0, `client ${i} got text`)
  })
  t.true(await waitFor(() => idle(engine()), 5000), JSON.stringify(engine().getServerInfo()))
})

test.serial(`${CLIENTS} streaming clients, half of them leaving mid-stream: their requests are aborted`, async (t) => {
  const disconnectsBefore = parseMetrics(await metricsText()).get('radixlm_http_client_disconnects_total{route="/v1/chat/completions"}') ?? 0
  const t0 = Date.now()
  // Leavers ask for far more tokens than the test has time for (ignore_eos: no early EOS), so they can only
  // end by being aborted; half leave after their first token, half on a timer (often while still queued).
  const leaverParams = { max_tokens: 4000, ignore_eos: true } as Record<string, unknown>
  const outcomes = await Promise.all(
    prompts.map(async (content, i) => {
      const leaves = i % 2 === 1
      const ac = new AbortController()
      const timer = leaves && i % 4 === 3 ? setTimeout(() => ac.abort(), 50 + (i % 13) * 40) : undefined
      try {
        const stream = await client.chat.completions.create(
          { model: MODEL, messages: [{ role: 'user', content }], temperature: 0.7, seed: i, stream: true, ...(leaves ? leaverParams : { max_tokens: 8 }) },
          { signal: ac.signal },
        )
        let finish: string | null = null
        for await (const c of stream) {
          if (leaves && c.choices[0]?.delta.content) ac.abort()
          finish = c.choices[0]?.finish_reason ?? finish
        }
        // The openai client ends a stream it aborted quietly.
        return leaves ? (ac.signal.aborted ? 'left' : 'leaver finished?!') : finish
      } catch (e) {
        if (leaves && ac.signal.aborted) return 'left'
        throw e
      } finally {
        clearTimeout(timer)
      }
    }),
  )
  const stayed = outcomes.filter((_, i) => i % 2 === 0)
  const left = outcomes.filter((_, i) => i % 2 === 1)
  t.true(stayed.every((o) => o === 'length' || o === 'stop'), JSON.stringify(stayed))
  t.true(left.every((o) => o === 'left'), JSON.stringify(left))
  // Every leaver's request is gone from the engine: nothing running or queued, no KV page held.
  let info = engine().getServerInfo()
  const drained = await waitFor(() => {
    info = engine().getServerInfo()
    return info.running === 0 && info.waiting === 0 && info.pagesUsed === 0
  }, 10_000)
  t.log(`done and drained in ${Date.now() - t0} ms`)
  t.true(drained, `requests kept running after their clients left: ${JSON.stringify(info)}`)
  t.is(info.integrityFailures, 0)
  // The server saw every leaver that left after its first token go; one that gave up very early may not
  // have sent its request at all.
  const disconnects = parseMetrics(await metricsText()).get('radixlm_http_client_disconnects_total{route="/v1/chat/completions"}')! - disconnectsBefore
  t.true(disconnects >= CLIENTS / 4 && disconnects <= CLIENTS / 2, `${disconnects} disconnects`)
})

test.serial('a non-streaming client that leaves aborts its request', async (t) => {
  const ac = new AbortController()
  const body = { model: MODEL, prompt: 'Count to a thousand:', max_tokens: 4000, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming
  const p = client.completions.create(body, { signal: ac.signal })
  t.true(await waitFor(() => engine().getServerInfo().running === 1, 10_000))
  ac.abort()
  await t.throwsAsync(p)
  t.true(await waitFor(() => idle(engine()), 5000), JSON.stringify(engine().getServerInfo()))
})

test.serial('serve().close() ends in-flight streams and frees the port', async (t) => {
  const other = await serve({ modelPath: modelPath(), port: 0 })
  const c = new OpenAI({ baseURL: `${other.url}/v1`, apiKey: 'unused', maxRetries: 0 })
  const stream = await c.completions.create({ model: 'x', prompt: 'Count to a thousand:', max_tokens: 4000, stream: true, ignore_eos: true } as OpenAI.CompletionCreateParamsStreaming)
  const t0 = Date.now()
  const consumed = (async () => {
    for await (const _ of stream) {
      // reading until the server ends it
    }
  })()
  await sleep(100)
  await other.close()
  await t.throwsAsync(consumed) // an error event: the engine shut down mid-stream
  t.true(Date.now() - t0 < 10_000)
  await t.throwsAsync(fetch(`${other.url}/health`))
  await other.close() // idempotent
})

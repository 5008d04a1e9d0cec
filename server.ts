// An OpenAI-compatible HTTP server on one in-process Engine (what SGLang's and vLLM's servers expose), built
// with fastify: /v1/completions, /v1/chat/completions (JSON or SSE streams), /v1/models, /health, /metrics.
// Request bodies are checked by JSON schemas, then mapped onto the engine's sampling params; every engine
// call carries an AbortSignal tied to the client's socket, so a client that leaves frees its request (and
// its KV pages) at once instead of generating for nobody.
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { ServerResponse } from 'node:http'
import { fastify, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify'
import {
  Engine,
  RadixLMError,
  type ChatMessage,
  type EngineOptions,
  type FinishReason,
  type GenerateOptions,
  type GenerateOutput,
  type LogprobTriple,
  type MetaInfo,
  type Prompt,
  type SamplingParams,
  type StreamChunk,
} from './index'

export interface ServerOptions {
  /** The `model` id reported by /v1/models and in responses (default: the model file or directory name). */
  modelName?: string
  /** fastify's logger option (default off). */
  logger?: FastifyServerOptions['logger']
  /** Largest request body in bytes (default 16 MiB: long chat histories). */
  bodyLimit?: number
}

export type ServeOptions = EngineOptions &
  ServerOptions & {
    /** Default 127.0.0.1: reachable from this machine only. */
    host?: string
    /** Default 30000 (SGLang's); 0 picks a free port. */
    port?: number
  }

export interface ServeHandle {
  /** e.g. `http://127.0.0.1:30000`; the OpenAI base URL is this plus `/v1`. */
  url: string
  /** Stops accepting connections, ends in-flight requests and shuts the engine down. Idempotent. */
  close(): Promise<void>
  engine: Engine
  server: FastifyInstance
}

// --- Request bodies (the OpenAI fields we honour, plus SGLang/vLLM's sampling extensions) ---

type Nullable<T> = T | null | undefined

interface CommonBody {
  model?: Nullable<string>
  max_tokens?: Nullable<number>
  temperature?: Nullable<number>
  top_p?: Nullable<number>
  n?: Nullable<number>
  seed?: Nullable<number>
  stop?: Nullable<string | string[]>
  stream?: Nullable<boolean>
  stream_options?: Nullable<{ include_usage?: Nullable<boolean> }>
  response_format?: Nullable<{ type: 'text' | 'json_object' | 'json_schema'; json_schema?: { schema?: unknown } }>
  [key: string]: unknown
}
interface CompletionBody extends CommonBody {
  prompt: string | string[] | number[] | number[][]
  logprobs?: Nullable<number>
  echo?: Nullable<boolean>
  best_of?: Nullable<number>
  suffix?: Nullable<string>
}
interface ChatBody extends CommonBody {
  messages: ChatMessage[]
  max_completion_tokens?: Nullable<number>
  logprobs?: Nullable<boolean>
  top_logprobs?: Nullable<number>
  tools?: Nullable<object[]>
  chat_template_kwargs?: Nullable<Record<string, unknown>>
}

const nullable = (type: string | string[], extra: object = {}) => ({ type: [type, 'null'].flat(), ...extra })
const SAMPLING_PROPERTIES = {
  model: nullable('string'),
  max_tokens: nullable('integer', { minimum: 0 }),
  temperature: nullable('number'),
  top_p: nullable('number'),
  n: nullable('integer', { minimum: 1 }),
  seed: nullable('integer', { minimum: 0 }),
  stop: nullable(['string', 'array'], { items: { type: 'string' } }),
  stream: nullable('boolean'),
  stream_options: nullable('object', { properties: { include_usage: nullable('boolean') } }),
  frequency_penalty: nullable('number'),
  presence_penalty: nullable('number'),
  logit_bias: nullable('object', { additionalProperties: { type: 'number' } }),
  response_format: nullable('object', {
    required: ['type'],
    properties: {
      type: { enum: ['text', 'json_object', 'json_schema'] },
      json_schema: { type: 'object', required: ['schema'], properties: { schema: { type: ['object', 'boolean'] } } },
    },
  }),
  user: nullable('string'),
  // Not in OpenAI's API; SGLang and vLLM accept them, and they map one to one onto the engine's params.
  top_k: nullable('integer'),
  min_p: nullable('number'),
  repetition_penalty: nullable('number'),
  min_tokens: nullable('integer', { minimum: 0 }),
  ignore_eos: nullable('boolean'),
  stop_token_ids: nullable('array', { items: { type: 'integer', minimum: 0 } }),
  stop_regex: nullable(['string', 'array'], { items: { type: 'string' } }),
  skip_special_tokens: nullable('boolean'),
  regex: nullable('string'),
  ebnf: nullable('string'),
}

const COMPLETION_SCHEMA = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...SAMPLING_PROPERTIES,
    prompt: { type: ['string', 'array'], minItems: 1, items: { type: ['string', 'integer', 'array'], items: { type: 'integer' } } },
    logprobs: nullable('integer', { minimum: 0, maximum: 20 }),
    echo: nullable('boolean'),
    best_of: nullable('integer', { minimum: 1 }),
    suffix: nullable('string'),
  },
}

const CHAT_SCHEMA = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...SAMPLING_PROPERTIES,
    messages: { type: 'array', minItems: 1, items: { type: 'object', required: ['role'], properties: { role: { type: 'string' } } } },
    max_completion_tokens: nullable('integer', { minimum: 0 }),
    logprobs: nullable('boolean'),
    top_logprobs: nullable('integer', { minimum: 0, maximum: 20 }),
    tools: nullable('array', { items: { type: 'object' } }),
    chat_template_kwargs: nullable('object'),
  },
}

// Body keys the engine takes under the same (snake_case) name.
const PASSED_THROUGH = [
  'temperature', 'top_p', 'top_k', 'min_p', 'frequency_penalty', 'presence_penalty', 'repetition_penalty', 'n',
  'seed', 'stop', 'stop_token_ids', 'stop_regex', 'ignore_eos', 'skip_special_tokens', 'logit_bias', 'regex', 'ebnf',
]

// Engine param names (in its error messages) -> the request field a client sent.
const FIELD_OF_PARAM: Record<string, string> = {
  maxNewTokens: 'max_tokens',
  minNewTokens: 'min_tokens',
  jsonSchema: 'response_format',
  topLogprobsNum: 'top_logprobs',
}
const toSnake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

const invalid = (message: string) => new RadixLMError('ERR_INVALID_INPUT', message)

function samplingParams(body: CommonBody, maxTokens: number | undefined): SamplingParams {
  const p: Record<string, unknown> = {}
  for (const k of PASSED_THROUGH) if (body[k] != null) p[k] = body[k]
  if (maxTokens != null) p.max_new_tokens = maxTokens
  if (body.min_tokens != null) p.min_new_tokens = body.min_tokens
  const rf = body.response_format
  if (rf?.type === 'json_schema') p.json_schema = JSON.stringify(rf.json_schema!.schema)
  // Any JSON object, as SGLang does for json_object.
  else if (rf?.type === 'json_object') p.json_schema = '{"type":"object"}'
  return p as SamplingParams
}

const finishName = (fr: FinishReason) => (fr.type === 'abort' ? 'abort' : fr.type)

// --- Logprobs: the engine's [logprob, id, text] triples in OpenAI's two shapes ---

/**
 * The output positions whose text the reply shows: a stop token (EOS) ends the output but is never in its
 * text, so its entry is dropped, keeping the tokens' texts equal to the reply.
 */
function shownLogprobs(meta: MetaInfo): { tokens: LogprobTriple[]; top: LogprobTriple[][] | undefined } {
  let tokens = meta.outputTokenLogprobs ?? []
  let top = meta.outputTopLogprobs
  const fr = meta.finishReason
  if (fr?.type === 'stop' && typeof fr.matched === 'number' && tokens.at(-1)?.[1] === fr.matched) {
    tokens = tokens.slice(0, -1)
    top = top?.slice(0, tokens.length)
  }
  return { tokens, top }
}

function completionLogprobs(meta: MetaInfo) {
  const { tokens, top } = shownLogprobs(meta)
  let offset = 0
  const textOffset = tokens.map(([, , text]) => {
    const at = offset
    offset += (text ?? '').length
    return at
  })
  return {
    tokens: tokens.map(([, , text]) => text ?? ''),
    token_logprobs: tokens.map(([lp]) => lp),
    top_logprobs: top?.map((top) => Object.fromEntries(top.map(([lp, , text]) => [text ?? '', lp]))) ?? null,
    text_offset: textOffset,
  }
}

function chatLogprobs(meta: MetaInfo) {
  const entry = ([lp, , text]: LogprobTriple) => ({ token: text ?? '', logprob: lp, bytes: [...Buffer.from(text ?? '', 'utf8')] })
  const { tokens, top } = shownLogprobs(meta)
  return { content: tokens.map((t, i) => ({ ...entry(t), top_logprobs: top?.[i]?.map(entry) ?? [] })), refusal: null }
}

// --- Usage: prompt tokens once per prompt (its n samples share it), completion tokens of every sample ---

class Usage {
  prompt = 0
  completion = 0
  constructor(readonly n: number) {}
  add(index: number, meta: MetaInfo) {
    if (index % this.n === 0) this.prompt += meta.promptTokens
    this.completion += meta.completionTokens
  }
  toJSON() {
    return { prompt_tokens: this.prompt, completion_tokens: this.completion, total_tokens: this.prompt + this.completion }
  }
}

// --- Errors: OpenAI's { error: { message, type, param, code } } ---

function errorResponse(e: unknown): { status: number; body: object } {
  const err = e as FastifyError & { code?: string }
  let status = 500
  let message = err instanceof Error ? err.message : String(e)
  let param: string | null = null
  if (err instanceof RadixLMError) {
    if (err.code.startsWith('ERR_INVALID_') || err.code === 'ERR_PROMPT_TOO_LONG' || err.code === 'ERR_CHAT_TEMPLATE') status = 400
    else if (err.code === 'ERR_ENGINE_SHUTDOWN') status = 503
    // The engine names its camelCase params; say which request field it was.
    const m = /^(?:samplingParams|options)\.(\w+)/.exec(message)
    if (m) {
      param = FIELD_OF_PARAM[m[1]] ?? toSnake(m[1])
      message = `${param}${message.slice(m[0].length)}`
    }
  } else if (err?.validation) {
    status = 400
    param = err.validation[0]?.instancePath.split('/')[1] || null
  } else if (typeof err?.statusCode === 'number' && err.statusCode >= 400) {
    status = err.statusCode
  }
  const type = status === 503 ? 'service_unavailable' : status < 500 ? 'invalid_request_error' : 'server_error'
  return { status, body: { error: { message, type, param, code: err?.code ?? null } } }
}

// --- Server-Sent Events ---

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
}

/** Resolves when `res` can take more data, or is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

/**
 * The engine stream with its first chunk already pulled. That first `next()` submits the request, so bad
 * params reject there and get a plain JSON 400 before any SSE header is written.
 */
async function* resumed(first: IteratorResult<StreamChunk>, rest: AsyncGenerator<StreamChunk>): AsyncGenerator<StreamChunk> {
  try {
    if (first.done) return
    yield first.value
    for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value
  } finally {
    // Ends the engine request too, if we stop early.
    await rest.return(undefined)
  }
}

/** Writes `events` as `data: {json}` lines, then `data: [DONE]`. An error after the headers becomes an error event. */
async function pipeSse(reply: FastifyReply, signal: AbortSignal, events: AsyncGenerator<object>): Promise<void> {
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, SSE_HEADERS)
  try {
    for await (const ev of events) {
      if (!res.write(`data: ${JSON.stringify(ev)}\n\n`)) await drained(res)
      if (res.destroyed) return
    }
    res.end('data: [DONE]\n\n')
  } catch (e) {
    if (signal.aborted) return // the client left: nobody to tell
    res.end(`data: ${JSON.stringify(errorResponse(e).body)}\n\n`)
  }
}

// --- Metrics ---

type Info = ReturnType<Engine['getServerInfo']>
const ENGINE_METRICS: [name: string, type: 'gauge' | 'counter', help: string, value: (i: Info) => number][] = [
  ['radixlm_num_running_reqs', 'gauge', 'Requests being prefilled or decoded.', (i) => i.running],
  ['radixlm_num_waiting_reqs', 'gauge', 'Requests queued for admission.', (i) => i.waiting],
  ['radixlm_kv_pages_total', 'gauge', 'KV cache pages in the pool.', (i) => i.poolPages],
  ['radixlm_kv_pages_free', 'gauge', 'KV cache pages on the free list.', (i) => i.pagesFree],
  ['radixlm_kv_pages_used', 'gauge', 'KV cache pages held by running requests.', (i) => i.pagesUsed],
  ['radixlm_kv_pages_cached', 'gauge', 'KV cache pages held by the prefix cache.', (i) => i.pagesCached],
  ['radixlm_kv_pages_evictable', 'gauge', 'Cached KV pages no request uses.', (i) => i.pagesEvictable],
  ['radixlm_kv_pages_evicted_total', 'counter', 'KV cache pages evicted from the prefix cache.', (i) => i.pagesEvictedTotal],
  ['radixlm_cache_hit_rate', 'gauge', 'Prompt tokens served from the prefix cache / prompt tokens.', (i) => i.cacheHitRate],
  ['radixlm_prompt_tokens_total', 'counter', 'Prompt tokens admitted.', (i) => i.promptTokensTotal],
  ['radixlm_cached_tokens_total', 'counter', 'Prompt tokens served from the prefix cache.', (i) => i.cachedTokensTotal],
  ['radixlm_forward_steps_total', 'counter', 'Forward passes taken.', (i) => i.steps],
  ['radixlm_retractions_total', 'counter', 'Requests re-queued because decode ran out of KV pages.', (i) => i.retractions],
  ['radixlm_integrity_failures_total', 'counter', 'Failed KV page accounting checks.', (i) => i.integrityFailures],
  ['radixlm_grammar_masks_total', 'counter', 'Structured-output token masks computed.', (i) => i.grammarMasks],
  ['radixlm_grammar_mask_seconds_total', 'counter', 'Seconds spent computing structured-output masks.', (i) => i.grammarMaskSeconds],
]

/** The server's own counters (the engine's are read when /metrics is scraped), and the in-flight requests. */
class HttpMetrics {
  inFlight = 0
  generationTokens = 0
  readonly requests = new Map<string, number>() // `${route}\0${code}` -> count
  readonly disconnects = new Map<string, number>() // route -> count
  #idle: (() => void)[] = []

  /** Resolves once no request is in flight. */
  whenIdle(): Promise<void> {
    return this.inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.#idle.push(resolve))
  }

  track(route: string, res: ServerResponse) {
    this.inFlight++
    res.once('close', () => {
      if (--this.inFlight === 0) this.#idle.splice(0).forEach((resolve) => resolve())
      // A response closed before it finished is a client that left (or a socket error).
      const [map, key] = res.writableFinished ? [this.requests, `${route}\0${res.statusCode}`] : [this.disconnects, route]
      map.set(key, (map.get(key) ?? 0) + 1)
    })
  }

  render(info: Info): string {
    const out: string[] = []
    const metric = (name: string, type: string, help: string, samples: [labels: string, value: number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
      for (const [labels, v] of samples) out.push(`${name}${labels} ${v}`)
    }
    for (const [name, type, help, value] of ENGINE_METRICS) metric(name, type, help, [['', value(info)]])
    metric('radixlm_generation_tokens_total', 'counter', 'Tokens generated for HTTP clients.', [['', this.generationTokens]])
    metric('radixlm_http_requests_in_flight', 'gauge', 'HTTP requests being served.', [['', this.inFlight]])
    const label = (v: string) => JSON.stringify(v) // escapes \ and " as the text format wants
    metric(
      'radixlm_http_requests_total',
      'counter',
      'HTTP responses sent, by route and status code.',
      [...this.requests].map(([k, v]) => {
        const [route, code] = k.split('\0')
        return [`{route=${label(route)},code=${label(code)}}`, v]
      }),
    )
    metric(
      'radixlm_http_client_disconnects_total',
      'counter',
      'HTTP requests whose client left before the response ended.',
      [...this.disconnects].map(([route, v]) => [`{route=${label(route)}}`, v]),
    )
    return out.join('\n') + '\n'
  }
}

// --- The server ---

/** An AbortSignal that fires when the client closes the connection before the response is complete. */
function clientGone(res: ServerResponse): AbortSignal {
  const ac = new AbortController()
  res.once('close', () => {
    if (!res.writableFinished) ac.abort()
  })
  return ac.signal
}

/**
 * Awaits the first chunk of an engine stream. Errors propagate (to the JSON error handler), except when
 * the client has already left: then the reply is dropped and null returned.
 */
async function firstChunk(stream: AsyncGenerator<StreamChunk>, signal: AbortSignal, reply: FastifyReply) {
  try {
    return await stream.next()
  } catch (e) {
    if (!signal.aborted) throw e
    reply.hijack()
    return null
  }
}

/** What differs between /v1/completions and /v1/chat/completions. */
interface Endpoint {
  idPrefix: string
  object: string
  chunkObject: string
  /** Chunks a stream starts with, before any text, given n. */
  opening: (n: number) => object[]
  generate: () => Promise<GenerateOutput | GenerateOutput[]>
  stream: () => AsyncGenerator<StreamChunk>
  /** One choice: a whole output, or a stream chunk's new text; `end` is the metaInfo once it is finished. */
  choice: (index: number, text: string, end: MetaInfo | null, streaming: boolean) => object
}

/** A message `content` given as parts: text parts joined (as vLLM does); anything else is refused. */
function textContent(content: unknown, i: number): unknown {
  if (!Array.isArray(content)) return content
  return content
    .map((part, j) => {
      if (part?.type !== 'text' || typeof part.text !== 'string') throw invalid(`messages[${i}].content[${j}]: only text parts are supported`)
      return part.text as string
    })
    .join('\n')
}

/**
 * The OpenAI-compatible routes on `engine`, as a fastify instance (not listening yet: call `listen`).
 * Its `close()` lets in-flight requests finish, then closes every connection; the engine keeps running
 * (the caller owns it).
 */
export function createServer(engine: Engine, opts: ServerOptions = {}): FastifyInstance {
  const info = engine.getServerInfo()
  const modelName = opts.modelName ?? (info.modelPath.split(/[\\/]/).filter(Boolean).pop() || info.modelPath)
  const created = Math.floor(Date.now() / 1000)
  const metrics = new HttpMetrics()
  const app = fastify({
    logger: opts.logger ?? false,
    bodyLimit: opts.bodyLimit ?? 16 * 1024 * 1024,
    // JSON bodies have types already: a "5" for an integer is a client bug worth a 400, not a coercion.
    ajv: { customOptions: { coerceTypes: false, allowUnionTypes: true } },
  })

  app.addHook('onRequest', (req, reply, done) => {
    metrics.track(req.routeOptions.url ?? 'unmatched', reply.raw)
    done()
  })
  // close(): new requests get 503 from here on; once the in-flight ones have ended, every connection left is
  // idle, and is closed. Node's own close() would wait out the keep-alive timeout (72 s) on a connection
  // that went idle after close() began (a stream), and the headers timeout (60 s) on one a client opened
  // but never used (HTTP clients open those under load).
  app.addHook('preClose', (done) => {
    void metrics.whenIdle().then(() => {
      app.server.closeAllConnections()
      done()
    })
  })
  app.setErrorHandler((e, _req, reply) => {
    const { status, body } = errorResponse(e)
    return reply.code(status).send(body)
  })
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { message: `no route for ${req.method} ${req.url}`, type: 'invalid_request_error', param: null, code: 'ERR_NOT_FOUND' } }),
  )

  /** Runs one request, streamed (SSE) or not, and answers in OpenAI's shapes; `ep` says what differs. */
  async function respond(reply: FastifyReply, body: CommonBody, signal: AbortSignal, ep: Endpoint) {
    const id = `${ep.idPrefix}-${randomUUID().replace(/-/g, '')}`
    const head = (object: string) => ({ id, object, created: Math.floor(Date.now() / 1000), model: modelName })
    const usage = new Usage(body.n ?? 1)
    if (!body.stream) {
      const outs = await generateOrDrop(ep.generate, signal, reply)
      if (!outs) return
      const choices = outs.map((o, i) => {
        usage.add(i, o.metaInfo)
        metrics.generationTokens += o.metaInfo.completionTokens
        return ep.choice(i, o.text, o.metaInfo, false)
      })
      return { ...head(ep.object), choices, usage }
    }

    const stream = ep.stream()
    const first = await firstChunk(stream, signal, reply)
    if (!first) return
    const includeUsage = !!body.stream_options?.include_usage
    // With include_usage, OpenAI puts `usage: null` on every chunk but the last.
    const chunk = (choice: object) => ({ ...head(ep.chunkObject), choices: [choice], ...(includeUsage && { usage: null }) })
    async function* events() {
      for (const c of ep.opening(usage.n)) yield chunk(c)
      for await (const c of resumed(first!, stream)) {
        metrics.generationTokens += c.outputIds.length
        const end = c.metaInfo.finishReason ? c.metaInfo : null
        if (!c.delta && !end) continue // ids whose text is not complete yet (a split UTF-8 character)
        if (end) usage.add(c.index, end)
        yield chunk(ep.choice(c.index, c.delta, end, true))
      }
      if (includeUsage) yield { ...head(ep.chunkObject), choices: [], usage }
    }
    return pipeSse(reply, signal, events())
  }

  const maxTokens = (body: { max_tokens?: Nullable<number>; max_completion_tokens?: Nullable<number> }, fallback: number) =>
    body.max_completion_tokens ?? body.max_tokens ?? fallback

  app.post<{ Body: CompletionBody }>('/v1/completions', { schema: { body: COMPLETION_SCHEMA } }, async (req, reply) => {
    const body = req.body
    if (body.echo) throw invalid('echo is not supported')
    if (body.suffix) throw invalid('suffix is not supported')
    if (body.best_of != null && body.best_of !== (body.n ?? 1)) throw invalid('best_of must equal n (no server-side ranking)')
    const p = body.prompt
    // Token-id prompts: one (number[]) or several (number[][]).
    const prompt: Prompt = Array.isArray(p) && typeof p[0] !== 'string' ? { inputIds: p as number[] | number[][] } : (p as string | string[])
    // OpenAI's default for completions is 16 tokens.
    const params = samplingParams(body, maxTokens(body, 16))
    const signal = clientGone(reply.raw)
    const options: GenerateOptions = { signal }
    const logprobs = body.logprobs != null
    if (logprobs) Object.assign(options, { returnLogprob: true, topLogprobsNum: body.logprobs, returnTextInLogprobs: true })
    return respond(reply, body, signal, {
      idPrefix: 'cmpl',
      object: 'text_completion',
      chunkObject: 'text_completion',
      opening: () => [],
      generate: () => engine.generate(prompt, params, options),
      stream: () => engine.generateStream(prompt, params, options),
      choice: (index, text, end) => ({
        index,
        text,
        logprobs: end && logprobs ? completionLogprobs(end) : null,
        finish_reason: end ? finishName(end.finishReason!) : null,
      }),
    })
  })

  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: CHAT_SCHEMA } }, async (req, reply) => {
    const body = req.body
    const messages = body.messages.map((m, i): ChatMessage => ({
      ...m,
      // Templates know system / user / assistant / tool; OpenAI's newer 'developer' is the system prompt.
      role: m.role === 'developer' ? 'system' : m.role,
      content: textContent(m.content, i) as ChatMessage['content'],
    }))
    // OpenAI's default for chat is "until the context ends": the engine stops at the context length.
    const params = samplingParams(body, maxTokens(body, info.contextLength))
    const signal = clientGone(reply.raw)
    const options: GenerateOptions & Record<string, unknown> = { signal }
    if (body.tools) options.tools = body.tools
    if (body.chat_template_kwargs) options.chatTemplateKwargs = body.chat_template_kwargs
    if (body.logprobs) Object.assign(options, { returnLogprob: true, topLogprobsNum: body.top_logprobs ?? 0, returnTextInLogprobs: true })
    return respond(reply, body, signal, {
      idPrefix: 'chatcmpl',
      object: 'chat.completion',
      chunkObject: 'chat.completion.chunk',
      // Each choice of a stream opens with its role, as OpenAI's do.
      opening: (n) => Array.from({ length: n }, (_, index) => ({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null })),
      generate: () => engine.chat(messages, params, options),
      stream: () => engine.chatStream(messages, params, options),
      choice: (index, text, end, streaming) => {
        // A stream gets logprobs with a choice's last chunk: the engine reports them at the end.
        const logprobs = end && body.logprobs ? chatLogprobs(end) : null
        const finish_reason = end ? finishName(end.finishReason!) : null
        return streaming
          ? { index, delta: text ? { content: text } : {}, logprobs, finish_reason }
          : { index, message: { role: 'assistant', content: text }, logprobs, finish_reason }
      },
    })
  })

  const model = () => ({ id: modelName, object: 'model', created, owned_by: 'radixlm', max_model_len: info.contextLength })
  app.get('/v1/models', async () => ({ object: 'list', data: [model()] }))
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (req, reply) => {
    if (req.params.model === modelName) return model()
    return reply.code(404).send({ error: { message: `model ${req.params.model} not found`, type: 'invalid_request_error', param: 'model', code: 'ERR_NOT_FOUND' } })
  })

  // Asks the engine, so a shut-down engine reports 503 rather than a healthy server.
  app.get('/health', async () => {
    engine.getServerInfo()
    return { status: 'ok' }
  })

  app.get('/metrics', async (_req, reply) => {
    reply.type('text/plain; version=0.0.4; charset=utf-8')
    return metrics.render(engine.getServerInfo())
  })

  return app
}

/** A non-streaming generate call: the outputs as an array, or null when the client left (nothing to send). */
async function generateOrDrop(call: () => Promise<GenerateOutput | GenerateOutput[]>, signal: AbortSignal, reply: FastifyReply) {
  try {
    return [await call()].flat()
  } catch (e) {
    if (!signal.aborted) throw e
    reply.hijack()
    return null
  }
}

/** Loads the model (off the event loop), then serves it on `host:port`. */
export async function serve(opts: ServeOptions): Promise<ServeHandle> {
  const { host = '127.0.0.1', port = 30000, modelName, logger, bodyLimit, ...engineOptions } = opts
  const engine = await Engine.create(engineOptions as EngineOptions)
  let server: FastifyInstance
  try {
    server = createServer(engine, { modelName, logger, bodyLimit })
    await server.listen({ host, port })
  } catch (e) {
    engine.shutdown()
    throw e
  }
  const addr = server.server.address() as AddressInfo
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  let closing: Promise<void> | undefined
  return {
    url: `http://${shown}:${addr.port}`,
    engine,
    server,
    close: () =>
      (closing ??= (async () => {
        const closed = server.close() // stop accepting first, so no new request meets a dead engine
        engine.shutdown() // in-flight requests end now (an error event for streams) instead of running out
        await closed
      })()),
  }
}

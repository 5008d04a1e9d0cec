// Structured output (jsonSchema / regex / ebnf, through llguidance) on the default model, sampled at
// temperature 1: every output parses and validates against its schema (ajv), matches its regex in
// full, or passes a hand-written checker for its grammar. A finished grammar ends the request as a
// stop at EOS; bad grammars are ERR_INVALID_SAMPLING_PARAMS and the engine keeps serving.
import test from 'ava'
import Ajv from 'ajv'
import { Engine, type GenerateOutput, type SamplingParams } from '../index'
import { chatPrompt, isRadixError, modelPath, useEngine } from './helpers'

const engine = useEngine(test)
const SEEDS = [1, 2, 3, 4]
/** Seeds for n = 2 calls: sample k of a call uses seed + k, so these keep every sample's seed distinct. */
const SEEDS_N2 = [1, 11, 21, 31]
const MAX = 256

type Schema = Record<string, unknown>

/** 50 small schemas: 10 families (enums, $defs/$ref, nesting, arrays, string lengths, numeric bounds,
 * required/optional, anyOf, top-level non-objects, mixes) x 5 variants each. Small enough that a
 * 256-token budget always suffices. */
function schemas(): { what: string; schema: Schema }[] {
  const words = ['red', 'green', 'blue', 'cyan', 'amber', 'black', 'white', 'olive', 'teal', 'pink']
  const out: { what: string; schema: Schema }[] = []
  const obj = (properties: Schema, required: string[] = Object.keys(properties)): Schema => ({
    type: 'object',
    properties,
    required,
    additionalProperties: false,
  })
  for (let v = 0; v < 5; v++) {
    const w = (k: number) => words[(v + k) % words.length]
    out.push({ what: `a paint color and size (${v})`, schema: obj({ color: { enum: [w(0), w(1), w(2)] }, size: { enum: ['S', 'M', 'L', 'XL'].slice(0, 2 + (v % 3)) } }) })
    out.push({
      what: `two points on a grid (${v})`,
      schema: {
        $defs: { point: obj({ x: { type: 'integer', minimum: -10 * (v + 1), maximum: 10 * (v + 1) }, y: { type: 'integer', minimum: 0, maximum: 9 + v } }) },
        ...obj({ from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } }),
      },
    })
    out.push({
      what: `a person with an address (${v})`,
      schema: obj({
        name: { type: 'string', minLength: 1, maxLength: 12 + v },
        age: { type: 'integer', minimum: 0, maximum: 120 },
        address: obj({ city: { type: 'string', minLength: 2, maxLength: 10 }, zip: { type: 'string', pattern: `^[0-9]{${4 + (v % 2)}}$` } }),
      }),
    })
    out.push({
      what: `a shopping list (${v})`,
      schema: obj({
        items: {
          type: 'array',
          items: obj({ item: { type: 'string', maxLength: 10 }, qty: { type: 'integer', minimum: 1, maximum: 5 } }),
          minItems: 1,
          maxItems: 2 + (v % 3),
        },
      }),
    })
    out.push({
      what: `a product code and a title (${v})`,
      schema: obj({
        code: { type: 'string', minLength: 3 + v, maxLength: 3 + v, pattern: '^[A-Z0-9]+$' },
        title: { type: 'string', minLength: 5, maxLength: 15 + 2 * v },
        note: { type: 'string', maxLength: 4 },
      }),
    })
    out.push({
      what: `a measurement (${v})`,
      schema: obj({
        celsius: { type: 'integer', minimum: -40, maximum: 50 + v },
        ratio: { type: 'number', minimum: 0, maximum: 1 },
        score: { type: 'integer', exclusiveMinimum: v, exclusiveMaximum: v + 10 },
      }),
    })
    out.push({
      what: `a user profile with optional fields (${v})`,
      schema: obj(
        {
          id: { type: 'integer', minimum: 1, maximum: 9999 },
          nick: { type: 'string', minLength: 2, maxLength: 8 },
          admin: { type: 'boolean' },
          email: { type: 'string', maxLength: 20, pattern: '^[a-z]+@[a-z]+\\.com$' },
        },
        ['id', ...(v % 2 ? ['nick'] : []), ...(v > 2 ? ['admin'] : [])],
      ),
    })
    out.push({
      what: `a shape (${v})`,
      schema: obj({
        shape: {
          anyOf: [
            obj({ kind: { const: 'circle' }, r: { type: 'integer', minimum: 1, maximum: 99 } }),
            obj({ kind: { const: 'rect' }, w: { type: 'integer', minimum: 1, maximum: 99 }, h: { type: 'integer', minimum: 1, maximum: 99 } }),
            { type: 'null' },
          ],
        },
        label: { anyOf: [{ type: 'string', maxLength: 6 }, { type: 'integer', minimum: 0, maximum: 9 }] },
      }),
    })
    const tops: Schema[] = [
      { type: 'array', items: { type: 'integer', minimum: 0, maximum: 100 }, minItems: 2, maxItems: 5 },
      { enum: words.slice(v, v + 4) },
      { type: 'array', items: { type: 'string', enum: ['a', 'b', 'c'] }, minItems: 1, maxItems: 4 },
      { type: 'boolean' },
      { type: 'array', items: { type: 'boolean' }, maxItems: 3 },
    ]
    out.push({ what: `a plain value (${v})`, schema: tops[v] })
    out.push({
      what: `an order with lines and a status (${v})`,
      schema: {
        $defs: { status: { enum: ['new', 'paid', 'sent', 'done'] }, line: obj({ sku: { type: 'string', pattern: '^[A-Z]{3}[0-9]{2}$' }, n: { type: 'integer', minimum: 1, maximum: 9 } }) },
        ...obj({
          order: { type: 'integer', minimum: 100, maximum: 999 },
          status: { $ref: '#/$defs/status' },
          lines: { type: 'array', items: { $ref: '#/$defs/line' }, minItems: 1, maxItems: 1 + (v % 3) },
          gift: { type: 'boolean' },
        }, ['order', 'status', 'lines']),
      },
    })
  }
  return out
}

function expectOk(t: { true: (c: boolean, m?: string) => void }, o: GenerateOutput, what: string) {
  t.true(o.metaInfo.finishReason.type === 'stop', `${what}: ended ${JSON.stringify(o.metaInfo.finishReason)} after ${o.metaInfo.completionTokens} tokens: ${JSON.stringify(o.text)}`)
}

test('jsonSchema: 50 schemas x 4 seeds at temperature 1 all parse and validate (ajv)', async (t) => {
  const llm = engine()
  const list = schemas()
  t.is(list.length, 50)
  const ajv = new Ajv({ allErrors: true })
  const prompts: string[] = []
  const params: SamplingParams[] = []
  const checks: { what: string; validate: ReturnType<Ajv['compile']> }[] = []
  for (const { what, schema } of list) {
    const validate = ajv.compile(schema)
    for (const seed of SEEDS) {
      prompts.push(chatPrompt(`Reply with JSON only: ${what}.`))
      // SGLang passes the schema as JSON text; every other one here goes as an object.
      params.push({ temperature: 1, maxNewTokens: MAX, seed, jsonSchema: seed % 2 ? JSON.stringify(schema) : schema })
      checks.push({ what, validate })
    }
  }
  const before = llm.getServerInfo()
  const t0 = Date.now()
  const outs = await llm.generate(prompts, params)
  const ms = Date.now() - t0
  const after = llm.getServerInfo()
  const masks = after.grammarMasks - before.grammarMasks
  const maskUs = ((after.grammarMaskSeconds - before.grammarMaskSeconds) / masks) * 1e6
  t.log(`${masks} masks, ${maskUs.toFixed(0)} us each; ${after.steps - before.steps} steps`)
  let ok = 0
  const failures: string[] = []
  let tokens = 0
  outs.forEach((o, i) => {
    const { what, validate } = checks[i]
    tokens += o.metaInfo.completionTokens
    let value: unknown
    try {
      value = JSON.parse(o.text)
    } catch (e) {
      failures.push(`${what} seed ${SEEDS[i % 4]}: not JSON (${o.metaInfo.finishReason.type}): ${JSON.stringify(o.text)}`)
      return
    }
    if (!validate(value)) {
      failures.push(`${what}: ${JSON.stringify(o.text)} ${ajv.errorsText(validate.errors)}`)
      return
    }
    if (o.metaInfo.finishReason.type !== 'stop') {
      failures.push(`${what}: finished ${JSON.stringify(o.metaInfo.finishReason)}`)
      return
    }
    ok++
  })
  t.log(`${ok}/${outs.length} valid; ${tokens} tokens in ${ms} ms (${((tokens / ms) * 1000).toFixed(0)} tok/s)`)
  t.log(`e.g. ${outs[8].text} | ${outs[21].text} | ${outs[37].text}`)
  t.deepEqual(failures, [])
  t.is(ok, 200)
  // A finished grammar ends the request as a stop at the model's EOS id.
  const eos = outs.map((o) => o.metaInfo.finishReason).filter((f) => f.type === 'stop')
  t.true(eos.every((f) => typeof f.matched === 'number'), JSON.stringify(eos.slice(0, 3)))
})

// [pattern, a JavaScript regex for the same language]
const REGEXES: [string, RegExp][] = [
  ['\\d{4}-\\d{2}-\\d{2}', /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/],
  ['(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])', /^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$/],
  ['\\(\\d{3}\\) \\d{3}-\\d{4}', /^\([0-9]{3}\) [0-9]{3}-[0-9]{4}$/],
  ['\\+1-[2-9][0-9]{2}-[0-9]{3}-[0-9]{4}', /^\+1-[2-9][0-9]{2}-[0-9]{3}-[0-9]{4}$/],
  ['(apple|banana|cherry|grape)', /^(apple|banana|cherry|grape)$/],
  ['(yes|no|maybe), (yes|no|maybe)', /^(yes|no|maybe), (yes|no|maybe)$/],
  ['[a-z]{3,8}', /^[a-z]{3,8}$/],
  ['[A-Z][a-z]{2,9} [A-Z][a-z]{2,9}', /^[A-Z][a-z]{2,9} [A-Z][a-z]{2,9}$/],
  ['([01][0-9]|2[0-3]):[0-5][0-9]', /^([01][0-9]|2[0-3]):[0-5][0-9]$/],
  ['[a-z]{2,10}@[a-z]{2,8}\\.(com|org|net)', /^[a-z]{2,10}@[a-z]{2,8}\.(com|org|net)$/],
]

test('regex: outputs match in full at temperature 1 (n = 2 samples each, 4 seeds)', async (t) => {
  const llm = engine()
  const prompts: string[] = []
  const params: SamplingParams[] = []
  const want: RegExp[] = []
  for (const [rx, js] of REGEXES) {
    for (const seed of SEEDS_N2) {
      prompts.push(chatPrompt('Answer with a value of the right form.'))
      params.push({ temperature: 1, maxNewTokens: 64, seed, n: 2, regex: rx })
      want.push(js, js)
    }
  }
  const outs = await llm.generate(prompts, params)
  t.is(outs.length, REGEXES.length * SEEDS_N2.length * 2)
  const bad = outs.map((o, i) => [o, want[i]] as const).filter(([o, js]) => !js.test(o.text) || o.metaInfo.finishReason.type !== 'stop')
  t.deepEqual(bad.map(([o, js]) => `${js}: ${JSON.stringify(o.text)} ${JSON.stringify(o.metaInfo.finishReason)}`), [])
  // The samples are random, not one answer repeated.
  t.true(new Set(outs.map((o) => o.text)).size > outs.length / 3)
  // snake_case spelling too.
  const o = await llm.generate(chatPrompt('Pick a fruit.'), { temperature: 1, seed: 9, regex: '(apple|banana)' } as SamplingParams)
  t.regex(o.text, /^(apple|banana)$/)
})

/** A checker for ARITH (below): expr := term ((" + " | " * ") term){0,3}; term := NUMBER | "(" NUMBER ((" + " | " - ") NUMBER){1,2} ")". */
function isArith(s: string): boolean {
  const num = '[1-9][0-9]{0,2}'
  const term = `(${num}|\\(${num}(( \\+ | - )${num}){1,2}\\))`
  // The grammar has no nesting deeper than one bracket, so a regex written by hand checks it fully.
  return new RegExp(`^${term}(( \\+ | \\* )${term}){0,3}$`).test(s)
}

const ARITH = `
start: expr
expr: term ((" + " | " * ") term){0,3}
term: NUMBER | "(" inner ")"
inner: NUMBER ((" + " | " - ") NUMBER){1,2}
NUMBER: /[1-9][0-9]{0,2}/
`

const PAIRS = `
start: pair ("; " pair){0,3}
pair: KEY "=" value
value: INT | BOOL | "\\"" WORD "\\""
KEY: /[a-z]{1,8}/
INT: /-?[0-9]{1,4}/
BOOL: "true" | "false"
WORD: /[A-Za-z ]{0,12}/
`

/** A hand-written parser for PAIRS. */
function isPairs(s: string): boolean {
  const parts = s.split('; ')
  if (parts.length < 1 || parts.length > 4) return false
  return parts.every((p) => {
    const eq = p.indexOf('=')
    if (eq < 1 || eq > 8 || !/^[a-z]+$/.test(p.slice(0, eq))) return false
    const v = p.slice(eq + 1)
    if (v === 'true' || v === 'false') return true
    if (/^-?[0-9]{1,4}$/.test(v)) return true
    return v.length >= 2 && v.startsWith('"') && v.endsWith('"') && /^[A-Za-z ]{0,12}$/.test(v.slice(1, -1))
  })
}

// SGLang's own ebnf example (GBNF, as xgrammar takes it): translated to Lark.
const CAPITALS = `
root ::= city " is the capital of " country
city ::= "London" | "Paris" | "Berlin" | "Rome"
country ::= "England" | "France" | "Germany" | "Italy"
`

test('ebnf: Lark and GBNF grammars give outputs their checkers accept', async (t) => {
  const llm = engine()
  const cases: [string, string, (s: string) => boolean][] = [
    ['arith (Lark)', ARITH, isArith],
    ['pairs (Lark)', PAIRS, isPairs],
    ['capitals (GBNF)', CAPITALS, (s) => /^(London|Paris|Berlin|Rome) is the capital of (England|France|Germany|Italy)$/.test(s)],
  ]
  for (const [name, grammar, check] of cases) {
    const prompts = SEEDS_N2.map(() => chatPrompt('Write one example.'))
    const outs = await llm.generate(prompts, SEEDS_N2.map((seed) => ({ temperature: 1, maxNewTokens: 128, seed, n: 2, ebnf: grammar })))
    for (const o of outs) {
      expectOk(t, o, name)
      t.true(check(o.text), `${name}: ${JSON.stringify(o.text)}`)
    }
    t.log(`${name}: ${outs.map((o) => JSON.stringify(o.text)).join(' ')}`)
  }
})

test('a constrained stream delivers every token once and ends as a stop', async (t) => {
  const llm = engine()
  const schema = { type: 'object', properties: { a: { enum: ['x', 'y'] }, b: { type: 'integer', minimum: 0, maximum: 50 } }, required: ['a', 'b'], additionalProperties: false }
  const params: SamplingParams = { temperature: 1, seed: 3, maxNewTokens: 64, jsonSchema: JSON.stringify(schema) }
  const whole = await llm.generate(chatPrompt('JSON please.'), params)
  let text = ''
  const ids: number[] = []
  let last: GenerateOutput['metaInfo']['finishReason'] | null = null
  for await (const c of llm.generateStream(chatPrompt('JSON please.'), params)) {
    text += c.delta
    ids.push(...c.outputIds)
    last = c.metaInfo.finishReason
  }
  t.is(text, whole.text)
  t.deepEqual(ids, whole.outputIds)
  t.deepEqual(last, whole.metaInfo.finishReason)
  t.is(last?.type, 'stop')
  t.deepEqual(Object.keys(JSON.parse(text)).sort(), ['a', 'b'])
})

test('greedy decoding under a grammar is deterministic and valid', async (t) => {
  const llm = engine()
  const p = { temperature: 0, maxNewTokens: 64, regex: '(Paris|London|Rome)' }
  const a = llm.generateSync(chatPrompt('What is the capital of France?'), p)
  const b = await llm.generate(chatPrompt('What is the capital of France?'), p)
  t.is(a.text, b.text)
  t.regex(a.text, /^(Paris|London|Rome)$/)
  t.is(a.metaInfo.finishReason.type, 'stop')
})

const BAD: [string, SamplingParams, RegExp][] = [
  ['jsonSchema that is not JSON', { jsonSchema: '{"type": "object",' }, /jsonSchema.*JSON/],
  ['jsonSchema that is not a schema', { jsonSchema: '[1, 2]' }, /jsonSchema/],
  ['jsonSchema with an unknown type', { jsonSchema: '{"type": "frobnicate"}' }, /jsonSchema/],
  ['regex that does not compile', { regex: '(abc' }, /regex/],
  ['regex with a bad class', { regex: '[z-a]' }, /regex/],
  ['ebnf with an undefined rule', { ebnf: 'start: missing_rule' }, /ebnf/],
  ['ebnf GBNF without root', { ebnf: 'item ::= "x"' }, /ebnf.*root/],
  ['two grammars at once', { regex: 'a', ebnf: 'start: "a"' }, /only one of jsonSchema, regex and ebnf/],
  ['three grammars at once (snake_case)', { json_schema: '{}', regex: 'a', ebnf: 'start: "a"' } as SamplingParams, /only one of jsonSchema, regex and ebnf/],
  ['jsonSchema of a wrong type', { jsonSchema: 5 } as unknown as SamplingParams, /jsonSchema/],
]

test('bad grammars are ERR_INVALID_SAMPLING_PARAMS with the reason, and the engine keeps serving', async (t) => {
  const llm = engine()
  for (const [name, sp, msg] of BAD) {
    let err: unknown
    try {
      llm.generateSync('Hi', { maxNewTokens: 4, ...sp })
    } catch (e) {
      err = e
    }
    t.true(isRadixError(err, 'ERR_INVALID_SAMPLING_PARAMS'), `${name}: ${err}`)
    t.regex((err as Error).message, msg, name)
    await t.throwsAsync(llm.generate('Hi', { maxNewTokens: 4, ...sp }), { code: 'ERR_INVALID_SAMPLING_PARAMS' } as never, name)
  }
  const ok = await llm.generate(chatPrompt('Pick one.'), { temperature: 1, seed: 1, regex: '(left|right)' })
  t.regex(ok.text, /^(left|right)$/)
  t.is(llm.getServerInfo().integrityFailures, 0)
})

test('grammars need a tokenizer: skipTokenizerInit engines reject them', (t) => {
  const llm = new Engine({ modelPath: modelPath(), skipTokenizerInit: true })
  try {
    const err = t.throws(() => llm.generateSync({ inputIds: [1, 2, 3] }, { maxNewTokens: 4, regex: 'a+' }))
    t.true(isRadixError(err, 'ERR_INVALID_SAMPLING_PARAMS'), String(err))
    t.regex(err!.message, /regex.*tokenizer/)
  } finally {
    llm.shutdown()
  }
})

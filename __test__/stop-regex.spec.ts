// stopRegex (SGLang's stop_regex): the request ends at the first token after which the text matches, the
// text ends where the leftmost match starts (noStopTrim: where it ends), and streams never show what the
// end trims. The expectations come from a greedy reference run without stops, on the real model.
import test, { type ExecutionContext } from 'ava'
import { RadixLMError, type GenerateOutput, type StreamChunk } from '../index'
import { useEngine } from './helpers'

const engine = useEngine(test)

const PROMPT = 'Once upon a time'
const GREEDY = { temperature: 0, maxNewTokens: 32 }

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

let ref: GenerateOutput
/** A pattern matching inside the reference text, and what a run stopped by it must return. */
let want: { pattern: string; start: number; end: number; tokens: number }

test.before(() => {
  const llm = engine()
  ref = llm.generateSync(PROMPT, GREEDY)
  const pieces = ref.outputIds.map((id) => llm.detokenize([id]))
  if (pieces.join('') !== ref.text) throw new Error(`reference does not decode token by token: ${JSON.stringify(pieces)}`)
  // A whole-word token from the middle, followed by a token that starts with whitespace, occurring nowhere
  // earlier: `\bword\s` then matches exactly once the next token is out.
  for (let k = Math.floor(pieces.length / 3); k < pieces.length - 2; k++) {
    const word = pieces[k].slice(1)
    if (!/^ [A-Za-z]{3,}$/.test(pieces[k]) || !/^\s/.test(pieces[k + 1])) continue
    const pattern = `\\b${escapeRegex(word)}\\s`
    const m = new RegExp(pattern).exec(ref.text)
    const start = pieces.slice(0, k).join('').length + 1
    if (!m || m.index !== start) continue
    // The oracle: the fewest reference tokens whose text matches.
    const tokens = ref.outputIds.findIndex((_, i) => new RegExp(pattern).test(llm.detokenize(ref.outputIds.slice(0, i + 1)))) + 1
    if (tokens !== k + 2) throw new Error(`${pattern} first matches after ${tokens} tokens, expected ${k + 2}`)
    want = { pattern, start, end: start + m[0].length, tokens }
    return
  }
  throw new Error(`no usable word in the reference ${JSON.stringify(pieces)}`)
})

function stoppedAtMatch(t: ExecutionContext, o: GenerateOutput, pattern = want.pattern) {
  t.deepEqual(o.metaInfo.finishReason, { type: 'stop', matched: pattern })
  t.deepEqual(o.outputIds, ref.outputIds.slice(0, want.tokens), 'the reference ids through the token that completes the match')
  t.is(o.metaInfo.completionTokens, want.tokens)
}

test('reference is long enough and the pattern matches inside it', (t) => {
  t.is(ref.outputIds.length, 32)
  t.true(want.tokens < 32)
  t.log(`${want.pattern} in ${JSON.stringify(ref.text)}`)
})

test('stopRegex: ends at the token completing the match; text cut where the match starts', (t) => {
  const o = engine().generateSync(PROMPT, { ...GREEDY, stopRegex: want.pattern })
  stoppedAtMatch(t, o)
  t.is(o.text, ref.text.slice(0, want.start))
})

test('stopRegex with noStopTrim keeps the text through the end of the match', (t) => {
  const o = engine().generateSync(PROMPT, { ...GREEDY, stopRegex: [want.pattern], noStopTrim: true })
  stoppedAtMatch(t, o)
  t.is(o.text, ref.text.slice(0, want.end))
})

test('stopRegex: among several patterns, the one that matched is reported', async (t) => {
  const o = await engine().generate(PROMPT, { ...GREEDY, stopRegex: ['@@never\\d@@', want.pattern, 'zq{3,}'] })
  stoppedAtMatch(t, o)
  t.is(o.text, ref.text.slice(0, want.start))
})

test('stop_regex (snake_case) works like stopRegex', (t) => {
  const o = engine().generateSync(PROMPT, { temperature: 0, max_new_tokens: 32, stop_regex: want.pattern, no_stop_trim: true })
  stoppedAtMatch(t, o)
  t.is(o.text, ref.text.slice(0, want.end))
})

test('stopRegex streams: deltas add up to the final text, which equals the non-stream result', async (t) => {
  const llm = engine()
  const sp = { ...GREEDY, stopRegex: want.pattern }
  const whole = llm.generateSync(PROMPT, sp)
  const check = (chunks: StreamChunk[]) => {
    const last = chunks[chunks.length - 1]
    let text = ''
    for (const c of chunks) {
      text += c.delta
      t.is(c.text, text, 'cumulative text is the deltas so far')
      t.true(whole.text.startsWith(c.text), `chunk text ${JSON.stringify(c.text)} is not a prefix of the final text`)
    }
    t.is(last.text, whole.text)
    t.deepEqual(last.metaInfo.finishReason, { type: 'stop', matched: want.pattern })
    t.deepEqual(chunks.flatMap((c) => c.outputIds), whole.outputIds)
  }
  check([...llm.generateStreamSync(PROMPT, sp)])
  const chunks: StreamChunk[] = []
  for await (const c of llm.generateStream(PROMPT, sp)) chunks.push(c)
  check(chunks)
})

test('a stopRegex that never matches changes nothing and holds back only what could start a match', (t) => {
  const llm = engine()
  const sp = { ...GREEDY, stopRegex: ['@@\\d+@@'] }
  t.deepEqual(llm.generateSync(PROMPT, sp).outputIds, ref.outputIds)
  const chunks = [...llm.generateStreamSync(PROMPT, sp)]
  t.is(chunks[chunks.length - 1].text, ref.text)
  // No '@' in the text: every chunk shows all the text so far.
  t.false(ref.text.includes('@'))
  for (const [i, c] of chunks.entries()) t.is(c.text, llm.detokenize(ref.outputIds.slice(0, i + 1)), `chunk ${i}`)
})

test('an invalid stopRegex is rejected up front, naming the key and the syntax', (t) => {
  const llm = engine()
  const reject = (stopRegex: unknown, mentions: RegExp) => {
    const e = t.throws(() => llm.generateSync(PROMPT, { ...GREEDY, stopRegex } as never), { instanceOf: RadixLMError })
    t.is((e as RadixLMError).code, 'ERR_INVALID_SAMPLING_PARAMS')
    t.regex(e!.message, /samplingParams\.stopRegex/)
    t.regex(e!.message, mentions)
  }
  reject('(ab', /Rust regex syntax/)
  reject(['ok', '(?<=a)b'], /look-around/)
  reject('(a)\\1', /backreferences/)
  reject('x*', /empty string/)
  reject(7, /string or an array of strings/)
  t.is(llm.generateSync(PROMPT, GREEDY).text, ref.text, 'the engine still serves')
})

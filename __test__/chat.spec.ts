// Chat templates: applyChatTemplate renders exactly what transformers' apply_chat_template renders
// (goldens from scripts/make_chat_goldens.py), and chat / chatSync / chatStream generate from those ids.
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import test from 'ava'
import { Engine, type ChatMessage, type Conversation, type GenerateOutput } from '../index'
import { idle, isRadixError, REPO_ROOT, useEngine, waitFor } from './helpers'

interface GoldenCase {
  name: string
  template: 'smollm2' | 'qwen2' | 'features'
  request: { messages: Conversation; tools?: object[]; documents?: object[]; chatTemplateKwargs?: Record<string, unknown>; addGenerationPrompt?: boolean }
  text?: string
  ids?: number[]
  error?: string
  errorType?: string
}

const GOLDENS = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, '__test__', 'goldens', 'chat-templates.json'), 'utf8')) as { cases: GoldenCase[] }
const cases = (template: string) => GOLDENS.cases.filter((c) => c.template === template)
const QWEN_DIR = path.join(REPO_ROOT, '__test__', 'fixtures', 'tiny-qwen2')

const engine = useEngine(test) // SmolLM2-135M-Instruct (GGUF: template and tokenizer from its metadata)
let qwen: Engine | undefined
test.before(() => {
  qwen = new Engine({ modelPath: QWEN_DIR })
})
test.after.always(() => qwen?.shutdown())

const greedy = { temperature: 0, maxNewTokens: 16 }
const convo: Conversation = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'What is the capital of France?' },
]

function optionsOf(c: GoldenCase) {
  const { messages: _messages, ...options } = c.request
  return options
}

for (const [template, llm] of [
  ['smollm2', () => engine()],
  ['qwen2', () => qwen!],
] as const) {
  test(`applyChatTemplate renders the ${template} goldens byte for byte, and tokenize:true gives transformers' ids`, (t) => {
    let checked = 0
    for (const c of cases(template)) {
      if (c.text === undefined) continue
      t.is(llm().applyChatTemplate(c.request.messages, optionsOf(c)), c.text, c.name)
      t.deepEqual(llm().applyChatTemplate(c.request.messages, { ...optionsOf(c), tokenize: true }), c.ids, c.name)
      checked++
    }
    t.true(checked >= 5, `only ${checked} ${template} cases`)
  })
}

test('a template error (SmolLM2 with a message lacking content) is ERR_CHAT_TEMPLATE, as transformers raises', (t) => {
  const c = GOLDENS.cases.find((x) => x.name === 'smollm2/error_missing_content')!
  t.is(c.errorType, 'UndefinedError')
  const e = t.throws(() => engine().applyChatTemplate(c.request.messages))
  t.true(isRadixError(e, 'ERR_CHAT_TEMPLATE'), String(e))
})

test('a batch of conversations renders to an array in order', (t) => {
  const [a, b] = cases('smollm2').filter((c) => c.text !== undefined && c.request.addGenerationPrompt === undefined && !c.request.tools)
  t.deepEqual(engine().applyChatTemplate([a.request.messages, b.request.messages]), [a.text, b.text])
  t.deepEqual(engine().applyChatTemplate([a.request.messages, b.request.messages], { tokenize: true }), [a.ids, b.ids])
})

test('snake_case option keys are accepted', (t) => {
  const c = GOLDENS.cases.find((x) => x.name === 'qwen2/multi_turn_no_generation_prompt')!
  t.is<string | undefined, string | undefined>(qwen!.applyChatTemplate(c.request.messages, { add_generation_prompt: false }), c.text)
  const withTools = GOLDENS.cases.find((x) => x.name === 'qwen2/tools')!
  t.is<string | undefined, string | undefined>(qwen!.applyChatTemplate(withTools.request.messages, { tools: withTools.request.tools, chat_template_kwargs: { unused: 1 } }), withTools.text)
  const e = t.throws(() => qwen!.applyChatTemplate(c.request.messages, { addGenerationPrompt: false, add_generation_prompt: false } as any))
  t.true(isRadixError(e, 'ERR_INVALID_INPUT') && /given twice/.test(e.message), String(e))
})

test('chat() with greedy sampling equals generate() on the rendered ids', async (t) => {
  const ids = engine().applyChatTemplate(convo, { tokenize: true })
  const expected = (await engine().generate({ inputIds: ids }, greedy)) as GenerateOutput
  const out = await engine().chat(convo, greedy)
  t.true(out.text.length > 0)
  t.is(out.text, expected.text)
  t.deepEqual(out.outputIds, expected.outputIds)
  t.is(out.metaInfo.promptTokens, ids.length)
  // The same through the blocking call, and with SGLang's snake_case sampling params.
  const sync = engine().chatSync(convo, { temperature: 0, max_new_tokens: 16 })
  t.is(sync.text, expected.text)
})

test('chatStream chunks merge to the chat() text; chatStreamSync too', async (t) => {
  const whole = await engine().chat(convo, greedy)
  let merged = ''
  let last: any
  for await (const c of engine().chatStream(convo, greedy)) {
    merged += c.delta
    last = c
  }
  t.is(merged, whole.text)
  t.is(last.text, whole.text)
  t.deepEqual(last.metaInfo.finishReason, whole.metaInfo.finishReason)
  let mergedSync = ''
  for (const c of engine().chatStreamSync(convo, greedy)) mergedSync += c.delta
  t.is(mergedSync, whole.text)
})

test('chat() over an array of conversations returns one output per conversation, in order', async (t) => {
  const convs: Conversation[] = [
    [{ role: 'user', content: 'Name a fruit.' }],
    convo,
    [{ role: 'user', content: 'Say hello in French.' }],
  ]
  const singles: GenerateOutput[] = []
  for (const c of convs) singles.push(await engine().chat(c, greedy))
  const outs = await engine().chat(convs, greedy)
  t.true(Array.isArray(outs))
  t.is(outs.length, 3)
  outs.forEach((o, i) => t.is(o.text, singles[i].text, `conversation ${i}`))
  // One sampling-params object per conversation works as for generate().
  const perConv = await engine().chat(convs, [greedy, { ...greedy, maxNewTokens: 2 }, greedy])
  t.is(perConv[1].outputIds.length, 2)
  t.is(perConv[0].text, singles[0].text)
})

test('chat() passes tools and chat_template_kwargs to the template, and generate options through', async (t) => {
  // (tiny-qwen2's context is 512 tokens: the case with one tool fits.)
  const c = GOLDENS.cases.find((x) => x.name === 'qwen2/tools_with_system')!
  const ids = qwen!.applyChatTemplate(c.request.messages, { tools: c.request.tools, tokenize: true })
  t.deepEqual(ids, c.ids)
  const sp = { temperature: 0, maxNewTokens: 4, ignoreEos: true }
  const direct = (await qwen!.generate({ inputIds: ids }, sp)) as GenerateOutput
  const out = await qwen!.chat(c.request.messages, sp, { tools: c.request.tools, chat_template_kwargs: { x: 1 }, rid: 'chat-rid-1' })
  t.deepEqual(out.outputIds, direct.outputIds)
  t.is(out.metaInfo.id, 'chat-rid-1')
  t.is(out.metaInfo.promptTokens, c.ids!.length)
  // An AbortSignal works as for generate().
  const ac = new AbortController()
  ac.abort()
  await t.throwsAsync(qwen!.chat(c.request.messages, sp, { signal: ac.signal }), { code: 'ERR_ABORTED' } as any)
  t.true(await waitFor(() => idle(qwen!), 2000))
})

test('bad messages and options are ERR_INVALID_INPUT (chat rejects, applyChatTemplate / chatSync throw)', async (t) => {
  const llm = engine()
  const bad: [unknown, RegExp][] = [
    ['hello', /messages must be an array/],
    [{ role: 'user', content: 'x' }, /messages must be an array/],
    [['hello'], /messages\[0\] must be a message object/],
    [[{ role: 'user', content: 'x' }, null], /messages\[1\] must be a message object/],
    [[[{ role: 'user', content: 'x' }], [42]], /messages\[1\]\[0\] must be a message object/],
    [[[{ role: 'user', content: 'x' }], { role: 'user', content: 'y' }], /mixes message objects and conversations/],
    [[], /conversation is empty/],
  ]
  for (const [messages, re] of bad) {
    const e1 = t.throws(() => llm.applyChatTemplate(messages as any))
    t.true(isRadixError(e1, 'ERR_INVALID_INPUT') && re.test(e1.message), `applyChatTemplate(${JSON.stringify(messages)}): ${e1}`)
    const e2 = t.throws(() => llm.chatSync(messages as any))
    t.true(isRadixError(e2, 'ERR_INVALID_INPUT'), `chatSync: ${e2}`)
    const e3 = await t.throwsAsync(llm.chat(messages as any))
    t.true(isRadixError(e3, 'ERR_INVALID_INPUT') && re.test(e3.message), `chat: ${e3}`)
  }
  const msgs: ChatMessage[] = [{ role: 'user', content: 'x' }]
  const opt = (o: object, re: RegExp) => {
    const e = t.throws(() => llm.applyChatTemplate(msgs, o as any))
    t.true(isRadixError(e, 'ERR_INVALID_INPUT') && re.test(e.message), `${JSON.stringify(o)}: ${e}`)
  }
  opt({ tools: 'x' }, /options\.tools/)
  opt({ chatTemplateKwargs: [] }, /options\.chatTemplateKwargs/)
  opt({ chatTemplateKwargs: { messages: [] } }, /cannot be overridden/)
  opt({ bogus: 1 }, /options\.bogus: unknown option/)
  opt({ tokenize: 'yes' }, /options\.tokenize/)
  const e = await t.throwsAsync(llm.chat(msgs, greedy, { addGenerationPrompt: false } as any))
  t.true(isRadixError(e, 'ERR_INVALID_INPUT') && /options\.addGenerationPrompt: unknown option/.test(e.message), String(e))
  const big = t.throws(() => llm.applyChatTemplate([{ role: 'user', content: 'x', n: 1n } as any]))
  t.true(isRadixError(big, 'ERR_INVALID_INPUT') && /JSON/.test(big.message), String(big))
})

test('a model without a chat template: ERR_CHAT_TEMPLATE; a skipTokenizerInit engine: ERR_INVALID_INPUT', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-notemplate-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json']) {
    fs.symlinkSync(path.join(QWEN_DIR, f), path.join(dir, f))
  }
  const cfg = JSON.parse(fs.readFileSync(path.join(QWEN_DIR, 'tokenizer_config.json'), 'utf8'))
  delete cfg.chat_template
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg))
  const msgs: Conversation = [{ role: 'user', content: 'hi' }]

  const plain = new Engine({ modelPath: dir })
  try {
    const e = t.throws(() => plain.applyChatTemplate(msgs))
    t.true(isRadixError(e, 'ERR_CHAT_TEMPLATE') && /no chat template/.test(e.message), String(e))
    const e2 = await t.throwsAsync(plain.chat(msgs))
    t.true(isRadixError(e2, 'ERR_CHAT_TEMPLATE'), String(e2))
    t.true(plain.generateSync('hi', { maxNewTokens: 2 }).outputIds.length > 0, 'the model still generates')
  } finally {
    plain.shutdown()
  }

  const raw = new Engine({ modelPath: QWEN_DIR, skipTokenizerInit: true })
  try {
    const e = t.throws(() => raw.applyChatTemplate(msgs))
    t.true(isRadixError(e, 'ERR_INVALID_INPUT') && /tokenizer/.test(e.message), String(e))
    const e2 = await t.throwsAsync(raw.chat(msgs))
    t.true(isRadixError(e2, 'ERR_INVALID_INPUT'), String(e2))
  } finally {
    raw.shutdown()
  }

  const closed = new Engine({ modelPath: QWEN_DIR })
  closed.shutdown()
  const e3 = t.throws(() => closed.applyChatTemplate(msgs))
  t.true(isRadixError(e3, 'ERR_ENGINE_SHUTDOWN'), String(e3))
})

// Chat: the model's own chat template (from the GGUF / tokenizer_config.json), rendered like transformers'
// apply_chat_template, then generation from its token ids. A batch of conversations, then one streamed.
//   node examples/offline-chat.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 64).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 64)

const llm = await Engine.create({ modelPath })

const system = { role: 'system', content: 'You are a helpful assistant. Answer in one or two sentences.' }
const conversations = [
  [system, { role: 'user', content: 'What is the capital of France?' }],
  [system, { role: 'user', content: 'Give me a name for a friendly robot.' }],
  [
    system,
    { role: 'user', content: 'Name a primary color.' },
    { role: 'assistant', content: 'Red.' },
    { role: 'user', content: 'And another one?' },
  ],
]
const samplingParams = { temperature: 0, maxNewTokens }

console.log('=== The rendered chat template (first conversation) ===')
console.log(llm.applyChatTemplate(conversations[0]))

console.log('\n=== Chat, a batch of conversations ===')
const outputs = await llm.chat(conversations, samplingParams)
conversations.forEach((messages, i) => {
  console.log(`\nPrompt: ${messages.at(-1).content}`)
  console.log(`Generated text: ${outputs[i].text}`)
})

console.log('\n=== Chat, streaming ===')
const messages = [system, { role: 'user', content: 'Tell me a fun fact about octopuses.' }]
console.log(`\nPrompt: ${messages.at(-1).content}`)
process.stdout.write('Generated text: ')
for await (const chunk of llm.chatStream(messages, samplingParams)) process.stdout.write(chunk.delta)
console.log()

llm.shutdown()

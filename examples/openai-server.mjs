// The OpenAI-compatible server, started from code (what `radixlm serve` runs), and called with plain
// fetch: a chat completion, then the same request streamed as Server-Sent Events. Any OpenAI client works
// too: new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused' }).
//   node examples/openai-server.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 64).
import os from 'node:os'
import path from 'node:path'
import server_ from '../dist/server.js'

const { serve } = server_
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 64)

// Engine options go here too; port 0 picks a free port (the default is 30000, as SGLang's).
const server = await serve({ modelPath, port: 0, modelName: 'smollm2' })
console.log(`serving on ${server.url}`)

const post = (route, body) =>
  fetch(`${server.url}/v1${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
const messages = [{ role: 'user', content: 'What is the capital of France?' }]

try {
  const res = await post('/chat/completions', { model: 'smollm2', messages, max_tokens: maxTokens, temperature: 0 })
  const body = await res.json()
  console.log(`\nPrompt: ${messages[0].content}\nGenerated text: ${body.choices[0].message.content}`)
  console.log(`[finish_reason ${body.choices[0].finish_reason}, usage ${JSON.stringify(body.usage)}]`)

  // stream: true gives `data: {chunk}` lines, then `data: [DONE]`.
  const stream = await post('/chat/completions', { model: 'smollm2', messages, max_tokens: maxTokens, temperature: 0, stream: true })
  process.stdout.write(`\nPrompt: ${messages[0].content}\nGenerated text: `)
  let buffered = ''
  for await (const bytes of stream.body) {
    buffered += Buffer.from(bytes).toString('utf8')
    const lines = buffered.split('\n')
    buffered = lines.pop()
    for (const line of lines) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue
      process.stdout.write(JSON.parse(line.slice(6)).choices[0]?.delta?.content ?? '')
    }
  }
  console.log()
} finally {
  await server.close() // stops listening, ends in-flight requests, shuts the engine down
}

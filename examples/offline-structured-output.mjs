// Structured output: a JSON Schema, a regular expression and a grammar (SGLang's json_schema / regex / ebnf).
// Tokens the constraint cannot take next are masked out before sampling, so the output is valid at any
// temperature, and the request stops as soon as the constraint is complete.
//   node examples/offline-structured-output.mjs
// Env: RADIXLM_MODEL, RADIXLM_MAX_NEW_TOKENS (default 128).
import os from 'node:os'
import path from 'node:path'
import radixlm from '../dist/index.js'

const { Engine } = radixlm
const modelPath = process.env.RADIXLM_MODEL || path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
const maxNewTokens = Number(process.env.RADIXLM_MAX_NEW_TOKENS || 128)

const llm = await Engine.create({ modelPath })

const person = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 20 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    city: { type: 'string', enum: ['Paris', 'Rome', 'Madrid', 'Berlin'] },
  },
  required: ['name', 'age', 'city'],
  additionalProperties: false,
}

const requests = [
  // A schema object (SGLang takes JSON text: JSON.stringify(person) works too).
  ['Invent a person and describe them as JSON:', { jsonSchema: person }],
  ['Today, as an ISO date:', { regex: '\\d{4}-\\d{2}-\\d{2}' }],
  // GBNF, as SGLang (xgrammar) takes it; llguidance's Lark syntax (`start: ...`) works as well.
  ['The capital of Italy is', { ebnf: 'root ::= city "."\ncity ::= "Paris" | "Rome" | "Madrid"' }],
]

const outputs = await llm.generate(
  requests.map(([prompt]) => prompt),
  requests.map(([, constraint]) => ({ ...constraint, temperature: 0.7, seed: 1, maxNewTokens })),
)
requests.forEach(([prompt, constraint], i) => {
  const out = outputs[i]
  console.log('===============================')
  console.log(`Prompt: ${prompt}\nGenerated text: ${out.text}`)
  console.log(`[${Object.keys(constraint)[0]}; finish: ${JSON.stringify(out.metaInfo.finishReason)}]`)
  // A request cut short by maxNewTokens ends with finishReason 'length' and an incomplete value.
  if ('jsonSchema' in constraint && out.metaInfo.finishReason.type === 'stop') console.log('parsed:', JSON.parse(out.text))
})

llm.shutdown()

// A Llama 3-style model as users get it, through the public API: a checkpoint saved by transformers 5
// (RoPE under `rope_parameters`) and the same weights as a GGUF laid out by llama.cpp's converter (Llama 3
// scaling only as the rope_freqs tensor, tokenizer supplied by `tokenizerPath`). Text prompts, greedy,
// against the transformers goldens of scripts/make_tiny_llama3.py. Both loaders once ignored the scaling.
import test from 'ava'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Engine, type GenerateOutput, type LogprobTriple } from '../index'
import { REPO_ROOT } from './helpers'

interface GoldenPrompt {
  name: string
  text: string
  inputIds: number[]
  greedyIds: number[]
  top5: [number, number][][]
}
const GOLDEN = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, '__test__', 'goldens', 'tiny-llama3.json'), 'utf8')) as {
  prompts: GoldenPrompt[]
}
const DIR = path.join(REPO_ROOT, '__test__', 'fixtures', 'tiny-llama3')
// f32 against transformers' float64 (tests/parity.rs uses the same bounds).
const TOL = 1e-3
const NEAR_TIE = 2e-3

const sources = {
  'transformers 5 checkpoint': { modelPath: DIR },
  'llama.cpp-style GGUF + tokenizerPath': { modelPath: `${DIR}.gguf`, tokenizerPath: DIR },
}

for (const [label, src] of Object.entries(sources)) {
  test(`${label}: greedy text generation matches transformers`, (t) => {
    const llm = new Engine({ ...src, dtype: 'float32' })
    try {
      for (const g of GOLDEN.prompts) {
        const out = llm.generateSync(
          g.text,
          { temperature: 0, maxNewTokens: g.greedyIds.length, ignoreEos: true },
          { returnLogprob: true, topLogprobsNum: 5 },
        ) as GenerateOutput
        t.is(out.metaInfo.promptTokens, g.inputIds.length, `${g.name}: prompt tokens`)
        const lps = out.metaInfo.outputTokenLogprobs as LogprobTriple[]
        for (let k = 0; k < g.greedyIds.length; k++) {
          const [top1, top2] = g.top5[k]
          if (out.outputIds[k] !== g.greedyIds[k]) {
            // Only a near tie in the reference may part the two; after it the sequences differ.
            t.true(top1[1] - top2[1] < NEAR_TIE, `${g.name}: token ${k} is ${out.outputIds[k]}, golden ${g.greedyIds[k]}`)
            break
          }
          t.true(Math.abs(lps[k][0]! - top1[1]) <= TOL, `${g.name}: token ${k} logprob ${lps[k][0]} vs ${top1[1]}`)
        }
      }
    } finally {
      llm.shutdown()
    }
  })
}

test('an unsupported rope type in config.json is ERR_INVALID_MODEL, not ignored', (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-llama3-yarn-'))
  try {
    for (const f of fs.readdirSync(DIR)) fs.copyFileSync(path.join(DIR, f), path.join(tmp, f))
    const cfg = JSON.parse(fs.readFileSync(path.join(tmp, 'config.json'), 'utf8'))
    cfg.rope_scaling = { type: 'yarn', factor: 4.0, original_max_position_embeddings: 32 }
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(cfg))
    const err = t.throws(() => new Engine({ modelPath: tmp }))
    t.is((err as { code?: string }).code, 'ERR_INVALID_MODEL')
    t.regex(err!.message, /yarn/)
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
})

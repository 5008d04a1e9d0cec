// Logprobs and hidden states on the default model: values against the transformers goldens
// (scripts/make_goldens.py: float64 log_softmax of float32 logits), array shapes and positions as SGLang's,
// the temperature relation, the prefix cache never hiding requested prompt positions, and bad options.
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'
import { Engine, type GenerateOutput, type LogprobTriple } from '../index'
import { isRadixError, modelPath, REPO_ROOT, useEngine } from './helpers'

interface GoldenPrompt {
  name: string
  kind: string
  text?: string
  inputIds: number[]
  greedyIds: number[]
  top5: [number, number][][]
  promptTop5: [number, number][][]
}
const GOLDEN = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, '__test__', 'goldens', 'smollm2-135m-instruct.json'), 'utf8')) as {
  prompts: GoldenPrompt[]
}
// The parity bound of tests/parity.rs for the quantized default mode (kernels keep f32 activations).
const TOL = 1e-3

const engine = useEngine(test, { enableReturnHiddenStates: true })

const lpOf = (list: LogprobTriple[], id: number) => list.find((x) => x[1] === id)?.[0]

for (const g of GOLDEN.prompts.slice(0, 4)) {
  test(`${g.name}: output and prompt logprobs match transformers`, (t) => {
    const llm = engine()
    const out = llm.generateSync(
      { inputIds: g.inputIds },
      { temperature: 0, maxNewTokens: g.greedyIds.length, ignoreEos: true },
      { returnLogprob: true, topLogprobsNum: 5, logprobStartLen: 0 },
    ) as GenerateOutput
    const m = out.metaInfo
    t.deepEqual(out.outputIds, g.greedyIds)
    t.is(m.outputTokenLogprobs!.length, g.greedyIds.length)
    t.is(m.outputTopLogprobs!.length, g.greedyIds.length)
    g.greedyIds.forEach((id, i) => {
      const [lp, tok, text] = m.outputTokenLogprobs![i]
      t.is(tok, id)
      t.is(text, null)
      // Greedy: the chosen token is the top-1 alternative.
      t.is(m.outputTopLogprobs![i][0][1], id)
      t.true(Math.abs(lp! - g.top5[i][0][1]) <= TOL, `position ${i}: ${lp} vs ${g.top5[i][0][1]}`)
      for (const [gid, glp] of g.top5[i]) {
        const ours = lpOf(m.outputTopLogprobs![i], gid)
        if (ours !== undefined) t.true(Math.abs(ours! - glp) <= TOL, `position ${i} id ${gid}`)
      }
      const lps = m.outputTopLogprobs![i].map((x) => x[0]!)
      t.deepEqual(lps, [...lps].sort((a, b) => b - a), 'top list most likely first')
    })
    // Prompt: one triple per prompt token, the first with a null logprob.
    const input = m.inputTokenLogprobs!
    t.is(input.length, g.inputIds.length)
    t.deepEqual(input[0], [null, g.inputIds[0], null])
    t.is(m.inputTopLogprobs![0], null)
    for (let p = 1; p < g.inputIds.length; p++) {
      t.is(input[p][1], g.inputIds[p])
      const gl = g.promptTop5[p - 1]
      const golden = gl.find(([id]) => id === g.inputIds[p])
      if (golden) t.true(Math.abs(input[p][0]! - golden[1]) <= TOL, `prompt position ${p}`)
      t.true(Math.abs(m.inputTopLogprobs![p]![0][0]! - gl[0][1]) <= TOL)
      t.is(m.inputTopLogprobs![p]![0][1], gl[0][0])
    }
  })
}

test('logprobStartLen k gives prompt positions k.. and the same values', (t) => {
  const llm = engine()
  const g = GOLDEN.prompts[0]
  const params = { temperature: 0, maxNewTokens: 3 }
  const full = llm.generateSync({ inputIds: g.inputIds }, params, { returnLogprob: true, logprobStartLen: 0 }) as GenerateOutput
  const k = 2
  const part = llm.generateSync({ inputIds: g.inputIds }, params, { return_logprob: true, logprob_start_len: k }) as GenerateOutput
  t.is(part.metaInfo.inputTokenLogprobs!.length, g.inputIds.length - k)
  part.metaInfo.inputTokenLogprobs!.forEach((x, i) => {
    t.is(x[1], g.inputIds[k + i])
    t.true(Math.abs(x[0]! - full.metaInfo.inputTokenLogprobs![k + i][0]!) < 1e-4)
  })
  // Default (-1): output positions only.
  const outOnly = llm.generateSync({ inputIds: g.inputIds }, params, { returnLogprob: true }) as GenerateOutput
  t.deepEqual(outOnly.metaInfo.inputTokenLogprobs, [])
  t.is(outOnly.metaInfo.outputTokenLogprobs!.length, 3)
  // Without returnLogprob there are no logprob fields at all.
  const plain = llm.generateSync({ inputIds: g.inputIds }, params) as GenerateOutput
  t.false('outputTokenLogprobs' in plain.metaInfo)
})

test('the prefix cache never hides prompt positions whose logprobs are asked for', (t) => {
  const llm = engine()
  const ids = Array.from({ length: 60 }, (_, i) => 300 + i)
  const params = { temperature: 0, maxNewTokens: 2 }
  const first = llm.generateSync({ inputIds: ids }, params, { returnLogprob: true, logprobStartLen: 0 }) as GenerateOutput
  const cachedRun = llm.generateSync({ inputIds: ids }, params) as GenerateOutput
  t.true(cachedRun.metaInfo.cachedTokens >= 48, `cache unused: ${cachedRun.metaInfo.cachedTokens}`)
  const again = llm.generateSync({ inputIds: ids }, params, { returnLogprob: true, logprobStartLen: 40 }) as GenerateOutput
  // Token 40 is predicted at position 39, so at most 39 tokens (2 whole pages of 16) may come from the cache.
  t.true(again.metaInfo.cachedTokens <= 39, `cached ${again.metaInfo.cachedTokens}`)
  t.is(again.metaInfo.inputTokenLogprobs!.length, 20)
  again.metaInfo.inputTokenLogprobs!.forEach((x, i) => {
    t.true(Math.abs(x[0]! - first.metaInfo.inputTokenLogprobs![40 + i][0]!) < 1e-4, `position ${40 + i}`)
  })
})

test('tokenIdsLogprob and returnTextInLogprobs', (t) => {
  const llm = engine()
  const g = GOLDEN.prompts[0]
  const ids = [g.greedyIds[0], 42, 0]
  const out = llm.generateSync(
    { inputIds: g.inputIds },
    { temperature: 0, maxNewTokens: 4 },
    { returnLogprob: true, topLogprobsNum: 2, tokenIdsLogprob: ids, returnTextInLogprobs: true, logprobStartLen: 1 },
  ) as GenerateOutput
  const m = out.metaInfo
  t.is(m.outputTokenIdsLogprobs!.length, 4)
  t.deepEqual(m.outputTokenIdsLogprobs![0].map((x) => x[1]), ids)
  t.is(m.outputTokenIdsLogprobs![0][0][0], m.outputTokenLogprobs![0][0])
  for (const list of [m.outputTokenLogprobs!, ...m.outputTopLogprobs!, ...m.outputTokenIdsLogprobs!]) {
    for (const [, id, text] of list) t.is(text, llm.detokenize([id], { skipSpecialTokens: false }))
  }
  t.is(m.inputTokenIdsLogprobs!.length, g.inputIds.length - 1)
})

test('sampled tokens: logprobs of the temperature-scaled distribution', (t) => {
  const llm = engine()
  const g = GOLDEN.prompts[1]
  const opts = { returnLogprob: true, topLogprobsNum: 4 }
  const greedy = llm.generateSync({ inputIds: g.inputIds }, { temperature: 0, maxNewTokens: 1 }, opts) as GenerateOutput
  const temp = 0.7
  const hot = llm.generateSync({ inputIds: g.inputIds }, { temperature: temp, maxNewTokens: 1, seed: 3 }, opts) as GenerateOutput
  const a = greedy.metaInfo.outputTopLogprobs![0]
  const b = hot.metaInfo.outputTopLogprobs![0]
  t.deepEqual(a.map((x) => x[1]), b.map((x) => x[1]))
  // Same logits, divided by T: differences between tokens scale by 1/T.
  for (let i = 1; i < a.length; i++) {
    const want = (a[i][0]! - a[0][0]!) / temp
    t.true(Math.abs(b[i][0]! - b[0][0]! - want) < 1e-4, `${b[i][0]! - b[0][0]!} vs ${want}`)
  }
  const sampled = hot.metaInfo.outputTokenLogprobs![0]
  const inTop = lpOf(b, sampled[1])
  if (inTop !== undefined && inTop !== null) t.true(Math.abs(inTop - sampled[0]!) < 1e-6)
  // Logit bias is part of the distribution the token is drawn from.
  const biased = llm.generateSync(
    { inputIds: g.inputIds },
    { temperature: 0, maxNewTokens: 1, logitBias: { [String(a[1][1])]: 100 } },
    opts,
  ) as GenerateOutput
  t.is(biased.outputIds[0], a[1][1])
  t.true(biased.metaInfo.outputTokenLogprobs![0][0]! > -1e-3)
})

test('hidden states: one row per position fed, independent of chunking and of what follows', (t) => {
  const llm = engine()
  const g = GOLDEN.prompts[0]
  const out = llm.generateSync({ inputIds: g.inputIds }, { temperature: 0, maxNewTokens: 5 }, { returnHiddenStates: true }) as GenerateOutput
  const hs = out.hiddenStates!
  t.is(hs.length, g.inputIds.length + 5 - 1)
  t.true(hs.every((h) => h instanceof Float32Array && h.length === 576 && h.every(Number.isFinite)))
  // Causality: the prompt ++ first answer token as a prompt reproduces the same rows.
  const longer = llm.generateSync(
    { inputIds: [...g.inputIds, out.outputIds[0]] },
    { temperature: 0, maxNewTokens: 1 },
    { returnHiddenStates: true },
  ) as GenerateOutput
  for (let p = 0; p <= g.inputIds.length; p++) {
    const d = Math.max(...hs[p].map((x, j) => Math.abs(x - longer.hiddenStates![p][j])))
    t.true(d < 1e-3, `position ${p}: max |diff| ${d}`)
  }
  // Engines without enableReturnHiddenStates refuse the request.
  const plain = new Engine({ modelPath: modelPath(), maxTotalTokens: 4096 })
  try {
    const e = t.throws(() => plain.generateSync('hi', { maxNewTokens: 1 }, { returnHiddenStates: true }))
    t.true(isRadixError(e, 'ERR_INVALID_INPUT'), String(e))
  } finally {
    plain.shutdown()
  }
})

test('bad logprob options are rejected and the engine keeps serving', (t) => {
  const llm = engine()
  for (const bad of [
    { topLogprobsNum: -1 },
    { logprobStartLen: -2 },
    { logprobStartLen: 1.5 },
    { tokenIdsLogprob: [49152] },
    { tokenIdsLogprob: 'x' },
    { returnLogprob: 'yes' },
    { topLogprobsNum: Number.NaN },
    { bogus: true },
  ]) {
    const e = t.throws(() => llm.generateSync('hi', { maxNewTokens: 1 }, bad as any), undefined, JSON.stringify(bad))
    t.true(isRadixError(e, 'ERR_INVALID_INPUT'), `${JSON.stringify(bad)}: ${String(e)}`)
  }
  t.is((llm.generateSync('hi', { maxNewTokens: 2, ignoreEos: true }) as GenerateOutput).outputIds.length, 2)
})

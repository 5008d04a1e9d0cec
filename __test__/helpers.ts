// Shared test helpers: where the model lives, and one Engine per spec file.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import type { TestFn } from 'ava'
import { Engine, RadixLMError, type EngineOptions } from '../index'

export const DEFAULT_MODEL = path.join(process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm'), 'SmolLM2-135M-Instruct.Q4_1.gguf')
export const REPO_ROOT = path.join(__dirname, '..')

/** The model under test: $RADIXLM_MODEL or the default GGUF. Throws (the test fails, never skips) when missing. */
export function modelPath(): string {
  const p = process.env.RADIXLM_MODEL || DEFAULT_MODEL
  if (!fs.existsSync(p)) {
    throw new Error(
      `test model not found at ${p}: run \`npm run fetch-model\` to download it (or point RADIXLM_MODEL at a model file or directory)`,
    )
  }
  return p
}

/** SmolLM2's chat format, for prompts where the model answers briefly and ends with EOS. */
export function chatPrompt(user: string): string {
  return `<|im_start|>user\n${user}<|im_end|>\n<|im_start|>assistant\n`
}

/**
 * Registers test.before / test.after.always hooks that create one Engine for the file and shut it down.
 * Returns a getter: call it inside tests (the engine does not exist before the hook ran).
 */
export function useEngine(test: TestFn<any>, options: Partial<EngineOptions> = {}): () => Engine {
  let llm: Engine | undefined
  test.before(() => {
    llm = new Engine({ modelPath: modelPath(), ...options } as EngineOptions)
  })
  test.after.always(() => {
    llm?.shutdown()
  })
  return () => {
    if (!llm) throw new Error('the engine is not loaded (did test.before fail?)')
    return llm
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `f` until it returns true or `ms` pass; returns its last answer. */
export async function waitFor(f: () => boolean, ms: number, every = 10): Promise<boolean> {
  const end = Date.now() + ms
  for (;;) {
    if (f()) return true
    if (Date.now() >= end) return false
    await sleep(every)
  }
}

/** Whether the engine is idle: nothing running or waiting, no pages held by requests. */
export function idle(llm: Engine): boolean {
  const info = llm.getServerInfo()
  return info.running === 0 && info.waiting === 0 && info.pagesUsed === 0
}

/** Asserts `f` throws (or rejects with) a RadixLMError with `code`; returns it. */
export function isRadixError(e: unknown, code: string): e is RadixLMError {
  return e instanceof RadixLMError && e.code === code
}

/** Resolves with `p`'s value, or with 'timeout' after `ms`; never leaves a timer behind (that would keep the worker alive). */
export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

export interface ChildExit {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
  timedOut: boolean
}

/** Runs `node ...args` from the repo root with `env`; kills it (SIGKILL) if it is still running after `ms`. */
export function runNode(args: string[], env: NodeJS.ProcessEnv, ms: number): Promise<ChildExit> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now()
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, ms)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0, timedOut })
    })
  })
}

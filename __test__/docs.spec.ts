// The documentation stays true to the code: the API reference covers every export and is what
// `npm run docs` generates now, coming-from-sglang.md names every SGLang call and option of the reference,
// relative links resolve, and every example is linked and parses. No model needed.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import test from 'ava'

const ROOT = path.join(__dirname, '..')
const DOCS = path.join(ROOT, 'docs')
const API = path.join(DOCS, 'api')
// SGLang's offline-engine surface as the project records it (a copy kept with the docs, so the check runs everywhere).
const SGLANG_API = path.join(ROOT, 'docs', 'reference', 'sglang-api.md')

const read = (f: string) => fs.readFileSync(f, 'utf8')

/** Every file under `dir`, as paths relative to it, sorted. */
function walk(dir: string, rel = ''): string[] {
  return fs
    .readdirSync(path.join(dir, rel), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? walk(dir, path.join(rel, e.name)) : [path.join(rel, e.name)]))
    .sort()
}

const apiText = () => walk(API).filter((f) => f.endsWith('.md')).map((f) => read(path.join(API, f))).join('\n')
/** A heading for `name` in typedoc's output: `### Engine`, `##### generate()`, `##### \[asyncDispose\]()`. */
const hasHeading = (md: string, name: string) => {
  const escaped = name.replace(/[[\]]/g, (c) => `\\${c}`).replace(/[.*+?^${}()|\\]/g, (c) => `\\${c}`)
  return new RegExp(`^#{2,6} (?:\\\\?\\[)?${escaped}(?:\\\\?\\])?(?:\\(\\))?$`, 'm').test(md)
}

test('every runtime export of dist/index.js and dist/server.js, and every Engine method, has a heading in docs/api/', (t) => {
  const dist = path.join(ROOT, 'dist', 'index.js')
  if (!fs.existsSync(dist)) return t.fail('dist/index.js is missing: run `npm run build:ts`')
  const md = apiText()
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const index = require(dist)
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const server = require(path.join(ROOT, 'dist', 'server.js'))
  const exports = [...Object.keys(index), ...Object.keys(server)]
  t.true(exports.length >= 6, `exports: ${exports}`)
  for (const name of exports) t.true(hasHeading(md, name), `export ${name} has no heading in docs/api/`)

  const Engine = index.Engine
  const methods = [
    ...Object.getOwnPropertyNames(Engine.prototype).filter((m) => m !== 'constructor'),
    ...Object.getOwnPropertySymbols(Engine.prototype).map((s) => s.description!.replace(/^(Symbol|nodejs)\./, '')),
    ...Object.getOwnPropertyNames(Engine).filter((m) => typeof Engine[m] === 'function'),
  ]
  for (const m of ['generate', 'generateStream', 'chat', 'shutdown', 'create', 'asyncDispose']) t.true(methods.includes(m), m)
  for (const m of methods) t.true(hasHeading(md, m), `Engine.${m} has no heading in docs/api/`)
})

test('`npm run docs` output is up to date (docs/api/ is what scripts/api-docs.mjs generates now)', (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-api-docs-'))
  try {
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'api-docs.mjs'), tmp], { cwd: ROOT, stdio: 'pipe', timeout: 120_000 })
    const fresh = walk(tmp)
    const committed = walk(API)
    t.deepEqual(committed, fresh, 'docs/api/ has other files than a fresh generation: run `npm run docs`')
    for (const f of fresh) {
      if (!committed.includes(f)) continue
      t.true(read(path.join(API, f)) === read(path.join(tmp, f)), `docs/api/${f} is stale: run \`npm run docs\` and commit the result`)
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
})

/**
 * The SGLang names SGLANG-API.md lists: the calls and options of section 1, and the first column of every
 * table (snake_case, plus radixlm's camelCase name where the table gives one in parentheses).
 */
function sglangNames(ref: string): string[] {
  const names = new Set<string>()
  const fromCode = (code: string) => {
    const call = /^([A-Za-z_][\w.]*)\(/.exec(code)
    if (call) names.add(call[1])
    else if (/^[\w.*]+$/.test(code)) names.add(code)
  }
  const section1 = ref.slice(ref.indexOf('## 1.'), ref.indexOf('## 2.'))
  t_assert(section1.length > 0, 'SGLANG-API.md has no section 1')
  for (const m of section1.matchAll(/`([^`]+)`/g)) fromCode(m[1])
  for (const line of ref.split('\n')) {
    if (!line.startsWith('|') || /^\|[-\s|]+\|$/.test(line)) continue
    const first = line.split('|')[1]
    if (/^\s*(Field|SGLang)\b/.test(first)) continue // header rows
    for (const m of first.matchAll(/`([^`]+)`/g)) fromCode(m[1])
    for (const m of first.matchAll(/\(([a-z][A-Za-z]*)\)/g)) names.add(m[1])
  }
  return [...names]
}
function t_assert(ok: boolean, msg: string): asserts ok {
  if (!ok) throw new Error(msg)
}

test('coming-from-sglang.md names every SGLang call, option and sampling parameter of SGLANG-API.md', (t) => {
  const names = sglangNames(read(SGLANG_API))
  // A sample the parser must find, so that a change of the reference's layout cannot pass silently.
  for (const n of ['async_generate', 'flush_cache', 'mem_fraction_static', 'return_logprob', 'cache_salt', 'max_new_tokens', 'sampling_seed', 'maxNewTokens', 'logitBias']) {
    t.true(names.includes(n), `the parser did not find ${n} in SGLANG-API.md`)
  }
  const doc = read(path.join(DOCS, 'coming-from-sglang.md'))
  const missing = names.filter((n) => !doc.includes(n))
  t.deepEqual(missing, [], `coming-from-sglang.md does not mention: ${missing.join(', ')}`)
})

// --- Links ---

/** Markdown with fenced code blocks and inline code blanked out (links there are not links). */
const prose = (md: string) => md.replace(/^```[\s\S]*?^```/gm, '').replace(/`[^`\n]*`/g, '``')

/** GitHub's heading anchors (lower case, punctuation dropped, spaces to '-', repeats numbered) and explicit ids. */
function anchors(md: string): Set<string> {
  const out = new Set<string>()
  const seen = new Map<string, number>()
  for (const m of md.replace(/^```[\s\S]*?^```/gm, '').matchAll(/^#{1,6} (.+)$/gm)) {
    const text = m[1]
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1') // [text](url) -> text
      .replace(/\\(.)/g, '$1')
      .replace(/[`*_]/g, (c) => (c === '_' ? '_' : ''))
    const base = text
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.add(n === 0 ? base : `${base}-${n}`)
  }
  for (const m of md.matchAll(/<a (?:id|name)="([^"]+)"/g)) out.add(m[1])
  return out
}

const docFiles = () => walk(DOCS).filter((f) => f.endsWith('.md'))

test('every relative link in docs/ points to an existing file (and heading, for #anchors into Markdown)', (t) => {
  const files = docFiles()
  t.true(files.length >= 12, `docs pages: ${files}`)
  let checked = 0
  for (const f of files) {
    const file = path.join(DOCS, f)
    for (const m of prose(read(file)).matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = m[1]
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue // http:, https:, mailto:
      const [rel, anchor] = target.split('#')
      const dest = rel ? path.resolve(path.dirname(file), decodeURIComponent(rel)) : file
      checked++
      if (!fs.existsSync(dest)) {
        t.fail(`docs/${f}: link ${target} -> ${path.relative(ROOT, dest)} does not exist`)
        continue
      }
      if (anchor && dest.endsWith('.md') && !anchors(read(dest)).has(anchor)) {
        t.fail(`docs/${f}: link ${target}: ${path.relative(ROOT, dest)} has no heading #${anchor}`)
      }
    }
  }
  t.true(checked > 50, `only ${checked} links found`)
})

test('docs/README.md links every page, and the top README links docs/README.md', (t) => {
  const index = read(path.join(DOCS, 'README.md'))
  for (const f of docFiles()) {
    if (f === 'README.md' || f.startsWith(`api${path.sep}`)) continue
    t.true(index.includes(`](${f})`) || index.includes(`](${f}#`), `docs/README.md does not link ${f}`)
  }
  t.true(index.includes('](api/README.md)'), 'docs/README.md does not link the API reference')
  t.true(read(path.join(ROOT, 'README.md')).includes('](docs/README.md)'), 'README.md does not link docs/README.md')
})

test('every example is linked from docs/ and parses', (t) => {
  const allDocs = docFiles().map((f) => read(path.join(DOCS, f))).join('\n')
  const examples = fs.readdirSync(path.join(ROOT, 'examples')).filter((f) => !f.startsWith('.')).sort()
  t.true(examples.length >= 10, `examples: ${examples}`)
  for (const ex of examples) {
    t.true(allDocs.includes(`](../examples/${ex})`), `examples/${ex} is not linked from any page in docs/`)
    if (ex.endsWith('.mjs') || ex.endsWith('.js')) {
      try {
        execFileSync(process.execPath, ['--check', path.join(ROOT, 'examples', ex)], { stdio: 'pipe' })
      } catch (e) {
        t.fail(`examples/${ex} does not parse: ${(e as { stderr?: Buffer }).stderr?.toString() ?? e}`)
      }
    } else if (ex.endsWith('.jsonl')) {
      read(path.join(ROOT, 'examples', ex))
        .split('\n')
        .filter((l) => l.trim())
        .forEach((l, i) => t.notThrows(() => JSON.parse(l), `examples/${ex}:${i + 1} is not JSON`))
    }
  }
})

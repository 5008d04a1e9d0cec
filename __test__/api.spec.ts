// Snapshot of the public types: a change to the API surface must be deliberate.
// On mismatch, review the diff and run `UPDATE_SNAPSHOTS=1 npm test` to accept it.
import * as fs from 'node:fs'
import * as path from 'node:path'
import test from 'ava'
import { REPO_ROOT } from './helpers'

const UPDATE = process.env.UPDATE_SNAPSHOTS === '1'
const SNAPSHOTS = path.join(__dirname, 'snapshots')

const CASES = [
  { name: 'index.d.ts', generated: path.join(REPO_ROOT, 'dist', 'index.d.ts'), source: path.join(REPO_ROOT, 'index.ts'), build: 'npm run build:ts' },
  { name: 'native.d.ts', generated: path.join(REPO_ROOT, 'native.d.ts'), source: undefined, build: 'npm run build:native' },
]

/** A short line diff, enough to see what changed. */
function diff(expected: string, actual: string): string {
  const a = expected.split('\n')
  const b = actual.split('\n')
  const out: string[] = []
  for (let i = 0; i < Math.max(a.length, b.length) && out.length < 40; i++) {
    if (a[i] === b[i]) continue
    if (a[i] !== undefined) out.push(`${i + 1}: - ${a[i]}`)
    if (b[i] !== undefined) out.push(`${i + 1}: + ${b[i]}`)
  }
  return out.join('\n')
}

const normalize = (s: string) => s.replace(/\r\n/g, '\n')

for (const c of CASES) {
  test(`${c.name} matches __test__/snapshots/${c.name}`, (t) => {
    if (!fs.existsSync(c.generated)) return t.fail(`${c.generated} is missing: run \`${c.build}\``)
    if (c.source && fs.statSync(c.source).mtimeMs > fs.statSync(c.generated).mtimeMs) {
      return t.fail(`${path.relative(REPO_ROOT, c.generated)} is older than ${path.relative(REPO_ROOT, c.source)}: run \`${c.build}\` first`)
    }
    const actual = normalize(fs.readFileSync(c.generated, 'utf8'))
    const snap = path.join(SNAPSHOTS, c.name)
    if (UPDATE) {
      fs.mkdirSync(SNAPSHOTS, { recursive: true })
      fs.writeFileSync(snap, actual)
      t.log(`updated ${path.relative(REPO_ROOT, snap)}`)
      return t.pass()
    }
    if (!fs.existsSync(snap)) return t.fail(`no snapshot ${path.relative(REPO_ROOT, snap)}: run \`UPDATE_SNAPSHOTS=1 npm test\` to create it`)
    const expected = normalize(fs.readFileSync(snap, 'utf8'))
    if (actual !== expected) {
      return t.fail(
        `the public types in ${path.relative(REPO_ROOT, c.generated)} changed:\n${diff(expected, actual)}\n` +
          `If the change is intended, run \`UPDATE_SNAPSHOTS=1 npm test\` to rewrite __test__/snapshots/${c.name} and commit it.`,
      )
    }
    t.pass()
  })
}

test('runtime exports of dist/index.js', (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(path.join(REPO_ROOT, 'dist', 'index.js'))
  t.deepEqual(Object.keys(mod).sort(), ['Engine', 'RadixLMError', 'asyncStreamAndMerge', 'streamAndMerge'])
  t.is(typeof mod.Engine, 'function')
  t.is(typeof mod.Engine.create, 'function')
  for (const m of ['generateSync', 'generate', 'generateStreamSync', 'generateStream', 'tokenize', 'detokenize', 'getServerInfo', 'flushCache', 'shutdown']) {
    t.is(typeof mod.Engine.prototype[m], 'function', m)
  }
  t.is(typeof mod.Engine.prototype[Symbol.asyncDispose], 'function')
  t.is(typeof mod.Engine.prototype[Symbol.dispose], 'function')
})

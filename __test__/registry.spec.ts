// `npm install radixlm` from a real registry needs no Rust toolchain and no compiler: a throwaway verdaccio
// gets the packages scripts/pack-packages.mjs makes from this tree (the main package from `npm pack`, the
// prebuilt platform package), and a fresh project installs them with cargo and rustc off PATH and the C
// compilers replaced by tripwires, then runs the quick start from node_modules.
import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import test from 'ava'
import { modelPath, REPO_ROOT, sleep } from './helpers'

const CPU_PKG = 'radixlm-linux-x64-gnu'
const CUDA_PKG = 'radixlm-linux-x64-gnu-cuda'
const CPU_BINARY = 'radixlm.linux-x64-gnu.node'
// The CUDA package goes in only where `npm run build:cuda` left its binary (never on the CPU CI machine).
const HAS_CUDA = fs.existsSync(path.join(REPO_ROOT, 'radixlm.linux-x64-gnu-cuda.node'))
// Programs a source build would reach for. cargo/rustc are taken off PATH; the C toolchain lives in /usr/bin
// beside sh and node, so it is shadowed by scripts that log the call instead.
const TRIPWIRES = ['cc', 'gcc', 'g++', 'c++', 'clang', 'make', 'cmake', 'node-gyp', 'nvcc']

interface Run {
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/** Runs a command to its end (or kills it after `ms`); never rejects, so the caller can report the output. */
function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; ms: number }): Promise<Run> {
  return new Promise((resolve) => {
    const t0 = Date.now()
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.ms)
    child.on('error', (e) => {
      clearTimeout(timer)
      resolve({ code: null, stdout, stderr: stderr + String(e), ms: Date.now() - t0 })
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, ms: Date.now() - t0 })
    })
  })
}

const describe = (r: Run) => `exit ${r.code} after ${r.ms} ms\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

/** Where `name` would run from on `pathVar`, or null. */
function which(name: string, pathVar: string): string | null {
  for (const dir of pathVar.split(path.delimiter).filter(Boolean)) {
    const f = path.join(dir, name)
    try {
      fs.accessSync(f, fs.constants.X_OK)
      if (fs.statSync(f).isFile()) return f
    } catch {}
  }
  return null
}

/** Every .node file under `dir`, relative to it. */
function nodeFiles(dir: string, rel = ''): string[] {
  const out: string[] = []
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name)
    if (e.isDirectory()) out.push(...nodeFiles(dir, r))
    else if (e.name.endsWith('.node')) out.push(r)
  }
  return out
}

/** dist/ must be the current tree's: rebuild it when a source is newer (under `npm test` it just was). */
async function ensureDist(): Promise<void> {
  const dist = path.join(REPO_ROOT, 'dist', 'index.js')
  const sources = fs.readdirSync(REPO_ROOT).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
  const built = fs.existsSync(dist) ? fs.statSync(dist).mtimeMs : 0
  const newest = Math.max(...sources.map((f) => fs.statSync(path.join(REPO_ROOT, f)).mtimeMs))
  if (built >= newest) return
  const r = await run('npm', ['run', 'build:ts'], { cwd: REPO_ROOT, env: process.env, ms: 120_000 })
  if (r.code !== 0) throw new Error(`npm run build:ts failed: ${describe(r)}`)
}

const state: {
  tmp?: string
  verdaccio?: ChildProcess
  verdaccioLog: string
  registry?: string
  env?: NodeJS.ProcessEnv
  project?: string
  install?: Run
  cargoOnPath?: string | null
  tripwireLog?: string
  published?: string[]
} = { verdaccioLog: '' }

async function startVerdaccio(tmp: string, upstream: string): Promise<string> {
  const bin = require.resolve('verdaccio/bin/verdaccio')
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const storage = path.join(tmp, `storage-${attempt}`)
    const config = path.join(tmp, `verdaccio-${attempt}.yaml`)
    // JSON is YAML: no YAML writer needed. Our own packages are never proxied, so a same-named package
    // upstream cannot mix in; everything else (the main package's dependencies) comes from npm's registry.
    const own = { access: '$all', publish: '$all' }
    fs.writeFileSync(
      config,
      JSON.stringify({
        storage,
        auth: { htpasswd: { file: path.join(tmp, 'htpasswd'), max_users: -1 } },
        uplinks: { upstream: { url: upstream, timeout: '60s' } },
        packages: { radixlm: own, 'radixlm-*': own, '**': { access: '$all', publish: '$all', proxy: 'upstream' } },
        max_body_size: '2000mb',
        web: { enable: false },
        log: { type: 'stdout', format: 'pretty', level: 'warn' },
      }),
    )
    // The wrapper exits with the test worker even if ava kills it before after.always runs.
    const guard = `const p = process.ppid; setInterval(() => { if (process.ppid !== p) process.exit(0) }, 500).unref(); require(process.argv[1])`
    const child = spawn(process.execPath, ['-e', guard, bin, '--config', config, '--listen', `127.0.0.1:${port}`], {
      cwd: tmp,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let exited = false
    child.on('exit', () => (exited = true))
    child.stdout!.on('data', (d) => (state.verdaccioLog += d))
    child.stderr!.on('data', (d) => (state.verdaccioLog += d))
    state.verdaccio = child
    const url = `http://127.0.0.1:${port}/`
    const end = Date.now() + 30_000
    while (!exited && Date.now() < end) {
      try {
        if ((await fetch(`${url}-/ping`)).ok) return url
      } catch {}
      await sleep(200)
    }
    if (!exited) child.kill('SIGKILL')
    // Another process may have taken the port between freePort() and verdaccio's listen: try another.
    if (attempt >= 2) throw new Error(`verdaccio did not start:\n${state.verdaccioLog}`)
  }
}

test.before(async () => {
  const model = modelPath()
  await ensureDist()
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-registry-'))
  state.tmp = tmp

  // The uplink is whatever registry npm is configured with here, read now rather than written down.
  const cfg = await run('npm', ['config', 'get', 'registry'], { cwd: REPO_ROOT, env: process.env, ms: 30_000 })
  const upstream = cfg.stdout.trim()
  if (cfg.code !== 0 || !/^https?:\/\//.test(upstream)) throw new Error(`npm config get registry: ${describe(cfg)}`)
  const registry = await startVerdaccio(tmp, upstream)
  state.registry = registry

  // npm's settings for everything below: this registry, a fresh cache, a user config of our own. npm's
  // npm_* variables (set when this runs under `npm test`) would override them, so they go.
  const npmrc = path.join(tmp, 'npmrc')
  // npm sends no publish without a token; verdaccio lets anyone publish (publish: $all), so any token does.
  fs.writeFileSync(npmrc, `registry=${registry}\n//${new URL(registry).host}/:_authToken=radixlm-registry-test\n`)
  const home = path.join(tmp, 'home')
  fs.mkdirSync(home)
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)))
  Object.assign(base, {
    HOME: home,
    npm_config_userconfig: npmrc,
    npm_config_cache: path.join(tmp, 'npm-cache'),
    npm_config_registry: registry,
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    RADIXLM_TEST_MODEL: model,
  })

  const packed = await run(process.execPath, [path.join(REPO_ROOT, 'scripts', 'pack-packages.mjs'), '--out', path.join(tmp, 'tarballs'), '--publish', '--registry', registry], {
    cwd: REPO_ROOT,
    env: base,
    ms: 120_000,
  })
  if (packed.code !== 0) throw new Error(`scripts/pack-packages.mjs --publish: ${describe(packed)}\n--- verdaccio\n${state.verdaccioLog}`)
  state.published = JSON.parse(packed.stdout).packages.map((p: { name: string }) => p.name)

  // The user's machine: no cargo/rustc anywhere on PATH, compilers that report being called.
  const tripwires = path.join(tmp, 'tripwires')
  const tripwireLog = path.join(tmp, 'tripwires.log')
  fs.mkdirSync(tripwires)
  for (const name of TRIPWIRES) {
    fs.writeFileSync(path.join(tripwires, name), `#!/bin/sh\necho "${name} $*" >> '${tripwireLog}'\nexit 127\n`, { mode: 0o755 })
  }
  const kept = (process.env.PATH ?? '').split(path.delimiter).filter((d) => d && !which('cargo', d) && !which('rustc', d))
  const PATH = [tripwires, ...kept].join(path.delimiter)
  state.env = { ...base, PATH }
  state.cargoOnPath = which('cargo', PATH) ?? which('rustc', PATH)
  state.tripwireLog = tripwireLog

  const project = path.join(tmp, 'project')
  fs.mkdirSync(project)
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'quickstart', version: '1.0.0', private: true }))
  state.project = project
  state.install = await run('npm', ['install', 'radixlm', '--registry', registry], { cwd: project, env: state.env, ms: 150_000 })
})

test.after.always(async () => {
  const v = state.verdaccio
  if (v && v.exitCode === null && v.signalCode === null) {
    const gone = new Promise((resolve) => v.once('exit', resolve))
    v.kill('SIGTERM')
    if ((await Promise.race([gone, sleep(5000).then(() => 'timeout')])) === 'timeout') v.kill('SIGKILL')
  }
  if (state.tmp) fs.rmSync(state.tmp, { recursive: true, force: true })
})

test.serial('npm install radixlm from the registry succeeds with no cargo/rustc on PATH and calls no compiler', (t) => {
  t.is(state.cargoOnPath, null, 'cargo/rustc must not be on the install PATH')
  t.true(state.published!.includes(CPU_PKG) && state.published!.includes('radixlm'), `published: ${state.published}`)
  t.is(state.install!.code, 0, `npm install radixlm: ${describe(state.install!)}\n--- verdaccio\n${state.verdaccioLog}`)
  t.log(`npm install radixlm: ${state.install!.ms} ms`)
  const calls = fs.existsSync(state.tripwireLog!) ? fs.readFileSync(state.tripwireLog!, 'utf8') : ''
  t.is(calls, '', 'the install ran a compiler or build tool')
})

test.serial('the installed tree: the binary only in the platform package, no install scripts', (t) => {
  const nm = path.join(state.project!, 'node_modules')
  t.deepEqual(nodeFiles(nm), [path.join(CPU_PKG, CPU_BINARY)])
  const main = JSON.parse(fs.readFileSync(path.join(nm, 'radixlm', 'package.json'), 'utf8'))
  for (const s of ['preinstall', 'install', 'postinstall']) t.falsy(main.scripts?.[s], `radixlm has a ${s} script`)
  t.is(main.optionalDependencies?.[CPU_PKG], main.version)
  t.is(main.peerDependencies?.[CUDA_PKG], main.version)
  t.true(main.peerDependenciesMeta?.[CUDA_PKG]?.optional)
  // The GPU build is opt-in: `npm install radixlm` alone never downloads it.
  t.false(fs.existsSync(path.join(nm, CUDA_PKG)), `${CUDA_PKG} was installed without being asked for`)
  for (const f of ['dist/index.js', 'dist/index.d.ts', 'native.js']) t.true(fs.existsSync(path.join(nm, 'radixlm', f)), `radixlm/${f} missing`)
})

// The README's quick start, from the installed package: require('radixlm'), one engine, greedy text.
const QUICK_START = `
const { Engine } = require('radixlm')
const llm = new Engine({ modelPath: process.env.RADIXLM_TEST_MODEL })
const out = llm.generateSync('The capital of France is', { temperature: 0, maxNewTokens: 16 })
llm.shutdown()
const binaries = Object.keys(require.cache).filter((f) => f.endsWith('.node'))
console.log(JSON.stringify({ text: out.text, finishReason: out.metaInfo.finishReason, binaries, main: require.resolve('radixlm') }))
`

test.serial('the quick start runs from the installed package (require and import)', async (t) => {
  const project = state.project!
  fs.writeFileSync(path.join(project, 'quickstart.cjs'), QUICK_START)
  const r = await run(process.execPath, ['quickstart.cjs'], { cwd: project, env: state.env!, ms: 60_000 })
  t.is(r.code, 0, describe(r))
  t.is(r.stderr, '', 'nothing on stderr (no warnings on a CPU-only machine)')
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!)
  t.log(`greedy: ${JSON.stringify(got.text)} (${r.ms} ms)`)
  t.true(typeof got.text === 'string' && got.text.trim().length > 0, `empty text: ${r.stdout}`)
  t.is(got.main, path.join(project, 'node_modules', 'radixlm', 'dist', 'index.js'))
  t.deepEqual(got.binaries, [path.join(project, 'node_modules', CPU_PKG, CPU_BINARY)])

  // The README's examples use ESM imports: Node's CommonJS named-export detection must see them.
  const esm = await run(process.execPath, ['--input-type=module', '-e', `import { Engine, RadixLMError } from 'radixlm'; console.log(typeof Engine, typeof RadixLMError)`], {
    cwd: project,
    env: state.env!,
    ms: 30_000,
  })
  t.is(esm.code, 0, describe(esm))
  t.is(esm.stdout.trim(), 'function function')
})

test.serial(`device: 'cuda' without the CUDA build is ERR_INVALID_OPTIONS naming ${CUDA_PKG}`, async (t) => {
  const script = `
const { Engine } = require('radixlm')
for (const device of ['cuda', 'cuda:0']) {
  try {
    new Engine({ modelPath: process.env.RADIXLM_TEST_MODEL, device })
    console.log(JSON.stringify({ device, created: true }))
  } catch (e) {
    console.log(JSON.stringify({ device, name: e.name, code: e.code, message: e.message }))
  }
}`
  const r = await run(process.execPath, ['-e', script], { cwd: state.project!, env: state.env!, ms: 30_000 })
  t.is(r.code, 0, describe(r))
  for (const line of r.stdout.trim().split('\n')) {
    const e = JSON.parse(line)
    t.is(e.name, 'RadixLMError', line)
    t.is(e.code, 'ERR_INVALID_OPTIONS', line)
    t.true(e.message.includes(`npm install ${CUDA_PKG}`), `the message names the package to install: ${e.message}`)
  }
})

test.serial('without the platform package (--omit=optional), require works and Engine names the package to install', async (t) => {
  const project = path.join(state.tmp!, 'project-omit')
  fs.mkdirSync(project)
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'quickstart-omit', version: '1.0.0', private: true }))
  const install = await run('npm', ['install', 'radixlm', '--omit=optional', '--registry', state.registry!], { cwd: project, env: state.env!, ms: 120_000 })
  t.is(install.code, 0, describe(install))
  t.deepEqual(nodeFiles(path.join(project, 'node_modules')), [])
  const script = `
const { Engine } = require('radixlm')
try {
  new Engine({ modelPath: process.env.RADIXLM_TEST_MODEL })
  console.log(JSON.stringify({ created: true }))
} catch (e) {
  console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message }))
}`
  const r = await run(process.execPath, ['-e', script], { cwd: project, env: state.env!, ms: 30_000 })
  t.is(r.code, 0, describe(r))
  const e = JSON.parse(r.stdout.trim())
  t.is(e.code, 'ERR_NATIVE_BINARY', r.stdout)
  t.true(e.message.includes(`npm install ${CPU_PKG}@`), `the message names the package to install: ${e.message}`)
})

// Only where `npm run build:cuda` made the CUDA binary: the opt-in install resolves against radixlm's
// optional peer, and 'auto' runs (on a GPU-less machine: on the CPU build, without a word).
;(HAS_CUDA ? test.serial : test.skip)(`npm install radixlm ${CUDA_PKG}: the opt-in GPU build installs and 'auto' runs quietly`, async (t) => {
  t.true(state.published!.includes(CUDA_PKG), `published: ${state.published}`)
  const project = path.join(state.tmp!, 'project-cuda')
  fs.mkdirSync(project)
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'quickstart-cuda', version: '1.0.0', private: true }))
  const install = await run('npm', ['install', 'radixlm', CUDA_PKG, '--registry', state.registry!], { cwd: project, env: state.env!, ms: 300_000 })
  t.is(install.code, 0, describe(install))
  t.true(fs.existsSync(path.join(project, 'node_modules', CUDA_PKG, 'radixlm.linux-x64-gnu-cuda.node')))
  fs.writeFileSync(path.join(project, 'quickstart.cjs'), QUICK_START)
  const r = await run(process.execPath, ['quickstart.cjs'], { cwd: project, env: state.env!, ms: 60_000 })
  t.is(r.code, 0, describe(r))
  t.is(r.stderr, '', "'auto' falls back to the CPU build silently")
  t.true(JSON.parse(r.stdout.trim().split('\n').pop()!).text.trim().length > 0)
})

#!/usr/bin/env node
// Packs (and with --publish, publishes) radixlm as prebuilt npm packages, napi-rs style:
//
//   radixlm-linux-x64-gnu       npm/linux-x64-gnu/       the CPU build (radixlm.linux-x64-gnu.node)
//   radixlm-linux-x64-gnu-cuda  npm/linux-x64-gnu-cuda/  the CUDA build (radixlm.linux-x64-gnu-cuda.node)
//   radixlm                     the repo root (`files`: dist/, native.js, native.d.ts; no .node)
//
// It builds nothing: run `npm run build` (and `npm run build:cuda` for the CUDA package) first. It copies
// the built binaries from the repo root into the platform folders, gives every package the root
// package.json's version, and packs the main package from a staged copy whose package.json names the
// platform packages. That dependency is added only at pack time (as `napi prepublish` does) because the
// repo's own package.json must not name packages that are not published yet: `npm ci` in a fresh clone
// would fail ("Missing: radixlm-linux-x64-gnu from lock file").
//
// - The CPU package is an optionalDependency: npm installs it where its os/cpu/libc fields match and skips
//   it elsewhere, so `npm install radixlm` needs no compiler.
// - The CUDA package is an optional peerDependency, not an optionalDependency: its os/cpu/libc are the
//   same as the CPU package's, so as an optionalDependency npm would download the CUDA build onto every
//   Linux x64 machine. As an optional peer, `npm install radixlm radixlm-linux-x64-gnu-cuda` opts in and
//   npm still refuses a version that does not match radixlm's.
//
// Usage: node scripts/pack-packages.mjs [--out DIR] [--require-cuda] [--publish [--registry URL] [--tag TAG]]
// Prints a JSON summary ({ version, packages: [{ name, tarball, size, published }] }) on stdout; npm's own
// output goes to stderr.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')

const { values: args } = parseArgs({
  options: {
    out: { type: 'string', default: path.join(ROOT, '.pack') },
    'require-cuda': { type: 'boolean', default: false },
    publish: { type: 'boolean', default: false },
    registry: { type: 'string' },
    tag: { type: 'string' },
  },
})

/** The platform packages: where each one's binary comes from, and whether a release needs it. */
const PLATFORMS = [
  { dir: 'npm/linux-x64-gnu', name: 'radixlm-linux-x64-gnu', binary: 'radixlm.linux-x64-gnu.node', cuda: false },
  { dir: 'npm/linux-x64-gnu-cuda', name: 'radixlm-linux-x64-gnu-cuda', binary: 'radixlm.linux-x64-gnu-cuda.node', cuda: true },
]
// Lifecycle scripts npm runs when a consumer installs the package: none may exist (no build on install).
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall']

const readJson = (f) => JSON.parse(fs.readFileSync(f, 'utf8'))
const writeJson = (f, v) => fs.writeFileSync(f, JSON.stringify(v, null, 2) + '\n')

function fail(msg) {
  console.error(`pack-packages: ${msg}`)
  process.exit(1)
}

/** Runs npm with its output on stderr (stdout is this script's JSON); returns stdout. */
function npm(argv, cwd) {
  const r = spawnSync('npm', argv, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  if (r.error) fail(`npm ${argv.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) fail(`npm ${argv.join(' ')} (in ${cwd}) exited with ${r.status}`)
  return r.stdout
}

/** `npm pack` into the output folder; checks what went in. */
function pack(dir, check) {
  // npm 11 prints lifecycle noise before the JSON on stdout when a prepack script exists: take the array.
  const out = npm(['pack', '--json', '--pack-destination', outDir], dir)
  const info = JSON.parse(out.slice(out.indexOf('[')))[0]
  check(info.files.map((f) => f.path))
  return { name: info.name, tarball: path.join(outDir, info.filename), size: info.size }
}

const version = readJson(path.join(ROOT, 'package.json')).version
const outDir = path.resolve(args.out)
fs.mkdirSync(outDir, { recursive: true })

const packed = []
for (const p of PLATFORMS) {
  const dir = path.join(ROOT, p.dir)
  const built = path.join(ROOT, p.binary)
  if (!fs.existsSync(built)) {
    if (!p.cuda) fail(`${p.binary} is missing: run \`npm run build:native\` first`)
    if (args['require-cuda']) fail(`${p.binary} is missing: run \`npm run build:cuda\` first`)
    console.error(`pack-packages: no ${p.binary}, skipping ${p.name}`)
    continue
  }
  fs.copyFileSync(built, path.join(dir, p.binary))
  const manifest = readJson(path.join(dir, 'package.json'))
  if (manifest.version !== version) {
    manifest.version = version
    writeJson(path.join(dir, 'package.json'), manifest)
  }
  packed.push(
    pack(dir, (files) => {
      if (!files.includes(p.binary)) fail(`${p.name}: the tarball lacks ${p.binary}`)
    }),
  )
}

// The main package, staged: exactly the files `npm pack` would take from the repo root, with the
// platform packages added to a copy of package.json.
const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-stage-'))
try {
  const listing = npm(['pack', '--dry-run', '--json'], ROOT)
  const files = JSON.parse(listing.slice(listing.indexOf('[')))[0].files.map((f) => f.path)
  for (const f of files) {
    if (f.endsWith('.node')) fail(`the main package would ship ${f}: the binaries belong in the platform packages`)
    fs.mkdirSync(path.join(stage, path.dirname(f)), { recursive: true })
    fs.copyFileSync(path.join(ROOT, f), path.join(stage, f))
  }
  const manifest = readJson(path.join(stage, 'package.json'))
  const bad = INSTALL_SCRIPTS.filter((s) => manifest.scripts?.[s])
  if (bad.length) fail(`package.json has install-time scripts (${bad.join(', ')}): installing must not build`)
  const cpu = PLATFORMS.filter((p) => !p.cuda)
  const cuda = PLATFORMS.filter((p) => p.cuda)
  manifest.optionalDependencies = { ...manifest.optionalDependencies, ...Object.fromEntries(cpu.map((p) => [p.name, version])) }
  manifest.peerDependencies = { ...manifest.peerDependencies, ...Object.fromEntries(cuda.map((p) => [p.name, version])) }
  manifest.peerDependenciesMeta = {
    ...manifest.peerDependenciesMeta,
    ...Object.fromEntries(cuda.map((p) => [p.name, { optional: true }])),
  }
  writeJson(path.join(stage, 'package.json'), manifest)
  packed.push(
    pack(stage, (got) => {
      for (const need of ['dist/index.js', 'dist/index.d.ts', 'native.js']) {
        if (!got.includes(need)) fail(`the main package lacks ${need}: run \`npm run build\` first`)
      }
    }),
  )
} finally {
  fs.rmSync(stage, { recursive: true, force: true })
}

// Platform packages first: the main package's dependency on them must resolve the moment it appears.
for (const p of packed) {
  p.published = false
  if (!args.publish) continue
  const argv = ['publish', p.tarball, '--access', 'public']
  if (args.registry) argv.push('--registry', args.registry)
  if (args.tag) argv.push('--tag', args.tag)
  npm(argv, ROOT)
  p.published = true
}

console.log(JSON.stringify({ version, packages: packed }, null, 2))

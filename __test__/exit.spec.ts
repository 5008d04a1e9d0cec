// No native handle keeps Node alive: a script that uses an engine exits by itself, without process.exit.
import * as fs from 'node:fs'
import * as path from 'node:path'
import test from 'ava'
import { modelPath, REPO_ROOT, runNode, type ChildExit } from './helpers'

const DIST = path.join(REPO_ROOT, 'dist', 'index.js')
const EXIT_WITHIN_MS = 20_000

/** Runs `node -e script`; kills it if it has not exited within `ms`. */
function runScript(script: string, ms = EXIT_WITHIN_MS): Promise<ChildExit> {
  return runNode(['-e', script], { ...process.env, RADIXLM_MODEL: modelPath() }, ms)
}

const PRELUDE = `
const { Engine } = require(${JSON.stringify(DIST)});
const modelPath = process.env.RADIXLM_MODEL;
const sp = { temperature: 0, maxNewTokens: 4 };
`

test.before(() => {
  if (!fs.existsSync(DIST)) throw new Error(`${DIST} is missing: run \`npm run build:ts\` first`)
})

function assertExited(t: any, r: ChildExit) {
  t.log(`exited in ${r.ms} ms`)
  t.false(r.timedOut, `the child did not exit within ${EXIT_WITHIN_MS / 1000} s (a handle keeps Node alive). stdout: ${r.stdout} stderr: ${r.stderr}`)
  t.is(r.code, 0, `exit code ${r.code} (signal ${r.signal}); stderr: ${r.stderr}`)
  t.regex(r.stdout, /TEXT:.+/, 'the script generated text')
  t.regex(r.stdout, /DONE/)
}

test('engine created, used, shut down: the process exits by itself with code 0', async (t) => {
  const r = await runScript(`${PRELUDE}
const llm = new Engine({ modelPath });
console.log('TEXT:' + JSON.stringify(llm.generateSync('Hello', sp).text));
llm.generate('Hello', sp).then((o) => {
  console.log('TEXT:' + JSON.stringify(o.text));
  llm.shutdown();
  console.log('DONE');
});
`)
  assertExited(t, r)
})

test('Engine.create + async stream + shutdown: exits by itself', async (t) => {
  const r = await runScript(`${PRELUDE}
(async () => {
  const llm = await Engine.create({ modelPath });
  let text = '';
  for await (const c of llm.generateStream('Hello', sp)) text += c.delta;
  console.log('TEXT:' + JSON.stringify(text));
  llm.shutdown();
  console.log('DONE');
})();
`)
  assertExited(t, r)
})

test('engine never shut down (goes out of scope): the process still exits by itself', async (t) => {
  const r = await runScript(`${PRELUDE}
(async () => {
  const llm = new Engine({ modelPath });
  const o = await llm.generate('Hello', sp);
  console.log('TEXT:' + JSON.stringify(o.text));
  console.log('DONE');
})();
`)
  assertExited(t, r)
})

test('stream left early (break) and engine never shut down: exits by itself', async (t) => {
  const r = await runScript(`${PRELUDE}
(async () => {
  const llm = await Engine.create({ modelPath });
  for await (const c of llm.generateStream('Hello', { temperature: 0, maxNewTokens: 500, ignoreEos: true })) {
    console.log('TEXT:' + JSON.stringify(c.text));
    break;
  }
  for (const c of llm.generateStreamSync('Hello', { temperature: 0, maxNewTokens: 500, ignoreEos: true })) break;
  console.log('DONE');
})();
`)
  assertExited(t, r)
})

test('shutdown with requests in flight: they reject, and the process exits by itself', async (t) => {
  const r = await runScript(`${PRELUDE}
(async () => {
  const llm = new Engine({ modelPath });
  const p = llm.generate('Hello', { maxNewTokens: 500, ignoreEos: true });
  const it = llm.generateStream('Hello', { maxNewTokens: 500, ignoreEos: true });
  const first = await it.next();
  console.log('TEXT:' + JSON.stringify(first.value.text));
  llm.shutdown();
  const codes = [];
  await p.catch((e) => codes.push(e.code));
  // Chunks produced before the shutdown may still arrive; then the stream rejects.
  await (async () => { for (let i = 0; i < 1000; i++) if ((await it.next()).done) return; })().catch((e) => codes.push(e.code));
  console.log('CODES:' + codes.join(','));
  console.log('DONE');
})();
`)
  assertExited(t, r)
  t.regex(r.stdout, /CODES:ERR_ENGINE_SHUTDOWN,ERR_ENGINE_SHUTDOWN/)
})

test('an exception thrown by onProgress reaches the process (uncaughtException), as any callback error', async (t) => {
  const r = await runScript(`${PRELUDE}
let caught = 0;
process.on('uncaughtException', (e) => { caught++; if (caught === 1) console.log('CAUGHT:' + e.message); });
Engine.create({ modelPath, onProgress: () => { throw new Error('boom from onProgress'); } }).then((llm) => {
  console.log('TEXT:' + JSON.stringify(llm.generateSync('Hello', sp).text));
  llm.shutdown();
  console.log(caught > 0 ? 'DONE' : 'NOT CAUGHT');
});
`)
  t.regex(r.stdout, /CAUGHT:boom from onProgress/)
  assertExited(t, r)
})

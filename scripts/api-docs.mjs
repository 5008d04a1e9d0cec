#!/usr/bin/env node
// The API reference in docs/api/, generated from the types and JSDoc of index.ts (the `radixlm` module) and
// server.ts (`radixlm/dist/server.js`) with typedoc and typedoc-plugin-markdown.
//   npm run docs                          # rewrites docs/api/
//   node scripts/api-docs.mjs OUT_DIR     # writes elsewhere (__test__/docs.spec.ts compares the two)
//
// The output is committed, so it must be a pure function of the declarations: no source links (their line
// numbers would change with every edit of index.ts), no git revision, no dates; a fixed member order.
// Type errors do not stop it (`npm run build:ts` reports those).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Application, Comment, TSConfigReader } from 'typedoc'

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const out = path.resolve(process.argv[2] ?? path.join(ROOT, 'docs', 'api'))

// typedoc names modules after their files ("index", "server"); the pages use the import names instead.
const MODULES = {
  index: {
    name: 'radixlm',
    about:
      "`import { Engine } from 'radixlm'` (or `require('radixlm')`): the offline engine, its options and outputs. " +
      'Option objects take camelCase keys and also their snake_case spellings (`maxNewTokens` or `max_new_tokens`).',
  },
  server: {
    name: 'server',
    about:
      "`require('radixlm/dist/server.js')`: the OpenAI-compatible HTTP server (what `radixlm serve` runs). " +
      'See [the server guide](../server.md).',
  },
}

const app = await Application.bootstrapWithPlugins(
  {
    name: 'radixlm API reference',
    entryPoints: Object.keys(MODULES).map((m) => path.join(ROOT, `${m}.ts`)),
    tsconfig: path.join(ROOT, 'tsconfig.json'),
    plugin: ['typedoc-plugin-markdown'],
    out,
    readme: 'none',
    disableSources: true,
    disableGit: true,
    skipErrorChecking: true,
    excludePrivate: true,
    excludeExternals: true,
    excludeInternal: true,
    sort: ['kind', 'static-first', 'source-order'],
    // WithSnakeCase<T> (T plus T's keys in snake_case) is not exported; the pages say what it does.
    validation: { notExported: false, invalidLink: true, notDocumented: false },
    treatWarningsAsErrors: false,
    logLevel: 'Warn',
    // typedoc-plugin-markdown
    outputFileStrategy: 'modules',
    entryFileName: 'README.md',
    hidePageHeader: true,
    hideBreadcrumbs: true,
    useCodeBlocks: true,
    expandObjects: true,
    parametersFormat: 'table',
    interfacePropertiesFormat: 'table',
    classPropertiesFormat: 'table',
    typeDeclarationFormat: 'table',
    propertyMembersFormat: 'table',
    enumMembersFormat: 'table',
    sanitizeComments: true,
  },
  [new TSConfigReader()],
)

// Name and describe the modules before anything is rendered, so titles and links carry the import names.
app.converter.on('resolveBegin', (context) => {
  for (const mod of context.project.children ?? []) {
    const m = MODULES[mod.name]
    if (!m) continue
    mod.name = m.name
    mod.comment = new Comment([{ kind: 'text', text: m.about }])
  }
})

const project = await app.convert()
if (!project) {
  console.error('api-docs: typedoc could not convert the project (see the messages above)')
  process.exit(1)
}
// Members keep their source order (Engine's methods in the order of the README); a module's own exports
// read better alphabetically (Engine before RadixLMError).
for (const mod of project.children ?? []) {
  for (const group of mod.groups ?? []) group.children.sort((a, b) => a.name.localeCompare(b.name, 'en'))
}
fs.rmSync(out, { recursive: true, force: true })
await app.generateOutputs(project)
if (app.logger.hasErrors()) process.exit(1)
console.log(`api-docs: wrote ${path.relative(process.cwd(), out) || '.'}`)

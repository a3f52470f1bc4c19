/** src/client/openapi-types.ts is what `npm run gen:client` makes of openapi.yaml today. */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const root = path.resolve(new URL('../..', import.meta.url).pathname)

t.test('the generated client types are up to date with openapi.yaml', async (t) => {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'vlt-types-')), 'openapi-types.ts')
  // The same command as the gen:client script.
  const cli = path.join(root, 'node_modules/openapi-typescript/bin/cli.js')
  execFileSync(process.execPath, [cli, 'openapi.yaml', '--array-length', '-o', out], { cwd: root, stdio: 'pipe' })
  const fresh = readFileSync(out, 'utf8')
  const committed = readFileSync(path.join(root, 'src/client/openapi-types.ts'), 'utf8')
  t.ok(fresh.includes('MaskFormat: "png" | "coco_rle" | "polygon"'), 'the generator read the current spec')
  t.ok(fresh === committed, 'src/client/openapi-types.ts is current (run npm run gen:client)')
})

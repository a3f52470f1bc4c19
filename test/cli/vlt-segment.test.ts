/**
 * vlt-segment (dist/cli/vlt-segment.js, built by pretest): in-process and --url give the same
 * mask; the service's error codes and the exit codes per class. Needs the default model folder.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { buildApp } from '../../src/app.js'
import { EXIT } from '../../src/cli/vlt-segment.js'
import { decodeCocoRle } from '../../src/image/rle.js'
import { DEFAULT_MODEL_DIR, readMask, testConfig } from '../helper.js'

const root = path.resolve(new URL('../..', import.meta.url).pathname)
const CLI = path.join(root, 'dist/cli/vlt-segment.js')
// the in-process runs use the packaged default model; the --url service the same folder
const MODEL_DIR = DEFAULT_MODEL_DIR

// Every in-process run starts the model in a new process: slow on a busy two-core machine.
t.setTimeout(360_000)

interface Run { code: number | null, stdout: string, stderr: string }

/** Runs the built command (asynchronously: the service under test lives in this process). */
function cli (args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: root, env: { ...process.env, WORKERS: '1', THREADS_PER_WORKER: '1', ...env } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })))
}

t.test('usage errors need no model', async (t) => {
  const none = await cli([])
  t.equal(none.code, EXIT.usage)
  t.match(none.stderr, /an IMAGE is needed/)
  t.match((await cli(['x.jpg'])).stderr, /at least one EXPRESSION/)
  t.equal((await cli(['x.jpg', 'the circle', '--format', 'svg'])).code, EXIT.usage)
  const missing = await cli(['/nonexistent/x.jpg', 'the circle', '--url', 'http://127.0.0.1:9'])
  t.equal(missing.code, EXIT.usage)
  t.match(missing.stderr, /cannot read \/nonexistent\/x\.jpg: ENOENT/)
  const help = await cli(['--help'])
  t.equal(help.code, EXIT.ok)
  t.match(help.stdout, /Exit codes:/)
})

if (!existsSync(path.join(MODEL_DIR, 'model.json'))) {
  t.comment(`no model folder at ${MODEL_DIR}`)
  t.pass('skipped: no model folder')
} else {
  const golden = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
  const model = JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8')) as { name: string, version: string }
  const image = path.join(MODEL_DIR, golden.image)
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-cli-'))
  const app = buildApp(testConfig({ modelPath: MODEL_DIR, workers: 1, threadsPerWorker: 1 }))
  t.teardown(() => app.close())
  let url = ''
  t.before(async () => {
    await app.listen({ port: 0, host: '127.0.0.1' })
    await app.segmenter.started
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  })

  t.test('in-process and --url write the same mask', async (t) => {
    const local = await cli([image, golden.expression, '-o', path.join(dir, 'local.png')])
    t.equal(local.code, EXIT.ok, local.stderr)
    t.match(local.stderr, `ready: ${model.name}@${model.version}`, 'progress on stderr, the packaged default model')
    t.match(local.stderr, /answered in \d+ ms \(service: decode/)
    t.equal(local.stdout, '', 'nothing on stdout with -o')
    const remote = await cli([image, golden.expression, '-o', path.join(dir, 'remote.png'), '--url', url])
    t.equal(remote.code, EXIT.ok, remote.stderr)
    const a = await readMask(readFileSync(path.join(dir, 'local.png')))
    const b = await readMask(readFileSync(path.join(dir, 'remote.png')))
    t.ok(a.data.equals(b.data) && a.width === b.width && a.height === b.height, 'same pixels')
    t.ok(a.data.some((v) => v === 255), 'the mask is not empty')

    // JSON answers, another format, several expressions: the same on both sides.
    const args = [image, golden.expression, '-e', 'the small star', '-f', 'coco_rle', '--json', '-q']
    const [j1, j2] = await Promise.all([cli(args), cli([...args, '--url', url])])
    t.equal(j1.code, EXIT.ok, j1.stderr)
    t.equal(j1.stderr, '', '-q: no progress')
    const [r1, r2] = [JSON.parse(j1.stdout), JSON.parse(j2.stdout)]
    t.strictSame(r1.results.map((r: any) => r.mask), r2.results.map((r: any) => r.mask))
    t.ok(Buffer.from(decodeCocoRle(r1.results[0].mask.coco_rle).mask).equals(a.data), 'RLE = the PNG mask')

    const several = await cli([image, golden.expression, '-e', 'the small star', '-o', path.join(dir, 'many.png'), '--url', url])
    t.equal(several.code, EXIT.ok)
    t.ok(existsSync(path.join(dir, 'many-1.png')) && existsSync(path.join(dir, 'many-2.png')), 'one PNG per expression')
  })

  t.test('bad input: the service\'s code on stderr and the exit code of its class, both ways', async (t) => {
    const text = path.join(dir, 'not-an-image.jpg')
    writeFileSync(text, 'this is not an image')
    // Each in-process run loads the model, so the last case goes over HTTP only.
    const cases: Array<[string, string[], number, RegExp, boolean]> = [
      ['not an image', [text, 'the circle'], EXIT.input, /SEG_ERR_NOT_AN_IMAGE \(415\)/, true],
      ['no known word', [image, 'qwertyuiop zxcvbnm'], EXIT.input, /SEG_ERR_NO_KNOWN_WORDS \(422\).*qwertyuiop/, true],
      ['threshold out of range', [image, 'the circle', '-t', '3'], EXIT.input, /SEG_ERR_INVALID_FIELD \(400\)/, false],
    ]
    for (const [name, args, code, message, local] of cases) {
      for (const [how, extra] of [...(local ? [['in-process', []]] : []), ['--url', ['--url', url]]] as Array<[string, string[]]>) {
        const r = await cli([...args, ...extra])
        t.equal(r.code, code, `${name} (${how}): exit ${code}`)
        t.match(r.stderr, message, `${name} (${how}): the service's code`)
      }
    }
    const down = await cli([image, 'the circle', '--url', 'http://127.0.0.1:9', '--retries', '0'])
    t.equal(down.code, EXIT.unavailable, 'no service: unavailable')
    t.match(down.stderr, /CLIENT_NETWORK/)
    const noModel = await cli([image, 'the circle', '--model', path.join(dir, 'no-such-model')])
    t.equal(noModel.code, EXIT.usage, 'a model folder that does not load: usage')
  })
}

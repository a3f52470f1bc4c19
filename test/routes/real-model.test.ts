/**
 * The real model folder end to end (skipped, with a note, when models/vlt-refshapes is absent):
 * start-up checks, the golden case through the HTTP API, EXIF, several expressions per request,
 * execution-provider fallback.
 */
import t from 'tap'
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import sharp from 'sharp'
import { buildApp } from '../../src/app.js'
import { loadModelFolder, ManifestError } from '../../src/model/manifest.js'
import { createSegmenterFromFolder } from '../../src/model/segmenter.js'
import { form, readMask, testConfig } from '../helper.js'
import { encodeWithOrientation, storeFor } from '../image/orientation.js'
import { checkResponse } from '../openapi-validator.js'

const MODEL_DIR = path.resolve(new URL('../../models/vlt-refshapes', import.meta.url).pathname)

if (!existsSync(path.join(MODEL_DIR, 'model.json'))) {
  t.comment(`no model folder at ${MODEL_DIR}`)
  t.pass('skipped: no model folder')
} else {
  const modelJson = JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8'))
  const golden = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
  const goldenImage = readFileSync(path.join(MODEL_DIR, golden.image))

  /** A model folder whose model.json is edited; the other files are links to the real ones. */
  const editedFolder = (edit: (m: any) => void): string => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-model-'))
    const split = Object.values(modelJson.split ?? {}).map((g: any) => g.file as string)
    for (const f of [...(modelJson.onnx !== undefined ? [modelJson.onnx.file] : []), ...split, 'vocab.txt', 'golden.json', golden.image, golden.input.file, golden.outputs.mask_logits.file, golden.mask.file]) {
      symlinkSync(path.join(MODEL_DIR, f), path.join(dir, f))
    }
    const m = structuredClone(modelJson)
    edit(m)
    writeFileSync(path.join(dir, 'model.json'), JSON.stringify(m))
    return dir
  }
  const logs = () => {
    const lines: Array<{ level: string, obj: object, msg: string }> = []
    const log = (level: string) => (obj: object, msg: string) => { lines.push({ level, obj, msg }) }
    return { lines, logger: { info: log('info'), warn: log('warn'), error: log('error') } }
  }

  t.test('real model through the HTTP API', async (t) => {
    const config = testConfig({ modelPath: MODEL_DIR, maxBatchWaitMs: 2 })
    const app = buildApp(config)
    t.teardown(() => app.close())
    await app.ready()
    await app.segmenter.started
    const model = `${modelJson.name}@${modelJson.version}`

    t.test('ready after the golden case; provider reported', async (t) => {
      const res = await app.inject('/readyz')
      t.equal(res.statusCode, 200)
      t.match(res.json(), { status: 'ready', model, provider: 'cpu' })
      t.match((await app.inject('/metrics')).payload, /vlt_execution_provider\{model="vlt-refshapes",version="[^"]+",provider="cpu"\} 1/)
    })

    t.test('golden image → PNG mask equal to the Python evaluator\'s', async (t) => {
      const res = await app.inject({ method: 'POST', url: '/segment', headers: { accept: 'image/png' }, payload: form({ image: goldenImage, expression: golden.expression }) })
      t.equal(res.statusCode, 200)
      t.equal(res.headers['x-model'], model)
      t.equal(String(res.headers['x-query-confidence']).split(',').length, modelJson.num_queries)
      const confidences = String(res.headers['x-query-confidence']).split(',').map(Number)
      const want = golden.outputs.query_confidence.data.flat() as number[]
      t.ok(confidences.every((c, i) => Math.abs(c - want[i]) < 1e-3), 'X-Query-Confidence equals golden query_confidence')
      const mask = await readMask(res.rawPayload)
      const { data: py, info } = await sharp(path.join(MODEL_DIR, golden.mask.file)).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true })
      t.strictSame([mask.width, mask.height, mask.channels], [info.width, info.height, 1])
      let diff = 0
      for (let i = 0; i < py.length; i++) if ((py[i] > 127) !== (mask.data[i] > 127)) diff++
      t.comment(`HTTP mask vs Python mask: ${diff} of ${py.length} pixels differ`)
      t.ok(diff / py.length <= 0.01)
    })

    t.test('JSON answer conforms to openapi.yaml; attention covers the real tokens', async (t) => {
      const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: goldenImage, expression: golden.expression }) })
      t.equal(res.statusCode, 200)
      t.strictSame(checkResponse('POST', '/segment', res), [])
      const r = res.json().results[0]
      t.strictSame(r.tokens.map((x: { id: number }) => x.id), golden.tokens.filter((id: number) => id !== 0))
      t.equal(r.queries.length, modelJson.num_queries)
      const att = golden.outputs.word_attention.data[0] as number[][]
      // The golden outputs come from Pillow's letterbox, the answer from sharp's, which differs by
      // rounding (as for the mask above): the trained 2.0.0 moves a weight by up to 1.3e-3 for it.
      // 5e-3 still fails a shifted, dropped or padded word, which moves weights by about 0.1 here.
      for (let q = 0; q < r.queries.length; q++) {
        t.equal(r.queries[q].attention.length, r.tokens.length)
        t.ok(r.queries[q].attention.every((v: number, i: number) => Math.abs(v - att[q][i]) < 5e-3), `query ${q} attention equals golden word_attention`)
      }
    })

    t.test('several expressions in one request equal separate requests', async (t) => {
      const exprs = [golden.expression, 'the large circle on the left', 'the red square']
      const together = (await app.inject({ method: 'POST', url: '/segment', payload: form({ image: goldenImage, expression: exprs }) })).json()
      t.equal(together.results.length, exprs.length)
      for (let i = 0; i < exprs.length; i++) {
        const alone = (await app.inject({ method: 'POST', url: '/segment', payload: form({ image: goldenImage, expression: exprs[i] }) })).json().results[0]
        t.equal(together.results[i].expression, exprs[i])
        // Batched and single session.run may differ in the last float bits: allow a few pixels.
        const a = await readMask(Buffer.from(together.results[i].mask.png, 'base64'))
        const b = await readMask(Buffer.from(alone.mask.png, 'base64'))
        let diff = 0
        for (let p = 0; p < a.data.length; p++) if (a.data[p] !== b.data[p]) diff++
        t.ok(diff <= a.data.length * 0.001, `${exprs[i]}: same mask (${diff} pixels differ)`)
        t.ok(Math.abs(together.results[i].area - alone.area) <= a.data.length * 0.001)
        for (let q = 0; q < alone.queries.length; q++) t.ok(Math.abs(together.results[i].queries[q].confidence - alone.queries[q].confidence) < 1e-4)
      }
    })

    t.test('EXIF: the golden picture stored under tags 1–8 gives the same mask (up to resampling order for 90° turns)', async (t) => {
      const { data, info } = await sharp(goldenImage).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true })
      const upright = { data, width: info.width, height: info.height, channels: 3 as const }
      let first: Buffer | undefined
      for (let k = 1; k <= 8; k++) {
        const file = await encodeWithOrientation(await storeFor(upright, k), k)
        const res = await app.inject({ method: 'POST', url: '/segment', headers: { accept: 'image/png' }, payload: form({ image: file, expression: golden.expression }) })
        t.equal(res.statusCode, 200)
        const mask = await readMask(res.rawPayload)
        t.strictSame([mask.width, mask.height], [info.width, info.height], `orientation ${k}: image size after rotation`)
        first ??= mask.data
        // Flips and 180° keep the resize's axes: the same pixels. A 90° or 270° orientation is
        // resized as stored and turned after (what lets JPEG decode small), so libvips resamples
        // the two axes in the other order and an edge pixel may round the other way.
        let diff = 0
        for (let p = 0; p < first.length; p++) if (mask.data[p] !== first[p]) diff++
        if (k <= 4) t.equal(diff, 0, `orientation ${k}: same mask as orientation 1`)
        else t.ok(diff <= first.length * 0.001, `orientation ${k}: same mask as orientation 1 but for ${diff} edge pixels (≤ 0.1 %)`)
      }
    })
  })

  t.test('EXPECTED FAILURE - a graph file\'s sha256 mismatch refuses to start', async (t) => {
    const dir = editedFolder((m) => { (m.onnx ?? m.split.head).sha256 = 'f'.repeat(64) })
    await t.rejects(loadModelFolder(dir), { name: 'ManifestError', message: /sha256 .* does not match model.json/ })
    const app = buildApp(testConfig({ modelPath: dir }))
    await t.rejects(async () => { await app.ready() }, ManifestError)
  })

  t.test('EXPECTED FAILURE - input/output names other than the contract refuse to start', async (t) => {
    if (modelJson.onnx !== undefined) {
      await t.rejects(loadModelFolder(editedFolder((m) => { m.onnx.inputs = ['pixels', 'tokens'] })), /onnx.inputs lacks "image"/)
      await t.rejects(loadModelFolder(editedFolder((m) => { m.onnx.outputs = ['mask_logits'] })), /onnx.outputs lacks "query_confidence"/)
    }
    if (modelJson.split !== undefined) {
      await t.rejects(loadModelFolder(editedFolder((m) => { m.split.image_encoder.inputs = ['pixels'] })), /split.image_encoder.inputs lacks "image"/)
      await t.rejects(loadModelFolder(editedFolder((m) => { m.split.head.outputs = ['mask_logits'] })), /split.head.outputs lacks "query_confidence"/)
    }
  })

  t.test('EXPECTED FAILURE - a golden case the model does not reproduce keeps it unready', async (t) => {
    const dir = editedFolder((m) => { m.golden = 'golden-bad.json' })
    const bad = structuredClone(golden)
    bad.outputs.query_confidence.data = bad.outputs.query_confidence.data.map((row: number[]) => row.map((v) => v + 0.5))
    writeFileSync(path.join(dir, 'golden-bad.json'), JSON.stringify(bad))
    const { logger } = logs()
    const seg = await createSegmenterFromFolder({ ...testConfig({ modelPath: dir }), modelPath: dir, logger })
    t.teardown(() => seg.close())
    await t.rejects(seg.started, /golden case mismatch on cpu: query_confidence/)
    t.equal(seg.isReady(), false)
  })

  t.test('CUDA unavailable: warning and CPU fallback; REQUIRE_GPU: a clear start error', async (t) => {
    const { lines, logger } = logs()
    const seg = await createSegmenterFromFolder({ ...testConfig(), modelPath: MODEL_DIR, executionProviders: ['cuda', 'cpu'], logger })
    t.teardown(() => seg.close())
    await seg.started
    if (seg.provider() === 'cuda') {
      t.pass('CUDA is available here; fallback not exercised')
      return
    }
    t.equal(seg.provider(), 'cpu')
    t.ok(lines.some((l) => l.level === 'warn' && /GPU execution provider unavailable; running on CPU/.test(l.msg)), 'warned')

    const strict = await createSegmenterFromFolder({ ...testConfig(), modelPath: MODEL_DIR, executionProviders: ['cuda', 'cpu'], requireGpu: true, logger })
    t.teardown(() => strict.close())
    await t.rejects(strict.started, /execution provider cuda could not be loaded and REQUIRE_GPU is set/)
  })
}

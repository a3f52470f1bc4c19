/**
 * Several models from MODELS_DIR (fake engines behind the real repository, registry, routes and
 * worker threads): selection, the default model, GET /models, readiness per model.
 */
import t from 'tap'
import { mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { buildApp } from '../../src/app.js'
import { fakeFolderLoader, fakeRepo, modelsOf, segmentModel as segment, testConfig, until, writeFakeModel } from '../helper.js'

// Each test starts worker threads for several model versions; on a loaded two-core machine that
// outlasts the suite's 120 s file default. Nothing asserts time.
t.setTimeout(300_000)

t.test('selection: the default model, a model by name, name@version; unknown ones are 404', async (t) => {
  const { app } = await fakeRepo(t, (root) => {
    writeFakeModel(root, 'beta', '2.0.0')
    writeFakeModel(root, 'alpha', '1.0.0', { flat: true })
  })
  t.equal((await segment(app)).headers['x-model'], 'alpha@1.0.0', 'default: the first by name')
  t.equal((await segment(app, 'beta')).headers['x-model'], 'beta@2.0.0')
  t.equal((await segment(app, 'beta@2.0.0')).headers['x-model'], 'beta@2.0.0')
  const wrongVersion = await segment(app, 'beta@1.0.0')
  t.equal(wrongVersion.statusCode, 404)
  t.match(wrongVersion.json().error, { code: 'SEG_ERR_MODEL_NOT_FOUND', message: /Version "1.0.0" of model beta is not served \(serving 2.0.0\)/ })
  const unknown = await segment(app, 'gamma')
  t.equal(unknown.statusCode, 404)
  t.match(unknown.json().error, { code: 'SEG_ERR_MODEL_NOT_FOUND', details: { available: ['alpha@1.0.0', 'beta@2.0.0'] } })
  const invalid = await segment(app, 'a b')
  t.equal(invalid.statusCode, 400)
  t.match(invalid.json().error.message, /Expected a model name or name@version for model/)

  const list = await modelsOf(app)
  t.equal(list.default, 'alpha')
  t.strictSame(list.models.map((m: any) => [m.name, m.default, m.serving.version, m.serving.state, m.serving.provider]), [['alpha', true, '1.0.0', 'ready', 'cpu'], ['beta', false, '2.0.0', 'ready', 'cpu']])
  t.match(list.models[1].serving, { metadata: { name: 'beta', version: '2.0.0', preset: 'fake', num_queries: 4 }, workers: { configured: 1, live: 1 }, inflight: 0 })
  t.type(list.models[1].serving.memory.feature_cache_bytes, 'number')
})

t.test('DEFAULT_MODEL picks the default; one that is not in MODELS_DIR stops the start', async (t) => {
  const { app } = await fakeRepo(t, (root) => {
    writeFakeModel(root, 'alpha', '1')
    writeFakeModel(root, 'beta', '1')
  }, { defaultModel: 'beta' })
  t.equal((await segment(app)).headers['x-model'], 'beta@1')

  const root = mkdtempSync(path.join(os.tmpdir(), 'vlt-models-'))
  writeFakeModel(root, 'alpha', '1')
  const c = testConfig({ modelsDir: root, defaultModel: 'zeta' })
  const bad = buildApp(c, { loadFolder: fakeFolderLoader(c) })
  await t.rejects(async () => { await bad.ready() }, /DEFAULT_MODEL zeta is not among the models \(alpha\)/)
  await bad.close().catch(() => {})
})

t.test('readiness per model: 503 while one model is starting, 200 once both are ready', async (t) => {
  const { app, open } = await fakeRepo(t, (root) => {
    writeFakeModel(root, 'alpha', '1')
    writeFakeModel(root, 'beta', '1', { fakeWorker: { holdStart: true } })
  }, {}, false)
  await until(() => app.models.get('alpha')?.isReady() === true)
  const starting = await app.inject('/readyz')
  t.equal(starting.statusCode, 503)
  t.match(starting.json(), { status: 'starting', model: 'alpha@1', models: [{ name: 'alpha', state: 'ready' }, { name: 'beta', state: 'loading' }] })
  t.equal((await segment(app, 'alpha')).statusCode, 200, 'a ready model serves while another starts')
  const notYet = await segment(app, 'beta')
  t.equal(notYet.statusCode, 503)
  t.equal(notYet.json().error.code, 'SEG_ERR_NOT_READY')
  t.equal((await app.inject('/v2/models/beta/ready')).statusCode, 400)
  t.equal((await app.inject('/v2/models/alpha/ready')).statusCode, 200)
  open()
  await app.models.started
  const ready = await app.inject('/readyz')
  t.equal(ready.statusCode, 200)
  t.match(ready.json(), { status: 'ready', models: [{ name: 'alpha', state: 'ready' }, { name: 'beta', state: 'ready' }] })
})

t.test('a model that fails to start: models.started rejects naming it, readiness reports it unavailable', async (t) => {
  const { app } = await fakeRepo(t, (root) => {
    writeFakeModel(root, 'alpha', '1')
    writeFakeModel(root, 'beta', '1', { fakeWorker: { failStart: true } })
  }, {}, false)
  await t.rejects(app.models.started, /model beta@1: fake start failure/)
  // beta fails at once; alpha's worker may still be starting.
  await until(() => app.models.get('alpha')?.isReady() === true)
  const res = await app.inject('/readyz')
  t.equal(res.statusCode, 503)
  t.match(res.json(), { status: 'unavailable', models: [{ name: 'alpha', state: 'ready' }, { name: 'beta', state: 'unavailable' }] })
})
